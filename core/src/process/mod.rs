//! [`Process`]: run one task in a process of its own, like Python's
//! `multiprocessing.Process`; the start-method setting; the table of live
//! children behind [`active_children`] and the exit-time handling of daemon
//! and non-daemon children.
//!
//! A `Process` child boots exactly as a pool worker does (see `boot.rs`),
//! with whichever [`StartMethod`] was chosen; the parent then writes a
//! start message (see `protocol.rs`) that tells it to run one task and exit.
//! `README.md` beside this file describes the start methods, how fork is
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

mod child;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::Duration;

use mproc_transport::{socketpair, ByteStream, FrameReader, UnixChannel};
use nix::sys::signal::Signal;

pub(crate) use self::child::ChildProc;

use crate::error::{Error, ErrorKind, ExitInfo, TaskError};
use crate::executor::{encode_one, StartMethod};
use crate::identity::{current_process, ProcessInfo};
use crate::protocol::{encode_frame, StartProcess, MODE_PROCESS, PROTOCOL_VERSION};
use crate::task::Task;

// ----- start method ----------------------------------------------------------

/// 0: not set; otherwise 1 + the method's index.
static START_METHOD: AtomicU8 = AtomicU8::new(0);

fn method_code(m: StartMethod) -> u8 {
    match m {
        StartMethod::Spawn => 1,
        StartMethod::Forkserver => 2,
        StartMethod::Fork => 3,
    }
}

/// Sets the start method used by every [`Process`], executor and pool that
/// does not choose one itself. Like Python's `set_start_method`, it may be
/// called once per program.
///
/// # Errors
/// [`ErrorKind::Spawn`] when the method has already been set.
pub fn set_start_method(method: StartMethod) -> Result<(), Error> {
    START_METHOD
        .compare_exchange(0, method_code(method), Ordering::AcqRel, Ordering::Acquire)
        .map(|_| ())
        .map_err(|_| {
            Error::new(
                ErrorKind::Spawn,
                format!(
                    "the start method has already been set (to {:?})",
                    get_start_method()
                ),
            )
        })
}

/// The start method in effect: the one set by [`set_start_method`], or the
/// default, [`StartMethod::Spawn`]. Reading it never fixes it.
pub fn get_start_method() -> StartMethod {
    match START_METHOD.load(Ordering::Acquire) {
        2 => StartMethod::Forkserver,
        3 => StartMethod::Fork,
        _ => StartMethod::Spawn,
    }
}

// ----- the table of live children ------------------------------------------

/// The shared state behind a [`ProcessHandle`].
#[derive(Debug)]
pub(crate) struct Inner {
    name: String,
    daemon: bool,
    child: ChildProc,
    /// The parent's end of the child's socket, kept until the child is
    /// reaped so its hello never meets a closed socket.
    chan: Mutex<Option<UnixChannel>>,
}

impl Inner {
    fn try_wait(&self) -> Option<ExitInfo> {
        let e = self.child.try_wait();
        if e.is_some() {
            if let Ok(mut c) = self.chan.lock() {
                c.take();
            }
        }
        e
    }
}

/// Children started with [`Process`] and not yet known to have exited.
static TABLE: Mutex<Vec<Arc<Inner>>> = Mutex::new(Vec::new());

fn table() -> MutexGuard<'static, Vec<Arc<Inner>>> {
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Held by the spawner across `fork`, so the child finds the table unlocked.
pub(crate) fn fork_guard() -> MutexGuard<'static, Vec<Arc<Inner>>> {
    table()
}

/// In a forked child: the parent's children are not ours. Their handles own
/// descriptors that the fork closed, so they are forgotten, not dropped.
pub(crate) fn forget_inherited_children() {
    std::mem::forget(std::mem::take(&mut *table()));
    NEXT_PROCESS.store(1, Ordering::Relaxed);
}

/// Reaps finished children and drops them from the table; returns the
/// live ones. The table lock is not held while waiting on a child.
fn reap_finished() -> Vec<Arc<Inner>> {
    let all: Vec<Arc<Inner>> = table().clone();
    let (alive, done): (Vec<_>, Vec<_>) = all.into_iter().partition(|p| p.try_wait().is_none());
    if !done.is_empty() {
        table().retain(|p| !done.iter().any(|d| Arc::ptr_eq(d, p)));
    }
    alive
}

/// The live children started with [`Process`]; finished ones are reaped
/// and left out, as in Python.
pub fn active_children() -> Vec<ProcessInfo> {
    reap_finished()
        .iter()
        .map(|p| ProcessInfo::new(p.name.clone(), p.child.pid()))
        .collect()
}

/// How long daemon children get after SIGTERM at exit before SIGKILL.
const DAEMON_GRACE: Duration = Duration::from_secs(1);

extern "C" fn on_exit() {
    at_exit_cleanup();
}

fn register_exit_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = crate::sys::at_exit(on_exit) {
            tracing::warn!("mproc cannot register its exit handler: {e}");
        }
    });
}

/// At normal exit: ends daemon children and joins the others.
pub(crate) fn at_exit_cleanup() {
    let children: Vec<Arc<Inner>> = std::mem::take(&mut *table());
    for p in children.iter().filter(|p| p.daemon) {
        let _ = p.child.signal(Signal::SIGTERM);
    }
    for p in &children {
        if p.daemon {
            p.child.reap(DAEMON_GRACE);
        } else {
            p.child.wait_timeout(None);
        }
    }
}

// ----- Process ----------------------------------------------------------------

static NEXT_PROCESS: AtomicU64 = AtomicU64::new(1);

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
/// # extern crate mproc_core as mproc;
/// use mproc::{current_process, Process};
///
/// #[mproc_macros::task] // `#[mproc::task]` through the facade crate
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
        let n = NEXT_PROCESS.fetch_add(1, Ordering::Relaxed);
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
            fingerprint: crate::task::fingerprint(),
            name: self.name.clone(),
            ident,
            parent_name: me.name().to_string(),
            parent_pid: me.pid(),
            task: self.task.to_string(),
            args,
        };
        let mut buf = vec![MODE_PROCESS];
        encode_frame(&mut buf, &msg, mproc_transport::MAX_FRAME_LIMIT)
            .map_err(|e| Error::new(ErrorKind::Task, e.message()))?;

        reap_finished();
        register_exit_handler();
        let spawn_err = |e: std::io::Error| {
            Error::new(ErrorKind::Spawn, format!("cannot start a process: {e}"))
        };
        let (ours, theirs) = socketpair().map_err(spawn_err)?;
        let theirs = theirs.into_fd();
        let child = crate::boot::run_on_spawner(move || crate::boot::start_process(method, theirs))
            .and_then(|r| r)
            .map_err(spawn_err)?;
        if let Err(e) = ours.write_all(&buf) {
            let _ = child.signal(Signal::SIGKILL);
            child.wait_timeout(None);
            return Err(spawn_err(e));
        }
        let inner = Arc::new(Inner {
            name: self.name,
            daemon: self.daemon,
            child,
            chan: Mutex::new(Some(ours)),
        });
        table().push(inner.clone());
        Ok(ProcessHandle { inner })
    }
}

/// A started [`Process`]. Dropping the handle does not stop the process.
#[derive(Debug, Clone)]
pub struct ProcessHandle {
    inner: Arc<Inner>,
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
        table().retain(|p| !Arc::ptr_eq(p, &self.inner));
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

// ----- the child side -------------------------------------------------------

/// In a child started by `Process`: reads the start message, runs the task
/// and returns the exit code.
pub(crate) fn run_child(chan: &dyn ByteStream) -> Result<i32, String> {
    let mut reader = FrameReader::new(mproc_transport::MAX_FRAME_LIMIT);
    let frame = reader
        .next_frame(chan)
        .map_err(|e| format!("start message: {e}"))?;
    let msg: StartProcess =
        postcard::from_bytes(frame).map_err(|e| format!("bad start message: {e}"))?;
    if msg.version != PROTOCOL_VERSION || msg.fingerprint != crate::task::fingerprint() {
        return Err("the parent is another build of the program".into());
    }
    crate::sys::set_thread_name(&msg.name);
    crate::sys::set_process_name(&msg.name);
    crate::identity::set_child_identity(
        msg.name.clone(),
        msg.ident,
        ProcessInfo::new(msg.parent_name, msg.parent_pid),
    );
    Ok(run_target(&msg.name, &msg.task, &msg.args))
}

fn run_target(name: &str, task: &str, args: &[u8]) -> i32 {
    let Some(entry) = crate::task::lookup(task) else {
        eprintln!(
            "mproc: {name}: {}",
            TaskError::UnknownTask { name: task.into() }
        );
        return 1;
    };
    let result = match (entry.run)(args) {
        crate::worker::BatchRun::Done(r) => r,
        crate::worker::BatchRun::Async(f) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(f),
            Err(e) => {
                eprintln!("mproc: {name}: cannot build a tokio runtime: {e}");
                return 1;
            }
        },
    };
    // One item: a leading length of 1, then Ok (0) or Err (1).
    let err = match result {
        Ok(bytes) if bytes.get(1) == Some(&0) => return 0,
        Ok(bytes) => postcard::from_bytes::<TaskError>(bytes.get(2..).unwrap_or(&[])).ok(),
        Err(e) => Some(e),
    };
    match err {
        // The panic hook has printed the message already.
        Some(TaskError::Panicked { .. }) => {}
        Some(e) => eprintln!("mproc: {name}: {e}"),
        None => eprintln!("mproc: {name}: the task failed"),
    }
    1
}
