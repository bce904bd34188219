//! Seed 003, "Sharing Data with Queue": a producer process puts five items
//! and a `None` sentinel on a shared `Queue`; a consumer process gets them
//! until the sentinel. Python's `None` sentinel is `Option::None` here.
//!
//! `cargo run --example shared_queue`

use mproc::prelude::*;

#[mproc::task]
fn producer(q: Queue<Option<i64>>, items: Vec<i64>) {
    for item in items {
        q.put(Some(item)).expect("put");
        println!("Produced: {item}");
    }
    q.put(None).expect("put"); // Sentinel
}

#[mproc::task]
fn consumer(q: Queue<Option<i64>>) {
    loop {
        let item = q.get().expect("get");
        match item {
            None => break,
            Some(item) => println!("Consumed: {item}"),
        }
    }
}

fn main() -> Result<(), mproc::Error> {
    let q = Queue::new()?;
    let items: Vec<i64> = (0..5).collect();

    let p1 = Process::new(producer, (q.clone(), items));
    let p2 = Process::new(consumer, q);

    let p1 = p1.start()?;
    let p2 = p2.start()?;
    p1.join()?;
    p2.join()?;
    Ok(())
}
