//! The messages between a cluster's driver and its nodes.
//!
//! A node dials the driver over TCP (inside TLS when configured), and both
//! run the key's handshake (`super::auth`, purpose `Cluster`) before
//! anything else is read. Then:
//! 1. node → driver: [`NodeHello`] (version, registry fingerprint,
//!    hostname, workers);
//! 2. driver → node: [`Welcome`] with the node's id, or a refusal (another
//!    build of the program) that the node prints before it exits.
//!
//! After that each side sends [`ToNode`] / [`ToDriver`] frames. Either
//! side sends `Ping` every [`HEARTBEAT`]; a side that hears nothing for
//! [`SILENCE_LIMIT`] treats the other as lost.
//!
//! A node runs the driver's requests on its own workers: `Run` carries the
//! driver's job id, the task's registered name and its encoded argument
//! batch, and is answered by one `Done`. The driver sends a node's slot
//! more than it runs at once, to hide the round trip, and may ask a request
//! back with `Recall` when another worker is idle: the node answers
//! `Recalled { taken: true }` only if the request had not started (and
//! then never runs it), so a recalled task never runs twice.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::actor::Ended;
use super::Bytes;
use crate::address::{NodeId, WorkerId};
use crate::error::TaskError;

/// How often each side says it is alive.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a silent peer is given before it counts as lost.
pub(crate) const SILENCE_LIMIT: Duration = Duration::from_secs(4);

/// Node → driver, right after authentication.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct NodeHello {
    pub(crate) version: u32,
    pub(crate) fingerprint: u64,
    pub(crate) hostname: String,
    pub(crate) workers: u32,
    pub(crate) pid: u32,
}

/// Driver → node, answering the hello.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Welcome {
    /// Joined, as node `id`.
    Joined { id: NodeId },
    /// Refused, for the reason given (printed by the node).
    Refused { reason: String },
}

/// Driver → node.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToNode<'a> {
    /// Run task `task` on `args` (an encoded argument batch).
    Run {
        id: u64,
        #[serde(borrow)]
        task: &'a str,
        #[serde(borrow)]
        args: Bytes<'a>,
    },
    /// Stop request `id`: cancel it if async, kill its worker if sync.
    Stop { id: u64 },
    /// Give request `id` back if it has not started; answered by
    /// `Recalled`.
    Recall { id: u64 },
    /// Start an instance of actor `id` here (no restarts: the driver
    /// decides those), listening on TCP too; answered by `ActorStarted`.
    SpawnActor {
        req: u64,
        id: WorkerId,
        #[serde(borrow)]
        type_name: &'a str,
        #[serde(borrow)]
        args: Bytes<'a>,
        #[serde(borrow)]
        key: Bytes<'a>,
        history: Vec<Ended>,
    },
    /// Stop actor `id`'s instance here.
    StopActor { id: WorkerId },
    /// Alive.
    Ping,
    /// The cluster is closing: stop the workers and exit.
    Close,
}

/// Node → driver.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToDriver<'a> {
    /// Request `id` finished: its encoded results, or one error.
    Done {
        id: u64,
        exec_ns: u64,
        #[serde(borrow)]
        result: Result<Bytes<'a>, TaskError>,
    },
    /// Request `id` was given back (`taken`, it will not run here) or had
    /// started (its `Done` follows).
    Recalled { id: u64, taken: bool },
    /// The instance asked for by `SpawnActor { req, .. }` listens at this
    /// TCP address, or could not start.
    ActorStarted {
        req: u64,
        result: Result<std::net::SocketAddr, String>,
    },
    /// Actor `id`'s instance here ended; `stopped` when a caller stopped it.
    ActorEnded {
        id: WorkerId,
        ended: Ended,
        stopped: bool,
    },
    /// Alive.
    Ping,
}
