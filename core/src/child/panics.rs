//! Panics in a worker's or an actor's code: reported to the caller, not
//! printed; the last words of one that aborts the process.

use std::cell::Cell;
use std::sync::Arc;

use crate::outbox::Outbox;
use crate::protocol::ToParent;
use crate::registry::{invoke, task_thread};

thread_local! {
    /// The request this thread is running (sync tasks), for last words.
    pub(super) static RUNNING: Cell<Option<(u64, &'static str)>> = const { Cell::new(None) };
    /// Last words were sent already.
    static SPOKEN: Cell<bool> = const { Cell::new(false) };
}

/// Panics in task code are reported to the caller, not printed. A panic
/// that will abort the worker — a second panic while the first unwinds, or
/// any panic in a `panic = "abort"` build — is printed on stderr with the
/// task's own message, and sent to the parent, before the abort.
pub(super) fn install_panic_hook(outbox: Arc<Outbox>) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !task_thread::in_task() {
            return default(info);
        }
        let text = invoke::payload_text(info.payload());
        let earlier = task_thread::note_task_panic(text.clone());
        let aborts = earlier.is_some() || cfg!(panic = "abort");
        tracing::debug!(target: "mproc::worker", "task panicked: {info}");
        if !aborts || SPOKEN.with(|s| s.replace(true)) {
            return;
        }
        let (id, task) = RUNNING.with(|r| r.get()).unwrap_or((0, "?"));
        let message = match earlier {
            Some(first) => format!("{first}; then, while unwinding: {text}"),
            None => text,
        };
        eprintln!(
            "mproc worker {}: task `{task}` panicked and the worker aborts: {message}",
            std::process::id()
        );
        let _ = outbox.send(&ToParent::LastWords {
            id,
            message: &message,
        });
        outbox.drain();
    }));
}
