#[mproc::actor]
struct Worker {
    jobs: u64,
}

#[mproc::actor]
impl Worker {
    fn new() -> Self {
        Worker { jobs: 0 }
    }

    fn spawn(&mut self, jobs: u64) {
        self.jobs += jobs;
    }

    fn spawn_with(jobs: u64) -> Self {
        Worker { jobs }
    }
}

fn main() {}
