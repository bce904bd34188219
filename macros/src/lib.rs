//! The `#[task]` attribute of [mproc](https://docs.rs/mproc): it turns a
//! function into a task that worker processes can run.
//!
//! Use it through the facade, as `#[mproc::task]` or `task` from
//! `mproc::prelude`; the expansion names items of `::mproc`, so this crate
//! is not meant to be used on its own.
//!
//! # What it generates
//!
//! For
//!
//! ```ignore
//! /// Squares a number.
//! #[mproc::task]
//! pub fn square(x: u64) -> u64 { x * x }
//! ```
//!
//! the attribute emits:
//!
//! ```ignore
//! #[doc(hidden)]
//! #[allow(non_snake_case)]
//! fn __mproc_task_square(x: u64) -> u64 { x * x }
//!
//! /// Squares a number.
//! #[allow(non_camel_case_types)]
//! #[derive(Clone, Copy, Debug)]
//! pub struct square;
//!
//! impl Deref for square {
//!     type Target = fn(u64) -> u64;
//!     fn deref(&self) -> &Self::Target {
//!         const F: fn(u64) -> u64 = __mproc_task_square;
//!         &F
//!     }
//! }
//!
//! impl ::mproc::Task for square {
//!     type Args = u64;
//!     type Output = u64;
//!     const NAME: &'static str = concat!(module_path!(), "::", "square");
//!     const IS_ASYNC: bool = false;
//!     fn __call(arg: u64) -> TaskCall<u64> { TaskCall::Ready(__mproc_task_square(arg)) }
//! }
//!
//! const _: () = {
//!     // One entry of the link-time registry `::mproc::__private::TASKS`.
//!     #[linkme::distributed_slice(TASKS)]
//!     static __MPROC_TASK_ENTRY: TaskEntry = TaskEntry::of::<square>();
//! };
//! ```
//!
//! An `async fn count_bytes(s: String) -> usize` also gets a hidden
//! `fn __mproc_task_count_bytes_boxed(s: String) -> Pin<Box<dyn Future<Output
//! = usize> + Send>>`, which is what the struct derefs to and what `__call`
//! returns as `TaskCall::Pending`; boxing into `dyn Future + Send` is where a
//! future that is not `Send` is rejected. Its `IS_ASYNC` is `true`.
//!
//! A function of several arguments, `fn add(a: i64, b: i64)`, has
//! `type Args = (i64, i64)`, and the `const _` block also calls
//! `assert_wire::<i64>()` once per argument, each call spanned at that
//! argument's type, so that a type which cannot cross a process boundary
//! (`Serialize + DeserializeOwned + Send + 'static`) is reported at the
//! argument, not only at the tuple. A single argument or the return type
//! needs no such call: the compiler already reports the bounds of `Args` and
//! `Output` at that type.
//!
//! See [`macro@task`] for the rules a task function must follow.

mod ast;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Turns a function into an mproc task: a unit struct of the same name that
/// implements `mproc::Task` and derefs to the function.
///
/// ```ignore
/// use mproc::prelude::*;
///
/// #[mproc::task]
/// fn square(x: u64) -> u64 { x * x }
///
/// #[mproc::task]
/// fn add(a: i64, b: i64) -> i64 { a + b }
///
/// #[mproc::task]
/// async fn count_bytes(s: String) -> usize { s.len() }
///
/// assert_eq!(square(10), 100);                        // a direct call, as before
/// let v: Vec<u64> = (0..3).map(*square).collect();    // `*square` is a `fn(u64) -> u64`
/// assert_eq!(<square as Task>::NAME, concat!(module_path!(), "::square"));
/// let sum = executor.submit(add, (1, 2)).await?;      // several arguments: a tuple
/// ```
///
/// # What the function becomes
///
/// - The name `square` now means a unit struct, in both the type and the
///   value namespace; it has the function's doc comments and visibility.
///   A `let square = ...` in its scope is therefore an error.
/// - `square` derefs to a function pointer: `square(10)` still calls the
///   function in this process, and `*square` is a `fn(u64) -> u64` where a
///   function value is needed. For an `async fn f(s: String) -> usize` it is
///   a `fn(String) -> Pin<Box<dyn Future<Output = usize> + Send>>`.
/// - `Task::Args` is the argument's type for one argument, a tuple `(A, B)`
///   for several and `()` for none. `Task::Output` is the declared return
///   type, `()` if there is none (an `async fn`'s is the type it resolves
///   to).
/// - `Task::NAME` is `module::path::square`: the name a worker looks the
///   task up by. Two tasks with the same name in the same module (possible
///   only inside function bodies) would clash; keep tasks at module level.
/// - The task is registered in a link-time registry, so every worker built
///   from the same binary knows it without any setup call.
/// - The function itself is kept, renamed `__mproc_task_square` and hidden;
///   its attributes (`#[inline]`, `#[allow]`, ...) stay on it, except doc
///   comments and `#[deprecated]`, which move to the struct.
///   `#[cfg(...)]` attributes are copied onto every generated item.
///
/// # Rules, checked at compile time
///
/// Each violation is a compile error pointing at the offending token, and
/// the only one: the name still stands for a (hidden, erroneous) task, so
/// call sites such as `executor.submit(count_chars, "x")` report nothing
/// more. A plain `fn` or a closure passed where a task is expected is an
/// error that says to add `#[mproc::task]`.
///
/// - Every argument type and the return type must be
///   `Serialize + DeserializeOwned + Send + 'static`; the error points at
///   the type that is not.
/// - An `async fn`'s future must be `Send`.
/// - No generic parameters and no `where` clause: a worker finds the task
///   by name alone.
/// - No `self` receiver: a task is a free function.
/// - No borrowed types: no `&` anywhere in an argument or return type, and
///   no lifetime but `'static` (`Cow<'static, str>` is fine).
/// - No `impl Trait` in argument or return position.
/// - Not `const fn`, `unsafe fn`, `extern "ABI" fn`, nor variadic.
/// - Argument patterns may be anything the function accepts (`mut x`,
///   `(a, b): (u32, u32)`, `_: u8`): they stay on the original function, and
///   the generated code passes arguments by position.
///
/// # Arguments
///
/// `#[task]` takes no arguments except `crate = path`, for a crate that
/// names the facade otherwise than `mproc` (e.g. it renamed the
/// dependency): `#[task(crate = ::my_mproc)]`. Anything else is an error.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(attr.into(), item.into()).into()
}

#[cfg(test)]
mod tests;
