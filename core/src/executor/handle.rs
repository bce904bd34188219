//! [`TaskHandle`]: the future of one submitted task.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::core::Core;
use crate::error::TaskError;

/// Identifies one submitted task (unique within the program).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub(crate) u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}

/// What a finished request carries: the encoded
/// `Vec<Result<Output, TaskError>>` of its batch, or one error for all of it.
pub(crate) type Outcome = Result<Vec<u8>, TaskError>;

#[derive(Debug, Default)]
struct Slot {
    outcome: Option<Outcome>,
    resolved: bool,
    waker: Option<Waker>,
}

/// The rendezvous between the scheduler, which resolves a request once, and
/// the handle that takes its outcome (async or blocking).
#[derive(Debug, Default)]
pub(crate) struct Completion {
    slot: Mutex<Slot>,
    cond: Condvar,
}

impl Completion {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Completion::default())
    }

    /// Resolves once; later calls are ignored and return false.
    pub(crate) fn resolve(&self, outcome: Outcome) -> bool {
        let mut s = self.slot.lock().unwrap();
        if s.resolved {
            return false;
        }
        s.resolved = true;
        s.outcome = Some(outcome);
        let waker = s.waker.take();
        drop(s);
        self.cond.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    pub(crate) fn is_resolved(&self) -> bool {
        self.slot.lock().unwrap().resolved
    }

    /// Ready once resolved, without taking the outcome.
    pub(crate) fn poll_resolved(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.slot.lock().unwrap();
        if s.resolved {
            return Poll::Ready(());
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Takes the outcome once resolved.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut s = self.slot.lock().unwrap();
        if s.resolved {
            return Poll::Ready(s.outcome.take().unwrap_or(Err(TaskError::Cancelled)));
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Blocks until resolved or `deadline`; true when resolved.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut s = self.slot.lock().unwrap();
        while !s.resolved {
            match deadline {
                None => s = self.cond.wait(s).unwrap(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    s = self.cond.wait_timeout(s, d - now).unwrap().0;
                }
            }
        }
        true
    }

    /// Takes the outcome of a resolved completion.
    pub(crate) fn take(&self) -> Option<Outcome> {
        self.slot.lock().unwrap().outcome.take()
    }

    /// True when a resolved one-item outcome is an error.
    pub(crate) fn peek_failed(&self) -> bool {
        match &self.slot.lock().unwrap().outcome {
            Some(Err(_)) => true,
            // A batch of one: varint length 1, then the variant (1 = Err).
            Some(Ok(bytes)) => bytes.get(1) == Some(&1),
            None => false,
        }
    }
}

/// Decodes the items of a finished batch.
pub(crate) fn decode_batch<T: DeserializeOwned>(
    outcome: Outcome,
    n: usize,
) -> Vec<Result<T, TaskError>> {
    match outcome {
        Ok(bytes) => match postcard::from_bytes::<Vec<Result<T, TaskError>>>(&bytes) {
            Ok(v) => v,
            Err(e) => {
                let e = TaskError::Serialization {
                    message: format!("cannot decode the result: {e}"),
                };
                (0..n).map(|_| Err(e.clone())).collect()
            }
        },
        Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
    }
}

/// Decodes the single item of a one-argument request.
pub(crate) fn decode_one<T: DeserializeOwned>(outcome: Outcome) -> Result<T, TaskError> {
    decode_batch(outcome, 1)
        .into_iter()
        .next()
        .unwrap_or(Err(TaskError::Serialization {
            message: "empty result batch".into(),
        }))
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
            Some(core) => core.abort(self.id.0, TaskError::Cancelled),
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
