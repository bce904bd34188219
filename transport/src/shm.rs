//! Shared-memory ring buffers: one single-producer/single-consumer byte ring
//! per direction in one memfd segment. See `SHM_RING.md` beside this file for
//! the protocol and its memory orderings.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::sys::{self, Mapping};
use crate::ByteStream;

const MAGIC: u64 = 0x6d70_726f_6372_6e67; // "mprocrng"
/// The default capacity of each direction's ring.
pub const DEFAULT_RING_SIZE: usize = 1 << 20;

/// One value alone on its cache lines (128 bytes: two lines, so the
/// adjacent-line prefetcher does not couple neighbours either).
#[repr(C, align(128))]
struct Padded<T>(T);

#[repr(C)]
struct RingCtl {
    /// Bytes ever written; only the producer stores it.
    head: Padded<AtomicU64>,
    /// Bytes ever read; only the consumer stores it.
    tail: Padded<AtomicU64>,
    /// The consumer is about to sleep, or sleeps, waiting for data.
    consumer_waiting: Padded<AtomicU32>,
    /// The producer is about to sleep, or sleeps, waiting for space.
    producer_waiting: Padded<AtomicU32>,
}

#[repr(C)]
struct Header {
    magic: Padded<AtomicU64>,
    ring_size: Padded<AtomicU64>,
    /// `closed[side]`: that side shut its end down.
    closed: Padded<[AtomicU32; 2]>,
    rings: [RingCtl; 2],
}

const DATA_OFFSET: usize = std::mem::size_of::<Header>().next_multiple_of(4096);

/// One end of a shared-memory ring pair. Side 0 (the creator) writes ring 0
/// and reads ring 1; side 1 the reverse.
#[derive(Debug)]
pub struct ShmChannel {
    map: Mapping,
    side: usize,
    ring_size: u64,
    /// `[data0, space0, data1, space1]`: a ring's consumer sleeps on its
    /// `data` eventfd, its producer on its `space` eventfd.
    efds: [OwnedFd; 4],
    peer: OwnedFd,
    stop: OwnedFd,
}

impl ShmChannel {
    /// Creates a segment with two rings of `ring_size` bytes (a power of
    /// two) for a peer process `peer_pid`. Returns this side and the
    /// descriptors to pass to the peer, in order, for [`ShmChannel::open`].
    pub fn create(ring_size: usize, peer_pid: u32) -> io::Result<(ShmChannel, Vec<OwnedFd>)> {
        if !ring_size.is_power_of_two() || ring_size < 4096 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring size must be a power of two ≥ 4096",
            ));
        }
        let (map, memfd) = Mapping::create(c"mproc-ring", DATA_OFFSET + 2 * ring_size)?;
        let efds = [
            sys::eventfd()?,
            sys::eventfd()?,
            sys::eventfd()?,
            sys::eventfd()?,
        ];
        let ch = ShmChannel {
            map,
            side: 0,
            ring_size: ring_size as u64,
            efds,
            peer: sys::pidfd_open(peer_pid)?,
            stop: sys::eventfd()?,
        };
        ch.header()
            .ring_size
            .0
            .store(ring_size as u64, Ordering::Relaxed);
        ch.header().magic.0.store(MAGIC, Ordering::Release);
        let mut give = vec![memfd];
        for e in &ch.efds {
            give.push(e.try_clone()?);
        }
        Ok((ch, give))
    }

    /// Opens the peer side from the descriptors [`ShmChannel::create`] gave
    /// out; `peer_pid` is the creator's pid.
    pub fn open(fds: Vec<OwnedFd>, peer_pid: u32) -> io::Result<ShmChannel> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let mut it = fds.into_iter();
        let memfd = it.next().ok_or_else(|| bad("no ring segment"))?;
        let efds: Vec<OwnedFd> = it.collect();
        let efds: [OwnedFd; 4] = efds
            .try_into()
            .map_err(|_| bad("ring needs four eventfds"))?;
        let size = nix::sys::stat::fstat(memfd.as_fd())
            .map_err(io::Error::from)?
            .st_size as usize;
        if size < DATA_OFFSET + 2 * 4096 {
            return Err(bad("ring segment too small"));
        }
        let map = Mapping::map(&memfd, size)?;
        let ch = ShmChannel {
            map,
            side: 1,
            ring_size: 0,
            efds,
            peer: sys::pidfd_open(peer_pid)?,
            stop: sys::eventfd()?,
        };
        let h = ch.header();
        if h.magic.0.load(Ordering::Acquire) != MAGIC {
            return Err(bad("not an mproc ring segment"));
        }
        let ring_size = h.ring_size.0.load(Ordering::Relaxed);
        if !ring_size.is_power_of_two() || DATA_OFFSET as u64 + 2 * ring_size > size as u64 {
            return Err(bad("ring segment has a bad size"));
        }
        Ok(ShmChannel { ring_size, ..ch })
    }

    fn header(&self) -> &Header {
        debug_assert!(self.map.len() >= std::mem::size_of::<Header>());
        // SAFETY: the mapping is page-aligned, at least `DATA_OFFSET` bytes
        // long (checked at creation and opening), and `Header` holds only
        // atomics, which are valid for any bit pattern including zero.
        unsafe { &*(self.map.base() as *const Header) }
    }

    fn ring(&self, r: usize) -> &RingCtl {
        &self.header().rings[r]
    }

    fn data(&self, r: usize) -> *mut u8 {
        debug_assert!(DATA_OFFSET + (r + 1) * self.ring_size as usize <= self.map.len());
        // SAFETY: in bounds of the mapping, as asserted above.
        unsafe {
            self.map
                .base()
                .add(DATA_OFFSET + r * self.ring_size as usize)
        }
    }

    fn efd(&self, ring: usize, space: bool) -> BorrowedFd<'_> {
        self.efds[ring * 2 + usize::from(space)].as_fd()
    }

    fn peer_closed(&self) -> bool {
        self.header().closed.0[1 - self.side].load(Ordering::Acquire) != 0
    }

    /// Copies `len` bytes between `buf` and ring `r` starting at stream
    /// position `pos`, wrapping at the end of the ring.
    ///
    /// # Safety
    /// The ring region `[pos, pos + len)` must belong to the caller under the
    /// ring protocol (unread data for the consumer, free space for the
    /// producer), and `buf` must be valid for `len` bytes.
    unsafe fn copy(&self, r: usize, pos: u64, buf: *mut u8, len: usize, into_ring: bool) {
        // SAFETY: ring r's data area is `ring_size` bytes at `data(r)`, a
        // power of two; the caller's contract is wrap_copy's.
        unsafe { wrap_copy(self.data(r), self.ring_size, pos, buf, len, into_ring) }
    }

    /// Takes what is readable; `None` when the ring is empty.
    fn take(&self, buf: &mut [u8]) -> Option<usize> {
        let r = 1 - self.side;
        let ctl = self.ring(r);
        let t = ctl.tail.0.load(Ordering::Relaxed);
        let h = ctl.head.0.load(Ordering::Acquire);
        let n = ((h - t) as usize).min(buf.len());
        if n == 0 {
            return None;
        }
        // SAFETY: [t, t + n) is written and published by the producer (the
        // Acquire load of head), and the consumer alone reads it until it
        // moves tail; `buf` has at least n bytes.
        unsafe { self.copy(r, t, buf.as_mut_ptr(), n, false) };
        ctl.tail.0.store(t + n as u64, Ordering::Release);
        fence(Ordering::SeqCst);
        if ctl.producer_waiting.0.load(Ordering::Relaxed) != 0 {
            sys::eventfd_signal(self.efd(r, true));
        }
        Some(n)
    }

    fn free_space(&self) -> u64 {
        let ctl = self.ring(self.side);
        let h = ctl.head.0.load(Ordering::Relaxed);
        let t = ctl.tail.0.load(Ordering::Acquire);
        self.ring_size - (h - t)
    }
}

/// Copies `len` bytes between `buf` and the ring of `cap` bytes (a power of
/// two) at `base`, starting at stream position `pos`: the ring's index
/// arithmetic, apart from the mapping so that miri can check it
/// (`scripts/miri.sh`).
///
/// # Safety
/// `base` must be valid for `cap` bytes and `buf` for `len ≤ cap` bytes;
/// the two must not overlap, and the ring bytes `[pos, pos + len)` (mod
/// `cap`) must be the caller's to read or write.
unsafe fn wrap_copy(base: *mut u8, cap: u64, pos: u64, buf: *mut u8, len: usize, into_ring: bool) {
    debug_assert!(cap.is_power_of_two());
    let cap = cap as usize;
    let start = (pos & (cap as u64 - 1)) as usize;
    let first = len.min(cap - start);
    debug_assert!(len <= cap);
    // SAFETY: both regions are in bounds (start + first ≤ cap and the
    // wrapped rest starts at 0 with len - first ≤ cap), they do not
    // overlap (one is private memory), and the caller owns them.
    unsafe {
        if into_ring {
            std::ptr::copy_nonoverlapping(buf, base.add(start), first);
            std::ptr::copy_nonoverlapping(buf.add(first), base, len - first);
        } else {
            std::ptr::copy_nonoverlapping(base.add(start), buf, first);
            std::ptr::copy_nonoverlapping(base, buf.add(first), len - first);
        }
    }
}

impl ByteStream for ShmChannel {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let r = 1 - self.side;
        let ctl = self.ring(r);
        loop {
            if let Some(n) = self.take(buf) {
                return Ok(n);
            }
            if self.peer_closed() {
                return Ok(self.take(buf).unwrap_or(0));
            }
            ctl.consumer_waiting.0.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            let t = ctl.tail.0.load(Ordering::Relaxed);
            if ctl.head.0.load(Ordering::Relaxed) != t || self.peer_closed() {
                ctl.consumer_waiting.0.store(0, Ordering::Relaxed);
                continue;
            }
            let [data, dead, stop] = sys::wait_readable(
                [self.efd(r, false), self.peer.as_fd(), self.stop.as_fd()],
                None,
            )?;
            ctl.consumer_waiting.0.store(0, Ordering::Relaxed);
            if data {
                sys::eventfd_drain(self.efd(r, false));
            }
            if stop {
                return Ok(0);
            }
            if dead {
                // Whatever the peer published before it died is still valid.
                return Ok(self.take(buf).unwrap_or(0));
            }
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if let Some(n) = self.take(buf) {
            return Ok(Some(n));
        }
        if self.peer_closed() {
            return Ok(Some(0));
        }
        Ok(None)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        if self.peer_closed() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "peer disconnected",
            ));
        }
        let w = self.side;
        let ctl = self.ring(w);
        let n = (self.free_space() as usize).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let h = ctl.head.0.load(Ordering::Relaxed);
        // SAFETY: [h, h + n) is free space (n ≤ ring_size − (h − tail)),
        // which only the producer touches until it publishes head; `buf`
        // has at least n bytes and is only read.
        unsafe { self.copy(w, h, buf.as_ptr().cast_mut(), n, true) };
        ctl.head.0.store(h + n as u64, Ordering::Release);
        fence(Ordering::SeqCst);
        if ctl.consumer_waiting.0.load(Ordering::Relaxed) != 0 {
            sys::eventfd_signal(self.efd(w, false));
        }
        Ok(n)
    }

    fn wait_writable(&self) -> io::Result<()> {
        let w = self.side;
        let ctl = self.ring(w);
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "peer disconnected");
        loop {
            if self.peer_closed() {
                return Err(gone());
            }
            if self.free_space() > 0 {
                return Ok(());
            }
            ctl.producer_waiting.0.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if self.free_space() > 0 {
                ctl.producer_waiting.0.store(0, Ordering::Relaxed);
                return Ok(());
            }
            let [space, dead, stop] = sys::wait_readable(
                [self.efd(w, true), self.peer.as_fd(), self.stop.as_fd()],
                None,
            )?;
            ctl.producer_waiting.0.store(0, Ordering::Relaxed);
            if space {
                sys::eventfd_drain(self.efd(w, true));
            }
            if stop || dead {
                return Err(gone());
            }
        }
    }

    fn shutdown(&self) {
        self.header().closed.0[self.side].store(1, Ordering::SeqCst);
        // Wake a peer sleeping for data from us or for space in our inbox,
        // and any local thread blocked in this channel.
        sys::eventfd_signal(self.efd(self.side, false));
        sys::eventfd_signal(self.efd(1 - self.side, true));
        sys::eventfd_signal(self.stop.as_fd());
    }

    fn ready(&self) -> bool {
        // Loads only: polling never touches the sleep flags, so it leaves
        // the wake-up protocol as it is.
        let ctl = self.ring(1 - self.side);
        ctl.head.0.load(Ordering::Acquire) != ctl.tail.0.load(Ordering::Relaxed)
            || self.peer_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::wrap_copy;

    /// Every position (over three laps, so positions past the end wrap)
    /// and every length up to the ring's size: what goes in at a position
    /// comes out at it, lands where the model says, and touches nothing
    /// else. Under miri (`scripts/miri.sh`) any access outside either
    /// buffer is an error.
    #[test]
    fn wrapped_copies_land_where_the_model_says_and_nowhere_else() {
        const CAP: usize = 16;
        for pos in 0..3 * CAP as u64 {
            for len in 0..=CAP {
                let mut ring = vec![0xAAu8; CAP];
                let mut src: Vec<u8> = (1..=len as u8).collect();
                // SAFETY: ring is CAP bytes, src len bytes, distinct.
                unsafe {
                    wrap_copy(
                        ring.as_mut_ptr(),
                        CAP as u64,
                        pos,
                        src.as_mut_ptr(),
                        len,
                        true,
                    )
                };
                let mut model = vec![0xAAu8; CAP];
                for (i, b) in src.iter().enumerate() {
                    model[(pos as usize + i) % CAP] = *b;
                }
                assert_eq!(ring, model, "write at {pos}, {len} bytes");
                let mut out = vec![0u8; len];
                // SAFETY: as above.
                unsafe {
                    wrap_copy(
                        ring.as_mut_ptr(),
                        CAP as u64,
                        pos,
                        out.as_mut_ptr(),
                        len,
                        false,
                    )
                };
                assert_eq!(out, src, "read at {pos}, {len} bytes");
            }
        }
    }
}
