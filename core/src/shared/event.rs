//! [`Event`]: a flag in shared memory that processes wait on (Python's
//! `multiprocessing.Event`). The flag itself is the futex word; `set` wakes
//! every sleeper when the `waiters` count says there is one (`SeqCst` on both
//! sides, as in `semaphore.rs`).

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::segment::{Kind, Segment, SharedState};
use super::wait::{self, Deadline};
use crate::error::Error;
use crate::sys::futex;

#[repr(C)]
struct State {
    flag: AtomicU32,
    waiters: AtomicU32,
}

// SAFETY: repr(C), atomics only; all-zero is "clear".
unsafe impl SharedState for State {}

/// A flag that processes can set, clear and wait for.
///
/// # Examples
/// ```
/// let ev = mproc::Event::new()?;
/// assert!(!ev.wait_timeout(std::time::Duration::from_millis(1)));
/// ev.set();
/// ev.wait();
/// assert!(ev.is_set());
/// # Ok::<(), mproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    seg: Arc<Segment>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

impl Event {
    /// Creates a clear event.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had.
    pub fn new() -> Result<Event, Error> {
        Ok(Event {
            seg: Segment::create(Kind::Event, 0, std::mem::size_of::<State>())?,
        })
    }

    fn state(&self) -> &State {
        self.seg.state()
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        let s = self.state();
        s.flag.store(1, Ordering::SeqCst);
        if s.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake_all(&s.flag);
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.state().flag.store(0, Ordering::SeqCst);
    }

    /// True when the flag is set.
    pub fn is_set(&self) -> bool {
        self.state().flag.load(Ordering::Acquire) != 0
    }

    fn wait_until(&self, deadline: Deadline) -> bool {
        let s = self.state();
        loop {
            if self.is_set() {
                return true;
            }
            if deadline.passed() {
                return false;
            }
            s.waiters.fetch_add(1, Ordering::SeqCst);
            if s.flag.load(Ordering::SeqCst) == 0 {
                wait::sleep(&s.flag, 0, deadline);
            }
            s.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        self.wait_until(Deadline::NEVER);
    }

    /// Waits at most `d` for the flag; true when it is set.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        self.wait_until(Deadline::after(d))
    }

    /// Waits for the flag without blocking the async runtime's thread.
    ///
    /// # Cancel safety
    /// Cancel-safe: it takes nothing.
    pub async fn wait_async(&self) {
        while !self.is_set() {
            let seg = self.seg.clone();
            wait::off_runtime(move || {
                let s: &State = seg.state();
                s.waiters.fetch_add(1, Ordering::SeqCst);
                if s.flag.load(Ordering::SeqCst) == 0 {
                    wait::sleep(&s.flag, 0, Deadline::NEVER);
                }
                s.waiters.fetch_sub(1, Ordering::SeqCst);
            })
            .await;
        }
    }
}

super::handle_serde!(Event, Kind::Event);
