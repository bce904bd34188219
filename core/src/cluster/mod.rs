//! Clusters: the driver's side ([`Cluster`], [`NodeInfo`]) and the node's
//! ([`join`], in `node.rs`), and the link that puts a node's workers under
//! an executor's scheduler (`link.rs`).
//!
//! A cluster is a driver (the program that builds the executor) and nodes:
//! processes of the same binary, on any host, that dial the driver over TCP
//! with the cluster's key. mproc places no process itself: Slurm,
//! Kubernetes, ssh or a shell start the nodes.
//!
//! # The driver
//! [`Cluster::listen`] binds a TCP listener and starts one accept thread
//! (`mproc-cluster`). Each connection gets a thread of its own for the
//! handshake, so a slow or hostile peer holds up nobody: the key's
//! challenge–response first (`protocol::auth`, frames of a few hundred
//! bytes, ten seconds at most), then the node's hello, checked against this
//! build's registry fingerprint. A node that passes becomes a [`NodeInfo`]
//! and gets a reader thread (`mproc-node-read`) for its answers. One
//! heartbeat thread (`mproc-cluster-beat`) pings every node each second; a
//! node silent for four seconds, or whose connection breaks, is lost: its
//! workers leave every scheduler with `NodeLost` (see `link.rs`).
//!
//! The cluster lives as long as a [`Cluster`] clone or an executor built on
//! it; then every node is told to close, and exits.

mod link;
mod node;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use mproc_transport::{ByteStream, FrameReader, StreamIo, UnixChannel, DEFAULT_MAX_FRAME};

pub(crate) use self::link::ClusterLauncher;
use self::link::RemoteLink;
pub use self::node::{join, join_tls};
use crate::address::{NodeId, WorkerId};
use crate::error::{Error, ErrorKind};
use crate::executor::sched::link::Event;
use crate::executor::sched::Core;
use crate::outbox::Outbox;
use crate::protocol::actor::Ended;
use crate::protocol::auth::{self, Purpose, AUTH_DEADLINE};
use crate::protocol::cluster::{NodeHello, ToDriver, ToNode, Welcome, HEARTBEAT, SILENCE_LIMIT};
use crate::protocol::manager::{frame, read_msg};
use crate::protocol::{decode, PROTOCOL_VERSION};
use crate::tls::{ServerTls, TlsChannel};

/// Handshakes in progress at once; more connections are closed at accept.
const MAX_PENDING: usize = 64;

/// A node that joined the cluster, as the driver sees it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    id: NodeId,
    addr: SocketAddr,
    hostname: String,
    workers: usize,
}

impl NodeInfo {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// The node's address as the driver sees it.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The node's host name, as it reported it.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }
    /// How many workers the node runs.
    pub fn workers(&self) -> usize {
        self.workers
    }
}

/// The driver's end of a cluster: where nodes join, and which have.
///
/// Cheap to clone. The cluster stays up while a clone or an executor built
/// on it (with [`ExecutorBuilder::cluster`](crate::ExecutorBuilder::cluster))
/// lives; then its nodes are told to exit.
///
/// ```no_run
/// use mproc::prelude::*;
/// use std::time::Duration;
///
/// # async fn demo() -> Result<(), mproc::Error> {
/// let cluster = Cluster::listen("0.0.0.0:7077", b"a long random key")?;
/// println!("nodes join at {}", cluster.address());
/// let executor = Executor::builder().max_workers(2).cluster(&cluster).build().await?;
/// let nodes = cluster.wait_for_nodes(2, Duration::from_secs(60)).await?;
/// println!("{} nodes, {} workers", nodes.len(), nodes.iter().map(|n| n.workers()).sum::<usize>());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("address", &self.shared.addr)
            .field("nodes", &self.nodes().len())
            .finish_non_exhaustive()
    }
}

/// What the threads of a cluster share.
pub(crate) struct Shared {
    addr: SocketAddr,
    key: Vec<u8>,
    tls: Option<Arc<rustls::ServerConfig>>,
    listener: TcpListener,
    state: Mutex<Nodes>,
    changed: Condvar,
    pending: AtomicUsize,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct Nodes {
    next: u32,
    live: BTreeMap<NodeId, Arc<NodeConn>>,
    /// The schedulers placing work on this cluster's nodes.
    cores: Vec<Weak<Core>>,
    /// Actors placed on each member (the driver included) and not ended.
    actors: BTreeMap<NodeId, usize>,
}

/// One joined node: its connection and the driver's books about it.
pub(crate) struct NodeConn {
    pub(crate) info: NodeInfo,
    chan: Arc<dyn ByteStream>,
    pub(crate) out: Arc<Outbox>,
    pub(crate) alive: AtomicBool,
    /// Worker slots of this node given to schedulers.
    pub(crate) used: AtomicUsize,
    /// Requests on their way or running there: driver job id → its link.
    pub(crate) routes: Mutex<std::collections::HashMap<u64, Weak<RemoteLink>>>,
    pub(crate) links: Mutex<Vec<Weak<RemoteLink>>>,
    /// Actor starts asked of this node and not answered yet.
    spawns:
        Mutex<std::collections::HashMap<u64, std::sync::mpsc::Sender<Result<SocketAddr, String>>>>,
    /// The actors with an instance here, told when it ends.
    actors: Mutex<std::collections::HashMap<WorkerId, Weak<dyn ActorWatch>>>,
}

/// Whoever answers for an actor whose instance runs on a node (its home on
/// the driver): told when that instance ends.
pub(crate) trait ActorWatch: Send + Sync {
    /// The instance ended so; `stopped` when a caller stopped it.
    fn ended(&self, ended: Ended, stopped: bool);
}

/// How long a node may take to start an actor's instance.
const ACTOR_START_LIMIT: Duration = Duration::from_secs(60);

impl NodeConn {
    /// Starts an instance of actor `id` on this node; its TCP address.
    pub(crate) fn spawn_actor(
        &self,
        id: &WorkerId,
        type_name: &str,
        args: &[u8],
        key: &[u8],
        history: Vec<Ended>,
        watch: Weak<dyn ActorWatch>,
    ) -> Result<SocketAddr, Error> {
        static REQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let req = REQ.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        lock(&self.spawns).insert(req, tx);
        lock(&self.actors).insert(id.clone(), watch);
        let sent = self.out.send(&ToNode::SpawnActor {
            req,
            id: id.clone(),
            type_name,
            args: crate::protocol::Bytes(args),
            key: crate::protocol::Bytes(key),
            history,
        });
        let lost = || {
            Error::new(
                ErrorKind::Spawn,
                format!("{} was lost while starting the actor", self.info.id),
            )
        };
        let r = match sent {
            Err(e) => Err(Error::with_source(
                ErrorKind::Spawn,
                "cannot ask the node",
                e,
            )),
            Ok(()) => match rx.recv_timeout(ACTOR_START_LIMIT) {
                Ok(Ok(addr)) => Ok(addr),
                Ok(Err(reason)) => Err(Error::new(
                    ErrorKind::Spawn,
                    format!("{} could not start the actor: {reason}", self.info.id),
                )),
                Err(_) => Err(lost()),
            },
        };
        lock(&self.spawns).remove(&req);
        if r.is_err() {
            lock(&self.actors).remove(id);
        }
        r
    }

    /// Stops actor `id`'s instance on this node.
    pub(crate) fn stop_actor(&self, id: &WorkerId) {
        lock(&self.actors).remove(id);
        let _ = self.out.send(&ToNode::StopActor { id: id.clone() });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    /// Binds `addr` (port 0 picks one) and starts accepting nodes that hold
    /// `authkey`.
    ///
    /// # Errors
    /// [`ErrorKind::Auth`] for an empty key; [`ErrorKind::Io`] when the
    /// address cannot be bound.
    pub fn listen(addr: impl ToSocketAddrs, authkey: &[u8]) -> Result<Cluster, Error> {
        Self::start(addr, authkey, None)
    }

    /// [`listen`](Self::listen) with TLS: nodes must join with
    /// [`join_tls`] (or `MPROC_TLS_CA_FILE`) and trust this certificate.
    ///
    /// # Errors
    /// As [`listen`](Self::listen), and [`ErrorKind::Auth`] for a
    /// certificate or key rustls refuses.
    pub fn listen_tls(
        addr: impl ToSocketAddrs,
        authkey: &[u8],
        tls: ServerTls,
    ) -> Result<Cluster, Error> {
        let cfg = tls
            .config()
            .map_err(|e| Error::with_source(ErrorKind::Auth, "bad TLS configuration", e))?;
        Self::start(addr, authkey, Some(cfg))
    }

    fn start(
        addr: impl ToSocketAddrs,
        authkey: &[u8],
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Cluster, Error> {
        if authkey.is_empty() {
            return Err(Error::new(
                ErrorKind::Auth,
                "a cluster needs a non-empty key: nothing listens without one",
            ));
        }
        let listener = TcpListener::bind(addr).map_err(|e| {
            Error::with_source(ErrorKind::Io, "cannot bind the cluster's address", e)
        })?;
        let addr = listener.local_addr().map_err(Error::from)?;
        let accept = listener.try_clone().map_err(Error::from)?;
        let shared = Arc::new(Shared {
            addr,
            key: authkey.to_vec(),
            tls,
            listener,
            state: Mutex::new(Nodes {
                next: 1,
                ..Nodes::default()
            }),
            changed: Condvar::new(),
            pending: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&shared);
        let accept = std::thread::Builder::new()
            .name("mproc-cluster".into())
            .spawn(move || accept_loop(accept, weak))
            .map_err(|e| Error::with_source(ErrorKind::Spawn, "cannot start a thread", e))?;
        let weak = Arc::downgrade(&shared);
        let beat = std::thread::Builder::new()
            .name("mproc-cluster-beat".into())
            .spawn(move || heartbeat(weak))
            .map_err(|e| Error::with_source(ErrorKind::Spawn, "cannot start a thread", e))?;
        lock(&shared.threads).extend([accept, beat]);
        Ok(Cluster { shared })
    }

    /// The address nodes join at (the bound port after port 0).
    pub fn address(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The nodes joined and alive now, in the order they joined.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        lock(&self.shared.state)
            .live
            .values()
            .map(|n| n.info.clone())
            .collect()
    }

    /// Waits until at least `n` nodes are alive, for at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Spawn`] naming how many joined when fewer than `n`
    /// did in time.
    pub async fn wait_for_nodes(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<NodeInfo>, Error> {
        let shared = self.shared.clone();
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::Builder::new()
            .name("mproc-cluster-wait".into())
            .spawn(move || {
                let _ = tx.send(shared.wait_for(n, timeout));
            })
            .map_err(|e| Error::with_source(ErrorKind::Spawn, "cannot start a thread", e))?;
        rx.await
            .map_err(|_| Error::new(ErrorKind::Spawn, "the wait for nodes was abandoned"))?
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Shared {
    fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<NodeInfo>, Error> {
        let end = Instant::now() + timeout;
        let mut st = lock(&self.state);
        loop {
            if st.live.len() >= n {
                return Ok(st.live.values().map(|c| c.info.clone()).collect());
            }
            let now = Instant::now();
            if now >= end {
                return Err(Error::new(
                    ErrorKind::Spawn,
                    format!(
                        "only {} of {n} nodes joined within {timeout:?} (they join at {})",
                        st.live.len(),
                        self.addr
                    ),
                ));
            }
            st = self
                .changed
                .wait_timeout(st, end - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Registers a scheduler that places work on this cluster's nodes.
    pub(crate) fn add_core(&self, core: &Arc<Core>) {
        let mut st = lock(&self.state);
        st.cores.retain(|c| c.strong_count() > 0);
        st.cores.push(Arc::downgrade(core));
    }

    /// The worker slots of every live node.
    pub(crate) fn capacity(&self) -> usize {
        lock(&self.state)
            .live
            .values()
            .map(|n| n.info.workers)
            .sum()
    }

    /// The live node with the most free slots (or the least loaded when
    /// all are full).
    pub(crate) fn pick_node(&self) -> Option<Arc<NodeConn>> {
        let st = lock(&self.state);
        st.live
            .values()
            .filter(|n| n.alive.load(Ordering::Acquire))
            .max_by_key(|n| {
                let used = n.used.load(Ordering::Acquire);
                (
                    n.info.workers as i64 - used as i64,
                    std::cmp::Reverse(n.info.id),
                )
            })
            .cloned()
    }

    /// The address the cluster listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live node `id`.
    pub(crate) fn node(&self, id: NodeId) -> Option<Arc<NodeConn>> {
        lock(&self.state).live.get(&id).cloned()
    }

    /// Where the next actor goes: the member (the driver or a live node)
    /// with the fewest actors, the driver first among equals; never
    /// `avoid`.
    pub(crate) fn pick_actor_home(
        &self,
        avoid: Option<NodeId>,
        nodes_only: bool,
    ) -> Option<NodeId> {
        let st = lock(&self.state);
        let driver = (!nodes_only).then_some(NodeId::DRIVER);
        driver
            .into_iter()
            .chain(st.live.keys().copied())
            .filter(|n| Some(*n) != avoid)
            .min_by_key(|n| (st.actors.get(n).copied().unwrap_or(0), *n))
    }

    /// Counts an actor placed on `node` (`+1`) or ended there (`-1`).
    pub(crate) fn count_actor(&self, node: NodeId, placed: bool) {
        let mut st = lock(&self.state);
        let n = st.actors.entry(node).or_insert(0);
        *n = if placed { *n + 1 } else { n.saturating_sub(1) };
    }

    fn cores(&self) -> Vec<Arc<Core>> {
        lock(&self.state)
            .cores
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Node `conn` is lost (`why`): its workers leave every scheduler.
    fn lose(&self, conn: &Arc<NodeConn>, why: &str) {
        if !conn.alive.swap(false, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(node = %conn.info.id, host = %conn.info.hostname, "mproc node lost: {why}");
        lock(&self.state).live.remove(&conn.info.id);
        self.changed.notify_all();
        conn.chan.shutdown();
        // Its writer thread holds the connection until told to stop.
        conn.out.close();
        let links: Vec<_> = lock(&conn.links).iter().filter_map(Weak::upgrade).collect();
        for l in links {
            l.lost();
        }
        lock(&self.state).actors.remove(&conn.info.id);
        lock(&conn.spawns).clear();
        let actors: Vec<_> = std::mem::take(&mut *lock(&conn.actors))
            .into_values()
            .filter_map(|w| w.upgrade())
            .collect();
        for a in actors {
            a.ended(Ended::Lost(conn.info.id), false);
        }
        for core in self.cores() {
            core.capacity_changed();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Wakes the accept thread; refuses nodes from now on.
        let _ = nix::sys::socket::shutdown(
            self.listener.as_fd().as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
        let nodes = std::mem::take(&mut lock(&self.state).live);
        for n in nodes.values() {
            n.alive.store(false, Ordering::Release);
            let _ = n.out.send(&ToNode::Close);
            n.out.drain();
            n.out.close();
            n.chan.shutdown();
        }
        for h in std::mem::take(&mut *lock(&self.threads)) {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Weak<Shared>) {
    for conn in listener.incoming() {
        let Some(sh) = shared.upgrade() else { return };
        let conn = match conn {
            Ok(c) => c,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if sh.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
            sh.pending.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let weak = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("mproc-cluster-auth".into())
            .spawn(move || {
                let peer = conn.peer_addr().ok();
                let r = admit(conn, &weak);
                if let Some(sh) = weak.upgrade() {
                    sh.pending.fetch_sub(1, Ordering::AcqRel);
                }
                if let Err(e) = r {
                    tracing::warn!(?peer, "mproc node refused: {e}");
                }
            });
        if spawned.is_err() {
            sh.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Why a peer was not admitted.
#[derive(Debug, thiserror::Error)]
enum AdmitError {
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Auth(#[from] auth::AuthError),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad hello: {0}")]
    Hello(#[from] crate::protocol::manager::ReadError),
    #[error("{0}")]
    Refused(String),
}

/// The handshake with one peer; on success the node is live.
fn admit(tcp: TcpStream, shared: &Weak<Shared>) -> Result<(), AdmitError> {
    let peer = tcp.peer_addr()?;
    let _ = tcp.set_nodelay(true);
    tcp.set_read_timeout(Some(AUTH_DEADLINE))?;
    tcp.set_write_timeout(Some(AUTH_DEADLINE))?;
    let Some(sh) = shared.upgrade() else {
        return Ok(());
    };
    let (key, tls) = (sh.key.clone(), sh.tls.clone());
    drop(sh);
    let wire = match &tls {
        Some(cfg) => Wire::tls(TlsChannel::accept(cfg, tcp)?),
        None => Wire::Plain(Arc::new(UnixChannel::from_fd(tcp.into()))),
    };
    let chan = wire.stream();
    // The whole handshake, hello included, within the deadline: a peer that
    // trickles bytes gets no more time than a silent one.
    let mut io = Deadlined {
        io: StreamIo(&*chan),
        wire: &wire,
        end: Instant::now() + AUTH_DEADLINE,
    };
    auth::server(&mut io, &key, Purpose::Cluster)?;
    let hello: NodeHello = read_msg(&mut io, 4096)?;
    if hello.version != PROTOCOL_VERSION || hello.fingerprint != crate::registry::fingerprint() {
        let reason = "the node is another build of the program (its tasks and actors differ \
                      from the driver's); start the same binary on every node"
            .to_string();
        if let Ok(b) = frame(
            &Welcome::Refused {
                reason: reason.clone(),
            },
            4096,
        ) {
            let _ = chan.write_all(&b);
        }
        return Err(AdmitError::Refused(reason));
    }
    let Some(sh) = shared.upgrade() else {
        return Ok(());
    };
    let mut st = lock(&sh.state);
    let id = NodeId::new(st.next);
    st.next += 1;
    let bytes =
        frame(&Welcome::Joined { id }, 4096).map_err(|e| AdmitError::Refused(e.to_string()))?;
    chan.write_all(&bytes)?;
    wire.set_read_timeout(SILENCE_LIMIT)?;
    let out = Outbox::new(chan.clone(), DEFAULT_MAX_FRAME);
    let conn = Arc::new(NodeConn {
        info: NodeInfo {
            id,
            addr: peer,
            hostname: hello.hostname,
            workers: hello.workers.max(1) as usize,
        },
        chan,
        out,
        alive: AtomicBool::new(true),
        used: AtomicUsize::new(0),
        routes: Mutex::new(std::collections::HashMap::new()),
        links: Mutex::new(Vec::new()),
        spawns: Mutex::new(std::collections::HashMap::new()),
        actors: Mutex::new(std::collections::HashMap::new()),
    });
    st.live.insert(id, conn.clone());
    let cores: Vec<_> = st.cores.iter().filter_map(Weak::upgrade).collect();
    drop(st);
    sh.changed.notify_all();
    tracing::info!(node = %id, host = %conn.info.hostname, workers = conn.info.workers, "mproc node joined");
    let weak = shared.clone();
    let reader = {
        let conn = conn.clone();
        std::thread::Builder::new()
            .name("mproc-node-read".into())
            .spawn(move || read_node(conn, weak))?
    };
    lock(&sh.threads).push(reader);
    for core in cores {
        core.capacity_changed();
    }
    Ok(())
}

/// A connection's reads bounded by one deadline for all of them.
struct Deadlined<'a> {
    io: StreamIo<'a>,
    wire: &'a Wire,
    end: Instant,
}

impl std::io::Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.wire
            .set_read_timeout(left.max(Duration::from_millis(1)))?;
        self.io.read(buf)
    }
}

impl std::io::Write for Deadlined<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.io.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.io.flush()
    }
}

/// A cluster connection: a TCP socket, plain or inside TLS.
pub(crate) enum Wire {
    Plain(Arc<UnixChannel>),
    Tls(Arc<TlsChannel>),
}

impl Wire {
    pub(crate) fn tls(t: TlsChannel) -> Wire {
        Wire::Tls(Arc::new(t))
    }

    /// The connection as a byte stream.
    pub(crate) fn stream(&self) -> Arc<dyn ByteStream> {
        match self {
            Wire::Plain(c) => c.clone(),
            Wire::Tls(c) => c.clone(),
        }
    }

    /// Makes a read fail after `t` without a byte: the handshake's
    /// deadline, then the heartbeat's silence limit.
    pub(crate) fn set_read_timeout(&self, t: Duration) -> std::io::Result<()> {
        match self {
            Wire::Plain(c) => {
                let tv = nix::sys::time::TimeVal::new(
                    i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
                    i64::from(t.subsec_micros()),
                );
                nix::sys::socket::setsockopt(&**c, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
                    .map_err(std::io::Error::from)
            }
            Wire::Tls(c) => {
                c.set_read_timeout(Some(t));
                Ok(())
            }
        }
    }
}

/// Reads a node's answers until its connection ends or falls silent.
fn read_node(conn: Arc<NodeConn>, shared: Weak<Shared>) {
    let mut reader = FrameReader::new(DEFAULT_MAX_FRAME);
    // Answers read in one go reach each scheduler in one call: one lock
    // of its state per burst, not per task.
    let mut done: Vec<(Arc<RemoteLink>, Event)> = Vec::new();
    let why = loop {
        if !reader.has_frame() || done.len() >= 256 {
            deliver(&mut done);
        }
        match reader.next_frame(&*conn.chan) {
            Ok(frame) => match decode::<ToDriver<'_>>(frame) {
                Ok(ToDriver::Done {
                    id,
                    exec_ns,
                    result,
                }) => {
                    let link = lock(&conn.routes).remove(&id).and_then(|l| l.upgrade());
                    if let Some(link) = link {
                        let outcome = result.map(|b| b.0.to_vec().into());
                        done.push((
                            link,
                            Event::Done {
                                id,
                                exec_ns,
                                outcome,
                            },
                        ));
                    }
                }
                Ok(ToDriver::Recalled { id, taken }) => {
                    if taken {
                        let link = lock(&conn.routes).remove(&id).and_then(|l| l.upgrade());
                        if let Some(link) = link {
                            link.returned(id);
                        }
                    }
                }
                Ok(ToDriver::ActorStarted { req, result }) => {
                    if let Some(tx) = lock(&conn.spawns).remove(&req) {
                        let _ = tx.send(result);
                    }
                }
                Ok(ToDriver::ActorEnded { id, ended, stopped }) => {
                    let watch = lock(&conn.actors).remove(&id).and_then(|w| w.upgrade());
                    if let Some(w) = watch {
                        w.ended(ended, stopped);
                    }
                }
                Ok(ToDriver::Ping) => {}
                Err(e) => break format!("malformed message: {e}"),
            },
            Err(e) => break e.to_string(),
        }
    };
    deliver(&mut done);
    if let Some(sh) = shared.upgrade() {
        sh.lose(&conn, &why);
    }
}

/// Hands answers to their slots, each slot's in one batch.
fn deliver(done: &mut Vec<(Arc<RemoteLink>, Event)>) {
    while !done.is_empty() {
        let link = done[0].0.clone();
        let mut mine = Vec::new();
        done.retain_mut(|(l, ev)| {
            if Arc::ptr_eq(l, &link) {
                let ev = std::mem::replace(ev, Event::Returned { id: 0 });
                mine.push(ev);
                false
            } else {
                true
            }
        });
        link.answered(mine);
    }
}

fn heartbeat(shared: Weak<Shared>) {
    loop {
        std::thread::sleep(HEARTBEAT);
        let Some(sh) = shared.upgrade() else { return };
        let nodes: Vec<_> = lock(&sh.state).live.values().cloned().collect();
        for n in nodes {
            if n.out.send(&ToNode::Ping).is_err() {
                sh.lose(&n, "cannot write to it");
            }
        }
    }
}
