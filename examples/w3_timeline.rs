//! Where the time of a small map goes (WORKLOADS.md W3: 8 ×
//! `cpu_intensive(10^6)` on `Pool(2)`): each task reports when it started
//! and ended on the system clock, which the parent shares,
//! so the gaps between the call, the first start, each task, and the
//! return are visible. Run with
//! `cargo run --release --example w3_timeline`.

use std::hint::black_box;
use std::time::Instant;

use mproc::Pool;

/// Nanoseconds on the system clock, which every process shares.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `cpu_intensive(n)`, returning its start and end times and its pid.
#[mproc::task]
fn timed(n: u64) -> (u64, u64, u32) {
    let start = now_ns();
    let mut sum = 0u64;
    for i in 0..n {
        let i = black_box(i);
        sum = sum.wrapping_add(i.wrapping_mul(i));
    }
    black_box(sum);
    (start, now_ns(), std::process::id())
}

fn main() {
    let pool = Pool::new(2).expect("pool");
    pool.map(timed, vec![1000u64; 100]).expect("warm-up");
    let reps = 20;
    let mut first = Vec::new();
    let mut tail = Vec::new();
    let mut busy_gap = Vec::new();
    let mut total = Vec::new();
    let mut work = Vec::new();
    for _ in 0..reps {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let t0 = now_ns();
        let clock = Instant::now();
        let out = pool.map(timed, vec![1_000_000u64; 8]).expect("map");
        let dt = clock.elapsed().as_nanos() as u64;
        let t1 = now_ns();
        let start = out.iter().map(|r| r.0).min().unwrap_or(t0);
        let end = out.iter().map(|r| r.1).max().unwrap_or(t1);
        let sum: u64 = out.iter().map(|r| r.1 - r.0).sum();
        // Idle time inside each worker between its first start and last end.
        let mut gaps = 0u64;
        let mut pids: Vec<u32> = out.iter().map(|r| r.2).collect();
        pids.sort_unstable();
        pids.dedup();
        for p in pids {
            let mut mine: Vec<(u64, u64)> = out
                .iter()
                .filter(|r| r.2 == p)
                .map(|r| (r.0, r.1))
                .collect();
            mine.sort_unstable();
            for w in mine.windows(2) {
                gaps += w[1].0.saturating_sub(w[0].1);
            }
        }
        first.push(start - t0);
        tail.push(t1 - end);
        busy_gap.push(gaps);
        total.push(dt);
        work.push(sum);
    }
    let med = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2] as f64 / 1e3
    };
    println!(
        "W3 timeline, median of {reps}: total {:.0} µs, task time {:.0} µs (ideal on 2 workers {:.0} µs), \
         call -> first start {:.0} µs, last end -> return {:.0} µs, gaps between tasks in the workers {:.0} µs",
        med(&mut total),
        med(&mut work.clone()),
        med(&mut work) / 2.0,
        med(&mut first),
        med(&mut tail),
        med(&mut busy_gap)
    );
}
