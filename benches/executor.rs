//! Executor workloads of `WORKLOADS.md` on each transport — W1 (sequential
//! round trip), W2a (100 000 submits) and W4l (64 MiB echo) — with the raw
//! floor of each mechanism measured by the same binary in the same run:
//! 8-byte ping-pong between this process and a forked echo child over a
//! socketpair, a pipe pair and an eventfd pair, and an in-process memcpy of
//! 64 MiB.
//!
//! Worker start-up is outside every timed loop. Run with
//! `cargo bench --bench executor`; the workload figures (median and p99 of
//! 2000 round trips, GB/s) are printed before criterion's own report.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mproc::prelude::*;
use serde_bytes::ByteBuf;

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[mproc::task]
fn echo(b: ByteBuf) -> ByteBuf {
    b
}

const KINDS: [(TransportKind, &str); 3] = [
    (TransportKind::UnixSocket, "unix_socket"),
    (TransportKind::Pipe, "pipe"),
    (TransportKind::ShmRing, "shm_ring"),
];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

fn executor(rt: &tokio::runtime::Runtime, kind: TransportKind) -> Executor {
    rt.block_on(Executor::builder().max_workers(2).transport(kind).build())
        .expect("executor")
}

/// A forked child that echoes 8-byte messages: the raw floor of a blocking
/// round trip between two processes, for one mechanism.
struct Echo {
    to: OwnedFd,
    from: OwnedFd,
    pid: libc::pid_t,
}

impl Echo {
    /// `mechanism`: "socketpair", "pipe" or "eventfd".
    fn start(mechanism: &str) -> Echo {
        let (to_child, child_in, child_out, from_child): (OwnedFd, OwnedFd, OwnedFd, OwnedFd) =
            match mechanism {
                "socketpair" => {
                    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
                    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
                    (a.into(), b.into(), b2.into(), a2.into())
                }
                "pipe" => {
                    let (r1, w1) = nix::unistd::pipe().unwrap();
                    let (r2, w2) = nix::unistd::pipe().unwrap();
                    (w1, r1, w2, r2)
                }
                _ => {
                    let e1: OwnedFd = nix::sys::eventfd::EventFd::new().unwrap().into();
                    let e2: OwnedFd = nix::sys::eventfd::EventFd::new().unwrap().into();
                    (e1.try_clone().unwrap(), e1, e2.try_clone().unwrap(), e2)
                }
            };
        // SAFETY: the child only loops on read/write system calls over
        // descriptors created before the fork, then `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let mut b = [0u8; 8];
            while let Ok(8) = nix::unistd::read(&child_in, &mut b) {
                if nix::unistd::write(&child_out, &b) != Ok(8) {
                    break;
                }
            }
            // SAFETY: exits the child without running the parent's handlers.
            unsafe { libc::_exit(0) };
        }
        drop((child_in, child_out));
        Echo {
            to: to_child,
            from: from_child,
            pid,
        }
    }

    fn round_trip(&self) {
        let one = 1u64.to_ne_bytes();
        let mut b = [0u8; 8];
        nix::unistd::write(self.to.as_fd(), &one).unwrap();
        nix::unistd::read(self.from.as_fd(), &mut b).unwrap();
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None);
    }
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

/// W1 as the workload defines it: 2000 timed round trips per transport,
/// interleaved in rounds with the raw floors so noise hits all alike.
fn w1_report() {
    let floors: Vec<(&str, Echo)> = ["socketpair", "pipe", "eventfd"]
        .iter()
        .map(|m| (*m, Echo::start(m)))
        .collect();
    let rt = runtime();
    let exs: Vec<(&str, Executor)> = KINDS.iter().map(|(k, n)| (*n, executor(&rt, *k))).collect();
    let mut ours: Vec<Vec<Duration>> = vec![Vec::new(); exs.len()];
    let mut raw: Vec<Vec<Duration>> = vec![Vec::new(); floors.len()];
    for round in 0..10u64 {
        for (i, (_, ex)) in exs.iter().enumerate() {
            rt.block_on(async {
                for j in 0..200 {
                    let t = Instant::now();
                    std::hint::black_box(ex.submit(square, round * 1000 + j).await.unwrap());
                    ours[i].push(t.elapsed());
                }
            });
        }
        for (i, (_, e)) in floors.iter().enumerate() {
            for _ in 0..200 {
                let t = Instant::now();
                e.round_trip();
                raw[i].push(t.elapsed());
            }
        }
    }
    for (i, (name, _)) in exs.iter().enumerate() {
        let (m, p) = stats(std::mem::take(&mut ours[i]));
        println!("W1 {name:<12} median {m:7.1} µs  p99 {p:7.1} µs");
    }
    for (i, (name, _)) in floors.iter().enumerate() {
        let (m, p) = stats(std::mem::take(&mut raw[i]));
        println!(
            "W1 floor {name:<10} median {m:5.1} µs  p99 {p:7.1} µs  (two processes, raw syscalls)"
        );
    }
    for (_, ex) in exs {
        rt.block_on(ex.shutdown());
    }
}

/// W4l as the workload defines it: one 64 MiB echo per transport, against
/// an in-process memcpy of 64 MiB.
fn w4l_report() {
    const N: usize = 64 << 20;
    let src = vec![7u8; N];
    let mut dst = vec![0u8; N];
    let mut best_copy = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        best_copy = best_copy.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    println!(
        "W4l memcpy 64 MiB: {:.1} ms ({:.2} GB/s)",
        best_copy * 1e3,
        N as f64 / best_copy / 1e9
    );
    let rt = runtime();
    for (kind, name) in KINDS {
        let ex = executor(&rt, kind);
        let mut times = Vec::new();
        for _ in 0..5 {
            let payload = ByteBuf::from(src.clone());
            let t = Instant::now();
            let back = rt.block_on(ex.submit(echo, payload)).unwrap();
            times.push(t.elapsed().as_secs_f64());
            assert_eq!(back.len(), N);
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        println!(
            "W4l {name:<12} round trip {:.1} ms, {:.2} GB/s both directions, {:.1}× memcpy time",
            med * 1e3,
            2.0 * N as f64 / med / 1e9,
            med / best_copy
        );
        rt.block_on(ex.shutdown());
    }
}

fn w1(c: &mut Criterion) {
    w1_report();
    let rt = runtime();
    let mut g = c.benchmark_group("W1");
    for (kind, name) in KINDS {
        let ex = executor(&rt, kind);
        g.bench_function(name, |b| {
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
        rt.block_on(ex.shutdown());
    }
    let floor = Echo::start("socketpair");
    g.bench_function("floor_socketpair", |b| b.iter(|| floor.round_trip()));
    g.finish();
}

fn w2a(c: &mut Criterion) {
    const N: u64 = 100_000;
    let rt = runtime();
    let mut g = c.benchmark_group("W2a");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    for (kind, name) in KINDS {
        let ex = executor(&rt, kind);
        g.bench_function(name, |b| {
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
        rt.block_on(ex.shutdown());
    }
    g.finish();
}

fn w4l(c: &mut Criterion) {
    w4l_report();
    const N: usize = 64 << 20;
    let rt = runtime();
    let mut g = c.benchmark_group("W4l");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(2 * N as u64));
    for (kind, name) in KINDS {
        let ex = executor(&rt, kind);
        let payload = ByteBuf::from(vec![1u8; N]);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let p = payload.clone();
                    let t = Instant::now();
                    std::hint::black_box(rt.block_on(ex.submit(echo, p)).unwrap());
                    total += t.elapsed();
                }
                total
            })
        });
        rt.block_on(ex.shutdown());
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // No HTML plots: the side-by-side runner enables plotters' ab_glyph text,
    // which needs a registered font that criterion does not register.
    config = Criterion::default().without_plots();
    targets = w1, w2a, w4l
}
criterion_main!(benches);
