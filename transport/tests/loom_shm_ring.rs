//! A `loom` model of the shared-memory ring's protocol (`src/shm.rs`,
//! `src/SHM_RING.md`): the index updates and their orderings, the
//! wrap-around of the data, the Dekker-style sleep/wake handshake, peer
//! death and shutdown. Run with `scripts/loom.sh` (or
//! `RUSTFLAGS="--cfg loom" cargo test -p mproc-transport --test
//! loom_shm_ring --release`).
//!
//! # Why a model
//! The real `ShmChannel` sits on a memfd mapping, eventfds, `poll` and a
//! pidfd: none of them exist under loom, and threading loom's types through
//! them would change the production code for the sake of the test. So the
//! ring's logic is mirrored here line for line, and only the kernel is
//! replaced:
//! * an eventfd is a counter: `signal` adds one, `drain` zeroes it
//!   (`sys::eventfd_signal` / `eventfd_drain`);
//! * `poll` on `[data, peer pidfd, stop]` blocks until one of them is
//!   ready and reports which (`sys::wait_readable` with no timeout); a peer
//!   "exiting" makes its pidfd ready;
//! * the shared memory is one `UnsafeCell` per data byte, so loom reports
//!   any access to the same byte by producer and consumer that is not
//!   ordered by the protocol (a data race), and atomics for the control
//!   words, with the same orderings as the real code.
//!
//! The sleep is unbounded (as in the real code: `wait_readable(.., None)`),
//! so a lost wake-up would show as a deadlock, which loom reports.
//!
//! Mirrored, from `src/shm.rs`: `take` (l. 190–209), `free_space`
//! (l. 211–216), `read` (l. 220–256), `try_read` (l. 258–266),
//! `try_write` (l. 268–292), `wait_writable` (l. 294–323), `shutdown`
//! (l. 325–332), `copy` (l. 169–187), `peer_closed` (l. 158–160). Each
//! statement below carries the same orderings and sits in the same order.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

/// Bytes per ring: tiny, so that a few bytes wrap around and fill it.
const SIZE: u64 = 4;

struct RingCtl {
    head: AtomicU64,
    tail: AtomicU64,
    consumer_waiting: AtomicU32,
    producer_waiting: AtomicU32,
}

/// The segment both sides map.
struct Segment {
    closed: [AtomicU32; 2],
    rings: [RingCtl; 2],
    data: [[UnsafeCell<u8>; SIZE as usize]; 2],
}

/// The kernel objects: four eventfds (`[data0, space0, data1, space1]`),
/// each side's stop eventfd, and whether each process has exited.
#[derive(Default)]
struct KState {
    efd: [u64; 4],
    stop: [bool; 2],
    dead: [bool; 2],
}

#[derive(Default)]
struct Kernel {
    st: Mutex<KState>,
    cv: Condvar,
}

impl Kernel {
    fn signal(&self, efd: usize) {
        self.st.lock().unwrap().efd[efd] += 1;
        self.cv.notify_all();
    }
    fn drain(&self, efd: usize) {
        self.st.lock().unwrap().efd[efd] = 0;
    }
    fn stop(&self, side: usize) {
        self.st.lock().unwrap().stop[side] = true;
        self.cv.notify_all();
    }
    /// The process of `side` exits: its pidfd becomes readable.
    fn exit(&self, side: usize) {
        self.st.lock().unwrap().dead[side] = true;
        self.cv.notify_all();
    }
    /// `poll([efd, pidfd of the peer, own stop])` without a timeout.
    fn wait_readable(&self, efd: usize, side: usize) -> [bool; 3] {
        let mut s = self.st.lock().unwrap();
        loop {
            let r = [s.efd[efd] > 0, s.dead[1 - side], s.stop[side]];
            if r.iter().any(|&x| x) {
                return r;
            }
            s = self.cv.wait(s).unwrap();
        }
    }
}

/// One end, as `ShmChannel`.
struct Chan {
    side: usize,
    seg: Arc<Segment>,
    k: Arc<Kernel>,
}

fn pair() -> (Chan, Chan) {
    let ring = || RingCtl {
        head: AtomicU64::new(0),
        tail: AtomicU64::new(0),
        consumer_waiting: AtomicU32::new(0),
        producer_waiting: AtomicU32::new(0),
    };
    let seg = Arc::new(Segment {
        closed: [AtomicU32::new(0), AtomicU32::new(0)],
        rings: [ring(), ring()],
        data: std::array::from_fn(|_| std::array::from_fn(|_| UnsafeCell::new(0))),
    });
    let k = Arc::new(Kernel::default());
    (
        Chan {
            side: 0,
            seg: seg.clone(),
            k: k.clone(),
        },
        Chan { side: 1, seg, k },
    )
}

impl Chan {
    /// The eventfd a ring's consumer (`space == false`) or producer sleeps on.
    fn efd(ring: usize, space: bool) -> usize {
        ring * 2 + usize::from(space)
    }

    fn peer_closed(&self) -> bool {
        self.seg.closed[1 - self.side].load(Ordering::Acquire) != 0
    }

    fn copy_in(&self, r: usize, pos: u64, buf: &[u8]) {
        for (i, b) in buf.iter().enumerate() {
            let at = ((pos + i as u64) & (SIZE - 1)) as usize;
            // SAFETY: loom's cell checks the access; the pointer is valid.
            self.seg.data[r][at].with_mut(|p| unsafe { *p = *b });
        }
    }

    fn copy_out(&self, r: usize, pos: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            let at = ((pos + i as u64) & (SIZE - 1)) as usize;
            // SAFETY: as in `copy_in`.
            *b = self.seg.data[r][at].with(|p| unsafe { *p });
        }
    }

    fn take(&self, buf: &mut [u8]) -> Option<usize> {
        let r = 1 - self.side;
        let ctl = &self.seg.rings[r];
        let t = ctl.tail.load(Ordering::Relaxed);
        let h = ctl.head.load(Ordering::Acquire);
        let n = ((h - t) as usize).min(buf.len());
        if n == 0 {
            return None;
        }
        self.copy_out(r, t, &mut buf[..n]);
        ctl.tail.store(t + n as u64, Ordering::Release);
        fence(Ordering::SeqCst);
        if ctl.producer_waiting.load(Ordering::Relaxed) != 0 {
            self.k.signal(Self::efd(r, true));
        }
        Some(n)
    }

    fn free_space(&self) -> u64 {
        let ctl = &self.seg.rings[self.side];
        let h = ctl.head.load(Ordering::Relaxed);
        let t = ctl.tail.load(Ordering::Acquire);
        SIZE - (h - t)
    }

    /// `ByteStream::read`.
    fn read(&self, buf: &mut [u8]) -> usize {
        let r = 1 - self.side;
        let ctl = &self.seg.rings[r];
        loop {
            if let Some(n) = self.take(buf) {
                return n;
            }
            if self.peer_closed() {
                return self.take(buf).unwrap_or(0);
            }
            ctl.consumer_waiting.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            let t = ctl.tail.load(Ordering::Relaxed);
            if ctl.head.load(Ordering::Relaxed) != t || self.peer_closed() {
                ctl.consumer_waiting.store(0, Ordering::Relaxed);
                continue;
            }
            let [data, dead, stop] = self.k.wait_readable(Self::efd(r, false), self.side);
            ctl.consumer_waiting.store(0, Ordering::Relaxed);
            if data {
                self.k.drain(Self::efd(r, false));
            }
            if stop {
                return 0;
            }
            if dead {
                return self.take(buf).unwrap_or(0);
            }
        }
    }

    /// `ByteStream::try_write`; `Err` for a peer that shut down.
    fn try_write(&self, buf: &[u8]) -> Result<usize, ()> {
        if self.peer_closed() {
            return Err(());
        }
        let w = self.side;
        let ctl = &self.seg.rings[w];
        let n = (self.free_space() as usize).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let h = ctl.head.load(Ordering::Relaxed);
        self.copy_in(w, h, &buf[..n]);
        ctl.head.store(h + n as u64, Ordering::Release);
        fence(Ordering::SeqCst);
        if ctl.consumer_waiting.load(Ordering::Relaxed) != 0 {
            self.k.signal(Self::efd(w, false));
        }
        Ok(n)
    }

    /// `ByteStream::wait_writable`; `Err` when the peer is gone.
    fn wait_writable(&self) -> Result<(), ()> {
        let w = self.side;
        let ctl = &self.seg.rings[w];
        loop {
            if self.peer_closed() {
                return Err(());
            }
            if self.free_space() > 0 {
                return Ok(());
            }
            ctl.producer_waiting.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if self.free_space() > 0 {
                ctl.producer_waiting.store(0, Ordering::Relaxed);
                return Ok(());
            }
            let [space, dead, stop] = self.k.wait_readable(Self::efd(w, true), self.side);
            ctl.producer_waiting.store(0, Ordering::Relaxed);
            if space {
                self.k.drain(Self::efd(w, true));
            }
            if stop || dead {
                return Err(());
            }
        }
    }

    /// `ByteStream::write_all` (the trait's default method).
    fn write_all(&self, mut buf: &[u8]) -> Result<(), ()> {
        while !buf.is_empty() {
            match self.try_write(buf)? {
                0 => self.wait_writable()?,
                n => buf = &buf[n..],
            }
        }
        Ok(())
    }

    fn shutdown(&self) {
        self.seg.closed[self.side].store(1, Ordering::SeqCst);
        self.k.signal(Self::efd(self.side, false));
        self.k.signal(Self::efd(1 - self.side, true));
        self.k.stop(self.side);
    }

    /// Reads until end of stream (or `limit` bytes).
    fn read_to_end(&self, limit: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < limit {
            let mut buf = [0u8; SIZE as usize];
            match self.read(&mut buf) {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    // Enough to cover every interleaving of these short runs that matters
    // to the two-sided handshake; raising it only adds permutations of the
    // same steps (and time).
    b.preemption_bound = Some(3);
    b.check(f);
}

/// More bytes than the ring holds, so the data wraps and both sides sleep
/// on each other: the producer for space, the consumer for data. Every byte
/// arrives once, in order, with no race on the data and no lost wake-up.
#[test]
fn a_stream_larger_than_the_ring_wraps_and_wakes_both_ways() {
    model(|| {
        let (a, b) = pair();
        let msg = [1u8, 2, 3, 4, 5, 6];
        let t = thread::spawn(move || {
            a.write_all(&msg).unwrap();
            a
        });
        let got = b.read_to_end(msg.len());
        assert_eq!(got, msg);
        drop(t.join().unwrap());
    });
}

/// The producer dies after each of the steps of a write; the consumer gets
/// exactly what was published (nothing of a write that never moved `head`)
/// and then end of stream, and never sleeps for ever.
#[test]
fn a_producer_that_dies_between_two_steps_leaves_no_torn_bytes_and_no_hang() {
    for die_after in 0..4 {
        model(move || {
            let (a, b) = pair();
            let t = thread::spawn(move || {
                // try_write's steps, stopping where the process dies.
                let ctl = &a.seg.rings[0];
                let mut published = 0;
                if die_after >= 1 {
                    let h = ctl.head.load(Ordering::Relaxed);
                    a.copy_in(0, h, &[7, 8]);
                    if die_after >= 2 {
                        ctl.head.store(h + 2, Ordering::Release);
                        published = 2;
                        if die_after >= 3 {
                            fence(Ordering::SeqCst);
                            if ctl.consumer_waiting.load(Ordering::Relaxed) != 0 {
                                a.k.signal(Chan::efd(0, false));
                            }
                        }
                    }
                }
                // Killed: no shutdown, only the pidfd becomes readable.
                a.k.exit(0);
                published
            });
            let got = b.read_to_end(8);
            let published = t.join().unwrap();
            assert_eq!(got, [7, 8][..published], "die_after = {die_after}");
        });
    }
}

/// A consumer blocked in `read` and a producer blocked for space in
/// `wait_writable` both wake when the other side shuts down.
#[test]
fn shutdown_wakes_a_blocked_reader_and_a_blocked_writer() {
    model(|| {
        let (a, b) = pair();
        // Fill a's ring so that a's next write must wait for space.
        a.write_all(&[0; SIZE as usize]).unwrap();
        let t = thread::spawn(move || {
            let r = a.write_all(&[9]);
            (a, r)
        });
        // The reader of that ring shuts down instead of reading: the writer
        // must see its peer gone, whether it was asleep or not yet.
        b.shutdown();
        let (a, r) = t.join().unwrap();
        assert!(r.is_err(), "a write to a shut-down peer must fail");
        // And a reader of a ring its peer shut down drains, then sees EOF.
        assert_eq!(a.read_to_end(8), Vec::<u8>::new());
    });
}

/// Both directions at once: each side writes to the other and reads the
/// other's bytes, with rings that fill (four bytes each way).
#[test]
fn both_directions_at_once() {
    model(|| {
        let (a, b) = pair();
        let t = thread::spawn(move || {
            a.write_all(&[1, 2, 3, 4, 5]).unwrap();
            let got = a.read_to_end(2);
            (a, got)
        });
        b.write_all(&[9, 8]).unwrap();
        let got = b.read_to_end(5);
        assert_eq!(got, [1, 2, 3, 4, 5]);
        let (_a, other) = t.join().unwrap();
        assert_eq!(other, [9, 8]);
    });
}
