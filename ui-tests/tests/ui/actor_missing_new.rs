#[mproc::actor]
struct Counter {
    n: u64,
}

#[mproc::actor]
impl Counter {
    fn start(n: u64) -> Self {
        Counter { n }
    }

    fn get(&self) -> u64 {
        self.n
    }
}

fn main() {}
