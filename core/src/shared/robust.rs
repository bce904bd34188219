//! A robust, process-shared mutex on one futex word — the building block of
//! [`Lock`](super::Lock), [`RLock`](super::RLock), [`Condition`](super::Condition),
//! the `Value`/`Array` locks and the queue's producer and consumer locks.
//!
//! # Algorithm
//!
//! Drepper's three-state futex mutex ("Futexes are tricky", mutex #2), with
//! the owner's *pid* as the "locked" state, in the style of the kernel's
//! robust futexes (`FUTEX_TID_MASK` / `FUTEX_WAITERS`):
//!
//! * the word is `0` when free, else `owner_pid | WAITERS?`;
//! * `lock`: CAS `0 → pid`; on failure spin briefly, then set `WAITERS` and
//!   `FUTEX_WAIT` on the word, and take it as `pid | WAITERS` when it is free
//!   (a woken waiter cannot know whether others still sleep);
//! * `unlock`: CAS the word back to `0`; `FUTEX_WAKE` one waiter if `WAITERS`
//!   was set.
//!
//! Ownership is per *process*, not per thread: a guard may move between
//! threads (async tasks do), and only the death of the owning process frees
//! the lock. After each acquisition the owner also stores a tag
//! `start_time << 32 | pid`, so a waiter can tell a live owner from another
//! process that reused a dead owner's pid.
//!
//! # Owner death
//!
//! Every futex sleep is bounded by one [`SLICE`](super::wait::SLICE). When a
//! slice runs out, the waiter checks `/proc/<owner>`: a missing process, a
//! zombie, or a process with another start time means the owner died with the
//! lock held. The waiter then CASes the word from the dead owner's value to
//! its own pid and reports `owner_died = true` — the state the dead owner was
//! protecting may be half-updated, exactly as with `EOWNERDEAD`. If the owner
//! died between its CAS and its tag store (a window of a few instructions),
//! only the existence check applies.
//!
//! # Orderings
//!
//! Acquisition CASes use `Acquire`, release uses `Release`, so the critical
//! sections of successive owners are ordered. The `WAITERS` bit and the word
//! value passed to `FUTEX_WAIT` make the sleep race-free: the kernel compares
//! the word atomically with queuing the waiter.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::segment::{Segment, SharedState};
use super::wait::{self, Deadline};
use crate::sys::futex;
use crate::sys::shm;

/// How long `lock` spins before sleeping (learned).
static LOCK_SPIN: wait::Spin = wait::Spin::new(wait::SPIN_MAX_NS);

const WAITERS: u32 = 1 << 31;
const PID_MASK: u32 = (1 << 30) - 1;

/// The shared part of a robust lock (16 bytes).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct RawLock {
    word: AtomicU32,
    _pad: AtomicU32,
    tag: AtomicU64,
}

// SAFETY: repr(C), atomics only; all-zero is "free".
unsafe impl SharedState for RawLock {}

impl RawLock {
    fn me() -> u32 {
        shm::pid() & PID_MASK
    }

    fn acquired(&self, me: u32) {
        let tag = (u64::from(shm::start_time()) << 32) | u64::from(me);
        self.tag.store(tag, Ordering::Relaxed);
    }

    /// Takes the lock if it is free.
    pub(crate) fn try_lock(&self) -> bool {
        let me = Self::me();
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.acquired(me);
            true
        } else {
            false
        }
    }

    /// Takes the lock if it is free (`Some(false)`) or its owner is dead
    /// (`Some(true)`); reads `/proc` when it is held.
    pub(crate) fn try_lock_or_recover(&self) -> Option<bool> {
        if self.try_lock() {
            return Some(false);
        }
        self.recover()
    }

    /// True when the process holding the lock word `v` is certainly dead.
    fn owner_dead(&self, v: u32) -> bool {
        let pid = v & PID_MASK;
        if pid == 0 || pid == Self::me() {
            return false;
        }
        let tag = self.tag.load(Ordering::Relaxed);
        let start = (tag as u32 == pid).then_some((tag >> 32) as u32);
        shm::process_dead(pid, start)
    }

    /// Steals the lock from a dead owner; `Some(true)` on success,
    /// `Some(false)` if it turned out free and was taken normally.
    fn recover(&self) -> Option<bool> {
        let me = Self::me();
        let v = self.word.load(Ordering::Relaxed);
        if v == 0 {
            return self.try_lock().then_some(false);
        }
        if self.owner_dead(v)
            && self
                .word
                .compare_exchange(v, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            self.acquired(me);
            return Some(true);
        }
        None
    }

    /// Takes the lock, waiting until `deadline`. `Some(owner_died)` on
    /// success, `None` on timeout.
    pub(crate) fn lock(&self, deadline: Deadline) -> Option<bool> {
        if self.try_lock() {
            return Some(false);
        }
        if !deadline.passed()
            && LOCK_SPIN.until(|| self.word.load(Ordering::Relaxed) == 0 && self.try_lock())
        {
            return Some(false);
        }
        let me = Self::me();
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 {
                if self
                    .word
                    .compare_exchange(0, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.acquired(me);
                    return Some(false);
                }
                continue;
            }
            let vw = v | WAITERS;
            if v != vw
                && self
                    .word
                    .compare_exchange(v, vw, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            if deadline.passed() {
                // A last look for a dead owner, so `try_acquire` and short
                // timeouts also recover.
                return self.recover();
            }
            if wait::sleep(&self.word, vw, deadline) {
                if let Some(died) = self.recover() {
                    return Some(died);
                }
            }
        }
    }

    /// Sleeps one slice while the lock is held (for the async twins).
    /// Returns true when the slice ran out.
    pub(crate) fn wait_slice(&self) -> bool {
        let v = self.word.load(Ordering::Relaxed);
        if v == 0 {
            return false;
        }
        let vw = v | WAITERS;
        if v != vw
            && self
                .word
                .compare_exchange(v, vw, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        wait::sleep(&self.word, vw, Deadline::NEVER)
    }

    /// Releases the lock (a no-op if another process took it over).
    pub(crate) fn unlock(&self) {
        let me = Self::me();
        let mut v = self.word.load(Ordering::Relaxed);
        loop {
            if v & PID_MASK != me {
                debug_assert!(false, "unlock of a lock this process does not hold");
                return;
            }
            match self
                .word
                .compare_exchange_weak(v, 0, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(cur) => v = cur,
            }
        }
        if v & WAITERS != 0 {
            futex::wake(&self.word, 1);
        }
    }

    /// True when some process holds the lock.
    pub(crate) fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }

    /// True when this process holds the lock.
    pub(crate) fn held_here(&self) -> bool {
        self.word.load(Ordering::Relaxed) & PID_MASK == Self::me()
    }
}

/// Takes the lock at `offset` in `seg` without blocking the async runtime:
/// each bounded sleep runs off the runtime's threads, and the lock itself is
/// taken here, so dropping the future never leaves it held. Returns
/// `owner_died`.
pub(crate) async fn lock_async(seg: &Arc<Segment>, offset: usize) -> bool {
    loop {
        if seg.state_at::<RawLock>(offset).try_lock() {
            return false;
        }
        let s = seg.clone();
        let timed_out = wait::off_runtime(move || s.state_at::<RawLock>(offset).wait_slice())
            .await
            .unwrap_or(true);
        if timed_out {
            if let Some(died) = seg.state_at::<RawLock>(offset).recover() {
                return died;
            }
        }
    }
}
