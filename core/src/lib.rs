//! The core of mproc: the task registry, worker boot, the wire protocol and
//! the [`Executor`]. `ARCHITECTURE.md` at the workspace root draws the
//! layers of this crate and which may use which.
//!
//! Users depend on the facade crate `mproc`, which re-exports this crate.

mod actor;
mod address;
mod child;
mod children;
mod cluster;
mod error;
mod executor;
mod failure;
mod identity;
mod manager;
mod outbox;
mod process;
mod protocol;
mod registry;
mod shared;
mod spawn;
mod sys;
mod tls;
mod trace;

/// Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off by
/// default). Not public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[path = "fuzz.rs"]
pub mod __fuzz;

pub use actor::{Actor, ActorCall, ActorOptions, ActorRef};
pub use address::{current_node, NodeId, WorkerId};
pub use cluster::{join, join_tls, Cluster, NodeInfo};
pub use error::{Error, ErrorKind, ExitInfo, QueueError, TaskError};
pub use executor::{
    as_completed, as_completed_keyed, wait, wait_timeout, AsCompleted, AsCompletedKeyed,
    AsyncResult, Callbacks, Executor, ExecutorBuilder, Imap, MapOptions, MapStream, Pool,
    PoolBuilder, ReturnWhen, TaskHandle, TaskId, TaskOptions, TransportKind,
};
pub use failure::Failure;
pub use identity::{cpu_count, current_process, is_worker, parent_process, ProcessInfo};
pub use manager::{DictProxy, ListProxy, Manager, QueueProxy, ValueProxy};
pub use process::{active_children, Process, ProcessHandle};
pub use registry::{registered_tasks, Task};
pub use shared::{
    pipe, Array, ArrayGuard, Barrier, BoundedSemaphore, BrokenBarrierError, Bytes, Condition,
    ConditionGuard, Connection, Event, JoinableQueue, Lock, LockGuard, Pod, Queue, RLock,
    RLockGuard, Semaphore, SemaphoreGuard, SharedBytes, SimpleQueue, Value, ValueGuard, PIPE_BYTES,
    QUEUE_BYTES,
};
pub use spawn::{get_start_method, set_start_method, StartMethod};
pub use tls::{ClientTls, ServerTls};

/// Items the `#[task]` macro expands to. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::actor::{spawn_actor, ActorClient, RawActorRef};
    pub use crate::registry::actors::{
        assert_constructor_arg, decode_args, encode_reply, unknown_method, ActorEntry, ActorObject,
        ActorType, MethodFuture, ACTORS,
    };
    pub use crate::registry::{assert_wire, TaskCall, TaskEntry, TASKS};
    pub use linkme;
}
