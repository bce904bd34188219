//! Port of "ProcessPoolExecutor" (seed 003): submit four CPU-bound tasks,
//! print each result as it completes, then `map` the same inputs in order.
//!
//! ```text
//! cargo run --release --example process_pool_executor
//! ```

use mproc::prelude::*;

/// `sum(i * i for i in range(n))`.
#[mproc::task]
fn compute(n: u64) -> u64 {
    (0..n).map(|i| std::hint::black_box(i * i)).sum()
}

#[tokio::main]
async fn main() -> Result<(), mproc::Error> {
    let numbers = vec![10u64.pow(6); 4];

    // `with ProcessPoolExecutor(max_workers=4) as executor:`
    let executor = Executor::builder().max_workers(4).build().await?;

    // Submit individual tasks
    let futures: Vec<TaskHandle<u64>> = numbers
        .iter()
        .map(|&n| executor.submit(compute, n))
        .collect();

    // Process results as they complete
    let mut done = as_completed(futures);
    while let Some(result) = done.next().await {
        println!("Result: {}", result?);
    }

    // Or use map for ordered results
    let results: Vec<u64> = executor.map(compute, numbers.clone()).try_collect().await?;
    println!("All results: {results:?}");

    // Leaving the `with` block waits for the workers.
    executor.shutdown().await;
    Ok(())
}
