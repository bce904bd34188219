//! The client side of a Manager connection: where a server is
//! ([`Addr`]), the authenticated connections a process keeps to it
//! ([`Remote`]), and one request's round trip.
//!
//! A process keeps one [`Remote`] per (address, key), shared by every proxy
//! of that manager it holds, however the proxies reached it (a `Manager`
//! method, or deserialized from a task's arguments). A `Remote` keeps a few
//! idle connections: a request takes one (or connects and authenticates a
//! new one), so threads of one process never wait for each other's
//! requests, and a blocking `QueueProxy::get` holds only its own
//! connection. A forked child never uses its parent's connections (their
//! descriptors are not its own): it drops them unused and connects afresh.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixStream};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::protocol::auth::{self, AuthError, AUTH_DEADLINE};
use crate::protocol::manager::{frame, read_msg, ReadError, Reply, Request};
use crate::shared::bytemap::{ByteTable, TableKind};
use crate::sys::alive::Alive;
use crate::tls::{ClientStream, ClientTls, TlsError};
use mproc_transport::DEFAULT_MAX_FRAME;

/// A dict's or list's table mapped into this process, with the server's
/// liveness page: the local fast path (see `shared::bytemap`).
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) table: ByteTable,
    alive: Alive,
}

impl Attached {
    /// `Disconnected` once the server has ended, however it ended.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.alive.alive() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Disconnected,
                "the manager's server is gone",
            ))
        }
    }
}

/// Idle connections kept per manager and process.
const IDLE_KEPT: usize = 8;

/// Where a Manager server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Addr {
    /// An abstract Unix socket name on this host.
    Local(String),
    /// A TCP address.
    Tcp(SocketAddr),
    /// A TCP address served with TLS, and what to trust there.
    Tls(SocketAddr, ClientTls),
}

/// One connection to a server, authenticated.
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<ClientStream>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

impl Stream {
    fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t).and(s.set_write_timeout(t)),
            Stream::Tcp(s) => s.set_read_timeout(t).and(s.set_write_timeout(t)),
            Stream::Tls(s) => s.sock.set_read_timeout(t).and(s.sock.set_write_timeout(t)),
        }
    }
}

/// A manager as one process sees it: its address, its key and the idle
/// connections to it.
pub(crate) struct Remote {
    pub(crate) addr: Addr,
    key: Vec<u8>,
    /// The process the idle connections belong to, and the connections.
    idle: Mutex<(u32, Vec<Stream>)>,
}

impl std::fmt::Debug for Remote {
    // The key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

static REMOTES: Mutex<Vec<Weak<Remote>>> = Mutex::new(Vec::new());

/// Takes `m`, giving up after [`LOCK_PATIENCE`]: these locks are held for
/// a few instructions, so a lock that stays taken was inherited through
/// `fork` from a thread that does not exist here, and the caller goes on
/// without the cache.
fn lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    let end = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < end => {
                std::thread::yield_now()
            }
            Err(std::sync::TryLockError::WouldBlock) => return None,
        }
    }
}

const LOCK_PATIENCE: Duration = Duration::from_millis(200);

/// Errors of a connection that broke: the server is gone.
pub(crate) fn disconnected(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Disconnected, "the manager's server is gone", e)
}

impl Remote {
    /// This process's `Remote` for `addr` and `key`.
    pub(crate) fn get(addr: Addr, key: &[u8]) -> Arc<Remote> {
        let fresh = |addr, key: &[u8]| {
            Arc::new(Remote {
                addr,
                key: key.to_vec(),
                idle: Mutex::new((std::process::id(), Vec::new())),
            })
        };
        let Some(mut all) = lock(&REMOTES) else {
            return fresh(addr, key);
        };
        all.retain(|w| w.strong_count() > 0);
        if let Some(r) = all
            .iter()
            .filter_map(Weak::upgrade)
            .find(|r| r.addr == addr && r.key == key)
        {
            return r;
        }
        let r = fresh(addr, key);
        all.push(Arc::downgrade(&r));
        r
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    /// A new authenticated connection.
    pub(crate) fn connect(&self) -> Result<Stream, Error> {
        let s = match &self.addr {
            Addr::Local(name) => {
                let a = UnixAddr::from_abstract_name(name.as_bytes()).map_err(disconnected)?;
                Stream::Unix(UnixStream::connect_addr(&a).map_err(disconnected)?)
            }
            Addr::Tcp(a) => Stream::Tcp(tcp(a)?),
            Addr::Tls(a, tls) => {
                let s = tcp(a)?;
                s.set_read_timeout(Some(AUTH_DEADLINE))?;
                s.set_write_timeout(Some(AUTH_DEADLINE))?;
                Stream::Tls(Box::new(tls.connect(s).map_err(tls_error)?))
            }
        };
        s.set_timeout(Some(AUTH_DEADLINE))?;
        let mut s = s;
        auth::client(&mut s, &self.key, auth::Purpose::Manager).map_err(auth_error)?;
        s.set_timeout(None)?;
        Ok(s)
    }

    fn take(&self) -> Result<Stream, Error> {
        let me = std::process::id();
        if let Some(mut idle) = lock(&self.idle) {
            if idle.0 != me {
                // Inherited through fork: these descriptors are not ours.
                for s in std::mem::take(&mut idle.1) {
                    std::mem::forget(s);
                }
                idle.0 = me;
            }
            if let Some(s) = idle.1.pop() {
                return Ok(s);
            }
        }
        self.connect()
    }

    /// Maps the table of object `id` from a local server; `None` for a
    /// remote server, or when the server refuses (the caller then sends
    /// requests).
    pub(crate) fn attach(&self, id: u64, kind: TableKind) -> Option<Arc<Attached>> {
        if !matches!(self.addr, Addr::Local(_)) {
            return None;
        }
        let s = self.take().ok()?;
        let Stream::Unix(u) = &s else { return None };
        let bytes = frame(&Request::Attach { id }, 64).ok()?;
        (&*u).write_all(&bytes).ok()?;
        let (byte, fds) = crate::sys::recv_byte_fds(u).ok()??;
        self.give_back(s);
        let [table, alive] = <[_; 2]>::try_from(fds).ok()?;
        if byte != 1 {
            return None;
        }
        Some(Arc::new(Attached {
            table: ByteTable::open(&table, kind).ok()?,
            alive: Alive::open(&alive).ok()?,
        }))
    }

    fn give_back(&self, s: Stream) {
        if let Some(mut idle) = lock(&self.idle) {
            if idle.0 == std::process::id() && idle.1.len() < IDLE_KEPT {
                idle.1.push(s);
            }
        }
    }

    /// Sends `req` and waits for its reply. A `Failed` reply becomes an
    /// error of kind `Protocol`; a lost connection one of kind
    /// `Disconnected`.
    pub(crate) fn call(&self, req: &Request) -> Result<Reply, Error> {
        let bytes = frame(req, DEFAULT_MAX_FRAME)
            .map_err(|e| Error::with_source(ErrorKind::Protocol, "cannot send the request", e))?;
        let mut s = self.take()?;
        s.write_all(&bytes)
            .and_then(|()| s.flush())
            .map_err(disconnected)?;
        let reply: Reply = read_msg(&mut s, DEFAULT_MAX_FRAME).map_err(|e| match e {
            ReadError::Io(e) => disconnected(e),
            e => Error::with_source(ErrorKind::Protocol, "bad reply from the manager", e),
        })?;
        self.give_back(s);
        match reply {
            Reply::Failed(m) => Err(Error::new(ErrorKind::Protocol, m)),
            r => Ok(r),
        }
    }
}

fn tcp(a: &SocketAddr) -> Result<TcpStream, Error> {
    let s = TcpStream::connect_timeout(a, AUTH_DEADLINE).map_err(disconnected)?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// A TLS failure: the server's certificate is not trusted (`Auth`), or the
/// connection broke (`Disconnected`).
fn tls_error(e: TlsError) -> Error {
    match e {
        TlsError::Io(io) if io.kind() != std::io::ErrorKind::InvalidData => disconnected(io),
        e => Error::transparent(ErrorKind::Auth, e),
    }
}

fn auth_error(e: AuthError) -> Error {
    match e {
        AuthError::Read(ReadError::Io(io)) => disconnected(io),
        AuthError::Write(io) => disconnected(io),
        e => Error::transparent(ErrorKind::Auth, e),
    }
}
