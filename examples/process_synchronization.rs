//! Seed 003, "Process Synchronization": four processes increment a shared
//! `Value` 10 000 times each, each read-modify-write guarded by a shared
//! `Lock`, so no update is lost: `Counter: 40000`.
//!
//! `cargo run --example process_synchronization`

use mproc::prelude::*;

#[mproc::task]
fn safe_increment(counter: Value<i32>, lock: Lock) {
    for _ in 0..10_000 {
        let _guard = lock.acquire();
        // `counter.value += 1`: a locked read, then a locked write.
        counter.store(counter.load() + 1);
    }
}

fn main() -> Result<(), mproc::Error> {
    let lock = Lock::new()?;
    let counter = Value::new(0i32)?;

    let processes: Vec<Process> = (0..4)
        .map(|_| Process::new(safe_increment, (counter.clone(), lock.clone())))
        .collect();

    let mut started = Vec::new();
    for p in processes {
        started.push(p.start()?);
    }
    for p in &started {
        p.join()?;
    }

    println!("Counter: {}", counter.load()); // 40000
    Ok(())
}
