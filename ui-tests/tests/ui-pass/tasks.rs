//! Every kind of function `#[task]` accepts, used the ways the API promises.
#![deny(warnings, missing_docs, missing_debug_implementations, unreachable_pub)]

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use mproc::Task;

/// Squares a number.
#[mproc::task]
pub fn square(x: u64) -> u64 {
    x * x
}

#[mproc::task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[mproc::task]
fn hello() -> String {
    "hi".to_string()
}

#[mproc::task]
fn nothing() {}

#[mproc::task]
async fn count_bytes(s: String) -> usize {
    s.len()
}

#[mproc::task]
async fn async_nothing() {}

#[mproc::task]
fn parse(s: String) -> Result<u32, String> {
    s.parse().map_err(|e| format!("{e}"))
}

// Any pattern the function accepts.
#[mproc::task]
fn patterns((a, b): (u32, u32), mut c: u32, _: u8) -> u32 {
    c += a + b;
    c
}

// `'static` lifetimes are the only ones allowed.
#[mproc::task]
fn cow_len(s: Cow<'static, str>) -> usize {
    s.len()
}

// A task that calls itself goes through the same function pointer.
#[mproc::task]
fn fib(n: u32) -> u64 {
    if n < 2 {
        n.into()
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

// A raw identifier: the task's name is `type`.
#[mproc::task]
fn r#type(x: u8) -> u8 {
    x
}

// `cfg` applies to everything generated.
#[mproc::task]
#[cfg(any())]
fn compiled_out(x: NoSuchType) -> NoSuchType {
    x
}

// `#[allow(deprecated)]` keeps a `Vec<u8>` without the note (and with
// `deny(warnings)` above, this checks that it does).
#[mproc::task(crate = ::mproc)]
#[inline]
#[allow(deprecated)]
fn explicit_crate(v: Vec<u8>) -> usize {
    v.len()
}

// Deprecation is the struct's: only its users are warned.
#[mproc::task]
#[deprecated = "use `square`"]
fn old_square(x: u64) -> u64 {
    x * x
}

mod inner {
    #[mproc::task]
    pub(crate) fn nested(x: u8) -> u8 {
        x + 1
    }
}

type BoxedFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

fn name_of<T: Task>(_: T) -> &'static str {
    T::NAME
}

fn args<T: Task>(_: T, _: T::Args) {}

fn output<T: Task>(_: T, _: T::Output) {}

fn main() {
    // Direct calls, as before.
    assert_eq!(square(10), 100);
    assert_eq!(add(1, 2), 3);
    assert_eq!(hello(), "hi");
    let () = nothing();
    assert_eq!(parse("12".into()), Ok(12));
    assert_eq!(patterns((1, 2), 3, 0), 6);
    assert_eq!(cow_len("abc".into()), 3);
    assert_eq!(fib(10), 55);
    assert_eq!(r#type(3), 3);
    assert_eq!(explicit_crate(vec![1, 2]), 2);
    assert_eq!(inner::nested(1), 2);

    // Function values.
    let squares: Vec<u64> = (0..4).map(*square).collect();
    assert_eq!(squares, [0, 1, 4, 9]);
    let f: fn(i64, i64) -> i64 = *add;
    assert_eq!(f(2, 2), 4);
    let g: fn(String) -> BoxedFuture<usize> = *count_bytes;
    assert_eq!(futures::executor::block_on(g("abcd".into())), 4);
    futures::executor::block_on(async_nothing());

    // The `Task` impl.
    args(square, 10u64);
    args(add, (1i64, 2i64));
    args(hello, ());
    args(patterns, ((1, 2), 3, 4));
    output(nothing, ());
    output(count_bytes, 1usize);
    output(parse, Err::<u32, String>("no".into()));
    assert_eq!(name_of(square), concat!(module_path!(), "::square"));
    assert_eq!(<r#type as Task>::NAME, concat!(module_path!(), "::type"));
    assert_eq!(
        name_of(inner::nested),
        concat!(module_path!(), "::inner::nested")
    );
    const { assert!(!<square as Task>::IS_ASYNC) };
    const { assert!(<count_bytes as Task>::IS_ASYNC) };
    assert_eq!(format!("{square:?}"), "square");

    // Registration.
    let registered: Vec<String> = mproc::__private::TASKS
        .iter()
        .map(|entry| format!("{entry:?}"))
        .collect();
    let expected = [
        "square",
        "add",
        "hello",
        "nothing",
        "count_bytes",
        "async_nothing",
        "parse",
        "patterns",
        "cow_len",
        "fib",
        "type",
        "explicit_crate",
        "inner::nested",
    ];
    for name in expected {
        let full = format!("{:?}", format!("{}::{name}", module_path!()));
        assert!(
            registered.iter().any(|entry| entry.contains(&full)),
            "{full} is not in {registered:?}"
        );
    }
    assert!(!registered.iter().any(|e| e.contains("compiled_out")));
}
