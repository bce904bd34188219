//! [`Barrier`]: `n` parties wait until all have arrived (Python's
//! `multiprocessing.Barrier`).
//!
//! Arrivals are counted under a robust lock; the last arrival resets the
//! count, bumps the generation word and wakes everyone sleeping on it. A
//! waiter sleeps (bounded slices) while the generation is the one it arrived
//! in. A waiter whose timeout passes withdraws its arrival, so the barrier
//! does not trip with a party missing.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::robust::RawLock;
use super::segment::{Kind, Segment, SharedState};
use super::wait::{self, Deadline};
use crate::error::{Error, ErrorKind};
use crate::sys::futex;

#[repr(C)]
struct State {
    lock: RawLock,
    count: AtomicU32,
    generation: AtomicU32,
    parties: AtomicU32,
}

// SAFETY: repr(C), atomics only.
unsafe impl SharedState for State {}

/// A rendezvous point for a fixed number of parties in any processes.
///
/// # Examples
/// ```
/// let b = mproc_core::Barrier::new(1)?;
/// assert_eq!(b.wait(), 0);
/// # Ok::<(), mproc_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    seg: Arc<Segment>,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("waiting", &self.n_waiting())
            .finish()
    }
}

impl Barrier {
    /// Creates a barrier for `n` parties.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had or `n` is 0 or larger than `u32::MAX`.
    pub fn new(n: usize) -> Result<Barrier, Error> {
        if n == 0 || n > u32::MAX as usize {
            return Err(Error::new(
                ErrorKind::Io,
                "a barrier needs between 1 and u32::MAX parties",
            ));
        }
        let seg = Segment::create(Kind::Barrier, 0, std::mem::size_of::<State>())?;
        let b = Barrier { seg };
        b.state().parties.store(n as u32, Ordering::Relaxed);
        Ok(b)
    }

    fn state(&self) -> &State {
        self.seg.state()
    }

    /// The number of parties.
    pub fn parties(&self) -> usize {
        self.state().parties.load(Ordering::Relaxed) as usize
    }

    /// How many parties are waiting now.
    pub fn n_waiting(&self) -> usize {
        self.state().count.load(Ordering::Relaxed) as usize
    }

    /// Arrives; returns (arrival index, generation) or trips the barrier.
    fn arrive(&self) -> (usize, u32, bool) {
        let s = self.state();
        let _ = s.lock.lock(Deadline::NEVER);
        let generation = s.generation.load(Ordering::Relaxed);
        let idx = s.count.load(Ordering::Relaxed);
        let parties = s.parties.load(Ordering::Relaxed);
        let tripped = idx + 1 >= parties;
        if tripped {
            s.count.store(0, Ordering::Relaxed);
            s.generation
                .store(generation.wrapping_add(1), Ordering::Release);
        } else {
            s.count.store(idx + 1, Ordering::Relaxed);
        }
        s.lock.unlock();
        if tripped {
            futex::wake_all(&s.generation);
        }
        (idx as usize, generation, tripped)
    }

    fn wait_until(&self, deadline: Deadline) -> Option<usize> {
        let (idx, generation, tripped) = self.arrive();
        if tripped {
            return Some(idx);
        }
        let s = self.state();
        loop {
            if s.generation.load(Ordering::Acquire) != generation {
                return Some(idx);
            }
            if deadline.passed() {
                let _ = s.lock.lock(Deadline::NEVER);
                let still = s.generation.load(Ordering::Acquire) == generation;
                if still {
                    s.count.fetch_sub(1, Ordering::Relaxed);
                }
                s.lock.unlock();
                return (!still).then_some(idx);
            }
            wait::sleep(&s.generation, generation, deadline);
        }
    }

    /// Waits until all parties have arrived. Returns this party's arrival
    /// index, `0..parties`.
    pub fn wait(&self) -> usize {
        self.wait_until(Deadline::NEVER)
            .expect("a wait without deadline only ends when the barrier trips")
    }

    /// Waits at most `d`; `None` (and the arrival withdrawn) on timeout.
    pub fn wait_timeout(&self, d: Duration) -> Option<usize> {
        self.wait_until(Deadline::after(d))
    }

    /// Waits without blocking the async runtime's thread.
    ///
    /// # Cancel safety
    /// Not cancel-safe: the arrival is counted when the future is first
    /// polled; dropping the future afterwards leaves it counted.
    pub async fn wait_async(&self) -> usize {
        let (idx, generation, tripped) = self.arrive();
        if tripped {
            return idx;
        }
        loop {
            if self.state().generation.load(Ordering::Acquire) != generation {
                return idx;
            }
            let seg = self.seg.clone();
            wait::off_runtime(move || {
                let s: &State = seg.state();
                wait::sleep(&s.generation, generation, Deadline::NEVER);
            })
            .await;
        }
    }
}

super::handle_serde!(Barrier, Kind::Barrier);
