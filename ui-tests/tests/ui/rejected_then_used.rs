//! A rejected signature is reported once, at the argument: the call sites
//! that use the task (submit, a direct call) add no second error.
use mproc::Executor;

#[mproc::task]
fn count_chars(s: &str) -> usize {
    s.chars().count()
}

#[mproc::task]
fn identity<T>(x: T) -> T {
    x
}

fn use_them(ex: &Executor) {
    let _h = ex.submit(count_chars, "abc");
    let _n: usize = count_chars("abc");
    let _v: Vec<usize> = ["a"].into_iter().map(*count_chars).collect();
    let _i = ex.submit(identity, 5u64);
}

fn main() {}
