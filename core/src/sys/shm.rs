//! Shared-memory segments without names: a memfd mapped `MAP_SHARED`, and
//! the `/proc/<pid>/fd/<n>` path by which another process of the program tree
//! opens the same memfd. Plus the process facts the shared objects need:
//! a cached pid and thread id, process start times and liveness.

use std::ffi::CStr;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Once;

use nix::fcntl::{open, OFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{madvise, mmap, munmap, MapFlags, MmapAdvise, ProtFlags};
use nix::sys::stat::Mode;

/// One shared mapping of a whole memfd, and the descriptor that keeps the
/// memfd reachable for other processes.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory; every access to it goes through
// atomics or through regions whose exclusive use a shared-memory protocol
// guarantees (documented where the access happens).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Creates a zero-filled memfd of `len` bytes and maps it. Pages are
    /// allocated on first touch.
    pub(crate) fn create(name: &CStr, len: usize) -> io::Result<Mapping> {
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
        nix::unistd::ftruncate(&fd, len as i64).map_err(io::Error::from)?;
        Self::map(fd, len)
    }

    /// Opens the memfd that process `pid` holds as descriptor `fd`, through
    /// `/proc`, and maps it. The size must be `len`.
    pub(crate) fn open_remote(pid: u32, fd: RawFd, len: usize) -> io::Result<Mapping> {
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
        Self::map(own, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Mapping> {
        let nz = NonZeroUsize::new(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty segment"))?;
        // SAFETY: a fresh shared mapping of a memfd we own; the kernel picks
        // the address, so no existing memory is affected.
        let ptr = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .map_err(io::Error::from)?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
            fd,
        })
    }

    /// The first byte of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The descriptor of the memfd in this process.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Gives the pages of `[offset, offset + len)` back to the kernel; they
    /// read as zeros afterwards. Both bounds must be page-aligned.
    ///
    /// # Safety
    /// No process may be reading or writing the range concurrently, and no
    /// live data may be stored there.
    pub(crate) unsafe fn discard(&self, offset: usize, len: usize) {
        debug_assert!(offset % 4096 == 0 && len % 4096 == 0);
        debug_assert!(offset + len <= self.len);
        if len == 0 {
            return;
        }
        // SAFETY: the range lies inside our mapping (checked above); the
        // caller guarantees nobody uses it, so dropping its pages is sound.
        let _ = unsafe { madvise(self.ptr.add(offset).cast(), len, MmapAdvise::MADV_REMOVE) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `map` with this length, and the
        // owner of the `Mapping` guarantees nothing references it any more.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
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
