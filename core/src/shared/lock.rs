//! [`Lock`]: a process-shared, robust mutual-exclusion lock (Python's
//! `multiprocessing.Lock`), on the futex mutex of `robust.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::robust::{self, RawLock};
use super::segment::{Kind, Segment, HEADER_SIZE};
use super::wait::Deadline;
use crate::error::Error;

/// A lock shared by the processes of a program tree.
///
/// A cheap handle: clones, and copies passed to tasks or processes as
/// arguments, are the same lock. Ownership belongs to the acquiring
/// *process*: the guard may move between threads, and if the process dies
/// while holding the lock, the next acquirer gets it within about 50 ms with
/// [`LockGuard::owner_died`] set.
///
/// # Examples
/// ```
/// let lock = mproc::Lock::new()?;
/// {
///     let _g = lock.acquire();
///     assert!(lock.try_acquire().is_none());
/// }
/// assert!(lock.try_acquire().is_some());
/// # Ok::<(), mproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    seg: Arc<Segment>,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("locked", &self.raw().is_locked())
            .finish()
    }
}

/// Holds a [`Lock`]; releases it on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    owner_died: bool,
}

impl LockGuard<'_> {
    /// True when the previous owner died holding the lock: whatever it
    /// protected may be half-updated.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.raw().unlock();
    }
}

impl Lock {
    /// Creates an unlocked lock.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had.
    pub fn new() -> Result<Lock, Error> {
        Ok(Lock {
            seg: Segment::create(Kind::Lock, 0, std::mem::size_of::<RawLock>())?,
        })
    }

    fn raw(&self) -> &RawLock {
        self.seg.state()
    }

    fn guard(&self, owner_died: bool) -> LockGuard<'_> {
        LockGuard {
            lock: self,
            owner_died,
        }
    }

    /// Waits for the lock and takes it.
    pub fn acquire(&self) -> LockGuard<'_> {
        let died = self
            .raw()
            .lock(Deadline::NEVER)
            .expect("a wait without deadline only ends with the lock");
        self.guard(died)
    }

    /// Takes the lock if it is free (or its owner died), without waiting.
    pub fn try_acquire(&self) -> Option<LockGuard<'_>> {
        self.raw().try_lock_or_recover().map(|d| self.guard(d))
    }

    /// Waits at most `d` for the lock.
    pub fn acquire_timeout(&self, d: Duration) -> Option<LockGuard<'_>> {
        self.raw().lock(Deadline::after(d)).map(|d| self.guard(d))
    }

    /// Waits for the lock without blocking the async runtime's thread.
    ///
    /// # Cancel safety
    /// Cancel-safe: the lock is only taken on the polling thread, so a
    /// dropped future never leaves it held.
    pub async fn acquire_async(&self) -> LockGuard<'_> {
        let died = robust::lock_async(&self.seg, HEADER_SIZE).await;
        self.guard(died)
    }

    /// True when some process holds the lock (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.raw().is_locked()
    }
}

super::handle_serde!(Lock, Kind::Lock);
