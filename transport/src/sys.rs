//! The transport crate's OS seam: every `unsafe` block of the crate is here,
//! behind small safe functions.

use std::ffi::CStr;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{madvise, mmap, munmap, MapFlags, MmapAdvise, ProtFlags};

/// A shared, read-write mapping of a memfd (or of a window of one).
///
/// The one owner of `memfd_create` + `mmap` + `munmap` in the workspace: the
/// shared-memory transport's rings, `mproc-core`'s shared objects and its
/// progress counter all map their memory through it. It is public only so
/// that `mproc-core` can use it (re-exported, hidden, as
/// `mproc_transport::shm_map::Mapping`); it is not part of the transport API.
///
/// Dropping it unmaps the memory. The memfd itself lives on while any
/// descriptor or mapping of it exists, in any process.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory that stays valid for the
// lifetime of the value; every user accesses it only through atomics or
// through regions that its own protocol hands to one side at a time
// (documented where the access happens).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Creates a zero-filled, close-on-exec memfd of `len` bytes named
    /// `name` (the name shows only in `/proc/<pid>/fd`) and maps all of it.
    /// Pages are allocated on first touch.
    ///
    /// # Errors
    /// The OS error of `memfd_create`, `ftruncate` or `mmap`.
    pub fn create(name: &CStr, len: usize) -> io::Result<(Mapping, OwnedFd)> {
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
        nix::unistd::ftruncate(&fd, len as i64).map_err(io::Error::from)?;
        let m = Self::map(&fd, len)?;
        Ok((m, fd))
    }

    /// Maps the first `len` bytes of `fd`, shared and read-write.
    ///
    /// # Errors
    /// As [`map_at`](Self::map_at).
    pub fn map(fd: &impl AsFd, len: usize) -> io::Result<Mapping> {
        Self::map_at(fd, 0, len)
    }

    /// Maps `len` bytes of `fd` from byte `offset` (page-aligned), shared
    /// and read-write: a window of a file that may be much larger, so that
    /// address space follows what is used rather than the file's size.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] when the file ends before
    /// `offset + len`; [`io::ErrorKind::InvalidInput`] when `len` is 0 or
    /// `offset` is not page-aligned; the OS error of `fstat` or `mmap`
    /// (`ENOMEM` under an address-space limit).
    pub fn map_at(fd: &impl AsFd, offset: usize, len: usize) -> io::Result<Mapping> {
        let size = nix::sys::stat::fstat(fd.as_fd())
            .map_err(io::Error::from)?
            .st_size;
        if offset
            .checked_add(len)
            .is_none_or(|end| (size as u64) < end as u64)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared segment is too small",
            ));
        }
        if offset % 4096 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mapping offset is not page-aligned",
            ));
        }
        let nz = NonZeroUsize::new(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"))?;
        // SAFETY: a fresh shared mapping chosen by the kernel; no existing
        // memory is affected, and the range was checked against the file.
        let ptr = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        }
        .map_err(io::Error::from)?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Faults the whole mapping in for writing in one system call
    /// (`MADV_POPULATE_WRITE`), allocating the file's pages, instead of one
    /// page fault per page as it is first written. Best effort: before
    /// Linux 5.14, or on failure, pages are simply faulted in as they are
    /// touched.
    pub fn populate(&self) {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        // SAFETY: the range is exactly this live mapping; populating it
        // changes no byte (a fresh memfd page reads as zero either way).
        let _ = unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, MADV_POPULATE_WRITE) };
    }

    /// The first byte of the mapping (page-aligned).
    pub fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// False: an empty mapping cannot be made (here for clippy's
    /// `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Gives the pages of `[offset, offset + len)` back to the kernel
    /// (`MADV_REMOVE`); they read as zeros afterwards, in every process.
    /// Both bounds must be page-aligned and inside the mapping.
    ///
    /// # Safety
    /// No process may be reading or writing the range concurrently, and no
    /// live data may be stored there.
    pub unsafe fn discard(&self, offset: usize, len: usize) {
        debug_assert!(offset % 4096 == 0 && len % 4096 == 0);
        debug_assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        if len == 0 || offset.checked_add(len).is_none_or(|end| end > self.len) {
            return;
        }
        // SAFETY: the range lies inside our mapping (checked above); the
        // caller guarantees nobody uses it, so dropping its pages is sound.
        let _ = unsafe { madvise(self.ptr.add(offset).cast(), len, MmapAdvise::MADV_REMOVE) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region `map` created; nothing refers to
        // it once the owner is dropped.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// A non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    let e = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(io::Error::from)?;
    Ok(OwnedFd::from(e))
}

/// Adds one to an eventfd's counter (wakes a poller).
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) {
    let one = 1u64.to_ne_bytes();
    loop {
        match nix::unistd::write(fd, &one) {
            Err(Errno::EINTR) => continue,
            // EAGAIN: the counter is saturated, so a wake-up is pending anyway.
            _ => return,
        }
    }
}

/// Resets an eventfd's counter.
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 8];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Err(Errno::EINTR) => continue,
            _ => return,
        }
    }
}

/// A pidfd for `pid` (readable once the process has exited).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(io::Error::from)?;
    Ok(fd)
}

/// Waits until one of `fds` is readable; returns their readiness.
pub(crate) fn wait_readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    timeout: Option<Duration>,
) -> io::Result<[bool; N]> {
    let mut pfds = fds.map(|fd| PollFd::new(fd, PollFlags::POLLIN));
    let t = match timeout {
        None => PollTimeout::NONE,
        Some(d) => PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX),
    };
    loop {
        match poll(&mut pfds, t) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pfds.map(|p| p.revents().is_some_and(|r| !r.is_empty())))
}

/// A close-on-exec, non-blocking pipe: `(read end, write end)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(io::Error::from)
}

/// Makes `fd` non-blocking.
pub(crate) fn set_nonblocking(fd: &impl AsFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    Ok(())
}

/// Points `fd` at `/dev/null`, closing what it referred to while keeping the
/// number valid for threads that may still use it.
pub(crate) fn neutralize(fd: &OwnedFd) {
    if let Ok(null) = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        // SAFETY: dup3 atomically replaces the file behind a descriptor we
        // own with /dev/null; the number stays owned by `fd`.
        unsafe { libc::dup3(null.as_raw_fd(), fd.as_raw_fd(), libc::O_CLOEXEC) };
    }
}

/// Faults in the spare capacity of `buf` for writing, in one system call
/// (`MADV_POPULATE_WRITE`) instead of one page fault per page as it is
/// first written: a fresh 64 MiB buffer is 16 384 faults otherwise. Best
/// effort: a kernel without it (before 5.14) or a failure changes nothing
/// but the speed.
pub(crate) fn prefault(buf: &mut Vec<u8>) {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    let page = 4096usize;
    let spare = buf.spare_capacity_mut();
    let start = spare.as_mut_ptr() as usize;
    let first = start.div_ceil(page) * page;
    let end = (start + spare.len()) / page * page;
    if end <= first {
        return;
    }
    // SAFETY: `[first, end)` lies inside the vector's own allocation (its
    // spare capacity, rounded inwards to whole pages), which stays mapped
    // while `buf` is borrowed. Populating for writing changes no byte the
    // program can see: untouched anonymous pages read as zero either way,
    // and the capacity is uninitialized to Rust anyway.
    let _ = unsafe { libc::madvise(first as *mut libc::c_void, end - first, MADV_POPULATE_WRITE) };
}
