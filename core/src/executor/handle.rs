//! [`TaskHandle`]: the future of one submitted task.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::completion::Completion;
use super::sched::{Core, Running};
use crate::error::TaskError;
use crate::protocol::batch::decode_one;

/// Identifies one submitted task (unique within the program).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub(crate) u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}

/// A submitted task: a future of its result.
///
/// The task was queued when [`submit`](super::Executor::submit) returned;
/// awaiting the handle only waits for it, and dropping the handle does not
/// cancel it.
///
/// # Cancel safety
/// Dropping a `TaskHandle` future before it completes loses nothing but the
/// result; the task itself keeps running.
pub struct TaskHandle<T> {
    pub(crate) id: TaskId,
    pub(crate) comp: Arc<Completion>,
    pub(crate) core: Option<Arc<Core>>,
    pub(crate) _out: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .field("done", &self.is_done())
            .finish()
    }
}

impl<T> TaskHandle<T> {
    pub(crate) fn resolved(id: TaskId, err: TaskError) -> Self {
        let comp = Completion::new();
        comp.resolve(Err(err));
        TaskHandle {
            id,
            comp,
            core: None,
            _out: PhantomData,
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// True once the task has a result (value or error); awaiting the handle
    /// then returns at once.
    pub fn is_done(&self) -> bool {
        self.comp.is_resolved()
    }

    /// Cancels the task: a queued task never runs; a running one is stopped
    /// by recycling its worker. The handle then resolves to
    /// [`TaskError::Cancelled`]. Returns false if the task had already
    /// finished.
    pub fn cancel(&self) -> bool {
        match &self.core {
            Some(core) => core.abort(self.id.0, TaskError::Cancelled, Running::Stop),
            None => false,
        }
    }

    /// Waits for the result from blocking code.
    pub fn wait_blocking(self) -> Result<T, TaskError>
    where
        T: DeserializeOwned,
    {
        self.comp.wait_until(None);
        decode_one(self.comp.take().unwrap_or(Err(TaskError::Cancelled)))
    }

    /// Waits up to `d` from blocking code; true when the task is done.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        self.comp.wait_until(Some(Instant::now() + d))
    }

    pub(crate) fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.comp.poll_resolved(cx)
    }
}

impl<T: DeserializeOwned> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.comp.poll_take(cx).map(decode_one)
    }
}
