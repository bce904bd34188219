//! [`Condition`]: a condition variable with its own robust lock (Python's
//! `multiprocessing.Condition`).
//!
//! # Algorithm
//!
//! A fixed table of waiter slots in shared memory, each its own futex word
//! (`FREE → WAITING → NOTIFIED → FREE`), plus a ticket counter for FIFO order:
//!
//! * `wait`, holding the lock: claim a `FREE` slot (CAS to `WAITING`), stamp
//!   it with the next ticket and this pid, release the lock, sleep on the slot
//!   while it is `WAITING` (bounded slices), then free the slot and take the
//!   lock again. On timeout the waiter CASes `WAITING → FREE`; if that fails a
//!   notification won the race and the wait counts as notified.
//! * `notify(n)`: up to `n` times, CAS the `WAITING` slot with the lowest
//!   ticket to `NOTIFIED` and wake its futex. So `notify(1)` wakes exactly one
//!   waiter, the oldest, and a waiter that arrives after the notify is not
//!   woken by it.
//!
//! Claiming under the lock and notifying after the waiter's slot is
//! `WAITING` rules out lost wake-ups for callers that notify holding the
//! lock, as Python requires. A waiter that dies leaves its slot `WAITING`: a
//! later notification may be spent on it; such slots are reclaimed when the
//! table is full.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::robust::{self, RawLock};
use super::segment::{Kind, Segment, SharedState, HEADER_SIZE};
use super::wait::{self, Deadline};
use crate::error::Error;
use crate::sys::{futex, shm};

const SLOTS: usize = 128;
const FREE: u32 = 0;
const WAITING: u32 = 1;
const NOTIFIED: u32 = 2;

#[repr(C)]
struct Slot {
    state: AtomicU32,
    pid: AtomicU32,
    ticket: AtomicU64,
}

#[repr(C)]
struct State {
    lock: RawLock,
    next_ticket: AtomicU64,
    _pad: AtomicU64,
    slots: [Slot; SLOTS],
}

// SAFETY: repr(C), atomics only; all-zero is "unlocked, no waiters".
unsafe impl SharedState for State {}

/// A condition variable that owns its lock, shared by processes.
///
/// # Examples
/// ```
/// let c = mproc_core::Condition::new()?;
/// let g = c.acquire();
/// let (g, notified) = c.wait_timeout(g, std::time::Duration::from_millis(1));
/// assert!(!notified);
/// drop(g);
/// # Ok::<(), mproc_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    seg: Arc<Segment>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("locked", &self.state().lock.is_locked())
            .finish()
    }
}

/// Holds a [`Condition`]'s lock; releases it on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    owner_died: bool,
}

impl ConditionGuard<'_> {
    /// True when the previous owner of the lock died holding it.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        self.cond.state().lock.unlock();
    }
}

/// A claimed waiter slot; freed on drop (passing a notification it received
/// but did not use on to the next waiter).
struct Claim {
    seg: Arc<Segment>,
    idx: usize,
    /// Set once the slot went back to `FREE` by this claim's own timeout;
    /// it may already belong to another waiter then.
    released: AtomicBool,
}

impl Claim {
    fn slot(&self) -> &Slot {
        &self.seg.state::<State>().slots[self.idx]
    }

    /// Sleeps one slice while the slot is `WAITING`; true once notified.
    fn wait_slice(&self, deadline: Deadline) -> bool {
        let s = self.slot();
        if s.state.load(Ordering::Acquire) == NOTIFIED {
            return true;
        }
        wait::sleep(&s.state, WAITING, deadline);
        s.state.load(Ordering::Acquire) == NOTIFIED
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.released.load(Ordering::Relaxed) {
            return;
        }
        let s = self.slot();
        if s.state
            .compare_exchange(WAITING, FREE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Notified: consume it.
            s.state.store(FREE, Ordering::Release);
        }
    }
}

impl Condition {
    /// Creates a condition with its own (unlocked) lock.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had.
    pub fn new() -> Result<Condition, Error> {
        Ok(Condition {
            seg: Segment::create(Kind::Condition, 0, std::mem::size_of::<State>())?,
        })
    }

    fn state(&self) -> &State {
        self.seg.state()
    }

    fn guard(&self, owner_died: bool) -> ConditionGuard<'_> {
        ConditionGuard {
            cond: self,
            owner_died,
        }
    }

    /// Takes the lock.
    pub fn acquire(&self) -> ConditionGuard<'_> {
        let died = self
            .state()
            .lock
            .lock(Deadline::NEVER)
            .expect("a wait without deadline only ends with the lock");
        self.guard(died)
    }

    /// Takes the lock if it is free, without waiting.
    pub fn try_acquire(&self) -> Option<ConditionGuard<'_>> {
        self.state()
            .lock
            .try_lock_or_recover()
            .map(|d| self.guard(d))
    }

    /// Waits at most `d` for the lock.
    pub fn acquire_timeout(&self, d: Duration) -> Option<ConditionGuard<'_>> {
        self.state()
            .lock
            .lock(Deadline::after(d))
            .map(|d| self.guard(d))
    }

    /// Takes the lock without blocking the async runtime's thread.
    pub async fn acquire_async(&self) -> ConditionGuard<'_> {
        let died = robust::lock_async(&self.seg, HEADER_SIZE).await;
        self.guard(died)
    }

    /// Claims a waiter slot; the caller holds the lock.
    fn claim(&self) -> Option<Claim> {
        let s = self.state();
        let me = shm::pid();
        for pass in 0..2 {
            for (idx, slot) in s.slots.iter().enumerate() {
                let mut cur = slot.state.load(Ordering::Relaxed);
                if pass == 1
                    && cur == WAITING
                    && shm::process_dead(slot.pid.load(Ordering::Relaxed), None)
                {
                    // Reclaim a dead waiter's slot.
                    if slot
                        .state
                        .compare_exchange(WAITING, FREE, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        cur = FREE;
                    }
                }
                if cur == FREE
                    && slot
                        .state
                        .compare_exchange(FREE, WAITING, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    slot.pid.store(me, Ordering::Relaxed);
                    let t = s.next_ticket.fetch_add(1, Ordering::Relaxed);
                    slot.ticket.store(t, Ordering::Release);
                    return Some(Claim {
                        seg: self.seg.clone(),
                        idx,
                        released: AtomicBool::new(false),
                    });
                }
            }
        }
        None
    }

    fn wait_until<'a>(
        &'a self,
        guard: ConditionGuard<'a>,
        deadline: Deadline,
    ) -> (ConditionGuard<'a>, bool) {
        let Some(claim) = self.claim() else {
            // Every slot busy: let the lock go briefly and look again.
            drop(guard);
            std::thread::sleep(Duration::from_millis(1));
            let g = self.acquire();
            if deadline.passed() {
                return (g, false);
            }
            return self.wait_until(g, deadline);
        };
        std::mem::forget(guard);
        self.state().lock.unlock();
        let notified = loop {
            if claim.wait_slice(deadline) {
                break true;
            }
            if deadline.passed() {
                let freed = claim
                    .slot()
                    .state
                    .compare_exchange(WAITING, FREE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                claim.released.store(freed, Ordering::Relaxed);
                break !freed;
            }
        };
        drop(claim);
        (self.acquire(), notified)
    }

    /// Releases the lock, waits for a notification, and takes the lock
    /// again.
    pub fn wait<'a>(&'a self, guard: ConditionGuard<'a>) -> ConditionGuard<'a> {
        self.wait_until(guard, Deadline::NEVER).0
    }

    /// As [`wait`](Self::wait), for at most `d`; the flag is true when
    /// notified, false on timeout.
    pub fn wait_timeout<'a>(
        &'a self,
        guard: ConditionGuard<'a>,
        d: Duration,
    ) -> (ConditionGuard<'a>, bool) {
        self.wait_until(guard, Deadline::after(d))
    }

    /// Waits until `pred()` is true (checked with the lock held).
    pub fn wait_for<'a>(
        &'a self,
        mut guard: ConditionGuard<'a>,
        mut pred: impl FnMut() -> bool,
    ) -> ConditionGuard<'a> {
        while !pred() {
            guard = self.wait(guard);
        }
        guard
    }

    /// As [`wait_for`](Self::wait_for), for at most `d` in all: returns the
    /// guard and the predicate's last value, which is false when the time ran
    /// out first (Python's `cond.wait_for(predicate, timeout)`). The
    /// predicate is always checked at least once, with the lock held.
    ///
    /// # Examples
    /// ```
    /// # extern crate mproc_core as mproc;
    /// use std::time::Duration;
    /// let cond = mproc::Condition::new()?;
    /// let g = cond.acquire();
    /// let (_g, ok) = cond.wait_for_timeout(g, || false, Duration::from_millis(20));
    /// assert!(!ok);
    /// # Ok::<(), mproc::Error>(())
    /// ```
    pub fn wait_for_timeout<'a>(
        &'a self,
        mut guard: ConditionGuard<'a>,
        mut pred: impl FnMut() -> bool,
        d: Duration,
    ) -> (ConditionGuard<'a>, bool) {
        let deadline = Deadline::after(d);
        loop {
            if pred() {
                return (guard, true);
            }
            if deadline.passed() {
                return (guard, false);
            }
            guard = self.wait_until(guard, deadline).0;
        }
    }

    /// As [`wait`](Self::wait), without blocking the async runtime's thread.
    ///
    /// # Cancel safety
    /// If the future is dropped while waiting, its slot is freed and a
    /// notification it had received is passed on; the lock is not held.
    pub async fn wait_async<'a>(&'a self, guard: ConditionGuard<'a>) -> ConditionGuard<'a> {
        let Some(claim) = self.claim() else {
            drop(guard);
            return self.acquire_async().await;
        };
        std::mem::forget(guard);
        self.state().lock.unlock();
        let claim = Arc::new(PassOn(Some(claim), self.clone()));
        loop {
            let c = claim.clone();
            let notified = wait::off_runtime(move || {
                c.0.as_ref().is_some_and(|c| c.wait_slice(Deadline::NEVER))
            })
            .await
            .unwrap_or(false);
            if notified {
                break;
            }
        }
        if let Ok(mut pass_on) = Arc::try_unwrap(claim) {
            pass_on.0.take();
        }
        self.acquire_async().await
    }

    /// Wakes up to `n` waiters, oldest first.
    pub fn notify(&self, n: usize) {
        let s = self.state();
        for _ in 0..n {
            loop {
                let best = s
                    .slots
                    .iter()
                    .filter(|sl| sl.state.load(Ordering::Acquire) == WAITING)
                    .min_by_key(|sl| sl.ticket.load(Ordering::Acquire));
                let Some(sl) = best else { return };
                if sl
                    .state
                    .compare_exchange(WAITING, NOTIFIED, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    futex::wake(&sl.state, 1);
                    break;
                }
            }
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.notify(SLOTS);
    }
}

/// Passes on a notification received by an abandoned async wait.
struct PassOn(Option<Claim>, Condition);

impl Drop for PassOn {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let notified = c.slot().state.load(Ordering::Acquire) == NOTIFIED;
            drop(c);
            if notified {
                self.1.notify(1);
            }
        }
    }
}

super::handle_serde!(Condition, Kind::Condition);
