//! [`Process`]: run one task in a process of its own, like Python's
//! `multiprocessing.Process`, and [`active_children`]. The table of live
//! children and the exit-time handling of daemon and non-daemon children are
//! in `children.rs`; the child's side is `child::process`.
//!
//! A `Process` child boots exactly as a pool worker does (see `spawn`),
//! with whichever [`StartMethod`] was chosen; the parent then writes a
//! start message (see `protocol.rs`) that tells it to run one task and exit.
//! `spawn/README.md` describes the start methods, how fork is
//! made safe from a multi-threaded parent, and exit handling.
//!
//! # Exit of the parent
//! At normal exit (return from `main`, `std::process::exit`, a panic that
//! ends `main`) an exit handler terminates daemon children (SIGTERM, then
//! SIGKILL after a second) and joins the others, as Python does. If the
//! parent dies any other way, even by SIGKILL, every child gets SIGKILL from
//! the kernel (`PR_SET_PDEATHSIG`), so none outlives it.
//!
//! # Fork hazards
//! With [`StartMethod::Fork`] the child is a copy of the parent, as in
//! Python. mproc makes its own part safe (see `sys::fork_worker`): the child
//! runs only mproc's boot on a fresh thread, with stdout, stderr and mproc's
//! own locks released, default signal handlers, and no inherited descriptor
//! but the standard streams. User code running in a forked child still
//! carries the usual hazards: a lock (a `Mutex`, a `tracing` subscriber's
//! writer, a connection pool) that another parent thread held at the fork
//! stays locked forever; data another thread was changing may be
//! half-written; objects that own descriptors (files, sockets, runtimes)
//! refer to descriptors that are closed in the child; threads of the parent
//! (a tokio runtime's workers) do not exist. Prefer [`StartMethod::Spawn`] or
//! [`StartMethod::Forkserver`] when the parent runs other threads that touch
//! shared state. A thread that keeps `std::io::stdout().lock()` while
//! starting a forked process deadlocks, because the fork waits for that
//! lock.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mproc_transport::{socketpair, ByteStream};
use nix::sys::signal::Signal;

use crate::children::{self, Started};
use crate::error::{Error, ErrorKind, ExitInfo, TaskError};
use crate::identity::{current_process, ProcessInfo};
use crate::protocol::batch::encode_one;
use crate::protocol::{encode_frame, StartProcess, MODE_PROCESS, PROTOCOL_VERSION};
use crate::registry::Task;
use crate::spawn::{get_start_method, StartMethod};

/// The live children started with [`Process`]; finished ones are reaped
/// and left out, as in Python.
pub fn active_children() -> Vec<ProcessInfo> {
    children::reap_finished()
        .iter()
        .map(|p| ProcessInfo::new(p.name.clone(), p.child.pid()))
        .collect()
}

// ----- Process ----------------------------------------------------------------

/// A task to run in a process of its own, like Python's
/// `multiprocessing.Process`: the builder; [`start`](Self::start) gives the
/// [`ProcessHandle`].
///
/// The task's return value is discarded. A task that panics makes the
/// process exit with code 1, its message on stderr. Like pool workers, the
/// child ignores SIGINT: a Ctrl-C reaches the whole process group, and the
/// parent decides how its children end (if the parent dies of it, they die
/// with it).
///
/// # Fork hazards
/// With [`StartMethod::Fork`] the child is a copy of the parent, as in
/// Python. mproc makes its own part safe: the child runs only mproc's boot on
/// a fresh thread, with stdout, stderr and mproc's own locks released (the
/// fork waits until no thread is inside them or inside a panic), default
/// signal handlers, and no inherited descriptor but the standard streams.
/// User code in a forked child still carries the usual hazards:
/// * a lock another parent thread held at the fork (a `Mutex`, a logger's
///   writer, a connection pool) stays locked forever;
/// * data another thread was changing may be half-written;
/// * the parent's other threads (a tokio runtime's workers) do not exist,
///   and objects that own descriptors (files, sockets, runtimes) refer to
///   descriptors that are closed in the child;
/// * `std::env::set_var` racing with the fork, or a `tracing` callsite being
///   registered at that instant, can leave their global locks held.
///
/// A thread that keeps `std::io::stdout().lock()` while it starts a forked
/// process deadlocks, because the fork waits for that lock. Prefer
/// [`StartMethod::Spawn`] or [`StartMethod::Forkserver`] when other threads
/// of the parent touch shared state.
///
/// # Examples
/// ```no_run
/// use mproc::{current_process, Process};
///
/// #[mproc::task]
/// fn greet(who: String) {
///     println!("hello {who} from {}", current_process().name());
/// }
///
/// fn main() -> Result<(), mproc::Error> {
///     let p = Process::new(greet, "world".to_string()).start()?;
///     p.join()?;
///     assert_eq!(p.exitcode(), Some(0));
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Process {
    task: &'static str,
    args: Result<Vec<u8>, TaskError>,
    name: String,
    daemon: bool,
    method: Option<StartMethod>,
}

impl Process {
    /// A process that will run `task(args)`. Takes the next `Process-N`
    /// name whether or not the process is renamed or ever started.
    pub fn new<T: Task>(task: T, args: T::Args) -> Self {
        let _ = task;
        let n = children::next_process_number();
        let ident = crate::identity::ident();
        let path = if ident.is_empty() {
            n.to_string()
        } else {
            format!("{ident}:{n}")
        };
        Process {
            task: T::NAME,
            args: encode_one(&args),
            name: format!("Process-{path}"),
            daemon: false,
            method: None,
        }
    }

    /// Names the process ([`current_process`] in the child reports it).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A daemon process is ended when the parent exits; a non-daemon one is
    /// waited for (default: false).
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// How to start this process (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Starts the process and returns at once.
    ///
    /// # Errors
    /// [`ErrorKind::Task`] when the arguments cannot be encoded;
    /// [`ErrorKind::Spawn`] when the process cannot be started.
    pub fn start(self) -> Result<ProcessHandle, Error> {
        let args = self.args?;
        let method = self.method.unwrap_or_else(get_start_method);
        let me = current_process();
        let ident = self
            .name
            .strip_prefix("Process-")
            .map(str::to_string)
            .unwrap_or_default();
        let msg = StartProcess {
            version: PROTOCOL_VERSION,
            fingerprint: crate::registry::fingerprint(),
            name: self.name.clone(),
            ident,
            parent_name: me.name().to_string(),
            parent_pid: me.pid(),
            task: self.task.to_string(),
            args,
        };
        let mut buf = vec![MODE_PROCESS];
        encode_frame(&mut buf, &msg, mproc_transport::MAX_FRAME_LIMIT)
            .map_err(|e| Error::with_source(ErrorKind::Task, "cannot send the arguments", e))?;

        children::reap_finished();
        let spawn_err =
            |e: std::io::Error| Error::with_source(ErrorKind::Spawn, "cannot start a process", e);
        let (ours, theirs) = socketpair().map_err(spawn_err)?;
        let theirs = theirs.into_fd();
        let child =
            crate::spawn::run_on_spawner(move || crate::spawn::start_process(method, theirs))
                .and_then(|r| r)
                .map_err(spawn_err)?;
        if let Err(e) = ours.write_all(&buf) {
            let _ = child.signal(Signal::SIGKILL);
            child.wait_timeout(None);
            return Err(spawn_err(e));
        }
        let inner = Arc::new(Started {
            name: self.name,
            daemon: self.daemon,
            child,
            chan: Mutex::new(Some(ours)),
        });
        children::register(inner.clone());
        Ok(ProcessHandle { inner })
    }
}

/// A started [`Process`]. Dropping the handle does not stop the process.
#[derive(Debug, Clone)]
pub struct ProcessHandle {
    inner: Arc<Started>,
}

impl ProcessHandle {
    /// The process's name (`"Process-1"` unless named).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The operating-system process id.
    pub fn pid(&self) -> u32 {
        self.inner.child.pid()
    }

    /// Whether it is a daemon process.
    pub fn is_daemon(&self) -> bool {
        self.inner.daemon
    }

    /// True until the process has exited.
    pub fn is_alive(&self) -> bool {
        self.inner.try_wait().is_none()
    }

    fn forget(&self) {
        children::forget(&self.inner);
    }

    /// Waits for the process to exit.
    ///
    /// # Errors
    /// None on Linux today; the `Result` leaves room for platforms where
    /// waiting can fail.
    pub fn join(&self) -> Result<(), Error> {
        self.inner.child.wait_timeout(None);
        self.inner.try_wait();
        self.forget();
        Ok(())
    }

    /// Waits up to `timeout`; true once the process has exited.
    ///
    /// # Errors
    /// As [`join`](Self::join).
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        let done = self.inner.child.wait_timeout(Some(timeout)).is_some();
        if done {
            self.inner.try_wait();
            self.forget();
        }
        Ok(done)
    }

    /// [`join`](Self::join) for async code: waits on a helper thread, so no
    /// runtime thread blocks.
    pub fn join_async(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let (tx, rx) = futures::channel::oneshot::channel();
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("mproc-join".into())
            .spawn(move || {
                let _ = tx.send(me.join());
            });
        async move {
            spawned.map_err(|e| Error::new(ErrorKind::Io, format!("cannot wait: {e}")))?;
            rx.await
                .unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, "the waiting thread died")))
        }
    }

    /// Asks the process to stop (SIGTERM), as Python's `terminate`. No-op
    /// once it has exited.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the signal cannot be sent.
    pub fn terminate(&self) -> Result<(), Error> {
        self.inner
            .child
            .signal(Signal::SIGTERM)
            .map_err(Error::from)
    }

    /// Kills the process (SIGKILL). No-op once it has exited.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the signal cannot be sent.
    pub fn kill(&self) -> Result<(), Error> {
        self.inner
            .child
            .signal(Signal::SIGKILL)
            .map_err(Error::from)
    }

    /// `None` while the process runs; then its exit code, or minus the
    /// number of the signal that ended it (as in Python).
    pub fn exitcode(&self) -> Option<i32> {
        self.inner.try_wait().map(|e| match (e.code, e.signal) {
            (_, Some(sig)) => -sig,
            (Some(code), None) => code,
            (None, None) => -1,
        })
    }

    /// How the process ended, once it has.
    pub fn exit_info(&self) -> Option<ExitInfo> {
        self.inner.try_wait()
    }

    /// The name and pid, as [`ProcessInfo`].
    pub fn info(&self) -> ProcessInfo {
        ProcessInfo::new(self.inner.name.clone(), self.pid())
    }
}
