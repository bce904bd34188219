//! Criterion benches for the actor workloads, one group each:
//!
//! * **A1**: sequential calls to one actor, each awaited before the next
//!   (Ray's "1:1 actor calls sync");
//! * **A2**: 1000 calls made to one actor, then all awaited (Ray's "1:1
//!   actor calls async");
//! * **A3**: an actor spawned until its first reply, per start method (to
//!   set beside W5, a pool's start to its first result, in
//!   `benches/process.rs`); and 16 spawned at once until each has replied,
//!   the rate of creations.
//!
//! The actor of A1/A2 is started and warmed outside the timed loop
//! (`iter_custom` times only the workload body from `benches/common`, the
//! same code the side-by-side runner `benches/compare.rs` times). Run with
//! `cargo bench --bench actors`; `python3 scripts/compare.py` reports the
//! same workloads next to the quoted Ray figures.

mod common;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mproc::prelude::*;

use common::*;

fn calls(c: &mut Criterion) {
    let rt = runtime();
    let ex = executor(&rt);
    let actor = actor(&rt, &ex);

    let mut g = c.benchmark_group("A1");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sequential_call", |b| {
        b.iter_custom(|iters| a1(&rt, &actor, iters).into_iter().sum())
    });
    g.finish();

    let mut g = c.benchmark_group("A2");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(A2_BATCHES * A2_IN_FLIGHT));
    g.bench_function("1000_in_flight", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| a2(&rt, &actor)).sum())
    });
    g.finish();

    rt.block_on(actor.stop()).expect("stop");
    rt.block_on(ex.shutdown());
}

fn creation(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("A3");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, method) in [
        ("spawn", StartMethod::Spawn),
        ("forkserver", StartMethod::Forkserver),
        ("fork", StartMethod::Fork),
    ] {
        // A fresh executor per sample, off the clock: each actor that ended
        // keeps its tombstone (a thread and a socket) until its executor
        // does, which would weigh on later samples.
        let sample = |iters: u64, body: fn(&tokio::runtime::Runtime, &Executor) -> Duration| {
            let ex = rt
                .block_on(
                    Executor::builder()
                        .max_workers(WORKERS)
                        .start_method(method)
                        .build(),
                )
                .expect("executor starts");
            a3(&rt, &ex);
            let took = (0..iters).map(|_| body(&rt, &ex)).sum();
            rt.block_on(ex.shutdown());
            took
        };
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("spawn_to_first_reply", name), |b| {
            b.iter_custom(|iters| sample(iters, a3))
        });
        // Not under fork: a child forked while another thread of this
        // process starts or ends (as many do when 16 actors start at once)
        // can hang in std's thread start-up; see BENCHMARKS.md, "Actors".
        if method != StartMethod::Fork {
            g.throughput(Throughput::Elements(A3_AT_ONCE));
            g.bench_function(BenchmarkId::new("16_spawned_at_once", name), |b| {
                b.iter_custom(|iters| sample(iters, a3_many))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // No HTML plots: the side-by-side runner enables plotters' ab_glyph text,
    // which needs a registered font that criterion does not register.
    config = Criterion::default().without_plots();
    targets = calls, creation
}
criterion_main!(benches);
