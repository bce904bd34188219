//! Criterion benches for workloads W2b–W2f, W3, W4s, W4l and W8 of
//! `WORKLOADS.md`, one group per workload (W1 and W2a are in
//! `benches/executor.rs`). 2 warm workers throughout; pool start-up, warm-up
//! and input preparation are outside the timed loop (`iter_custom` times only
//! the workload body from `benches/common`, the same code the side-by-side
//! runner `benches/compare.rs` times).
//!
//! Run with `cargo bench --bench workloads`; for the comparison with Python
//! run `python3 scripts/compare.py`.

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};

use common::*;

/// Sums `reps` repetitions of one workload body into criterion's total.
fn repeat(iters: u64, mut rep: impl FnMut() -> Duration) -> Duration {
    (0..iters).map(|_| rep()).sum()
}

/// A group for a workload whose repetitions take a good fraction of a
/// second: few samples, enough time for them.
fn slow_group<'a>(
    c: &'a mut Criterion,
    id: &str,
    elements: u64,
) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(id);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(elements));
    g
}

fn executor_maps(c: &mut Criterion) {
    let rt = runtime();
    let ex = executor(&rt);

    let mut g = slow_group(c, "W2b", N_TASKS);
    g.bench_function("executor_map_default", |b| {
        b.iter_custom(|iters| repeat(iters, || w2b(&rt, &ex)))
    });
    g.finish();

    let mut g = slow_group(c, "W2c", N_TASKS);
    g.bench_function("executor_map_chunksize_1000", |b| {
        b.iter_custom(|iters| repeat(iters, || w2c(&rt, &ex)))
    });
    g.finish();

    rt.block_on(ex.shutdown());
}

fn pool_maps(c: &mut Criterion) {
    let pool = pool();

    let mut g = slow_group(c, "W2d", N_TASKS);
    g.bench_function("pool_map_default_chunksize", |b| {
        b.iter_custom(|iters| repeat(iters, || w2d(&pool)))
    });
    g.finish();

    let mut g = slow_group(c, "W2e", N_TASKS);
    g.bench_function("pool_imap_unordered_chunksize_1", |b| {
        b.iter_custom(|iters| repeat(iters, || w2e(&pool)))
    });
    g.finish();

    let mut g = slow_group(c, "W2f", N_TASKS);
    g.bench_function("pool_apply_async_then_get", |b| {
        b.iter_custom(|iters| repeat(iters, || w2f(&pool)))
    });
    g.finish();

    pool.close();
    pool.join();
}

fn cpu_bound(c: &mut Criterion) {
    let pool = pool();
    let mut g = slow_group(c, "W3", W3_CALLS as u64);
    g.bench_function("sequential_in_process", |b| {
        b.iter_custom(|iters| repeat(iters, w3_sequential))
    });
    g.bench_function("pool_map_2_workers", |b| {
        b.iter_custom(|iters| repeat(iters, || w3_pool(&pool)))
    });
    g.finish();
    pool.close();
    pool.join();
}

fn echo_payloads(c: &mut Criterion) {
    let rt = runtime();
    let ex = executor(&rt);

    let mut g = slow_group(c, "W4s", W4S_COUNT as u64);
    g.bench_function("echo_1kib_x20000", |b| {
        b.iter_custom(|iters| {
            repeat(iters, || {
                let payloads = w4s_payloads();
                w4s(&rt, &ex, payloads)
            })
        })
    });
    g.finish();

    let payload = w4l_payload();
    let mut dst = payload.clone();
    let mut g = slow_group(c, "W4l", 1);
    // Bytes moved: 64 MiB there and 64 MiB back; memcpy moves 64 MiB once.
    g.throughput(Throughput::Bytes(2 * W4L_SIZE as u64));
    g.bench_function("echo_64mib_round_trip", |b| {
        b.iter_custom(|iters| {
            repeat(iters, || {
                let copy = payload.clone();
                w4l(&rt, &ex, copy)
            })
        })
    });
    g.throughput(Throughput::Bytes(W4L_SIZE as u64));
    g.bench_function("memcpy_64mib_in_process", |b| {
        b.iter_custom(|iters| repeat(iters, || memcpy(&mut dst, &payload)))
    });
    g.finish();

    rt.block_on(ex.shutdown());
}

/// W8: a child process does 10 000 dict sets + 10 000 gets, then 10 000
/// list appends, on a running `Manager`; the child's own timings are
/// reported (the process start is off the clock).
fn manager(c: &mut Criterion) {
    let m = mproc::Manager::start().expect("manager");
    let _ = w8(&m);
    let mut g = slow_group(c, "W8", 2 * u64::from(W8_COUNT));
    g.bench_function("dict_set_get_2x10000", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| Duration::from_secs_f64(w8(&m).0)).sum())
    });
    g.throughput(Throughput::Elements(u64::from(W8_COUNT)));
    g.bench_function("list_append_10000", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| Duration::from_secs_f64(w8(&m).1)).sum())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // No HTML plots: the side-by-side runner enables plotters' ab_glyph text,
    // which needs a registered font that criterion does not register.
    config = Criterion::default().without_plots();
    targets = executor_maps, pool_maps, cpu_bound, echo_payloads, manager
}
criterion_main!(benches);
