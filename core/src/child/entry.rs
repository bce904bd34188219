//! What a forked child runs first, whoever forked it (the spawner thread or
//! the fork server).

use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable that marks a worker; its value is the parent's
/// pid (see `boot`).
pub(crate) const WORKER_ENV: &str = "__MPROC_WORKER";

/// The process a forked worker must die with (its parent), recorded before
/// each fork so the child reads its own copy.
static FORK_PARENT: AtomicU32 = AtomicU32::new(0);

/// Records the process that forked children must die with (the fork server
/// calls this with its own pid).
pub(crate) fn set_fork_parent(pid: u32) {
    FORK_PARENT.store(pid, Ordering::Relaxed);
}

/// How long a forked child's boot may take before it starts afresh.
const BOOT_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a forked child runs: forget the parent's per-process state, then
/// the worker boot.
pub(crate) fn fork_entry() -> i32 {
    let parent = FORK_PARENT.load(Ordering::Relaxed);
    // Any other lock held at the fork would block the boot for good before
    // the worker says hello: past this limit the child starts afresh (see
    // `sys::arm_boot_watchdog`), well before the parent gives up on it.
    crate::sys::arm_boot_watchdog(WORKER_ENV, &parent.to_string(), BOOT_LIMIT);
    crate::children::forget_inherited_children();
    // A lock inside std may have been held by another thread of the parent
    // at the fork (see `sys::std_threads_start`); then no thread can start
    // here, and the child boots afresh as a spawned worker would, on the
    // same socket: slower, never stuck.
    if !crate::sys::std_threads_start(std::time::Duration::from_millis(500)) {
        let e = crate::sys::reexec_with(WORKER_ENV, &parent.to_string());
        eprintln!("mproc: a forked worker cannot start threads and cannot re-exec: {e}");
        return 70;
    }
    super::worker::worker_main(parent)
}
