//! The messages of actors: how a supervisor starts an actor process, and
//! what callers and an actor say on a connection.
//!
//! # Start (supervisor ↔ actor process, on the boot socket)
//! The supervisor sends the byte [`MODE_ACTOR`] carrying (SCM_RIGHTS) the
//! actor's listening sockets (an abstract Unix socket, and a TCP socket when
//! the actor must be reachable from other hosts), then one [`StartActor`]
//! frame. The listening
//! socket belongs to the supervisor and outlives every instance: a restarted
//! actor accepts on the same address, and callers that connect while it
//! restarts wait in the backlog. The actor answers on the boot socket with
//! `ToParent::Ready` (`init_error` set when the constructor failed), may
//! then forward `ToParent::Log` lines, and sends `ToParent::Stopping` before
//! it exits because a caller asked it to stop. End of stream on the boot
//! socket tells the actor to exit.
//!
//! # A connection (any process → the actor's address)
//! After the key's handshake (`super::auth`) the server sends one
//! [`ActorHello`]; then the caller sends [`ToActor`] frames and reads one
//! [`FromActor::Reply`] per request, in any order of `seq`. The same
//! conversation is held by the supervisor itself once the actor is gone for
//! good (a *tombstone*: `live == false`), which answers every call with
//! `WorkerDied`.

use serde::{Deserialize, Serialize};

use super::Bytes;
use crate::address::{NodeId, WorkerId};
use crate::error::{ExitInfo, TaskError};

/// How an instance of an actor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Ended {
    /// Its process exited or was killed.
    Exited(ExitInfo),
    /// The node it ran on was lost.
    Lost(NodeId),
}

impl Ended {
    /// What a call that was in flight to it gets.
    pub(crate) fn task_error(self) -> TaskError {
        match self {
            Ended::Exited(exit) => TaskError::WorkerDied { exit },
            Ended::Lost(node) => TaskError::NodeLost { node },
        }
    }
}

/// The first byte sent to a child that is to be an actor; the listening
/// socket rides on it and a [`StartActor`] frame follows.
pub(crate) const MODE_ACTOR: u8 = b'A';

/// Supervisor → actor process, on the boot socket.
#[derive(Serialize, Deserialize)]
pub(crate) struct StartActor {
    pub(crate) version: u32,
    pub(crate) fingerprint: u64,
    /// The registered name of the actor type.
    pub(crate) type_name: String,
    /// The constructor's arguments, postcard-encoded.
    #[serde(with = "serde_bytes")]
    pub(crate) args: Vec<u8>,
    pub(crate) id: WorkerId,
    /// The process name (`actor-3.4711`).
    pub(crate) name: String,
    pub(crate) parent_pid: u32,
    /// How this instance's predecessors ended, oldest first; its own
    /// generation is `history.len()`.
    pub(crate) history: Vec<Ended>,
    /// The key every connection must prove it holds.
    pub(crate) key: Vec<u8>,
    pub(crate) log_level: u8,
    pub(crate) max_frame: u64,
}

impl std::fmt::Debug for StartActor {
    // The key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartActor")
            .field("type_name", &self.type_name)
            .field("id", &self.id)
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

/// Server → caller, once, right after authentication.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ActorHello {
    /// The instance answering: 0 for the first, +1 per restart.
    pub(crate) generation: u32,
    /// How each earlier instance ended (`history[g]` for generation `g`).
    pub(crate) history: Vec<Ended>,
    /// False when the supervisor answers for an actor gone for good.
    pub(crate) live: bool,
}

/// Caller → actor.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToActor<'a> {
    /// Run method number `method` on `args` (the postcard tuple of its
    /// arguments).
    Call {
        seq: u64,
        method: u32,
        #[serde(borrow)]
        args: Bytes<'a>,
    },
    /// Finish the calls received before this one, then exit with status 0
    /// and stay down (no restart). Never answered: the caller learns the
    /// outcome from the next instance's hello, which the supervisor gives
    /// once the process is reaped.
    Stop { seq: u64 },
}

/// Actor → caller.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromActor<'a> {
    /// The encoded result of call `seq`, or why there is none.
    Reply {
        seq: u64,
        #[serde(borrow)]
        result: Result<Bytes<'a>, TaskError>,
    },
}
