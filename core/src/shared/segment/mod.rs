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
//! also *keeps the segment alive* in the sending process until every handle
//! it encoded has been received:
//!
//! * The header holds a few acknowledgement slots. A sending process claims
//!   one (while it has handles in flight) and counts in it the handles it
//!   `issued`; each receiver, once it has opened the segment, adds one to
//!   `acked`.
//! * The sender keeps **one** entry per segment (plus, for a pipe, one
//!   clone per end it sent), whatever the number of encodes: the entry
//!   remembers the latest ticket, and a keep-alive thread (running only while
//!   something can still be acknowledged) drops it, and frees the slot, once
//!   `acked` has caught up with it. Repeated encodes of one handle therefore
//!   never add up.
//! * There is no time limit: a task queued for an hour still finds its
//!   object. The price is bounded: a handle that is encoded and never decoded
//!   (a task cancelled before it ran, bytes thrown away) keeps that one
//!   object alive in the sender until the sender exits — at most one object's
//!   memory per such object, never growing with the number of encodes. The
//!   same holds when all slots are taken by other live senders (the ticket
//!   cannot be acknowledged then).
//! * A handle decoded twice counts as two receipts and may let the sender
//!   drop its entry while a third copy is still in flight; that copy then
//!   fails as below.
//!
//! When the sender has exited before the receiver opened the segment, nothing
//! can bring the object back (no other process is known to hold it). The
//! receiver then gets an error that says so — "the process (pid N) that sent
//! this Queue handle has exited, so the shared object could not be opened" —
//! through serde's `Error::custom`, and, because postcard keeps only "Serde
//! Deserialization Error" of a custom error, also through
//! [`decode_error_message`], which decoders call to name the real cause.
//!
//! Nothing here depends on how a process was started: a forked child inherits
//! mappings and descriptors and serializes with its own pid; a spawned one
//! opens what it receives through `/proc`.

use std::any::Any;
use std::collections::HashMap;
use std::ffi::CStr;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::sys::shm::{self, Mapping};

/// Bytes reserved for the [`Header`] at the start of every segment.
pub(crate) const HEADER_SIZE: usize = 256;

const MAGIC: u64 = u64::from_le_bytes(*b"MPROCSHM");
const ACK_SLOTS: usize = 12;
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
    Bytes,
}

impl Kind {
    /// The user-facing type name, for error messages.
    fn name(self) -> &'static str {
        match self {
            Kind::Lock => "Lock",
            Kind::RLock => "RLock",
            Kind::Semaphore => "Semaphore",
            Kind::Event => "Event",
            Kind::Condition => "Condition",
            Kind::Barrier => "Barrier",
            Kind::Value => "Value",
            Kind::Array => "Array",
            Kind::Queue => "Queue",
            Kind::Pipe => "Connection",
            Kind::Bytes => "SharedBytes",
        }
    }
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
    /// Bytes at the start that every process maps whole (header and
    /// state); the rest of a sparse segment is mapped in windows.
    head: AtomicU64,
    _reserved: [AtomicU64; 2],
    acks: [AckSlot; ACK_SLOTS],
}

// SAFETY: repr(C), atomics only, all-zero is the valid "unset" header.
unsafe impl SharedState for Header {}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);

/// One mapped segment. Shared objects hold it in an `Arc`.
///
/// The memfd may be larger than what is mapped: a *sparse* segment (queues,
/// pipes) maps its head (header and control blocks) whole, and its data
/// areas in windows that grow with the data (`data_window`). Address space
/// then follows what an object holds, not the most it may hold; the file's
/// size costs nothing, since memfd pages exist only once touched.
pub(crate) struct Segment {
    /// The head: `[0, head)` of the memfd.
    map: Mapping,
    /// Keeps the memfd reachable through `/proc/<pid>/fd/<n>`.
    fd: OwnedFd,
    /// The memfd's size.
    file_len: usize,
    token: u64,
    /// Data windows mapped in this process, as `(file offset, mapping)`.
    /// Kept until the segment is dropped, so a pointer into one stays valid
    /// for as long as the segment lives; each growth of an area maps a
    /// window twice as large, so together they take less than twice the
    /// largest one.
    windows: Mutex<Vec<(usize, Mapping)>>,
    /// The largest window of each data area, for the lock-free fast path.
    views: [View; VIEWS],
}

/// How many data areas a sparse segment may have (a pipe has two).
pub(crate) const VIEWS: usize = 2;

/// The base and length of the largest window of one data area mapped in
/// this process. Windows of one area all start at the same file offset and
/// only grow, so any base seen is valid for any length seen before it.
#[derive(Default)]
struct View {
    base: AtomicPtr<u8>,
    len: AtomicUsize,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("len", &self.file_len)
            .field("token", &format_args!("{:016x}", self.token))
            .finish()
    }
}

/// A value kept alive with a segment while its handles are in flight.
pub(crate) type KeptValue = Box<dyn Any + Send + Sync>;

/// A serialized handle: where to find the segment and how to recognize it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Wire {
    /// The sender's host (see `address::host_tag`): shared memory and the
    /// sender's descriptors exist only there.
    host: u64,
    pid: u32,
    /// The sender's start time (low 32 bits), to tell a reused pid.
    start: u32,
    fd: i32,
    len: u64,
    head: u64,
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
    /// bytes after the header, all of it mapped.
    pub(crate) fn create(kind: Kind, type_hash: u64, size: usize) -> Result<Arc<Segment>, Error> {
        let len = (HEADER_SIZE + size).next_multiple_of(4096);
        Self::create_sparse(kind, type_hash, len, len)
    }

    /// Creates a segment of `total` bytes of which only the first `head`
    /// (header included) are mapped; the rest is reached through
    /// [`data_window`](Self::data_window).
    pub(crate) fn create_sparse(
        kind: Kind,
        type_hash: u64,
        head: usize,
        total: usize,
    ) -> Result<Arc<Segment>, Error> {
        let head = head.max(HEADER_SIZE).next_multiple_of(4096);
        let total = total.max(head).next_multiple_of(4096);
        let name: &CStr = c"mproc-shared";
        let created = Mapping::create(name, head).and_then(|(map, fd)| {
            if total > head {
                nix::unistd::ftruncate(&fd, total as i64)?;
            }
            Ok((map, fd))
        });
        let (map, fd) = created.map_err(|e| {
            Error::with_source(ErrorKind::Io, "cannot create a shared-memory segment", e)
        })?;
        let token = shm::random_u64();
        let seg = Arc::new(Segment::new(map, fd, total, token));
        let h = seg.header();
        h.token.store(token, Ordering::Relaxed);
        h.len.store(total as u64, Ordering::Relaxed);
        h.head.store(head as u64, Ordering::Relaxed);
        h.kind.store(kind as u32, Ordering::Relaxed);
        h.type_hash.store(type_hash, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, Arc::downgrade(&seg));
        Ok(seg)
    }

    fn new(map: Mapping, fd: OwnedFd, file_len: usize, token: u64) -> Segment {
        Segment {
            map,
            fd,
            file_len,
            token,
            windows: Mutex::new(Vec::new()),
            views: Default::default(),
        }
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

    /// Allocates and maps all of the segment's mapped part at once (see
    /// `Mapping::populate`): for a large buffer about to be written whole.
    pub(crate) fn populate(&self) {
        self.map.populate();
    }

    /// A raw pointer `offset` bytes into the segment, for data regions whose
    /// access a protocol guards (rings, `Value`/`Array` payloads).
    pub(crate) fn ptr_at(&self, offset: usize) -> *mut u8 {
        assert!(offset <= self.map.len(), "offset out of the segment");
        self.map.base().wrapping_add(offset)
    }

    /// The length of the head, the part mapped whole (all of a segment made
    /// by [`create`](Self::create)).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The size of the memfd: the head plus every data area at its largest.
    pub(crate) fn file_len(&self) -> usize {
        self.file_len
    }

    /// A pointer to `len` bytes of data area `view` (`< VIEWS`), which starts
    /// at file offset `offset` (page-aligned, past the head). Maps a larger
    /// window when this process has none that covers `len` yet. The pointer
    /// stays valid while `self` lives. One area must always be asked for
    /// with the same `offset`.
    ///
    /// # Errors
    /// The OS error of `mmap` (`ENOMEM` under an address-space limit), or
    /// `InvalidData` when the area would pass the end of the memfd.
    pub(crate) fn data_window(
        &self,
        view: usize,
        offset: usize,
        len: usize,
    ) -> std::io::Result<*mut u8> {
        let v = &self.views[view];
        if v.len.load(Ordering::Acquire) >= len {
            return Ok(v.base.load(Ordering::Acquire));
        }
        self.map_window(view, offset, len)
    }

    #[cold]
    fn map_window(&self, view: usize, offset: usize, len: usize) -> std::io::Result<*mut u8> {
        debug_assert!(offset >= self.map.len() && offset % 4096 == 0);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let v = &self.views[view];
        if v.len.load(Ordering::Acquire) >= len {
            return Ok(v.base.load(Ordering::Acquire));
        }
        debug_assert!(windows.iter().all(|(o, m)| *o != offset || m.len() < len));
        let m = Mapping::map_at(&self.fd, offset, len)?;
        let base = m.base();
        windows.push((offset, m));
        // Base first, then length: whoever sees the length sees this base
        // or a later (larger, same-offset) one.
        v.base.store(base, Ordering::Release);
        v.len.store(len, Ordering::Release);
        Ok(base)
    }

    /// Returns `[offset, offset + len)` of the memfd to the kernel; the range
    /// must lie in the head or in one window mapped here.
    ///
    /// # Safety
    /// As [`Mapping::discard`]: nobody may use the range concurrently and it
    /// must hold no live data; bounds page-aligned.
    pub(crate) unsafe fn discard(&self, offset: usize, len: usize) {
        let inside = |o: usize, m: &Mapping| o <= offset && offset + len <= o + m.len();
        if inside(0, &self.map) {
            // SAFETY: forwarded contract; the range is inside the head.
            unsafe { self.map.discard(offset, len) };
            return;
        }
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((o, m)) = windows.iter().find(|(o, m)| inside(*o, m)) {
            // SAFETY: forwarded contract; the range is inside this window,
            // and discarding through one mapping frees the memfd's pages
            // for every mapping of them.
            unsafe { m.discard(offset - o, len) };
        }
    }

    /// Encodes a handle to this segment, keeping the segment alive in this
    /// process until a receiver has opened it (see the module doc).
    pub(crate) fn to_wire(self: &Arc<Self>) -> Wire {
        keepalive::issue(self, None)
    }

    /// As [`to_wire`](Self::to_wire), also keeping alive what `keep` makes
    /// (a clone of a pipe end, which registers its holder). `key` names the
    /// kept value among those of this segment: it is made only when no value
    /// of that key is kept yet.
    pub(crate) fn to_wire_keeping(self: &Arc<Self>, key: u8, keep: &dyn Fn() -> KeptValue) -> Wire {
        keepalive::issue(self, Some((key, keep)))
    }

    /// The wire form for ticket `ticket` of `slot`.
    fn wire(&self, slot: u8, ticket: u32) -> Wire {
        Wire {
            host: crate::address::host_tag(),
            pid: shm::pid(),
            start: shm::start_time(),
            fd: self.fd.as_raw_fd(),
            len: self.file_len as u64,
            head: self.map.len() as u64,
            token: self.token,
            slot,
            ticket,
        }
    }

    /// Issues the next ticket of `slot` (owned by this process).
    fn next_ticket(&self, slot: u8) -> u32 {
        let s = &self.header().acks[slot as usize];
        let issued = s.issued.load(Ordering::Acquire);
        let acked = s.acked.load(Ordering::Acquire);
        // A handle decoded twice acknowledges twice; do not let that surplus
        // acknowledge tickets not yet issued.
        if acked.wrapping_sub(issued) as i32 > 0 {
            let _ = s
                .acked
                .compare_exchange(acked, issued, Ordering::AcqRel, Ordering::Acquire);
        }
        s.issued.fetch_add(1, Ordering::AcqRel).wrapping_add(1)
    }

    /// Frees `slot` if this process owns it (nothing of ours is in flight).
    fn release_ack_slot(&self, slot: u8, me: u32) {
        if let Some(s) = self.header().acks.get(slot as usize) {
            let _ = s
                .pid
                .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Acquire);
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
        if w.host != crate::address::host_tag() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "a shared-memory object cannot be used on another host (this is {}): \
                     shared memory lives on one machine; share state across hosts with a \
                     Manager served over TCP (Manager::serve) and its proxies, or an actor",
                    crate::address::current_node()
                ),
            ));
        }
        let cached = cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&w.token)
            .and_then(Weak::upgrade);
        let seg = match cached {
            Some(s) => s,
            None => Self::open_remote(w, kind)?,
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

    fn open_remote(w: &Wire, kind: Kind) -> Result<Arc<Segment>, Error> {
        let what = kind.name();
        let gone = || {
            let msg = if w.pid == shm::pid() {
                format!(
                    "this process sent this {what} handle and has since dropped every handle \
                     to the shared object, so it could not be opened"
                )
            } else if shm::process_dead(w.pid, (w.start != 0).then_some(w.start)) {
                format!(
                    "the process (pid {}) that sent this {what} handle has exited, so the \
                     shared object could not be opened",
                    w.pid
                )
            } else {
                format!(
                    "the process (pid {}) that sent this {what} handle no longer holds the \
                     shared object (it dropped every handle to it and saw this handle as \
                     received, e.g. because the same bytes were decoded twice), so it could \
                     not be opened",
                    w.pid
                )
            };
            Error::new(ErrorKind::Disconnected, msg)
        };
        if w.pid == shm::pid() {
            return Err(gone());
        }
        if w.head > w.len || w.head < HEADER_SIZE as u64 {
            return Err(gone());
        }
        let opened = shm::open_remote(w.pid, w.fd, w.len as usize)
            .and_then(|fd| Ok((Mapping::map(&fd, w.head as usize)?, fd)));
        let (map, fd) = match opened {
            Ok(m) => m,
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                return Err(Error::with_source(
                    ErrorKind::Io,
                    format!(
                        "cannot open the shared {what} of process {} through /proc (another \
                         user's, or not dumpable)",
                        w.pid
                    ),
                    e,
                ))
            }
            Err(_) => return Err(gone()),
        };
        let seg = Segment::new(map, fd, w.len as usize, w.token);
        let h = seg.header();
        if h.magic.load(Ordering::Acquire) != MAGIC
            || h.token.load(Ordering::Relaxed) != w.token
            || h.len.load(Ordering::Relaxed) != w.len
            || h.head.load(Ordering::Relaxed) != w.head
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

/// Serializes a handle: its segment's [`Wire`], keeping the segment alive.
pub(crate) fn serialize_handle<S: serde::Serializer>(
    seg: &Arc<Segment>,
    s: S,
) -> Result<S::Ok, S::Error> {
    seg.to_wire().serialize(s)
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

/// Turns a failed open into a serde error carrying its message, logs it,
/// and remembers it for [`decode_error_message`]: some formats (postcard
/// among them) keep only "custom error", not the message.
pub(crate) fn report_open_error<E: serde::de::Error>(e: Error) -> E {
    tracing::error!(target: "mproc::shared", "cannot receive a shared-object handle: {e}");
    let msg = e.to_string();
    crate::protocol::batch::note_decode_cause(msg.clone());
    E::custom(msg)
}

pub(crate) use crate::protocol::batch::decode_error_message;

mod keepalive;

#[cfg(test)]
mod tests;
