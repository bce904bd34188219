//! The messages of a Manager server (see `manager/` for the client side and
//! `child/manager.rs` for the server): how the parent starts it, the
//! request/reply pairs of its proxies, and frame reading over a plain
//! `Read` (TCP, TLS and Unix connections alike).
//!
//! Start, on the boot socket: the parent sends the byte [`MODE_MANAGER`]
//! and one [`StartManager`] frame; the server answers with one
//! [`ManagerReady`] frame and then keeps the boot socket open: its end of
//! stream (the parent dropped the `Manager`, or died) stops the server.
//!
//! Every connection to the server first runs the handshake of
//! [`super::auth`]; then the client sends [`Request`]s, one at a time, and
//! reads one [`Reply`] for each. Keys, values and items travel as postcard
//! bytes chosen by the typed proxy; the server never decodes them, it
//! compares keys by their bytes.

use std::io::Read;

use serde::{Deserialize, Serialize};

/// The first byte sent to a child that is to be a Manager server; a
/// [`StartManager`] frame follows.
pub(crate) const MODE_MANAGER: u8 = b'G';

/// Parent → server, on the boot socket.
#[derive(Serialize, Deserialize)]
pub(crate) struct StartManager {
    pub(crate) version: u32,
    pub(crate) fingerprint: u64,
    /// The process name (never with the `mproc-` prefix of helpers).
    pub(crate) name: String,
    /// The key every connection must prove it holds.
    pub(crate) authkey: Vec<u8>,
    /// A TCP address to listen on as well, as the user gave it.
    pub(crate) tcp: Option<String>,
    /// The certificate and key to serve TCP with TLS.
    pub(crate) tls: Option<crate::tls::ServerTls>,
}

impl std::fmt::Debug for StartManager {
    // The key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartManager")
            .field("name", &self.name)
            .field("tcp", &self.tcp)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Server → parent, on the boot socket, once it listens.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ManagerReady {
    /// Listening: the abstract Unix socket name and, when asked for, the
    /// bound TCP address.
    Listening {
        unix: String,
        tcp: Option<std::net::SocketAddr>,
    },
    /// The server could not start (the TCP address could not be bound…).
    Failed { reason: String },
}

/// The kind of a managed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ObjKind {
    Dict,
    List,
    Queue,
    Value,
}

/// A proxy → the server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// A new object; with a name, the object of that name (created when
    /// absent, with `init` as the first value of a `Value`). `type_tag`
    /// names the Rust types, so a named object is not read as another type.
    Create {
        kind: ObjKind,
        name: Option<String>,
        type_tag: String,
        init: Option<Vec<u8>>,
    },
    DictInsert {
        id: u64,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    DictGet {
        id: u64,
        key: Vec<u8>,
    },
    DictRemove {
        id: u64,
        key: Vec<u8>,
    },
    DictContains {
        id: u64,
        key: Vec<u8>,
    },
    DictItems {
        id: u64,
    },
    ListPush {
        id: u64,
        item: Vec<u8>,
    },
    ListGet {
        id: u64,
        index: u64,
    },
    ListSet {
        id: u64,
        index: u64,
        item: Vec<u8>,
    },
    ListPop {
        id: u64,
    },
    ListItems {
        id: u64,
    },
    QueuePut {
        id: u64,
        item: Vec<u8>,
    },
    /// `None` waits for ever; the reply is `Maybe(None)` on a timeout.
    QueueGet {
        id: u64,
        timeout_ms: Option<u64>,
    },
    ValueGet {
        id: u64,
    },
    ValueSet {
        id: u64,
        value: Vec<u8>,
    },
    /// Number of entries, items or queued items.
    Len {
        id: u64,
    },
    Clear {
        id: u64,
    },
    /// Local connections only: the answer is not a [`Reply`] but one byte
    /// carrying (SCM_RIGHTS) the memfd of the dict's or list's table and
    /// the server's liveness page — `1` with both, `0` without.
    Attach {
        id: u64,
    },
}

/// The server → a proxy.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Done,
    Created {
        id: u64,
    },
    Maybe(Option<Vec<u8>>),
    Bool(bool),
    Len(u64),
    Items(Vec<Vec<u8>>),
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    /// The request could not be served (no such object, wrong kind, index
    /// out of range…).
    Failed(String),
}

/// Why a frame could not be read from a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The peer closed the connection or the read failed.
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// The announced length is over the limit.
    #[error("frame of {size} bytes over the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Reads one frame's payload from `r`, refusing one over `max` bytes before
/// reading it. The buffer grows only as bytes arrive, whatever length was
/// announced.
pub(crate) fn read_frame(r: &mut impl Read, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut head = [0u8; mproc_transport::FRAME_HEADER];
    r.read_exact(&mut head)?;
    let len = u32::from_le_bytes(head) as usize;
    if len > max {
        return Err(ReadError::TooLarge {
            size: len as u64,
            limit: max as u64,
        });
    }
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    r.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() != len {
        return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(buf)
}

/// Reads and decodes one message.
pub(crate) fn read_msg<M: serde::de::DeserializeOwned>(
    r: &mut impl Read,
    max: usize,
) -> Result<M, ReadError> {
    let frame = read_frame(r, max)?;
    Ok(postcard::from_bytes(&frame)?)
}

/// Encodes `msg` as one frame.
pub(crate) fn frame<M: Serialize>(msg: &M, max: usize) -> Result<Vec<u8>, super::FrameError> {
    let mut out = Vec::new();
    super::encode_frame(&mut out, msg, max)?;
    Ok(out)
}
