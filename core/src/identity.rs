//! Who this process is: [`current_process`], [`parent_process`],
//! [`cpu_count`].

use std::sync::OnceLock;

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

#[derive(Debug)]
struct Identity {
    name: String,
    parent: Option<ProcessInfo>,
}

static IDENTITY: OnceLock<Identity> = OnceLock::new();

/// Called once in a worker, from the handshake.
pub(crate) fn set_worker_identity(name: String, parent_pid: u32) {
    let _ = IDENTITY.set(Identity {
        name,
        parent: Some(ProcessInfo::new("MainProcess", parent_pid)),
    });
}

/// True inside a worker or child process started by mproc.
pub fn is_worker() -> bool {
    IDENTITY.get().is_some_and(|i| i.parent.is_some())
}

/// The calling process: `"MainProcess"` in the program's own process.
pub fn current_process() -> ProcessInfo {
    let name = IDENTITY.get().map_or("MainProcess", |i| i.name.as_str());
    ProcessInfo::new(name, std::process::id())
}

/// The process that started this one; `None` in the main process.
pub fn parent_process() -> Option<ProcessInfo> {
    IDENTITY.get().and_then(|i| i.parent.clone())
}

/// The number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
