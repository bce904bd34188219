//! Seed 000, "Simple multiprocessing example": a square and a cube printed
//! by two processes, with their pids; and start-method selection.
//!
//! Run with a start method as argument (`spawn`, `forkserver`, `fork`;
//! default `forkserver`, as the seed sets it):
//! `cargo run --example process_basics -- fork`.

use mproc::prelude::*;

/// Prints the cube of the given number.
#[mproc::task]
fn print_cube(num: i64) {
    println!("Cube: {}; and {}", num * num * num, std::process::id());
}

/// Prints the square of the given number.
#[mproc::task]
fn print_square(num: i64) {
    println!("Square: {}; and {}", num * num, std::process::id());
}

fn main() -> Result<(), mproc::Error> {
    println!("{}", get_start_method()); // Get the current start method

    let method: StartMethod = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("forkserver")
        .parse()?;
    set_start_method(method)?; // Set the start method

    // creating processes
    let p1 = Process::new(print_square, 10);
    let p2 = Process::new(print_cube, 10);

    // starting process 1
    let p1 = p1.start()?;
    // starting process 2
    let p2 = p2.start()?;

    // wait until process 1 is finished
    p1.join()?;
    // wait until process 2 is finished
    p2.join()?;

    // both processes finished
    println!("Done!");
    Ok(())
}
