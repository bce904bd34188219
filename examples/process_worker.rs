//! Seed 003, "Creating Processes": four processes each print their worker
//! number and pid; then the main process prints its own.
//!
//! ```python
//! def worker(name):
//!     print(f"Worker {name}, PID: {os.getpid()}")
//!
//! if __name__ == "__main__":
//!     processes = []
//!     for i in range(4):
//!         p = Process(target=worker, args=(i,))
//!         processes.append(p)
//!         p.start()
//!     for p in processes:
//!         p.join()
//!     print(f"Main process PID: {os.getpid()}")
//! ```

use mproc::prelude::*;

#[mproc::task]
fn worker(name: u32) {
    println!("Worker {name}, PID: {}", std::process::id());
}

fn main() -> Result<(), mproc::Error> {
    let mut processes = Vec::new();
    for i in 0..4 {
        let p = Process::new(worker, i).start()?;
        processes.push(p);
    }

    for p in &processes {
        p.join()?;
    }

    println!("Main process PID: {}", std::process::id());
    Ok(())
}
