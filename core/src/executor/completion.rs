//! [`Completion`]: the rendezvous between the scheduler, which resolves a
//! request once, and whoever waits for it (a `TaskHandle`, a map, an
//! `AsyncResult`), async or blocking.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use mproc_transport::Spin;

use crate::error::TaskError;
use crate::protocol::batch::{first_failed, Outcome};

/// Work to run once a completion resolves (a pool callback's dispatch).
type Hook = Box<dyn FnOnce() + Send>;

/// Who is told when a completion resolves.
enum Waiter {
    /// A task polling a handle (clones of a handle may be polled by
    /// several).
    Task(Waker),
    /// Work to run then.
    Hook(Hook),
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiter::Task(_) => "task",
            Waiter::Hook(_) => "hook",
        })
    }
}

/// Kept small (with [`Completion`], at most 120 bytes with the `Arc`'s
/// counts), so that the allocator frees it on another thread without its
/// lock: the handle that takes the outcome usually runs on another thread
/// than the scheduler's.
#[derive(Debug, Default)]
struct Slot {
    waiters: Vec<Waiter>,
    outcome: Option<Outcome>,
    resolved: bool,
    /// Threads blocked in `wait_until`: the condition variable is signalled
    /// only for them (a signal costs a system call even with no waiter).
    blocked: u32,
}

/// The rendezvous between the scheduler, which resolves a request once, and
/// the handle that takes its outcome (async or blocking).
#[derive(Debug, Default)]
pub(crate) struct Completion {
    slot: Mutex<Slot>,
    cond: Condvar,
    /// `TaskHandle`s of it alive: the last one takes the outcome instead of
    /// copying it. (Counted here rather than in an `Arc` of the handle's
    /// own, which cost an allocation per task.)
    handles: AtomicUsize,
    /// Set once resolved, for waiters that poll without the lock.
    done: AtomicBool,
}

// With the `Arc`'s two counts, at most 120 bytes (see `Slot`).
const _: () = assert!(std::mem::size_of::<Completion>() + 16 <= 120);

fn register(s: &mut Slot, cx: &Context<'_>) {
    let known = s.waiters.iter().any(|w| match w {
        Waiter::Task(w) => w.will_wake(cx.waker()),
        Waiter::Hook(_) => false,
    });
    if !known {
        s.waiters.push(Waiter::Task(cx.waker().clone()));
    }
}

impl Completion {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Completion::default())
    }

    /// A `TaskHandle` of it was made.
    pub(crate) fn handle_cloned(&self) {
        self.handles.fetch_add(1, Ordering::Relaxed);
    }

    /// A `TaskHandle` of it was dropped.
    pub(crate) fn handle_dropped(&self) {
        self.handles.fetch_sub(1, Ordering::Release);
    }

    /// True when one `TaskHandle` of it is alive: the caller's, which
    /// alone can make another.
    pub(crate) fn sole_handle(&self) -> bool {
        self.handles.load(Ordering::Acquire) == 1
    }

    /// Resolves once; later calls are ignored and return false.
    pub(crate) fn resolve(&self, outcome: Outcome) -> bool {
        let mut s = self.slot.lock().unwrap();
        if s.resolved {
            return false;
        }
        s.resolved = true;
        s.outcome = Some(outcome);
        self.done.store(true, Ordering::Release);
        let waiters = std::mem::take(&mut s.waiters);
        let blocked = s.blocked > 0;
        drop(s);
        if blocked {
            self.cond.notify_all();
        }
        let mut hooks = Vec::new();
        for w in waiters {
            match w {
                Waiter::Task(w) => w.wake(),
                Waiter::Hook(h) => hooks.push(h),
            }
        }
        for h in hooks {
            h();
        }
        true
    }

    /// Runs `hook` once resolved: at once if it is, else on the thread that
    /// resolves it. A hook must be quick (it runs on a scheduler thread).
    pub(crate) fn on_resolve(&self, hook: impl FnOnce() + Send + 'static) {
        let mut s = self.slot.lock().unwrap();
        if s.resolved {
            drop(s);
            hook();
        } else {
            s.waiters.push(Waiter::Hook(Box::new(hook)));
        }
    }

    pub(crate) fn is_resolved(&self) -> bool {
        self.slot.lock().unwrap().resolved
    }

    /// Polls, without the lock, until resolved or `spin`'s budget runs
    /// out; true when resolved. A caller about to block calls it first, so
    /// that an answer due in microseconds needs no wake-up.
    pub(crate) fn spin_resolved(&self, spin: Option<&Spin>) -> bool {
        match spin {
            Some(s) => s.until(|| self.done.load(Ordering::Acquire)),
            None => self.done.load(Ordering::Acquire),
        }
    }

    /// Ready once resolved, without taking the outcome.
    pub(crate) fn poll_resolved(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.slot.lock().unwrap();
        if s.resolved {
            return Poll::Ready(());
        }
        register(&mut s, cx);
        Poll::Pending
    }

    /// Takes the outcome once resolved.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut s = self.slot.lock().unwrap();
        if s.resolved {
            return Poll::Ready(s.outcome.take().unwrap_or(Err(TaskError::Cancelled)));
        }
        register(&mut s, cx);
        Poll::Pending
    }

    /// The outcome once resolved: taken when `take` (the last handle),
    /// else a copy, so that clones of a handle each get the result.
    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>, take: bool) -> Poll<Outcome> {
        if take {
            return self.poll_take(cx);
        }
        let mut s = self.slot.lock().unwrap();
        if s.resolved {
            return Poll::Ready(s.outcome.clone().unwrap_or(Err(TaskError::Cancelled)));
        }
        register(&mut s, cx);
        Poll::Pending
    }

    /// A copy of the outcome of a resolved completion.
    pub(crate) fn peek(&self) -> Option<Outcome> {
        self.slot.lock().unwrap().outcome.clone()
    }

    /// Blocks until resolved or `deadline`; true when resolved.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut s = self.slot.lock().unwrap();
        s.blocked += 1;
        while !s.resolved {
            match deadline {
                None => s = self.cond.wait(s).unwrap(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        s.blocked -= 1;
                        return false;
                    }
                    s = self.cond.wait_timeout(s, d - now).unwrap().0;
                }
            }
        }
        s.blocked -= 1;
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
