//! Port of "Using Pool for Managing Multiple Workers" (seed 004).
//!
//! ```text
//! cargo run --release --example pool_square
//! ```

use mproc::prelude::*;

#[mproc::task]
fn square(n: u64) -> u64 {
    n * n
}

fn main() -> Result<(), mproc::Error> {
    let pool = Pool::new(4)?; // `with Pool(4) as pool:`
    let results = pool.map(square, vec![1, 2, 3, 4])?;
    println!("{results:?}"); // [1, 4, 9, 16]
    Ok(())
}
