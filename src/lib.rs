//! # mproc
//!
//! Run work in OS processes the way Python's `multiprocessing` and
//! `concurrent.futures` do — with Rust's types, and without the ways those
//! break.
//!
//! * `#[mproc::task]` makes a plain function remotely invocable; it stays
//!   callable in-process.
//! * [`Executor`] is an async process pool like `ProcessPoolExecutor`:
//!   `submit`, `map`, `as_completed`, `wait`, timeouts and cancellation. A
//!   worker that crashes fails only the task it was running and is replaced.
//! * Workers boot with no setup call: any binary, example, bench or test that
//!   links mproc can start them, and user code in `main` never runs in a
//!   worker.
//! * A task raises by returning `Result<T, Failure>` and using `?` on any
//!   error; [`Failure`] has the table "Errors and panics in tasks" (what the
//!   caller gets for an error, a panic, a crash, a timeout).
//! * Coming from Python: `docs/porting.md` in the repository maps every name
//!   of `multiprocessing` and `concurrent.futures` to mproc's, with each
//!   difference in behaviour.
//!
//! ```no_run
//! use mproc::prelude::*;
//!
//! #[mproc::task]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), mproc::Error> {
//!     let executor = Executor::new(4).await?;
//!     assert_eq!(executor.submit(square, 10).await?, 100);
//!     let squares: Vec<u64> = executor.map(square, 0..10u64).try_collect().await?;
//!     println!("{squares:?}");
//!     executor.shutdown().await;
//!     Ok(())
//! }
//! ```

extern crate self as mproc;

pub use mproc_core::*;
pub use mproc_macros::{actor, task};

/// The transport layer: framing and byte streams.
pub mod transport {
    pub use mproc_transport::*;
}

/// Everything a typical program needs: `use mproc::prelude::*;`.
pub mod prelude {
    pub use crate::{actor, task};
    pub use futures::{StreamExt, TryStreamExt};
    pub use mproc_core::{
        active_children, get_start_method, set_start_method, Process, ProcessHandle,
    };
    pub use mproc_core::{
        as_completed, as_completed_keyed, cpu_count, current_process, parent_process, wait,
        wait_timeout, AsCompleted, AsCompletedKeyed, AsyncResult, Callbacks, Error, ErrorKind,
        Executor, ExecutorBuilder, ExitInfo, Failure, MapOptions, MapStream, Pool, PoolBuilder,
        ProcessInfo, ReturnWhen, StartMethod, Task, TaskError, TaskHandle, TaskId, TaskOptions,
        TransportKind,
    };
    pub use mproc_core::{
        current_node, ActorOptions, ActorRef, Cluster, NodeId, NodeInfo, WorkerId,
    };
    pub use mproc_core::{
        pipe, Array, Barrier, BoundedSemaphore, BrokenBarrierError, Bytes, Condition, Connection,
        Event, JoinableQueue, Lock, Queue, QueueError, RLock, Semaphore, SharedBytes, SimpleQueue,
        Value,
    };
    pub use mproc_core::{DictProxy, ListProxy, Manager, QueueProxy, ValueProxy};
}
