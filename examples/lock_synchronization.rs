//! Seed 004, "Using Lock for Synchronization": two processes print a message
//! each while holding a shared `Lock`, so their output never interleaves.
//!
//! `cargo run --example lock_synchronization`

use mproc::prelude::*;

#[mproc::task]
fn print_safe(lock: Lock, message: String) {
    let _guard = lock.acquire();
    println!("{message}");
}

fn main() -> Result<(), mproc::Error> {
    let lock = Lock::new()?;
    let p1 = Process::new(print_safe, (lock.clone(), "Process 1".to_string()));
    let p2 = Process::new(print_safe, (lock.clone(), "Process 2".to_string()));
    let p1 = p1.start()?;
    let p2 = p2.start()?;
    p1.join()?;
    p2.join()?;
    Ok(())
}
