//! Starting processes, on the parent side: the long-lived spawner thread,
//! the three start methods, and the fork server's client.
//!
//! Every process mproc starts — a pool worker or a `Process` child — ends up
//! in the child's boot (see `child`) with its socket on fd 0. The start
//! methods differ only in how that process comes to exist:
//!
//! * **Spawn**: this same executable started afresh (`/proc/self/exe`, by
//!   `posix_spawn`) with the worker variable set and the socket as standard
//!   input; a start-up hook turns it into a worker before `main`.
//! * **Forkserver**: a single-threaded server process (`child::forkserver`),
//!   itself spawned the same way the first time it is needed, forks the
//!   worker on request from its clean, thread-free image.
//! * **Fork**: a fork of the calling program (see `sys::fork_worker` for
//!   what the child does and does not touch).
//!
//! Everything is started from one long-lived thread (`mproc-spawner`),
//! because `PR_SET_PDEATHSIG` fires when the *thread* that forked the child
//! exits. Each child arms it and then checks that its parent is still the
//! expected one. A forked child's spawner is a new thread of its own: the
//! spawner is keyed by pid. `README.md` beside this file describes the start
//! methods, how fork is made safe from a multi-threaded parent, and exit
//! handling.

mod forkserver;
mod method;

use std::ffi::CString;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, Once, RwLock};
use std::time::Duration;

pub use self::method::{get_start_method, set_start_method, StartMethod};

use self::forkserver::{ForkserverClient, FORKSERVER};
use crate::child::{boot, entry};
use crate::children::ChildProc;
use crate::sys;

type Job = Box<dyn FnOnce() + Send>;

/// The spawner of one process: a forked child starts its own.
struct Spawner {
    pid: u32,
    tx: mpsc::Sender<Job>,
}

static SPAWNER: Mutex<Option<Spawner>> = Mutex::new(None);

fn spawner() -> mpsc::Sender<Job> {
    let mut slot = SPAWNER.lock().unwrap_or_else(|p| p.into_inner());
    let me = std::process::id();
    if let Some(s) = slot.as_ref().filter(|s| s.pid == me) {
        return s.tx.clone();
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("mproc-spawner".into())
        .spawn(move || {
            for job in rx {
                // The thread must outlive every child (their parent-death
                // signal fires when it exits), so a failing job must not
                // end it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })
        .expect("spawn mproc spawner thread");
    // A copy inherited through fork is forgotten: its thread does not exist
    // here and its channel must not be dropped by this process.
    if let Some(old) = slot.replace(Spawner {
        pid: me,
        tx: tx.clone(),
    }) {
        std::mem::forget(old);
    }
    tx
}

/// Runs `f` on the long-lived spawner thread.
pub(crate) fn on_spawner_thread(f: impl FnOnce() + Send + 'static) {
    std::hint::black_box(boot::hook_anchor());
    // The receiver lives for the whole program; a send cannot fail.
    let _ = spawner().send(Box::new(f));
}

/// Runs `f` on the spawner thread and waits for its result.
pub(crate) fn run_on_spawner<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> std::io::Result<R> {
    let (tx, rx) = mpsc::sync_channel(1);
    on_spawner_thread(move || {
        let _ = tx.send(f());
    });
    rx.recv()
        .map_err(|_| std::io::Error::other("the mproc spawner thread is gone"))
}

/// Starts a process that runs the worker boot with `sock` as its channel, by
/// `method`. Must run on the spawner thread.
pub(crate) fn start_process(method: StartMethod, sock: OwnedFd) -> std::io::Result<ChildProc> {
    match method {
        StartMethod::Spawn => {
            let child = spawn_self(boot::WORKER_ENV, sock)?;
            ChildProc::direct(child.id())
        }
        StartMethod::Fork => fork_self(sock),
        StartMethod::Forkserver => FORKSERVER.with(|fs| {
            let mut fs = fs.borrow_mut();
            // One retry: a server that died is replaced.
            for attempt in 0..2 {
                if fs.is_none() {
                    *fs = Some(ForkserverClient::start()?);
                }
                let client = fs.as_mut().expect("just started");
                match client.fork(&sock) {
                    Ok(child) => return Ok(child),
                    Err(e) if attempt == 0 && client.is_dead() => {
                        tracing::debug!("mproc fork server gone ({e}); starting another");
                        *fs = None;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(std::io::Error::other("the fork server keeps failing"))
        }),
    }
}

/// Starts this program afresh (`/proc/self/exe`, see [`sys::self_exe`])
/// with `role` in its environment and `sock` as stdin. Must run on the
/// spawner thread.
fn spawn_self(role: &str, sock: OwnedFd) -> std::io::Result<Child> {
    let mut cmd = Command::new(std::ffi::OsStr::from_bytes(sys::self_exe().to_bytes()));
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    cmd.env(role, std::process::id().to_string())
        .stdin(Stdio::from(sock))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // `spawn` may return before the child has exec'd, while it still carries
    // the name of the thread that cloned it: that must be the program's, not
    // this helper thread's `mproc-` name.
    let own = sys::thread_name();
    sys::set_thread_name(&program_comm().to_string_lossy());
    let child = cmd.spawn();
    sys::set_thread_name(&own);
    child
}

/// The program's `/proc/self/comm`, for a forked child's main thread (which
/// would otherwise keep the spawner thread's name).
fn program_comm() -> &'static CString {
    static COMM: std::sync::OnceLock<CString> = std::sync::OnceLock::new();
    COMM.get_or_init(|| {
        CString::new(sys::process_name()).unwrap_or_else(|_| CString::from(c"mproc-child"))
    })
}

/// Taken shared by every panic (see [`guard_panics_against_fork`]) and
/// exclusively around each fork.
static FORK_LOCK: RwLock<()> = RwLock::new(());

/// Wraps the panic hook so that no panic is in progress at the instant of a
/// fork. A panic in progress holds std's backtrace lock and the hook's read
/// lock; a child forked then would hang on its first panic.
fn guard_panics_against_fork() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _g = FORK_LOCK.read().unwrap_or_else(|p| p.into_inner());
            prev(info)
        }));
    });
}

fn fork_self(sock: OwnedFd) -> std::io::Result<ChildProc> {
    let comm = program_comm();
    entry::set_fork_parent(std::process::id());
    // The child reads the task registry before it says hello; made here,
    // it is never caught half-built by a fork (another thread building it
    // at that instant would leave the child waiting for it for good).
    let _ = crate::registry::fingerprint();
    guard_panics_against_fork();
    // Locks a forked child may take, held across the fork so that no other
    // thread holds them at that instant; the child releases its copies. A
    // panic in progress may hold the fork lock while it waits for stdout or
    // stderr, or hold stdout while it waits for the fork lock: so the fork
    // lock is only tried, and on failure everything is let go and retried.
    let (out, err, no_panics) = loop {
        let mut out = std::io::stdout().lock();
        let _ = out.flush();
        let err = std::io::stderr().lock();
        match FORK_LOCK.try_write() {
            Ok(g) => break (out, err, g),
            Err(std::sync::TryLockError::Poisoned(p)) => break (out, err, p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                drop((out, err));
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    };
    let table = crate::children::fork_guard();
    let ident = crate::identity::fork_guard();
    let spawner = SPAWNER.lock().unwrap_or_else(|p| p.into_inner());
    let guards = (out, err, table, ident, spawner, no_panics);
    let pid = sys::fork_worker(guards, sock, comm, entry::fork_entry)?;
    ChildProc::direct(pid)
}
