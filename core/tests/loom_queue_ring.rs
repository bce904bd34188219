//! A `loom` model of the shared queue's byte ring (`src/shared/ring/`,
//! protocol in `src/shared/README.md`): the packed `head`/`tail` indices and
//! their cached copies, records and skip markers wrapping around the data
//! area, the producer and consumer locks, the futex sleep/wake handshake,
//! and processes that die between two steps. Run with `scripts/loom.sh`
//! (or `RUSTFLAGS="--cfg loom" cargo test -p mproc-core --test
//! loom_queue_ring --release`).
//!
//! # Why a model
//! The real ring lives in a memfd segment mapped per process, locks with a
//! robust futex (`shared/robust.rs`) and sleeps on raw futexes: none of that
//! runs under loom, and routing loom's types through it would change the
//! production code for the test's sake. So the ring's logic is mirrored
//! here statement for statement, with the same orderings, and only the
//! machinery under it is replaced:
//! * the data area is `LEN` cells (`UnsafeCell<u32>`), one per 4 bytes of the
//!   real area: a record header (`[len, skip]`, 8 bytes) is two cells and
//!   records are padded to two cells, as the real ones are to 8 bytes. Loom
//!   reports any unordered access to a cell by two threads (a data race);
//! * the side locks are mutexes. A process killed while holding one is
//!   modelled as a thread that drops it without finishing: that is what the
//!   robust futex gives the next locker (the lock, and no repair: see
//!   "Crash safety" in the README);
//! * a futex is a mutex-protected check of the word and a condition
//!   variable: `wait(word, v)` sleeps only if `word == v` when checked under
//!   the mutex, `wake_all` wakes every sleeper (the kernel's bucket lock
//!   gives the same atomicity). Sleeps are unbounded — the real code sleeps
//!   in 50 ms slices, which would hide a lost wake-up; here a lost wake-up
//!   is a deadlock, which loom reports. The one place the real code counts
//!   on its slices is after a crash (a dead process signals nothing: the
//!   README's "Crash safety"); there the model, once a process has died,
//!   ends every later sleep at once (a slice that ran out) and lets the
//!   others run first;
//! * the adaptive spin before sleeping is left out: it only re-checks, and
//!   the sleep path it skips is the one that must be right.
//! * loom treats `SeqCst` loads, stores and read-modify-writes as
//!   acquire/release (loom's documented limitation), which would let the
//!   two sides of the wake-up handshake each miss the other's write — an
//!   outcome `SeqCst` forbids. Where the real code relies on `SeqCst`
//!   (`waiters.fetch_add` then `ev.load` on one side, `ev.fetch_add` then
//!   `waiters.load` on the other), a `fence(SeqCst)` sits between the two
//!   accesses here; for this store-then-load pattern that forbids exactly
//!   what `SeqCst` accesses forbid.
//! * growth of the data area and giving memory back (`grow.rs`) are not
//!   modelled (the area is at its largest): both run with both locks
//!   held, so nothing is concurrent with them. `rewind` (`grow.rs`), which
//!   lets a record of up to the whole area into an empty ring whatever its
//!   position, is: a producer can die between its steps.
//!
//! Byte counters start a few records short of 2³², so the `u32` positions
//! and item counts wrap during every test, as do positions in the area.
//!
//! Mirrored, from `src/shared/ring/mod.rs`: `need` (l. 154–161), `close`
//! (l. 279–286), `readable` (l. 293–297), `has_room` (l. 302–313),
//! `put_stalled` (l. 330–376), `try_put_locked` without growth (l.
//! 381–483), `get_stalled` (l. 500–555), `try_get_locked` (l. 558–619);
//! from `src/shared/ring/grow.rs`: `rewind` (l. 103–143).
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

/// Cells in the data area (32 bytes of the real ring): a few records fill
/// it and wrap.
const LEN: usize = 8;
/// Header cells (`[u32 len, u32 skip]`).
const REC_HDR: usize = 2;
const SKIP: u32 = u32::MAX;
/// Where the counters start: `u32` positions and counts wrap soon.
const START_BYTES: u32 = u32::MAX - 5;
const START_ITEMS: u32 = u32::MAX - 1;

fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

fn pack(items: u32, bytes: u32) -> u64 {
    (u64::from(items) << 32) | u64::from(bytes)
}

fn record_size(payload: usize) -> usize {
    (payload + REC_HDR + 1) & !1
}

fn need(len: usize, tb: u32, rec: usize) -> usize {
    let contiguous = len - (tb as usize & (len - 1));
    if rec > contiguous {
        contiguous + rec
    } else {
        rec
    }
}

/// A futex's wait queue. `crashed`: a process died, so sleeps end within
/// a slice from now on (see the module docs).
#[derive(Default)]
struct Futex {
    crashed: Mutex<bool>,
    cv: Condvar,
}

impl Futex {
    fn wait(&self, word: &AtomicU32, expected: u32) {
        let g = self.crashed.lock().unwrap();
        if *g {
            // The slice ends: the caller re-checks.
            drop(g);
            thread::yield_now();
        } else if word.load(Ordering::SeqCst) == expected {
            drop(self.cv.wait(g).unwrap());
        }
    }
    fn wake_all(&self) {
        let _g = self.crashed.lock().unwrap();
        self.cv.notify_all();
    }
    fn crash(&self) {
        *self.crashed.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// The control block (`RingCtrl`) and the data area.
struct Ring {
    // prod
    prod_lock: Mutex<()>,
    tail_ev: AtomicU32,
    get_waiters: AtomicU32,
    head_cache: AtomicU64,
    // tail
    tail: AtomicU64,
    // cons
    cons_lock: Mutex<()>,
    head_ev: AtomicU32,
    put_waiters: AtomicU32,
    tail_cache: AtomicU64,
    // head
    head: AtomicU64,
    // misc
    closed: AtomicU32,
    cap: u32,
    data: [UnsafeCell<u32>; LEN],
    /// The kernel's futex queues for `tail_ev` and `head_ev`.
    tail_futex: Futex,
    head_futex: Futex,
}

#[derive(Debug, PartialEq)]
enum RingError {
    Closed,
}

/// How far a put or get goes before its process dies.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Die {
    Never,
    /// A put: after writing the skip marker, before committing it.
    AfterSkipWrite,
    /// A put: after committing the skip, before writing the record.
    AfterSkipCommit,
    /// A put: after writing the record, before committing it.
    AfterRecordWrite,
    /// A get: after decoding the record, before moving `head`.
    AfterDecode,
    /// A rewind: after writing its skip marker.
    RewindAfterWrite,
    /// A rewind: after committing the marker (`tail`).
    RewindAfterTail,
    /// A rewind: after moving the cached tail, before passing the marker.
    RewindAfterCache,
}

impl Ring {
    fn new(cap: u32) -> Ring {
        let at = pack(START_ITEMS, START_BYTES);
        Ring {
            prod_lock: Mutex::new(()),
            tail_ev: AtomicU32::new(0),
            get_waiters: AtomicU32::new(0),
            head_cache: AtomicU64::new(at),
            tail: AtomicU64::new(at),
            cons_lock: Mutex::new(()),
            head_ev: AtomicU32::new(0),
            put_waiters: AtomicU32::new(0),
            tail_cache: AtomicU64::new(at),
            head: AtomicU64::new(at),
            closed: AtomicU32::new(0),
            cap,
            data: std::array::from_fn(|_| UnsafeCell::new(0)),
            tail_futex: Futex::default(),
            head_futex: Futex::default(),
        }
    }

    fn write(&self, pos: usize, v: u32) {
        // SAFETY: loom's cell checks the access; the pointer is valid.
        self.data[pos].with_mut(|p| unsafe { *p = v });
    }

    fn read(&self, pos: usize) -> u32 {
        // SAFETY: as in `write`.
        self.data[pos].with(|p| unsafe { *p })
    }

    /// A process died: sleepers re-check within a slice (see the module
    /// docs).
    fn crash(&self) {
        self.tail_futex.crash();
        self.head_futex.crash();
    }

    fn close(&self) {
        self.closed.store(1, Ordering::SeqCst);
        self.tail_ev.fetch_add(1, Ordering::SeqCst);
        self.head_ev.fetch_add(1, Ordering::SeqCst);
        self.tail_futex.wake_all();
        self.head_futex.wake_all();
    }

    fn readable(&self) -> bool {
        let (_, hb) = unpack(self.head.load(Ordering::Relaxed));
        let (_, tb) = unpack(self.tail.load(Ordering::Acquire));
        hb != tb
    }

    fn has_room(&self, rec: usize) -> bool {
        let (ti, tb) = unpack(self.tail.load(Ordering::Relaxed));
        let (hi, hb) = unpack(self.head.load(Ordering::Acquire));
        if self.cap != 0 && ti.wrapping_sub(hi) >= self.cap {
            return false;
        }
        let used = tb.wrapping_sub(hb) as usize;
        rec <= LEN && (used == 0 || need(LEN, tb, rec) <= LEN - used)
    }

    /// `put_stalled`, with `die` in place of the stall hook: `Ok(false)`
    /// when the process died partway.
    fn put(&self, payload: &[u32], die: Die) -> Result<bool, RingError> {
        let rec = record_size(payload.len());
        assert!(rec <= LEN);
        loop {
            if self.closed.load(Ordering::Acquire) != 0 {
                return Err(RingError::Closed);
            }
            let held = self.prod_lock.lock().unwrap();
            match self.try_put_locked(payload, rec, die) {
                Some(true) => {
                    drop(held);
                    self.tail_ev.fetch_add(1, Ordering::SeqCst);
                    fence(Ordering::SeqCst); // see the module docs
                    if self.get_waiters.load(Ordering::SeqCst) > 0 {
                        self.tail_futex.wake_all();
                    }
                    return Ok(true);
                }
                // Died: the lock is recovered by the next locker.
                None => {
                    drop(held);
                    self.crash();
                    return Ok(false);
                }
                Some(false) => {}
            }
            self.put_waiters.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst); // see the module docs
            let ev = self.head_ev.load(Ordering::SeqCst);
            let room = self.has_room(rec) || self.closed.load(Ordering::SeqCst) != 0;
            drop(held);
            if !room {
                self.head_futex.wait(&self.head_ev, ev);
            }
            self.put_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// `try_put_locked` (no growth: the area is at its maximum). `None`
    /// when the process died partway.
    fn try_put_locked(&self, payload: &[u32], rec: usize, die: Die) -> Option<bool> {
        let (ti, old_tb) = unpack(self.tail.load(Ordering::Relaxed));
        let cap = self.cap;
        let fits = |h: u64| {
            let (hi, hb) = unpack(h);
            let free = LEN - old_tb.wrapping_sub(hb) as usize;
            (cap == 0 || ti.wrapping_sub(hi) < cap) && rec <= LEN && need(LEN, old_tb, rec) <= free
        };
        let mut h = self.head_cache.load(Ordering::Relaxed);
        if !fits(h) {
            h = self.head.load(Ordering::Acquire);
            self.head_cache.store(h, Ordering::Relaxed);
        }
        let (hi, _) = unpack(h);
        if cap != 0 && ti.wrapping_sub(hi) >= cap {
            return Some(false);
        }
        if !fits(h) {
            // At its largest (the model does not grow): rewind an empty
            // ring, else wait for consumers.
            return match self.rewind(old_tb, rec, die) {
                Some(true) => self.try_put_locked(payload, rec, die),
                Some(false) => Some(false),
                None => None,
            };
        }
        let (_, hb) = unpack(h);
        let mut tb = old_tb;
        let mut free = LEN - tb.wrapping_sub(hb) as usize;
        let mut pos = tb as usize & (LEN - 1);
        let contiguous = LEN - pos;
        if rec > contiguous {
            if free < contiguous {
                return Some(false);
            }
            self.write(pos, SKIP);
            self.write(pos + 1, contiguous as u32);
            if die == Die::AfterSkipWrite {
                return None;
            }
            tb = tb.wrapping_add(contiguous as u32);
            self.tail.store(pack(ti, tb), Ordering::Release);
            if die == Die::AfterSkipCommit {
                return None;
            }
            free -= contiguous;
            pos = 0;
        }
        if rec > free {
            return Some(false);
        }
        assert!(pos + rec <= LEN);
        self.write(pos, payload.len() as u32);
        self.write(pos + 1, 0);
        for (i, w) in payload.iter().enumerate() {
            self.write(pos + REC_HDR + i, *w);
        }
        if die == Die::AfterRecordWrite {
            return None;
        }
        let new_tb = tb.wrapping_add(rec as u32);
        self.tail
            .store(pack(ti.wrapping_add(1), new_tb), Ordering::Release);
        Some(true)
    }

    /// `grow.rs`'s `rewind`; the caller holds the producer lock. `None`
    /// when the process died partway.
    fn rewind(&self, tb: u32, rec: usize, die: Die) -> Option<bool> {
        let pos = tb as usize & (LEN - 1);
        if pos == 0 || rec > LEN {
            return Some(false);
        }
        let _cons = self.cons_lock.lock().unwrap();
        let (hi, hb) = unpack(self.head.load(Ordering::Acquire));
        if hb != tb {
            return Some(false);
        }
        let (ti, _) = unpack(self.tail.load(Ordering::Relaxed));
        let skip = LEN - pos;
        self.write(pos, SKIP);
        self.write(pos + 1, skip as u32);
        if die == Die::RewindAfterWrite {
            return None;
        }
        let new_tb = tb.wrapping_add(skip as u32);
        self.tail.store(pack(ti, new_tb), Ordering::Release);
        if die == Die::RewindAfterTail {
            return None;
        }
        self.tail_cache.store(pack(ti, new_tb), Ordering::Relaxed);
        if die == Die::RewindAfterCache {
            return None;
        }
        self.head.store(pack(hi, new_tb), Ordering::Release);
        Some(true)
    }

    /// `get_stalled`, with `die` in place of the stall hook; `Ok(None)`
    /// when the process died partway.
    fn get(&self, die: Die) -> Result<Option<Vec<u32>>, RingError> {
        loop {
            let held = self.cons_lock.lock().unwrap();
            match self.try_get_locked(die) {
                Some(Some(r)) => {
                    drop(held);
                    self.head_ev.fetch_add(1, Ordering::SeqCst);
                    fence(Ordering::SeqCst); // see the module docs
                    if self.put_waiters.load(Ordering::SeqCst) > 0 {
                        self.head_futex.wake_all();
                    }
                    return Ok(Some(r));
                }
                Some(None) => {}
                None => {
                    drop(held);
                    self.crash();
                    return Ok(None);
                }
            }

            if self.closed.load(Ordering::Acquire) != 0 {
                return Err(RingError::Closed);
            }
            self.get_waiters.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst); // see the module docs
            let ev = self.tail_ev.load(Ordering::SeqCst);
            let ready = self.readable() || self.closed.load(Ordering::SeqCst) != 0;
            drop(held);
            if !ready {
                self.tail_futex.wait(&self.tail_ev, ev);
            }
            self.get_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// `try_get_locked`: `Some(None)` when empty, `None` when the process
    /// died after decoding.
    fn try_get_locked(&self, die: Die) -> Option<Option<Vec<u32>>> {
        loop {
            let (hi, hb) = unpack(self.head.load(Ordering::Relaxed));
            let (_, cached) = unpack(self.tail_cache.load(Ordering::Relaxed));
            if hb == cached {
                let t = self.tail.load(Ordering::Acquire);
                self.tail_cache.store(t, Ordering::Relaxed);
                if unpack(t).1 == hb {
                    return Some(None);
                }
            }
            let pos = hb as usize & (LEN - 1);
            assert!(pos % 2 == 0 && pos + REC_HDR <= LEN);
            let (n, skip) = (self.read(pos), self.read(pos + 1));
            if n == SKIP {
                let skip = skip as usize;
                assert!(skip >= REC_HDR && skip <= LEN - pos, "bad skip marker");
                self.head
                    .store(pack(hi, hb.wrapping_add(skip as u32)), Ordering::Release);
                continue;
            }
            let n = n as usize;
            let rec = record_size(n);
            assert!(pos + rec <= LEN, "record overruns the data area");
            let payload: Vec<u32> = (0..n).map(|i| self.read(pos + REC_HDR + i)).collect();
            if die == Die::AfterDecode {
                return None;
            }
            self.head.store(
                pack(hi.wrapping_add(1), hb.wrapping_add(rec as u32)),
                Ordering::Release,
            );
            return Some(Some(payload));
        }
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(f);
}

fn get(r: &Ring) -> Vec<u32> {
    r.get(Die::Never).unwrap().unwrap()
}

impl Ring {
    /// A record if one is there, without waiting (passing skip markers).
    fn get_if_any(&self) -> Option<Vec<u32>> {
        let _held = self.cons_lock.lock().unwrap();
        self.try_get_locked(Die::Never).unwrap()
    }
}

/// One producer, one consumer, records of two sizes: the second needs a
/// skip marker to wrap, and each put may wait for the consumer to make
/// room. Items arrive once each, in order, with no race on the data and
/// no lost wake-up.
#[test]
fn records_wrap_with_skip_markers_and_both_sides_wake() {
    model(|| {
        let r = Arc::new(Ring::new(0));
        let p = r.clone();
        let t = thread::spawn(move || {
            p.put(&[1], Die::Never).unwrap();
            p.put(&[2, 2, 2], Die::Never).unwrap();
            p.put(&[3], Die::Never).unwrap();
        });
        assert_eq!(get(&r), [1]);
        assert_eq!(get(&r), [2, 2, 2]);
        assert_eq!(get(&r), [3]);
        t.join().unwrap();
    });
}

/// Two producers (serialized by their lock, sharing `head_cache`) and one
/// consumer: both items arrive, once.
#[test]
fn two_producers_one_consumer() {
    model(|| {
        let r = Arc::new(Ring::new(0));
        let ts: Vec<_> = [[1, 1, 1], [2, 2, 2]]
            .into_iter()
            .map(|item| {
                let p = r.clone();
                thread::spawn(move || p.put(&item, Die::Never).unwrap())
            })
            .collect();
        let mut got = vec![get(&r), get(&r)];
        got.sort();
        assert_eq!(got, [[1, 1, 1], [2, 2, 2]]);
        for t in ts {
            t.join().unwrap();
        }
    });
}

/// One producer and two consumers (serialized by theirs, sharing
/// `tail_cache`): each item goes to exactly one consumer.
#[test]
fn one_producer_two_consumers() {
    model(|| {
        let r = Arc::new(Ring::new(0));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let c = r.clone();
                thread::spawn(move || get(&c))
            })
            .collect();
        r.put(&[1, 1], Die::Never).unwrap();
        r.put(&[2, 2, 2], Die::Never).unwrap();
        let mut got: Vec<Vec<u32>> = ts.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, [vec![1, 1], vec![2, 2, 2]]);
    });
}

/// An item bound of one: the second put waits for the first get (the
/// `cap` check on packed, wrapping item counts).
#[test]
fn a_bounded_ring_waits_for_the_consumer() {
    model(|| {
        let r = Arc::new(Ring::new(1));
        let p = r.clone();
        let t = thread::spawn(move || {
            p.put(&[1], Die::Never).unwrap();
            p.put(&[2], Die::Never).unwrap();
        });
        assert_eq!(get(&r), [1]);
        assert_eq!(get(&r), [2]);
        t.join().unwrap();
    });
}

/// A producer killed between two steps of a put (a record of six cells
/// that needs a skip marker from position 2 or 6, or a rewind): the
/// consumer never sees a torn record, the next producer takes over the lock
/// without repair, and its item arrives. The dead producer's item arrives
/// only if its death point was never reached (its put took another path).
#[test]
fn a_producer_that_dies_mid_put_leaves_no_torn_record() {
    for die in [
        Die::AfterSkipWrite,
        Die::AfterSkipCommit,
        Die::AfterRecordWrite,
        Die::RewindAfterWrite,
        Die::RewindAfterTail,
        Die::RewindAfterCache,
    ] {
        model(move || {
            let r = Arc::new(Ring::new(0));
            let p = r.clone();
            let big = if matches!(die, Die::AfterSkipWrite | Die::AfterSkipCommit) {
                vec![9; 3]
            } else {
                vec![9; 6]
            };
            let want = big.clone();
            let dead = thread::spawn(move || p.put(&big, die).unwrap());
            let p = r.clone();
            let live = thread::spawn(move || p.put(&[1], Die::Never).unwrap());
            let first = get(&r);
            let completed = dead.join().unwrap();
            assert!(live.join().unwrap());
            let mut got = vec![first];
            if completed {
                got.push(get(&r));
            }
            got.sort();
            let mut expected = vec![vec![1]];
            if completed {
                expected.push(want.clone());
                expected.sort();
            }
            assert_eq!(got, expected, "die = {die:?}");
            // Nothing else is there.
            assert!(!r.readable() || r.get_if_any().is_none());
        });
    }
}

/// A consumer killed after decoding a record, before moving `head`: the
/// record is still the oldest and the next consumer takes it.
#[test]
fn a_consumer_that_dies_mid_get_loses_no_item() {
    model(|| {
        let r = Arc::new(Ring::new(0));
        let c = r.clone();
        let dead = thread::spawn(move || c.get(Die::AfterDecode).unwrap());
        r.put(&[7, 7], Die::Never).unwrap();
        assert_eq!(dead.join().unwrap(), None);
        assert_eq!(get(&r), [7, 7]);
    });
}

/// `close` wakes a consumer asleep on an empty ring and a producer asleep
/// on a full one.
#[test]
fn close_wakes_sleepers_on_both_sides() {
    model(|| {
        let r = Arc::new(Ring::new(1));
        r.put(&[1], Die::Never).unwrap();
        let p = r.clone();
        let producer = thread::spawn(move || p.put(&[2], Die::Never));
        let empty = Arc::new(Ring::new(0));
        let c = empty.clone();
        let consumer = thread::spawn(move || c.get(Die::Never));
        r.close();
        empty.close();
        assert_eq!(producer.join().unwrap(), Err(RingError::Closed));
        assert_eq!(consumer.join().unwrap(), Err(RingError::Closed));
    });
}

/// A record as large as the whole area, into an empty ring whose position
/// is not at the start (it would need a skip marker *and* the whole area):
/// the producer rewinds the ring and the record arrives. Before `rewind`
/// existed this put waited for ever, which this model reports as a
/// deadlock (found by this model; `tests/shared_queue.rs` has the same case
/// on a real queue).
#[test]
fn a_record_as_large_as_the_area_fits_an_empty_ring_anywhere() {
    model(|| {
        let r = Arc::new(Ring::new(0));
        let p = r.clone();
        let t = thread::spawn(move || p.put(&[5; 6], Die::Never).unwrap());
        assert_eq!(get(&r), [5; 6]);
        t.join().unwrap();
    });
}
