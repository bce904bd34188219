//! The main demo: what mproc does that Python's `multiprocessing` and
//! `concurrent.futures` do not, in a few seconds of output.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! 1. Start-up: workers are this same binary, ready in milliseconds, with
//!    no `if __name__ == "__main__":` guard.
//! 2. Parallel speedup, with each task's worker pid and time.
//! 3. A task that crashes its worker (`abort`, as a segfault in a C library
//!    would) fails alone; the other tasks complete and the executor keeps
//!    serving. Python's pool breaks for good there.
//! 4. Completion order, each result matched to its input (Python's
//!    `futs = {ex.submit(f, x): x ...}` / `futs[f]`).
//! 5. Nothing left behind: every worker, the crashed one's replacement
//!    included, is gone after `shutdown`.
//!
//! The faithful port of the Python seed is `examples/process_pool_executor.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mproc::prelude::*;

const WORKERS: usize = 4;

/// CPU-bound work: a sum of squares, reported with the worker's pid and the
/// time it took there.
#[mproc::task]
fn sum_squares(n: u64) -> (u64, u32, Duration) {
    let start = Instant::now();
    let sum = (0..n).map(|i| std::hint::black_box(i * i)).sum();
    (sum, std::process::id(), start.elapsed())
}

/// Crashes its worker when `crash` is set: the process aborts, as it would
/// on a segfault in native code or an OOM kill. A panic would not do: it is
/// caught in the worker (`TaskError::Panicked`).
#[mproc::task]
fn maybe_crash(i: u32, crash: bool) -> u32 {
    if crash {
        std::process::abort();
    }
    std::thread::sleep(Duration::from_millis(100));
    i * 10
}

/// Sleeps `ms` milliseconds and returns its pid.
#[mproc::task]
fn nap(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie still would, in state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::main]
async fn main() -> Result<(), mproc::Error> {
    println!("mproc demo: {} CPUs, {WORKERS} workers\n", cpu_count());

    // ---- 1. start-up --------------------------------------------------------
    let t = Instant::now();
    let executor = Executor::builder().max_workers(WORKERS).build().await?;
    let startup = t.elapsed();
    let mut pids_seen: Vec<u32> = executor.worker_pids();
    println!("1. Start-up");
    println!(
        "   {WORKERS} workers ready in {} (pids {:?}): each is this binary, turned into a",
        ms(startup),
        pids_seen
    );
    println!(
        "   worker before `main` runs, so `main` needs no `if __name__ == \"__main__\"` guard.\n"
    );

    // ---- 2. parallel speedup ------------------------------------------------
    let n = 40_000_000u64;
    let jobs = 8;
    println!("2. Parallel speedup: {jobs} x sum of squares below {n}");
    let t = Instant::now();
    for _ in 0..jobs {
        std::hint::black_box(sum_squares(n)); // a direct call runs here
    }
    let sequential = t.elapsed();
    let t = Instant::now();
    let handles: Vec<_> = (0..jobs).map(|_| executor.submit(sum_squares, n)).collect();
    let mut rows = Vec::new();
    for h in handles {
        rows.push(h.await?);
    }
    let parallel = t.elapsed();
    for (i, (_, pid, took)) in rows.iter().enumerate() {
        println!("     task {i}  pid {pid}  {}", ms(*took));
    }
    println!("   in this process, one after another: {}", ms(sequential));
    println!(
        "   on {WORKERS} workers:                     {}  ({:.1}x faster on {} CPUs)\n",
        ms(parallel),
        sequential.as_secs_f64() / parallel.as_secs_f64(),
        cpu_count()
    );

    // ---- 3. a crash fails one task ------------------------------------------
    println!("3. A crash fails one task, not the pool");
    println!("   8 tasks; task 3 aborts its worker process (like a segfault in a C library):");
    let handles: Vec<_> = (0..8u32)
        .map(|i| executor.submit(maybe_crash, (i, i == 3)))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        match h.await {
            Ok(v) => println!("     task {i}: ok, {v}"),
            Err(e) => println!("     task {i}: {e}"),
        }
    }
    let after = executor.submit(nap, 0).await?;
    pids_seen.extend(executor.worker_pids());
    println!(
        "   the crashed worker was replaced; the executor still serves (pid {after} answered)."
    );
    println!("   Python: concurrent.futures raises BrokenProcessPool for every pending task and");
    println!("   refuses new ones for good; multiprocessing.Pool.map waits forever.\n");

    // ---- 4. completion order ------------------------------------------------
    println!("4. Completion order, each result matched to its input");
    let naps = [400u64, 100, 300, 200];
    println!("   submitted: naps of {naps:?} ms");
    // Python: futs = {ex.submit(nap, ms): ms for ms in naps}
    let mut futs: HashMap<TaskId, u64> = HashMap::new();
    let mut pending = Vec::new();
    for ms in naps {
        let h = executor.submit(nap, ms);
        futs.insert(h.id(), ms);
        pending.push(h);
    }
    // Python: for f in as_completed(futs): print(futs[f], f.result())
    let t = Instant::now();
    while !pending.is_empty() {
        let (done, rest) = wait(pending, ReturnWhen::FirstCompleted).await;
        for h in done {
            let asked = futs[&h.id()];
            let pid = h.await?;
            println!(
                "     at {:>4} ms: the {asked} ms nap (pid {pid})",
                t.elapsed().as_millis()
            );
        }
        pending = rest;
    }
    println!();

    // ---- 5. nothing left behind ---------------------------------------------
    println!("5. Nothing left behind");
    executor.shutdown().await;
    drop(executor);
    pids_seen.sort_unstable();
    pids_seen.dedup();
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids_seen.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let left = pids_seen.iter().filter(|&&p| alive(p)).count();
    println!(
        "   after shutdown: {left} of the {} worker processes seen are still running.",
        pids_seen.len()
    );
    println!(
        "   (Killing this program with SIGKILL would take them down too, within milliseconds.)"
    );
    Ok(())
}
