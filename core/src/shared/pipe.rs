//! [`pipe`] and [`Connection`]: a typed duplex channel between two ends
//! (Python's `multiprocessing.Pipe`), built as two shared byte rings
//! (`ring/`) in one segment, one per direction.
//!
//! # Knowing when the other end is gone
//!
//! Each end has a `closed` flag and a table of *holders*: the processes that
//! hold a handle to it, as `(pid, start time)` registered when the handle is
//! made in (or received by) a process and removed when that handle is
//! dropped. A handle in flight (serialized, not yet received) stays
//! registered in its sender by the keep-alive of `segment/`.
//!
//! The other end is *gone* when its `closed` flag is set, or when none of its
//! holders is alive (no such process, a zombie, or a reused pid). `close`
//! wakes every sleeper at once; a death is noticed by the next check, made
//! after each bounded sleep slice of a waiting `recv`/`send`/`poll` and at
//! most every few milliseconds by `send`. Data sent before the close or death
//! is still delivered; after it, the error's kind is
//! [`ErrorKind::Disconnected`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::queue::with_encoded;
use super::ring::{Ring, RingError};
use super::segment::{
    decode_error_message, report_open_error, type_hash, Kind, Segment, SharedState, Wire,
    HEADER_SIZE,
};
use super::wait::{self, Deadline};
use crate::error::{Error, ErrorKind};
use crate::sys::shm;

/// The most bytes of encoded messages each direction can hold at once.
///
/// A limit, not a reservation: each direction's data area starts at 64 KiB
/// and grows by doubling up to this size when messages do not fit, and the
/// address space a pipe takes in each process follows its current size.
pub const PIPE_BYTES: usize = 1 << 30;

/// The first size of each direction's data area.
const INITIAL_BYTES: usize = 64 << 10;

const HOLDERS: usize = 32;
const RING0_CTRL: usize = 2048;
const RING1_CTRL: usize = RING0_CTRL + Ring::CTRL_SIZE;
const DATA0: usize = 4096;
const DATA1: usize = DATA0 + PIPE_BYTES;

#[repr(C)]
struct Holder {
    pid: AtomicU32,
    start: AtomicU32,
}

#[repr(C)]
struct State {
    closed: [AtomicU32; 2],
    holders: [[Holder; HOLDERS]; 2],
}

// SAFETY: repr(C), atomics only; all-zero is "open, no holders".
unsafe impl SharedState for State {}

const _: () = assert!(HEADER_SIZE + std::mem::size_of::<State>() <= RING0_CTRL);
const _: () = assert!(RING1_CTRL + Ring::CTRL_SIZE <= DATA0);

/// The ring that end `idx` sends on (and the other end receives from).
fn ring_from(idx: usize) -> Ring {
    if idx == 0 {
        Ring::at(RING0_CTRL, DATA0, PIPE_BYTES, 0)
    } else {
        Ring::at(RING1_CTRL, DATA1, PIPE_BYTES, 1)
    }
}

/// One end as held by this process: registered as a holder while alive.
struct EndRef {
    seg: Arc<Segment>,
    idx: usize,
    slot: Option<usize>,
    /// When `send` last checked that the peer is alive (ms since `EPOCH`).
    last_check: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl EndRef {
    fn new(seg: Arc<Segment>, idx: usize) -> Result<EndRef, Error> {
        let st: &State = seg.state();
        let me = shm::pid();
        let table = &st.holders[idx];
        let mut slot = None;
        'find: for pass in 0..2 {
            for (i, h) in table.iter().enumerate() {
                let cur = h.pid.load(Ordering::Acquire);
                let free = cur == 0
                    || (pass == 1 && shm::process_dead(cur, Some(h.start.load(Ordering::Acquire))));
                if free
                    && h.pid
                        .compare_exchange(cur, me, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    h.start.store(shm::start_time(), Ordering::Release);
                    slot = Some(i);
                    break 'find;
                }
            }
        }
        if slot.is_none() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("a pipe end can be held by at most {HOLDERS} handles in live processes"),
            ));
        }
        Ok(EndRef {
            seg,
            idx,
            slot,
            last_check: AtomicU64::new(0),
        })
    }

    fn state(&self) -> &State {
        self.seg.state()
    }

    fn peer(&self) -> usize {
        1 - self.idx
    }

    fn closed_here(&self) -> bool {
        self.state().closed[self.idx].load(Ordering::Acquire) != 0
    }

    /// True when the other end is closed or no live process holds it.
    fn peer_gone(&self) -> bool {
        let st = self.state();
        let p = self.peer();
        if st.closed[p].load(Ordering::Acquire) != 0 {
            return true;
        }
        !st.holders[p].iter().any(|h| {
            let pid = h.pid.load(Ordering::Acquire);
            if pid == 0 {
                return false;
            }
            let start = h.start.load(Ordering::Acquire);
            pid == shm::pid() || !shm::process_dead(pid, (start != 0).then_some(start))
        })
    }

    /// `peer_gone`, at most every 5 ms per handle (for `send`).
    fn peer_gone_throttled(&self) -> bool {
        if self.state().closed[self.peer()].load(Ordering::Acquire) != 0 {
            return true;
        }
        let now = epoch().elapsed().as_millis() as u64;
        let last = self.last_check.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 5 {
            return false;
        }
        self.last_check.store(now, Ordering::Relaxed);
        self.peer_gone()
    }

    fn close(&self) {
        self.state().closed[self.idx].store(1, Ordering::SeqCst);
        ring_from(0).close(&self.seg);
        ring_from(1).close(&self.seg);
    }
}

impl Drop for EndRef {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let h = &self.state().holders[self.idx][i];
            // A forked child's inherited copy must not free its parent's slot.
            if h.pid.load(Ordering::Acquire) == shm::pid() {
                h.start.store(0, Ordering::Release);
                h.pid.store(0, Ordering::Release);
            }
        }
        // The last holder of this end in any process is gone: let a peer
        // sleeping on data wake and notice at once rather than after a slice.
        let st = self.state();
        if st.holders[self.idx]
            .iter()
            .all(|h| h.pid.load(Ordering::Acquire) == 0)
        {
            ring_from(self.idx).close(&self.seg);
            ring_from(self.peer()).close(&self.seg);
        }
    }
}

/// One end of a [`pipe`]: sends `T`s to the other end and receives theirs.
///
/// A cheap handle; clones and copies passed to a task or process are the
/// same end. Errors are [`Error`]s; once the other end is closed or every
/// process holding it has died, operations fail with kind
/// [`ErrorKind::Disconnected`] (after the messages already sent were
/// received), never hang.
pub struct Connection<T> {
    end: Arc<EndRef>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Connection<T> {
    fn clone(&self) -> Self {
        Connection {
            end: self.end.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("end", &self.end.idx)
            .field("closed", &self.end.closed_here())
            .finish()
    }
}

/// Creates a duplex pipe: what one end sends, the other receives.
///
/// # Examples
/// ```
/// let (a, b) = mproc_core::pipe::<String>()?;
/// a.send(&"hello".to_string())?;
/// assert!(b.poll(Some(std::time::Duration::from_secs(1)))?);
/// assert_eq!(b.recv()?, "hello");
/// a.close();
/// assert_eq!(b.recv().unwrap_err().kind(), mproc_core::ErrorKind::Disconnected);
/// # Ok::<(), mproc_core::Error>(())
/// ```
///
/// # Errors
/// [`ErrorKind::Io`] when no shared memory can be had.
pub fn pipe<T: Serialize + DeserializeOwned>() -> Result<(Connection<T>, Connection<T>), Error> {
    let seg = Segment::create_sparse(
        Kind::Pipe,
        type_hash::<Connection<T>>(),
        DATA0,
        DATA1 + PIPE_BYTES,
    )?;
    ring_from(0).init(&seg, 0, INITIAL_BYTES);
    ring_from(1).init(&seg, 0, INITIAL_BYTES);
    let a = EndRef::new(seg.clone(), 0)?;
    let b = EndRef::new(seg, 1)?;
    Ok((Connection::from_end(a), Connection::from_end(b)))
}

fn disconnected(what: &str) -> Error {
    Error::new(ErrorKind::Disconnected, what.to_string())
}

const PEER_GONE: &str = "the other end of the pipe is closed or its process has exited";
const HERE_CLOSED: &str = "this end of the pipe is closed";

impl<T> Connection<T> {
    fn from_end(end: EndRef) -> Self {
        Connection {
            end: Arc::new(end),
            _t: PhantomData,
        }
    }

    fn tx(&self) -> Ring {
        ring_from(self.end.idx)
    }

    fn rx(&self) -> Ring {
        ring_from(self.end.peer())
    }

    /// Closes this end, for every process holding it: the other end receives
    /// what was sent before, then gets [`ErrorKind::Disconnected`]; further
    /// use of this end fails the same way.
    pub fn close(&self) {
        self.end.close();
    }

    /// True once this end was closed.
    pub fn is_closed(&self) -> bool {
        self.end.closed_here()
    }

    fn map_ring(&self, e: RingError, size: usize) -> Error {
        match e {
            // `Empty`/`Full` only come from a wait that gave up, which the
            // callers above turn into a timeout before they get here.
            RingError::Closed | RingError::Empty | RingError::Full => {
                if self.end.closed_here() {
                    disconnected(HERE_CLOSED)
                } else {
                    disconnected(PEER_GONE)
                }
            }
            RingError::TooLarge => Error::new(
                ErrorKind::Protocol,
                format!(
                    "message of {size} bytes is larger than a pipe can carry ({} bytes)",
                    self.tx().max_payload()
                ),
            ),
            RingError::NoMemory => Error::new(
                ErrorKind::Io,
                "the pipe's buffer cannot be grown or mapped in this process: out of address \
                 space or memory",
            ),
        }
    }

    fn check_send(&self) -> Result<(), Error> {
        if self.end.closed_here() {
            return Err(disconnected(HERE_CLOSED));
        }
        if self.end.peer_gone_throttled() {
            return Err(disconnected(PEER_GONE));
        }
        Ok(())
    }
}

fn encode_err(e: postcard::Error) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("cannot encode the message: {e}"),
    )
}

fn decode_err(e: postcard::Error) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("cannot decode the message: {}", decode_error_message(&e)),
    )
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends a message; waits only while the pipe holds [`PIPE_BYTES`]
    /// unread.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when either end is closed or the other
    /// end's processes are gone; [`ErrorKind::Protocol`] when the message
    /// cannot be encoded or is too large.
    pub fn send(&self, msg: &T) -> Result<(), Error> {
        self.check_send()?;
        let end = &self.end;
        with_encoded(msg, |bytes| {
            self.tx()
                .put(&end.seg, bytes, Deadline::NEVER, &mut || end.peer_gone())
                .map_err(|e| self.map_ring(e, bytes.len()))
        })
        .map_err(encode_err)?
    }

    /// As [`send`](Self::send), without blocking the async runtime's thread.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_async(&self, msg: &T) -> Result<(), Error> {
        self.check_send()?;
        let bytes = postcard::to_stdvec(msg).map_err(encode_err)?;
        loop {
            match self
                .tx()
                .put(&self.end.seg, &bytes, Deadline::now(), &mut || false)
            {
                Err(RingError::Full) => {
                    if self.end.peer_gone() {
                        return Err(disconnected(PEER_GONE));
                    }
                    let (seg, ring, n) = (self.end.seg.clone(), self.tx(), bytes.len());
                    wait::off_runtime(move || ring.wait_writable(&seg, n)).await;
                }
                r => return r.map_err(|e| self.map_ring(e, bytes.len())),
            }
        }
    }

    /// The next message, or `None` when `deadline` passed first.
    fn recv_until(&self, deadline: Deadline) -> Result<Option<T>, Error> {
        if self.end.closed_here() {
            return Err(disconnected(HERE_CLOSED));
        }
        let end = &self.end;
        match self
            .rx()
            .get(&end.seg, deadline, &mut || end.peer_gone(), |b| {
                postcard::from_bytes::<T>(b)
            }) {
            Ok(decoded) => decoded.map(Some).map_err(decode_err),
            Err(RingError::Empty) => Ok(None),
            Err(e) => Err(self.map_ring(e, 0)),
        }
    }

    /// Receives the next message, waiting for one.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when nothing is left and the other end is
    /// closed or gone, or this end is closed; [`ErrorKind::Protocol`] when
    /// the message cannot be decoded.
    pub fn recv(&self) -> Result<T, Error> {
        loop {
            if let Some(v) = self.recv_until(Deadline::NEVER)? {
                return Ok(v);
            }
        }
    }

    /// As [`recv`](Self::recv), waiting at most `d`; `Ok(None)` on timeout.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(&self, d: Duration) -> Result<Option<T>, Error> {
        self.recv_until(Deadline::after(d))
    }

    /// As [`recv`](Self::recv), without blocking the async runtime's thread.
    ///
    /// # Cancel safety
    /// Cancel-safe: messages are only taken on the polling thread.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub async fn recv_async(&self) -> Result<T, Error> {
        loop {
            if self.rx().has_data(&self.end.seg) || self.rx().is_closed(&self.end.seg) {
                if let Some(v) = self.recv_until(Deadline::now())? {
                    return Ok(v);
                }
                // Another thread took it: wait again.
                continue;
            }
            if self.end.closed_here() {
                return Err(disconnected(HERE_CLOSED));
            }
            let (seg, ring) = (self.end.seg.clone(), self.rx());
            wait::off_runtime(move || ring.wait_readable(&seg)).await;
            if !self.rx().has_data(&self.end.seg) && self.end.peer_gone() {
                return match self.recv_until(Deadline::now())? {
                    Some(v) => Ok(v),
                    None => Err(disconnected(PEER_GONE)),
                };
            }
        }
    }

    /// Waits at most `timeout` (forever for `None`) until a message can be
    /// received without waiting. `Ok(true)` also when the other end is gone,
    /// so that the next [`recv`](Self::recv) reports it, as in Python.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when this end is closed.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        if self.end.closed_here() {
            return Err(disconnected(HERE_CLOSED));
        }
        let deadline = timeout.map_or(Deadline::NEVER, Deadline::after);
        let end = &self.end;
        match self.rx().poll(&end.seg, deadline, &mut || end.peer_gone()) {
            Ok(ready) => Ok(ready),
            Err(_) if end.closed_here() => Err(disconnected(HERE_CLOSED)),
            Err(_) => Ok(true),
        }
    }
}

impl<T> Serialize for Connection<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Keep this end registered as held by this process until a receiver
        // has registered itself (one kept clone per end, however many sends).
        let end = &self.end;
        let wire = end
            .seg
            .to_wire_keeping(end.idx as u8, &|| Box::new(end.clone()));
        (self.end.idx as u8, wire).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Connection<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (idx, wire): (u8, Wire) = Deserialize::deserialize(d)?;
        if idx > 1 {
            return Err(serde::de::Error::custom("bad pipe end index"));
        }
        let seg = Segment::open_unacked(&wire, Kind::Pipe, type_hash::<Connection<T>>())
            .map_err(report_open_error)?;
        // Register as a holder before acknowledging: the sender drops its
        // kept handle on the acknowledgement, and the end must never look
        // held by nobody in between.
        let end = EndRef::new(seg.clone(), idx as usize).map_err(report_open_error)?;
        seg.acknowledge(&wire);
        Ok(Connection::from_end(end))
    }
}
