//! Which threads are running task code, and the panic unwinding there now.

use std::cell::{Cell, RefCell};

thread_local! {
    /// Set while task code runs on this thread: its panics are caught and
    /// reported to the caller, not printed.
    pub(super) static IN_TASK: Cell<bool> = const { Cell::new(false) };
    /// The message of a task panic that is unwinding and not yet caught.
    static UNWINDING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// True while task code runs on this thread.
pub(crate) fn in_task() -> bool {
    IN_TASK.with(|f| f.get())
}

/// Marks the current thread as one that only runs task code (the runtime
/// thread).
pub(crate) fn mark_task_thread() {
    IN_TASK.with(|f| f.set(true));
}

/// Called by the panic hook for a panic in task code: records its message
/// and returns the message of a panic already unwinding on this thread, if
/// any — the second panic of a double panic, which aborts the process.
pub(crate) fn note_task_panic(message: String) -> Option<String> {
    UNWINDING.with(|u| u.borrow_mut().replace(message))
}

/// A task panic was caught: it is no longer unwinding.
pub(super) fn caught() {
    UNWINDING.with(|u| u.borrow_mut().take());
}
