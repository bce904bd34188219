use mproc::task;

#[task]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    let square = 1;
}
