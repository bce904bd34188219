//! Waiting helpers shared by every object: deadlines, bounded futex sleeps,
//! a short adaptive spin, and the bridge that runs a blocking wait off an
//! async runtime's threads.
//!
//! Every futex sleep is cut into slices of at most [`SLICE`], so a waiter
//! re-checks its condition — a lock owner that died, a pipe peer that
//! vanished, a wake-up lost to a crash between a commit and its wake — at
//! least that often. Nothing in this module ever waits unboundedly.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sys::futex::{self, Wake};

/// The longest single futex sleep.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// An optional point in time after which a wait gives up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// Never gives up.
    pub(crate) const NEVER: Deadline = Deadline(None);

    /// Gives up at once (the `try_` forms).
    pub(crate) fn now() -> Deadline {
        Deadline(Some(Instant::now()))
    }

    /// Gives up `d` from now.
    pub(crate) fn after(d: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(d))
    }

    /// True once the deadline has passed.
    pub(crate) fn passed(&self) -> bool {
        self.0.is_some_and(|t| Instant::now() >= t)
    }

    /// The next sleep: at most one [`SLICE`], never past the deadline.
    /// `None` when the deadline has passed.
    pub(crate) fn slice(&self) -> Option<Duration> {
        match self.0 {
            None => Some(SLICE),
            Some(t) => {
                let left = t.checked_duration_since(Instant::now())?;
                (!left.is_zero()).then(|| left.min(SLICE))
            }
        }
    }
}

/// Sleeps on `word` while it holds `expected`, for at most one slice of
/// `deadline`. Returns true when the slice ran out (not woken).
pub(crate) fn sleep(word: &AtomicU32, expected: u32, deadline: Deadline) -> bool {
    match deadline.slice() {
        None => true,
        Some(d) => futex::wait(word, expected, Some(d)) == Wake::TimedOut,
    }
}

/// An adaptive spinner: how long to spin before sleeping, learned per use
/// site. The budget is eight times a moving average of how long successful
/// spins took, so a ping-pong whose answers come in microseconds keeps
/// spinning (a futex hand-off costs 10–50 µs on this kind of VM). Isolated
/// misses (a preemption, an interrupt) leave it alone; from the third miss in
/// a row it halves per miss, so sporadic traffic quickly stops burning CPU,
/// and every sixteenth miss in a row probes with the full budget so the
/// budget can recover. Spinning is `pause`, turning to `yield` only after a
/// few thousand (a `yield` costs microseconds on a VM); on a one-CPU machine
/// there is no spinning at all.
#[derive(Debug)]
pub(crate) struct Spin {
    budget_ns: AtomicU32,
    /// Moving average of successful spin times.
    avg_ns: AtomicU32,
    /// Spins that ran out in a row.
    misses: AtomicU32,
}

const SPIN_MIN_NS: u32 = 500;
const SPIN_MAX_NS: u32 = 40_000;
const SPIN_START_NS: u32 = 8_000;

impl Spin {
    /// A spinner with the default starting budget.
    pub(crate) const fn new() -> Spin {
        Spin {
            budget_ns: AtomicU32::new(SPIN_START_NS),
            avg_ns: AtomicU32::new(SPIN_START_NS / 8),
            misses: AtomicU32::new(0),
        }
    }

    /// Spins while `ready()` is false, within the current budget. Returns
    /// the last value of `ready()`.
    pub(crate) fn until(&self, mut ready: impl FnMut() -> bool) -> bool {
        if ready() {
            return true;
        }
        if !multi_core() {
            return false;
        }
        let budget = self.budget_ns.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        let limit = if misses % 16 == 15 {
            SPIN_MAX_NS
        } else {
            budget
        };
        let start = Instant::now();
        let mut round = 0u32;
        loop {
            if round < 256 {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
            round += 1;
            if ready() {
                let took = start.elapsed().as_nanos().min(u128::from(SPIN_MAX_NS)) as u32;
                let avg = self.avg_ns.load(Ordering::Relaxed);
                let avg = ((u64::from(avg) * 7 + u64::from(took)) / 8) as u32;
                self.avg_ns.store(avg, Ordering::Relaxed);
                let want = avg.saturating_mul(8).max(took.saturating_mul(2));
                self.budget_ns
                    .store(want.clamp(SPIN_MIN_NS, SPIN_MAX_NS), Ordering::Relaxed);
                self.misses.store(0, Ordering::Relaxed);
                return true;
            }
            if start.elapsed().as_nanos() >= u128::from(limit) {
                if misses >= 2 {
                    self.budget_ns
                        .store((budget / 2).max(SPIN_MIN_NS), Ordering::Relaxed);
                }
                self.misses.store(misses.wrapping_add(1), Ordering::Relaxed);
                return false;
            }
        }
    }
}

fn multi_core() -> bool {
    static MULTI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MULTI.get_or_init(|| crate::cpu_count() > 1)
}

/// Runs a bounded blocking wait without blocking the async runtime: on the
/// runtime's blocking pool when called inside tokio, else on a short-lived
/// thread. The closure must return within about one [`SLICE`]; callers loop
/// and re-check their state, so `None` (the wait could not run: no thread, or
/// the runtime is shutting down) is just another reason to look again.
pub(crate) async fn off_runtime<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Option<R> {
    let (tx, rx) = futures::channel::oneshot::channel();
    let job = move || {
        let _ = tx.send(f());
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => drop(h.spawn_blocking(job)),
        Err(_) => {
            if std::thread::Builder::new()
                .name("mproc-wait".into())
                .spawn(job)
                .is_err()
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    rx.await.ok()
}
