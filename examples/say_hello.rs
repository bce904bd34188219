//! Seed 004, "Basic Example using Process": one process says hello.
//!
//! ```python
//! def say_hello():
//!     print("Hello from process")
//!
//! p = Process(target=say_hello)
//! p.start()
//! p.join()
//! ```

use mproc::prelude::*;

#[mproc::task]
fn say_hello() {
    println!("Hello from process");
}

fn main() -> Result<(), mproc::Error> {
    let p = Process::new(say_hello, ()).start()?;
    p.join()?; // Wait for the process to finish
    Ok(())
}
