//! Executor workloads W1 and W2a of `WORKLOADS.md`, with the raw floor of the
//! same mechanism measured by the same binary in the same run.
//!
//! * **W1**: 2 warm workers; sequential `submit(square, i)`, each awaited
//!   before the next. Reported by criterion (time per round trip) and, as
//!   the workload asks, as median and p99 of 2000 individually timed round
//!   trips, interleaved in rounds with a raw socketpair ping-pong between two
//!   threads (the floor: two blocking hand-offs, no framework).
//! * **W2a**: 100 000 `submit(square, i)`, then wait for all (tasks/s).
//!
//! Worker start-up is outside every timed loop. Run with
//! `cargo bench --bench executor`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mproc::prelude::*;

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

/// An echo thread on the other end of a socketpair: the raw floor of a
/// blocking round trip.
struct RawEcho {
    ours: UnixStream,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawEcho {
    fn start() -> Self {
        let (ours, mut theirs) = UnixStream::pair().expect("socketpair");
        let thread = std::thread::spawn(move || {
            let mut b = [0u8; 8];
            while theirs.read_exact(&mut b).is_ok() {
                if theirs.write_all(&b).is_err() {
                    break;
                }
            }
        });
        RawEcho {
            ours,
            thread: Some(thread),
        }
    }

    fn round_trip(&mut self, v: u64) -> u64 {
        self.ours.write_all(&v.to_le_bytes()).expect("write");
        let mut b = [0u8; 8];
        self.ours.read_exact(&mut b).expect("read");
        u64::from_le_bytes(b)
    }
}

impl Drop for RawEcho {
    fn drop(&mut self) {
        let _ = self.ours.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn w1(c: &mut Criterion) {
    let rt = runtime();
    let ex = rt.block_on(Executor::new(2)).expect("executor");
    let mut raw = RawEcho::start();
    // Warm both paths.
    rt.block_on(async {
        for i in 0..500 {
            ex.submit(square, i).await.unwrap();
        }
    });
    for i in 0..500 {
        raw.round_trip(i);
    }

    // The workload's own figure: 2000 timed round trips, A B A B.
    let (mut ours, mut floor) = (Vec::with_capacity(2000), Vec::with_capacity(2000));
    for round in 0..10u64 {
        rt.block_on(async {
            for i in 0..200 {
                let t = Instant::now();
                let r = ex.submit(square, round * 1000 + i).await.unwrap();
                ours.push(t.elapsed());
                std::hint::black_box(r);
            }
        });
        for i in 0..200 {
            let t = Instant::now();
            std::hint::black_box(raw.round_trip(i));
            floor.push(t.elapsed());
        }
    }
    ours.sort();
    floor.sort();
    let (m, p99) = (percentile(&ours, 0.5), percentile(&ours, 0.99));
    let (fm, fp99) = (percentile(&floor, 0.5), percentile(&floor, 0.99));
    println!(
        "W1 round trip over 2000: mproc median {:.1} µs p99 {:.1} µs | raw socketpair median {:.1} µs p99 {:.1} µs | median ratio {:.2}",
        m.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        fm.as_secs_f64() * 1e6,
        fp99.as_secs_f64() * 1e6,
        m.as_secs_f64() / fm.as_secs_f64()
    );

    let mut g = c.benchmark_group("W1");
    g.bench_function("executor_submit_await", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for i in 0..iters {
                    std::hint::black_box(ex.submit(square, i).await.unwrap());
                }
                t.elapsed()
            })
        })
    });
    g.bench_function("raw_socketpair_pingpong", |b| {
        b.iter(|| raw.round_trip(std::hint::black_box(7)))
    });
    g.finish();
    rt.block_on(ex.shutdown());
}

fn w2a(c: &mut Criterion) {
    const N: u64 = 100_000;
    let rt = runtime();
    let ex = rt.block_on(Executor::new(2)).expect("executor");
    let mut g = c.benchmark_group("W2a");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    g.bench_function("submit_100k_then_wait", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    let handles: Vec<_> = (0..N).map(|i| ex.submit(square, i)).collect();
                    let mut sum = 0u64;
                    for h in handles {
                        sum = sum.wrapping_add(h.await.unwrap());
                    }
                    std::hint::black_box(sum);
                }
                t.elapsed()
            })
        })
    });
    g.finish();
    rt.block_on(ex.shutdown());
}

criterion_group!(benches, w1, w2a);
criterion_main!(benches);
