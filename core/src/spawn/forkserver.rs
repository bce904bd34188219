//! The program's client of the fork server (the server itself runs in
//! `child::forkserver`): one control socket, one status stream per child.

use std::cell::RefCell;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::spawn_self;
use crate::child::{boot, forkserver};
use crate::children::ChildProc;
use crate::sys;

thread_local! {
    /// The fork server of this process; only the spawner thread uses it.
    pub(super) static FORKSERVER: RefCell<Option<ForkserverClient>> = const { RefCell::new(None) };
}

/// The spawner thread's connection to the fork server.
pub(super) struct ForkserverClient {
    ctl: UnixStream,
    server: ChildProc,
}

/// How long the fork server may take to answer a fork request.
const FORK_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

impl ForkserverClient {
    pub(super) fn start() -> std::io::Result<Self> {
        let (ours, theirs) = UnixStream::pair()?;
        let child = spawn_self(boot::FORKSERVER_ENV, OwnedFd::from(theirs))?;
        let server = ChildProc::direct(child.id())?;
        Ok(ForkserverClient { ctl: ours, server })
    }

    pub(super) fn is_dead(&self) -> bool {
        self.server.try_wait().is_some()
    }

    /// Asks the server to fork a worker on `sock`. The server sends the
    /// child's pid on a status stream, and later its wait status.
    pub(super) fn fork(&mut self, sock: &OwnedFd) -> std::io::Result<ChildProc> {
        let (mut status_r, status_w) = UnixStream::pair()?;
        sys::send_fds(
            &self.ctl,
            forkserver::REQ_FORK,
            &[sock.as_raw_fd(), status_w.as_raw_fd()],
        )?;
        drop(status_w);
        status_r.set_read_timeout(Some(FORK_REPLY_TIMEOUT))?;
        let mut b = [0u8; 8];
        status_r.read_exact(&mut b).map_err(|e| {
            std::io::Error::new(e.kind(), format!("the fork server did not answer: {e}"))
        })?;
        status_r.set_read_timeout(None)?;
        let pid = i64::from_le_bytes(b);
        if pid <= 0 {
            return Err(std::io::Error::from_raw_os_error(-pid as i32));
        }
        ChildProc::relayed(pid as u32, status_r)
    }
}
