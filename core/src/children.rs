//! The processes mproc started: [`ChildProc`], one child however it was
//! started, and the table of live `Process` children with the exit-time
//! handling of daemon and non-daemon children. Used by the parent side
//! (`spawn`, `process`, the scheduler) and by the child side (a forked child
//! forgets its parent's table; a worker's exit joins its own children).
//!
//! A spawned or forked child is ours: we reap it with `waitpid`. A child
//! forked by the fork server is the server's: the server reaps it and relays
//! its wait status on a per-child stream. Both are watched through a pidfd,
//! which polls readable once the process has exited and sends signals to
//! that very process, never to a later process that reused its pid.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use mproc_transport::UnixChannel;

use nix::sys::signal::Signal;

use crate::error::ExitInfo;
use crate::sys;

/// How long the fork server may take to relay a status once the child has
/// exited.
const RELAY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum Kind {
    /// Our own child: reaped with `waitpid`.
    Direct,
    /// A child of the fork server, which sends its raw wait status here.
    Relayed(UnixStream),
}

/// A process started by mproc.
#[derive(Debug)]
pub(crate) struct ChildProc {
    pid: u32,
    pidfd: OwnedFd,
    kind: Kind,
    exit: Mutex<Option<ExitInfo>>,
}

impl ChildProc {
    /// A child of this process. If it cannot be watched (no descriptor
    /// left for its pidfd), it is killed and reaped rather than leaked.
    pub(crate) fn direct(pid: u32) -> std::io::Result<Self> {
        Self::new(pid, Kind::Direct).inspect_err(|_| {
            // The one signal by raw pid: without a pidfd there is no other
            // way, and the pid is still this unreaped child's own.
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        })
    }

    /// A child of the fork server, whose status arrives on `status`.
    pub(crate) fn relayed(pid: u32, status: UnixStream) -> std::io::Result<Self> {
        Self::new(pid, Kind::Relayed(status))
    }

    fn new(pid: u32, kind: Kind) -> std::io::Result<Self> {
        let pidfd = sys::pidfd_open(pid)?;
        Ok(ChildProc {
            pid,
            pidfd,
            kind,
            exit: Mutex::new(None),
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    fn lock(&self) -> MutexGuard<'_, Option<ExitInfo>> {
        self.exit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How the process ended, reaping it if it just did; `None` while it
    /// runs.
    pub(crate) fn try_wait(&self) -> Option<ExitInfo> {
        let mut exit = self.lock();
        if exit.is_none() {
            *exit = self.poll_exit();
        }
        *exit
    }

    fn poll_exit(&self) -> Option<ExitInfo> {
        let to_info = |(code, signal)| ExitInfo { code, signal };
        match &self.kind {
            Kind::Direct => match sys::try_reap(self.pid) {
                Ok(r) => r.map(to_info),
                // Reaped elsewhere (not by mproc): the status is lost.
                Err(_) => Some(ExitInfo {
                    code: None,
                    signal: None,
                }),
            },
            Kind::Relayed(status) => {
                if !sys::wait_readable(&self.pidfd, Some(Duration::ZERO)).unwrap_or(true) {
                    return None;
                }
                let mut s = status;
                let _ = s.set_read_timeout(Some(RELAY_TIMEOUT));
                let mut b = [0u8; 4];
                Some(match s.read_exact(&mut b) {
                    Ok(()) => to_info(sys::decode_wait_status(i32::from_le_bytes(b))),
                    // The fork server died first; the status is lost.
                    Err(_) => ExitInfo {
                        code: None,
                        signal: None,
                    },
                })
            }
        }
    }

    /// Waits up to `timeout` (`None`: no limit) for the process to exit.
    pub(crate) fn wait_timeout(&self, timeout: Option<Duration>) -> Option<ExitInfo> {
        let deadline = timeout.map(|d| Instant::now() + d);
        loop {
            if let Some(e) = self.try_wait() {
                return Some(e);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return None;
            }
            // A failed poll must not turn into a busy loop.
            if sys::wait_readable(&self.pidfd, left).is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Sends `sig` unless the process has already exited.
    pub(crate) fn signal(&self, sig: Signal) -> std::io::Result<()> {
        let exit = self.lock();
        if exit.is_some() {
            return Ok(());
        }
        match sys::pidfd_send_signal(&self.pidfd, sig) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            // No pidfd_send_signal (Linux before 5.1, or valgrind, which
            // does not know the call): kill(2) by pid. A direct child is
            // reaped only under this lock, so while `exit` is None its pid
            // is still its own. A fork server's child is reaped there: the
            // pidfd says whether it has exited, leaving only the instant
            // between that look and the kill for its pid to be reused.
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                if matches!(self.kind, Kind::Relayed(_))
                    && sys::wait_readable(&self.pidfd, Some(Duration::ZERO)).unwrap_or(true)
                {
                    return Ok(());
                }
                match sys::kill_pid(self.pid, sig) {
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                    r => r,
                }
            }
            r => r,
        }
    }

    /// Waits for an exiting child: up to `grace`, then SIGKILL.
    pub(crate) fn reap(&self, grace: Duration) -> ExitInfo {
        if let Some(e) = self.wait_timeout(Some(grace)) {
            return e;
        }
        let _ = self.signal(Signal::SIGKILL);
        self.wait_timeout(None).unwrap_or(ExitInfo {
            code: None,
            signal: None,
        })
    }
}

// ----- the table of live `Process` children ---------------------------------

/// One child started with `Process`: the state behind a `ProcessHandle`.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) child: ChildProc,
    /// The parent's end of the child's socket, kept until the child is
    /// reaped so its hello never meets a closed socket.
    pub(crate) chan: Mutex<Option<UnixChannel>>,
}

impl Started {
    /// How the child ended, once it has (its socket is released then).
    pub(crate) fn try_wait(&self) -> Option<ExitInfo> {
        let e = self.child.try_wait();
        if e.is_some() {
            if let Ok(mut c) = self.chan.lock() {
                c.take();
            }
        }
        e
    }
}

/// Children started with `Process` and not yet known to have exited.
static TABLE: Mutex<Vec<Arc<Started>>> = Mutex::new(Vec::new());

fn table() -> MutexGuard<'static, Vec<Arc<Started>>> {
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The next `Process-N` number of this process.
static NEXT_PROCESS: AtomicU64 = AtomicU64::new(1);

/// Takes the next `Process-N` number.
pub(crate) fn next_process_number() -> u64 {
    NEXT_PROCESS.fetch_add(1, Ordering::Relaxed)
}

/// Adds a started child to the table (and makes sure the exit handler that
/// joins it is registered).
pub(crate) fn register(p: Arc<Started>) {
    register_exit_handler();
    table().push(p);
}

/// Removes a child from the table (after it was joined).
pub(crate) fn forget(p: &Arc<Started>) {
    table().retain(|q| !Arc::ptr_eq(q, p));
}

/// Held by the spawner across `fork`, so the child finds the table unlocked.
pub(crate) fn fork_guard() -> MutexGuard<'static, Vec<Arc<Started>>> {
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
pub(crate) fn reap_finished() -> Vec<Arc<Started>> {
    let all: Vec<Arc<Started>> = table().clone();
    let (alive, done): (Vec<_>, Vec<_>) = all.into_iter().partition(|p| p.try_wait().is_none());
    if !done.is_empty() {
        table().retain(|p| !done.iter().any(|d| Arc::ptr_eq(d, p)));
    }
    alive
}

/// How long daemon children get after SIGTERM at exit before SIGKILL.
const DAEMON_GRACE: Duration = Duration::from_secs(1);

extern "C" fn on_exit() {
    at_exit_cleanup();
}

fn register_exit_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = sys::at_exit(on_exit) {
            tracing::warn!("mproc cannot register its exit handler: {e}");
        }
    });
}

/// At normal exit: ends daemon children and joins the others.
pub(crate) fn at_exit_cleanup() {
    let children: Vec<Arc<Started>> = std::mem::take(&mut *table());
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

/// Exits a worker or child process: the children it started itself are
/// handled as at any normal exit (daemons ended, others joined), stdio is
/// flushed, and no exit handler inherited from a forked parent runs.
pub(crate) fn exit_child(code: i32) -> ! {
    at_exit_cleanup();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    sys::exit_now(code)
}
