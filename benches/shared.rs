//! Shared-object workloads W6p, W6q and W7 of `WORKLOADS.md`, between the
//! parent and warm `Executor` workers (process start-up is outside every
//! timed loop).
//!
//! * **W6p**: `Pipe` ping-pong of a small integer, parent ↔ child, 10 000
//!   round trips; median µs (Python: 37 µs).
//! * **W6q**: one producer process → one consumer process, 200 000 small
//!   ints through a `Queue`; items/s (Python: 193 000).
//! * **W7**: 4 processes × 10 000 increments of a shared `Value<i32>` under
//!   its lock; increments/s, final value checked (Python: 393 000).
//!
//! Each prints the workload's own figure first, then criterion measures the
//! same loop. Run with `cargo bench --bench shared`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mproc::prelude::*;

/// Echoes every integer back until it receives `u64::MAX` or the pipe ends.
#[mproc::task]
fn echo(conn: Connection<u64>) -> u64 {
    let mut n = 0;
    while let Ok(v) = conn.recv() {
        if v == u64::MAX || conn.send(&v).is_err() {
            break;
        }
        n += 1;
    }
    n
}

#[mproc::task]
fn produce(q: Queue<u64>, n: u64) {
    for i in 0..n {
        q.put(i).expect("put");
    }
}

#[mproc::task]
fn consume(q: Queue<u64>, n: u64) -> u64 {
    let mut sum = 0u64;
    for _ in 0..n {
        sum = sum.wrapping_add(q.get().expect("get"));
    }
    sum
}

#[mproc::task]
fn increment(v: Value<i32>, n: u32) {
    for _ in 0..n {
        *v.get_lock() += 1;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

fn w6p(c: &mut Criterion) {
    const N: usize = 10_000;
    let rt = runtime();
    let ex = rt.block_on(Executor::new(1)).expect("executor");
    let (here, there) = pipe::<u64>().expect("pipe");
    let child = ex.submit(echo, there);
    for i in 0..1000 {
        here.send(&i).unwrap();
        assert_eq!(here.recv().unwrap(), i);
    }
    let mut times = Vec::with_capacity(N);
    for i in 0..N as u64 {
        let t = Instant::now();
        here.send(&i).unwrap();
        let r = here.recv().unwrap();
        times.push(t.elapsed());
        assert_eq!(r, i);
    }
    times.sort();
    let med = times[N / 2];
    let p90 = times[N * 9 / 10];
    let p99 = times[N * 99 / 100];
    let mean = times.iter().sum::<Duration>() / N as u32;
    println!(
        "W6p pipe ping-pong over {N}: median {:.2} µs, p90 {:.2} µs, p99 {:.2} µs, mean {:.2} µs (Python 37 µs, target ≤ 15 µs)",
        med.as_secs_f64() * 1e6,
        p90.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6
    );
    let mut g = c.benchmark_group("W6p");
    g.bench_function("pipe_round_trip", |b| {
        b.iter(|| {
            here.send(&7).unwrap();
            std::hint::black_box(here.recv().unwrap())
        })
    });
    g.finish();
    here.send(&u64::MAX).unwrap();
    rt.block_on(child).expect("echo task");
    rt.block_on(ex.shutdown());
}

fn queue_run(rt: &tokio::runtime::Runtime, ex: &Executor, n: u64) -> Duration {
    let q: Queue<u64> = Queue::new().expect("queue");
    rt.block_on(async {
        let t = Instant::now();
        let cons = ex.submit(consume, (q.clone(), n));
        let prod = ex.submit(produce, (q.clone(), n));
        prod.await.expect("producer");
        let sum = cons.await.expect("consumer");
        let el = t.elapsed();
        assert_eq!(sum, n * (n - 1) / 2);
        el
    })
}

fn w6q(c: &mut Criterion) {
    const N: u64 = 200_000;
    let rt = runtime();
    let ex = rt.block_on(Executor::new(2)).expect("executor");
    queue_run(&rt, &ex, 10_000);
    let mut rates: Vec<f64> = (0..5)
        .map(|_| N as f64 / queue_run(&rt, &ex, N).as_secs_f64())
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "W6q queue 1 producer → 1 consumer, {N} ints: median {:.0} items/s over 5 runs (min {:.0}, max {:.0}; Python 193 000, target ≥ 1 930 000)",
        rates[2], rates[0], rates[4]
    );
    let mut g = c.benchmark_group("W6q");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    g.bench_function("queue_200k_ints", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| queue_run(&rt, &ex, N)).sum())
    });
    g.finish();
    rt.block_on(ex.shutdown());
}

fn value_run(rt: &tokio::runtime::Runtime, ex: &Executor, n: u32) -> Duration {
    let v = Value::new(0i32).expect("value");
    let el = rt.block_on(async {
        let t = Instant::now();
        let hs: Vec<_> = (0..4)
            .map(|_| ex.submit(increment, (v.clone(), n)))
            .collect();
        for h in hs {
            h.await.expect("increment");
        }
        t.elapsed()
    });
    assert_eq!(v.load(), 4 * n as i32, "lost increments");
    el
}

fn w7(c: &mut Criterion) {
    const N: u32 = 10_000;
    let rt = runtime();
    let ex = rt.block_on(Executor::new(4)).expect("executor");
    value_run(&rt, &ex, 1000);
    let mut rates: Vec<f64> = (0..5)
        .map(|_| f64::from(4 * N) / value_run(&rt, &ex, N).as_secs_f64())
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "W7 4 processes × {N} locked increments: median {:.0} increments/s over 5 runs (min {:.0}, max {:.0}; final == 40000 checked; Python 393 000, target ≥ 3 930 000)",
        rates[2], rates[0], rates[4]
    );
    let mut g = c.benchmark_group("W7");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(4 * N)));
    g.bench_function("value_4x10k_increments", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| value_run(&rt, &ex, N)).sum())
    });
    g.finish();
    rt.block_on(ex.shutdown());
}

criterion_group! {
    name = benches;
    // No HTML plots: the side-by-side runner enables plotters' ab_glyph text,
    // which needs a registered font that criterion does not register.
    config = Criterion::default().without_plots();
    targets = w6p, w6q, w7
}
criterion_main!(benches);
