//! The caller's side of an actor: [`RawActorRef`] (what `ActorRef<A>`
//! holds and serializes), the one connection a process keeps per actor,
//! and [`ActorCall`], the future of one call.
//!
//! # One connection per process and actor
//! Every reference to the same actor in a process (clones, or copies
//! deserialized from a task's arguments) shares one [`Conn`]. A call is
//! queued on it the moment the client method is called, under the
//! connection's lock, so a caller's calls reach the actor in the order it
//! made them, and any number of calls may be in flight (pipelined). A
//! reader thread resolves replies by sequence number.
//!
//! # When the actor dies
//! The connection ends. A connector thread dials the same address again:
//! the supervisor keeps the listening socket, so the dial waits in its
//! backlog until the restarted instance accepts, or the supervisor answers
//! for an actor gone for good. Either way the hello carries how every
//! earlier instance ended, so calls that were sent to the dead instance
//! fail with `WorkerDied` and its exit status, and calls queued meanwhile
//! go to the new instance. A refused dial means the actor's executor is
//! gone: calls fail with [`TaskError::Shutdown`].

use std::future::Future;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::oneshot;
use mproc_transport::{ByteStream, FrameReader, UnixChannel, DEFAULT_MAX_FRAME};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::address::WorkerId;
use crate::error::{ExitInfo, TaskError};
use crate::outbox::Outbox;
use crate::protocol::actor::{ActorHello, Ended, FromActor, ToActor};
use crate::protocol::auth::{self, AuthError, AUTH_DEADLINE};
use crate::protocol::manager::{read_msg, ReadError};
use crate::protocol::{decode, Bytes};

/// How long a dial may wait for the actor's answer: a restart (a process
/// start and the constructor) happens within it.
const DIAL_PATIENCE: Duration = Duration::from_secs(120);
/// Dials after a connection broke during its handshake, before giving up.
const DIAL_ATTEMPTS: u32 = 50;

/// Where an actor listens, and the key it wants.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct ActorAddr {
    /// The abstract Unix socket name on the actor's host.
    pub(crate) local: String,
    /// Which host that name belongs to (see [`host_tag`]).
    pub(crate) host: u64,
    /// Its TCP address, for callers on other hosts; an unspecified IP
    /// means the driver's (as a node dialed it).
    pub(crate) tcp: Option<SocketAddr>,
    pub(crate) key: Vec<u8>,
}

impl std::fmt::Debug for ActorAddr {
    // The key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorAddr")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// An untyped reference to an actor: its id, type and address. What the
/// generated clients wrap; serializing it carries the address and key, so
/// whoever receives it can call the actor.
#[doc(hidden)]
#[derive(Clone)]
pub struct RawActorRef {
    id: WorkerId,
    type_name: Arc<str>,
    addr: ActorAddr,
    conn: Arc<Conn>,
    /// The supervisor's restart count, in the process that spawned it.
    restarts: Option<Arc<AtomicU32>>,
}

impl std::fmt::Debug for RawActorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorRef")
            .field("id", &self.id)
            .field("type", &self.type_name)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    id: WorkerId,
    type_name: String,
    addr: ActorAddr,
}

impl Serialize for RawActorRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            id: self.id.clone(),
            type_name: self.type_name.to_string(),
            addr: self.addr.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawActorRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(RawActorRef::new(w.id, w.type_name.into(), w.addr, None))
    }
}

impl RawActorRef {
    pub(crate) fn new(
        id: WorkerId,
        type_name: Arc<str>,
        addr: ActorAddr,
        restarts: Option<Arc<AtomicU32>>,
    ) -> RawActorRef {
        let conn = Conn::get(&addr);
        RawActorRef {
            id,
            type_name,
            addr,
            conn,
            restarts,
        }
    }

    /// The actor's address.
    pub(crate) fn id(&self) -> &WorkerId {
        &self.id
    }

    /// The registered name of the actor's type.
    pub(crate) fn type_name(&self) -> &str {
        &self.type_name
    }

    /// How many times the actor has been restarted, as far as this process
    /// knows: exact in the process that spawned it, as of the last
    /// connection elsewhere.
    pub(crate) fn restarts(&self) -> u32 {
        match &self.restarts {
            Some(r) => r.load(Ordering::Acquire),
            None => self.conn.generation.load(Ordering::Acquire),
        }
    }

    /// Calls method number `method` (named `name`) with `args`, the tuple
    /// of its arguments. The call is queued before this returns.
    pub fn call<A: Serialize, R: DeserializeOwned + Send + 'static>(
        &self,
        method: u32,
        name: &'static str,
        args: &A,
    ) -> ActorCall<R> {
        let span = tracing::debug_span!(
            "mproc.actor_call",
            actor = &*self.type_name,
            method = name,
            id = %self.id
        );
        let rx = match postcard::to_allocvec(args) {
            Ok(bytes) => self.conn.submit(Request::Call {
                method,
                args: bytes,
            }),
            Err(e) => Err(TaskError::Serialization {
                message: format!("cannot encode the arguments: {e}"),
            }),
        };
        ActorCall {
            state: Some(rx),
            span,
            _out: PhantomData,
        }
    }

    /// Asks the actor to finish the calls sent before and exit; resolves
    /// once its process is gone.
    pub(crate) async fn stop(&self) -> Result<(), TaskError> {
        let rx = self.conn.submit(Request::Stop)?;
        match rx.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TaskError::Shutdown),
        }
    }
}

type Reply = Result<Vec<u8>, TaskError>;

/// The future of one actor call: the method's result, or why there is
/// none ([`TaskError::WorkerDied`] when the actor's process died with the
/// call in flight or is gone for good, [`TaskError::Panicked`] when the
/// method panicked, [`TaskError::Shutdown`] when the actor's executor is
/// gone).
///
/// The call is already on its way when this is created; dropping it only
/// forgets the result.
#[must_use = "the call is sent either way; await it for the result"]
pub struct ActorCall<R> {
    state: Option<Result<oneshot::Receiver<Reply>, TaskError>>,
    span: tracing::Span,
    _out: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for ActorCall<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorCall").finish_non_exhaustive()
    }
}

impl<R: DeserializeOwned> Future for ActorCall<R> {
    type Output = Result<R, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let reply = match this.state.as_mut() {
            None => panic!("ActorCall polled after it finished"),
            Some(Err(_)) => match this.state.take() {
                Some(Err(e)) => return Poll::Ready(Err(e)),
                _ => unreachable!(),
            },
            Some(Ok(rx)) => match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            },
        };
        this.state = None;
        let out = match reply {
            Ok(Ok(bytes)) => {
                crate::protocol::decode(&bytes).map_err(|e| TaskError::Serialization {
                    message: format!("cannot decode the actor's reply: {e}"),
                })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TaskError::Shutdown),
        };
        if !this.span.is_disabled() {
            this.span.in_scope(|| match &out {
                Ok(_) => tracing::trace!("actor call done"),
                Err(e) => tracing::debug!("actor call failed: {e}"),
            });
        }
        Poll::Ready(out)
    }
}

/// What a caller asks of the actor.
enum Request {
    Call { method: u32, args: Vec<u8> },
    Stop,
}

/// A call that was made and not answered yet.
struct Waiter {
    tx: oneshot::Sender<Reply>,
    /// The instance it was sent to; `None` while it waits for a connection.
    sent_to: Option<u32>,
    /// Not yet sent: the request itself.
    unsent: Option<Request>,
    stop: bool,
}

enum Link {
    /// Not connected; the next call dials.
    Idle,
    /// A connector thread is dialing.
    Dialing,
    /// Connected to instance `gen`.
    Up { out: Arc<Outbox>, gen: u32 },
    /// The actor is gone for good and ended so.
    Dead(Ended),
}

struct ConnState {
    link: Link,
    next_seq: u64,
    /// In sequence order, so a new connection sends queued calls in the
    /// order they were made.
    waiting: std::collections::BTreeMap<u64, Waiter>,
}

/// This process's connection to one actor.
pub(crate) struct Conn {
    addr: ActorAddr,
    pid: u32,
    generation: AtomicU32,
    state: Mutex<ConnState>,
}

static CONNS: Mutex<Vec<Weak<Conn>>> = Mutex::new(Vec::new());

fn lock_conns() -> MutexGuard<'static, Vec<Weak<Conn>>> {
    CONNS.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    /// This process's connection to the actor at `addr`.
    fn get(addr: &ActorAddr) -> Arc<Conn> {
        let me = std::process::id();
        let mut all = lock_conns();
        all.retain(|w| w.strong_count() > 0);
        if let Some(c) = all
            .iter()
            .filter_map(Weak::upgrade)
            // A forked child's inherited connections are not its own.
            .find(|c| c.addr == *addr && c.pid == me)
        {
            return c;
        }
        let c = Arc::new(Conn {
            addr: addr.clone(),
            pid: me,
            generation: AtomicU32::new(0),
            state: Mutex::new(ConnState {
                link: Link::Idle,
                next_seq: 1,
                waiting: std::collections::BTreeMap::new(),
            }),
        });
        all.push(Arc::downgrade(&c));
        c
    }

    fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a request; the receiver gets its reply.
    fn submit(self: &Arc<Self>, req: Request) -> Result<oneshot::Receiver<Reply>, TaskError> {
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let stop = matches!(req, Request::Stop);
        match &st.link {
            Link::Dead(end) => {
                let r = if stop {
                    Ok(Vec::new())
                } else {
                    Err(end.task_error())
                };
                let _ = tx.send(r);
                return Ok(rx);
            }
            Link::Up { out, gen } => {
                let (out, gen) = (out.clone(), *gen);
                match send(&out, seq, &req) {
                    Ok(()) => {
                        st.waiting.insert(
                            seq,
                            Waiter {
                                tx,
                                sent_to: Some(gen),
                                unsent: None,
                                stop,
                            },
                        );
                        drop(st);
                        out.flush();
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
                return Ok(rx);
            }
            Link::Idle | Link::Dialing => {}
        }
        st.waiting.insert(
            seq,
            Waiter {
                tx,
                sent_to: None,
                unsent: Some(req),
                stop,
            },
        );
        if matches!(st.link, Link::Idle) {
            st.link = Link::Dialing;
            drop(st);
            self.start_dialing();
        }
        Ok(rx)
    }

    fn start_dialing(self: &Arc<Self>) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("mproc-actor-dial".into())
            .spawn(move || me.dial());
        if let Err(e) = spawned {
            let hint = crate::error::limit_hint(&e);
            self.fail_all(TaskError::Spawn {
                message: format!("cannot start a thread to reach the actor: {e}{hint}"),
            });
        }
    }

    /// Connects (again), learns the fate of calls sent to earlier
    /// instances, and sends what is queued.
    fn dial(self: Arc<Self>) {
        let mut attempts = 0;
        let (stream, hello) = loop {
            match connect(&self.addr) {
                Ok(c) => break c,
                Err(Dial::Gone) => return self.fail_all(TaskError::Shutdown),
                Err(Dial::NoSocket(e)) => {
                    let hint = crate::error::limit_hint(&e);
                    return self.fail_all(TaskError::Spawn {
                        message: format!("cannot open a connection to the actor: {e}{hint}"),
                    });
                }
                Err(Dial::Broken) if attempts < DIAL_ATTEMPTS => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(Dial::Broken) => return self.fail_all(TaskError::Shutdown),
            }
        };
        self.generation.store(hello.generation, Ordering::Release);
        let mut st = self.lock();
        // Calls sent to an instance that has ended fail with its exit; a
        // stop sent to it has done its work.
        let ended: Vec<u64> = st
            .waiting
            .iter()
            .filter(|(_, w)| w.sent_to.is_some())
            .map(|(s, _)| *s)
            .collect();
        for seq in ended {
            let Some(w) = st.waiting.remove(&seq) else {
                continue;
            };
            let gen = w.sent_to.unwrap_or(0) as usize;
            let exit = hello.history.get(gen).copied();
            let r = match (w.stop, exit) {
                (true, Some(_)) => Ok(Vec::new()),
                (_, Some(end)) => Err(end.task_error()),
                // The instance lives on but dropped the connection: the
                // call's fate is unknown.
                (_, None) => Err(TaskError::WorkerDied {
                    exit: ExitInfo {
                        code: None,
                        signal: None,
                    },
                }),
            };
            let _ = w.tx.send(r);
        }
        if !hello.live {
            let end = hello
                .history
                .last()
                .copied()
                .unwrap_or(Ended::Exited(ExitInfo {
                    code: None,
                    signal: None,
                }));
            st.link = Link::Dead(end);
            for (_, w) in std::mem::take(&mut st.waiting) {
                let r = if w.stop {
                    Ok(Vec::new())
                } else {
                    Err(end.task_error())
                };
                let _ = w.tx.send(r);
            }
            return;
        }
        let chan: Arc<dyn ByteStream> = Arc::new(UnixChannel::from_fd(stream.into()));
        let out = match Outbox::try_new(chan.clone(), DEFAULT_MAX_FRAME) {
            Ok(out) => out,
            Err(e) => {
                drop(st);
                chan.shutdown();
                let hint = crate::error::limit_hint(&e);
                return self.fail_all(TaskError::Spawn {
                    message: format!("cannot start a thread to write to the actor: {e}{hint}"),
                });
            }
        };
        let gen = hello.generation;
        let mut failed = Vec::new();
        for (seq, w) in st.waiting.iter_mut() {
            if let Some(req) = w.unsent.take() {
                match send(&out, *seq, &req) {
                    Ok(()) => w.sent_to = Some(gen),
                    Err(e) => failed.push((*seq, e)),
                }
            }
        }
        for (seq, e) in failed {
            if let Some(w) = st.waiting.remove(&seq) {
                let _ = w.tx.send(Err(e));
            }
        }
        st.link = Link::Up {
            out: out.clone(),
            gen,
        };
        drop(st);
        out.flush();
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("mproc-actor-read".into())
            .spawn(move || me.read_replies(chan, out));
        if let Err(e) = spawned {
            let hint = crate::error::limit_hint(&e);
            self.fail_all(TaskError::Spawn {
                message: format!("cannot start a thread to read the actor's replies: {e}{hint}"),
            });
        }
    }

    /// Resolves replies until the connection ends, then dials again if calls
    /// are still waiting.
    fn read_replies(self: Arc<Self>, chan: Arc<dyn ByteStream>, out: Arc<Outbox>) {
        let mut reader = FrameReader::new(DEFAULT_MAX_FRAME);
        while let Ok(frame) = reader.next_frame(&*chan) {
            let Ok(FromActor::Reply { seq, result }) = decode::<FromActor<'_>>(frame) else {
                break;
            };
            let w = self.lock().waiting.remove(&seq);
            if let Some(w) = w {
                let _ = w.tx.send(result.map(|b| b.0.to_vec()));
            }
        }
        out.close();
        chan.shutdown();
        let mut st = self.lock();
        let ours = matches!(&st.link, Link::Up { out: o, .. } if Arc::ptr_eq(o, &out));
        if !ours {
            return;
        }
        if st.waiting.is_empty() {
            st.link = Link::Idle;
        } else {
            st.link = Link::Dialing;
            drop(st);
            self.start_dialing();
        }
    }

    fn fail_all(&self, e: TaskError) {
        let mut st = self.lock();
        st.link = Link::Idle;
        for (_, w) in std::mem::take(&mut st.waiting) {
            let _ = w.tx.send(Err(e.clone()));
        }
    }
}

fn send(out: &Outbox, seq: u64, req: &Request) -> Result<(), TaskError> {
    let r = match req {
        Request::Call { method, args } => out.enqueue(&ToActor::Call {
            seq,
            method: *method,
            args: Bytes(args),
        }),
        Request::Stop => out.enqueue(&ToActor::Stop { seq }),
    };
    r.map_err(|e| e.into_task_error())
}

/// Why a dial failed.
enum Dial {
    /// Nobody listens: the actor's supervisor is gone.
    Gone,
    /// The connection broke before the hello; worth another try.
    Broken,
    /// No socket could be made here (the descriptor limit): not the
    /// actor's doing.
    NoSocket(std::io::Error),
}

/// A socket to an actor, over Unix on its host or TCP from another.
enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl std::io::Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Sock::Unix(s) => s.read(buf),
            Sock::Tcp(s) => s.read(buf),
        }
    }
}

impl std::io::Write for Sock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sock::Unix(s) => s.write(buf),
            Sock::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sock {
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> std::io::Result<()> {
        match self {
            Sock::Unix(s) => s.set_read_timeout(read).and(s.set_write_timeout(write)),
            Sock::Tcp(s) => s.set_read_timeout(read).and(s.set_write_timeout(write)),
        }
    }
}

impl From<Sock> for std::os::fd::OwnedFd {
    fn from(s: Sock) -> Self {
        match s {
            Sock::Unix(s) => s.into(),
            Sock::Tcp(s) => s.into(),
        }
    }
}

/// The driver's IP, in a node and its workers (for actor addresses that
/// name the driver by an unspecified IP).
fn driver_ip() -> Option<std::net::IpAddr> {
    std::env::var(crate::address::DRIVER_ENV).ok()?.parse().ok()
}

/// Opens a socket to the actor: its Unix name on its own host, else TCP.
fn open(addr: &ActorAddr) -> Result<Sock, Dial> {
    let gone = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
        )
    };
    let no_socket =
        |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    if addr.host == crate::address::host_tag() {
        let a = UnixAddr::from_abstract_name(addr.local.as_bytes()).map_err(|_| Dial::Gone)?;
        return match UnixStream::connect_addr(&a) {
            Ok(s) => Ok(Sock::Unix(s)),
            Err(e) if gone(&e) => Err(Dial::Gone),
            Err(e) if no_socket(&e) => Err(Dial::NoSocket(e)),
            Err(_) => Err(Dial::Broken),
        };
    }
    let Some(mut tcp) = addr.tcp else {
        // A local-only actor of another host: not reachable from here.
        return Err(Dial::Gone);
    };
    if tcp.ip().is_unspecified() {
        match driver_ip() {
            Some(ip) => tcp.set_ip(ip),
            None => return Err(Dial::Gone),
        }
    }
    match TcpStream::connect_timeout(&tcp, AUTH_DEADLINE) {
        Ok(s) => {
            let _ = s.set_nodelay(true);
            Ok(Sock::Tcp(s))
        }
        Err(e) if gone(&e) => Err(Dial::Gone),
        Err(e) if no_socket(&e) => Err(Dial::NoSocket(e)),
        Err(_) => Err(Dial::Broken),
    }
}

/// Connects, authenticates and reads the hello.
fn connect(addr: &ActorAddr) -> Result<(Sock, ActorHello), Dial> {
    let mut s = open(addr)?;
    s.set_timeouts(Some(DIAL_PATIENCE), Some(AUTH_DEADLINE))
        .map_err(|_| Dial::Broken)?;
    match auth::client(&mut s, &addr.key, auth::Purpose::Actor) {
        Ok(()) => {}
        // The key is part of the reference: a refusal means the address now
        // belongs to something else.
        Err(AuthError::Refused) | Err(AuthError::ServerUnproven) | Err(AuthError::NotMproc) => {
            return Err(Dial::Gone)
        }
        Err(_) => return Err(Dial::Broken),
    }
    let hello: ActorHello = read_msg(&mut s, 64 * 1024).map_err(|_: ReadError| Dial::Broken)?;
    s.set_timeouts(None, None).map_err(|_| Dial::Broken)?;
    Ok((s, hello))
}
