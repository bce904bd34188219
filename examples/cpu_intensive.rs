//! Port of "Process Pool" (seed 003): the same CPU-bound work run
//! sequentially in this process, then in parallel on a `Pool` of 4.
//!
//! ```text
//! cargo run --release --example cpu_intensive
//! ```

use std::time::Instant;

use mproc::prelude::*;

/// Simulate CPU-bound work.
#[mproc::task]
fn cpu_intensive(n: u64) -> u64 {
    let mut total: u64 = 0;
    for i in 0..n {
        total = total.wrapping_add(std::hint::black_box(i.wrapping_mul(i)));
    }
    total
}

fn main() -> Result<(), mproc::Error> {
    let numbers = vec![10u64.pow(6); 4];

    // Sequential execution
    let start = Instant::now();
    let results: Vec<u64> = numbers.iter().map(|&n| cpu_intensive(n)).collect();
    println!("Sequential: {:.2}s", start.elapsed().as_secs_f64());

    // Parallel execution with Pool
    let start = Instant::now();
    let parallel = {
        let pool = Pool::new(4)?; // `with Pool(4) as pool:`
        pool.map(cpu_intensive, numbers.clone())?
    };
    println!("Parallel: {:.2}s", start.elapsed().as_secs_f64());

    assert_eq!(results, parallel);
    Ok(())
}
