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
use super::sched::{next_task_id, Core, Running};
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

/// A submitted task: a future of its result, like Python's `Future`.
///
/// The task was queued when [`mproc::Executor::submit`](super::Executor::submit)
/// returned; awaiting the handle only waits for it, and dropping the handle
/// does not cancel it.
///
/// **Identity.** A handle is `Clone`: clones share the one task, and each
/// clone resolves to the result (the encoded result is kept and decoded per
/// clone, so `T` need not be `Clone`). Handles compare and hash by
/// [`TaskId`], so clones are equal and a handle can key a `HashMap`, as a
/// Python future keys a dict. [`mproc::as_completed`](super::as_completed)
/// and [`mproc::wait`](super::wait) take each task once even if it is
/// passed twice. (Clippy's `mutable_key_type` lint flags a
/// `HashMap<TaskHandle<_>, _>` because a handle holds a shared result slot;
/// hashing reads only the id, so it is a false positive — or key by
/// [`TaskId`] instead.)
///
/// # Examples
/// Python's `future_to_url = {executor.submit(load, url): url for url in urls}`
/// idiom, here with [`mproc::as_completed_keyed`](super::as_completed_keyed)
/// (or a `HashMap<TaskHandle<_>, _>`):
/// ```no_run
/// use futures::StreamExt;
/// use mproc::{as_completed_keyed, Executor};
///
/// #[mproc::task]
/// fn load(url: String) -> usize { url.len() }
///
/// # async fn demo() -> Result<(), mproc::Error> {
/// let executor = Executor::new(2).await?;
/// let urls = ["a.example", "bb.example"];
/// let jobs = urls.iter().map(|u| (*u, executor.submit(load, u.to_string())));
/// let mut done = as_completed_keyed(jobs);
/// while let Some((url, result)) = done.next().await {
///     match result {
///         Ok(n) => println!("{url} is {n} bytes"),
///         Err(e) => println!("{url} generated an exception: {e}"),
///     }
/// }
/// let h = executor.submit(load, "x".to_string());
/// let same = h.clone();
/// assert_eq!(h, same);
/// assert_eq!(h.await?, same.await?); // each clone gets the result
/// # Ok(()) }
/// ```
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

impl<T> Clone for TaskHandle<T> {
    fn clone(&self) -> Self {
        self.comp.handle_cloned();
        TaskHandle {
            id: self.id,
            comp: self.comp.clone(),
            core: self.core.clone(),
            _out: PhantomData,
        }
    }
}

impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        self.comp.handle_dropped();
    }
}

impl<T> PartialEq for TaskHandle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<T> Eq for TaskHandle<T> {}

impl<T> std::hash::Hash for TaskHandle<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
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
    pub(crate) fn new(id: TaskId, comp: Arc<Completion>, core: Option<Arc<Core>>) -> Self {
        comp.handle_cloned();
        TaskHandle {
            id,
            comp,
            core,
            _out: PhantomData,
        }
    }

    /// A handle already failed with `err`, under a fresh id.
    pub(crate) fn resolved(err: TaskError) -> Self {
        let comp = Completion::new();
        comp.resolve(Err(err));
        TaskHandle::new(TaskId(next_task_id()), comp, None)
    }

    /// True when no other clone of this handle exists, so the result can
    /// be taken rather than copied.
    fn sole(&mut self) -> bool {
        self.comp.sole_handle()
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
    pub fn wait_blocking(mut self) -> Result<T, TaskError>
    where
        T: DeserializeOwned,
    {
        let spin = self.core.as_ref().and_then(|c| c.caller_spin());
        if !self.comp.spin_resolved(spin) {
            self.comp.wait_until(None);
        }
        let outcome = if self.sole() {
            self.comp.take()
        } else {
            self.comp.peek()
        };
        decode_one(outcome.unwrap_or(Err(TaskError::Cancelled)))
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

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A result due within microseconds (a round trip, no backlog) is
        // polled for briefly here rather than slept for: parking this
        // thread and waking it again costs more than the wait. Bounded by
        // the spinner's budget (at most `LINK_SPIN_NS`), which shrinks when
        // results do not come that fast.
        let spin = self.core.as_ref().and_then(|c| c.caller_spin());
        if spin.is_some() {
            self.comp.spin_resolved(spin);
        }
        let take = self.sole();
        self.comp.poll_outcome(cx, take).map(decode_one)
    }
}
