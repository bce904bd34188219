//! The core of mproc: the task registry, worker boot, the wire protocol and
//! the [`Executor`].
//!
//! Users depend on the facade crate `mproc`, which re-exports this crate.

mod boot;
mod error;
mod executor;
mod identity;
mod outbox;
mod protocol;
mod sys;
mod task;
mod trace;
mod worker;

pub use error::{Error, ErrorKind, ExitInfo, TaskError};
pub use executor::{
    as_completed, wait, AsCompleted, AsyncResult, Executor, ExecutorBuilder, Imap, MapOptions,
    MapStream, Pool, PoolBuilder, ReturnWhen, StartMethod, TaskHandle, TaskId, TaskOptions,
    TransportKind,
};
pub use identity::{cpu_count, current_process, is_worker, parent_process, ProcessInfo};
pub use task::{registered_tasks, Task};

/// Items the `#[task]` macro expands to. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::task::{assert_wire, TaskCall, TaskEntry, TASKS};
    pub use linkme;
}
