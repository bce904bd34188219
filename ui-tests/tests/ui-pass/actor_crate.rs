//! `crate = path` for a crate that names the facade otherwise.
#![deny(warnings, missing_docs, missing_debug_implementations, unreachable_pub)]

extern crate mproc as my_mproc;

use my_mproc::__private::ActorType;

/// Counts.
#[my_mproc::actor]
#[derive(Debug)]
pub struct Counter {
    n: u64,
}

#[my_mproc::actor(crate = ::my_mproc)]
impl Counter {
    /// Starts at `start`.
    pub fn new(start: u64) -> Self {
        Counter { n: start }
    }

    /// Adds `by`.
    pub fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

/// The same, through a module that re-exports the facade.
mod facade {
    pub(crate) use ::mproc::*;
}

/// Counts down.
#[mproc::actor]
#[derive(Debug)]
pub struct Down(u64);

#[mproc::actor(crate = crate::facade)]
impl Down {
    /// From `n`.
    pub fn new(n: u64) -> Self {
        Down(n)
    }

    /// One less.
    pub async fn step(&mut self) -> u64 {
        self.0 -= 1;
        self.0
    }
}

async fn use_them(executor: &my_mproc::Executor) -> Result<(), Box<dyn std::error::Error>> {
    let c: my_mproc::ActorRef<Counter> = Counter::spawn(executor, 1).await?;
    let _: u64 = c.incr(1).await?;
    let d = Down::spawn(executor, 3).await?;
    let _: u64 = d.step().await?;
    Ok(())
}

fn main() {
    let _ = use_them;
    assert_eq!(<Counter as ActorType>::METHODS, ["incr"]);
    assert_eq!(<Down as ActorType>::METHODS, ["step"]);
}
