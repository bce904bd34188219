use std::fmt;

#[mproc::actor]
struct Counter {
    n: u64,
}

#[mproc::actor]
impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.n)
    }
}

fn main() {}
