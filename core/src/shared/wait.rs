//! Waiting helpers shared by every object: deadlines, bounded futex sleeps,
//! a short adaptive spin, and the bridge that runs a blocking wait off an
//! async runtime's threads.
//!
//! Every futex sleep is cut into slices of at most [`SLICE`], so a waiter
//! re-checks its condition — a lock owner that died, a pipe peer that
//! vanished, a wake-up lost to a crash between a commit and its wake — at
//! least that often. Nothing in this module ever waits unboundedly.

use std::sync::atomic::AtomicU32;
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

/// The adaptive spinner (see [`mproc_transport::Spin`]); shared objects
/// spin at most [`SPIN_MAX_NS`] before a futex sleep (a futex hand-off costs
/// 10–50 µs on this kind of VM).
pub(crate) use mproc_transport::Spin;

/// The longest spin of a shared object's wait, in nanoseconds.
pub(crate) const SPIN_MAX_NS: u32 = 40_000;

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
