//! The [`Task`] trait, the link-time task registry, and how a registered
//! task is invoked on a batch of encoded arguments ([`invoke`]).
//!
//! `#[mproc::task]` turns a function into a unit struct that implements
//! [`Task`] and adds one [`TaskEntry`] to the [`TASKS`] distributed slice.
//! The slice is static data assembled by the linker, so it is complete before
//! any code runs — in particular inside the start-up hook that turns a freshly
//! spawned process into a worker (see `boot.rs`).

use std::any::type_name;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) mod actors;
pub(crate) mod invoke;
pub(crate) mod runtime;
pub(crate) mod task_thread;

pub(crate) use invoke::BatchRun;

/// A function that can run in a worker process.
///
/// Implemented by `#[mproc::task]`: a plain `fn` or a closure is not a
/// task, and passing one to `submit`, `map` or `Process::new` is a compile
/// error that says to add the attribute. A closure cannot become one: a
/// worker is another process and finds the code to run by name.
///
/// A manual implementation is possible (its
/// [`NAME`](Task::NAME) is then unknown to workers unless it is registered,
/// and calls fail with [`TaskError::UnknownTask`](crate::TaskError::UnknownTask)).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an mproc task",
    label = "not an mproc task",
    note = "annotate the function with `#[mproc::task]`; closures cannot cross processes"
)]
pub trait Task: Copy + Send + Sync + 'static {
    /// The arguments: the single argument itself, a tuple for several, `()`
    /// for none.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// The declared return type of the function.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The stable name of the task: `module::path::function`.
    const NAME: &'static str;
    /// Whether the function is an `async fn`.
    #[doc(hidden)]
    const IS_ASYNC: bool = false;
    /// Runs the function in this process.
    #[doc(hidden)]
    fn __call(args: Self::Args) -> TaskCall<Self::Output>;
}

/// What [`Task::__call`] returns: the value of a sync function, or the boxed
/// future of an `async fn`.
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub enum TaskCall<T> {
    /// The value a sync function returned.
    Ready(T),
    /// The future of an async function.
    Pending(Pin<Box<dyn Future<Output = T> + Send + 'static>>),
}

/// How a worker runs one registered task on a batch of encoded arguments:
/// the input is a postcard `Vec<Args>` (see `protocol::batch`).
pub(crate) type BatchRunner = fn(&[u8]) -> BatchRun;

/// One entry of the task registry.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct TaskEntry {
    pub(crate) name: &'static str,
    pub(crate) is_async: bool,
    pub(crate) args_type: fn() -> &'static str,
    pub(crate) output_type: fn() -> &'static str,
    pub(crate) run: BatchRunner,
}

impl std::fmt::Debug for TaskEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEntry")
            .field("name", &self.name)
            .field("is_async", &self.is_async)
            .finish()
    }
}

impl TaskEntry {
    /// The registry entry of task `T`.
    pub const fn of<T: Task>() -> TaskEntry {
        TaskEntry {
            name: T::NAME,
            is_async: T::IS_ASYNC,
            args_type: type_name::<T::Args>,
            output_type: type_name::<T::Output>,
            run: invoke::run_batch::<T>,
        }
    }
}

/// Every task of the program, gathered by the linker.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static TASKS: [TaskEntry];

/// Compile-time check that a type can cross a process boundary.
#[doc(hidden)]
pub const fn assert_wire<T: Serialize + DeserializeOwned + Send + 'static>() {}

struct Registry {
    by_name: HashMap<&'static str, &'static TaskEntry>,
    fingerprint: u64,
}

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let mut entries: Vec<&'static TaskEntry> = TASKS.iter().collect();
        entries.sort_by_key(|e| e.name);
        // FNV-1a over names and signatures: stable for one build of one
        // binary, different as soon as a task is added, removed or retyped.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |s: &str| {
            for b in s.bytes().chain(std::iter::once(0)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for e in &entries {
            feed(e.name);
            feed(if e.is_async { "async" } else { "sync" });
            feed((e.args_type)());
            feed((e.output_type)());
        }
        for e in actors::sorted() {
            feed(e.name);
            feed((e.args_type)());
            e.methods.iter().for_each(|m| feed(m));
        }
        let by_name = entries.into_iter().map(|e| (e.name, e)).collect();
        Registry {
            by_name,
            fingerprint: h,
        }
    })
}

/// Looks a task up by its stable name.
pub(crate) fn lookup(name: &str) -> Option<&'static TaskEntry> {
    registry().by_name.get(name).copied()
}

/// A fingerprint of the whole registry, exchanged in the handshake.
pub(crate) fn fingerprint() -> u64 {
    registry().fingerprint
}

/// The names of all registered tasks, sorted.
pub fn registered_tasks() -> Vec<&'static str> {
    let mut v: Vec<_> = registry().by_name.keys().copied().collect();
    v.sort_unstable();
    v
}
