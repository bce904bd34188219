//! Seed 003, "Handling Process Termination": a long-running process is
//! asked to stop with `terminate` (SIGTERM), killed with `kill` (SIGKILL)
//! if it is still alive after two seconds, and its exit code is printed:
//! minus the signal number, as in Python (`Exit code: -15`).
//!
//! ```python
//! def long_running_task():
//!     try:
//!         while True:
//!             print("Working...")
//!             time.sleep(1)
//!     except KeyboardInterrupt:
//!         print("Graceful shutdown")
//!
//! if __name__ == "__main__":
//!     p = Process(target=long_running_task)
//!     p.start()
//!     time.sleep(3)
//!     p.terminate()
//!     p.join(timeout=2)
//!     if p.is_alive():
//!         p.kill()
//!         p.join()
//!     print(f"Exit code: {p.exitcode}")
//! ```
//!
//! As in Python, SIGTERM is not a keyboard interrupt, so the graceful branch
//! does not run; a Rust task that wants one installs a SIGTERM handler.

use std::time::Duration;

use mproc::prelude::*;

#[mproc::task]
fn long_running_task() {
    loop {
        println!("Working...");
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn main() -> Result<(), mproc::Error> {
    let p = Process::new(long_running_task, ()).start()?;

    std::thread::sleep(Duration::from_secs(3));

    // Graceful termination (SIGTERM)
    p.terminate()?;
    p.join_timeout(Duration::from_secs(2))?;

    // Force kill if still alive
    if p.is_alive() {
        p.kill()?;
        p.join()?;
    }

    match p.exitcode() {
        Some(code) => println!("Exit code: {code}"),
        None => println!("Exit code: None"),
    }
    Ok(())
}
