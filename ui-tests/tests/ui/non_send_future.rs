use std::rc::Rc;

use mproc::task;

async fn tick() {}

#[task]
async fn shared_len(s: String) -> usize {
    let shared = Rc::new(s);
    tick().await;
    shared.len()
}

fn main() {}
