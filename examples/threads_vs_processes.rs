//! Port of "Comparing Threads vs Processes" (seed 003): the same CPU-bound
//! work sequentially, on 4 threads, and on a pool of 4 processes.
//!
//! One difference in meaning: Rust has no GIL, so here the threads run in
//! parallel too. Processes are for isolation (a crash, a leak or a stuck
//! native library takes down one worker, not the program) and for work
//! that cannot share an address space — not for escaping a lock.
//!
//! ```text
//! cargo run --release --example threads_vs_processes
//! ```

use std::thread;
use std::time::Instant;

use mproc::prelude::*;

/// CPU-intensive task.
#[mproc::task]
fn cpu_bound(n: u64) -> u64 {
    (0..n).fold(0u64, |acc, i| {
        acc.wrapping_add(std::hint::black_box(i.wrapping_mul(i)))
    })
}

fn main() -> Result<(), mproc::Error> {
    let n = 10u64.pow(7);
    let count = 4;

    // Sequential
    let start = Instant::now();
    for _ in 0..count {
        std::hint::black_box(cpu_bound(n));
    }
    println!("Sequential: {:.2}s", start.elapsed().as_secs_f64());

    // Threads
    let start = Instant::now();
    let threads: Vec<_> = (0..count)
        .map(|_| thread::spawn(move || cpu_bound(n)))
        .collect();
    for t in threads {
        t.join().expect("thread panicked");
    }
    println!("Threads: {:.2}s", start.elapsed().as_secs_f64());

    // Processes (true parallelism)
    let start = Instant::now();
    {
        let pool = Pool::new(count)?; // `with Pool(count) as pool:`
        pool.map(cpu_bound, vec![n; count])?;
    }
    println!("Processes: {:.2}s", start.elapsed().as_secs_f64());
    Ok(())
}
