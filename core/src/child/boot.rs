//! Zero-ceremony worker boot: a start-up hook that runs before `main`.
//!
//! A process started by the spawn method (see `spawn`) is this same
//! executable with [`WORKER_ENV`] set and its socket as standard input. The
//! hook — which runs before libtest's `main` under `cargo test` too — sees
//! the variable, removes it (so the task's own children are not workers),
//! runs the worker and exits. User code in `main` therefore never runs in a
//! worker, and no setup call is needed. With [`FORKSERVER_ENV`] it becomes
//! the fork server instead, and with `MPROC_JOIN` a node of a cluster (see
//! `cluster`).

pub(crate) use super::entry::WORKER_ENV;
/// The environment variable that marks the fork server; its value is the
/// program's pid.
pub(crate) const FORKSERVER_ENV: &str = "__MPROC_FORKSERVER";

/// Start-up roles of layers above this one: each checks its own variable
/// and, when it is set, runs that role and exits. A `linkme` slice, so a
/// role needs no call from here (and no import of its layer).
#[linkme::distributed_slice]
pub(crate) static BOOT_HOOKS: [fn()];

#[ctor::ctor(unsafe)]
fn mproc_worker_boot() {
    if let Some(v) = std::env::var_os(FORKSERVER_ENV) {
        // Single-threaded here (before main): removing the variable is sound.
        std::env::remove_var(FORKSERVER_ENV);
        let parent: u32 = v.to_str().and_then(|s| s.parse().ok()).unwrap_or(0);
        super::forkserver::serve(parent);
    }
    let Some(v) = std::env::var_os(WORKER_ENV) else {
        // Other roles a process may be started in (a cluster's node).
        for hook in BOOT_HOOKS {
            hook();
        }
        return;
    };
    if let Some(node) = std::env::var(crate::address::NODE_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
    {
        // A node's worker: `current_node()` names the node.
        crate::address::set_current_node(crate::address::NodeId::new(node));
    }
    // Single-threaded here (before main): removing the variable is sound.
    std::env::remove_var(WORKER_ENV);
    let parent: u32 = v.to_str().and_then(|s| s.parse().ok()).unwrap_or(0);
    super::worker::worker_main(parent);
}

/// Keeps the boot hook linked: the spawn path names it, so the linker cannot
/// drop the object file that holds it.
pub(crate) fn hook_anchor() -> usize {
    mproc_worker_boot as *const () as usize
}
