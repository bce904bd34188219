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
//! [`ToWorker::Shutdown`]; the worker answers each `Run` with one
//! [`ToParent::Done`] or [`ToParent::Cancelled`]. Before it starts `Run` number
//! `seq`, the worker stores `seq + 1` in the shared progress counter, so after
//! a crash the parent knows exactly which tasks may have started (they fail)
//! and which never did (they are sent elsewhere).

use serde::{Deserialize, Serialize};

use crate::error::TaskError;

/// Bumped whenever a message changes shape.
pub(crate) const PROTOCOL_VERSION: u32 = 3;
/// First bytes of every hello.
pub(crate) const MAGIC: [u8; 4] = *b"MPRC";

/// The first byte the parent sends after the hello of a worker that is to
/// serve requests; the progress-counter memfd rides on it.
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
    },
    Reject {
        reason: String,
    },
    Run {
        id: u64,
        seq: u64,
        #[serde(borrow)]
        task: &'a str,
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
        #[serde(borrow)]
        result: Result<Bytes<'a>, TaskError>,
    },
    Cancelled {
        id: u64,
    },
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

/// Appends an unsigned LEB128 varint, as postcard encodes lengths.
pub(crate) fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Lets postcard append to a borrowed `Vec` (so a failed encode can be
/// rolled back instead of losing the buffer).
pub(crate) struct ExtendVec<'a>(pub(crate) &'a mut Vec<u8>);

impl Extend<u8> for ExtendVec<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Encodes `msg` as one frame at the end of `out`.
pub(crate) fn encode_frame<M: Serialize>(
    out: &mut Vec<u8>,
    msg: &M,
    max: usize,
) -> Result<(), FrameError> {
    let start = mproc_transport::begin_frame(out);
    if let Err(e) = postcard::to_extend(msg, ExtendVec(out)) {
        out.truncate(start);
        return Err(FrameError::Encode(e.to_string()));
    }
    mproc_transport::end_frame(out, start, max).map_err(|e| FrameError::TooLarge(e.to_string()))
}

/// Why a frame could not be built.
#[derive(Debug)]
pub(crate) enum FrameError {
    Encode(String),
    TooLarge(String),
}

impl FrameError {
    pub(crate) fn message(self) -> String {
        match self {
            FrameError::Encode(m) | FrameError::TooLarge(m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_matches_postcard() {
        for v in [0u64, 1, 127, 128, 300, 16_384, u32::MAX as u64, u64::MAX] {
            let mut ours = Vec::new();
            push_varint(&mut ours, v);
            assert_eq!(ours, postcard::to_stdvec(&v).unwrap(), "{v}");
        }
    }

    #[test]
    fn hand_built_vec_decodes_as_vec() {
        let mut buf = Vec::new();
        push_varint(&mut buf, 2);
        postcard::to_extend(&Ok::<u32, TaskError>(5), ExtendVec(&mut buf)).unwrap();
        postcard::to_extend(&Err::<u32, _>(TaskError::Cancelled), ExtendVec(&mut buf)).unwrap();
        let v: Vec<Result<u32, TaskError>> = postcard::from_bytes(&buf).unwrap();
        assert_eq!(v, vec![Ok(5), Err(TaskError::Cancelled)]);
    }
}
