//! A rejected actor is reported once, at the mistake: the code that spawns
//! it and calls its methods adds no second error.
use mproc::{Actor, ActorRef, Executor};

#[mproc::actor]
struct Counter {
    n: u64,
}

#[mproc::actor]
impl Counter {
    fn start(n: u64) -> Self {
        Counter { n }
    }

    fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

#[mproc::actor]
struct Store {
    items: Vec<String>,
}

#[mproc::actor]
impl Store {
    fn new() -> Self {
        Store { items: Vec::new() }
    }

    fn push(&mut self, item: &str) -> usize {
        self.items.push(item.to_string());
        self.items.len()
    }
}

fn client_of<A: Actor>(actor: &ActorRef<A>) -> &A::Client {
    actor
}

async fn use_them(executor: &Executor) -> Result<u64, Box<dyn std::error::Error>> {
    let c: ActorRef<Counter> = Counter::spawn(executor, 5).await?;
    let d = Counter::spawn_with(executor, 5, Default::default()).await?;
    let _ = d.incr(1).await?;
    let s = Store::spawn(executor, ()).await?;
    let n: usize = s.push("x").await?;
    let _ = client_of(&s).push("y");
    Ok(c.incr(n as u64).await?)
}

fn main() {
    let _ = use_them;
}
