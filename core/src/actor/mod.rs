//! Actors: stateful objects that live in a process of their own and are
//! called through typed references from anywhere — [`Actor`],
//! [`ActorRef`], [`ActorOptions`], [`ActorCall`].
//!
//! `#[mproc::actor]` on a type and its `impl` block registers the type and
//! generates its client (`<Type>Client`), `Type::spawn` and
//! `Type::spawn_with`. The pieces here:
//! * `supervisor.rs`: in the process that spawned the actor, one thread
//!   that starts its process, restarts it under
//!   [`ActorOptions::max_restarts`], and answers for it once it is gone;
//! * `client.rs`: the caller's side, in any process: one pipelined
//!   connection per actor and process, and the future of one call;
//! * the actor process itself runs `child/actor.rs`.
//!
//! # How references travel
//! An actor listens on its own address, an abstract Unix socket that the
//! supervisor owns for the actor's whole life (restarts included), and
//! every connection must prove it holds the actor's key (HMAC
//! challenge–response, as for a Manager) before anything else is read. An
//! [`ActorRef`] serializes as the actor's id, type, address and key, so a
//! task, a `Process` target or another actor that receives one dials the
//! actor directly: calls take one hop, not two through the parent, and the
//! parent is not a bottleneck for actors called from many workers. The
//! price is that the key travels inside the reference: pass references only
//! to code you would trust with the actor.

mod client;
mod graveyard;
mod home;
pub(crate) mod supervisor;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::net::TcpListener;
use std::ops::Deref;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use self::client::ActorAddr;
pub use self::client::{ActorCall, RawActorRef};
use self::home::{Home, HomeSpec};
use self::supervisor::{Spec, Supervisor};
use crate::address::{current_node, NodeId, WorkerId, WorkerKind};
use crate::error::{Error, ErrorKind};
use crate::executor::{Attachment, Executor};
use crate::registry::actors::ActorType;

/// A type whose instances live in processes of their own: implemented by
/// `#[mproc::actor]` on the type's `impl` block.
///
/// ```no_run
/// use mproc::prelude::*;
///
/// #[mproc::actor]
/// struct Counter { n: u64 }
///
/// #[mproc::actor]
/// impl Counter {
///     fn new(start: u64) -> Self { Counter { n: start } }
///     fn incr(&mut self, by: u64) -> u64 { self.n += by; self.n }
/// }
///
/// # async fn demo() -> Result<(), mproc::Error> {
/// let executor = Executor::new(2).await?;
/// let c: ActorRef<Counter> = Counter::spawn(&executor, 5).await?;
/// assert_eq!(c.incr(2).await?, 7);
/// c.stop().await?;
/// # Ok(()) }
/// ```
pub trait Actor: ActorType {
    /// The generated client, which [`ActorRef<Self>`] derefs to: one
    /// `fn m(&self, args…) -> ActorCall<T>` per actor method.
    type Client: ActorClient;
}

/// What a generated client is made of. Implemented by `#[mproc::actor]`.
#[doc(hidden)]
pub trait ActorClient: Clone + Send + Sync + fmt::Debug + 'static {
    /// Wraps an untyped reference.
    fn from_raw(raw: RawActorRef) -> Self;
    /// The untyped reference inside.
    fn raw(&self) -> &RawActorRef;
}

/// A typed reference to an actor: derefs to the generated client, whose
/// methods call the actor.
///
/// Cheap to clone; `Send + Sync`; serializable, so it can be passed to
/// tasks, `Process` targets and other actors, which can call the actor
/// too. Dropping references does not stop the actor: [`stop`](Self::stop)
/// does, and so does stopping the executor that spawned it.
pub struct ActorRef<A: Actor> {
    client: A::Client,
    _type: PhantomData<fn() -> A>,
}

impl<A: Actor> ActorRef<A> {
    /// The actor's address: unique in the cluster, kept across restarts.
    pub fn id(&self) -> &WorkerId {
        self.client.raw().id()
    }

    /// How many times the actor has been restarted after its process died
    /// (see [`ActorOptions::max_restarts`]). Exact in the process that
    /// spawned it; elsewhere, as of this process's last connection to it.
    pub fn restarts(&self) -> u32 {
        self.client.raw().restarts()
    }

    /// Lets the actor finish the calls made before this one, then ends its
    /// process for good (no restart). Later calls fail with
    /// [`TaskError::WorkerDied`](crate::TaskError::WorkerDied) (exit code
    /// 0). Stopping an actor that is already gone succeeds.
    ///
    /// # Errors
    /// Of kind [`ErrorKind::Task`] carrying [`TaskError::Shutdown`](crate::TaskError::Shutdown)
    /// when the actor's executor is gone.
    pub async fn stop(&self) -> Result<(), Error> {
        self.client.raw().stop().await.map_err(Error::from)
    }
}

impl<A: Actor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        ActorRef {
            client: self.client.clone(),
            _type: PhantomData,
        }
    }
}

impl<A: Actor> fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorRef")
            .field("type", &self.client.raw().type_name())
            .field("id", self.id())
            .finish()
    }
}

impl<A: Actor> Deref for ActorRef<A> {
    type Target = A::Client;
    fn deref(&self) -> &A::Client {
        &self.client
    }
}

impl<A: Actor> Serialize for ActorRef<A> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.client.raw().serialize(s)
    }
}

impl<'de, A: Actor> Deserialize<'de> for ActorRef<A> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawActorRef::deserialize(d)?;
        if raw.type_name() != A::NAME {
            return Err(serde::de::Error::custom(format!(
                "a reference to a `{}` actor where a `{}` was expected",
                raw.type_name(),
                A::NAME
            )));
        }
        Ok(ActorRef {
            client: A::Client::from_raw(raw),
            _type: PhantomData,
        })
    }
}

/// How to run an actor: restarts, placement.
#[derive(Debug, Clone, Default)]
pub struct ActorOptions {
    max_restarts: u32,
    node: Option<NodeId>,
}

impl ActorOptions {
    /// Starts the actor again, up to `n` times, when its process dies: the
    /// constructor runs again with the same arguments. Calls in flight to
    /// the dead instance fail with `WorkerDied`; calls made meanwhile reach
    /// the new one. Default 0: a dead actor stays dead.
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = n;
        self
    }

    /// Runs the actor on node `node` (default: wherever there is room).
    pub fn node(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }
}

impl Attachment for Supervisor {
    fn shutdown(&self) {
        Supervisor::shutdown(self);
    }
}

/// Runs `f` on a thread of its own and awaits its result, so that the
/// blocking start of a process never stalls an async runtime.
async fn off_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, Error> {
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::Builder::new()
        .name("mproc-actor-start".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| Error::with_source(ErrorKind::Spawn, "cannot start a thread", e))?;
    rx.await
        .map_err(|_| Error::new(ErrorKind::Spawn, "the actor's start was abandoned"))
}

/// A fresh abstract Unix address for an actor, and its name.
pub(crate) fn bind_local() -> Result<(UnixListener, String), Error> {
    let local = format!(
        "mproc-actor-{}-{:016x}",
        std::process::id(),
        crate::sys::shm::random_u64()
    );
    let listener = UnixAddr::from_abstract_name(local.as_bytes())
        .and_then(|a| UnixListener::bind_addr(&a))
        .map_err(|e| Error::with_source(ErrorKind::Spawn, "cannot open the actor's address", e))?;
    Ok((listener, local))
}

/// Starts an actor of type `A` in a process of its own, supervised by
/// `executor`: what the generated `Type::spawn`/`Type::spawn_with` call.
#[doc(hidden)]
pub fn spawn_actor<A: Actor>(
    executor: &Executor,
    args: A::Args,
    opts: ActorOptions,
) -> impl Future<Output = Result<ActorRef<A>, Error>> + Send + 'static {
    let executor = executor.clone();
    let encoded = postcard::to_allocvec(&args);
    async move {
        let args = encoded.map_err(|e| {
            Error::with_source(ErrorKind::Task, "cannot encode the actor's arguments", e)
        })?;
        let cluster = executor.cluster().map(|c| c.shared().clone());
        let target = place(cluster.as_deref(), opts.node)?;
        let key: Vec<u8> = (0..4)
            .flat_map(|_| crate::sys::shm::random_u64().to_le_bytes())
            .collect();
        let (listener, local) = bind_local()?;
        let id = WorkerId::fresh(WorkerKind::Actor).on_node(target);
        let host = crate::address::host_tag();
        let (tcp, restarts) = match (&cluster, target) {
            (Some(c), node) if node != NodeId::DRIVER => {
                let node = c.node(node).ok_or_else(|| no_node(node))?;
                let spec = HomeSpec {
                    id: id.clone(),
                    type_name: A::NAME,
                    args,
                    key: key.clone(),
                    max_restarts: opts.max_restarts,
                };
                let c = c.clone();
                let (home, tcp) =
                    off_thread(move || Home::start(spec, c, node, listener)).await??;
                executor.attach(home.clone());
                (Some(tcp), home.restarts.clone())
            }
            _ => {
                // In a cluster, callers on other hosts reach it over TCP.
                let tcp = match &cluster {
                    Some(c) => Some(TcpListener::bind((c.addr().ip(), 0)).map_err(Error::from)?),
                    None => None,
                };
                let tcp_addr = match &tcp {
                    Some(l) => Some(l.local_addr().map_err(Error::from)?),
                    None => None,
                };
                let spec = Spec {
                    type_name: A::NAME,
                    id: id.clone(),
                    args,
                    key: key.clone(),
                    method: executor.start_method(),
                    max_frame: executor.max_frame(),
                    max_restarts: opts.max_restarts,
                    tcp,
                    on_end: None,
                };
                let sup = off_thread(move || Supervisor::start(spec, listener)).await??;
                executor.attach(sup.clone());
                if let Some(c) = &cluster {
                    c.count_actor(NodeId::DRIVER, true);
                }
                (tcp_addr, sup.restarts.clone())
            }
        };
        let addr = ActorAddr {
            local,
            host,
            tcp,
            key,
        };
        let raw = RawActorRef::new(id, Arc::from(A::NAME), addr, Some(restarts));
        Ok(ActorRef {
            client: A::Client::from_raw(raw),
            _type: PhantomData,
        })
    }
}

fn no_node(node: NodeId) -> Error {
    Error::new(
        ErrorKind::Spawn,
        format!("cannot place an actor on {node}: no such node in this cluster"),
    )
}

/// Where a new actor goes: the node asked for, else (in a cluster) the
/// member with the fewest actors, else here.
fn place(cluster: Option<&crate::cluster::Shared>, asked: Option<NodeId>) -> Result<NodeId, Error> {
    match (asked, cluster) {
        (Some(n), _) if n == current_node() => Ok(n),
        (Some(n), Some(c)) if c.node(n).is_some() => Ok(n),
        (Some(n), _) => Err(no_node(n)),
        (None, Some(c)) => Ok(c.pick_actor_home(None, false).unwrap_or(NodeId::DRIVER)),
        (None, None) => Ok(current_node()),
    }
}
