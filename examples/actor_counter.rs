//! The counter actor of the API's "Actors" section, runnable: an object
//! that lives in a process of its own, keeps its state between calls, and
//! is called through a typed reference.
//!
//! ```text
//! cargo run --release --example actor_counter
//! ```

use mproc::prelude::*;

#[mproc::actor]
struct Counter {
    n: u64,
}

#[mproc::actor]
impl Counter {
    fn new(start: u64) -> Self {
        Counter { n: start }
    }
    fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
    fn get(&self) -> u64 {
        self.n
    }
    async fn slow_get(&self) -> u64 {
        self.n
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
}

#[tokio::main]
async fn main() -> Result<(), mproc::Error> {
    let executor = Executor::new(2).await?;

    let c: ActorRef<Counter> = Counter::spawn(&executor, 5).await?; // several args: a tuple
    println!("c.incr(2)    = {}", c.incr(2).await?); // ActorRef derefs to the generated client
    println!("c.get()      = {}", c.get().await?);
    println!("c.slow_get() = {}", c.slow_get().await?);
    println!("c.id()       = {}", c.id());
    println!(
        "c runs in process {}, this program is {}",
        c.pid().await?,
        std::process::id()
    );

    // Calls made without waiting are all in flight at once, and applied in
    // the order they were made.
    let calls: Vec<_> = (0..5).map(|_| c.incr(1)).collect();
    let mut seen = Vec::new();
    for call in calls {
        seen.push(call.await?);
    }
    println!("five calls in flight: {seen:?}");

    // Options: restarts if its process dies, and where it runs.
    let opts = ActorOptions::default().max_restarts(3).node(NodeId::DRIVER);
    let d: ActorRef<Counter> = Counter::spawn_with(&executor, 0, opts).await?;
    println!(
        "d.incr(1)    = {} (d is {}, restarted {} times)",
        d.incr(1).await?,
        d.id(),
        d.restarts()
    );

    c.stop().await?;
    println!(
        "after c.stop(), c.get() fails: {}",
        c.get().await.unwrap_err()
    );
    d.stop().await?;
    executor.shutdown().await;
    Ok(())
}
