//! [`ChildProc`]: one process mproc started, however it was started.
//!
//! A spawned or forked child is ours: we reap it with `waitpid`. A child
//! forked by the fork server is the server's: the server reaps it and relays
//! its wait status on a per-child stream. Both are watched through a pidfd,
//! which polls readable once the process has exited and sends signals to
//! that very process, never to a later process that reused its pid.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
