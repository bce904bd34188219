//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`,
//! off by default). Not API: they exist so a target outside this crate can
//! reach the private decoders, and may change with them.
//!
//! Each decoder is the one the receiving side runs (`protocol::decode`,
//! `manager::read_frame`, the `batch` functions, `auth::server` and
//! `auth::client`); nothing here re-implements one. A message that decodes
//! is also re-encoded and decoded again, which must succeed and give the
//! same bytes: what a peer can make us accept, we can send on.

use std::io::{Read, Write};

use serde::Serialize;

use crate::address::{NodeId, WorkerId, WorkerKind};
use crate::error::{ExitInfo, TaskError};
use crate::protocol::actor::{ActorHello, Ended, FromActor, StartActor, ToActor};
use crate::protocol::auth::{self, AuthError};
use crate::protocol::cluster::{NodeHello, ToDriver, ToNode, Welcome};
use crate::protocol::manager::{self, ManagerReady, ObjKind, ReadError, Reply, Request};
use crate::protocol::{
    batch, Bytes, StartProcess, ToParent, ToWorker, TransportWire, MAGIC, PROTOCOL_VERSION,
};

/// The largest handshake frame (`auth::PREAUTH_MAX`).
pub const PREAUTH_MAX: usize = auth::PREAUTH_MAX;

/// Every message of the protocol, by the side that receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// Worker ← parent.
    ToWorker,
    /// `Process` child ← parent.
    StartProcess,
    /// Parent ← worker (and supervisor ← actor, Manager parent ← server).
    ToParent,
    /// Actor ← caller.
    ToActor,
    /// Caller ← actor.
    FromActor,
    /// Caller ← actor, right after the handshake.
    ActorHello,
    /// Actor process ← supervisor.
    StartActor,
    /// Driver ← node, right after the handshake.
    NodeHello,
    /// Node ← driver, answering the hello.
    Welcome,
    /// Node ← driver.
    ToNode,
    /// Driver ← node.
    ToDriver,
    /// Manager server ← proxy.
    Request,
    /// Proxy ← Manager server.
    Reply,
    /// Manager server ← parent.
    StartManager,
    /// Parent ← Manager server.
    ManagerReady,
}

impl Message {
    /// Every message.
    pub const ALL: [Message; 15] = [
        Message::ToWorker,
        Message::StartProcess,
        Message::ToParent,
        Message::ToActor,
        Message::FromActor,
        Message::ActorHello,
        Message::StartActor,
        Message::NodeHello,
        Message::Welcome,
        Message::ToNode,
        Message::ToDriver,
        Message::Request,
        Message::Reply,
        Message::StartManager,
        Message::ManagerReady,
    ];
}

/// What a decoded message hands on to the next decoder of the receiving
/// side; `Other` for everything that ends at the message.
#[derive(Debug)]
pub enum Seen {
    /// Nothing more is decoded from it.
    Other,
    /// An argument batch (`Run`, `StartProcess`, an initializer, an actor
    /// call or constructor), decoded next by [`decode_args`].
    Args(Vec<u8>),
    /// `ToParent::Part`.
    Part {
        /// The request.
        id: u64,
        /// Items in `items`.
        count: u32,
        /// The concatenated items.
        items: Vec<u8>,
    },
    /// A finished request's result batch (`None`: one error for all).
    Done {
        /// The request.
        id: u64,
        /// The encoded batch.
        result: Option<Vec<u8>>,
    },
}

/// Decodes `frame` as `m`, as its receiver does (postcard via
/// `protocol::decode`), and checks that the value re-encodes to at most as
/// many bytes and that those decode to the same encoding again.
///
/// # Errors
/// The decoder's message, when the bytes are not a valid `m`.
///
/// # Panics
/// When a decoded value does not survive the round trip.
pub fn decode(m: Message, frame: &[u8]) -> Result<Seen, String> {
    macro_rules! roundtrip {
        ($ty:ty) => {{
            let v: $ty = crate::protocol::decode(frame).map_err(|e| e.to_string())?;
            let once = postcard::to_stdvec(&v).expect("a decoded message encodes");
            assert!(
                once.len() <= frame.len(),
                "{m:?}: {} bytes re-encode to {}",
                frame.len(),
                once.len()
            );
            let again: $ty = crate::protocol::decode(&once).expect("a re-encoded message decodes");
            assert_eq!(
                postcard::to_stdvec(&again).expect("encodes"),
                once,
                "{m:?}: the round trip changed the message"
            );
            v
        }};
    }
    let done = |id, result: Result<Bytes<'_>, TaskError>| Seen::Done {
        id,
        result: result.map(|b| b.0.to_vec()).map_err(|e| e.to_string()).ok(),
    };
    Ok(match m {
        Message::ToWorker => match roundtrip!(ToWorker<'_>) {
            ToWorker::Run { args, .. } => Seen::Args(args.0.to_vec()),
            ToWorker::Welcome {
                initializer: Some((_, args)),
                ..
            } => Seen::Args(args),
            _ => Seen::Other,
        },
        Message::StartProcess => Seen::Args(roundtrip!(StartProcess).args),
        Message::ToParent => match roundtrip!(ToParent<'_>) {
            ToParent::Done { id, result, .. } => done(id, result),
            ToParent::Part { id, count, items } => Seen::Part {
                id,
                count,
                items: items.0.to_vec(),
            },
            ToParent::Log {
                level,
                target,
                message,
            } => {
                crate::trace::reemit("fuzz", 0, level, target, message);
                Seen::Other
            }
            _ => Seen::Other,
        },
        Message::ToActor => match roundtrip!(ToActor<'_>) {
            ToActor::Call { args, .. } => Seen::Args(args.0.to_vec()),
            ToActor::Stop { .. } => Seen::Other,
        },
        Message::FromActor => match roundtrip!(FromActor<'_>) {
            FromActor::Reply { seq, result } => done(seq, result),
        },
        Message::ActorHello => {
            let h = roundtrip!(ActorHello);
            for e in h.history {
                let _ = e.task_error().to_string();
            }
            Seen::Other
        }
        Message::StartActor => Seen::Args(roundtrip!(StartActor).args),
        Message::NodeHello => {
            roundtrip!(NodeHello);
            Seen::Other
        }
        Message::Welcome => {
            roundtrip!(Welcome);
            Seen::Other
        }
        Message::ToNode => match roundtrip!(ToNode<'_>) {
            ToNode::Run { args, .. } | ToNode::SpawnActor { args, .. } => {
                Seen::Args(args.0.to_vec())
            }
            _ => Seen::Other,
        },
        Message::ToDriver => match roundtrip!(ToDriver<'_>) {
            ToDriver::Done { id, result, .. } => done(id, result),
            ToDriver::ActorEnded { ended, .. } => {
                let _ = ended.task_error().to_string();
                Seen::Other
            }
            _ => Seen::Other,
        },
        Message::Request => {
            roundtrip!(Request);
            Seen::Other
        }
        Message::Reply => {
            roundtrip!(Reply);
            Seen::Other
        }
        Message::StartManager => {
            roundtrip!(manager::StartManager);
            Seen::Other
        }
        Message::ManagerReady => {
            roundtrip!(ManagerReady);
            Seen::Other
        }
    })
}

/// Reads one frame of at most `max` bytes as the handshake-time readers and
/// the Manager do (`manager::read_frame`).
///
/// # Errors
/// Why the frame could not be read.
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Vec<u8>, String> {
    manager::read_frame(r, max).map_err(|e| e.to_string())
}

/// The value type the argument and result decoders are fuzzed with.
pub type Probe = (u32, String, Vec<u8>, Option<i64>, bool);

/// A worker decoding an argument batch (`batch::decode_args`).
///
/// # Errors
/// The task error a caller would get.
pub fn decode_args(input: &[u8]) -> Result<Vec<Probe>, String> {
    batch::decode_args::<Probe>(input, "fuzz").map_err(|e| e.to_string())
}

/// The parent joining earlier parts (`count` items in `items`) with the
/// final batch `last` (`batch::join_parts`).
///
/// # Errors
/// The task error the request fails with.
pub fn join_parts(count: u64, items: Vec<u8>, last: &[u8]) -> Result<Vec<u8>, String> {
    batch::join_parts((count, items, Vec::new()), last.to_vec().into())
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string())
}

/// The parent decoding a finished batch of `n` arguments
/// (`batch::decode_batch`), and `batch::first_failed` on it.
pub fn decode_results(outcome: Option<Vec<u8>>, n: usize) -> (Vec<Result<Probe, String>>, bool) {
    let outcome = outcome.map(Into::into).ok_or(TaskError::Cancelled);
    let failed = batch::first_failed(&outcome);
    let items = batch::decode_batch::<Probe>(outcome, n)
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect();
    (items, failed)
}

/// What a listener is (`auth::Purpose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A Manager's server.
    Manager,
    /// An actor's address.
    Actor,
    /// A cluster's driver.
    Cluster,
}

impl From<Purpose> for auth::Purpose {
    fn from(p: Purpose) -> Self {
        match p {
            Purpose::Manager => auth::Purpose::Manager,
            Purpose::Actor => auth::Purpose::Actor,
            Purpose::Cluster => auth::Purpose::Cluster,
        }
    }
}

/// Why a handshake failed (`auth::AuthError`, flattened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// The peer does not hold the key.
    Refused,
    /// The server did not prove it holds the key.
    ServerUnproven,
    /// The peer does not speak this protocol.
    NotMproc,
    /// The key is empty.
    EmptyKey,
    /// A frame was announced over the limit.
    TooLarge,
    /// A frame was not a valid message.
    Malformed,
    /// Reading or writing failed.
    Io(std::io::ErrorKind),
}

fn flatten(e: AuthError) -> AuthFailure {
    match e {
        AuthError::Refused => AuthFailure::Refused,
        AuthError::ServerUnproven => AuthFailure::ServerUnproven,
        AuthError::NotMproc => AuthFailure::NotMproc,
        AuthError::EmptyKey => AuthFailure::EmptyKey,
        AuthError::Read(ReadError::TooLarge { .. }) => AuthFailure::TooLarge,
        AuthError::Read(ReadError::Malformed(_)) => AuthFailure::Malformed,
        AuthError::Read(ReadError::Io(e)) | AuthError::Write(e) => AuthFailure::Io(e.kind()),
    }
}

/// The server's side of the handshake (`auth::server`).
///
/// # Errors
/// Why the peer was not accepted.
pub fn auth_server(
    s: &mut (impl Read + Write),
    key: &[u8],
    purpose: Purpose,
) -> Result<(), AuthFailure> {
    auth::server(s, key, purpose.into()).map_err(flatten)
}

/// The client's side of the handshake (`auth::client`).
///
/// # Errors
/// Why the server was not accepted.
pub fn auth_client(
    s: &mut (impl Read + Write),
    key: &[u8],
    purpose: Purpose,
) -> Result<(), AuthFailure> {
    auth::client(s, key, purpose.into()).map_err(flatten)
}

/// Real encodings of `m`, one per variant, for a seed corpus.
pub fn samples(m: Message) -> Vec<Vec<u8>> {
    fn enc<T: Serialize>(v: &[T]) -> Vec<Vec<u8>> {
        v.iter()
            .map(|m| postcard::to_stdvec(m).expect("a sample encodes"))
            .collect()
    }
    let mut args = Vec::new();
    batch::push_varint(&mut args, 1);
    args.extend(postcard::to_stdvec(&(7u32, "x", vec![1u8, 2], Some(-3i64), true)).unwrap());
    let mut items = batch::Items::with_capacity(2);
    items.push(Ok::<Probe, TaskError>((
        1,
        "ok".into(),
        vec![9],
        None,
        false,
    )));
    items.push(Err::<Probe, _>(TaskError::Panicked {
        message: "boom".into(),
    }));
    let at = items.finish_at(usize::MAX, |_, _, _| ());
    let results = items.bytes_from(at).to_vec();
    let worker = WorkerId::fresh(WorkerKind::Actor);
    let exited = Ended::Exited(ExitInfo {
        code: None,
        signal: Some(9),
    });
    let history = vec![exited, Ended::Lost(NodeId::new(2))];
    let died = TaskError::WorkerDied {
        exit: ExitInfo {
            code: Some(1),
            signal: None,
        },
    };
    match m {
        Message::ToWorker => enc(&[
            ToWorker::Welcome {
                name: "w".into(),
                worker_id: 1,
                parent_pid: 2,
                max_frame: 1 << 20,
                log_level: 3,
                initializer: Some(("init".into(), args.clone())),
                transport: TransportWire::ShmRing,
                out_of_band: true,
            },
            ToWorker::Reject { reason: "r".into() },
            ToWorker::Run {
                id: 1,
                seq: 2,
                task: "t",
                oob: false,
                gather: true,
                args: Bytes(&args),
            },
            ToWorker::Cancel { id: 1 },
            ToWorker::Shutdown,
        ]),
        Message::StartProcess => enc(&[StartProcess {
            version: PROTOCOL_VERSION,
            fingerprint: 5,
            name: "Process-1".into(),
            ident: "1".into(),
            parent_name: "MainProcess".into(),
            parent_pid: 3,
            task: "t".into(),
            args: args.clone(),
        }]),
        Message::ToParent => enc(&[
            ToParent::Hello {
                magic: MAGIC,
                version: PROTOCOL_VERSION,
                fingerprint: 5,
                pid: 4,
            },
            ToParent::Ready { init_error: None },
            ToParent::Done {
                id: 1,
                exec_ns: 10,
                oob: false,
                result: Ok(Bytes(&results)),
            },
            ToParent::Done {
                id: 2,
                exec_ns: 10,
                oob: true,
                result: Err(died.clone()),
            },
            ToParent::Part {
                id: 1,
                count: 2,
                items: Bytes(&results[1..]),
            },
            ToParent::Cancelled { id: 1 },
            ToParent::LastWords {
                id: 1,
                message: "m",
            },
            ToParent::Stopping,
            ToParent::Log {
                level: 2,
                target: "t",
                message: "m",
            },
        ]),
        Message::ToActor => enc(&[
            ToActor::Call {
                seq: 1,
                method: 0,
                args: Bytes(&args),
            },
            ToActor::Stop { seq: 2 },
        ]),
        Message::FromActor => enc(&[
            FromActor::Reply {
                seq: 1,
                result: Ok(Bytes(&results)),
            },
            FromActor::Reply {
                seq: 2,
                result: Err(TaskError::NodeLost {
                    node: NodeId::new(1),
                }),
            },
        ]),
        Message::ActorHello => enc(&[ActorHello {
            generation: 2,
            history: history.clone(),
            live: true,
        }]),
        Message::StartActor => enc(&[StartActor {
            version: PROTOCOL_VERSION,
            fingerprint: 5,
            type_name: "A".into(),
            args: args.clone(),
            id: worker.clone(),
            name: "actor-1".into(),
            parent_pid: 1,
            history: history.clone(),
            key: b"k".to_vec(),
            log_level: 0,
            max_frame: 1 << 20,
        }]),
        Message::NodeHello => enc(&[NodeHello {
            version: PROTOCOL_VERSION,
            fingerprint: 5,
            hostname: "h".into(),
            workers: 2,
            pid: 9,
        }]),
        Message::Welcome => enc(&[
            Welcome::Joined { id: NodeId::new(1) },
            Welcome::Refused { reason: "r".into() },
        ]),
        Message::ToNode => enc(&[
            ToNode::Run {
                id: 1,
                task: "t",
                args: Bytes(&args),
            },
            ToNode::Stop { id: 1 },
            ToNode::Recall { id: 1 },
            ToNode::SpawnActor {
                req: 1,
                id: worker.clone(),
                type_name: "A",
                args: Bytes(&args),
                key: Bytes(b"k"),
                history: history.clone(),
            },
            ToNode::StopActor { id: worker.clone() },
            ToNode::Ping,
            ToNode::Close,
        ]),
        Message::ToDriver => enc(&[
            ToDriver::Done {
                id: 1,
                exec_ns: 1,
                result: Ok(Bytes(&results)),
            },
            ToDriver::Done {
                id: 1,
                exec_ns: 1,
                result: Err(died),
            },
            ToDriver::Recalled { id: 1, taken: true },
            ToDriver::ActorStarted {
                req: 1,
                result: Ok(([127, 0, 0, 1], 80).into()),
            },
            ToDriver::ActorStarted {
                req: 2,
                result: Err("e".into()),
            },
            ToDriver::ActorEnded {
                id: worker,
                ended: exited,
                stopped: false,
            },
            ToDriver::Ping,
        ]),
        Message::Request => enc(&[
            Request::Create {
                kind: ObjKind::Dict,
                name: Some("n".into()),
                type_tag: "T".into(),
                init: Some(vec![1]),
            },
            Request::DictInsert {
                id: 1,
                key: vec![1],
                value: vec![2],
            },
            Request::ListSet {
                id: 1,
                index: 3,
                item: vec![4],
            },
            Request::QueueGet {
                id: 1,
                timeout_ms: Some(5),
            },
            Request::Attach { id: 1 },
        ]),
        Message::Reply => enc(&[
            Reply::Done,
            Reply::Created { id: 1 },
            Reply::Maybe(Some(vec![1])),
            Reply::Bool(true),
            Reply::Len(3),
            Reply::Items(vec![vec![1], vec![]]),
            Reply::Pairs(vec![(vec![1], vec![2])]),
            Reply::Failed("f".into()),
        ]),
        Message::StartManager => enc(&[manager::StartManager {
            version: PROTOCOL_VERSION,
            fingerprint: 5,
            name: "m".into(),
            authkey: b"k".to_vec(),
            tcp: Some("127.0.0.1:0".into()),
            tls: None,
        }]),
        Message::ManagerReady => enc(&[
            ManagerReady::Listening {
                unix: "u".into(),
                tcp: Some(([127, 0, 0, 1], 1).into()),
            },
            ManagerReady::Failed { reason: "r".into() },
        ]),
    }
}
