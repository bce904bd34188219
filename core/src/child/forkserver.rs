//! The fork server: a single-threaded process that forks workers on request.
//!
//! It is this same executable, spawned (see `spawn`) with
//! `__MPROC_FORKSERVER` set the first time a process is started with
//! [`StartMethod::Forkserver`](crate::StartMethod::Forkserver). Its start-up
//! hook never returns to `main`, so it never runs user code and never starts
//! a thread: every worker it forks comes from a clean, thread-free image.
//! It names itself `mproc-forksrv` (`/proc/PID/comm`).
//!
//! # Protocol
//! The program's spawner thread sends one byte, [`REQ_FORK`], carrying two
//! descriptors: the worker's socket and the write end of a *status stream*.
//! The server forks; the child boots as a worker on that socket. The server
//! writes the child's pid (8 bytes, little-endian; minus an errno if fork
//! failed) on the status stream, and, once it has reaped the child, its raw
//! wait status (4 bytes), then closes the stream.
//!
//! # Lifetime
//! The server dies with the program: it is the program's child with
//! `PR_SET_PDEATHSIG`, and it exits at end of stream on its control socket.
//! Its children die with it the same way (their parent is the server), and
//! they see end of stream on their socket to the program.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{send, MsgFlags};

use crate::sys;

/// A request to fork a worker.
pub(crate) const REQ_FORK: u8 = b'F';

fn send_all(fd: &OwnedFd, bytes: &[u8]) {
    use std::os::fd::AsRawFd;
    let _ = send(fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL);
}

/// The fork server's main loop; never returns.
pub(crate) fn serve(program: u32) -> ! {
    sys::ignore_sigint();
    if !sys::die_with_parent(program) {
        sys::exit_now(0);
    }
    sys::set_thread_name("mproc-forksrv");
    let Ok(ctl) = sys::take_stdin_socket() else {
        sys::exit_now(70)
    };
    let comm = std::fs::read_to_string(format!("/proc/{program}/comm"))
        .ok()
        .and_then(|s| std::ffi::CString::new(s.trim_end()).ok())
        .unwrap_or_else(|| std::ffi::CString::from(c"exe"));
    let Ok(sigchld) = sys::sigchld_fd() else {
        sys::exit_now(70)
    };
    super::entry::set_fork_parent(std::process::id());
    let mut status: HashMap<u32, OwnedFd> = HashMap::new();
    loop {
        let mut fds = [
            PollFd::new(ctl.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigchld.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => sys::exit_now(71),
        }
        let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
        let (ctl_ready, child_exited) = (ready(&fds[0]), ready(&fds[1]));
        if child_exited {
            while let Ok(Some(_)) = sigchld.read_signal() {}
            for (pid, st) in sys::reap_any() {
                if let Some(fd) = status.remove(&pid) {
                    send_all(&fd, &st.to_le_bytes());
                }
            }
        }
        if ctl_ready {
            match sys::recv_byte_fds(&ctl) {
                Ok(Some((REQ_FORK, fds))) if fds.len() == 2 => {
                    let mut fds = fds.into_iter();
                    let (sock, st) = (fds.next().expect("two"), fds.next().expect("two"));
                    match sys::fork_worker((), sock, &comm, super::entry::fork_entry) {
                        Ok(pid) => {
                            send_all(&st, &i64::from(pid).to_le_bytes());
                            status.insert(pid, st);
                        }
                        Err(e) => {
                            let errno = i64::from(e.raw_os_error().unwrap_or(libc::EAGAIN));
                            send_all(&st, &(-errno).to_le_bytes());
                        }
                    }
                }
                Ok(Some(_)) => {} // a malformed request: ignore it
                // The program is gone (or closed us): so are we.
                Ok(None) | Err(_) => sys::exit_now(0),
            }
        }
    }
}
