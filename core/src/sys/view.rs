//! Shared mappings that do not keep their descriptor ([`View`]), and the
//! liveness word of a Manager server ([`hold_alive`], [`View::alive`]).
//!
//! A `View` maps a whole memfd and closes the descriptor at once: the
//! mapping alone keeps the memory, so a forked child that inherits a `View`
//! can drop it without closing a descriptor number that is not its own.
//!
//! # Liveness without a system call
//! A Manager server locks a process-shared **robust** pthread mutex in a
//! small memfd from its main thread and never unlocks it. Whenever the
//! server ends — shutdown, crash, SIGKILL — the kernel walks that thread's
//! robust list and marks the futex word `FUTEX_OWNER_DIED` with no owner
//! tid. A client that mapped the memfd tells a live server from a dead one
//! with one atomic load of the word (glibc keeps the owner's tid in the
//! mutex's first `int`, the futex word). Linux and glibc only, as mproc.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{madvise, mmap, munmap, MapFlags, MmapAdvise, ProtFlags};

/// A shared mapping of a whole memfd, without its descriptor.
#[derive(Debug)]
pub(crate) struct View {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: plain shared memory; every access goes through atomics or through
// regions whose exclusive use a lock in the mapping guarantees (documented
// where the access happens).
unsafe impl Send for View {}
// SAFETY: as above.
unsafe impl Sync for View {}

impl View {
    /// A zero-filled memfd of `len` bytes (pages come on first touch),
    /// mapped; also returns its descriptor, to hand to other processes.
    pub(crate) fn create(name: &std::ffi::CStr, len: usize) -> io::Result<(View, OwnedFd)> {
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
        nix::unistd::ftruncate(&fd, len as i64).map_err(io::Error::from)?;
        let view = Self::map(&fd)?;
        Ok((view, fd))
    }

    /// Maps the whole memfd `fd` (its size is read from it).
    pub(crate) fn map(fd: &OwnedFd) -> io::Result<View> {
        let len = nix::sys::stat::fstat(fd).map_err(io::Error::from)?.st_size as usize;
        let nz = NonZeroUsize::new(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty segment"))?;
        // SAFETY: a fresh shared mapping; the kernel picks the address, so no
        // existing memory is affected.
        let ptr = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .map_err(io::Error::from)?;
        Ok(View {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The first byte (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Gives the pages of `[offset, offset + len)` back; they read as zeros
    /// afterwards. Bounds are rounded inwards to pages.
    ///
    /// # Safety
    /// No process may use the range concurrently or keep live data there.
    pub(crate) unsafe fn discard(&self, offset: usize, len: usize) {
        let start = offset.next_multiple_of(4096);
        let end = (offset + len).min(self.len) / 4096 * 4096;
        if end <= start {
            return;
        }
        // SAFETY: inside our mapping (clamped above); the caller guarantees
        // nobody uses the range.
        let _ = unsafe {
            madvise(
                self.ptr.add(start).cast(),
                end - start,
                MmapAdvise::MADV_REMOVE,
            )
        };
    }

    /// The liveness word of a view made by [`hold_alive`]: true while the
    /// server that holds it lives.
    pub(crate) fn alive(&self) -> bool {
        debug_assert!(self.len >= std::mem::size_of::<libc::pthread_mutex_t>());
        // SAFETY: the mapping is at least a page, page-aligned, and its first
        // four bytes are the mutex's futex word, only ever accessed
        // atomically (by glibc and the kernel).
        let word = unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().cast()) };
        let v = word.load(Ordering::Acquire);
        // FUTEX_TID_MASK: an owner tid is present; OWNER_DIED clears it.
        v & 0x3fff_ffff != 0 && v & 0x4000_0000 == 0
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: mapped in `map` with this length; the owner of the `View`
        // guarantees nothing references it any more.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// Creates the liveness page and locks its robust mutex from the calling
/// thread, for good: call it from the thread that lives as long as the
/// process. Returns the memfd to hand to clients.
pub(crate) fn hold_alive() -> io::Result<OwnedFd> {
    let (view, fd) = View::create(c"mproc-manager-alive", 4096)?;
    let m: *mut libc::pthread_mutex_t = view.as_ptr().cast();
    // SAFETY: `m` points to zeroed, page-aligned shared memory large enough
    // for a pthread mutex (checked by the debug assertion in `alive`); the
    // attribute object lives on this stack frame and is destroyed after use.
    unsafe {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
        check(libc::pthread_mutexattr_setpshared(
            attr.as_mut_ptr(),
            libc::PTHREAD_PROCESS_SHARED,
        ))?;
        check(libc::pthread_mutexattr_setrobust(
            attr.as_mut_ptr(),
            libc::PTHREAD_MUTEX_ROBUST,
        ))?;
        check(libc::pthread_mutex_init(m, attr.as_ptr()))?;
        libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        check(libc::pthread_mutex_lock(m))?;
    }
    // Mapped until the process ends: the mutex must stay where the kernel's
    // robust list points.
    std::mem::forget(view);
    Ok(fd)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
