//! Workload code shared by the criterion benches (`benches/workloads.rs`)
//! and the side-by-side runner (`benches/compare.rs`), so both time exactly
//! the same thing. IDs, inputs and outputs are those of `WORKLOADS.md`, with
//! 2 workers everywhere.
//!
//! Every `wN` function here is the timed body of one repetition: it returns
//! the elapsed time of the workload alone. Starting the pool, warming it and
//! preparing inputs happen before, in the caller, off the clock. Results are
//! checked (a wrong answer fails loudly); timings never are.

// Each bench binary uses a subset of this module.
#![allow(dead_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use mproc::prelude::*;

/// Worker processes in every pool: the workloads are defined for 2.
pub(crate) const WORKERS: usize = 2;
/// Tasks per repetition of the W2 throughput workloads.
pub(crate) const N_TASKS: u64 = 100_000;
/// Sequential round trips per repetition of W1.
pub(crate) const W1_COUNT: u64 = 2000;
/// `cpu_intensive` argument and number of calls in W3.
pub(crate) const W3_N: u64 = 1_000_000;
/// `cpu_intensive` argument in W3-1e8, where the work dominates.
pub(crate) const W3_BIG_N: u64 = 100_000_000;
/// Calls of `cpu_intensive` in W3.
pub(crate) const W3_CALLS: usize = 8;
/// Tasks and payload size of W4s.
pub(crate) const W4S_COUNT: usize = 20_000;
/// Payload size of W4s.
pub(crate) const W4S_SIZE: usize = 1024;
/// Payload size of W4l.
pub(crate) const W4L_SIZE: usize = 64 << 20;

/// `square(x) = x*x`.
#[mproc::task]
pub(crate) fn square(x: u64) -> u64 {
    x * x
}

/// `echo(x) = x`, on a byte payload. `Bytes` travels as one byte string
/// (a memcpy each way); a plain `Vec<u8>` would go through serde element by
/// element, about 1.5 ns per byte in postcard.
#[mproc::task]
pub(crate) fn echo(x: Bytes) -> Bytes {
    x
}

/// `cpu_intensive(n) = sum(i*i for i in 0..n)`, in wrapping arithmetic; the
/// `black_box` keeps the compiler from replacing the loop by a closed form.
#[mproc::task]
pub(crate) fn cpu_intensive(n: u64) -> u64 {
    sum_of_squares(n)
}

/// The loop of [`cpu_intensive`], never inlined, so that W3's two halves
/// run the same machine code. Inlined, it was compiled once into the
/// in-process loop (unrolled eight times) and once into the worker's task
/// runner (not unrolled), and the workers' copy ran about 13% slower — a
/// difference of code generation that W3 then counted as the pool's
/// overhead. Python's W3 calls the one function on both sides.
#[inline(never)]
fn sum_of_squares(n: u64) -> u64 {
    let mut sum = 0u64;
    for i in 0..n {
        let i = black_box(i);
        sum = sum.wrapping_add(i.wrapping_mul(i));
    }
    sum
}

/// The multi-threaded runtime the async workloads run on.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

/// An executor of [`WORKERS`] workers, started and warmed (every worker has
/// run tasks), off the clock.
///
/// The transport is the default unless `MPROC_BENCH_TRANSPORT` names
/// another (`unix`, `pipe` or `shm`), so a workload can be run on each.
pub(crate) fn executor(rt: &tokio::runtime::Runtime) -> Executor {
    let transport = match std::env::var("MPROC_BENCH_TRANSPORT").as_deref() {
        Ok("pipe") => TransportKind::Pipe,
        Ok("shm") => TransportKind::ShmRing,
        Ok("unix") | Err(_) => TransportKind::UnixSocket,
        Ok(other) => panic!("MPROC_BENCH_TRANSPORT={other}: expected unix, pipe or shm"),
    };
    rt.block_on(async {
        let ex = Executor::builder()
            .max_workers(WORKERS)
            .transport(transport)
            .build()
            .await
            .expect("executor starts");
        let handles: Vec<_> = (0..1000).map(|i| ex.submit(square, i)).collect();
        for h in handles {
            h.await.expect("warm-up task");
        }
        for i in 0..200 {
            ex.submit(square, i).await.expect("warm-up task");
        }
        ex
    })
}

/// A pool of [`WORKERS`] workers, started and warmed, off the clock.
pub(crate) fn pool() -> Pool {
    let pool = Pool::new(WORKERS).expect("pool starts");
    pool.map(square, 0..1000).expect("warm-up map");
    for i in 0..200 {
        pool.apply(square, i).expect("warm-up task");
    }
    pool
}

/// Folds results into one number the optimiser cannot drop, and checks the
/// count.
fn consume(results: impl IntoIterator<Item = u64>, expected: u64) {
    let (mut n, mut sum) = (0u64, 0u64);
    for r in results {
        n += 1;
        sum = sum.wrapping_add(r);
    }
    assert_eq!(n, expected, "every task answered");
    black_box(sum);
}

/// W1: `count` sequential `submit(square, i)`, each awaited before the next;
/// the latency of each round trip.
pub(crate) fn w1(rt: &tokio::runtime::Runtime, ex: &Executor, count: u64) -> Vec<Duration> {
    rt.block_on(async {
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count {
            let t = Instant::now();
            let r = ex.submit(square, i).await.expect("square");
            out.push(t.elapsed());
            assert_eq!(r, i * i);
        }
        out
    })
}

/// W1 on the blocking pool: `count` sequential `apply(square, i)`.
pub(crate) fn w1_apply(pool: &Pool, count: u64) -> Vec<Duration> {
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let t = Instant::now();
        let r = pool.apply(square, i).expect("square");
        out.push(t.elapsed());
        assert_eq!(r, i * i);
    }
    out
}

/// W2a: [`N_TASKS`] `submit(square, i)`, then wait for all.
pub(crate) fn w2a(rt: &tokio::runtime::Runtime, ex: &Executor) -> Duration {
    rt.block_on(async {
        let t = Instant::now();
        let handles: Vec<_> = (0..N_TASKS).map(|i| ex.submit(square, i)).collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await.expect("square"));
        }
        let dt = t.elapsed();
        consume(out, N_TASKS);
        dt
    })
}

/// W2b: `Executor::map(square, 0..N)`, default chunking, collected.
pub(crate) fn w2b(rt: &tokio::runtime::Runtime, ex: &Executor) -> Duration {
    rt.block_on(async {
        let t = Instant::now();
        let out: Vec<u64> = ex.map(square, 0..N_TASKS).try_collect().await.expect("map");
        let dt = t.elapsed();
        consume(out, N_TASKS);
        dt
    })
}

/// W2c: `Executor::map_with(square, 0..N, chunksize 1000)`, collected.
pub(crate) fn w2c(rt: &tokio::runtime::Runtime, ex: &Executor) -> Duration {
    rt.block_on(async {
        let t = Instant::now();
        let out: Vec<u64> = ex
            .map_with(square, 0..N_TASKS, MapOptions::default().chunksize(1000))
            .try_collect()
            .await
            .expect("map");
        let dt = t.elapsed();
        consume(out, N_TASKS);
        dt
    })
}

/// W2d: `Pool::map(square, 0..N)`, default chunksize.
pub(crate) fn w2d(pool: &Pool) -> Duration {
    let t = Instant::now();
    let out = pool.map(square, 0..N_TASKS).expect("map");
    let dt = t.elapsed();
    consume(out, N_TASKS);
    dt
}

/// W2e: `Pool::imap_unordered_with(square, 0..N, chunksize 1)`, drained.
pub(crate) fn w2e(pool: &Pool) -> Duration {
    let t = Instant::now();
    let out: Vec<u64> = pool
        .imap_unordered_with(square, 0..N_TASKS, MapOptions::default().chunksize(1))
        .collect::<Result<_, _>>()
        .expect("imap_unordered");
    let dt = t.elapsed();
    consume(out, N_TASKS);
    dt
}

/// W2f: [`N_TASKS`] `Pool::apply_async(square, i)`, then `get` all.
pub(crate) fn w2f(pool: &Pool) -> Duration {
    let t = Instant::now();
    let pending: Vec<_> = (0..N_TASKS).map(|i| pool.apply_async(square, i)).collect();
    let out: Vec<u64> = pending
        .into_iter()
        .map(|r| r.get().expect("square"))
        .collect();
    let dt = t.elapsed();
    consume(out, N_TASKS);
    dt
}

/// W3, first half: [`W3_CALLS`] × `cpu_intensive(W3_N)` in this process,
/// one after the other.
pub(crate) fn w3_sequential() -> Duration {
    w3_sequential_of(W3_N)
}

/// W3's first half with `cpu_intensive(n)`.
pub(crate) fn w3_sequential_of(n: u64) -> Duration {
    let t = Instant::now();
    let out: Vec<u64> = (0..W3_CALLS).map(|_| cpu_intensive(black_box(n))).collect();
    let dt = t.elapsed();
    consume(out, W3_CALLS as u64);
    dt
}

/// W3, second half: the same calls as `Pool::map` on the workers.
pub(crate) fn w3_pool(pool: &Pool) -> Duration {
    w3_pool_of(pool, W3_N)
}

/// W3's second half with `cpu_intensive(n)`.
pub(crate) fn w3_pool_of(pool: &Pool, n: u64) -> Duration {
    let t = Instant::now();
    let out = pool
        .map(cpu_intensive, vec![n; W3_CALLS])
        .expect("cpu_intensive");
    let dt = t.elapsed();
    let expected = cpu_intensive(n);
    assert!(out.iter().all(|&r| r == expected));
    dt
}

/// The W4s inputs: [`W4S_COUNT`] payloads of [`W4S_SIZE`] bytes.
pub(crate) fn w4s_payloads() -> Vec<Bytes> {
    (0..W4S_COUNT)
        .map(|i| Bytes::from(vec![(i % 251) as u8; W4S_SIZE]))
        .collect()
}

/// W4s: `submit(echo, payload)` for every payload, then wait for all. The
/// payloads are moved in (prepared off the clock).
pub(crate) fn w4s(rt: &tokio::runtime::Runtime, ex: &Executor, payloads: Vec<Bytes>) -> Duration {
    let count = payloads.len();
    rt.block_on(async {
        let t = Instant::now();
        let handles: Vec<_> = payloads.into_iter().map(|p| ex.submit(echo, p)).collect();
        let mut out = Vec::with_capacity(count);
        for h in handles {
            out.push(h.await.expect("echo"));
        }
        let dt = t.elapsed();
        assert_eq!(out.len(), count);
        assert!(out.iter().all(|p| p.len() == W4S_SIZE));
        drop(black_box(out));
        dt
    })
}

/// The W4l input: [`W4L_SIZE`] bytes.
pub(crate) fn w4l_payload() -> Bytes {
    Bytes::from((0..W4L_SIZE).map(|i| i as u8).collect::<Vec<u8>>())
}

/// W4l: one `submit(echo, payload)`, awaited: the round trip of 64 MiB. The
/// payload is moved in (a copy prepared off the clock) and the answer is
/// dropped off the clock.
pub(crate) fn w4l(rt: &tokio::runtime::Runtime, ex: &Executor, payload: Bytes) -> Duration {
    let len = payload.len();
    let (dt, back) = rt.block_on(async {
        let t = Instant::now();
        let back = ex.submit(echo, payload).await.expect("echo");
        (t.elapsed(), back)
    });
    assert_eq!(back.len(), len);
    assert_eq!(back[len - 1], (len - 1) as u8);
    dt
}

/// Checks a shared buffer in the worker without reading it through (its
/// length and its two ends) and hands the same buffer back by handle.
#[mproc::task]
pub(crate) fn pass_shared(x: mproc::SharedBytes) -> (mproc::SharedBytes, usize, u8, u8) {
    let (first, last) = (x[0], x[x.len() - 1]);
    (x.clone(), x.len(), first, last)
}

/// W4l-shared, handle only: the 64 MiB `SharedBytes` made beforehand (off
/// the clock, as a program holding a table would), sent to a worker, which
/// reads its ends, and handed back. Returns the round trip.
pub(crate) fn w4l_shared_handle(
    rt: &tokio::runtime::Runtime,
    ex: &Executor,
    shared: &mproc::SharedBytes,
) -> Duration {
    let len = shared.len();
    let (dt, back, seen) = rt.block_on(async {
        let t = Instant::now();
        let (back, n, first, last) = ex.submit(pass_shared, shared.clone()).await.expect("echo");
        (t.elapsed(), back, (n, first, last))
    });
    assert_eq!(seen, (len, shared[0], shared[len - 1]));
    assert_eq!(back.len(), len);
    dt
}

/// Reads every byte of a shared buffer in the worker (so the pages are
/// really touched there) and hands the same buffer back by handle.
#[mproc::task]
pub(crate) fn echo_shared(x: mproc::SharedBytes) -> (mproc::SharedBytes, u64) {
    let sum = x.iter().fold(0u64, |a, &b| a.wrapping_add(u64::from(b)));
    (x, sum)
}

/// W4l-shared: the same 64 MiB as W4l, put into a `SharedBytes` (one copy,
/// on the clock), read through in a worker, handed back and read through
/// here. Returns the round trip.
pub(crate) fn w4l_shared(rt: &tokio::runtime::Runtime, ex: &Executor, payload: &[u8]) -> Duration {
    let len = payload.len();
    let (dt, back, sum) = rt.block_on(async {
        let t = Instant::now();
        let shared = mproc::SharedBytes::from_slice(payload).expect("shared buffer");
        let (back, sum) = ex.submit(echo_shared, shared).await.expect("echo");
        let here = back.iter().fold(0u64, |a, &b| a.wrapping_add(u64::from(b)));
        (t.elapsed(), back, (sum, here))
    });
    assert_eq!(back.len(), len);
    assert_eq!(sum.0, sum.1);
    dt
}

/// One in-process copy of `src` into `dst` (already faulted in), timed.
pub(crate) fn memcpy(dst: &mut [u8], src: &[u8]) -> Duration {
    let t = Instant::now();
    dst.copy_from_slice(black_box(src));
    black_box(&mut *dst);
    t.elapsed()
}

/// Operations of each kind in W8.
pub(crate) const W8_COUNT: u32 = 10_000;

/// W8's child: [`W8_COUNT`] dict sets then as many gets, then as many list
/// appends; sends back the seconds each part took (as Python's mirror does).
#[mproc::task]
pub(crate) fn w8_child(
    d: DictProxy<u32, u32>,
    l: ListProxy<u32>,
    n: u32,
    out: Connection<(f64, f64)>,
) {
    out.send(&w8_ops(&d, &l, n)).expect("report");
}

/// W8's timed part: `n` dict sets, `n` gets, then `n` list appends;
/// returns (dict seconds, list seconds).
fn w8_ops(d: &DictProxy<u32, u32>, l: &ListProxy<u32>, n: u32) -> (f64, f64) {
    let t = Instant::now();
    for i in 0..n {
        d.insert(i, i).expect("dict set");
    }
    for i in 0..n {
        assert_eq!(d.get(&i).expect("dict get"), Some(i));
    }
    let t_dict = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n {
        l.push(i).expect("list append");
    }
    (t_dict, t.elapsed().as_secs_f64())
}

/// W8: one repetition on a running manager: fresh dict and list, one child
/// `Process`; returns (dict seconds, list seconds) as the child timed them.
pub(crate) fn w8(manager: &Manager) -> (f64, f64) {
    let d: DictProxy<u32, u32> = manager.dict().expect("dict");
    let l: ListProxy<u32> = manager.list().expect("list");
    let (r, w) = pipe::<(f64, f64)>().expect("pipe");
    let p = Process::new(w8_child, (d, l.clone(), W8_COUNT, w))
        .start()
        .expect("start");
    let times = r.recv().expect("W8 child report");
    p.join().expect("join");
    assert_eq!(l.len().expect("len"), W8_COUNT as usize);
    times
}

/// W8 over TCP: the child connects to a served manager with its key and
/// works on the named dict and list, every operation a round trip.
#[mproc::task]
#[allow(deprecated)] // a short key: `Vec<u8>` costs nothing here
pub(crate) fn w8_remote_child(addr: String, key: Vec<u8>, n: u32, out: Connection<(f64, f64)>) {
    let m = Manager::connect(addr.as_str(), &key).expect("connect");
    let d: DictProxy<u32, u32> = m.dict_named("w8-dict").expect("dict");
    let l: ListProxy<u32> = m.list_named("w8-list").expect("list");
    d.clear().expect("clear");
    l.clear().expect("clear");
    out.send(&w8_ops(&d, &l, n)).expect("report");
}

/// One W8 repetition through the server over TCP loopback (`manager` was
/// made by `Manager::serve` with `key`).
pub(crate) fn w8_remote(manager: &Manager, key: &[u8]) -> (f64, f64) {
    let (r, w) = pipe::<(f64, f64)>().expect("pipe");
    let args = (manager.address().to_string(), key.to_vec(), W8_COUNT, w);
    let p = Process::new(w8_remote_child, args).start().expect("start");
    let times = r.recv().expect("W8 child report");
    p.join().expect("join");
    times
}

// ----- actors: A1–A3 ------------------------------------------------------

/// Sequential calls per repetition of A1.
pub(crate) const A1_COUNT: u64 = 2000;
/// Calls in flight at once in A2 (as Ray's "1:1 actor calls async": 1000
/// calls made, then all awaited).
pub(crate) const A2_IN_FLIGHT: u64 = 1000;
/// Batches of [`A2_IN_FLIGHT`] calls per repetition of A2.
pub(crate) const A2_BATCHES: u64 = 20;

/// The actor of A1–A3: a counter whose one method does next to nothing, so
/// that the figures are those of the call itself.
#[mproc::actor]
pub(crate) struct Tally {
    n: u64,
}

#[mproc::actor]
impl Tally {
    pub(crate) fn new(start: u64) -> Self {
        Tally { n: start }
    }
    pub(crate) fn add(&mut self, x: u64) -> u64 {
        self.n = self.n.wrapping_add(x);
        self.n
    }
}

/// A `Tally` actor on `ex`, started and warmed (connected, and a few
/// thousand calls answered), off the clock.
pub(crate) fn actor(rt: &tokio::runtime::Runtime, ex: &Executor) -> ActorRef<Tally> {
    rt.block_on(async {
        let a = Tally::spawn(ex, 0).await.expect("actor starts");
        let calls: Vec<_> = (0..2000).map(|_| a.add(1)).collect();
        for c in calls {
            c.await.expect("warm-up call");
        }
        for _ in 0..200 {
            a.add(1).await.expect("warm-up call");
        }
        a
    })
}

/// A1: `count` sequential calls to one actor, each awaited before the
/// next; the latency of each.
pub(crate) fn a1(rt: &tokio::runtime::Runtime, a: &ActorRef<Tally>, count: u64) -> Vec<Duration> {
    rt.block_on(async {
        let mut out = Vec::with_capacity(count as usize);
        let mut last = a.add(0).await.expect("add");
        for _ in 0..count {
            let t = Instant::now();
            let r = a.add(1).await.expect("add");
            out.push(t.elapsed());
            assert_eq!(r, last.wrapping_add(1));
            last = r;
        }
        out
    })
}

/// A2: [`A2_BATCHES`] × ([`A2_IN_FLIGHT`] calls made to one actor, then
/// all awaited); the time of the whole.
pub(crate) fn a2(rt: &tokio::runtime::Runtime, a: &ActorRef<Tally>) -> Duration {
    rt.block_on(async {
        let first = a.add(0).await.expect("add");
        let t = Instant::now();
        let mut last = first;
        for _ in 0..A2_BATCHES {
            let calls: Vec<_> = (0..A2_IN_FLIGHT).map(|_| a.add(1)).collect();
            for c in calls {
                last = c.await.expect("add");
            }
        }
        let dt = t.elapsed();
        assert_eq!(last, first.wrapping_add(A2_BATCHES * A2_IN_FLIGHT));
        dt
    })
}

/// A3: an actor spawned on `ex` until its first reply; stopped off the
/// clock.
pub(crate) fn a3(rt: &tokio::runtime::Runtime, ex: &Executor) -> Duration {
    rt.block_on(async {
        let t = Instant::now();
        let a = Tally::spawn(ex, 41).await.expect("actor starts");
        let r = a.add(1).await.expect("first reply");
        let dt = t.elapsed();
        assert_eq!(r, 42);
        a.stop().await.expect("stop");
        dt
    })
}

/// Actors spawned at once in A3's rate.
pub(crate) const A3_AT_ONCE: u64 = 16;

/// A3's rate: [`A3_AT_ONCE`] actors spawned on `ex` at once, until each has
/// replied once; stopped off the clock.
pub(crate) fn a3_many(rt: &tokio::runtime::Runtime, ex: &Executor) -> Duration {
    rt.block_on(async {
        let t = Instant::now();
        let spawns: Vec<_> = (0..A3_AT_ONCE)
            .map(|i| tokio::spawn(Tally::spawn(ex, i)))
            .collect();
        let mut actors = Vec::with_capacity(spawns.len());
        for s in spawns {
            actors.push(s.await.expect("join").expect("actor starts"));
        }
        let replies: Vec<_> = actors.iter().map(|a| a.add(1)).collect();
        for (i, r) in replies.into_iter().enumerate() {
            assert_eq!(r.await.expect("first reply"), i as u64 + 1);
        }
        let dt = t.elapsed();
        for a in &actors {
            a.stop().await.expect("stop");
        }
        dt
    })
}
