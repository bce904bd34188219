use mproc::task;

#[task]
fn identity<T>(x: T) -> T {
    x
}

#[task]
fn total(xs: Vec<u64>) -> u64
where
    u64: Copy,
{
    xs.iter().sum()
}

fn main() {}
