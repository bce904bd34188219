//! The liveness page of a Manager server ([`hold_alive`], [`Alive`]):
//! how a client that works on a server's shared tables in place learns,
//! without a system call, that the server has ended.
//!
//! A Manager server locks a process-shared **robust** pthread mutex in a
//! small memfd from its main thread and never unlocks it. Whenever the
//! server ends — shutdown, crash, SIGKILL — the kernel walks that thread's
//! robust list and marks the futex word `FUTEX_OWNER_DIED` with no owner
//! tid. A client that mapped the memfd tells a live server from a dead one
//! with one atomic load of the word (glibc keeps the owner's tid in the
//! mutex's first `int`, the futex word). Linux and glibc only, as mproc.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};

use mproc_transport::shm_map::Mapping;

const PAGE: usize = 4096;

/// A mapped liveness page.
#[derive(Debug)]
pub(crate) struct Alive {
    map: Mapping,
}

impl Alive {
    /// Maps the liveness page `fd` a server handed out.
    pub(crate) fn open(fd: &OwnedFd) -> io::Result<Alive> {
        Ok(Alive {
            map: Mapping::map(fd, PAGE)?,
        })
    }

    /// True while the server that holds the page lives.
    pub(crate) fn alive(&self) -> bool {
        debug_assert!(self.map.len() >= std::mem::size_of::<libc::pthread_mutex_t>());
        // SAFETY: the mapping is a page, page-aligned, and its first four
        // bytes are the mutex's futex word, only ever accessed atomically (by
        // glibc and the kernel).
        let word = unsafe { AtomicU32::from_ptr(self.map.base().cast()) };
        let v = word.load(Ordering::Acquire);
        // FUTEX_TID_MASK: an owner tid is present; OWNER_DIED clears it.
        v & 0x3fff_ffff != 0 && v & 0x4000_0000 == 0
    }
}

/// Creates the liveness page and locks its robust mutex from the calling
/// thread, for good: call it from the thread that lives as long as the
/// process. Returns the memfd to hand to clients.
pub(crate) fn hold_alive() -> io::Result<OwnedFd> {
    let (map, fd) = Mapping::create(c"mproc-manager-alive", PAGE)?;
    const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= PAGE);
    let m: *mut libc::pthread_mutex_t = map.base().cast();
    // SAFETY: `m` points to zeroed, page-aligned shared memory large enough
    // for a pthread mutex (asserted above); the attribute object lives on
    // this stack frame and is destroyed after use.
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
    std::mem::forget(map);
    Ok(fd)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_reads_alive_while_held_and_dead_after_its_thread_ends() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(hold_alive().unwrap()).unwrap();
            let _ = stop_rx.recv();
        });
        let fd = rx.recv().unwrap();
        let a = Alive::open(&fd).unwrap();
        assert!(a.alive());
        drop(stop_tx);
        t.join().unwrap();
        // The kernel marks a robust mutex whose owner thread exited.
        assert!(!a.alive());
    }
}
