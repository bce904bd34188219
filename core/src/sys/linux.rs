//! Linux implementation of the OS seam: descriptor juggling at worker boot,
//! parent-death signals, process names, and the one-page shared counter a
//! worker uses to tell its parent how far it got.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU64;

use mproc_transport::shm_map::Mapping;

use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::stat::Mode;

/// Moves the descriptor at fd 0 (the worker's socket, passed as stdin so that
/// std can use `posix_spawn`) to a fresh close-on-exec descriptor, and puts
/// `/dev/null` on fd 0.
pub(crate) fn take_stdin_socket() -> io::Result<OwnedFd> {
    let new = fcntl(std::io::stdin(), FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(io::Error::from)?;
    // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` just returned a new descriptor that
    // nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(new) };
    let null = open(
        "/dev/null",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    // dup2 onto 0 replaces the socket there; `null` is closed on drop.
    nix::unistd::dup2_stdin(&null).map_err(io::Error::from)?;
    Ok(sock)
}

/// Asks the kernel to SIGKILL this process when its parent thread dies, then
/// checks that the parent has not already gone (the race-free order).
pub(crate) fn die_with_parent(expected_parent: u32) -> bool {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    nix::unistd::getppid().as_raw() as u32 == expected_parent
}

/// Sets the kernel's name for the calling thread (`/proc/PID/comm` for the
/// main thread); truncated to 15 bytes.
pub(crate) fn set_thread_name(name: &str) {
    let short: String = name.chars().filter(|c| *c != '\0').take(15).collect();
    if let Ok(c) = CString::new(short) {
        let _ = nix::sys::prctl::set_name(&c);
    }
}

/// The kernel's name for the calling thread.
pub(crate) fn thread_name() -> String {
    nix::sys::prctl::get_name()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Workers ignore SIGINT: a Ctrl-C reaches the whole process group, and the
/// parent decides how its workers end.
pub(crate) fn ignore_sigint() {
    // SAFETY: installing SIG_IGN registers no Rust handler, so no
    // async-signal-safety requirement arises.
    let _ = unsafe { signal(Signal::SIGINT, SigHandler::SigIgn) };
}

/// Exits at once, without running exit handlers or flushing stdio buffers
/// that another thread might hold locked.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// Pages of shared memory seen as atomic `u64` words, shared between a
/// parent and one worker through a memfd (nothing appears in `/dev/shm`,
/// and the memory goes away with the last mapping). They hold a worker's
/// claim table and the results it holds back (see `protocol::claims`).
#[derive(Debug)]
pub(crate) struct SharedPage {
    map: Mapping,
    fd: OwnedFd,
}

const PAGE: usize = 4096;

impl SharedPage {
    /// Creates `pages` zeroed pages.
    pub(crate) fn create(pages: usize) -> io::Result<Self> {
        let (map, fd) = Mapping::create(c"mproc-claims", pages * PAGE)?;
        Ok(SharedPage { map, fd })
    }

    /// Maps `pages` pages received from the parent.
    pub(crate) fn map(fd: OwnedFd, pages: usize) -> io::Result<Self> {
        let map = Mapping::map(&fd, pages * PAGE)?;
        Ok(SharedPage { map, fd })
    }

    /// The descriptor, to pass to the other process.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The whole mapping as atomic words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        let p = self.map.base().cast::<AtomicU64>();
        let n = self.map.len() / std::mem::size_of::<AtomicU64>();
        debug_assert_eq!(p as usize % std::mem::align_of::<AtomicU64>(), 0);
        // SAFETY: `map` is a live, page-aligned shared mapping of `len` bytes
        // for as long as `self` lives, accessed only through these atomics
        // (in every process); memfd pages start zeroed, a valid value.
        unsafe { std::slice::from_raw_parts(p, n) }
    }
}

/// The CPU this thread runs on now (`None` if the kernel does not say).
pub(crate) fn current_cpu() -> Option<u32> {
    // SAFETY: sched_getcpu takes no arguments and returns a CPU number or
    // -1; it touches no memory of ours.
    u32::try_from(unsafe { libc::sched_getcpu() }).ok()
}

/// True when this thread runs under the default policy, `SCHED_OTHER`
/// (not real-time, batch or idle, which a user may have chosen).
pub(crate) fn default_policy() -> bool {
    // SAFETY: sched_getscheduler(0) reads the calling thread's policy and
    // touches no memory of ours.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_OTHER }
}

/// Puts this thread under `SCHED_BATCH` (`on`) or back under
/// `SCHED_OTHER`, its nice value unchanged. A batch thread woken on a CPU
/// that runs another thread waits for its turn instead of preempting it.
pub(crate) fn batch_policy(on: bool) -> io::Result<()> {
    let policy = if on {
        libc::SCHED_BATCH
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid 0
    // is the calling thread.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ignores SIGPIPE: a write to a pipe whose reader is gone then fails with
/// `EPIPE` instead of killing the process.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN registers no Rust handler.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_goes_to_batch_and_back() {
        // On a thread of its own: the policy is per thread.
        std::thread::spawn(|| {
            assert!(default_policy(), "a new thread has the default policy");
            batch_policy(true).unwrap();
            // SAFETY: as in `default_policy`.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_BATCH);
            assert!(!default_policy());
            batch_policy(false).unwrap();
            assert!(default_policy());
        })
        .join()
        .unwrap();
    }
}
