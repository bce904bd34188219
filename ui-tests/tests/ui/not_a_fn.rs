use mproc::task;

#[task]
struct Square;

fn main() {}
