//! The error type of a transport.

use std::io;

/// What went wrong on a transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer closed its end or died; no more frames will come.
    #[error("peer disconnected")]
    Disconnected,
    /// A frame larger than the configured limit was announced or offered.
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    FrameTooLarge {
        /// The size of the offending frame.
        size: u64,
        /// The limit in force.
        limit: u64,
    },
    /// An I/O error from the operating system.
    #[error("transport i/o error: {0}")]
    Io(#[from] io::Error),
}
