#[mproc::actor(restarts = 3)]
struct Counter {
    n: u64,
}

#[mproc::actor(crate = ::mproc, crate = ::mproc)]
impl Counter {
    fn new() -> Self {
        Counter { n: 0 }
    }
}

fn main() {}
