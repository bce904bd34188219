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

#[derive(Debug, Default)]
struct GateState {
    /// Completions not resolved yet.
    left: usize,
    open: bool,
    /// Threads blocked in [`Gate::wait`].
    blocked: usize,
    /// Told that a worker has gone idle (see [`Gate::nudge`]).
    nudged: bool,
    /// Nudges while shut, waiter or not (for the scheduler's tests).
    #[cfg(test)]
    nudges: usize,
}

/// Opens once every completion of a set has resolved, or as soon as one
/// resolves with a failed first item: whoever waits for a whole batch of
/// requests (a `Pool::map` sent at once) sleeps once for all of them,
/// rather than once per request — each wake-up of a sleeping thread takes
/// a CPU from a worker for a while on a machine whose CPUs the workers
/// fill.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    cond: Condvar,
    /// Set once open, for waiters that poll without the lock.
    opened: AtomicBool,
}

impl Gate {
    /// A gate over `comps`, open at once when there are none.
    pub(crate) fn over<'a>(comps: impl ExactSizeIterator<Item = &'a Arc<Completion>>) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        let n = comps.len();
        gate.state.lock().unwrap().left = n;
        if n == 0 {
            gate.open();
        }
        for comp in comps {
            let g = gate.clone();
            // Weak: the hook lives in the completion it looks at.
            let c = Arc::downgrade(comp);
            comp.on_resolve(move || {
                let failed = c.upgrade().is_none_or(|c| c.peek_failed());
                g.one_resolved(failed);
            });
        }
        gate
    }

    fn one_resolved(&self, failed: bool) {
        let mut s = self.state.lock().unwrap();
        s.left = s.left.saturating_sub(1);
        if (s.left == 0 || failed) && !s.open {
            s.open = true;
            self.opened.store(true, Ordering::Release);
            if s.blocked > 0 {
                self.cond.notify_all();
            }
        }
    }

    fn open(&self) {
        let mut s = self.state.lock().unwrap();
        s.open = true;
        self.opened.store(true, Ordering::Release);
    }

    /// Wakes the threads blocked in [`wait`](Self::wait) while the gate is
    /// still shut, to poll for it with their `endgame` spinner: the
    /// scheduler calls this when a worker has gone idle with the map
    /// unfinished, so a CPU is free to poll on, and the last answers then
    /// find the caller awake. Otherwise the caller would sleep until the
    /// last answer and be woken then, on a CPU that has gone idle meanwhile
    /// (tens of microseconds on a VM).
    ///
    /// A nudge before anyone waits is kept for the next waiter: a caller
    /// preempted between sending its map and waiting for it (its worker,
    /// woken on its CPU, took over) would otherwise miss it and sleep until
    /// the last answer.
    pub(crate) fn nudge(&self) {
        let mut s = self.state.lock().unwrap();
        #[cfg(test)]
        {
            s.nudges += usize::from(!s.open);
        }
        if !s.open && !s.nudged {
            s.nudged = true;
            if s.blocked > 0 {
                self.cond.notify_all();
            }
        }
    }

    /// How many times the gate was nudged while shut.
    #[cfg(test)]
    pub(crate) fn nudges(&self) -> usize {
        self.state.lock().unwrap().nudges
    }

    /// Blocks until the gate opens, polling for it first while `spin`
    /// allows (see [`Completion::spin_resolved`]), and again with
    /// `endgame` whenever it is nudged (see [`nudge`](Self::nudge)).
    pub(crate) fn wait(&self, spin: Option<&Spin>, endgame: Option<&Spin>) {
        let opened = || self.opened.load(Ordering::Acquire);
        if spin.map_or_else(opened, |s| s.until(opened)) {
            return;
        }
        let mut s = self.state.lock().unwrap();
        s.blocked += 1;
        while !s.open {
            if std::mem::take(&mut s.nudged) {
                if let Some(endgame) = endgame {
                    s.blocked -= 1;
                    drop(s);
                    let done = endgame.until(opened);
                    s = self.state.lock().unwrap();
                    s.blocked += 1;
                    if done {
                        break;
                    }
                    continue;
                }
            }
            s = self.cond.wait(s).unwrap();
        }
        s.blocked -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::Batch;
    use std::time::Duration;

    fn ok() -> Outcome {
        // A batch of one `Ok` item: count 1, variant 0.
        Ok(Batch::from(vec![1u8, 0]))
    }

    /// Waits for `gate` on another thread, polling with `endgame` when
    /// nudged; the receiver gets a message when the wait returns.
    fn waiter(gate: &Arc<Gate>, endgame: Option<Spin>) -> std::sync::mpsc::Receiver<()> {
        let g = gate.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            g.wait(None, endgame.as_ref());
            let _ = tx.send(());
        });
        rx
    }

    /// Waits for `gate` on another thread; true when it opened within 10 s.
    fn opens(gate: &Arc<Gate>) -> bool {
        waiter(gate, None)
            .recv_timeout(Duration::from_secs(10))
            .is_ok()
    }

    /// Polls the gate's state until `holds` (at most 10 s, else fails
    /// with `what`).
    fn settles(gate: &Gate, holds: impl Fn(&GateState) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !holds(&gate.state.lock().unwrap()) {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_gate_opens_once_every_completion_has_resolved() {
        let comps: Vec<_> = (0..3).map(|_| Completion::new()).collect();
        let gate = Gate::over(comps.iter());
        comps[0].resolve(ok());
        comps[2].resolve(ok());
        assert!(!gate.opened.load(Ordering::Acquire), "one is still running");
        comps[1].resolve(ok());
        assert!(opens(&gate));
        // Over nothing, or over what has resolved already: open at once.
        assert!(opens(&Gate::over([].iter())));
        assert!(opens(&Gate::over(comps.iter())));
    }

    #[test]
    fn a_nudged_waiter_polls_and_still_sees_the_gate_open() {
        // Nudged while shut: the waiter wakes, polls (for at most a
        // millisecond; not at all on one CPU), sleeps again, and returns
        // only once the last completion resolves.
        let comps: Vec<_> = (0..2).map(|_| Completion::new()).collect();
        let gate = Gate::over(comps.iter());
        let rx = waiter(&gate, Some(Spin::polite(1_000_000)));
        settles(&gate, |s| s.blocked > 0, "the waiter never blocked");
        comps[0].resolve(ok());
        gate.nudge();
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "returned while one completion is unresolved"
        );
        comps[1].resolve(ok());
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "never returned"
        );
        // A nudge of an open gate does nothing.
        gate.nudge();
        assert!(!gate.state.lock().unwrap().nudged);
    }

    #[test]
    fn a_nudge_before_the_wait_is_kept_for_the_waiter() {
        // Nudged before anyone waits (the caller was preempted between
        // sending its map and waiting): the next waiter polls at once
        // with its endgame spinner instead of sleeping.
        let comps: Vec<_> = (0..2).map(|_| Completion::new()).collect();
        let gate = Gate::over(comps.iter());
        comps[0].resolve(ok());
        gate.nudge();
        assert!(gate.state.lock().unwrap().nudged, "kept while nobody waits");
        // A spinner that polls long enough for the gate to open.
        let rx = waiter(&gate, Some(Spin::steady(2_000_000_000)));
        settles(&gate, |s| !s.nudged, "the nudge was never taken");
        // The waiter took the nudge and polls rather than sleeps (a
        // spinner never polls on one CPU).
        if mproc_transport::multi_core() {
            assert_eq!(gate.state.lock().unwrap().blocked, 0, "polling, not asleep");
        }
        comps[1].resolve(ok());
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "never returned"
        );
    }

    #[test]
    fn a_gate_opens_at_the_first_failure() {
        let comps: Vec<_> = (0..3).map(|_| Completion::new()).collect();
        let gate = Gate::over(comps.iter());
        comps[1].resolve(Err(TaskError::Cancelled));
        assert!(opens(&gate), "a failure need not wait for the others");
    }
}
