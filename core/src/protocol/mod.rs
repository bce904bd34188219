//! The messages between a parent and its workers, encoded with postcard
//! inside length-prefixed frames (see `mproc_transport`).
//!
//! Handshake, in order:
//! 1. worker → parent: [`ToParent::Hello`] (magic, protocol version, registry
//!    fingerprint, pid). A different version or fingerprint means another
//!    build of the program: the parent answers [`ToWorker::Reject`].
//! 2. parent → worker: one byte carrying (SCM_RIGHTS) the progress-counter
//!    memfd and the descriptors of the chosen transport (pipes, or a ring
//!    segment and its eventfds), then [`ToWorker::Welcome`], which names the
//!    transport. Both sides switch to it after this message.
//! 3. worker → parent, on the chosen transport: [`ToParent::Ready`], after
//!    running the initializer.
//!
//! A child started by `Process` boots the same way but is told, at step 2,
//! to run one task and exit: the parent sends the byte [`MODE_PROCESS`]
//! without a descriptor, then one [`StartProcess`] frame, and never reads
//! the hello (the child checks version and fingerprint itself). The parent
//! therefore writes everything right after the process exists, with no round
//! trip, and `start()` returns at once, as in Python.
//!
//! Then the parent sends [`ToWorker::Run`] (a batch of arguments for one task,
//! numbered by a per-worker `seq`), [`ToWorker::Cancel`] and
//! [`ToWorker::Shutdown`]; the worker answers each `Run` it runs with one
//! [`ToParent::Done`] (preceded by [`ToParent::Part`]s when the results do
//! not fit one message) or [`ToParent::Cancelled`]. Whether a request runs at
//! all is decided in the shared claim table (see [`claims`]): the parent can
//! take back a request that has not started, and the worker skips it.
//!
//! A `Run` marked `oob` has its arguments encoded out of band: large byte
//! strings travel as sidecars before the frame (see [`oob`]). A worker
//! whose welcome allows it answers in the same way when its results hold a
//! `Bytes` (`Done` marked `oob`, and the `Part`s before it).
//!
//! A child told [`manager::MODE_MANAGER`] instead becomes a Manager server;
//! its messages are in [`manager`], the handshake of its connections in
//! [`auth`]. One told [`actor::MODE_ACTOR`] becomes an actor; see [`actor`].
//!
//! This module owns every message and their encoding: [`batch`] the
//! arguments and results inside them, [`oob`] the large byte strings sent
//! beside them, [`claims`] the shared table.

pub(crate) mod actor;
pub(crate) mod auth;
pub(crate) mod batch;
pub(crate) mod claims;
pub(crate) mod cluster;
pub(crate) mod manager;
pub(crate) mod oob;

use serde::{Deserialize, Serialize};

use crate::error::TaskError;

/// Bumped whenever a message changes shape.
pub(crate) const PROTOCOL_VERSION: u32 = 7;
/// First bytes of every hello.
pub(crate) const MAGIC: [u8; 4] = *b"MPRC";

/// The first byte the parent sends after the hello of a worker that is to
/// serve requests; the claim table's memfd rides on it.
pub(crate) const MODE_WORKER: u8 = 0x4d;
/// The first byte sent to a child that is to run one task and exit; a
/// [`StartProcess`] frame follows.
pub(crate) const MODE_PROCESS: u8 = b'P';

/// Parent → child started by `Process`: run `task(args)` once, then exit
/// with 0, or 1 if it panicked.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StartProcess {
    pub(crate) version: u32,
    pub(crate) fingerprint: u64,
    /// `"Process-3"`, or the name the user gave.
    pub(crate) name: String,
    /// The `Process-N` path (`"3"`, `"3:1"`) that names the child's own
    /// children.
    pub(crate) ident: String,
    pub(crate) parent_name: String,
    pub(crate) parent_pid: u32,
    pub(crate) task: String,
    /// A postcard `Vec<Args>` of one element.
    #[serde(with = "serde_bytes")]
    pub(crate) args: Vec<u8>,
}

/// Borrowed bytes encoded as one postcard byte string.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Bytes<'a>(#[serde(with = "serde_bytes", borrow)] pub(crate) &'a [u8]);

/// Which transport the descriptors passed with the welcome set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TransportWire {
    /// Stay on the bootstrap socket.
    UnixSocket,
    /// Two pipes: `[worker's read end, worker's write end]`.
    Pipe,
    /// A ring segment: `[memfd, data0, space0, data1, space1]`.
    ShmRing,
}

/// Parent → worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker<'a> {
    Welcome {
        name: String,
        worker_id: u64,
        parent_pid: u32,
        max_frame: u64,
        log_level: u8,
        initializer: Option<(String, Vec<u8>)>,
        /// The channel to switch to after this message (see [`TransportKind`]).
        transport: TransportWire,
        /// Results may be encoded out of band (see [`oob`]): the parent
        /// reads sidecars (a node's does not: it relays answers as they are).
        out_of_band: bool,
    },
    Reject {
        reason: String,
    },
    Run {
        id: u64,
        seq: u64,
        #[serde(borrow)]
        task: &'a str,
        /// `args` is encoded out of band (its sidecars came before this
        /// frame; see [`oob`]): some `Bytes` in it are written tagged.
        oob: bool,
        /// Part of a map whose caller waits for all of it (see
        /// `Core::submit_many`): the worker may hold this request's answer
        /// back while it runs the next gathered one it already has, so a
        /// map of long tasks costs the parent one wake-up per worker, not
        /// one per task.
        gather: bool,
        #[serde(borrow)]
        args: Bytes<'a>,
    },
    Cancel {
        id: u64,
    },
    Shutdown,
}

/// Worker → parent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToParent<'a> {
    Hello {
        magic: [u8; 4],
        version: u32,
        fingerprint: u64,
        pid: u32,
    },
    Ready {
        init_error: Option<String>,
    },
    /// `result` holds a postcard `Vec<Result<Output, TaskError>>`, one per
    /// argument of the batch; an `Err` here fails the whole batch.
    Done {
        id: u64,
        exec_ns: u64,
        /// The batch (with the items of any `Part`s before it) is encoded
        /// out of band: some `Bytes` in it are written tagged, and each
        /// frame's sidecars came before it. Only when the welcome allowed
        /// it, and only for a batch that holds a `Bytes`.
        oob: bool,
        #[serde(borrow)]
        result: Result<Bytes<'a>, TaskError>,
    },
    /// Results of a batch too large for one message, sent before its
    /// `Done`: `count` encoded items, concatenated (with their sidecars
    /// before this frame when the batch is out of band).
    Part {
        id: u64,
        count: u32,
        #[serde(borrow)]
        items: Bytes<'a>,
    },
    Cancelled {
        id: u64,
    },
    /// Sent just before the worker aborts (a panic while panicking, or a
    /// panic in a `panic = "abort"` build): what the running task said.
    LastWords {
        id: u64,
        #[serde(borrow)]
        message: &'a str,
    },
    /// An actor is exiting because a caller asked it to stop (see
    /// [`actor`]).
    Stopping,
    Log {
        level: u8,
        #[serde(borrow)]
        target: &'a str,
        #[serde(borrow)]
        message: &'a str,
    },
}

/// `tracing` levels on the wire (0 = off).
pub(crate) fn level_to_u8(l: tracing::level_filters::LevelFilter) -> u8 {
    use tracing::level_filters::LevelFilter as F;
    match l {
        F::OFF => 0,
        F::ERROR => 1,
        F::WARN => 2,
        F::INFO => 3,
        F::DEBUG => 4,
        _ => 5,
    }
}

/// Encodes `msg` as one frame at the end of `out`.
pub(crate) fn encode_frame<M: Serialize>(
    out: &mut Vec<u8>,
    msg: &M,
    max: usize,
) -> Result<(), FrameError> {
    let start = mproc_transport::begin_frame(out);
    if let Err(e) = batch::encode_into(msg, out) {
        out.truncate(start);
        return Err(FrameError::Encode(e));
    }
    mproc_transport::end_frame(out, start, max).map_err(FrameError::TooLarge)
}

/// The frame header and the start of a [`ToParent::Done`] of `Ok(result)`
/// whose `result` is `len` bytes: what goes right before those bytes so
/// that they are sent as one frame from where they are (see
/// `batch::Items::into_frame`). Checks the frame against `max`.
pub(crate) fn done_head(
    id: u64,
    exec_ns: u64,
    oob: bool,
    len: usize,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut head = Vec::with_capacity(40);
    let start = mproc_transport::begin_frame(&mut head);
    let msg = ToParent::Done {
        id,
        exec_ns,
        oob,
        result: Ok(Bytes(&[])),
    };
    batch::encode_into(&msg, &mut head).map_err(FrameError::Encode)?;
    // The message ends with the byte string's length, 0 here: replace it.
    debug_assert_eq!(head.last(), Some(&0));
    head.pop();
    batch::push_varint(&mut head, len as u64);
    let total = head.len() - start - mproc_transport::FRAME_HEADER + len;
    if total > max.min(mproc_transport::MAX_FRAME_LIMIT) {
        return Err(FrameError::TooLarge(
            mproc_transport::TransportError::FrameTooLarge {
                size: total as u64,
                limit: max as u64,
            },
        ));
    }
    head[start..start + mproc_transport::FRAME_HEADER]
        .copy_from_slice(&(total as u32).to_le_bytes());
    Ok(head)
}

/// Decodes one message from a frame.
pub(crate) fn decode<'a, M: Deserialize<'a>>(frame: &'a [u8]) -> Result<M, postcard::Error> {
    postcard::from_bytes(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_done_framed_in_place_is_the_same_frame() {
        for len in [0usize, 1, 127, 128, 70_000] {
            let result = vec![7u8; len];
            let mut whole = Vec::new();
            let msg = ToParent::Done {
                id: 300,
                exec_ns: u64::MAX,
                oob: len % 2 == 0,
                result: Ok(Bytes(&result)),
            };
            encode_frame(&mut whole, &msg, 1 << 20).unwrap();
            let mut split = done_head(300, u64::MAX, len % 2 == 0, len, 1 << 20).unwrap();
            split.extend_from_slice(&result);
            assert_eq!(split, whole, "{len}");
        }
        assert!(matches!(
            done_head(1, 1, false, 2000, 1000),
            Err(FrameError::TooLarge(_))
        ));
    }
}

/// Why a frame could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The message could not be encoded.
    #[error("cannot encode the message: {0}")]
    Encode(postcard::Error),
    /// The encoded message exceeds the frame limit.
    #[error(transparent)]
    TooLarge(mproc_transport::TransportError),
    /// Arguments encoded out of band (see [`oob`]) were to go over a link
    /// that cannot carry their sidecars.
    #[error("arguments encoded out of band cannot go over this link")]
    OutOfBand,
}

impl FrameError {
    /// The message for a task error.
    pub(crate) fn into_task_error(self) -> TaskError {
        TaskError::Serialization {
            message: self.to_string(),
        }
    }
}
