//! Linux process primitives for the three start methods: pidfds (race-free
//! waiting and signalling), `fork` of a worker from a multi-threaded parent
//! or from the fork server, exit handlers, and descriptor passing.
//!
//! # Fork from a multi-threaded parent
//! After `fork` only the calling thread exists in the child; any lock another
//! thread held stays locked forever, and data another thread was changing may
//! be half-written. [`fork_worker`] therefore runs, in the child, only this:
//! drop the guards the caller took before forking (so the locks they hold —
//! stdout, stderr, mproc's process table — are released by the thread that
//! owns them), name the main thread, restore default signal handlers and an
//! empty signal mask, move the worker's socket to fd 0, close every other
//! inherited descriptor, and run `entry` on a fresh thread created with
//! `pthread_create` (so it inherits no thread-local state of the parent's
//! threads, not even libtest's output capture). `entry` is mproc's worker
//! boot, which touches no parent state. The allocator is glibc's, whose
//! `fork` resets its locks in the child.

use std::ffi::{c_void, CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How a process ended: `(code, signal)`, as [`crate::ExitInfo`].
pub(crate) type RawExit = (Option<i32>, Option<i32>);

/// Opens a pidfd for `pid`: a handle that names this very process even after
/// its pid is reused, and that polls readable once the process has exited.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: `pidfd_open(pid, 0)` takes plain integers and returns a new
    // descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this descriptor for us; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `sig` to process `pid` with kill(2): only where the pid cannot
/// have been reused (see `ChildProc::signal`).
pub(crate) fn kill_pid(pid: u32, sig: Signal) -> io::Result<()> {
    nix::sys::signal::kill(Pid::from_raw(pid as i32), sig).map_err(io::Error::from)
}

/// Sends `sig` to the process behind `pidfd`. A process that has exited
/// (even if its pid was reused since) gives `ESRCH`, never a stranger.
pub(crate) fn pidfd_send_signal(pidfd: &impl AsFd, sig: Signal) -> io::Result<()> {
    // SAFETY: plain integer arguments; a null `siginfo` is allowed and means
    // "as kill(2) would send it".
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_fd().as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until `fd` is readable (or hung up) or `timeout` passes (`None`:
/// no limit). Returns whether it became ready.
pub(crate) fn wait_readable(fd: &impl AsFd, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.map(|d| std::time::Instant::now() + d);
    loop {
        let t = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                // Round up so a short wait does not spin at 0 ms.
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, t) {
            Ok(0) => {
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reaps child `pid` if it has exited; `None` while it runs.
pub(crate) fn try_reap(pid: u32) -> io::Result<Option<RawExit>> {
    loop {
        match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some((Some(code), None))),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Some((None, Some(sig as i32)))),
            Ok(_) => return Ok(None),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Decodes a raw `wait` status.
pub(crate) fn decode_wait_status(status: i32) -> RawExit {
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}

/// Reaps every exited child of this process without blocking, returning the
/// pid and raw wait status of each (used by the fork server).
pub(crate) fn reap_any() -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid, writable int for the duration of the
        // call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            out.push((pid as u32, status));
            continue;
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return out;
    }
}

/// Blocks `SIGCHLD` in the calling thread and returns a descriptor that
/// becomes readable when one arrives (the fork server's event loop).
pub(crate) fn sigchld_fd() -> io::Result<nix::sys::signalfd::SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(io::Error::from)?;
    nix::sys::signalfd::SignalFd::with_flags(
        &mask,
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    )
    .map_err(io::Error::from)
}

/// Empties the signal mask and puts every caught signal back to its default
/// action, as `execve` would; ignored signals stay ignored.
fn reset_signals() {
    let _ =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `old` is a valid, writable sigaction; querying with a null
        // new action changes nothing.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
            continue; // signals reserved by the C library
        }
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            // SAFETY: installing SIG_DFL registers no handler.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

/// Puts `sock` on fd 0 and closes every other descriptor from 3 up.
fn isolate_descriptors(sock: OwnedFd) {
    let raw = sock.into_raw_fd();
    if raw != 0 {
        // SAFETY: `raw` is a descriptor we own; dup2 onto 0 replaces stdin.
        unsafe { libc::dup2(raw, 0) };
    }
    // SAFETY: closes descriptors 3 and up; none of them is referenced by
    // code that runs in this child from here on (the worker opens its own).
    unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
}

extern "C" fn fresh_thread_main(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the `Box<fn() -> i32>` leaked by `run_on_fresh_thread`
    // for this thread only.
    let entry = unsafe { Box::from_raw(arg.cast::<fn() -> i32>()) };
    let code = (*entry)();
    code as isize as *mut c_void
}

/// Runs `entry` on a new thread made with `pthread_create` (no Rust
/// thread-local state is inherited) and returns its result.
fn run_on_fresh_thread(entry: fn() -> i32) -> i32 {
    let arg = Box::into_raw(Box::new(entry)).cast::<c_void>();
    // SAFETY: zeroed memory is a valid placeholder for the opaque pthread_t.
    let mut tid: libc::pthread_t = unsafe { std::mem::zeroed() };
    // SAFETY: `tid` is writable; the default attributes are used; `arg`
    // stays valid until the thread takes ownership of it.
    let r = unsafe { libc::pthread_create(&mut tid, std::ptr::null(), fresh_thread_main, arg) };
    if r != 0 {
        // SAFETY: the thread was not created, so `arg` is still ours.
        drop(unsafe { Box::from_raw(arg.cast::<fn() -> i32>()) });
        return entry();
    }
    let mut ret: *mut c_void = std::ptr::null_mut();
    // SAFETY: `tid` is a joinable thread we created; `ret` is writable.
    unsafe { libc::pthread_join(tid, &mut ret) };
    ret as isize as i32
}

/// Forks a worker. In the parent, returns the child's pid. The child drops
/// `guards` (releasing the locks the caller took so no other thread could
/// hold them at the fork), names its main thread `comm`, restores default
/// signal handling, keeps only `sock` (as fd 0) and the standard streams,
/// runs `entry` on a fresh thread and exits with its result. `entry` must be
/// mproc's worker boot, which reads the socket from fd 0 and touches no state
/// of the parent's other threads.
pub(crate) fn fork_worker<G>(
    guards: G,
    sock: OwnedFd,
    comm: &CStr,
    entry: fn() -> i32,
) -> io::Result<u32> {
    // The child is born with the calling thread's name. That name (a
    // helper's, `mproc-…`) must never show on a user's process, not even
    // for the instant before the child renames itself, so the calling
    // thread carries `comm` across the fork.
    let own_name = nix::sys::prctl::get_name().ok();
    let _ = nix::sys::prctl::set_name(comm);
    // SAFETY: fork is sound to call; what makes it hazardous is what the
    // child does afterwards in a multi-threaded process. The child below
    // runs only the steps documented above: it releases the guards' locks
    // (owned by this very thread), makes raw system calls, and runs `entry`,
    // which is crate-internal and touches only state that the child owns.
    let forked = unsafe { nix::unistd::fork() };
    if let (Ok(nix::unistd::ForkResult::Parent { .. }) | Err(_), Some(n)) = (&forked, &own_name) {
        let _ = nix::sys::prctl::set_name(n);
    }
    match forked {
        Err(e) => Err(e.into()),
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(guards);
            Ok(child.as_raw() as u32)
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(guards);
            reset_signals();
            isolate_descriptors(sock);
            let code = run_on_fresh_thread(entry);
            exit_now(code)
        }
    }
}

fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// Registers `f` to run at normal process exit (return from `main`,
/// `std::process::exit`), like C's `atexit`.
pub(crate) fn at_exit(f: extern "C" fn()) -> io::Result<()> {
    // SAFETY: `f` is a plain `extern "C"` function with no arguments that
    // lives for the whole program.
    if unsafe { libc::atexit(f) } != 0 {
        return Err(io::Error::other("atexit refused the handler"));
    }
    Ok(())
}

/// Sets `/proc/self/comm` (the main thread's name) from any thread.
pub(crate) fn set_process_name(name: &str) {
    let short: String = name.chars().filter(|c| *c != '\0').take(15).collect();
    let _ = std::fs::write("/proc/self/comm", short);
}

/// The kernel's name of this process (`/proc/self/comm`).
pub(crate) fn process_name() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// Sends one byte with several descriptors attached (SCM_RIGHTS).
pub(crate) fn send_fds(sock: &impl AsFd, byte: u8, fds: &[RawFd]) -> io::Result<()> {
    let iov = [io::IoSlice::new(std::slice::from_ref(&byte))];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(
            sock.as_fd().as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(io::Error::new(io::ErrorKind::WriteZero, "short send")),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one byte and the descriptors attached to it, if any. `Ok(None)`
/// at end of stream.
pub(crate) fn recv_byte_fds(sock: &impl AsFd) -> io::Result<Option<(u8, Vec<OwnedFd>)>> {
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    // Room for the largest handshake: the progress counter plus a ring
    // segment and its four eventfds.
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let (n, fds) = loop {
        match recvmsg::<()>(
            sock.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => {
                let truncated = m.flags.contains(MsgFlags::MSG_CTRUNC);
                let mut fds = Vec::new();
                for c in m.cmsgs().map_err(io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        for fd in raw {
                            // SAFETY: the kernel just installed this
                            // descriptor in our table; nothing else owns it.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
                if truncated {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "more descriptors were sent than the handshake expects",
                    ));
                }
                break (m.bytes, fds);
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        return Ok(None);
    }
    Ok(Some((byte[0], fds)))
}

/// Whether a thread started with `std::thread` gets to run within `limit`.
///
/// Not always so in a process forked from a multi-threaded one: std keeps
/// a lock (its stack-overflow handler's table of threads) that another
/// thread of the parent may have held at the instant of the fork, and every
/// std thread the child starts then blocks on it forever before running.
pub(crate) fn std_threads_start(limit: Duration) -> bool {
    let flag = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let seen = flag.clone();
    let spawned = std::thread::Builder::new()
        .name("mproc-probe".into())
        .spawn(move || {
            *seen.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
            seen.1.notify_all();
        });
    if spawned.is_err() {
        return false;
    }
    let guard = flag.0.lock().unwrap_or_else(|p| p.into_inner());
    let (started, _) = flag
        .1
        .wait_timeout_while(guard, limit, |s| !*s)
        .unwrap_or_else(|p| p.into_inner());
    *started
}

/// The path that starts this program afresh: `/proc/self/exe`, which names
/// the running binary even after its file was replaced or deleted. Under
/// valgrind (its launcher preloads `vgpreload_*`), `/proc/self/exe` is
/// valgrind's tool, which cannot run on its own; there the program's own
/// path is used (valgrind answers `readlink` for its client), so
/// `--trace-children=yes` follows workers into the same binary.
pub(crate) fn self_exe() -> &'static CStr {
    static EXE: std::sync::OnceLock<CString> = std::sync::OnceLock::new();
    EXE.get_or_init(|| {
        let valgrind = std::env::var_os("LD_PRELOAD")
            .is_some_and(|p| p.to_string_lossy().contains("vgpreload_"));
        valgrind
            .then(std::env::current_exe)
            .and_then(Result::ok)
            .and_then(|p| CString::new(p.into_os_string().into_encoded_bytes()).ok())
            .unwrap_or_else(|| CString::from(c"/proc/self/exe"))
    })
}

/// A fresh start of the program made ready beforehand: its arguments and
/// environment are owned copies, so that running it is one `execve`, which
/// a signal handler may make (building them allocates, which it may not).
struct Reexec {
    exe: CString,
    arg0: CString,
    env: Vec<CString>,
}

impl Reexec {
    /// This program, with `var=value` added to its environment.
    fn prepare(var: &str, value: &str) -> Option<Reexec> {
        Reexec::of(self_exe().to_owned(), var, value)
    }

    /// The program `exe`, started as this one was (its first argument),
    /// with `var=value` added to this process's environment.
    fn of(exe: CString, var: &str, value: &str) -> Option<Reexec> {
        let arg0 = std::fs::read("/proc/self/cmdline")
            .ok()
            .and_then(|c| c.split(|b| *b == 0).next().map(<[u8]>::to_vec))
            .and_then(|a| CString::new(a).ok())
            .unwrap_or_else(|| CString::from(c"mproc-worker"));
        let mut env = vec![CString::new(format!("{var}={value}")).ok()?];
        // SAFETY: `environ` is the C library's environment, a null-terminated
        // array of C strings; this process has one running thread here (a
        // forked child), so nothing changes it while it is copied.
        unsafe {
            let mut p = libc::environ;
            while !p.is_null() && !(*p).is_null() {
                env.push(CStr::from_ptr(*p).to_owned());
                p = p.add(1);
            }
        }
        Some(Reexec { exe, arg0, env })
    }

    /// With its `execve` arrays built (they point into the strings' heap
    /// buffers, which do not move with them).
    fn ready(self) -> ReadyExec {
        let mut envp: Vec<*const libc::c_char> = self.env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        let argv = [self.arg0.as_ptr(), std::ptr::null()];
        ReadyExec {
            strings: self,
            argv,
            envp,
        }
    }
}

/// [`Reexec`] with its `execve` arrays built.
struct ReadyExec {
    strings: Reexec,
    argv: [*const libc::c_char; 2],
    envp: Vec<*const libc::c_char>,
}

impl ReadyExec {
    /// Replaces this process; returns only if the exec failed. Allocates
    /// nothing and makes only async-signal-safe calls, so the watchdog's
    /// signal handler runs it too.
    fn exec(&self) -> io::Error {
        // A pending alarm (the boot watchdog's) would outlive the exec and
        // kill the fresh start.
        // SAFETY: alarm(0) cancels a pending alarm; it takes a plain integer.
        unsafe { libc::alarm(0) };
        // SAFETY: every pointer is a valid C string (or null) owned by
        // `self.strings`, which outlives the call; on success execve does
        // not return.
        unsafe {
            libc::execve(
                self.strings.exe.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            )
        };
        io::Error::last_os_error()
    }
}

/// Replaces this process with a fresh start of the program, with `var=value`
/// added to its environment and the descriptors it has (fd 0: a worker's
/// socket) kept: the spawn start method's boot, for a forked child that
/// cannot run threads. Returns only if the exec failed.
pub(crate) fn reexec_with(var: &str, value: &str) -> io::Error {
    match Reexec::prepare(var, value) {
        Some(r) => r.ready().exec(),
        None => io::ErrorKind::InvalidInput.into(),
    }
}

/// The armed boot watchdog's exec, made beforehand (null when none is
/// armed); leaked, so a handler can never read it freed.
static BOOT_WATCHDOG: std::sync::atomic::AtomicPtr<ReadyExec> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

extern "C" fn boot_overdue(_: libc::c_int) {
    let ready = BOOT_WATCHDOG.load(std::sync::atomic::Ordering::Acquire);
    if !ready.is_null() {
        // SAFETY: a non-null pointer is a leaked `ReadyExec`, never freed
        // or changed after it was published.
        let _ = unsafe { &*ready }.exec();
    }
    // No way forward: the parent sees the worker exit and replaces it.
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(70) }
}

/// Arms the watchdog of a forked child's boot: unless
/// [`disarm_boot_watchdog`] runs within `limit` (whole seconds, at least
/// one), the child starts afresh with `var=value` in its environment, as
/// [`reexec_with`] does, on the same descriptors. A forked child may block
/// for good on a lock that another thread of the parent held at the fork
/// (inside the C library, std or a dependency); this bounds that case to a
/// slower start instead of a worker that never says hello. False when the
/// watchdog could not be armed.
pub(crate) fn arm_boot_watchdog(var: &str, value: &str, limit: Duration) -> bool {
    Reexec::prepare(var, value).is_some_and(|r| arm_watchdog(r, limit))
}

/// Arms a watchdog that runs `fresh` after `limit` (see
/// [`arm_boot_watchdog`]).
fn arm_watchdog(fresh: Reexec, limit: Duration) -> bool {
    let ready = Box::leak(Box::new(fresh.ready()));
    BOOT_WATCHDOG.store(ready, std::sync::atomic::Ordering::Release);
    let handler = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(boot_overdue),
        nix::sys::signal::SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only reads the leaked exec and calls execve or
    // _exit, both async-signal-safe.
    if unsafe { nix::sys::signal::sigaction(Signal::SIGALRM, &handler) }.is_err() {
        return false;
    }
    let _ = nix::sys::signal::pthread_sigmask(
        SigmaskHow::SIG_UNBLOCK,
        Some(&SigSet::from(Signal::SIGALRM)),
        None,
    );
    // SAFETY: alarm takes a plain integer.
    unsafe { libc::alarm(limit.as_secs().clamp(1, u64::from(u32::MAX)) as libc::c_uint) };
    true
}

/// Disarms the boot watchdog (see [`arm_boot_watchdog`]); nothing happens
/// when none is armed (a spawned worker). The worker is about to say hello:
/// from here on, the parent's handshake bounds its start.
pub(crate) fn disarm_boot_watchdog() {
    if BOOT_WATCHDOG
        .load(std::sync::atomic::Ordering::Acquire)
        .is_null()
    {
        return;
    }
    // The alarm goes first: a handler that runs before this still finds
    // its exec (the boot starts afresh, never dies half-way).
    // SAFETY: alarm(0) cancels a pending alarm; it takes a plain integer.
    unsafe { libc::alarm(0) };
    // SAFETY: installing SIG_DFL registers no handler.
    unsafe { libc::signal(libc::SIGALRM, libc::SIG_DFL) };
    BOOT_WATCHDOG.store(std::ptr::null_mut(), std::sync::atomic::Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Forks a child that runs `child` and never returns from it on its
    /// own; returns how the child ended, or `None` (after killing and
    /// reaping it) when it has not ended within 10 s.
    fn fork_and_wait(child: fn() -> i32) -> Option<WaitStatus> {
        // SAFETY: the child only allocates (glibc's malloc is fork-safe),
        // installs a handler, sleeps and exits; it never returns here.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => exit_now(child()),
            nix::unistd::ForkResult::Parent { child } => {
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
                        Ok(status) => return Some(status),
                        Err(e) => panic!("waitpid: {e}"),
                    }
                }
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                None
            }
        }
    }

    fn stuck_forever() {
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }

    /// Arms a watchdog of one second whose fresh start is `true` (which
    /// exits with 0).
    fn arm_true_after_a_second() -> bool {
        Reexec::of(CString::from(c"/bin/true"), "MPROC_WATCHDOG_TEST", "1")
            .is_some_and(|r| arm_watchdog(r, Duration::from_secs(1)))
    }

    #[test]
    fn a_boot_stuck_past_the_watchdog_starts_afresh() {
        // The stuck child is replaced by `true`, which exits with 0.
        let status = fork_and_wait(|| {
            if !arm_true_after_a_second() {
                return 9;
            }
            stuck_forever();
            8
        });
        let status = status.expect("the stuck child was replaced and ended");
        assert_eq!(status, WaitStatus::Exited(status.pid().unwrap(), 0));
    }

    #[test]
    fn a_disarmed_watchdog_leaves_the_child_alone() {
        let status = fork_and_wait(|| {
            if !arm_true_after_a_second() {
                return 9;
            }
            disarm_boot_watchdog();
            // Past the limit: neither replaced nor killed by the alarm.
            std::thread::sleep(Duration::from_millis(1_500));
            3
        });
        let status = status.expect("the child ended");
        assert_eq!(status, WaitStatus::Exited(status.pid().unwrap(), 3));
    }
}
