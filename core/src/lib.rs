//! The core of mproc: the task registry, worker boot, the wire protocol and
//! the [`Executor`].
//!
//! Users depend on the facade crate `mproc`, which re-exports this crate.

mod boot;
mod error;
mod executor;
mod forkserver;
mod identity;
mod outbox;
mod process;
mod protocol;
mod shared;
mod sys;
mod task;
mod trace;
mod worker;

pub use error::{Error, ErrorKind, ExitInfo, QueueError, TaskError};
pub use executor::{
    as_completed, wait, AsCompleted, AsyncResult, Executor, ExecutorBuilder, Imap, MapOptions,
    MapStream, Pool, PoolBuilder, ReturnWhen, StartMethod, TaskHandle, TaskId, TaskOptions,
    TransportKind,
};
pub use identity::{cpu_count, current_process, is_worker, parent_process, ProcessInfo};
pub use process::{active_children, get_start_method, set_start_method, Process, ProcessHandle};
pub use shared::{
    pipe, Array, ArrayGuard, Barrier, BoundedSemaphore, Condition, ConditionGuard, Connection,
    Event, JoinableQueue, Lock, LockGuard, Pod, Queue, RLock, RLockGuard, Semaphore,
    SemaphoreGuard, SimpleQueue, Value, ValueGuard, PIPE_BYTES, QUEUE_BYTES,
};
pub use task::{registered_tasks, Task};

/// Items the `#[task]` macro expands to. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::task::{assert_wire, TaskCall, TaskEntry, TASKS};
    pub use linkme;
}
