//! Seed 003, "Daemon Processes": a daemon process runs in the background and
//! is terminated when the main process exits.
//!
//! ```python
//! def background_task():
//!     while True:
//!         print("Background process running...")
//!         time.sleep(1)
//!
//! if __name__ == "__main__":
//!     p = Process(target=background_task, daemon=True)
//!     p.start()
//!     time.sleep(3)
//!     print("Main process exiting, daemon will be terminated")
//! ```

use std::time::Duration;

use mproc::prelude::*;

#[mproc::task]
fn background_task() {
    loop {
        println!("Background process running...");
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn main() -> Result<(), mproc::Error> {
    let _p = Process::new(background_task, ()).daemon(true).start()?;

    std::thread::sleep(Duration::from_secs(3));
    println!("Main process exiting, daemon will be terminated");
    Ok(())
}
