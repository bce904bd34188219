//! Process start-up workloads W5 and W5p of `WORKLOADS.md`, per start
//! method, with the raw floors of the same mechanisms measured by the same
//! binary in the same run.
//!
//! * **W5**: an executor of 2 workers is built and the first result of a
//!   trivial task comes back (teardown is outside the timed part).
//! * **W5p**: `start` + `join` of one `Process` running a no-op.
//! * **floors**: `fork` + `_exit` + `waitpid` of this (multi-threaded)
//!   process, and `posix_spawn` of this very binary (which returns at once
//!   from `main`) + wait.
//!
//! The fork server is started before its timings (criterion's warm-up), so
//! the forkserver figures are "once the server runs". Run with
//! `cargo bench --bench process`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion};
use mproc::prelude::*;

/// Set in the environment of the `posix_spawn` floor's child: its `main`
/// returns at once.
const NOOP_ENV: &str = "MPROC_BENCH_NOOP";

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[mproc::task]
fn noop() {}

const METHODS: [(&str, StartMethod); 3] = [
    ("spawn", StartMethod::Spawn),
    ("forkserver", StartMethod::Forkserver),
    ("fork", StartMethod::Fork),
];

fn w5(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut g = c.benchmark_group("W5 pool of 2 to first result");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, method) in METHODS {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let (took, ex) = rt.block_on(async {
                        let t = Instant::now();
                        let ex = Executor::builder()
                            .max_workers(2)
                            .start_method(method)
                            .build()
                            .await
                            .expect("executor starts");
                        let r = ex.submit(square, i).await.expect("result");
                        let took = t.elapsed();
                        assert_eq!(r, i * i);
                        (took, ex)
                    });
                    total += took;
                    rt.block_on(ex.shutdown());
                }
                total
            })
        });
    }
    g.finish();
}

fn w5p(c: &mut Criterion) {
    let mut g = c.benchmark_group("W5p Process start and join");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, method) in METHODS {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let p = Process::new(noop, ())
                    .start_method(method)
                    .start()
                    .expect("process starts");
                p.join().expect("join");
                assert_eq!(p.exitcode(), Some(0));
            })
        });
    }
    g.bench_function("floor fork+exit+wait", |b| {
        b.iter(|| {
            // SAFETY: the child calls only `_exit`, which is
            // async-signal-safe, so no lock or state of another thread is
            // touched after the fork.
            match unsafe { nix::unistd::fork() }.expect("fork") {
                nix::unistd::ForkResult::Child => {
                    // SAFETY: `_exit` never returns and is always safe.
                    unsafe { libc::_exit(0) }
                }
                nix::unistd::ForkResult::Parent { child } => {
                    let st = nix::sys::wait::waitpid(child, None).expect("waitpid");
                    assert!(matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)));
                }
            }
        })
    });
    let exe = std::env::current_exe().expect("own path");
    g.bench_function("floor posix_spawn own binary+wait", |b| {
        b.iter(|| {
            let st = std::process::Command::new(&exe)
                .env(NOOP_ENV, "1")
                .status()
                .expect("spawn");
            assert!(st.success());
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // No HTML plots: the side-by-side runner enables plotters' ab_glyph text,
    // which needs a registered font that criterion does not register.
    config = Criterion::default().without_plots();
    targets = w5, w5p
}

fn main() {
    if std::env::var_os(NOOP_ENV).is_some() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
