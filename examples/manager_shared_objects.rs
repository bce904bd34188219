//! Seed 003, "Manager for Complex Shared Objects": four processes write into
//! a dict and a list held by a Manager's server process, through proxies.
//!
//! Prints what the Python prints:
//!
//! ```text
//! Dict: {0: 0, 1: 10, 2: 20, 3: 30}
//! List: [0, 1, 2, 3]
//! ```
//!
//! As in Python, the list's order is the order in which the processes
//! happened to append, so it may vary from run to run (`[1, 0, 2, 3]`…).
//! Python's dict prints in insertion order, which varies the same way; this
//! port prints the dict sorted by key.
//!
//! `cargo run --example manager_shared_objects`

use mproc::prelude::*;

#[mproc::task]
fn worker(shared_dict: DictProxy<u32, u32>, shared_list: ListProxy<u32>, worker_id: u32) {
    shared_dict
        .insert(worker_id, worker_id * 10)
        .expect("dict insert");
    shared_list.push(worker_id).expect("list append");
}

fn main() -> Result<(), mproc::Error> {
    // `with Manager() as manager:` — the server ends when `manager` drops.
    let manager = Manager::start()?;
    let shared_dict: DictProxy<u32, u32> = manager.dict()?;
    let shared_list: ListProxy<u32> = manager.list()?;

    let processes = (0..4)
        .map(|i| Process::new(worker, (shared_dict.clone(), shared_list.clone(), i)).start())
        .collect::<Result<Vec<_>, _>>()?;
    for p in &processes {
        p.join()?;
    }

    let mut dict: Vec<(u32, u32)> = shared_dict.to_hashmap()?.into_iter().collect();
    dict.sort();
    let dict: Vec<String> = dict.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("Dict: {{{}}}", dict.join(", "));
    println!("List: {:?}", shared_list.to_vec()?);
    Ok(())
}
