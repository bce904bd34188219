//! [`Barrier`]: `n` parties wait until all have arrived (Python's
//! `multiprocessing.Barrier`, with `abort`, `reset`, `broken` and an action).
//!
//! # Protocol
//!
//! Python's state machine (`threading.Barrier`), kept in shared memory under
//! one robust lock: a *phase* (filling, acting, draining, resetting, broken)
//! and the number of parties `count` inside the barrier.
//!
//! * A party **enters** only while the phase is *filling* (it sleeps through
//!   the other phases; *broken* fails at once), takes arrival index
//!   `count`, and counts itself in.
//! * The last arrival runs the action, if any, in phase *acting* (without
//!   the lock, so others can still break the barrier meanwhile), then sets
//!   *draining*. Every waiter that then sees *draining* succeeded; every
//!   waiter that sees *resetting* or *broken* failed.
//! * Each party **exits** by counting itself out; the last one out of a
//!   draining or resetting barrier sets *filling* again. So a waiter always
//!   reads the outcome of its own round: no later round starts before it has
//!   left.
//! * **Breaking** (an `abort`, a waiter's timeout, an action that panics, a
//!   party that died while inside) sets *broken* until `reset`.
//!
//! Every change bumps the futex word `gen` and wakes all sleepers; sleeps
//! are bounded slices. **Dead parties**: a party inside the barrier records
//! `start_time << 32 | pid` in a slot; after each slice a sleeper looks for
//! slots whose process is gone (`/proc`, start time against pid reuse),
//! counts those parties out, and breaks the barrier if it was still filling.
//! The first [`TRACKED`] parties inside at once are tracked.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::robust::RawLock;
use super::segment::{Kind, Segment, SharedState, HEADER_SIZE};
use super::wait::{self, Deadline};
use crate::error::{Error, ErrorKind};
use crate::protocol::batch::encode_one;
use crate::registry::{self, Task};
use crate::sys::{futex, shm};

const FILLING: u32 = 0;
const DRAINING: u32 = 1;
const RESETTING: u32 = 2;
const BROKEN: u32 = 3;
const ACTING: u32 = 4;

/// How many parties inside the barrier at once are watched for death.
const TRACKED: usize = 1024;
/// Room for the action's task name and encoded arguments.
const ACTION_BYTES: usize = 4096;

#[repr(C)]
struct State {
    lock: RawLock,
    count: AtomicU32,
    gen: AtomicU32,
    parties: AtomicU32,
    phase: AtomicU32,
    slots: AtomicU32,
    _pad: AtomicU32,
}

// SAFETY: repr(C), atomics only; all-zero is a valid state (filling, empty).
unsafe impl SharedState for State {}

/// One tracked party inside the barrier: `start_time << 32 | pid`, 0 = free.
#[repr(C)]
struct Slot {
    tag: AtomicU64,
}

// SAFETY: repr(C), one atomic; zero is "free".
unsafe impl SharedState for Slot {}

/// The action: a registered task's name, then its encoded arguments.
#[repr(C)]
struct Action {
    name_len: AtomicU32,
    args_len: AtomicU32,
    bytes: [AtomicU8; ACTION_BYTES],
}

// SAFETY: repr(C), atomics only; zero lengths mean "no action".
unsafe impl SharedState for Action {}

const SLOTS_AT: usize = HEADER_SIZE + std::mem::size_of::<State>().next_multiple_of(64);

fn action_at(slots: usize) -> usize {
    SLOTS_AT + (slots * std::mem::size_of::<Slot>()).next_multiple_of(64)
}

/// The error of a wait on a barrier that is or became broken (Python's
/// `threading.BrokenBarrierError`): it was [aborted](Barrier::abort) or
/// [reset](Barrier::reset) while this party waited, a party timed out or
/// died while waiting, or the action panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BrokenBarrierError;

impl fmt::Display for BrokenBarrierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the barrier is broken")
    }
}

impl std::error::Error for BrokenBarrierError {}

/// A rendezvous point for a fixed number of parties in any processes.
///
/// Like Python's `Barrier`: a party that times out, an
/// [`abort`](Self::abort), a [`reset`](Self::reset) while parties wait, an
/// action that panics, or a party that dies while waiting *breaks* the
/// barrier, and every waiter gets [`mproc::BrokenBarrierError`](BrokenBarrierError)
/// from [`wait_checked`](Self::wait_checked) /
/// [`wait_timeout`](Self::wait_timeout) (and [`wait`](Self::wait) panics),
/// until [`reset`](Self::reset).
///
/// # Examples
/// ```
/// # extern crate mproc_core as mproc;
/// let b = mproc::Barrier::new(1)?;
/// assert_eq!(b.wait(), 0);
/// b.abort();
/// assert!(b.broken());
/// assert_eq!(b.wait_checked(), Err(mproc::BrokenBarrierError));
/// b.reset();
/// assert_eq!(b.wait_checked(), Ok(0));
/// # Ok::<(), mproc::Error>(())
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
            .field("broken", &self.broken())
            .finish()
    }
}

/// A party inside the barrier.
struct Ticket {
    idx: usize,
    slot: Option<usize>,
}

enum Enter {
    /// Not admitted yet: sleep on `gen` holding this value.
    Blocked(u32),
    Waiting(Ticket, u32),
    /// The last arrival, with an action to run.
    Act(Ticket),
    Done(Result<usize, BrokenBarrierError>),
}

enum Step {
    Wait(u32),
    Done(Result<usize, BrokenBarrierError>),
}

impl Barrier {
    /// Creates a barrier for `n` parties.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had or `n` is 0 or larger than `u32::MAX`.
    pub fn new(n: usize) -> Result<Barrier, Error> {
        Self::create(n, None)
    }

    /// Creates a barrier for `n` parties whose last arrival runs
    /// `task(args)` in its own process before the others are released
    /// (Python's `Barrier(n, action=f)`). The task is named, as a pickled
    /// function is in Python, so the action works in whichever process
    /// trips the barrier. If it panics, the barrier breaks.
    ///
    /// # Errors
    /// As [`new`](Self::new), and [`ErrorKind::Io`](crate::ErrorKind::Io)
    /// when the task is not registered (`#[mproc::task]`) or its name and
    /// encoded arguments exceed 4 KiB.
    pub fn with_action<T: Task>(n: usize, task: T, args: T::Args) -> Result<Barrier, Error> {
        let _ = task;
        if registry::lookup(T::NAME).is_none() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("the barrier action {} is not a registered task", T::NAME),
            ));
        }
        let bytes = encode_one(&args).map_err(Error::from)?;
        Self::create(n, Some((T::NAME, bytes)))
    }

    fn create(n: usize, action: Option<(&str, Vec<u8>)>) -> Result<Barrier, Error> {
        if n == 0 || n > u32::MAX as usize {
            return Err(Error::new(
                ErrorKind::Io,
                "a barrier needs between 1 and u32::MAX parties",
            ));
        }
        if let Some((name, args)) = &action {
            if name.len() + args.len() > ACTION_BYTES {
                return Err(Error::new(
                    ErrorKind::Io,
                    "a barrier action's name and arguments must fit in 4 KiB",
                ));
            }
        }
        let slots = n.min(TRACKED);
        let size = action_at(slots) - HEADER_SIZE + std::mem::size_of::<Action>();
        let seg = Segment::create(Kind::Barrier, 0, size)?;
        let b = Barrier { seg };
        let s = b.state();
        s.parties.store(n as u32, Ordering::Relaxed);
        s.slots.store(slots as u32, Ordering::Relaxed);
        if let Some((name, args)) = action {
            let a = b.action();
            for (cell, byte) in a.bytes.iter().zip(name.bytes().chain(args.iter().copied())) {
                cell.store(byte, Ordering::Relaxed);
            }
            a.args_len.store(args.len() as u32, Ordering::Relaxed);
            a.name_len.store(name.len() as u32, Ordering::Release);
        }
        Ok(b)
    }

    fn state(&self) -> &State {
        self.seg.state()
    }

    fn slot(&self, i: usize) -> &Slot {
        self.seg
            .state_at(SLOTS_AT + i * std::mem::size_of::<Slot>())
    }

    fn nslots(&self) -> usize {
        self.state().slots.load(Ordering::Relaxed) as usize
    }

    fn action(&self) -> &Action {
        self.seg.state_at(action_at(self.nslots()))
    }

    /// The number of parties.
    pub fn parties(&self) -> usize {
        self.state().parties.load(Ordering::Relaxed) as usize
    }

    /// How many parties are waiting for the barrier to trip now (Python's
    /// `n_waiting`; 0 while it releases a round or is broken).
    pub fn n_waiting(&self) -> usize {
        let s = self.state();
        if s.phase.load(Ordering::Acquire) == FILLING {
            s.count.load(Ordering::Relaxed) as usize
        } else {
            0
        }
    }

    /// True while the barrier is broken (Python's `broken`).
    pub fn broken(&self) -> bool {
        self.state().phase.load(Ordering::Acquire) == BROKEN
    }

    /// Breaks the barrier: current and later waits fail with
    /// [`BrokenBarrierError`] until [`reset`](Self::reset) (Python's
    /// `abort()`).
    pub fn abort(&self) {
        self.locked(|b, s| b.break_locked(s));
    }

    /// Returns the barrier to its initial state: parties waiting now fail
    /// with [`BrokenBarrierError`]; later waits work again (Python's
    /// `reset()`).
    pub fn reset(&self) {
        self.locked(|b, s| {
            let phase = s.phase.load(Ordering::Relaxed);
            if s.count.load(Ordering::Relaxed) > 0 {
                if phase != DRAINING {
                    s.phase.store(RESETTING, Ordering::Release);
                }
            } else {
                s.phase.store(FILLING, Ordering::Release);
            }
            b.bump(s);
        });
    }

    fn locked<R>(&self, f: impl FnOnce(&Self, &State) -> R) -> R {
        let s = self.state();
        let _ = s.lock.lock(Deadline::NEVER);
        let r = f(self, s);
        s.lock.unlock();
        r
    }

    fn bump(&self, s: &State) {
        s.gen.fetch_add(1, Ordering::Release);
        futex::wake_all(&s.gen);
    }

    fn break_locked(&self, s: &State) {
        if s.phase.load(Ordering::Relaxed) != BROKEN {
            s.phase.store(BROKEN, Ordering::Release);
            self.bump(s);
        }
    }

    /// Counts a party out (lock held).
    fn exit_locked(&self, s: &State, slot: Option<usize>) {
        if let Some(i) = slot {
            self.slot(i).tag.store(0, Ordering::Relaxed);
        }
        let left = s.count.load(Ordering::Relaxed).saturating_sub(1);
        s.count.store(left, Ordering::Relaxed);
        let phase = s.phase.load(Ordering::Relaxed);
        if left == 0 && (phase == DRAINING || phase == RESETTING) {
            s.phase.store(FILLING, Ordering::Release);
            self.bump(s);
        }
    }

    /// Counts out tracked parties whose process is gone; breaks a filling
    /// barrier that lost one (lock held).
    fn reap_dead(&self, s: &State) {
        if s.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        for i in 0..self.nslots() {
            let tag = self.slot(i).tag.load(Ordering::Relaxed);
            if tag == 0 || !shm::process_dead(tag as u32, Some((tag >> 32) as u32)) {
                continue;
            }
            tracing::debug!(pid = tag as u32, "a party died inside a barrier");
            let phase = s.phase.load(Ordering::Relaxed);
            if phase == FILLING || phase == ACTING {
                self.break_locked(s);
            }
            self.exit_locked(s, Some(i));
        }
    }

    fn register(&self) -> Option<usize> {
        let tag = (u64::from(shm::start_time()) << 32) | u64::from(shm::pid());
        (0..self.nslots()).find(|&i| {
            let slot = self.slot(i);
            let free = slot.tag.load(Ordering::Relaxed) == 0;
            if free {
                slot.tag.store(tag, Ordering::Relaxed);
            }
            free
        })
    }

    fn try_enter(&self) -> Enter {
        let has_action = self.action().name_len.load(Ordering::Acquire) != 0;
        self.locked(|b, s| {
            let gen = s.gen.load(Ordering::Relaxed);
            match s.phase.load(Ordering::Relaxed) {
                BROKEN => return Enter::Done(Err(BrokenBarrierError)),
                FILLING => {}
                _ => return Enter::Blocked(gen),
            }
            let idx = s.count.load(Ordering::Relaxed);
            s.count.store(idx + 1, Ordering::Relaxed);
            let ticket = Ticket {
                idx: idx as usize,
                slot: b.register(),
            };
            if idx + 1 < s.parties.load(Ordering::Relaxed) {
                return Enter::Waiting(ticket, gen);
            }
            if has_action {
                s.phase.store(ACTING, Ordering::Release);
                b.bump(s);
                return Enter::Act(ticket);
            }
            s.phase.store(DRAINING, Ordering::Release);
            b.bump(s);
            b.exit_locked(s, ticket.slot);
            Enter::Done(Ok(ticket.idx))
        })
    }

    /// Looks at a waiting party's round (after counting out dead parties
    /// when `reap`); breaks it when `deadline` passed.
    fn check(&self, t: &Ticket, deadline: Deadline, reap: bool) -> Step {
        self.locked(|b, s| {
            if reap {
                b.reap_dead(s);
            }
            let r = match s.phase.load(Ordering::Relaxed) {
                FILLING | ACTING if !deadline.passed() => {
                    return Step::Wait(s.gen.load(Ordering::Relaxed))
                }
                FILLING | ACTING => {
                    b.break_locked(s);
                    Err(BrokenBarrierError)
                }
                DRAINING => Ok(t.idx),
                _ => Err(BrokenBarrierError),
            };
            b.exit_locked(s, t.slot);
            Step::Done(r)
        })
    }

    /// Runs the action as the last arrival, then releases or breaks.
    fn act(&self, t: Ticket) -> Result<usize, BrokenBarrierError> {
        let ok = match self.run_action() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("the barrier action failed, breaking the barrier: {e}");
                false
            }
        };
        self.locked(|b, s| {
            if s.phase.load(Ordering::Relaxed) == ACTING {
                if ok {
                    s.phase.store(DRAINING, Ordering::Release);
                    b.bump(s);
                } else {
                    b.break_locked(s);
                }
            }
            let r = if s.phase.load(Ordering::Relaxed) == DRAINING {
                Ok(t.idx)
            } else {
                Err(BrokenBarrierError)
            };
            b.exit_locked(s, t.slot);
            r
        })
    }

    fn run_action(&self) -> Result<(), crate::error::TaskError> {
        let a = self.action();
        let name_len = a.name_len.load(Ordering::Acquire) as usize;
        let args_len = a.args_len.load(Ordering::Relaxed) as usize;
        let bytes: Vec<u8> = a.bytes[..name_len + args_len]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let (name, args) = bytes.split_at(name_len);
        let name = String::from_utf8_lossy(name);
        let entry =
            registry::lookup(&name).ok_or_else(|| crate::error::TaskError::UnknownTask {
                name: name.to_string(),
            })?;
        (entry.run)(args).block()?.single_outcome()
    }

    fn wait_until(&self, deadline: Deadline) -> Result<usize, BrokenBarrierError> {
        let s = self.state();
        let (ticket, mut gen) = loop {
            match self.try_enter() {
                Enter::Done(r) => return r,
                Enter::Act(t) => return self.act(t),
                Enter::Waiting(t, gen) => break (t, gen),
                Enter::Blocked(gen) => {
                    if deadline.passed() {
                        self.abort();
                        return Err(BrokenBarrierError);
                    }
                    if wait::sleep(&s.gen, gen, deadline) {
                        self.locked(|b, s| b.reap_dead(s));
                    }
                }
            }
        };
        loop {
            let slice_ran_out = wait::sleep(&s.gen, gen, deadline);
            match self.check(&ticket, deadline, slice_ran_out) {
                Step::Done(r) => return r,
                Step::Wait(g) => gen = g,
            }
        }
    }

    /// Waits until all parties have arrived. Returns this party's arrival
    /// index, `0..parties`.
    ///
    /// # Panics
    /// When the barrier is or becomes broken (see [`Barrier`]); use
    /// [`wait_checked`](Self::wait_checked) to handle that as an error.
    pub fn wait(&self) -> usize {
        self.wait_checked()
            .expect("mproc::Barrier::wait on a broken barrier (use wait_checked)")
    }

    /// As [`wait`](Self::wait), with a broken barrier as an error (Python's
    /// `wait()` raising `BrokenBarrierError`).
    ///
    /// # Errors
    /// [`BrokenBarrierError`] when the barrier is or becomes broken.
    pub fn wait_checked(&self) -> Result<usize, BrokenBarrierError> {
        self.wait_until(Deadline::NEVER)
    }

    /// Waits at most `d`. On timeout the barrier breaks, for this party and
    /// every other (Python's `wait(timeout)`).
    ///
    /// # Errors
    /// [`BrokenBarrierError`] on timeout or when the barrier is or becomes
    /// broken.
    pub fn wait_timeout(&self, d: Duration) -> Result<usize, BrokenBarrierError> {
        self.wait_until(Deadline::after(d))
    }

    /// As [`wait_checked`](Self::wait_checked), without blocking the async
    /// runtime's thread.
    ///
    /// # Errors
    /// As [`wait_checked`](Self::wait_checked).
    ///
    /// # Cancel safety
    /// Not cancel-safe: the arrival is counted when the future is first
    /// polled; dropping the future afterwards leaves it counted (until the
    /// process exits, when it counts as a dead party).
    pub async fn wait_checked_async(&self) -> Result<usize, BrokenBarrierError> {
        let (ticket, mut gen) = loop {
            match self.try_enter() {
                Enter::Done(r) => return r,
                Enter::Act(t) => return self.act(t),
                Enter::Waiting(t, gen) => break (t, gen),
                Enter::Blocked(gen) => {
                    if self.sleep_async(gen).await {
                        self.locked(|b, s| b.reap_dead(s));
                    }
                }
            }
        };
        loop {
            let slice_ran_out = self.sleep_async(gen).await;
            match self.check(&ticket, Deadline::NEVER, slice_ran_out) {
                Step::Done(r) => return r,
                Step::Wait(g) => gen = g,
            }
        }
    }

    /// One bounded sleep off the runtime; true when the slice ran out.
    async fn sleep_async(&self, gen: u32) -> bool {
        let seg = self.seg.clone();
        wait::off_runtime(move || {
            let s: &State = seg.state();
            wait::sleep(&s.gen, gen, Deadline::NEVER)
        })
        .await
        .unwrap_or(true)
    }

    /// Waits without blocking the async runtime's thread.
    ///
    /// # Panics
    /// As [`wait`](Self::wait).
    ///
    /// # Cancel safety
    /// As [`wait_checked_async`](Self::wait_checked_async).
    pub async fn wait_async(&self) -> usize {
        self.wait_checked_async()
            .await
            .expect("mproc::Barrier::wait_async on a broken barrier (use wait_checked_async)")
    }
}

super::handle_serde!(Barrier, Kind::Barrier);
