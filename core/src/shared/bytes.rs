//! [`SharedBytes`]: an immutable byte buffer in shared memory that crosses
//! to other processes by handle, and [`Bytes`]: an owned byte buffer that
//! travels as one byte string.
//!
//! Layout after the segment header: the length (a `u64` on its own cache
//! line), then the bytes. The bytes are written once, before the first
//! handle exists, and only read afterwards; the segment (a memfd) is freed
//! by the kernel when the last handle in any process is gone, also after a
//! SIGKILL, and never has a name in `/dev/shm`.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::segment::{Kind, Segment, SharedState, HEADER_SIZE};
use crate::error::Error;
use crate::protocol::oob;

#[repr(C)]
struct BytesState {
    len: AtomicU64,
}

// SAFETY: `BytesState` is one atomic, valid when zeroed, and lives in the
// segment's state area, which is at least one cache line.
unsafe impl SharedState for BytesState {}

/// Where the bytes start: one cache line after the state.
const DATA: usize = HEADER_SIZE + 64;

/// An immutable byte buffer in shared memory, passed to tasks, `Process`
/// targets and other processes *by handle*: nothing is copied when it
/// crosses, and the receiver reads it in place as `&[u8]` (it derefs to a
/// slice). The memory is freed when the last handle in any process is gone.
///
/// Use it for large inputs that several tasks read (a model, a table, an
/// image): a plain `Vec<u8>` argument is copied into every message, a
/// `SharedBytes` costs a few dozen bytes per message however large it is.
/// For bytes that are small or produced by the task itself, [`Bytes`] is
/// the simpler choice.
///
/// # Examples
/// ```
/// use mproc::SharedBytes;
///
/// let table = SharedBytes::from_vec(vec![7u8; 1 << 20])?;
/// let copy = table.clone(); // another handle, not another copy
/// assert_eq!(copy.len(), 1 << 20);
/// assert_eq!(copy[12], 7);
///
/// // Written in place, with no intermediate Vec:
/// let squares = SharedBytes::with_len(256, |b| {
///     for (i, x) in b.iter_mut().enumerate() {
///         *x = (i * i % 251) as u8;
///     }
/// })?;
/// assert_eq!(squares[3], 9);
/// # Ok::<(), mproc::Error>(())
/// ```
#[derive(Clone)]
pub struct SharedBytes {
    seg: Arc<Segment>,
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl SharedBytes {
    /// A buffer of `len` bytes, filled in place by `fill` before any handle
    /// to it exists.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had.
    pub fn with_len(len: usize, fill: impl FnOnce(&mut [u8])) -> Result<SharedBytes, Error> {
        let seg = Segment::create(Kind::Bytes, 0, DATA - HEADER_SIZE + len)?;
        if len >= 1 << 20 {
            // About to be written whole: one system call instead of a page
            // fault per 4 KiB.
            seg.populate();
        }
        let state: &BytesState = seg.state();
        state.len.store(len as u64, Ordering::Release);
        let p = seg.ptr_at(DATA);
        debug_assert!(DATA + len <= seg.len());
        // SAFETY: `[DATA, DATA + len)` lies inside the segment (created with
        // that size just now), nothing else refers to it yet (no handle has
        // been made), and the mutable slice ends before `fill` returns.
        let bytes = unsafe { std::slice::from_raw_parts_mut(p, len) };
        fill(bytes);
        Ok(SharedBytes { seg })
    }

    /// A shared copy of `bytes`.
    ///
    /// # Errors
    /// As [`with_len`](Self::with_len).
    pub fn from_slice(bytes: &[u8]) -> Result<SharedBytes, Error> {
        Self::with_len(bytes.len(), |b| b.copy_from_slice(bytes))
    }

    /// A shared copy of `v` (one copy, into shared memory).
    ///
    /// # Errors
    /// As [`with_len`](Self::with_len).
    pub fn from_vec(v: Vec<u8>) -> Result<SharedBytes, Error> {
        Self::from_slice(&v)
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        let state: &BytesState = self.seg.state();
        state.len.load(Ordering::Acquire) as usize
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, read in place.
    pub fn as_slice(&self) -> &[u8] {
        let len = self.len().min(self.seg.len().saturating_sub(DATA));
        // SAFETY: the range is inside the mapping (clamped to its length
        // above), which lives as long as `self.seg`; the bytes were written
        // before the first handle existed and mproc never writes them again,
        // so no `&mut` to them exists while this slice lives.
        unsafe { std::slice::from_raw_parts(self.seg.ptr_at(DATA), len) }
    }

    /// A copy of the bytes in an owned `Vec`.
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SharedBytes {}

super::handle_serde!(SharedBytes, Kind::Bytes);

/// An owned byte buffer that travels as one byte string: the way to pass
/// bytes (Python's `bytes`) as a task's argument or result, through a
/// [`Connection`](crate::Connection) or a [`Queue`](crate::Queue). It is in
/// the prelude.
///
/// Use it instead of `Vec<u8>`: serde encodes a `Vec<u8>` as a sequence,
/// one element at a time (about 1.5 ns per byte, 0.1 s for 64 MiB each
/// way), where `Bytes` is one length and one `memcpy`. It derefs to
/// `Vec<u8>`, and converts from and into it for free, so a task can take
/// `Bytes` and use it as the vector it is. For large bytes that several
/// tasks read, share them instead: [`SharedBytes`] crosses by handle.
///
/// Between an [`Executor`](crate::Executor) or [`Pool`](crate::Pool) and
/// its workers, a `Bytes` of 256 KiB or more in a task's arguments or
/// result travels beside the message rather than inside it and is read
/// straight into the receiver's buffer: a large `Bytes` costs one copy into
/// the transport and one out of it each way. When it is a task's one
/// argument, or what a task returns, its buffer is sent as it is, with no
/// copy on the sending side.
///
/// # Examples
/// ```
/// use mproc::Bytes;
///
/// let b = Bytes::from(vec![1u8, 2, 3]);
/// assert_eq!(b.len(), 3);
/// let v: Vec<u8> = b.into();
/// assert_eq!(v, [1, 2, 3]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// An empty buffer.
    pub fn new() -> Bytes {
        Bytes(Vec::new())
    }

    /// The bytes as an owned `Vec`.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl Deref for Bytes {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Bytes {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(v)
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Bytes {
        Bytes(v.to_vec())
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(b: Bytes) -> Vec<u8> {
        b.0
    }
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let plain = serde_bytes::Bytes::new(&self.0);
        match oob::encode_form(&self.0) {
            oob::Form::Plain => plain.serialize(s),
            oob::Form::Inline => (0u8, plain).serialize(s),
            oob::Form::Sidecar => (1u8, self.0.len() as u64).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        if oob::decoding() {
            d.deserialize_tuple(2, TaggedVisitor)
        } else {
            d.deserialize_byte_buf(BytesVisitor)
        }
    }
}

/// A byte string decoded as [`BytesVisitor`] does, inside a tagged form.
struct Plain(Bytes);

impl<'de> Deserialize<'de> for Plain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Plain, D::Error> {
        d.deserialize_byte_buf(BytesVisitor).map(Plain)
    }
}

/// Decodes the tagged form of an out-of-band batch (see
/// `protocol::oob`): the bytes inline, or the next sidecar taken over as
/// they are.
struct TaggedVisitor;

impl<'de> serde::de::Visitor<'de> for TaggedVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tagged byte string")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        use serde::de::Error as _;
        let tag: u8 = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
        match tag {
            0 => seq
                .next_element::<Plain>()?
                .map(|p| p.0)
                .ok_or_else(|| A::Error::invalid_length(1, &self)),
            1 => {
                let len: u64 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                let side = oob::next_sidecar()
                    .ok_or_else(|| A::Error::custom("a byte string sent out of band is missing"))?;
                if side.len() as u64 != len {
                    return Err(A::Error::custom(format_args!(
                        "a byte string sent out of band has {} bytes, not {len}",
                        side.len()
                    )));
                }
                Ok(Bytes(side))
            }
            t => Err(A::Error::custom(format_args!(
                "unknown byte string form {t}"
            ))),
        }
    }
}

/// Decodes a byte string with one copy into a buffer made for it (see
/// `spare::with_capacity`); a format
/// that writes bytes as a sequence is read element by element.
struct BytesVisitor;

impl<'de> serde::de::Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        // A large string goes into a pooled buffer when one is there: its
        // pages are already faulted in.
        Ok(Bytes(mproc_transport::spare::copy_of(v)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bytes, E> {
        self.visit_bytes(v.as_bytes())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut buf = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element::<u8>()? {
            buf.push(b);
        }
        Ok(Bytes(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_travel_as_one_byte_string() {
        let b = Bytes::from(vec![9u8; 1000]);
        let wire = postcard::to_stdvec(&b).unwrap();
        // A length prefix (2 bytes for 1000) and the bytes: nothing per byte.
        assert_eq!(wire.len(), 1002);
        assert_eq!(postcard::from_bytes::<Bytes>(&wire).unwrap(), b);
        let big = Bytes::from(vec![5u8; 3 << 20]);
        let wire = postcard::to_stdvec(&big).unwrap();
        assert_eq!(postcard::from_bytes::<Bytes>(&wire).unwrap(), big);
    }

    #[test]
    fn shared_bytes_are_read_in_place_through_any_handle() {
        let s = SharedBytes::with_len(10_000, |b| b.fill(3)).unwrap();
        let wire = postcard::to_stdvec(&s).unwrap();
        assert!(wire.len() < 100, "a handle, not the bytes: {}", wire.len());
        let back: SharedBytes = postcard::from_bytes(&wire).unwrap();
        assert_eq!(back.len(), 10_000);
        assert!(back.iter().all(|&x| x == 3));
        assert_eq!(
            back.as_slice().as_ptr(),
            s.as_slice().as_ptr(),
            "one mapping"
        );
        assert!(SharedBytes::from_slice(&[]).unwrap().is_empty());
    }
}
