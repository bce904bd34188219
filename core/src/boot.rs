//! Zero-ceremony worker boot.
//!
//! A worker is this same executable started afresh (`/proc/self/exe`) with
//! [`WORKER_ENV`] set and its socket as standard input. A start-up hook that
//! runs before `main` — before libtest's `main` under `cargo test` — sees the
//! variable, removes it (so the task's own children are not workers), runs the
//! worker loop and exits. User code in `main` therefore never runs in a
//! worker, and no setup call is needed in any binary that links mproc.
//!
//! Workers are spawned from one long-lived thread (`spawner`), because
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits.
//! The socket travels as stdin so std can use `posix_spawn` (no full fork of
//! a large parent).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;

use std::os::fd::OwnedFd;

/// The environment variable that marks a worker; its value is the parent's
/// pid.
pub(crate) const WORKER_ENV: &str = "__MPROC_WORKER";

#[ctor::ctor(unsafe)]
fn mproc_worker_boot() {
    let Some(v) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    // Single-threaded here (before main): removing the variable is sound.
    std::env::remove_var(WORKER_ENV);
    let parent: u32 = v.to_str().and_then(|s| s.parse().ok()).unwrap_or(0);
    crate::worker::worker_main(parent);
}

/// Keeps the boot hook linked: the spawn path names it, so the linker cannot
/// drop the object file that holds it.
fn boot_hook_anchor() -> usize {
    mproc_worker_boot as *const () as usize
}

type Job = Box<dyn FnOnce() + Send>;

fn spawner() -> &'static mpsc::Sender<Job> {
    static TX: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("mproc-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("spawn mproc spawner thread");
        tx
    })
}

/// Runs `f` on the long-lived spawner thread.
pub(crate) fn on_spawner_thread(f: impl FnOnce() + Send + 'static) {
    std::hint::black_box(boot_hook_anchor());
    // The receiver lives for the whole program; a send cannot fail.
    let _ = spawner().send(Box::new(f));
}

/// Starts a worker process with `sock` as its channel. Must run on the
/// spawner thread.
pub(crate) fn spawn_worker_process(sock: OwnedFd) -> std::io::Result<Child> {
    let mut cmd = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    cmd.env(WORKER_ENV, std::process::id().to_string())
        .stdin(Stdio::from(sock))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    cmd.spawn()
}
