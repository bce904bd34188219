#[mproc::actor]
fn counter(n: u64) -> u64 {
    n
}

#[mproc::actor]
pub trait Greeter {
    fn greet(&self) -> String;
}

fn main() {}
