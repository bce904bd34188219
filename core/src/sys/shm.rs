//! Shared-memory segments without names: a memfd mapped `MAP_SHARED` (the
//! mapping type is the transport crate's, the one owner of that code), and
//! the `/proc/<pid>/fd/<n>` path by which another process of the program tree
//! opens the same memfd. Plus the process facts the shared objects need:
//! a cached pid and thread id, process start times and liveness.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Once;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

pub(crate) use mproc_transport::shm_map::Mapping;

/// Opens the memfd that process `pid` holds as descriptor `fd`, through
/// `/proc`, checking that its size is `len`.
pub(crate) fn open_remote(pid: u32, fd: RawFd, len: usize) -> io::Result<OwnedFd> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let own = open(
        path.as_str(),
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let st = nix::sys::stat::fstat(&own).map_err(io::Error::from)?;
    if st.st_size as u64 != len as u64 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "descriptor names another object (size differs)",
        ));
    }
    Ok(own)
}

/// 64 random bits from the kernel (never zero).
pub(crate) fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: we pass a valid pointer to 8 writable bytes.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, 0) };
    if n != 8 {
        // Fall back to a mix of time, pid and an address: unique enough for
        // a token that is only compared for equality.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        v = t ^ (u64::from(std::process::id()) << 40) ^ (&v as *const u64 as u64);
    }
    v.max(1)
}

static PID: AtomicU32 = AtomicU32::new(0);
static START: AtomicU64 = AtomicU64::new(0);

extern "C" fn forget_pid_after_fork() {
    PID.store(0, Ordering::Relaxed);
    START.store(0, Ordering::Relaxed);
}

/// This process's id, cached (and refreshed after a `fork`).
pub(crate) fn pid() -> u32 {
    let p = PID.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: registers a plain function that only stores to atomics,
        // which is async-signal-safe as a fork child handler requires.
        unsafe { libc::pthread_atfork(None, None, Some(forget_pid_after_fork)) };
    });
    let p = std::process::id();
    PID.store(p, Ordering::Relaxed);
    p
}

/// The calling thread's kernel id, cached per thread.
pub(crate) fn tid() -> u64 {
    thread_local! {
        static TID: std::cell::Cell<(u32, u64)> = const { std::cell::Cell::new((0, 0)) };
    }
    let me = pid();
    TID.with(|c| {
        let (p, t) = c.get();
        if p == me {
            return t;
        }
        // SAFETY: gettid has no preconditions.
        let t = unsafe { libc::gettid() } as u64;
        c.set((me, t));
        t
    })
}

/// The low 32 bits of this process's start time (clock ticks since boot),
/// cached; never zero.
pub(crate) fn start_time() -> u32 {
    let s = START.load(Ordering::Relaxed);
    if s != 0 && PID.load(Ordering::Relaxed) != 0 {
        return s as u32;
    }
    let s = u64::from(process_state(pid()).map_or(1, |(_, st)| st.max(1)));
    START.store(s, Ordering::Relaxed);
    s as u32
}

/// The state letter and low 32 bits of the start time of process `pid`, or
/// `None` when there is no such process.
fn process_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 is the state; field 22 is the start time, 19 fields later.
    let start: u64 = fields.nth(18)?.parse().ok()?;
    Some((state, start as u32))
}

/// True when process `pid` is certainly gone: it does not exist, is a zombie,
/// or (when `start` is known) is another process that reused the pid.
pub(crate) fn process_dead(pid: u32, start: Option<u32>) -> bool {
    if pid == 0 {
        return true;
    }
    match process_state(pid) {
        None => true,
        Some(('Z' | 'X' | 'x', _)) => true,
        Some((_, st)) => start.is_some_and(|s| s != 0 && s != st.max(1)),
    }
}
