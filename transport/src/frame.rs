//! Length-prefixed frames: `[len: u32 LE][payload: len bytes]`.

use std::time::Instant;

use crate::{spare, ByteStream, TransportError};

/// Bytes in a frame header.
pub const FRAME_HEADER: usize = 4;
/// The default largest payload: 1 GiB plus room for a message header.
pub const DEFAULT_MAX_FRAME: usize = (1 << 30) + (1 << 20);
/// The largest limit that can be configured (the header is a `u32`).
pub const MAX_FRAME_LIMIT: usize = u32::MAX as usize;

const MIN_READ: usize = 64 * 1024;

/// Starts a frame at the end of `buf`; returns its start offset for
/// [`end_frame`].
pub fn begin_frame(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER]);
    start
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
        }
    }

    /// The length of the next frame's payload, when its header is buffered.
    fn pending_len(&self) -> Option<usize> {
        let avail = &self.buf[self.start..self.end];
        (avail.len() >= FRAME_HEADER)
            .then(|| u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize)
    }

    /// True when a whole frame is already buffered, so
    /// [`next_frame`](Self::next_frame) will not block.
    pub fn has_frame(&self) -> bool {
        match self.pending_len() {
            Some(len) => len <= self.max && self.end - self.start >= FRAME_HEADER + len,
            None => false,
        }
    }

    /// Returns the next frame's payload, reading from `src` as needed.
    ///
    /// # Errors
    /// [`TransportError::Disconnected`] at end of stream (also in the middle
    /// of a frame: a torn frame is never returned), `FrameTooLarge` when the
    /// announced length exceeds the limit, `Io` otherwise.
    pub fn next_frame(&mut self, src: &dyn ByteStream) -> Result<&[u8], TransportError> {
        self.last = None;
        loop {
            if let Some(len) = self.pending_len() {
                if len > self.max {
                    return Err(TransportError::FrameTooLarge {
                        size: len as u64,
                        limit: self.max as u64,
                    });
                }
                let need = FRAME_HEADER + len;
                if self.end - self.start >= need {
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
