//! The `#[task]` and `#[actor]` attributes of [mproc](https://docs.rs/mproc):
//! `#[task]` turns a function into a task that worker processes can run,
//! `#[actor]` a type into an actor that lives in a process of its own.
//!
//! Use them through the facade, as `#[mproc::task]` and `#[mproc::actor]`
//! or `task` and `actor` from `mproc::prelude`; the expansions name items of
//! `::mproc`, so this crate is not meant to be used on its own.
//!
//! # What `#[task]` generates
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
//!
//! # What `#[actor]` generates
//!
//! On the type (`#[actor] struct Counter { n: u64 }`) nothing: the type is
//! checked and emitted as it is. For its `impl` block
//!
//! ```ignore
//! #[mproc::actor]
//! impl Counter {
//!     pub fn new(start: u64) -> Self { Counter { n: start } }
//!     /// Adds `by`.
//!     pub fn incr(&mut self, by: u64) -> u64 { self.n += by; self.n }
//!     pub async fn slow_get(&self) -> u64 { self.n }
//!     pub fn add2(&mut self, a: u64, b: u64) -> Result<u64, String> { .. }
//! }
//! ```
//!
//! the attribute emits (paths shortened; `__private` is
//! `::mproc::__private`):
//!
//! ```ignore
//! impl Counter { .. }                     // the block, unchanged
//!
//! impl __private::ActorType for Counter {
//!     type Args = u64;                    // `new`'s arguments: one as itself,
//!                                         // several as a tuple, none as `()`
//!     const NAME: &'static str = concat!(module_path!(), "::", "Counter");
//!     const METHODS: &'static [&'static str] = &["incr", "slow_get", "add2"];
//!     fn construct(arg: Self::Args) -> Self { Self::new(arg) }
//! }
//!
//! impl __private::ActorObject for Counter {
//!     fn call<'a>(&'a mut self, method: u32, args: &'a [u8]) -> MethodFuture<'a> {
//!         match method {
//!             0 => Box::pin(async move {
//!                 let (by,) = decode_args::<(u64,)>(args)?;
//!                 encode_reply::<u64>(&Self::incr(self, by))
//!             }),
//!             1 => Box::pin(async move {
//!                 let () = decode_args::<()>(args)?;
//!                 encode_reply::<u64>(&Self::slow_get(self).await)
//!             }),
//!             2 => .., // `add2`: `(u64, u64)` in, `Result<u64, String>` out
//!             _ => Box::pin(async move { Err(unknown_method(Self::NAME, method)) }),
//!         }
//!     }
//! }
//!
//! /// The client of `Counter` actors: what `ActorRef<Counter>` derefs to ..
//! #[derive(Clone, Debug)]
//! pub struct CounterClient { raw: __private::RawActorRef }
//!
//! impl __private::ActorClient for CounterClient { .. }  // `from_raw`, `raw`
//!
//! impl CounterClient {
//!     /// Adds `by`.
//!     ///
//!     /// Runs `Counter::incr` in the actor's process; ..
//!     pub fn incr(&self, by: u64) -> ::mproc::ActorCall<u64> {
//!         self.raw.call::<(u64,), u64>(0, "incr", &(by,))
//!     }
//!     pub fn slow_get(&self) -> ::mproc::ActorCall<u64> { .. }
//!     pub fn add2(&self, a: u64, b: u64) -> ::mproc::ActorCall<Result<u64, String>> { .. }
//! }
//!
//! impl ::mproc::Actor for Counter { type Client = CounterClient; }
//!
//! impl Counter {
//!     /// Starts an actor of this type in a process of its own ..
//!     pub fn spawn(executor: &Executor, args: u64)
//!         -> impl Future<Output = Result<ActorRef<Self>, Error>> + Send + 'static { .. }
//!     pub fn spawn_with(executor: &Executor, args: u64, options: ActorOptions)
//!         -> impl Future<Output = Result<ActorRef<Self>, Error>> + Send + 'static { .. }
//! }
//!
//! const _: () = {
//!     // One entry of the link-time registry `__private::ACTORS`.
//!     #[linkme::distributed_slice(ACTORS)]
//!     static __MPROC_ACTOR_ENTRY: ActorEntry = ActorEntry::of::<Counter>();
//!     // The checks below.
//! };
//! ```
//!
//! Method `i` is the `i`-th method with a receiver, in the order of the
//! block; its arguments travel as one tuple, `(a,)`, `(a, b)` or `()`.
//!
//! Where a type that cannot cross a process boundary is reported: each of
//! the generic calls that handle a method's types (`RawActorRef::call`,
//! `decode_args`, `encode_reply`) names them in a turbofish spanned at the
//! type as written, so the compiler reports an unsatisfied serde bound at
//! the return type, or at the argument for a method of one argument. A
//! method of several arguments also gets one `assert_wire::<T>()` per
//! argument (`Serialize + DeserializeOwned + Send + 'static`) spanned at its
//! type, as for a task; one of one argument gets an `assert_send::<T>()`,
//! since the calls check only serde. Likewise the constructor: one argument
//! is `Args` itself, whose bounds (those of `assert_wire`, plus `Clone` for
//! restarts and `Sync`) the compiler reports at its type; several get one
//! `assert_constructor_arg::<T>()` each.
//!
//! See [`macro@actor`] for the rules an actor must follow.

mod actor;
mod ast;
mod errors;
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
/// One warning, not an error: an argument or return type written
/// `Vec<u8>` gets a deprecation note at that type, because serde encodes
/// a `Vec<u8>` one element at a time; `mproc::Bytes` (which derefs to
/// `Vec<u8>`) is one byte string, and out of band when large.
/// `#[allow(deprecated)]` on the function keeps `Vec<u8>` without it (a
/// short key costs nothing either way).
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

/// Turns a type and its `impl` block into an mproc actor: an instance that
/// lives in a process of its own, keeps its state between calls, and runs
/// the calls made through its handles one at a time.
///
/// Put it on the type and on its `impl` block:
///
/// ```ignore
/// use mproc::prelude::*;
///
/// #[mproc::actor]
/// pub struct Counter { n: u64 }
///
/// #[mproc::actor]
/// impl Counter {
///     pub fn new(start: u64) -> Self { Counter { n: start } }
///     pub fn incr(&mut self, by: u64) -> u64 { self.n += by; self.n }
///     pub fn get(&self) -> u64 { self.n }
///     pub async fn slow_get(&self) -> u64 { self.n }
///     fn helper(x: u32) -> u32 { x }        // not an actor method
/// }
///
/// let c: ActorRef<Counter> = Counter::spawn(&executor, 5).await?;
/// assert_eq!(c.incr(2).await?, 7);         // `ActorRef` derefs to the client
/// let mut local = Counter::new(0);          // the type is still an ordinary type
/// local.incr(1);
/// ```
///
/// # What the `impl` block gives
///
/// - The block itself is kept as written: its functions are still callable
///   in this process.
/// - The constructor is the function named `new`, which returns `Self`.
///   Its arguments are what `Counter::spawn(&executor, args)` takes: one as
///   itself, several as a tuple, none as `()`. It runs in the actor's
///   process, and again there on a restart (`ActorOptions::max_restarts`),
///   with a clone of the same arguments.
/// - Every function with a `&self` or `&mut self` receiver is an actor
///   method, sync or `async`. Other associated functions, constants and
///   types are kept and are not part of the actor.
/// - A client type, `CounterClient`, named after the type: what
///   `ActorRef<Counter>` derefs to. It has one method per actor method, with
///   the same name, doc comments and argument names and types, returning
///   `ActorCall<T>` (a future of `Result<T, TaskError>`) where `T` is the
///   method's return type (an `async fn`'s is the type it resolves to).
///   Arguments whose pattern is not a plain name (`(a, b): (u8, u8)`, `_`)
///   get one (`arg1`). `Self` in argument and return types is replaced by
///   the type's name. Each client method has the visibility of its
///   method; the struct itself is always `pub`, because the macro does not
///   see the type's visibility and the client, as `Actor::Client`, must be
///   at least as visible as the type. (So for a private actor in a public
///   module of a library the client is public: keep private actors in
///   private modules.) Its name is fixed: if `CounterClient` is already
///   taken in the module, rename one of the two types.
/// - `Counter::spawn(&executor, args)` and `Counter::spawn_with(&executor,
///   args, options)`, which start an actor in a process of its own and
///   resolve to an `ActorRef<Counter>`. They have the visibility of `new`.
/// - `impl mproc::Actor for Counter`, and the hidden impls and registry
///   entry an actor process uses to build the actor and run its methods by
///   name: `Counter`'s stable name is `module::path::Counter`, with the
///   path of the module the `impl` block is in. Every process started from
///   the same binary knows it without any setup call.
/// - `#[cfg(...)]` on the block is copied onto every generated item, and on
///   a method onto its generated counterparts; `#[deprecated]` on a method
///   is copied onto its client method.
///
/// `ActorRef`'s own methods (`id`, `stop`, `restarts`, `clone`, ...) are
/// found before the client's by method-call syntax: an actor method of the
/// same name is then called as `(*actor).stop()`.
///
/// # Rules, checked at compile time
///
/// Each violation is a compile error pointing at the offending token. When
/// the `impl` block is rejected it is still emitted as written, with
/// stand-ins for what it would have generated, so that code using the actor
/// (`Counter::spawn`, `c.incr(2)`) reports nothing more.
///
/// - The type (a `struct` or an `enum`) and its `impl` block are not
///   generic and have no `where` clause: an actor's process builds it from
///   its type's name alone. `#[actor]` on anything else is an error.
/// - The block is the type's own `impl` block, not a trait impl.
/// - It has a constructor: a function `new`, not `async`, without `self`,
///   that returns `Self` (or the type's name). `const fn new` is fine.
/// - Actor methods take `&self` or `&mut self`: not `self` by value,
///   `self: Box<Self>` or the like, since the actor stays in its process
///   between calls. Their futures, for an `async fn`, need not be `Send`:
///   they run on the actor's own thread.
/// - Argument and return types (of the methods and of `new`) are owned:
///   no `&` and no lifetime but `'static`; and no `impl Trait`.
/// - They must be `Serialize + DeserializeOwned + Send + 'static`; the
///   constructor's arguments also `Clone + Sync`, since they are kept to run
///   `new` again on a restart. The error points at the type that is not.
/// - Methods and `new` are not generic and have no `where` clause; methods
///   are not `const fn`; neither is `unsafe fn`, `extern "ABI" fn` nor
///   variadic.
/// - No function of the block is named `spawn` or `spawn_with`: those are
///   generated.
///
/// # Arguments
///
/// `#[actor]` takes no arguments except `crate = path`, for a crate that
/// names the facade otherwise than `mproc`: `#[actor(crate = ::my_mproc)]`,
/// on the `impl` block (it is accepted, and unused, on the type). Anything
/// else is an error.
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    actor::actor(attr.into(), item.into()).into()
}

#[cfg(test)]
mod tests;
