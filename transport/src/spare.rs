//! Large byte buffers kept for reuse between messages.
//!
//! A 64 MiB message needs several 64 MiB buffers on its way (the encoded
//! arguments, the frame, a result batch). Allocated fresh each time, every
//! one of them is a new mapping that the kernel faults in page by page and
//! unmaps again when it is dropped, which costs more than copying the bytes.
//! Code that finishes with a large buffer gives it here with [`give`]; code
//! about to grow a buffer past [`LARGE`] takes one with [`take`].
//!
//! The pool is bounded: it holds at most [`KEEP`] buffers of at most
//! [`MAX_KEPT`] bytes each, and a buffer nobody took for [`STALE`] is
//! dropped at the next call of either function, so the memory of a burst of
//! large messages goes back to the system once the burst is over (at the
//! latest when the process next sends or receives a large message).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buffers smaller than this are not pooled (the allocator serves them
/// well).
pub const LARGE: usize = 1 << 20;
/// At most this many buffers are kept.
pub const KEEP: usize = 2;
/// Buffers larger than this are dropped, not kept.
pub const MAX_KEPT: usize = 256 << 20;
/// A kept buffer nobody took for this long is dropped.
pub const STALE: Duration = Duration::from_secs(1);

static POOL: Mutex<Vec<(Vec<u8>, Instant)>> = Mutex::new(Vec::new());

fn drop_stale(pool: &mut Vec<(Vec<u8>, Instant)>, now: Instant) -> Vec<Vec<u8>> {
    let mut gone = Vec::new();
    let mut i = 0;
    while i < pool.len() {
        if now.duration_since(pool[i].1) >= STALE {
            gone.push(pool.swap_remove(i).0);
        } else {
            i += 1;
        }
    }
    gone
}

/// A buffer with room for at least `min` bytes from the pool, if one is
/// there (the smallest that fits); `None` otherwise. Its length is what it
/// had when it was given back, and its contents are left over from then:
/// initialized bytes that a reader can overwrite without zeroing them
/// first. Call `clear` for an empty one.
pub fn take(min: usize) -> Option<Vec<u8>> {
    let now = Instant::now();
    let (found, gone) = {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let gone = drop_stale(&mut pool, now);
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, (b, _))| b.capacity() >= min)
            .min_by_key(|(_, (b, _))| b.capacity())
            .map(|(i, _)| i);
        (best.map(|i| pool.swap_remove(i).0), gone)
    };
    drop(gone); // unmapped outside the lock
    found
}

/// Gives a buffer back for reuse (its contents are not looked at again).
/// Small and huge buffers are simply dropped.
pub fn give(buf: Vec<u8>) {
    if buf.capacity() < LARGE || buf.capacity() > MAX_KEPT {
        return;
    }
    let now = Instant::now();
    let gone = {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let mut gone = drop_stale(&mut pool, now);
        pool.push((buf, now));
        if pool.len() > KEEP {
            // Keep the largest ones: they serve every smaller request too.
            let smallest = pool
                .iter()
                .enumerate()
                .min_by_key(|(_, (b, _))| b.capacity())
                .map(|(i, _)| i)
                .expect("the pool is not empty");
            gone.push(pool.swap_remove(smallest).0);
        }
        gone
    };
    drop(gone);
}

/// A new, empty buffer with room for `cap` bytes.
///
/// Large buffers are not advised onto transparent huge pages: that was
/// tried, and with the kernel's `defrag=madvise` a 64 MiB echo over a Unix
/// socket went from a steady 0.15 s to anywhere in 0.13–1.4 s (half the
/// time in the kernel zeroing huge pages on fault), so reuse through this
/// pool is what saves the faults.
///
/// A large one is faulted in at once (see `sys::prefault`): writing a
/// fresh 64 MiB buffer page by page costs more than copying into it.
pub fn with_capacity(cap: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(cap);
    if cap >= LARGE {
        crate::sys::prefault(&mut v);
    }
    v
}

/// `bytes` copied into a buffer from the pool (or a fresh one).
pub fn copy_of(bytes: &[u8]) -> Vec<u8> {
    let mut v = if bytes.len() >= LARGE {
        take(bytes.len()).unwrap_or_else(|| with_capacity(bytes.len()))
    } else {
        Vec::new()
    };
    v.clear();
    v.extend_from_slice(bytes);
    v
}

/// Makes room for `more` bytes at the end of `buf`, taking a pooled buffer
/// (and copying what `buf` holds into it) when `buf` would have to grow
/// past [`LARGE`]; the buffer it replaces is given back.
pub fn reserve(buf: &mut Vec<u8>, more: usize) {
    let need = buf.len().saturating_add(more);
    if need <= buf.capacity() {
        return;
    }
    if need >= LARGE {
        let want = need.max(buf.capacity().saturating_mul(2));
        if let Some(mut bigger) = take(need) {
            bigger.clear();
            bigger.extend_from_slice(buf);
            give(std::mem::replace(buf, bigger));
            return;
        }
        // Grown in place where the allocator can (a large block is
        // remapped, not copied).
        buf.reserve_exact(want - buf.len());
        return;
    }
    buf.reserve(more);
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the pool is process-wide, so tests in parallel would see
    // each other's buffers.
    #[test]
    fn buffers_are_reused_bounded_and_released() {
        give(vec![0; 10]); // small: not kept
        let mut big = Vec::with_capacity(4 * LARGE);
        big.extend_from_slice(&[1, 2, 3]);
        let ptr = big.as_ptr();
        give(big);
        let again = take(2 * LARGE).expect("the buffer given back");
        assert_eq!(again.as_ptr(), ptr, "the same memory");
        assert_eq!(again, [1, 2, 3], "initialized contents kept");
        assert!(take(LARGE).is_none(), "taken means gone");

        for _ in 0..KEEP + 2 {
            give(Vec::with_capacity(LARGE));
        }
        assert!(POOL.lock().unwrap().len() <= KEEP);
        while take(0).is_some() {}

        let mut v = vec![9u8; 5];
        give(Vec::with_capacity(8 * LARGE));
        reserve(&mut v, 3 * LARGE);
        assert!(v.capacity() >= 8 * LARGE, "grown into the pooled buffer");
        assert_eq!(v, [9u8; 5]);
        while take(0).is_some() {}

        give(Vec::with_capacity(LARGE));
        std::thread::sleep(STALE + Duration::from_millis(50));
        assert!(take(0).is_none(), "a stale buffer is dropped");
    }
}
