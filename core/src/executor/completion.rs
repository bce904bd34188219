//! [`Completion`]: the rendezvous between the scheduler, which resolves a
//! request once, and whoever waits for it (a `TaskHandle`, a map, an
//! `AsyncResult`), async or blocking.

use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::error::TaskError;
use crate::protocol::batch::{first_failed, Outcome};

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

    /// True when a resolved outcome's first item is an error.
    pub(crate) fn peek_failed(&self) -> bool {
        self.slot
            .lock()
            .unwrap()
            .outcome
            .as_ref()
            .is_some_and(first_failed)
    }
}
