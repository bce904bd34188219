//! The one place that builds the tokio runtime of a worker or child process.
//!
//! It is a current-thread runtime driven by a thread of its own
//! (`mproc-runtime`), started the first time an `async fn` task needs it.
//! `async` tasks are spawned on it; a sync caller blocks on it through its
//! handle.

use std::sync::OnceLock;

/// The process's task runtime, started on first use.
pub(crate) fn runtime() -> &'static tokio::runtime::Handle {
    static RT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RT.get_or_init(|| {
        // Without it no async task or method can run here. This runs in a
        // child only, so at the descriptor or thread limit the child exits
        // with the code its parent reports as such, rather than panic.
        let unavailable = |e: std::io::Error| -> ! {
            eprintln!(
                "mproc {}: cannot start the task runtime: {e}",
                std::process::id()
            );
            crate::children::exit_child(crate::child::EXIT_NO_THREAD)
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| unavailable(e));
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("mproc-runtime".into())
            .spawn(move || {
                crate::trace::enter_worker_dispatch();
                super::task_thread::mark_task_thread();
                rt.block_on(std::future::pending::<()>())
            })
            .unwrap_or_else(|e| unavailable(e));
        handle
    })
}
