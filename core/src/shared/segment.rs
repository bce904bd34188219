//! Shared-memory segments and how their handles travel between processes.
//!
//! # Lifetime without names
//!
//! Every shared object lives in one segment: a memfd created in the process
//! that creates the object, mapped `MAP_SHARED`. A memfd has no name in any
//! file system, so nothing can be left in `/dev/shm` or the temp dir; the
//! kernel frees its pages when the last descriptor and the last mapping are
//! gone — in every process, including one that was SIGKILLed.
//!
//! # Handles on the wire
//!
//! A handle serializes as [`Wire`]: the pid of the *serializing* process, the
//! number of its descriptor for the memfd, the size, and a random 64-bit token
//! that the segment's header also holds. The receiving process opens
//! `/proc/<pid>/fd/<n>` (same user, dumpable process: allowed by the kernel's
//! ptrace read check), maps the memfd, and checks the token, so a descriptor
//! number that was reused for something else is refused with a clear error.
//! A process keeps one mapping per segment: handles it receives again are
//! looked up by token in a per-process cache.
//!
//! The route needs the serializing process to still hold the descriptor when
//! the receiver opens it. A handle moved into a task (`submit(task, q)`) is
//! dropped by the sender right after it was encoded, so serializing a handle
//! also *keeps a clone of it alive* in the sending process until a receiver
//! acknowledged it: the header holds a few acknowledgement slots, one per
//! sending process, with a count of handles issued and received; a keep-alive
//! thread (running only while something is in flight) drops each kept clone
//! once its ticket is acknowledged, or after [`KEEPALIVE_LIMIT`].
//!
//! Nothing here depends on how a process was started: a forked child inherits
//! mappings and descriptors and serializes with its own pid; a spawned one
//! opens what it receives through `/proc`.

use std::any::Any;
use std::collections::HashMap;
use std::ffi::CStr;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::sys::shm::{self, Mapping};

/// How long a serialized handle keeps its segment alive in the sending
/// process when no receiver acknowledges it (e.g. the task was cancelled).
pub(crate) const KEEPALIVE_LIMIT: Duration = Duration::from_secs(60);

/// Bytes reserved for the [`Header`] at the start of every segment.
pub(crate) const HEADER_SIZE: usize = 256;

const MAGIC: u64 = u64::from_le_bytes(*b"MPROCSHM");
const ACK_SLOTS: usize = 8;
const NO_SLOT: u8 = u8::MAX;

/// State kept in a segment and shared by processes.
///
/// # Safety
/// The type must be `#[repr(C)]`, be valid when every byte is zero (a fresh
/// memfd is zero-filled), hold no pointers, and be mutated only through
/// atomics: other processes read and write it concurrently.
pub(crate) unsafe trait SharedState: Sync {}

/// What kind of object a segment holds; checked when a handle is received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    Lock = 1,
    RLock,
    Semaphore,
    Event,
    Condition,
    Barrier,
    Value,
    Array,
    Queue,
    Pipe,
}

#[repr(C)]
struct AckSlot {
    pid: AtomicU32,
    issued: AtomicU32,
    acked: AtomicU32,
    _pad: AtomicU32,
}

#[repr(C)]
struct Header {
    magic: AtomicU64,
    token: AtomicU64,
    len: AtomicU64,
    kind: AtomicU32,
    _pad: AtomicU32,
    type_hash: AtomicU64,
    _reserved: [AtomicU64; 3],
    acks: [AckSlot; ACK_SLOTS],
}

// SAFETY: repr(C), atomics only, all-zero is the valid "unset" header.
unsafe impl SharedState for Header {}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);

/// One mapped segment. Shared objects hold it in an `Arc`.
pub(crate) struct Segment {
    map: Mapping,
    /// Keeps the memfd reachable through `/proc/<pid>/fd/<n>`.
    fd: OwnedFd,
    token: u64,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("len", &self.map.len())
            .field("token", &format_args!("{:016x}", self.token))
            .finish()
    }
}

/// A serialized handle: where to find the segment and how to recognize it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Wire {
    pid: u32,
    fd: i32,
    len: u64,
    token: u64,
    slot: u8,
    ticket: u32,
}

/// A stable fingerprint of a type, to refuse a handle received as the wrong
/// type (`Queue<String>` decoded as `Queue<u32>`).
pub(crate) fn type_hash<T: ?Sized>() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::any::type_name::<T>().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn cache() -> &'static Mutex<HashMap<u64, Weak<Segment>>> {
    static CACHE: std::sync::OnceLock<Mutex<HashMap<u64, Weak<Segment>>>> =
        std::sync::OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Segment {
    /// Creates a segment for an object of `kind` whose state needs `size`
    /// bytes after the header.
    pub(crate) fn create(kind: Kind, type_hash: u64, size: usize) -> Result<Arc<Segment>, Error> {
        let len = (HEADER_SIZE + size).next_multiple_of(4096);
        let name: &CStr = c"mproc-shared";
        let (map, fd) = Mapping::create(name, len).map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!("cannot create a shared-memory segment: {e}"),
                e,
            )
        })?;
        let token = shm::random_u64();
        let seg = Arc::new(Segment { map, fd, token });
        let h = seg.header();
        h.token.store(token, Ordering::Relaxed);
        h.len.store(len as u64, Ordering::Relaxed);
        h.kind.store(kind as u32, Ordering::Relaxed);
        h.type_hash.store(type_hash, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, Arc::downgrade(&seg));
        Ok(seg)
    }

    fn header(&self) -> &Header {
        self.state_at(0)
    }

    /// The shared state of type `S` stored `offset` bytes into the segment.
    pub(crate) fn state_at<S: SharedState>(&self, offset: usize) -> &S {
        assert!(
            offset + std::mem::size_of::<S>() <= self.map.len(),
            "shared state out of the segment"
        );
        let p = self.map.base().wrapping_add(offset);
        debug_assert_eq!(p as usize % std::mem::align_of::<S>(), 0);
        // SAFETY: the range lies inside the live mapping (asserted above) and
        // is aligned (mappings are page-aligned and callers use aligned
        // offsets); `SharedState` guarantees that any bytes, including the
        // zeros of a fresh memfd, are a valid `S` mutated only atomically.
        // The reference cannot outlive `self`, which owns the mapping.
        unsafe { &*p.cast::<S>() }
    }

    /// The state of type `S` that follows the header.
    pub(crate) fn state<S: SharedState>(&self) -> &S {
        self.state_at(HEADER_SIZE)
    }

    /// A raw pointer `offset` bytes into the segment, for data regions whose
    /// access a protocol guards (rings, `Value`/`Array` payloads).
    pub(crate) fn ptr_at(&self, offset: usize) -> *mut u8 {
        assert!(offset <= self.map.len(), "offset out of the segment");
        self.map.base().wrapping_add(offset)
    }

    /// The total length of the segment.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Returns `[offset, offset + len)` to the kernel.
    ///
    /// # Safety
    /// As [`Mapping::discard`]: nobody may use the range concurrently and it
    /// must hold no live data; bounds page-aligned.
    pub(crate) unsafe fn discard(&self, offset: usize, len: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.map.discard(offset, len) }
    }

    /// Encodes a handle to this segment. `keep` (a clone of the handle) stays
    /// alive in this process until a receiver has opened the segment, or for
    /// [`KEEPALIVE_LIMIT`].
    pub(crate) fn to_wire(self: &Arc<Self>, keep: Box<dyn Any + Send + Sync>) -> Wire {
        let me = shm::pid();
        let (slot, ticket) = match self.claim_ack_slot(me) {
            Some(i) => {
                let t = self.header().acks[i]
                    .issued
                    .fetch_add(1, Ordering::AcqRel)
                    .wrapping_add(1);
                (i as u8, t)
            }
            None => (NO_SLOT, 0),
        };
        keepalive::hold(keepalive::Kept {
            _keep: keep,
            seg: self.clone(),
            slot,
            ticket,
            since: Instant::now(),
        });
        Wire {
            pid: me,
            fd: self.fd.as_raw_fd(),
            len: self.map.len() as u64,
            token: self.token,
            slot,
            ticket,
        }
    }

    fn claim_ack_slot(&self, me: u32) -> Option<usize> {
        let acks = &self.header().acks;
        if let Some(i) = acks
            .iter()
            .position(|s| s.pid.load(Ordering::Acquire) == me)
        {
            return Some(i);
        }
        let fresh = |i: usize| {
            let s = &acks[i];
            s.acked
                .store(s.issued.load(Ordering::Acquire), Ordering::Release);
            Some(i)
        };
        for (i, s) in acks.iter().enumerate() {
            if s.pid
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return fresh(i);
            }
        }
        for (i, s) in acks.iter().enumerate() {
            let p = s.pid.load(Ordering::Acquire);
            if shm::process_dead(p, None)
                && s.pid
                    .compare_exchange(p, me, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return fresh(i);
            }
        }
        None
    }

    fn acknowledged(&self, slot: u8, ticket: u32) -> bool {
        let Some(s) = self.header().acks.get(slot as usize) else {
            return false;
        };
        s.acked.load(Ordering::Acquire).wrapping_sub(ticket) as i32 >= 0
    }

    /// Opens the segment a [`Wire`] names, checking that it holds an object
    /// of `kind` and type fingerprint `type_hash`.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when the sending process has exited or no
    /// longer holds the segment; [`ErrorKind::Io`] when `/proc` refuses
    /// access; [`ErrorKind::Protocol`] for a handle of another kind or type.
    pub(crate) fn open(w: &Wire, kind: Kind, type_hash: u64) -> Result<Arc<Segment>, Error> {
        let seg = Self::open_unacked(w, kind, type_hash)?;
        seg.acknowledge(w);
        Ok(seg)
    }

    /// Tells the sender of `w` that its handle arrived, so it may drop the
    /// clone it kept alive.
    pub(crate) fn acknowledge(&self, w: &Wire) {
        if let Some(s) = self.header().acks.get(w.slot as usize) {
            s.acked.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// As [`open`](Self::open), without acknowledging the handle yet.
    pub(crate) fn open_unacked(
        w: &Wire,
        kind: Kind,
        type_hash: u64,
    ) -> Result<Arc<Segment>, Error> {
        let cached = cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&w.token)
            .and_then(Weak::upgrade);
        let seg = match cached {
            Some(s) => s,
            None => Self::open_remote(w)?,
        };
        let h = seg.header();
        if h.kind.load(Ordering::Relaxed) != kind as u32
            || h.type_hash.load(Ordering::Relaxed) != type_hash
        {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "received a shared-object handle of another kind or item type (expected {kind:?})"
                ),
            ));
        }
        Ok(seg)
    }

    fn open_remote(w: &Wire) -> Result<Arc<Segment>, Error> {
        let gone = || {
            Error::new(
                ErrorKind::Disconnected,
                format!(
                    "shared object is gone: process {} that sent the handle has exited or \
                     dropped every handle to it before this one was received",
                    w.pid
                ),
            )
        };
        if w.pid == shm::pid() {
            return Err(gone());
        }
        let opened = shm::open_remote(w.pid, w.fd, w.len as usize)
            .and_then(|fd| Ok((Mapping::map(&fd, w.len as usize)?, fd)));
        let (map, fd) = match opened {
            Ok(m) => m,
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                return Err(Error::with_source(
                    ErrorKind::Io,
                    format!(
                        "cannot open the shared object of process {} through /proc: permission \
                         denied (another user, or a process that is not dumpable)",
                        w.pid
                    ),
                    e,
                ))
            }
            Err(_) => return Err(gone()),
        };
        let seg = Segment {
            map,
            fd,
            token: w.token,
        };
        let h = seg.header();
        if h.magic.load(Ordering::Acquire) != MAGIC
            || h.token.load(Ordering::Relaxed) != w.token
            || h.len.load(Ordering::Relaxed) != w.len
        {
            return Err(gone());
        }
        let seg = Arc::new(seg);
        let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
        // Another thread may have opened it meanwhile: keep one mapping.
        if let Some(existing) = c.get(&w.token).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        c.insert(w.token, Arc::downgrade(&seg));
        Ok(seg)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
        if c.get(&self.token).is_some_and(|w| w.strong_count() == 0) {
            c.remove(&self.token);
        }
    }
}

/// Serializes a handle: its segment's [`Wire`], keeping `keep` alive.
pub(crate) fn serialize_handle<S: serde::Serializer>(
    seg: &Arc<Segment>,
    keep: Box<dyn Any + Send + Sync>,
    s: S,
) -> Result<S::Ok, S::Error> {
    seg.to_wire(keep).serialize(s)
}

/// Deserializes a handle's segment.
pub(crate) fn deserialize_handle<'de, D: serde::Deserializer<'de>>(
    d: D,
    kind: Kind,
    type_hash: u64,
) -> Result<Arc<Segment>, D::Error> {
    let w = Wire::deserialize(d)?;
    Segment::open(&w, kind, type_hash).map_err(report_open_error)
}

/// Turns a failed open into a serde error, and also logs it: some formats
/// (postcard among them) keep only "custom error", not the message.
pub(crate) fn report_open_error<E: serde::de::Error>(e: Error) -> E {
    tracing::error!(target: "mproc::shared", "cannot receive a shared-object handle: {e}");
    E::custom(e)
}

/// The keep-alive list of handles in flight, and the thread that prunes it.
mod keepalive {
    use super::*;

    pub(super) struct Kept {
        pub(super) _keep: Box<dyn Any + Send + Sync>,
        pub(super) seg: Arc<Segment>,
        pub(super) slot: u8,
        pub(super) ticket: u32,
        pub(super) since: Instant,
    }

    impl Kept {
        fn done(&self) -> bool {
            self.since.elapsed() > KEEPALIVE_LIMIT
                || (self.slot != NO_SLOT && self.seg.acknowledged(self.slot, self.ticket))
        }
    }

    struct List {
        items: Vec<Kept>,
        /// The pid whose reaper thread runs (a forked child has none).
        reaper: u32,
    }

    fn list() -> &'static (Mutex<List>, Condvar) {
        static L: std::sync::OnceLock<(Mutex<List>, Condvar)> = std::sync::OnceLock::new();
        L.get_or_init(|| {
            (
                Mutex::new(List {
                    items: Vec::new(),
                    reaper: 0,
                }),
                Condvar::new(),
            )
        })
    }

    pub(super) fn hold(k: Kept) {
        let (m, cv) = list();
        let mut l = m.lock().unwrap_or_else(|e| e.into_inner());
        l.items.push(k);
        let me = shm::pid();
        if l.reaper != me {
            l.reaper = me;
            let spawned = std::thread::Builder::new()
                .name("mproc-keepalive".into())
                .spawn(reap);
            if spawned.is_err() {
                l.reaper = 0;
            }
        }
        cv.notify_one();
    }

    fn reap() {
        let (m, cv) = list();
        let mut pause = Duration::from_micros(500);
        let mut l = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            // Drop acknowledged entries outside the lock: dropping a handle
            // may take other locks.
            let (done, keep): (Vec<Kept>, Vec<Kept>) = std::mem::take(&mut l.items)
                .into_iter()
                .partition(Kept::done);
            l.items = keep;
            if l.items.is_empty() {
                l.reaper = 0;
                drop(l);
                drop(done);
                return;
            }
            drop(l);
            drop(done);
            pause = (pause * 2).min(Duration::from_millis(20));
            l = m.lock().unwrap_or_else(|e| e.into_inner());
            l = cv
                .wait_timeout(l, pause)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_whose_sender_is_gone_names_the_reason() {
        let seg = Segment::create(Kind::Lock, 0, 16).unwrap();
        let mut w = seg.to_wire(Box::new(()));
        // A process that has exited (reaped, so its pid names nothing).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        w.pid = child.id();
        w.token ^= 1; // not in this process's cache either
        let e = Segment::open(&w, Kind::Lock, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Disconnected);
        assert!(e.to_string().contains("shared object is gone"), "{e}");
    }

    #[test]
    fn a_handle_of_another_kind_is_refused() {
        let seg = Segment::create(Kind::Lock, 0, 16).unwrap();
        let w = seg.to_wire(Box::new(()));
        let e = Segment::open(&w, Kind::Event, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(Segment::open(&w, Kind::Lock, 0).is_ok());
    }
}
