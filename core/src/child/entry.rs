//! What a forked child runs first, whoever forked it (the spawner thread or
//! the fork server).

use std::sync::atomic::{AtomicU32, Ordering};

/// The process a forked worker must die with (its parent), recorded before
/// each fork so the child reads its own copy.
static FORK_PARENT: AtomicU32 = AtomicU32::new(0);

/// Records the process that forked children must die with (the fork server
/// calls this with its own pid).
pub(crate) fn set_fork_parent(pid: u32) {
    FORK_PARENT.store(pid, Ordering::Relaxed);
}

/// What a forked child runs: forget the parent's per-process state, then
/// the worker boot.
pub(crate) fn fork_entry() -> i32 {
    crate::children::forget_inherited_children();
    super::worker::worker_main(FORK_PARENT.load(Ordering::Relaxed))
}
