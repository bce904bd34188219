//! `memory`: the parent's resident memory under two loads that must not
//! make it grow without bound (issue 15, point 6).
//!
//! ```text
//! memory [--seconds S] [--tasks N] [--window W]
//! ```
//!
//! * **M1, a slow consumer of an endless map.** `map(square, 0..)` over an
//!   endless iterator on 2 warm workers, consumed one result at a time with
//!   a pause of 50 µs after each (the workers could go far faster), for `S`
//!   seconds (default 10). A map whose read-ahead or finished results were
//!   unbounded would grow here all along.
//! * **M2, many tasks submitted and awaited.** `N` (default 1 000 000)
//!   `submit(square, i)`, `W` (default 10 000) at a time, each window
//!   awaited before the next is submitted: the scheduler's tables, the
//!   intake and the handles must give their memory back.
//! * **M3, one burst.** 100 000 submits, then all awaited (W2a): the memory
//!   a pending task costs, reported per task (it is held while the task is
//!   pending, so it is not a leak, but it says what a burst of a million
//!   would cost).
//!
//! The resident set is read from `/proc/self/statm` every 100 ms (and at
//! every window in M2). Each load reports its baseline (after warm-up), its
//! peak and its final growth, in MiB, as one JSON line. It is a
//! `harness = false` bench target: `cargo bench -p mproc-benches --bench
//! memory`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mproc::prelude::*;

use common::square;

/// The parent's resident set, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm has a resident field");
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

const MIB: f64 = 1024.0 * 1024.0;

/// Samples the resident set every 100 ms on a thread of its own until
/// stopped; returns the peak.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl Sampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = rss_bytes();
            while !s.load(Ordering::Relaxed) {
                peak = peak.max(rss_bytes());
                std::thread::sleep(Duration::from_millis(100));
            }
            peak.max(rss_bytes())
        });
        Sampler { stop, handle }
    }

    fn peak(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sampler thread")
    }
}

fn report(id: &str, what: &str, base: u64, peak: u64, end: u64, extra: &str) {
    println!(
        "{{\"id\":\"{id}\",\"what\":\"{what}\",\"baseline_mib\":{:.1},\"peak_growth_mib\":{:.1},\"final_growth_mib\":{:.1}{extra}}}",
        base as f64 / MIB,
        peak.saturating_sub(base) as f64 / MIB,
        end as f64 / MIB - base as f64 / MIB,
    );
}

fn m1(rt: &tokio::runtime::Runtime, ex: &Executor, seconds: f64) {
    rt.block_on(async {
        // Warm the map path itself before the baseline.
        let mut warm = ex.map(square, 0u64..);
        for _ in 0..10_000 {
            warm.next().await.expect("endless").expect("square");
        }
        drop(warm);
        let base = rss_bytes();
        let sampler = Sampler::start();
        let mut stream = ex.map(square, 0u64..);
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed().as_secs_f64() < seconds {
            let v = stream.next().await.expect("endless").expect("square");
            assert_eq!(v, n * n);
            n += 1;
            // A slow consumer: the workers could go far faster.
            std::thread::sleep(Duration::from_micros(50));
        }
        drop(stream);
        let end = rss_bytes();
        let peak = sampler.peak();
        report(
            "M1",
            "endless map consumed slowly",
            base,
            peak,
            end,
            &format!(",\"results\":{n},\"seconds\":{seconds}"),
        );
    });
}

fn m2(rt: &tokio::runtime::Runtime, ex: &Executor, tasks: u64, window: u64) {
    rt.block_on(async {
        let base = rss_bytes();
        let sampler = Sampler::start();
        let t = Instant::now();
        let mut i = 0u64;
        while i < tasks {
            let hi = (i + window).min(tasks);
            let handles: Vec<_> = (i..hi).map(|x| ex.submit(square, x)).collect();
            for (x, h) in (i..hi).zip(handles) {
                assert_eq!(h.await.expect("square"), x * x);
            }
            i = hi;
        }
        let secs = t.elapsed().as_secs_f64();
        let end = rss_bytes();
        let peak = sampler.peak();
        report(
            "M2",
            "tasks submitted and awaited in windows",
            base,
            peak,
            end,
            &format!(
                ",\"tasks\":{tasks},\"window\":{window},\"tasks_per_s\":{:.0}",
                tasks as f64 / secs
            ),
        );
    });
}

fn m3(rt: &tokio::runtime::Runtime, ex: &Executor) {
    const BURST: u64 = common::N_TASKS;
    rt.block_on(async {
        let base = rss_bytes();
        let sampler = Sampler::start();
        let handles: Vec<_> = (0..BURST).map(|x| ex.submit(square, x)).collect();
        let submitted = rss_bytes();
        for (x, h) in (0..BURST).zip(handles) {
            assert_eq!(h.await.expect("square"), x * x);
        }
        let end = rss_bytes();
        let peak = sampler.peak();
        let per_task = submitted.saturating_sub(base) as f64 / BURST as f64;
        report(
            "M3",
            "one burst submitted, then awaited",
            base,
            peak,
            end,
            &format!(",\"tasks\":{BURST},\"bytes_per_pending_task\":{per_task:.0}"),
        );
    });
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut seconds = 10.0;
    let mut tasks = 1_000_000u64;
    let mut window = 10_000u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().map(String::as_str);
        match (a.as_str(), v) {
            ("--seconds", Some(v)) => seconds = v.parse().expect("--seconds S"),
            ("--tasks", Some(v)) => tasks = v.parse().expect("--tasks N"),
            ("--window", Some(v)) => window = v.parse::<u64>().expect("--window W").max(1),
            _ => {
                eprintln!("usage: memory [--seconds S] [--tasks N] [--window W]");
                std::process::exit(2);
            }
        }
    }
    let rt = common::runtime();
    let ex = common::executor(&rt);
    m1(&rt, &ex, seconds);
    m2(&rt, &ex, tasks, window);
    m3(&rt, &ex);
    rt.block_on(ex.shutdown());
}
