//! Growing a ring's data area in place, and giving consumed chunks back to
//! the kernel (see `../README.md`, "Growing").

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;

impl Ring {
    /// Doubles the data area (as often as needed, up to the maximum) until a
    /// record of `rec` bytes fits at byte position `tb`, moving the live
    /// bytes in place. The caller holds the producer lock; this takes the
    /// consumer lock for the move, so no one else touches the data area.
    /// Returns the new area and the `head` it saw, or `None` when the area
    /// cannot grow enough (or the consumer lock was not had by `deadline`).
    ///
    /// Byte positions are unchanged: position `p` lives at `p mod len` and
    /// moves to `p mod new_len`, which is either the same offset or one in
    /// the new upper part — never an offset another live byte still needs,
    /// since live bytes span less than the old size. A record never wraps in
    /// the old area, so it stays contiguous in the new one; skip markers
    /// carry their own length, so they still skip exactly what they did.
    /// The new size is published by one `Release` store of `data_len` after
    /// the move: a producer killed before it leaves the old area as it was.
    pub(super) fn grow(
        &self,
        seg: &Segment,
        c: &RingCtrl,
        old: Area,
        tb: u32,
        rec: usize,
        deadline: Deadline,
    ) -> Result<Option<(Area, u64)>, RingError> {
        if old.len >= self.max {
            return Ok(None);
        }
        // A consumer holds its lock only while it takes one record; give it
        // a moment even when the caller would not wait (`try_put`).
        let wait = if deadline.passed() {
            Deadline::after(Duration::from_millis(20))
        } else {
            deadline
        };
        if c.cons.lock.lock(wait).is_none() {
            return Ok(None);
        }
        let _cons = Held(&c.cons.lock);
        let h = c.head.at.load(Ordering::Acquire);
        let (_, hb) = unpack(h);
        let used = tb.wrapping_sub(hb) as usize;
        let mut len = old.len;
        loop {
            if len >= self.max {
                return Ok(None);
            }
            len *= 2;
            if rec <= len && need(len, tb, rec) <= len - used {
                break;
            }
        }
        let base = seg
            .data_window(self.view, self.data, len)
            .map_err(|_| RingError::NoMemory)?;
        let new = Area { base, len };
        let mut p = hb;
        let mut left = used;
        while left > 0 {
            let from = p as usize & (old.len - 1);
            let to = p as usize & (new.len - 1);
            let run = left.min(old.len - from);
            debug_assert!(to % old.len == from && to + run <= new.len);
            if to != from {
                // SAFETY: both ranges lie in the new window (which covers the
                // old area: same file offset, larger); the source is inside
                // `[0, old.len)` and the destination inside
                // `[old.len, new.len)`, so they do not overlap. We hold both
                // locks: no producer or consumer of any process touches the
                // data area until they are released.
                unsafe {
                    std::ptr::copy_nonoverlapping(new.base.add(from), new.base.add(to), run);
                }
            }
            p = p.wrapping_add(run as u32);
            left -= run;
        }
        c.misc.data_len.store(len as u64, Ordering::Release);
        Ok(Some((new, h)))
    }

    /// Moves an *empty* ring's position to the start of its data area, so
    /// that a record of up to the area's size fits. Without it, a record
    /// longer than both the bytes left before the end of the area and the
    /// bytes before the position could never be put, not even into an
    /// empty ring (it would need a skip marker *and* the whole area), and
    /// the put would wait for ever. The caller holds the producer lock;
    /// this takes the consumer lock, commits a skip marker to the end of
    /// the area and passes over it as a consumer would. True when it did.
    ///
    /// Each store leaves a state a consumer can read if this process dies
    /// here: the marker is written before `tail` publishes it, the cached
    /// `tail` is moved before `head` (so it never falls behind `head`), and
    /// a marker left unpassed is passed by the next consumer.
    pub(super) fn rewind(
        &self,
        c: &RingCtrl,
        area: Area,
        tb: u32,
        rec: usize,
        deadline: Deadline,
    ) -> bool {
        let pos = tb as usize & (area.len - 1);
        if pos == 0 || rec > area.len {
            return false;
        }
        let wait = if deadline.passed() {
            Deadline::after(Duration::from_millis(20))
        } else {
            deadline
        };
        if c.cons.lock.lock(wait).is_none() {
            return false;
        }
        let _cons = Held(&c.cons.lock);
        let (hi, hb) = unpack(c.head.at.load(Ordering::Acquire));
        if hb != tb {
            // Not empty: consumers will make room.
            return false;
        }
        let (ti, _) = unpack(c.tail.at.load(Ordering::Relaxed));
        let skip = area.len - pos;
        // SAFETY: `pos` is 8-aligned and not 0, so at least 8 bytes remain
        // before the end of the area; the ring is empty and we hold both
        // locks, so no producer or consumer of any process touches the
        // data area.
        unsafe { write_header(area, pos, SKIP, skip as u32) };
        let new_tb = tb.wrapping_add(skip as u32);
        c.tail.at.store(pack(ti, new_tb), Ordering::Release);
        c.cons.tail_cache.store(pack(ti, new_tb), Ordering::Relaxed);
        c.head.at.store(pack(hi, new_tb), Ordering::Release);
        true
    }

    /// Gives consumed chunks back to the kernel, so a long-lived queue's
    /// memory follows its occupancy, not its traffic. Called by the
    /// lock-holding producer after a commit that crossed a chunk boundary.
    pub(super) fn give_back(&self, seg: &Segment, c: &RingCtrl, area: Area, new_tb: u32) {
        if area.len < 4 * CHUNK {
            return;
        }
        let (_, hb) = unpack(c.head.at.load(Ordering::Acquire));
        let target = hb & !(CHUNK as u32 - 1);
        let mark = c.prod.punched.load(Ordering::Relaxed);
        if (target.wrapping_sub(mark) as i32) <= 0 {
            return;
        }
        let len = area.len as u32;
        // Distances from the tail, in bytes; free space is [0, head + len).
        let rel = |x: u32| i64::from(x.wrapping_sub(new_tb) as i32);
        let first_aligned =
            ((CHUNK as u32 - (new_tb & (CHUNK as u32 - 1))) & (CHUNK as u32 - 1)) as i64;
        let lo = rel(mark.wrapping_add(len)).max(first_aligned);
        let hi = rel(target.wrapping_add(len));
        c.prod.punched.store(target, Ordering::Relaxed);
        if hi <= lo {
            return;
        }
        let mut start = (new_tb.wrapping_add(lo as u32) as usize) & (area.len - 1);
        let mut left = (hi - lo) as usize;
        while left > 0 {
            let n = left.min(area.len - start);
            debug_assert!(start % CHUNK == 0 && n % CHUNK == 0);
            // SAFETY: the range lies in `[tail, head + len)`, free space no
            // consumer reads; producers are serialized by the lock we hold;
            // both bounds are chunk- (so page-) aligned.
            unsafe { seg.discard(self.data + start, n) };
            left -= n;
            start = 0;
        }
    }
}
