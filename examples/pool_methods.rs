//! Port of "Pool Methods" (seed 003): `map`, `starmap`, `apply_async` and
//! `map_async` on a pool of 4.
//!
//! ```text
//! cargo run --release --example pool_methods
//! ```

use mproc::prelude::*;

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[mproc::task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn main() -> Result<(), mproc::Error> {
    let pool = Pool::new(4)?; // `with Pool(4) as pool:`

    // map - apply function to iterable
    let results = pool.map(square, 0..10)?;
    println!("map: {results:?}");

    // starmap - unpack arguments from iterable
    let pairs = vec![(1, 2), (3, 4), (5, 6)];
    let results = pool.starmap(add, pairs)?;
    println!("starmap: {results:?}");

    // apply_async - non-blocking single call
    let result = pool.apply_async(square, 10);
    println!("apply_async: {}", result.get()?);

    // map_async - non-blocking map
    let result = pool.map_async(square, 0..5);
    println!("map_async: {:?}", result.get()?);
    Ok(())
}
