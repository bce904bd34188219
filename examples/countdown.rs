//! Seed 001, "The multiprocessing module": two processes count down at the
//! same time.
//!
//! ```python
//! def countdown(count):
//!     while count > 0:
//!         print("Count value", count)
//!         count -= 1
//!     return
//!
//! if __name__ == "__main__":
//!     p1 = multiprocessing.Process(target=countdown, args=(10,))
//!     p1.start()
//!     p2 = multiprocessing.Process(target=countdown, args=(20,))
//!     p2.start()
//!     p1.join()
//!     p2.join()
//! ```

use mproc::prelude::*;

#[mproc::task]
fn countdown(mut count: u32) {
    while count > 0 {
        println!("Count value {count}");
        count -= 1;
    }
}

fn main() -> Result<(), mproc::Error> {
    let p1 = Process::new(countdown, 10).start()?;

    let p2 = Process::new(countdown, 20).start()?;

    p1.join()?;
    p2.join()?;
    Ok(())
}
