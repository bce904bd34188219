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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build the worker's tokio runtime");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("mproc-runtime".into())
            .spawn(move || {
                crate::trace::enter_worker_dispatch();
                super::task_thread::mark_task_thread();
                rt.block_on(std::future::pending::<()>())
            })
            .expect("spawn the worker's runtime thread");
        handle
    })
}
