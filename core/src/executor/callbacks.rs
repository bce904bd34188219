//! [`Callbacks`] for [`Pool::apply_async_with`](super::Pool::apply_async_with)
//! and [`Pool::map_async_with`](super::Pool::map_async_with) (Python's
//! `callback=` / `error_callback=`), and the pool's callback thread that
//! runs them.
//!
//! When the last part of a result resolves, a completion hook (on the
//! scheduler thread that resolved it) sends the job to the pool's one
//! `mproc-callback` thread, so callbacks run in completion order, in the
//! parent, never on a worker nor on a scheduler thread. The thread starts
//! with the first callback and is joined when the pool stops; a callback
//! that panics is logged and the thread goes on. The `AsyncResult` becomes
//! ready only after its callbacks ran (as in Python), through a *gate*
//! completion that the job resolves when it is done — or dropped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};

use super::completion::Completion;
use crate::error::TaskError;
use crate::protocol::batch::Outcome;

type OnSuccess<T> = Box<dyn FnOnce(T) + Send>;
type OnError = Box<dyn FnOnce(TaskError) + Send>;
/// Decodes the outcomes of a result's parts.
pub(crate) type Decode<T> = Arc<dyn Fn(Vec<Outcome>) -> Result<T, TaskError> + Send + Sync>;

/// What to run in the parent when an [`mproc::AsyncResult`](super::AsyncResult)
/// arrives: Python's `callback=` and `error_callback=` of `apply_async` and
/// `map_async`.
///
/// Callbacks run on one thread owned by the pool, in the order results
/// complete, never on a worker; `get()` returns only after they ran. Keep
/// them short: they run one at a time, so a callback that waits for
/// another result with callbacks waits forever. A callback that panics is logged
/// (`tracing::error!`) and does not harm the pool. Results that complete
/// after the pool stopped run no callback.
///
/// # Examples
/// ```no_run
/// use mproc::{Callbacks, Pool};
///
/// #[mproc::task]
/// fn square(x: u64) -> u64 { x * x }
///
/// # fn main() -> Result<(), mproc::Error> {
/// let pool = Pool::new(2)?;
/// let r = pool.apply_async_with(
///     square,
///     7,
///     Callbacks::new()
///         .on_success(|v| println!("got {v}"))
///         .on_error(|e| eprintln!("failed: {e}")),
/// );
/// assert_eq!(r.get()?, 49);
/// # Ok(()) }
/// ```
pub struct Callbacks<T> {
    on_success: Option<OnSuccess<T>>,
    on_error: Option<OnError>,
}

impl<T> Default for Callbacks<T> {
    fn default() -> Self {
        Callbacks {
            on_success: None,
            on_error: None,
        }
    }
}

impl<T> std::fmt::Debug for Callbacks<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("on_success", &self.on_success.is_some())
            .field("on_error", &self.on_error.is_some())
            .finish()
    }
}

impl<T> Callbacks<T> {
    /// No callbacks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with the value when the result is a success (Python's
    /// `callback=`).
    pub fn on_success(mut self, f: impl FnOnce(T) + Send + 'static) -> Self {
        self.on_success = Some(Box::new(f));
        self
    }

    /// Runs `f` with the error when the result is a failure (Python's
    /// `error_callback=`).
    pub fn on_error(mut self, f: impl FnOnce(TaskError) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }
}

/// One result's callbacks, ready to run; resolves its gate when done or
/// dropped unrun.
struct Job<T> {
    parts: Vec<Arc<Completion>>,
    decode: Decode<T>,
    callbacks: Callbacks<T>,
    gate: Arc<Completion>,
}

impl<T> Job<T> {
    fn run(mut self) {
        let outs = self
            .parts
            .iter()
            .map(|c| c.peek().unwrap_or(Err(TaskError::Shutdown)))
            .collect();
        match (self.decode)(outs) {
            Ok(v) => {
                if let Some(f) = self.callbacks.on_success.take() {
                    f(v);
                }
            }
            Err(e) => {
                if let Some(f) = self.callbacks.on_error.take() {
                    f(e);
                }
            }
        }
    }
}

impl<T> Drop for Job<T> {
    fn drop(&mut self) {
        self.gate.resolve(Ok(Vec::new().into()));
    }
}

type Msg = Option<Box<dyn FnOnce() + Send>>;

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    Running {
        tx: Sender<Msg>,
        thread: JoinHandle<()>,
        id: ThreadId,
    },
    Stopped,
}

/// The pool's callback thread (started on first use).
#[derive(Debug, Default)]
pub(crate) struct CallbackThread {
    state: Mutex<State>,
}

impl CallbackThread {
    fn sender(&self) -> Option<Sender<Msg>> {
        let mut st = self.state.lock().unwrap();
        if let State::Idle = *st {
            let (tx, rx) = mpsc::channel::<Msg>();
            let spawned = std::thread::Builder::new()
                .name("mproc-callback".into())
                .spawn(move || {
                    while let Ok(Some(job)) = rx.recv() {
                        if let Err(p) = catch_unwind(AssertUnwindSafe(job)) {
                            tracing::error!("a pool callback panicked: {}", panic_text(&*p));
                        }
                    }
                });
            match spawned {
                Ok(thread) => {
                    let id = thread.thread().id();
                    *st = State::Running { tx, thread, id };
                }
                Err(e) => tracing::error!("cannot start the pool's callback thread: {e}"),
            }
        }
        match &*st {
            State::Running { tx, .. } => Some(tx.clone()),
            _ => None,
        }
    }

    /// Registers `callbacks` to run once every part has resolved; returns
    /// the gate that resolves after they ran.
    pub(crate) fn attach<T: 'static>(
        &self,
        parts: &[(Arc<Completion>, usize)],
        decode: Decode<T>,
        callbacks: Callbacks<T>,
    ) -> Arc<Completion> {
        let gate = Completion::new();
        let job = Job {
            parts: parts.iter().map(|(c, _)| c.clone()).collect(),
            decode,
            callbacks,
            gate: gate.clone(),
        };
        let Some(tx) = self.sender() else {
            drop(job); // the pool has stopped: no callback, an open gate
            return gate;
        };
        let job: Box<dyn FnOnce() + Send> = Box::new(move || job.run());
        let slot = Arc::new(Mutex::new(Some((job, tx))));
        let left = Arc::new(AtomicUsize::new(parts.len()));
        let dispatch = move || {
            if let Some((job, tx)) = slot.lock().unwrap().take() {
                // A stopped thread drops the job, which opens the gate.
                let _ = tx.send(Some(job));
            }
        };
        if parts.is_empty() {
            dispatch();
            return gate;
        }
        let dispatch = Arc::new(dispatch);
        for (c, _) in parts {
            let (left, dispatch) = (left.clone(), dispatch.clone());
            c.on_resolve(move || {
                if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                    dispatch();
                }
            });
        }
        gate
    }

    /// Runs the callbacks already queued, then ends the thread and joins it
    /// (unless called from a callback, which the thread then outlives only
    /// until that callback returns). Later results run no callback.
    pub(crate) fn stop(&self) {
        let old = std::mem::replace(&mut *self.state.lock().unwrap(), State::Stopped);
        if let State::Running { tx, thread, id } = old {
            let _ = tx.send(None);
            if std::thread::current().id() != id {
                let _ = thread.join();
            }
        }
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}
