//! Framing and the byte-stream transports that carry mproc's messages.
//!
//! The layers, bottom up:
//!
//! * [`ByteStream`]: a duplex, reliable, ordered byte stream between two
//!   processes. Every transport implements it: [`UnixChannel`] (a
//!   Unix-domain socket pair, or a connection to a [`UnixListener`] on a
//!   private path), [`PipeChannel`] (two pipes) and [`ShmChannel`] (two
//!   single-producer/single-consumer rings in shared memory, see
//!   `SHM_RING.md`).
//! * Framing ([`FrameReader`], [`begin_frame`] / [`end_frame`]): a
//!   little-endian `u32` length prefix followed by the payload, with a
//!   maximum frame size checked on both sides. A reader never allocates
//!   more than the bytes that actually arrived (plus amortised growth),
//!   whatever length a peer announces. Large byte strings may go before
//!   their frame as sidecars, read straight into buffers of their own.
//!
//! * [`spare`]: large buffers kept for reuse, so that a large message does
//!   not cost a fresh allocation (and its page faults) at every step.
//!
//! Message encoding (postcard) and the handshake live in `mproc-core`, which
//! uses only the items re-exported here.

mod error;
mod frame;
mod listener;
mod pipe;
mod shm;
pub mod spare;
mod spin;
mod sys;
mod unix;

pub use error::TransportError;
pub use frame::{
    begin_frame, end_frame, sidecar_header, FrameReader, DEFAULT_MAX_FRAME, FRAME_HEADER,
    MAX_FRAME_LIMIT, MAX_SIDECARS, SIDECAR_BIT,
};
pub use listener::UnixListener;
pub use pipe::PipeChannel;
pub use shm::{ShmChannel, DEFAULT_RING_SIZE};
pub use spin::{multi_core, Spin, LINK_SPIN_NS, LONG_TASK_NS};
pub use unix::{socketpair, UnixChannel};

/// The workspace's one memfd + `mmap` owner, for `mproc-core`'s shared
/// objects and progress counter. Hidden: this crate is the lowest layer, so
/// the mapping code lives here once, but it is plumbing, not transport API,
/// and may change without notice.
#[doc(hidden)]
pub mod shm_map {
    pub use crate::sys::Mapping;
}

use std::io;

/// A duplex byte stream between two processes.
///
/// Reads and writes may happen from different threads at the same time; a
/// transport must support one reader and one writer concurrently.
pub trait ByteStream: Send + Sync + std::fmt::Debug + 'static {
    /// Reads at least one byte, blocking until some arrive. `Ok(0)` means the
    /// peer closed its end (or died).
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Reads what has arrived without blocking: `Ok(None)` when nothing has,
    /// `Ok(Some(0))` at end of stream.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// Writes as much of `buf` as fits without blocking; `Ok(0)` when nothing
    /// fits right now.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Blocks until the stream can accept more bytes (or the peer is gone).
    fn wait_writable(&self) -> io::Result<()>;
    /// Writes all of `buf`, blocking as needed.
    fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.try_write(buf)? {
                0 => self.wait_writable()?,
                n => buf = &buf[n..],
            }
        }
        Ok(())
    }
    /// Shuts both directions down: a blocked reader on either side wakes up
    /// with end-of-stream.
    fn shutdown(&self);
    /// True when a [`read`](Self::read) would return at once (bytes or end
    /// of stream): what a reader polls while it spins before blocking (see
    /// [`Spin`]). Cheap for shared memory, one system call for a
    /// descriptor. A transport that cannot tell answers true, so its
    /// reader never spins and just reads.
    fn ready(&self) -> bool {
        true
    }
    /// With `on`, a blocking [`read`](Self::read) sleeps until input
    /// arrives and is woken by nothing else, where the transport's plain
    /// blocking read would also wake each time the peer takes in what this
    /// side wrote (a Unix socket). Each such wake-up takes a CPU for a
    /// moment, which matters while every CPU runs a worker; on a quiet
    /// machine it does no harm (it even keeps an idle CPU from sleeping
    /// deeply just before an answer comes). Off by default; a transport
    /// without that fault ignores it.
    fn wake_on_input_only(&self, on: bool) {
        let _ = on;
    }
}

/// A [`ByteStream`] seen as `std::io::Read + Write`, for code written
/// against those (a handshake run before a connection is handed to a
/// frame reader).
#[derive(Debug)]
pub struct StreamIo<'a>(pub &'a dyn ByteStream);

impl io::Read for StreamIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl io::Write for StreamIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
