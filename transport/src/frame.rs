//! Length-prefixed frames: `[len: u32 LE][payload: len bytes]`, and the
//! *sidecars* that may precede a frame.
//!
//! A sidecar is a run of raw bytes that belongs to the next frame: its
//! header is the length with the top bit ([`SIDECAR_BIT`]) set. A large
//! byte string travels as one, so that the receiver reads it straight into
//! a buffer of its own (which becomes the decoded value) instead of into the
//! frame and then out of it again. What a sidecar means is up to the
//! message that follows; this layer only hands them over with the frame
//! ([`FrameReader::take_sidecars`]) and counts them against the same limit:
//! a frame and its sidecars together are at most the maximum payload.

use std::time::Instant;

use crate::{spare, ByteStream, TransportError};

/// Bytes in a frame header.
pub const FRAME_HEADER: usize = 4;
/// The default largest payload: 1 GiB plus room for a message header.
pub const DEFAULT_MAX_FRAME: usize = (1 << 30) + (1 << 20);
/// The largest limit that can be configured (the header is a `u32` whose
/// top bit marks a sidecar).
pub const MAX_FRAME_LIMIT: usize = (SIDECAR_BIT - 1) as usize;
/// The top bit of a header: the bytes that follow are a sidecar of the next
/// frame, not a frame.
pub const SIDECAR_BIT: u32 = 1 << 31;
/// The most sidecars one frame may have.
pub const MAX_SIDECARS: usize = 4096;

const MIN_READ: usize = 64 * 1024;
/// A sidecar buffer grown by at least this much is faulted in at once.
const PREFAULT_MIN: usize = 256 * 1024;

/// Starts a frame at the end of `buf`; returns its start offset for
/// [`end_frame`].
pub fn begin_frame(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER]);
    start
}

/// The header of a sidecar of `len` bytes (at most [`MAX_FRAME_LIMIT`]),
/// which the `len` bytes themselves follow.
pub fn sidecar_header(len: usize) -> [u8; FRAME_HEADER] {
    assert!(
        len <= MAX_FRAME_LIMIT,
        "a sidecar is at most MAX_FRAME_LIMIT bytes"
    );
    (len as u32 | SIDECAR_BIT).to_le_bytes()
}

/// Finishes the frame begun at `start`, writing its length. A payload over
/// `max` is removed from `buf` again and reported.
pub fn end_frame(buf: &mut Vec<u8>, start: usize, max: usize) -> Result<(), TransportError> {
    let len = buf.len() - start - FRAME_HEADER;
    if len > max.min(MAX_FRAME_LIMIT) {
        buf.truncate(start);
        return Err(TransportError::FrameTooLarge {
            size: len as u64,
            limit: max as u64,
        });
    }
    buf[start..start + FRAME_HEADER].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Reads frames from a [`ByteStream`], many per system call when they are
/// small.
///
/// A buffer grown for a large frame is kept while large frames keep coming
/// (no fresh allocation, no page faults per message). Once small frames
/// follow and no large one has come for [`spare::STALE`], it is given back
/// (to [`spare`](crate::spare)); a reader that only ever sees large frames,
/// or none, keeps it.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
    /// When the last frame over [`spare::LARGE`] was returned.
    last_large: Option<Instant>,
    /// A small frame has been returned since the last large one.
    small_since: bool,
    /// Where the payload of the frame last returned lies in `buf`, until
    /// the next call.
    last: Option<std::ops::Range<usize>>,
    /// Sidecars read since the last frame, and their bytes.
    sidecars: Vec<Vec<u8>>,
    side_bytes: usize,
    /// The sidecars of the frame last returned, until the next call.
    last_sidecars: Vec<Vec<u8>>,
}

impl FrameReader {
    /// A reader that refuses payloads over `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameReader {
            buf: vec![0; MIN_READ],
            start: 0,
            end: 0,
            max: max.min(MAX_FRAME_LIMIT),
            last_large: None,
            small_since: false,
            last: None,
            sidecars: Vec::new(),
            side_bytes: 0,
            last_sidecars: Vec::new(),
        }
    }

    /// The next header, when it is buffered: the length and whether a
    /// sidecar follows rather than a frame.
    fn pending_header(&self) -> Option<(usize, bool)> {
        let avail = &self.buf[self.start..self.end];
        (avail.len() >= FRAME_HEADER).then(|| {
            let h = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]);
            ((h & !SIDECAR_BIT) as usize, h & SIDECAR_BIT != 0)
        })
    }

    /// The length of the next frame's payload, when its header is buffered
    /// (a sidecar's header counts as over any limit: see
    /// [`try_next_frame`](Self::try_next_frame)).
    fn pending_len(&self) -> Option<usize> {
        self.pending_header()
            .map(|(len, side)| if side { usize::MAX } else { len })
    }

    /// True when a whole frame is already buffered, so
    /// [`next_frame`](Self::next_frame) will not block. (False while a
    /// sidecar is next: its frame is still on its way.)
    pub fn has_frame(&self) -> bool {
        match self.pending_header() {
            Some((len, false)) => {
                len <= self.max.saturating_sub(self.side_bytes)
                    && self.end - self.start >= FRAME_HEADER + len
            }
            _ => false,
        }
    }

    /// The sidecars that came before the frame last returned (by
    /// [`next_frame`](Self::next_frame) or
    /// [`try_next_frame`](Self::try_next_frame)), in the order sent; empty
    /// when it had none. Sidecars not taken are dropped at the next call.
    pub fn take_sidecars(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.last_sidecars)
    }

    /// The frame last returned (by [`next_frame`](Self::next_frame) or
    /// [`try_next_frame`](Self::try_next_frame), with no call since) with
    /// its sidecars, taken: for a caller that needs both at once. Empty
    /// when no frame was returned.
    pub fn last_frame_and_sidecars(&mut self) -> (&[u8], Vec<Vec<u8>>) {
        let sides = std::mem::take(&mut self.last_sidecars);
        let range = self.last.clone().unwrap_or(0..0);
        (&self.buf[range], sides)
    }

    /// Reads the sidecar of `len` bytes whose header is next in the buffer:
    /// what is buffered is copied, the rest read straight into its own
    /// buffer (a pooled one when it is large, so its pages are faulted in
    /// already).
    fn read_sidecar(&mut self, len: usize, src: &dyn ByteStream) -> Result<(), TransportError> {
        if self.sidecars.len() >= MAX_SIDECARS || len > self.max - self.side_bytes {
            return Err(TransportError::FrameTooLarge {
                size: (self.side_bytes as u64).saturating_add(len as u64),
                limit: self.max as u64,
            });
        }
        self.start += FRAME_HEADER;
        let mut side = if len >= spare::LARGE {
            spare::take(len).unwrap_or_default()
        } else {
            Vec::new()
        };
        let have = (self.end - self.start).min(len);
        // Grown with what arrives (at most doubling what is held), so a
        // peer that announces a large sidecar and stops costs nothing. A
        // pooled buffer's old contents are initialized bytes: only what it
        // never held is zeroed.
        side.truncate(len);
        let held = side.len();
        side.resize(held.max(have), 0);
        side[..have].copy_from_slice(&self.buf[self.start..self.start + have]);
        self.start += have;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let mut filled = have;
        while filled < len {
            if filled == side.len() {
                let more = filled.max(MIN_READ).min(len - filled);
                if side.capacity() - side.len() < more {
                    side.reserve_exact(more);
                    if more >= PREFAULT_MIN {
                        // Faulted in at once rather than page by page as
                        // it is zeroed and read into.
                        crate::sys::prefault(&mut side);
                    }
                }
                side.resize(filled + more, 0);
            }
            match src.read(&mut side[filled..]) {
                Ok(0) => return Err(TransportError::Disconnected),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TransportError::Io(e)),
            }
        }
        side.truncate(len);
        self.side_bytes += len;
        self.sidecars.push(side);
        Ok(())
    }

    /// Returns the next frame's payload, reading from `src` as needed.
    ///
    /// # Errors
    /// [`TransportError::Disconnected`] at end of stream (also in the middle
    /// of a frame: a torn frame is never returned), `FrameTooLarge` when the
    /// announced length exceeds the limit, `Io` otherwise.
    pub fn next_frame(&mut self, src: &dyn ByteStream) -> Result<&[u8], TransportError> {
        self.last = None;
        self.drop_last_sidecars();
        loop {
            if let Some((len, side)) = self.pending_header() {
                if side {
                    self.read_sidecar(len, src)?;
                    continue;
                }
                if len > self.max - self.side_bytes {
                    return Err(TransportError::FrameTooLarge {
                        size: (len as u64).saturating_add(self.side_bytes as u64),
                        limit: self.max as u64,
                    });
                }
                let need = FRAME_HEADER + len;
                if self.end - self.start >= need {
                    self.last_sidecars = std::mem::take(&mut self.sidecars);
                    self.side_bytes = 0;
                    let frame = self.start + FRAME_HEADER..self.start + need;
                    if need > spare::LARGE {
                        self.last_large = Some(Instant::now());
                        self.small_since = false;
                    } else {
                        self.small_since = true;
                    }
                    self.start += need;
                    if self.start == self.end {
                        self.start = 0;
                        self.end = 0;
                    }
                    self.last = Some(frame.clone());
                    return Ok(&self.buf[frame]);
                }
                self.make_room(need);
            } else {
                self.make_room(FRAME_HEADER);
            }
            let n = match src.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(TransportError::Disconnected),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TransportError::Io(e)),
            };
            self.end += n;
        }
    }

    /// Returns the next frame if one is buffered or arrives without blocking.
    ///
    /// # Errors
    /// As [`next_frame`](Self::next_frame).
    pub fn try_next_frame(
        &mut self,
        src: &dyn ByteStream,
    ) -> Result<Option<&[u8]>, TransportError> {
        self.last = None;
        self.drop_last_sidecars();
        if !self.has_frame() {
            let need = self
                .pending_len()
                .map_or(FRAME_HEADER, |l| FRAME_HEADER + l.min(self.max));
            if let Some(len) = self.pending_len() {
                if len > self.max {
                    return self.next_frame(src).map(Some);
                }
            }
            self.make_room(need);
            loop {
                match src.try_read(&mut self.buf[self.end..]) {
                    Ok(None) => return Ok(None),
                    Ok(Some(0)) => return Err(TransportError::Disconnected),
                    Ok(Some(n)) => {
                        self.end += n;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(TransportError::Io(e)),
                }
            }
            if !self.has_frame() {
                return match self.pending_len() {
                    Some(len) if len > self.max => self.next_frame(src).map(Some),
                    _ => Ok(None),
                };
            }
        }
        self.next_frame(src).map(Some)
    }

    /// Drops the sidecars of the frame returned before, if nobody took
    /// them (a large one goes back to the pool).
    fn drop_last_sidecars(&mut self) {
        for side in self.last_sidecars.drain(..) {
            spare::give(side);
        }
    }

    /// Hands over the buffer that holds the frame last returned (by
    /// [`next_frame`](Self::next_frame) or
    /// [`try_next_frame`](Self::try_next_frame), with no call since), so
    /// that a large payload is kept without copying it: returns the buffer,
    /// cut at the frame's end, and where the payload starts in it. The
    /// reader goes on in a buffer from [`spare`](crate::spare) (or a new
    /// one), with whatever followed the frame moved into it.
    ///
    /// `None` when the frame is smaller than [`spare::LARGE`] (copying it is
    /// cheaper) or there is no frame to take.
    pub fn take_last_frame(&mut self) -> Option<(Vec<u8>, usize)> {
        let last = self.last.take()?;
        if last.len() < spare::LARGE {
            return None;
        }
        let rest = self.end - self.start;
        let mut next = spare::take(MIN_READ.max(rest)).unwrap_or_default();
        if next.len() < MIN_READ.max(rest) {
            next.resize(MIN_READ.max(rest), 0);
        }
        next[..rest].copy_from_slice(&self.buf[self.start..self.end]);
        let mut buf = std::mem::replace(&mut self.buf, next);
        self.start = 0;
        self.end = rest;
        buf.truncate(last.end);
        Some((buf, last.start))
    }

    /// Ensures the buffer can hold `need` bytes from `start`, growing only
    /// with the data that actually arrived (at most doubling what is held).
    fn make_room(&mut self, need: usize) {
        if self.start > 0 && (self.buf.len() - self.start < need || self.end == self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let held = self.end.max(MIN_READ);
            let target = need.min(held.saturating_mul(2)).max(self.end + MIN_READ);
            self.grow(target);
        } else if self.buf.len() < need.min(self.end + MIN_READ) {
            self.grow(need.min(self.end + MIN_READ).max(MIN_READ));
        }
        if self.buf.len() > spare::LARGE
            && self.end == 0
            && need <= MIN_READ
            && self.small_since
            && self.last_large.is_none_or(|t| t.elapsed() >= spare::STALE)
        {
            // No large frame for a while: give the memory back.
            spare::give(std::mem::replace(&mut self.buf, vec![0; MIN_READ]));
            self.last_large = None;
        }
    }

    /// Resizes the buffer to `len` bytes (keeping `[0, end)`): into a
    /// pooled buffer when it becomes large and one is there, else by the
    /// vector's own amortised growth.
    fn grow(&mut self, len: usize) {
        if len > self.buf.capacity() {
            if len > spare::LARGE {
                if let Some(mut bigger) = spare::take(len) {
                    // Left-over bytes need no zeroing: only `[0, end)` is
                    // read.
                    if bigger.len() < len {
                        bigger.resize(len, 0);
                    }
                    bigger[..self.end].copy_from_slice(&self.buf[..self.end]);
                    self.buf = bigger;
                    return;
                }
            }
            let more = len - self.buf.len();
            spare::reserve(&mut self.buf, more);
        }
        self.buf.resize(len, 0);
    }
}
