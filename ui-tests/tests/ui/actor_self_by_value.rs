#[mproc::actor]
struct Session {
    log: Vec<String>,
}

#[mproc::actor]
impl Session {
    fn new() -> Self {
        Session { log: Vec::new() }
    }

    fn finish(self) -> Vec<String> {
        self.log
    }

    fn boxed(self: Box<Self>) -> usize {
        self.log.len()
    }
}

fn main() {}
