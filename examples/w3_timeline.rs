//! Where the time of a small map goes (WORKLOADS.md W3: 8 ×
//! `cpu_intensive(10^6)` on `Pool(2)`): each task reports when it started
//! and ended on the system clock, which the parent shares, so the gaps
//! between the call, each worker's first start, each task, each worker's
//! last end and the return are visible. As in the comparison runner, the
//! same eight calls run in this process just before each map (the workers
//! have gone to sleep meanwhile). Run with
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

/// Never inlined, so that the in-process calls and the tasks run the same
/// machine code (inlined, each copy is compiled differently, and one runs
/// faster than the other).
#[inline(never)]
fn cpu_intensive(n: u64) -> u64 {
    let mut sum = 0u64;
    for i in 0..n {
        let i = black_box(i);
        sum = sum.wrapping_add(i.wrapping_mul(i));
    }
    sum
}

/// `cpu_intensive(n)`, returning its start and end times and its pid.
#[mproc::task]
fn timed(n: u64) -> (u64, u64, u32) {
    let start = now_ns();
    black_box(cpu_intensive(n));
    (start, now_ns(), std::process::id())
}

/// What one map looked like, in nanoseconds.
#[derive(Default, Clone)]
struct Rep {
    /// The eight calls in this process, one after the other.
    sequential: u64,
    total: u64,
    /// Call → the first worker's first start.
    first_start: u64,
    /// Call → the other worker's first start.
    second_start: u64,
    /// Idle time between consecutive tasks inside the workers.
    gaps: u64,
    /// The sum of task times minus eight in-process calls.
    stretch: i64,
    /// The first worker to finish → the last one's end.
    imbalance: u64,
    /// Last end → return.
    tail: u64,
    /// Tasks run by the busier worker.
    most: usize,
}

fn one(pool: &Pool) -> Rep {
    let seq_clock = Instant::now();
    for _ in 0..8 {
        black_box(cpu_intensive(black_box(1_000_000)));
    }
    let sequential = seq_clock.elapsed().as_nanos() as u64;
    let t0 = now_ns();
    let clock = Instant::now();
    let out = pool.map(timed, vec![1_000_000u64; 8]).expect("map");
    let total = clock.elapsed().as_nanos() as u64;
    let t1 = now_ns();
    let mut pids: Vec<u32> = out.iter().map(|r| r.2).collect();
    pids.sort_unstable();
    pids.dedup();
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    let mut gaps = 0u64;
    let mut most = 0;
    for p in &pids {
        let mut mine: Vec<(u64, u64)> = out
            .iter()
            .filter(|r| r.2 == *p)
            .map(|r| (r.0, r.1))
            .collect();
        mine.sort_unstable();
        most = most.max(mine.len());
        starts.push(mine[0].0);
        ends.push(mine[mine.len() - 1].1);
        for w in mine.windows(2) {
            gaps += w[1].0.saturating_sub(w[0].1);
        }
    }
    starts.sort_unstable();
    ends.sort_unstable();
    let work: u64 = out.iter().map(|r| r.1 - r.0).sum();
    Rep {
        sequential,
        total,
        first_start: starts[0].saturating_sub(t0),
        second_start: starts[starts.len() - 1].saturating_sub(t0),
        gaps,
        stretch: work as i64 - sequential as i64,
        imbalance: ends[ends.len() - 1] - ends[0],
        tail: t1.saturating_sub(ends[ends.len() - 1]),
        most,
    }
}

fn main() {
    let pool = Pool::new(2).expect("pool");
    pool.map(timed, vec![1000u64; 100]).expect("warm-up");
    one(&pool);
    let reps: Vec<Rep> = (0..101).map(|_| one(&pool)).collect();
    let med = |f: &dyn Fn(&Rep) -> i64| {
        let mut v: Vec<i64> = reps.iter().map(f).collect();
        v.sort_unstable();
        v[v.len() / 2] as f64 / 1e3
    };
    let speedups = {
        let mut v: Vec<f64> = reps
            .iter()
            .map(|r| r.sequential as f64 / r.total as f64)
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let balanced = reps.iter().filter(|r| r.most == 4).count();
    let slowest = {
        let mut v: Vec<u64> = reps.iter().map(|r| r.total).collect();
        v.sort_unstable();
        (
            v[v.len() * 9 / 10] as f64 / 1e3,
            v[v.len() - 1] as f64 / 1e3,
        )
    };
    println!(
        "W3 timeline, medians of {} maps (µs): sequential {:.0}, map {:.0}, speedup {speedups:.2}x\n  \
         call -> first worker starts {:.0}, -> second worker starts {:.0}\n  \
         gaps between tasks (both workers) {:.0}, task time over in-process {:.0}\n  \
         first worker done -> last done {:.0}, last done -> return {:.0}\n  \
         4 tasks each in {balanced} of {} maps; map p90 {:.0}, slowest {:.0}",
        reps.len(),
        med(&|r| r.sequential as i64),
        med(&|r| r.total as i64),
        med(&|r| r.first_start as i64),
        med(&|r| r.second_start as i64),
        med(&|r| r.gaps as i64),
        med(&|r| r.stretch),
        med(&|r| r.imbalance as i64),
        med(&|r| r.tail as i64),
        reps.len(),
        slowest.0,
        slowest.1,
    );
}
