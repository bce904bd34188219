use mproc::task;

#[task]
fn total(xs: impl IntoIterator<Item = u64>) -> u64 {
    xs.into_iter().sum()
}

#[task]
fn numbers() -> impl Iterator<Item = u64> {
    0..10
}

fn main() {}
