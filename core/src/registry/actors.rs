//! The link-time registry of actor types: what an actor process needs to
//! build an instance by name and run its methods.
//!
//! `#[mproc::actor]` on an `impl` block implements [`ActorObject`] (method
//! number → decoded call → encoded reply) and adds one [`ActorEntry`] to
//! [`ACTORS`]. Like the task registry it is static data, complete before any
//! code runs, so an actor process finds its type's constructor by name.

use std::any::type_name;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::OnceLock;

use futures::FutureExt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::TaskError;

/// The future of one actor method: its encoded result, or why there is none.
/// It borrows the actor, so calls run one at a time.
#[doc(hidden)]
pub type MethodFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, TaskError>> + 'a>>;

/// An actor instance as its process runs it: a method number and the
/// method's encoded arguments in, the encoded result out.
///
/// Implemented by `#[mproc::actor]` on the type's `impl` block.
#[doc(hidden)]
pub trait ActorObject: 'static {
    /// Runs method number `method` (its index among the type's actor
    /// methods) on `args`, the postcard tuple of its arguments.
    fn call<'a>(&'a mut self, method: u32, args: &'a [u8]) -> MethodFuture<'a>;
}

/// How an actor process builds an instance from the encoded constructor
/// arguments.
pub(crate) type Construct = fn(&[u8]) -> Result<Box<dyn ActorObject>, TaskError>;

/// The hidden half of an actor type, implemented by `#[mproc::actor]`:
/// its stable name, its methods and its constructor. The public half is
/// `mproc::Actor`.
#[doc(hidden)]
pub trait ActorType: ActorObject + Sized {
    /// The constructor's arguments: the single argument itself, a tuple for
    /// several, `()` for none.
    type Args: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// The stable name of the type: `module::path::Type`.
    const NAME: &'static str;
    /// The actor methods, in number order.
    const METHODS: &'static [&'static str];
    /// Calls `new` with the arguments unpacked.
    fn construct(args: Self::Args) -> Self;
}

/// One entry of the actor registry.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct ActorEntry {
    pub(crate) name: &'static str,
    pub(crate) methods: &'static [&'static str],
    pub(crate) args_type: fn() -> &'static str,
    pub(crate) construct: Construct,
}

impl std::fmt::Debug for ActorEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorEntry")
            .field("name", &self.name)
            .field("methods", &self.methods)
            .finish()
    }
}

impl ActorEntry {
    /// The registry entry of actor type `A`.
    pub const fn of<A: ActorType>() -> ActorEntry {
        ActorEntry {
            name: A::NAME,
            methods: A::METHODS,
            args_type: type_name::<A::Args>,
            construct: construct::<A>,
        }
    }

    /// The name of method number `method`.
    pub(crate) fn method_name(&self, method: u32) -> &'static str {
        self.methods.get(method as usize).copied().unwrap_or("?")
    }
}

fn construct<A: ActorType>(bytes: &[u8]) -> Result<Box<dyn ActorObject>, TaskError> {
    let args: A::Args = decode_args(bytes)?;
    let actor = super::invoke::guarded(|| A::construct(args))?;
    Ok(Box::new(actor))
}

/// Every actor type of the program, gathered by the linker.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static ACTORS: [ActorEntry];

/// Decodes the arguments of a call (or of the constructor).
#[doc(hidden)]
pub fn decode_args<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, TaskError> {
    crate::protocol::decode(bytes).map_err(|e| TaskError::Serialization {
        message: format!("cannot decode the arguments: {e}"),
    })
}

/// Compile-time check that a type can be an argument of an actor's
/// constructor: it crosses the process boundary (like a task argument) and
/// is kept, shared by the actor's handles, to run the constructor again on
/// a restart. The bounds are those of [`ActorType::Args`], checked one
/// argument at a time so that an error points at the argument.
#[doc(hidden)]
pub const fn assert_constructor_arg<
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
>() {
}

/// Encodes a method's result.
#[doc(hidden)]
pub fn encode_reply<T: Serialize>(value: &T) -> Result<Vec<u8>, TaskError> {
    postcard::to_allocvec(value).map_err(|e| TaskError::Serialization {
        message: format!("cannot encode the result: {e}"),
    })
}

/// The error for a method number the type does not have (only another
/// build could send one, and the fingerprint check keeps those out).
#[doc(hidden)]
pub fn unknown_method(actor: &str, method: u32) -> TaskError {
    TaskError::UnknownTask {
        name: format!("{actor}#method{method}"),
    }
}

/// Runs one actor method on the calling thread, its panic caught: a sync
/// method finishes in the first poll; an `async` one is then driven on the
/// process's runtime.
pub(crate) fn run_method(fut: MethodFuture<'_>) -> Result<Vec<u8>, TaskError> {
    let mut fut = AssertUnwindSafe(fut).catch_unwind();
    let waker = futures::task::noop_waker();
    let was = super::task_thread::IN_TASK.with(|flag| flag.replace(true));
    // Inside the runtime's context, so that an `async` method may create
    // timers and sockets in its first poll.
    let first = {
        let _rt = super::runtime::runtime().enter();
        Pin::new(&mut fut).poll(&mut std::task::Context::from_waker(&waker))
    };
    let r = match first {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => super::runtime::runtime().block_on(fut),
    };
    super::task_thread::IN_TASK.with(|flag| flag.set(was));
    r.map_err(super::invoke::panicked).and_then(|r| r)
}

fn by_name() -> &'static HashMap<&'static str, &'static ActorEntry> {
    static MAP: OnceLock<HashMap<&'static str, &'static ActorEntry>> = OnceLock::new();
    MAP.get_or_init(|| ACTORS.iter().map(|e| (e.name, e)).collect())
}

/// Looks an actor type up by its stable name.
pub(crate) fn lookup(name: &str) -> Option<&'static ActorEntry> {
    by_name().get(name).copied()
}

/// The entries sorted by name, for the registry fingerprint.
pub(crate) fn sorted() -> Vec<&'static ActorEntry> {
    let mut v: Vec<_> = ACTORS.iter().collect();
    v.sort_by_key(|e| e.name);
    v
}
