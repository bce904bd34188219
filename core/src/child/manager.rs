//! Manager mode in the child: the server process of `Manager::start()` and
//! `Manager::serve()`, holding dicts, lists, queues and values for proxies
//! in any process.
//!
//! The child boots as every child does (any start method; it dies with the
//! program through `PR_SET_PDEATHSIG`), reads one `StartManager` frame on
//! its boot socket (see `protocol::manager`), listens, answers
//! `ManagerReady`, and then blocks on the boot socket: its end of stream —
//! the parent dropped or shut down its `Manager`, or died — ends the server.
//!
//! # Listeners
//! * An **abstract** Unix socket (`@mproc-mgr-<pid>-<random>`): it has no
//!   file-system entry, so nothing can be left in the temp dir even when the
//!   server is SIGKILLed; any local process may connect, so, like every
//!   listener here, it requires the key's handshake first.
//! * A TCP socket when the parent asked for one (`Manager::serve`), with
//!   TLS when asked (`Manager::serve_tls`, see `tls.rs`); the key's
//!   handshake then runs inside the TLS session.
//!
//! Each accepted connection gets its own thread. Until it authenticated
//! (`protocol::auth`) its frames are capped at a few hundred bytes and it
//! has ten seconds; a failed handshake, an oversized or malformed frame
//! closes that connection only.
//!
//! # The store
//! Objects live in a map from id to object, each object behind its own
//! lock, so clients of different objects never wait for each other and the
//! map's own lock is held only to look an id up (a `RwLock`, read-mostly:
//! this is what `dashmap` would give, without a dependency). Keys and values
//! are the proxies' postcard bytes; the server compares keys by bytes and
//! never decodes them.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use mproc_transport::{ByteStream, FrameReader, DEFAULT_MAX_FRAME};

use super::ChildError;
use crate::protocol::manager::{
    frame, read_msg, ManagerReady, ObjKind, ReadError, Reply, Request, StartManager,
};
use crate::protocol::{auth, decode, PROTOCOL_VERSION};
use crate::shared::bytemap::{ByteTable, TableKind};

/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 1024;

/// In the child, after the start byte: serve until the boot socket closes.
pub(crate) fn run_server(chan: &dyn ByteStream) -> Result<i32, ChildError> {
    let mut reader = FrameReader::new(64 * 1024 * 1024);
    let frame_bytes = reader.next_frame(chan).map_err(ChildError::Handshake)?;
    let msg: StartManager = decode(frame_bytes).map_err(ChildError::Malformed)?;
    if msg.version != PROTOCOL_VERSION || msg.fingerprint != crate::registry::fingerprint() {
        return Err(ChildError::OtherBuild);
    }
    crate::sys::set_thread_name(&msg.name);
    crate::sys::set_process_name(&msg.name);
    // Held by this thread, which lives as long as the server.
    let alive = crate::sys::alive::hold_alive().map_err(|cause| ChildError::Transport {
        what: "liveness page",
        cause,
    })?;
    let ready = match listen(&msg, alive) {
        Ok(r) => r,
        Err(e) => ManagerReady::Failed {
            reason: e.to_string(),
        },
    };
    let failed = matches!(ready, ManagerReady::Failed { .. });
    let bytes = frame(&ready, 4096).map_err(|_| ChildError::Protocol("cannot encode ready"))?;
    chan.write_all(&bytes)
        .map_err(|e| ChildError::Handshake(e.into()))?;
    if failed {
        return Ok(1);
    }
    // Nothing more is expected: wait for end of stream.
    let mut buf = [0u8; 64];
    while let Ok(n) = chan.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    Ok(0)
}

struct Server {
    store: Store,
    key: Vec<u8>,
    live: AtomicUsize,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The liveness page local clients map (see `sys::alive`).
    alive: OwnedFd,
}

/// Why the server could not start listening (sent to the program as text).
#[derive(Debug, thiserror::Error)]
enum ListenError {
    #[error("bad TLS configuration: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot {what}: {cause}")]
    Io { what: String, cause: std::io::Error },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ListenError {
    let what = what.into();
    move |cause| ListenError::Io { what, cause }
}

fn listen(msg: &StartManager, alive: OwnedFd) -> Result<ManagerReady, ListenError> {
    let tls = match &msg.tls {
        Some(t) => Some(t.config()?),
        None => None,
    };
    let server = Arc::new(Server {
        store: Store::default(),
        key: msg.authkey.clone(),
        live: AtomicUsize::new(0),
        tls,
        alive,
    });
    let name = format!(
        "mproc-mgr-{}-{:016x}",
        std::process::id(),
        crate::sys::shm::random_u64()
    );
    let addr = UnixAddr::from_abstract_name(name.as_bytes()).map_err(io_err("name the socket"))?;
    let unix = UnixListener::bind_addr(&addr).map_err(io_err("listen"))?;
    let tcp = match &msg.tcp {
        Some(a) => Some(TcpListener::bind(a.as_str()).map_err(io_err(format!("bind {a}")))?),
        None => None,
    };
    let tcp_addr = match &tcp {
        Some(l) => Some(l.local_addr().map_err(io_err("read the bound address"))?),
        None => None,
    };
    let s = server.clone();
    spawn("manager-accept", move || {
        for conn in unix.incoming().flatten() {
            s.clone().accept(Conn::Unix(conn));
        }
    })?;
    if let Some(tcp) = tcp {
        spawn("manager-tcp", move || {
            for conn in tcp.incoming().flatten() {
                let _ = conn.set_nodelay(true);
                server.clone().accept(Conn::Tcp(conn));
            }
        })?;
    }
    Ok(ManagerReady::Listening {
        unix: name,
        tcp: tcp_addr,
    })
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), ListenError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(io_err("start a thread"))
}

/// An accepted connection, before TLS.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Server {
    fn accept(self: Arc<Self>, conn: Conn) {
        if self.live.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let me = self.clone();
        let started = spawn("manager-conn", move || {
            me.connection(conn);
            me.live.fetch_sub(1, Ordering::AcqRel);
        });
        if started.is_err() {
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Authenticates the peer within the deadline, then serves it.
    fn connection(&self, conn: Conn) {
        let deadline = Some(auth::AUTH_DEADLINE);
        match conn {
            Conn::Unix(mut s) => {
                let _ = s.set_read_timeout(deadline);
                let _ = s.set_write_timeout(deadline);
                if self.admits(&mut s) {
                    let _ = s.set_read_timeout(None);
                    let _ = s.set_write_timeout(None);
                    let fds = s.try_clone().ok();
                    self.serve(&mut s, fds.as_ref());
                }
            }
            Conn::Tcp(s) => {
                let _ = s.set_read_timeout(deadline);
                let _ = s.set_write_timeout(deadline);
                match &self.tls {
                    None => {
                        let mut s = s;
                        if self.admits(&mut s) {
                            let _ = s.set_read_timeout(None);
                            let _ = s.set_write_timeout(None);
                            self.serve(&mut s, None);
                        }
                    }
                    // The TLS handshake runs within the same deadline, on
                    // the first read of the key's handshake.
                    Some(cfg) => {
                        let Ok(mut s) = crate::tls::accept(cfg, s) else {
                            return;
                        };
                        if self.admits(&mut s) {
                            let _ = s.sock.set_read_timeout(None);
                            let _ = s.sock.set_write_timeout(None);
                            self.serve(&mut s, None);
                        }
                    }
                }
            }
        }
    }

    /// True when the peer proves it holds the key, within the handshake's
    /// deadline.
    fn admits<S: auth::Bounded>(&self, s: &mut S) -> bool {
        auth::server_within(s, &self.key, auth::Purpose::Manager, auth::AUTH_DEADLINE).is_ok()
    }

    /// Answers requests until the peer closes or misbehaves. `local` is the
    /// Unix connection itself, on which `Attach` hands out descriptors.
    fn serve(&self, s: &mut (impl Read + Write), local: Option<&UnixStream>) {
        loop {
            let req: Request = match read_msg(s, DEFAULT_MAX_FRAME) {
                Ok(r) => r,
                // End of stream, a broken connection, an oversized or a
                // malformed frame: this connection ends, no other.
                Err(ReadError::Io(_) | ReadError::TooLarge { .. } | ReadError::Malformed(_)) => {
                    return
                }
            };
            if let Request::Attach { id } = req {
                if !self.attach(id, local) {
                    return;
                }
                continue;
            }
            let reply = self.store.handle(req);
            let bytes = match frame(&reply, DEFAULT_MAX_FRAME) {
                Ok(b) => b,
                Err(e) => match frame(&Reply::Failed(e.to_string()), 4096) {
                    Ok(b) => b,
                    Err(_) => return,
                },
            };
            if s.write_all(&bytes).and_then(|()| s.flush()).is_err() {
                return;
            }
        }
    }

    /// Sends the table of object `id` and the liveness page (one byte `1`
    /// with both descriptors), or the byte `0` when there is no such table
    /// or the connection is not local. False when the connection broke.
    fn attach(&self, id: u64, local: Option<&UnixStream>) -> bool {
        let Some(sock) = local else {
            // Not answerable on TCP: a remote client never asks.
            return false;
        };
        let obj = self.store.get(id);
        let fds = match obj.as_deref().map(|o| &o.data) {
            Some(Data::Dict(t) | Data::List(t)) => {
                vec![t.fd.as_raw_fd(), self.alive.as_raw_fd()]
            }
            _ => Vec::new(),
        };
        let byte = u8::from(!fds.is_empty());
        crate::sys::send_fds(&sock.as_fd(), byte, &fds).is_ok()
    }
}

// ----- the store ---------------------------------------------------------------

struct Obj {
    tag: String,
    data: Data,
}

enum Data {
    Dict(Table),
    List(Table),
    Queue(Mutex<VecDeque<Vec<u8>>>, Condvar),
    Value(Mutex<Vec<u8>>),
}

#[derive(Default)]
struct Store {
    objects: RwLock<HashMap<u64, Arc<Obj>>>,
    names: Mutex<HashMap<String, u64>>,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn failed(what: impl Into<String>) -> Reply {
    Reply::Failed(what.into())
}

impl Store {
    fn get(&self, id: u64) -> Option<Arc<Obj>> {
        self.objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn create(
        &self,
        kind: ObjKind,
        name: Option<String>,
        tag: String,
        init: Option<Vec<u8>>,
    ) -> Reply {
        let mut names = lock(&self.names);
        if let Some(id) = name.as_ref().and_then(|n| names.get(n)) {
            return match self.get(*id) {
                Some(o) if o.tag == tag && kind_of(&o.data) == kind => Reply::Created { id: *id },
                _ => failed(format!(
                    "the object named {:?} is of another kind or type",
                    name.unwrap_or_default()
                )),
            };
        }
        let data = match kind {
            ObjKind::Dict => match Table::new(TableKind::Dict) {
                Ok(t) => Data::Dict(t),
                Err(e) => return failed(format!("cannot create a dict: {e}")),
            },
            ObjKind::List => match Table::new(TableKind::List) {
                Ok(t) => Data::List(t),
                Err(e) => return failed(format!("cannot create a list: {e}")),
            },
            ObjKind::Queue => Data::Queue(Mutex::default(), Condvar::new()),
            ObjKind::Value => match init {
                Some(v) => Data::Value(Mutex::new(v)),
                None => return failed("a value needs its first value"),
            },
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::new(Obj { tag, data }));
        if let Some(n) = name {
            names.insert(n, id);
        }
        Reply::Created { id }
    }

    fn handle(&self, req: Request) -> Reply {
        let id = match &req {
            Request::Create {
                kind,
                name,
                type_tag,
                init,
            } => return self.create(*kind, name.clone(), type_tag.clone(), init.clone()),
            Request::DictInsert { id, .. }
            | Request::DictGet { id, .. }
            | Request::DictRemove { id, .. }
            | Request::DictContains { id, .. }
            | Request::DictItems { id }
            | Request::ListPush { id, .. }
            | Request::ListGet { id, .. }
            | Request::ListSet { id, .. }
            | Request::ListPop { id }
            | Request::ListItems { id }
            | Request::QueuePut { id, .. }
            | Request::QueueGet { id, .. }
            | Request::ValueGet { id }
            | Request::ValueSet { id, .. }
            | Request::Len { id }
            | Request::Clear { id }
            | Request::Attach { id } => *id,
        };
        let Some(obj) = self.get(id) else {
            return failed(format!("no object {id} on this manager"));
        };
        match (&obj.data, req) {
            (Data::Dict(t), Request::DictInsert { key, value, .. }) => {
                match t.t.with(|l| l.insert(&key, &value)) {
                    Ok(old) => Reply::Maybe(old),
                    Err(e) => failed(e.to_string()),
                }
            }
            (Data::Dict(t), Request::DictGet { key, .. }) => {
                Reply::Maybe(t.t.with(|l| l.get_value(&key)))
            }
            (Data::Dict(t), Request::DictRemove { key, .. }) => {
                Reply::Maybe(t.t.with(|l| l.remove(&key)))
            }
            (Data::Dict(t), Request::DictContains { key, .. }) => {
                Reply::Bool(t.t.with(|l| l.get_value(&key).is_some()))
            }
            (Data::Dict(t), Request::DictItems { .. }) => Reply::Pairs(t.t.with(|l| l.pairs())),
            (Data::Dict(t) | Data::List(t), Request::Len { .. }) => {
                Reply::Len(t.t.with(|l| l.len()) as u64)
            }
            (Data::Dict(t) | Data::List(t), Request::Clear { .. }) => {
                t.t.with(|l| l.clear());
                Reply::Done
            }
            (Data::List(t), Request::ListPush { item, .. }) => match t.t.with(|l| l.push(&item)) {
                Ok(()) => Reply::Done,
                Err(e) => failed(e.to_string()),
            },
            (Data::List(t), Request::ListGet { index, .. }) => {
                Reply::Maybe(t.t.with(|l| l.item(index as usize)))
            }
            (Data::List(t), Request::ListSet { index, item, .. }) => {
                match t.t.with(|l| l.set_item(index as usize, &item)) {
                    Ok(true) => Reply::Done,
                    Ok(false) => failed(format!("list index {index} out of range")),
                    Err(e) => failed(e.to_string()),
                }
            }
            (Data::List(t), Request::ListPop { .. }) => Reply::Maybe(t.t.with(|l| l.pop())),
            (Data::List(t), Request::ListItems { .. }) => Reply::Items(t.t.with(|l| l.items())),
            (Data::Queue(q, cv), Request::QueuePut { item, .. }) => {
                lock(q).push_back(item);
                cv.notify_one();
                Reply::Done
            }
            (Data::Queue(q, cv), Request::QueueGet { timeout_ms, .. }) => {
                Reply::Maybe(queue_get(q, cv, timeout_ms.map(Duration::from_millis)))
            }
            (Data::Queue(q, _), Request::Len { .. }) => Reply::Len(lock(q).len() as u64),
            (Data::Queue(q, _), Request::Clear { .. }) => {
                lock(q).clear();
                Reply::Done
            }
            (Data::Value(v), Request::ValueGet { .. }) => Reply::Maybe(Some(lock(v).clone())),
            (Data::Value(v), Request::ValueSet { value, .. }) => {
                *lock(v) = value;
                Reply::Done
            }
            (data, _) => failed(format!(
                "object {id} is a {:?}, which has no such operation",
                kind_of(data)
            )),
        }
    }
}

/// A dict's or list's table and the memfd to hand to local clients.
struct Table {
    t: ByteTable,
    fd: OwnedFd,
}

impl Table {
    fn new(kind: TableKind) -> std::io::Result<Table> {
        let (t, fd) = ByteTable::create(kind)?;
        Ok(Table { t, fd })
    }
}

fn kind_of(d: &Data) -> ObjKind {
    match d {
        Data::Dict(_) => ObjKind::Dict,
        Data::List(_) => ObjKind::List,
        Data::Queue(..) => ObjKind::Queue,
        Data::Value(_) => ObjKind::Value,
    }
}

fn queue_get(
    q: &Mutex<VecDeque<Vec<u8>>>,
    cv: &Condvar,
    timeout: Option<Duration>,
) -> Option<Vec<u8>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut g = lock(q);
    loop {
        if let Some(item) = g.pop_front() {
            return Some(item);
        }
        match deadline {
            None => g = cv.wait(g).unwrap_or_else(|p| p.into_inner()),
            Some(d) => {
                let left = d.checked_duration_since(Instant::now())?;
                g = cv
                    .wait_timeout(g, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }
}

/// A TLS connection's reads are bounded on its socket.
impl auth::Bounded for crate::tls::ServerStream {
    fn bound_reads(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
        self.sock.set_read_timeout(t)
    }
}
