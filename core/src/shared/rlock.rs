//! [`RLock`]: a re-entrant process-shared lock (Python's
//! `multiprocessing.RLock`): the robust mutex of `robust.rs` plus an owner
//! thread id and a recursion count kept beside it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::robust::{self, RawLock};
use super::segment::{Kind, Segment, SharedState, HEADER_SIZE};
use super::wait::Deadline;
use crate::error::Error;
use crate::sys::shm;

#[repr(C)]
struct State {
    raw: RawLock,
    /// Kernel thread id of the owning thread (0 while free).
    owner_tid: AtomicU64,
    /// How many guards the owning thread holds.
    count: AtomicU32,
}

// SAFETY: repr(C), atomics only; all-zero is "free".
unsafe impl SharedState for State {}

/// A lock that the thread holding it may take again; shared by processes.
///
/// Re-entrant for the same process *and* thread, as in Python; its guards
/// therefore stay on their thread (`!Send`). A process that dies holding it
/// frees it for the next acquirer, whose guard reports
/// [`RLockGuard::owner_died`].
///
/// # Examples
/// ```
/// let l = mproc::RLock::new()?;
/// let a = l.acquire();
/// let b = l.acquire(); // the same thread may take it again
/// drop((b, a));
/// # Ok::<(), mproc::Error>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    seg: Arc<Segment>,
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("locked", &self.state().raw.is_locked())
            .field("count", &self.state().count.load(Ordering::Relaxed))
            .finish()
    }
}

/// One level of an [`RLock`] held by this thread; released on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    owner_died: bool,
    _not_send: PhantomData<*const ()>,
}

impl RLockGuard<'_> {
    /// True when the previous owner process died holding the lock.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let s = self.lock.state();
        if s.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            s.owner_tid.store(0, Ordering::Relaxed);
            s.raw.unlock();
        }
    }
}

impl RLock {
    /// Creates an unlocked re-entrant lock.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had.
    pub fn new() -> Result<RLock, Error> {
        Ok(RLock {
            seg: Segment::create(Kind::RLock, 0, std::mem::size_of::<State>())?,
        })
    }

    fn state(&self) -> &State {
        self.seg.state()
    }

    fn guard(&self, owner_died: bool) -> RLockGuard<'_> {
        RLockGuard {
            lock: self,
            owner_died,
            _not_send: PhantomData,
        }
    }

    fn reenter(&self) -> Option<RLockGuard<'_>> {
        let s = self.state();
        if s.raw.held_here() && s.owner_tid.load(Ordering::Relaxed) == shm::tid() {
            s.count.fetch_add(1, Ordering::Relaxed);
            return Some(self.guard(false));
        }
        None
    }

    fn took(&self, owner_died: bool) -> RLockGuard<'_> {
        let s = self.state();
        s.owner_tid.store(shm::tid(), Ordering::Relaxed);
        s.count.store(1, Ordering::Relaxed);
        self.guard(owner_died)
    }

    /// Takes the lock, waiting as long as another thread or process holds it.
    pub fn acquire(&self) -> RLockGuard<'_> {
        if let Some(g) = self.reenter() {
            return g;
        }
        let died = self
            .state()
            .raw
            .lock(Deadline::NEVER)
            .expect("a wait without deadline only ends with the lock");
        self.took(died)
    }

    /// Takes the lock if this thread holds it or it is free, without waiting.
    pub fn try_acquire(&self) -> Option<RLockGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Some(g);
        }
        self.state().raw.try_lock_or_recover().map(|d| self.took(d))
    }

    /// Waits at most `d` for the lock.
    pub fn acquire_timeout(&self, d: Duration) -> Option<RLockGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Some(g);
        }
        self.state()
            .raw
            .lock(Deadline::after(d))
            .map(|died| self.took(died))
    }

    /// Waits for the lock without blocking the async runtime's thread; the
    /// polling thread becomes the owner.
    ///
    /// # Cancel safety
    /// Cancel-safe: the lock is only taken on the polling thread.
    pub async fn acquire_async(&self) -> RLockGuard<'_> {
        if let Some(g) = self.reenter() {
            return g;
        }
        let died = robust::lock_async(&self.seg, HEADER_SIZE).await;
        self.took(died)
    }
}

super::handle_serde!(RLock, Kind::RLock);
