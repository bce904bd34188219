//! Seed 004, "Using Queue for Communication": a worker process puts a string
//! on a shared `Queue`, the main process gets and prints it.
//!
//! `cargo run --example queue_communication`

use mproc::prelude::*;

#[mproc::task]
fn worker(q: Queue<String>) {
    q.put("Data from worker".to_string()).expect("put");
}

fn main() -> Result<(), mproc::Error> {
    let q = Queue::new()?;
    let p = Process::new(worker, q.clone()).start()?;
    println!("{}", q.get()?); // Output: Data from worker
    p.join()?;
    Ok(())
}
