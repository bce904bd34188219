//! The byte ring under [`Queue`](super::Queue) and
//! [`Connection`](super::Connection): variable-size records in a power-of-two
//! data area of a shared segment, many producers and many consumers in any
//! processes. The data area starts small and doubles, in place, when a record
//! does not fit, up to a maximum. The protocol, its memory orderings and the
//! growth step are described in `../README.md`.

mod grow;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::robust::RawLock;
use super::segment::{Segment, SharedState, VIEWS};
use super::wait::{self, Deadline};
use crate::sys::futex;

/// Record header: the payload length (`u32`), padded to 8 bytes.
const REC_HDR: usize = 8;
/// A record header holding this value is a skip marker: its second word is
/// the number of bytes to pass over (up to what was the end of the data area
/// when it was written; after a growth that is no longer the end).
const SKIP: u32 = u32::MAX;
/// The smallest data area.
const MIN_AREA: usize = 4096;
/// The largest data area (byte positions are `u32`s; the size must divide
/// 2³²).
const MAX_AREA: usize = 1 << 31;
/// How long consumers spin for data before sleeping (learned).
static GET_SPIN: wait::Spin = wait::Spin::new(wait::SPIN_MAX_NS);
/// How long producers spin for room before sleeping (learned).
static PUT_SPIN: wait::Spin = wait::Spin::new(wait::SPIN_MAX_NS);

/// Consumed memory is returned to the kernel in chunks of this size.
pub(crate) const CHUNK: usize = 1 << 20;

/// Why a ring operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RingError {
    /// No record within the deadline.
    Empty,
    /// No room within the deadline.
    Full,
    /// The ring was closed (or the caller's abort check said so).
    Closed,
    /// The record can never fit.
    TooLarge,
    /// This process cannot map the data area at its current size (an
    /// address-space limit), or cannot grow it to fit the record.
    NoMemory,
}

#[repr(C, align(128))]
struct ProdSide {
    /// Serializes producers.
    lock: RawLock,
    /// Bumped after each commit; consumers sleep on it.
    tail_ev: AtomicU32,
    /// Consumers sleeping (or about to) on `tail_ev`.
    get_waiters: AtomicU32,
    /// Byte position up to which consumed chunks were given back.
    punched: AtomicU32,
    /// A recent value of `head` (≤ the real one), so producers need not
    /// read the consumers' index on every put.
    head_cache: AtomicU64,
}

/// An index alone on its lines: what the other side polls while it spins.
#[repr(C, align(128))]
struct Index {
    /// `items << 32 | bytes` (both wrapping).
    at: AtomicU64,
}

#[repr(C, align(128))]
struct ConsSide {
    /// Serializes consumers.
    lock: RawLock,
    /// Bumped after each consumption; producers sleep on it.
    head_ev: AtomicU32,
    /// Producers sleeping (or about to) on `head_ev`.
    put_waiters: AtomicU32,
    /// A recent value of `tail` (≤ the real one, ≥ `head`), so consumers
    /// need not read the producers' index on every get.
    tail_cache: AtomicU64,
}

#[repr(C, align(128))]
struct Misc {
    closed: AtomicU32,
    /// `JoinableQueue`: items acknowledged with `task_done` (wrapping).
    done: AtomicU32,
    join_waiters: AtomicU32,
    /// Item bound; 0 = bounded by bytes only.
    cap: AtomicU32,
    /// Size of the data area now: a power of two, changed only by a
    /// producer holding both locks (`grow`).
    data_len: AtomicU64,
    /// The largest the data area may grow to (set at creation).
    max_len: AtomicU64,
}

/// The control block of one ring. Each part has its own pair of cache
/// lines: the producers' private words, the committed end (`tail`), the
/// consumers' private words, the consumed end (`head`), and the rest. A side
/// spinning on the other's index then reads a line that is written once per
/// operation, not one that is also locked and counted on.
#[repr(C)]
pub(crate) struct RingCtrl {
    prod: ProdSide,
    tail: Index,
    cons: ConsSide,
    head: Index,
    misc: Misc,
}

// SAFETY: repr(C), atomics only; all-zero is an empty, open ring.
unsafe impl SharedState for RingCtrl {}

fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

fn pack(items: u32, bytes: u32) -> u64 {
    (u64::from(items) << 32) | u64::from(bytes)
}

fn record_size(payload: usize) -> Option<usize> {
    payload.checked_add(REC_HDR + 7).map(|n| n & !7)
}

/// Where a ring lives in its segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ring {
    ctrl: usize,
    /// File offset of the data area.
    data: usize,
    /// The largest the data area may grow to.
    max: usize,
    /// Which of the segment's data windows (`Segment::data_window`).
    view: usize,
}

/// The data area as this process sees it, read under a side lock.
#[derive(Clone, Copy)]
struct Area {
    base: *mut u8,
    len: usize,
}

/// Bytes a record of `rec` bytes takes at byte position `tb` of an area of
/// `len` bytes: itself, plus a skip of the rest of the area when it would
/// not fit before the end.
fn need(len: usize, tb: u32, rec: usize) -> usize {
    let contiguous = len - (tb as usize & (len - 1));
    if rec > contiguous {
        contiguous + rec
    } else {
        rec
    }
}

/// Writes a record header: `[a, b]` (payload length and 0, or `SKIP` and
/// the bytes to pass over).
///
/// # Safety
/// `pos` must be 8-aligned with 8 bytes before the end of `area`, and the
/// caller must have exclusive use of those bytes.
unsafe fn write_header(area: Area, pos: usize, a: u32, b: u32) {
    debug_assert!(pos % 8 == 0 && pos + REC_HDR <= area.len);
    // SAFETY: forwarded contract; the data area is page-aligned so `pos`
    // 8-aligned means the pair of u32s is aligned.
    unsafe { area.base.add(pos).cast::<[u32; 2]>().write([a, b]) };
}

/// Releases a ring lock on drop, so a panicking decoder cannot leave it held.
struct Held<'a>(&'a RawLock);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

impl Ring {
    /// Size of the control block.
    pub(crate) const CTRL_SIZE: usize = std::mem::size_of::<RingCtrl>();

    /// A ring with its control block at `ctrl` (128-aligned) and a data area
    /// at file offset `data` (page-aligned, past the segment's head) that may
    /// grow to `max` bytes, a power of two ≤ 2³¹; `view` names its window.
    pub(crate) fn at(ctrl: usize, data: usize, max: usize, view: usize) -> Ring {
        assert!(max.is_power_of_two() && (MIN_AREA..=MAX_AREA).contains(&max));
        assert!(ctrl % 128 == 0 && data % 4096 == 0 && view < VIEWS);
        Ring {
            ctrl,
            data,
            max,
            view,
        }
    }

    fn c<'a>(&self, seg: &'a Segment) -> &'a RingCtrl {
        seg.state_at(self.ctrl)
    }

    /// Sets the item bound (0 = none), the first size of the data area
    /// (a power of two, at least 4 KiB and at most the maximum) and records
    /// the maximum; call once, before sharing.
    pub(crate) fn init(&self, seg: &Segment, cap: u32, initial: usize) {
        assert!(initial.is_power_of_two() && (MIN_AREA..=self.max).contains(&initial));
        assert!(self.data + self.max <= seg.file_len());
        let c = self.c(seg);
        c.misc.cap.store(cap, Ordering::Relaxed);
        c.misc.max_len.store(self.max as u64, Ordering::Relaxed);
        c.misc.data_len.store(initial as u64, Ordering::Release);
    }

    /// The ring whose control block is at `ctrl`, with the maximum its
    /// creator recorded; `None` when the recorded layout does not fit `seg`.
    pub(crate) fn open(seg: &Segment, ctrl: usize, data: usize, view: usize) -> Option<Ring> {
        let misc = &seg.state_at::<RingCtrl>(ctrl).misc;
        let max = misc.max_len.load(Ordering::Relaxed) as usize;
        let len = misc.data_len.load(Ordering::Acquire) as usize;
        let pow2 = |n: usize| n.is_power_of_two() && (MIN_AREA..=MAX_AREA).contains(&n);
        let ok = pow2(max)
            && pow2(len)
            && len <= max
            && data % 4096 == 0
            && data >= seg.len()
            && data
                .checked_add(max)
                .is_some_and(|end| end <= seg.file_len());
        ok.then(|| Ring::at(ctrl, data, max, view))
    }

    /// The data area now, mapped in this process. Called under a side lock,
    /// or by readers that only need a snapshot of its size.
    fn area(&self, seg: &Segment, c: &RingCtrl) -> Result<Area, RingError> {
        let len = c.misc.data_len.load(Ordering::Acquire) as usize;
        assert!(
            len.is_power_of_two() && (MIN_AREA..=self.max).contains(&len),
            "shared queue ring is corrupt: bad data area size"
        );
        let base = seg
            .data_window(self.view, self.data, len)
            .map_err(|_| RingError::NoMemory)?;
        Ok(Area { base, len })
    }

    /// The current size of the data area (a snapshot).
    fn area_len(&self, c: &RingCtrl) -> usize {
        c.misc.data_len.load(Ordering::Acquire) as usize
    }

    /// The item bound, if any.
    pub(crate) fn cap(&self, seg: &Segment) -> Option<usize> {
        match self.c(seg).misc.cap.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n as usize),
        }
    }

    /// The largest payload a record can carry (once the area has grown to
    /// its maximum).
    pub(crate) fn max_payload(&self) -> usize {
        self.max - REC_HDR
    }

    /// Committed, unconsumed records (a snapshot).
    pub(crate) fn len(&self, seg: &Segment) -> usize {
        let c = self.c(seg);
        let (hi, _) = unpack(c.head.at.load(Ordering::Acquire));
        let (ti, _) = unpack(c.tail.at.load(Ordering::Acquire));
        ti.wrapping_sub(hi) as usize
    }

    /// Closes the ring: puts fail, gets drain what is left then fail.
    pub(crate) fn close(&self, seg: &Segment) {
        let c = self.c(seg);
        c.misc.closed.store(1, Ordering::SeqCst);
        c.prod.tail_ev.fetch_add(1, Ordering::SeqCst);
        c.cons.head_ev.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&c.prod.tail_ev);
        futex::wake_all(&c.cons.head_ev);
    }

    /// True once [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self, seg: &Segment) -> bool {
        self.c(seg).misc.closed.load(Ordering::Acquire) != 0
    }

    fn readable(&self, c: &RingCtrl) -> bool {
        let (_, hb) = unpack(c.head.at.load(Ordering::Relaxed));
        let (_, tb) = unpack(c.tail.at.load(Ordering::Acquire));
        hb != tb
    }

    /// Room for a record of `rec` bytes in the data area at its current
    /// size (a snapshot, for deciding whether to wait: a put grows the area
    /// before it waits, so waiting is only for room at this size).
    fn has_room(&self, c: &RingCtrl, rec: usize) -> bool {
        let (ti, tb) = unpack(c.tail.at.load(Ordering::Relaxed));
        let (hi, hb) = unpack(c.head.at.load(Ordering::Acquire));
        let cap = c.misc.cap.load(Ordering::Relaxed);
        if cap != 0 && ti.wrapping_sub(hi) >= cap {
            return false;
        }
        let len = self.area_len(c);
        let used = tb.wrapping_sub(hb) as usize;
        // An empty ring takes any record that fits the area (`rewind`).
        rec <= len && (used == 0 || need(len, tb, rec) <= len - used)
    }

    /// Appends one record holding `payload`, waiting for room until
    /// `deadline`. `abort` is asked after each sleep slice that ended without
    /// room; `true` gives up with [`RingError::Closed`].
    pub(crate) fn put(
        &self,
        seg: &Segment,
        payload: &[u8],
        deadline: Deadline,
        abort: &mut dyn FnMut() -> bool,
    ) -> Result<(), RingError> {
        self.put_stalled(seg, payload, deadline, abort, None)
    }

    /// [`put`](Self::put) that sleeps `stall` between writing the record and
    /// committing it (a crash-test hook).
    pub(crate) fn put_stalled(
        &self,
        seg: &Segment,
        payload: &[u8],
        deadline: Deadline,
        abort: &mut dyn FnMut() -> bool,
        stall: Option<Duration>,
    ) -> Result<(), RingError> {
        let rec = record_size(payload.len())
            .filter(|r| *r <= self.max)
            .ok_or(RingError::TooLarge)?;
        let c = self.c(seg);
        loop {
            if c.misc.closed.load(Ordering::Acquire) != 0 {
                return Err(RingError::Closed);
            }
            if c.prod.lock.lock(deadline).is_none() {
                return Err(RingError::Full);
            }
            let held = Held(&c.prod.lock);
            if self.try_put_locked(seg, c, payload, rec, deadline, stall)? {
                drop(held);
                c.prod.tail_ev.fetch_add(1, Ordering::SeqCst);
                if c.prod.get_waiters.load(Ordering::SeqCst) > 0 {
                    futex::wake_all(&c.prod.tail_ev);
                }
                return Ok(());
            }
            if !deadline.passed() && PUT_SPIN.until(|| self.has_room(c, rec)) {
                continue;
            }
            c.cons.put_waiters.fetch_add(1, Ordering::SeqCst);
            let ev = c.cons.head_ev.load(Ordering::SeqCst);
            let room = self.has_room(c, rec) || c.misc.closed.load(Ordering::SeqCst) != 0;
            drop(held);
            let timed_out = !room && wait::sleep(&c.cons.head_ev, ev, deadline);
            c.cons.put_waiters.fetch_sub(1, Ordering::SeqCst);
            if timed_out {
                if deadline.passed() {
                    return Err(RingError::Full);
                }
                if abort() {
                    return Err(RingError::Closed);
                }
            }
        }
    }

    /// Writes and commits one record, growing the data area first when the
    /// record does not fit and the area may grow; `Ok(false)` when there is
    /// no room. The caller holds the producer lock.
    fn try_put_locked(
        &self,
        seg: &Segment,
        c: &RingCtrl,
        payload: &[u8],
        rec: usize,
        deadline: Deadline,
        stall: Option<Duration>,
    ) -> Result<bool, RingError> {
        let mut area = self.area(seg, c)?;
        let (ti, old_tb) = unpack(c.tail.at.load(Ordering::Relaxed));
        let cap = c.misc.cap.load(Ordering::Relaxed);
        let fits = |h: u64, area: &Area| {
            let (hi, hb) = unpack(h);
            let free = area.len - old_tb.wrapping_sub(hb) as usize;
            (cap == 0 || ti.wrapping_sub(hi) < cap)
                && rec <= area.len
                && need(area.len, old_tb, rec) <= free
        };
        // The cached head was read under this lock by some producer, so its
        // `Acquire` still orders the consumers' reads before our writes.
        let mut h = c.prod.head_cache.load(Ordering::Relaxed);
        if !fits(h, &area) {
            h = c.head.at.load(Ordering::Acquire);
            c.prod.head_cache.store(h, Ordering::Relaxed);
        }
        let (hi, _) = unpack(h);
        if cap != 0 && ti.wrapping_sub(hi) >= cap {
            return Ok(false);
        }
        if !fits(h, &area) {
            match self.grow(seg, c, area, old_tb, rec, deadline) {
                Ok(Some((grown, head))) => {
                    area = grown;
                    h = head;
                }
                // An empty ring whose position alone is in the way: start
                // again from the beginning of the area.
                Ok(None) | Err(RingError::NoMemory)
                    if self.rewind(c, area, old_tb, rec, deadline) =>
                {
                    return self.try_put_locked(seg, c, payload, rec, deadline, stall);
                }
                // Cannot grow enough now (at the maximum, or a consumer
                // kept its lock): wait for consumers, then try again.
                Ok(None) => return Ok(false),
                // This process cannot map a larger area: wait for room at
                // this size, unless the record can never fit at it.
                Err(RingError::NoMemory) if rec <= area.len => return Ok(false),
                Err(e) => return Err(e),
            }
            if !fits(h, &area) {
                return Ok(false);
            }
        }
        let (_, hb) = unpack(h);
        let len = area.len;
        let mut tb = old_tb;
        let mut free = len - tb.wrapping_sub(hb) as usize;
        let mut pos = tb as usize & (len - 1);
        let contiguous = len - pos;
        if rec > contiguous {
            if free < contiguous {
                return Ok(false);
            }
            // SAFETY: `pos` is 8-aligned and at least 8 bytes remain before
            // the end of the data area; the bytes are free (behind `head` by
            // a whole lap), and only the lock-holding producer writes there.
            unsafe { write_header(area, pos, SKIP, contiguous as u32) };
            tb = tb.wrapping_add(contiguous as u32);
            c.tail.at.store(pack(ti, tb), Ordering::Release);
            free -= contiguous;
            pos = 0;
        }
        if rec > free {
            return Ok(false);
        }
        debug_assert!(pos + rec <= len);
        // SAFETY: `[pos, pos + rec)` lies inside the data area (asserted) and
        // is free space: consumers read only `[head, tail)` and producers are
        // serialized by the lock we hold. It is published by the `Release`
        // store of `tail` below.
        unsafe {
            write_header(area, pos, payload.len() as u32, 0);
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                area.base.add(pos + REC_HDR),
                payload.len(),
            );
        }
        if let Some(d) = stall {
            // Test hook: a producer that dies here must leave no item.
            std::thread::sleep(d);
        }
        let new_tb = tb.wrapping_add(rec as u32);
        c.tail
            .at
            .store(pack(ti.wrapping_add(1), new_tb), Ordering::Release);
        if (old_tb >> CHUNK.trailing_zeros()) != (new_tb >> CHUNK.trailing_zeros()) {
            self.give_back(seg, c, area, new_tb);
        }
        Ok(true)
    }

    /// Takes the oldest record and passes its payload to `decode`, waiting
    /// until `deadline`. `abort` is asked after each sleep slice that ended
    /// without data; `true` gives up with [`RingError::Closed`].
    pub(crate) fn get<R>(
        &self,
        seg: &Segment,
        deadline: Deadline,
        abort: &mut dyn FnMut() -> bool,
        decode: impl FnMut(&[u8]) -> R,
    ) -> Result<R, RingError> {
        self.get_stalled(seg, deadline, abort, decode, None)
    }

    /// [`get`](Self::get) that sleeps `stall` between decoding the record
    /// and consuming it (a crash-test hook).
    pub(crate) fn get_stalled<R>(
        &self,
        seg: &Segment,
        deadline: Deadline,
        abort: &mut dyn FnMut() -> bool,
        mut decode: impl FnMut(&[u8]) -> R,
        stall: Option<Duration>,
    ) -> Result<R, RingError> {
        let c = self.c(seg);
        loop {
            if c.cons.lock.lock(deadline).is_none() {
                return Err(RingError::Empty);
            }
            let held = Held(&c.cons.lock);
            let mut got = self.try_get_locked(seg, c, &mut decode, stall)?;
            if got.is_none() && !deadline.passed() && GET_SPIN.until(|| self.readable(c)) {
                got = self.try_get_locked(seg, c, &mut decode, stall)?;
            }
            if let Some(r) = got {
                drop(held);
                c.cons.head_ev.fetch_add(1, Ordering::SeqCst);
                if c.cons.put_waiters.load(Ordering::SeqCst) > 0 {
                    futex::wake_all(&c.cons.head_ev);
                }
                return Ok(r);
            }
            if c.misc.closed.load(Ordering::Acquire) != 0 {
                return Err(RingError::Closed);
            }
            c.prod.get_waiters.fetch_add(1, Ordering::SeqCst);
            let ev = c.prod.tail_ev.load(Ordering::SeqCst);
            let ready = self.readable(c) || c.misc.closed.load(Ordering::SeqCst) != 0;
            drop(held);
            let timed_out = !ready && wait::sleep(&c.prod.tail_ev, ev, deadline);
            c.prod.get_waiters.fetch_sub(1, Ordering::SeqCst);
            if timed_out {
                if deadline.passed() {
                    return Err(RingError::Empty);
                }
                if abort() {
                    return Err(RingError::Closed);
                }
            }
        }
    }

    /// Consumes one record, if any. The caller holds the consumer lock.
    fn try_get_locked<R>(
        &self,
        seg: &Segment,
        c: &RingCtrl,
        decode: &mut impl FnMut(&[u8]) -> R,
        stall: Option<Duration>,
    ) -> Result<Option<R>, RingError> {
        loop {
            let (hi, hb) = unpack(c.head.at.load(Ordering::Relaxed));
            let (_, cached) = unpack(c.cons.tail_cache.load(Ordering::Relaxed));
            if hb == cached {
                let t = c.tail.at.load(Ordering::Acquire);
                c.cons.tail_cache.store(t, Ordering::Relaxed);
                if unpack(t).1 == hb {
                    return Ok(None);
                }
            }
            // Under the consumer lock the area cannot grow (growing takes
            // both locks), so this size and window hold until we release it.
            let area = self.area(seg, c)?;
            let len = area.len;
            let pos = hb as usize & (len - 1);
            debug_assert!(pos % 8 == 0 && pos + REC_HDR <= len);
            // SAFETY: `[head, tail)` is committed data (the `Acquire` load of
            // `tail` — ours, or the one behind `tail_cache`, made under the
            // consumer lock we now hold — synchronizes with the producer's
            // `Release` store), every record starts 8-aligned with its header
            // inside the area, and no producer writes there until `head`
            // moves past it.
            let [n, skip] = unsafe { area.base.add(pos).cast::<[u32; 2]>().read() };
            if n == SKIP {
                let skip = skip as usize;
                assert!(
                    skip >= REC_HDR && skip <= len - pos,
                    "shared queue ring is corrupt: bad skip marker"
                );
                c.head
                    .at
                    .store(pack(hi, hb.wrapping_add(skip as u32)), Ordering::Release);
                continue;
            }
            let n = n as usize;
            let rec = record_size(n).filter(|r| pos + r <= len);
            let rec = rec.expect("shared queue ring is corrupt: record overruns the data area");
            debug_assert!(pos + REC_HDR + n <= len);
            // SAFETY: the record lies inside the data area (checked above) in
            // committed, unconsumed space that no producer writes until
            // `head` is advanced below, after `decode` has returned.
            let payload =
                unsafe { std::slice::from_raw_parts(area.base.add(pos + REC_HDR).cast_const(), n) };
            let r = decode(payload);
            if let Some(d) = stall {
                // Test hook: a consumer that dies here must lose no item.
                std::thread::sleep(d);
            }
            c.head.at.store(
                pack(hi.wrapping_add(1), hb.wrapping_add(rec as u32)),
                Ordering::Release,
            );
            return Ok(Some(r));
        }
    }

    /// Sleeps at most one slice while the ring is empty and open (for the
    /// async twins).
    pub(crate) fn wait_readable(&self, seg: &Segment) {
        let c = self.c(seg);
        c.prod.get_waiters.fetch_add(1, Ordering::SeqCst);
        let ev = c.prod.tail_ev.load(Ordering::SeqCst);
        if !self.readable(c) && c.misc.closed.load(Ordering::SeqCst) == 0 {
            wait::sleep(&c.prod.tail_ev, ev, Deadline::NEVER);
        }
        c.prod.get_waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Sleeps at most one slice while a record of `payload` bytes does not
    /// fit and the ring is open (for the async twins).
    pub(crate) fn wait_writable(&self, seg: &Segment, payload: usize) {
        let c = self.c(seg);
        let rec = record_size(payload).unwrap_or(usize::MAX);
        c.cons.put_waiters.fetch_add(1, Ordering::SeqCst);
        let ev = c.cons.head_ev.load(Ordering::SeqCst);
        if !self.has_room(c, rec) && c.misc.closed.load(Ordering::SeqCst) == 0 {
            wait::sleep(&c.cons.head_ev, ev, Deadline::NEVER);
        }
        c.cons.put_waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// True when a record is waiting (a snapshot).
    pub(crate) fn has_data(&self, seg: &Segment) -> bool {
        self.readable(self.c(seg))
    }

    /// Waits until a record is waiting, the ring is closed, `abort` says so
    /// (after a slice without data), or the deadline passes. True when a
    /// record is waiting.
    pub(crate) fn poll(
        &self,
        seg: &Segment,
        deadline: Deadline,
        abort: &mut dyn FnMut() -> bool,
    ) -> Result<bool, RingError> {
        let c = self.c(seg);
        loop {
            if self.readable(c) {
                return Ok(true);
            }
            if c.misc.closed.load(Ordering::Acquire) != 0 {
                return Err(RingError::Closed);
            }
            if deadline.passed() {
                return Ok(false);
            }
            if GET_SPIN.until(|| self.readable(c)) {
                return Ok(true);
            }
            c.prod.get_waiters.fetch_add(1, Ordering::SeqCst);
            let ev = c.prod.tail_ev.load(Ordering::SeqCst);
            let ready = self.readable(c) || c.misc.closed.load(Ordering::SeqCst) != 0;
            let timed_out = !ready && wait::sleep(&c.prod.tail_ev, ev, deadline);
            c.prod.get_waiters.fetch_sub(1, Ordering::SeqCst);
            if timed_out && !deadline.passed() && abort() {
                return Err(RingError::Closed);
            }
        }
    }

    /// `JoinableQueue::task_done`: false when every committed item is
    /// already acknowledged.
    pub(crate) fn task_done(&self, seg: &Segment) -> bool {
        let c = self.c(seg);
        loop {
            let d = c.misc.done.load(Ordering::SeqCst);
            let (ti, _) = unpack(c.tail.at.load(Ordering::Acquire));
            if ti.wrapping_sub(d) as i32 <= 0 {
                return false;
            }
            if c.misc
                .done
                .compare_exchange(d, d.wrapping_add(1), Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                if c.misc.join_waiters.load(Ordering::SeqCst) > 0 {
                    futex::wake_all(&c.misc.done);
                }
                return true;
            }
        }
    }

    /// `JoinableQueue::join`: waits until every committed item was
    /// acknowledged; false on timeout.
    pub(crate) fn join(&self, seg: &Segment, deadline: Deadline) -> bool {
        let c = self.c(seg);
        loop {
            let d = c.misc.done.load(Ordering::SeqCst);
            let (ti, _) = unpack(c.tail.at.load(Ordering::Acquire));
            if ti == d {
                return true;
            }
            if deadline.passed() {
                return false;
            }
            c.misc.join_waiters.fetch_add(1, Ordering::SeqCst);
            if c.misc.done.load(Ordering::SeqCst) == d {
                wait::sleep(&c.misc.done, d, deadline);
            }
            c.misc.join_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// True when every committed item was acknowledged (a snapshot).
    pub(crate) fn all_done(&self, seg: &Segment) -> bool {
        let c = self.c(seg);
        let (ti, _) = unpack(c.tail.at.load(Ordering::Acquire));
        ti == c.misc.done.load(Ordering::SeqCst)
    }

    /// Sleeps at most one slice while some item is unacknowledged.
    pub(crate) fn wait_join_slice(&self, seg: &Segment) {
        let c = self.c(seg);
        c.misc.join_waiters.fetch_add(1, Ordering::SeqCst);
        let d = c.misc.done.load(Ordering::SeqCst);
        if !self.all_done(seg) {
            wait::sleep(&c.misc.done, d, Deadline::NEVER);
        }
        c.misc.join_waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The ring's pure index arithmetic, on its own so that miri runs it
/// (`scripts/miri.sh`); the protocol around it is modelled by loom
/// (`core/tests/loom_queue_ring.rs`).
#[cfg(test)]
mod index_tests {
    use super::{need, pack, record_size, unpack, REC_HDR};

    #[test]
    fn records_are_their_header_and_payload_rounded_to_eight_bytes() {
        for payload in 0..100usize {
            let rec = record_size(payload).unwrap();
            assert_eq!(rec % 8, 0);
            assert!(rec >= payload + REC_HDR && rec < payload + REC_HDR + 8);
        }
        assert_eq!(record_size(usize::MAX), None);
        assert_eq!(record_size(usize::MAX - REC_HDR - 6), None);
    }

    #[test]
    fn counts_pack_into_one_word_and_back() {
        for (items, bytes) in [
            (0, 0),
            (1, 2),
            (u32::MAX, 0),
            (0, u32::MAX),
            (u32::MAX, u32::MAX),
        ] {
            assert_eq!(unpack(pack(items, bytes)), (items, bytes));
        }
    }

    /// For every area size, position (the counter wrapping past `u32::MAX`
    /// too) and record size: a record that fits before the end takes its
    /// own size; one that does not skips exactly to the start of the area,
    /// where it fits.
    #[test]
    fn a_record_either_fits_where_it_is_or_skips_to_the_start() {
        for len in [8usize, 16, 64, 256] {
            let starts = (0..3 * len as u32).step_by(8).chain(
                (u32::MAX - 2 * len as u32 + 1..=u32::MAX - 7)
                    .step_by(8)
                    .map(|p| p & !7),
            );
            for tb in starts {
                let at = tb as usize & (len - 1);
                for rec in (8..=len).step_by(8) {
                    let n = need(len, tb, rec);
                    if at + rec <= len {
                        assert_eq!(n, rec, "len {len} at {tb} rec {rec}");
                    } else {
                        let skip = n - rec;
                        assert_eq!(skip, len - at, "len {len} at {tb} rec {rec}");
                        assert_eq!(tb.wrapping_add(skip as u32) as usize & (len - 1), 0);
                    }
                    assert!(n <= 2 * len);
                }
            }
        }
    }
}
