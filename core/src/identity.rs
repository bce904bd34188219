//! Who this process is: [`current_process`], [`parent_process`],
//! [`cpu_count`].
//!
//! The identity is set once in a worker or child process, from its
//! handshake. A forked child replaces the copy it inherited; the spawner
//! holds the identity lock across `fork` (see [`fork_guard`]) so that no
//! other thread can hold it at that moment.

use std::sync::{Arc, Mutex, MutexGuard};

/// The name and pid of a process of the program tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcessInfo {
    name: String,
    pid: u32,
}

impl ProcessInfo {
    pub(crate) fn new(name: impl Into<String>, pid: u32) -> Self {
        ProcessInfo {
            name: name.into(),
            pid,
        }
    }

    /// The process's name: `"MainProcess"`, `"PoolWorker-3"`, `"Process-1"`…
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating-system process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// The identity of a worker or child process.
#[derive(Debug)]
pub(crate) struct Identity {
    name: String,
    /// The `Process-N` path of this process (`"2"`, `"2:1"`); empty in the
    /// main process and in pool workers.
    ident: String,
    parent: Option<ProcessInfo>,
}

static IDENTITY: Mutex<Option<Arc<Identity>>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Arc<Identity>>> {
    IDENTITY.lock().unwrap_or_else(|p| p.into_inner())
}

fn get() -> Option<Arc<Identity>> {
    lock().clone()
}

fn set(id: Identity) {
    *lock() = Some(Arc::new(id));
}

/// Held by the spawner across `fork`, so the child finds the lock free.
pub(crate) fn fork_guard() -> MutexGuard<'static, Option<Arc<Identity>>> {
    lock()
}

/// Called once in a worker, from the handshake.
pub(crate) fn set_worker_identity(name: String, parent_pid: u32) {
    set(Identity {
        name,
        ident: String::new(),
        parent: Some(ProcessInfo::new("MainProcess", parent_pid)),
    });
}

/// Called once in a child started by `Process`, from its start message.
pub(crate) fn set_child_identity(name: String, ident: String, parent: ProcessInfo) {
    set(Identity {
        name,
        ident,
        parent: Some(parent),
    });
}

/// The `Process-N` path of this process; empty in the main process.
pub(crate) fn ident() -> String {
    get().map_or_else(String::new, |i| i.ident.clone())
}

/// True inside a worker or child process started by mproc.
pub fn is_worker() -> bool {
    get().is_some_and(|i| i.parent.is_some())
}

/// The calling process: `"MainProcess"` in the program's own process.
pub fn current_process() -> ProcessInfo {
    let id = get();
    let name = id.as_ref().map_or("MainProcess", |i| i.name.as_str());
    ProcessInfo::new(name, std::process::id())
}

/// The process that started this one; `None` in the main process.
pub fn parent_process() -> Option<ProcessInfo> {
    get().and_then(|i| i.parent.clone())
}

/// The number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
