//! Running a registered task on a batch of encoded arguments, with its
//! panics caught and turned into [`TaskError::Panicked`].
//!
//! While task code runs, its thread is marked (see `task_thread`), so the
//! worker's panic hook can tell a task's panic (reported to the caller) from
//! a panic of mproc itself (printed as usual).

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;

use futures::FutureExt;

use super::runtime::runtime;
use super::task_thread::{self, IN_TASK};
use super::{Task, TaskCall};
use crate::error::TaskError;
use crate::protocol::batch::{decode_args_mode, Items};

/// What running a batch gives: the encoded items, or one error for all.
pub(crate) type BatchResult = Result<Items, TaskError>;

/// How a registered task runs a batch of encoded arguments.
pub(crate) enum BatchRun {
    /// A sync task ran.
    Done(BatchResult),
    /// An async task: await this on the runtime.
    Async(Pin<Box<dyn Future<Output = BatchResult> + Send>>),
}

/// The text of a panic payload.
pub(crate) fn payload_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

pub(crate) fn panicked(p: Box<dyn std::any::Any + Send>) -> TaskError {
    task_thread::caught();
    TaskError::Panicked {
        message: payload_text(&*p),
    }
}

/// Runs user code with its thread marked and its panic caught.
pub(crate) fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, TaskError> {
    let was = IN_TASK.with(|flag| flag.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f)).map_err(panicked);
    IN_TASK.with(|flag| flag.set(was));
    r
}

/// The registry's entry point for task `T` (see `TaskEntry::of`).
pub(crate) fn run_batch<T: Task>(input: &[u8]) -> BatchRun {
    // Results go out of band when the arguments came so.
    let (args, oob): (Vec<T::Args>, bool) = match decode_args_mode(input, T::NAME) {
        Ok(a) => a,
        Err(e) => return BatchRun::Done(Err(e)),
    };
    let mut out = Items::with_mode(args.len(), oob);
    if T::IS_ASYNC {
        return BatchRun::Async(Box::pin(async move {
            for a in args {
                let r = match guarded(|| T::__call(a)) {
                    Ok(TaskCall::Ready(v)) => Ok(v),
                    Ok(TaskCall::Pending(f)) => {
                        AssertUnwindSafe(f).catch_unwind().await.map_err(panicked)
                    }
                    Err(e) => Err(e),
                };
                out.push(r);
            }
            Ok(out)
        }));
    }
    for a in args {
        let r = match guarded(|| T::__call(a)) {
            Ok(TaskCall::Ready(v)) => Ok(v),
            Ok(TaskCall::Pending(f)) => guarded(|| runtime().block_on(f)),
            Err(e) => Err(e),
        };
        out.push(r);
    }
    BatchRun::Done(Ok(out))
}

impl BatchRun {
    /// Runs the batch to completion on the calling thread.
    pub(crate) fn block(self) -> BatchResult {
        match self {
            BatchRun::Done(r) => r,
            BatchRun::Async(f) => runtime().block_on(f),
        }
    }
}
