//! [`Semaphore`] and [`BoundedSemaphore`]: a counter of permits in shared
//! memory, used directly as the futex word.
//!
//! `acquire` CASes the count down when it is positive; otherwise it counts
//! itself in `waiters` and sleeps on the count while it is zero (bounded
//! slices). `release` increments the count and wakes one sleeper when
//! `waiters` is non-zero; both sides use `SeqCst` for the count/waiters pair
//! so that either the releaser sees the sleeper or the sleeper sees the new
//! count. A process that dies holding permits does not give them back, as
//! with POSIX semaphores.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::segment::{Kind, Segment, SharedState};
use super::wait::{self, Deadline};
use crate::error::{Error, ErrorKind};
use crate::sys::futex;

#[repr(C)]
struct State {
    count: AtomicU32,
    waiters: AtomicU32,
    /// The bound of a `BoundedSemaphore`; 0 for a plain one.
    max: AtomicU32,
}

// SAFETY: repr(C), atomics only.
unsafe impl SharedState for State {}

const LIMIT: usize = i32::MAX as usize;

/// How long `acquire` spins before sleeping (learned).
static SPIN: wait::Spin = wait::Spin::new(wait::SPIN_MAX_NS);

#[derive(Clone)]
struct Core {
    seg: Arc<Segment>,
}

impl Core {
    fn new(n: usize, bounded: bool) -> Result<Core, Error> {
        if n > LIMIT {
            return Err(Error::new(
                ErrorKind::Io,
                format!("a semaphore holds at most {LIMIT} permits"),
            ));
        }
        let seg = Segment::create(Kind::Semaphore, u64::from(bounded), 16)?;
        let core = Core { seg };
        let s = core.state();
        s.count.store(n as u32, Ordering::Relaxed);
        s.max
            .store(if bounded { n as u32 } else { 0 }, Ordering::Relaxed);
        Ok(core)
    }

    fn state(&self) -> &State {
        self.seg.state()
    }

    fn try_take(&self) -> bool {
        let c = &self.state().count;
        let mut v = c.load(Ordering::Relaxed);
        while v > 0 {
            match c.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(cur) => v = cur,
            }
        }
        false
    }

    fn take(&self, deadline: Deadline) -> bool {
        let s = self.state();
        loop {
            if self.try_take() {
                return true;
            }
            if deadline.passed() {
                return false;
            }
            if SPIN.until(|| s.count.load(Ordering::Relaxed) > 0) {
                continue;
            }
            s.waiters.fetch_add(1, Ordering::SeqCst);
            if s.count.load(Ordering::SeqCst) == 0 {
                wait::sleep(&s.count, 0, deadline);
            }
            s.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn wait_slice(&self) {
        let s = self.state();
        s.waiters.fetch_add(1, Ordering::SeqCst);
        if s.count.load(Ordering::SeqCst) == 0 {
            wait::sleep(&s.count, 0, Deadline::NEVER);
        }
        s.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    async fn take_async(&self) {
        while !self.try_take() {
            let me = self.clone();
            wait::off_runtime(move || me.wait_slice()).await;
        }
    }

    fn give(&self) -> Result<(), Error> {
        let s = self.state();
        let max = s.max.load(Ordering::Relaxed);
        let limit = if max == 0 { LIMIT as u32 } else { max };
        let mut v = s.count.load(Ordering::Relaxed);
        loop {
            if v >= limit {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("semaphore released too many times (bound {limit})"),
                ));
            }
            match s
                .count
                .compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(cur) => v = cur,
            }
        }
        if s.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&s.count, 1);
        }
        Ok(())
    }

    fn value(&self) -> usize {
        self.state().count.load(Ordering::Relaxed) as usize
    }
}

/// A permit of a [`Semaphore`] or [`BoundedSemaphore`]; given back on drop.
#[must_use = "the permit is given back as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    core: &'a Core,
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard").finish_non_exhaustive()
    }
}

impl SemaphoreGuard<'_> {
    /// Keeps the permit taken: it is not given back on drop (another process
    /// may `release` it later).
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Cannot exceed the bound: this permit was taken.
        let _ = self.core.give();
    }
}

macro_rules! semaphore_api {
    ($ty:ident, $bounded:expr, $doc_new:literal) => {
        impl $ty {
            #[doc = $doc_new]
            ///
            /// # Errors
            /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory
            /// can be had or `n` exceeds `i32::MAX`.
            pub fn new(n: usize) -> Result<$ty, Error> {
                Ok($ty {
                    core: Core::new(n, $bounded)?,
                })
            }

            /// Takes a permit, waiting while there is none.
            pub fn acquire(&self) -> SemaphoreGuard<'_> {
                self.core.take(Deadline::NEVER);
                SemaphoreGuard { core: &self.core }
            }

            /// Takes a permit if one is available now.
            pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
                self.core
                    .try_take()
                    .then(|| SemaphoreGuard { core: &self.core })
            }

            /// Waits at most `d` for a permit.
            pub fn acquire_timeout(&self, d: Duration) -> Option<SemaphoreGuard<'_>> {
                self.core
                    .take(Deadline::after(d))
                    .then(|| SemaphoreGuard { core: &self.core })
            }

            /// Waits for a permit without blocking the async runtime's thread.
            ///
            /// # Cancel safety
            /// Cancel-safe: the permit is only taken on the polling thread.
            pub async fn acquire_async(&self) -> SemaphoreGuard<'_> {
                self.core.take_async().await;
                SemaphoreGuard { core: &self.core }
            }

            /// The number of permits available now (a snapshot).
            pub fn value(&self) -> usize {
                self.core.value()
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("value", &self.value())
                    .finish()
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                super::segment::serialize_handle(&self.core.seg, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let seg =
                    super::segment::deserialize_handle(d, Kind::Semaphore, u64::from($bounded))?;
                Ok($ty { core: Core { seg } })
            }
        }
    };
}

/// A counting semaphore shared by processes (Python's
/// `multiprocessing.Semaphore`).
///
/// # Examples
/// ```
/// let s = mproc::Semaphore::new(2)?;
/// let a = s.acquire();
/// let _b = s.acquire();
/// assert!(s.try_acquire().is_none());
/// drop(a);
/// assert_eq!(s.value(), 1);
/// # Ok::<(), mproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    core: Core,
}

semaphore_api!(Semaphore, false, "Creates a semaphore with `n` permits.");

impl Semaphore {
    /// Gives a permit back without a guard (e.g. one taken by another
    /// process, or kept with [`SemaphoreGuard::forget`]).
    ///
    /// # Errors
    /// Only when the count would pass `i32::MAX`.
    pub fn release(&self) -> Result<(), Error> {
        self.core.give()
    }
}

/// A semaphore that refuses to be released past its initial value (Python's
/// `multiprocessing.BoundedSemaphore`).
#[derive(Clone)]
pub struct BoundedSemaphore {
    core: Core,
}

semaphore_api!(
    BoundedSemaphore,
    true,
    "Creates a bounded semaphore with `n` permits, which is also its bound."
);

impl BoundedSemaphore {
    /// Gives a permit back without a guard.
    ///
    /// # Errors
    /// When every permit is already available (the release would pass `n`).
    pub fn release(&self) -> Result<(), Error> {
        self.core.give()
    }
}
