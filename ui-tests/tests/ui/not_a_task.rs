//! A function without `#[mproc::task]`, and a closure, where a task is
//! expected: the error says to add the attribute.
use mproc::Executor;

fn square(x: u64) -> u64 {
    x * x
}

fn use_them(ex: &Executor) {
    let _a = ex.submit(square, 3);
    let _b = ex.submit(|x: u64| x + 1, 3);
}

fn main() {}
