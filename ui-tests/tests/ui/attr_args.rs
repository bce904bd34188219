use mproc::task;

#[task(foo)]
fn square(x: u64) -> u64 {
    x * x
}

#[task(name = "cube", crate = ::mproc, crate = ::mproc)]
fn cube(x: u64) -> u64 {
    x * x * x
}

fn main() {}
