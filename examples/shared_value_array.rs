//! Seed 003, "Shared Memory with Value and Array": four processes add 1 to a
//! shared `Value<i32>` 10 000 times each under its lock (`Counter: 40000`),
//! then one process doubles every element of a shared `Array<f64>`.
//!
//! `cargo run --example shared_value_array`

use mproc::prelude::*;

#[mproc::task]
fn increment(counter: Value<i32>) {
    for _ in 0..10_000 {
        *counter.get_lock() += 1;
    }
}

#[mproc::task]
fn modify_array(arr: Array<f64>) {
    for i in 0..arr.len() {
        arr.set(i, arr.get(i) * 2.0);
    }
}

fn main() -> Result<(), mproc::Error> {
    // Shared integer ('i' = signed int)
    let counter = Value::new(0i32)?;
    let processes = (0..4)
        .map(|_| Process::new(increment, counter.clone()).start())
        .collect::<Result<Vec<_>, _>>()?;
    for p in &processes {
        p.join()?;
    }
    println!("Counter: {}", counter.load()); // 40000

    // Shared array ('d' = double)
    let arr = Array::from_slice(&[1.0, 2.0, 3.0, 4.0])?;
    let p = Process::new(modify_array, arr.clone()).start()?;
    p.join()?;
    println!("Array: {:?}", arr.to_vec()); // [2.0, 4.0, 6.0, 8.0]
    Ok(())
}
