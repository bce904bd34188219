//! [`Manager`]: a server process holding dicts, lists, queues and values
//! that any process reaches through typed proxies (API.md §7), like Python's
//! `multiprocessing.Manager` and `BaseManager` remote managers.
//!
//! This module is the parent's and the clients' side: starting the server
//! (`Manager::start`/`serve`, through `spawn::start_process`, so every start
//! method works and the server dies with the program), connecting to one
//! (`Manager::connect`), and the proxies (`proxy.rs`) over authenticated
//! connections (`client.rs`). The server itself is `child/manager.rs`; the
//! messages are `protocol/manager.rs` and `protocol/auth.rs`.
//!
//! # Why the server is safe to share
//! Every connection, local or TCP, must pass a mutual HMAC-SHA256
//! challenge–response before a single request is read. A local manager gets
//! a random 32-byte key; its proxies carry it, so a proxy passed to a task
//! authenticates from the worker too. `docs/manager.md` describes the
//! design, its costs and its limits.

mod client;
mod proxy;

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use self::proxy::{DictProxy, ListProxy, QueueProxy, ValueProxy};

use self::client::{Addr, Remote};
use self::proxy::Handle;
use crate::children::ChildProc;
use crate::error::{Error, ErrorKind};
use crate::protocol::manager::{
    read_msg, ManagerReady, ObjKind, Reply, Request, StartManager, MODE_MANAGER,
};
use crate::protocol::{ToParent, MAGIC, PROTOCOL_VERSION};
use crate::spawn::{get_start_method, StartMethod};
use crate::tls::{ClientTls, ServerTls};

/// How long a starting server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after its `Manager` let it go.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A Manager: a server process that holds shared dicts, lists, queues and
/// values, and hands out proxies to them — `mproc::Manager`, like Python's
/// `multiprocessing.Manager()`.
///
/// [`start`](Self::start) starts a private server for this program;
/// [`serve`](Self::serve) one that also listens on TCP for other programs
/// and hosts, which reach it with [`connect`](Self::connect) and the same
/// key. The server of `start` or `serve` ends when its `Manager` is shut
/// down or dropped, and when the program dies in any way (even SIGKILL).
/// Proxies outlive it harmlessly: their calls then fail with
/// [`ErrorKind::Disconnected`].
///
/// Objects live until the server ends (Python frees an object when its last
/// proxy is gone; mproc keeps it, since a proxy may be in flight in a task).
///
/// # Examples
/// ```no_run
/// # extern crate mproc_core as mproc;
/// use mproc::{DictProxy, ListProxy, Manager};
///
/// let manager = Manager::start()?;
/// let d: DictProxy<u32, u32> = manager.dict()?;
/// let l: ListProxy<u32> = manager.list()?;
/// let old: Option<u32> = d.insert(1, 10)?;
/// assert_eq!(old, None);
/// assert_eq!(d.get(&1)?, Some(10));
/// l.push(3)?;
/// assert_eq!(l.to_vec()?, vec![3]);
/// manager.shutdown()?;
/// # Ok::<(), mproc::Error>(())
/// ```
#[derive(Debug)]
pub struct Manager {
    remote: Arc<Remote>,
    tcp: Option<SocketAddr>,
    server: Mutex<Option<Server>>,
}

/// The server process of a `Manager` that started one.
#[derive(Debug)]
struct Server {
    child: ChildProc,
    /// Its end of stream tells the server to exit.
    boot: UnixStream,
}

fn spawn_err(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Spawn, "cannot start the manager's server", e)
}

impl Manager {
    /// Starts a server process for this program, with the default start
    /// method, and a random key.
    ///
    /// # Errors
    /// [`ErrorKind::Spawn`] when the process cannot be started.
    pub fn start() -> Result<Manager, Error> {
        Self::start_with(get_start_method())
    }

    /// [`start`](Self::start) with a given start method.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(method: StartMethod) -> Result<Manager, Error> {
        let mut key = Vec::with_capacity(32);
        for _ in 0..4 {
            key.extend_from_slice(&crate::sys::shm::random_u64().to_le_bytes());
        }
        Self::launch(method, key, None, None)
    }

    /// Starts a server process that also listens on TCP at `addr` (port 0
    /// picks a free port: see [`address`](Self::address)); clients connect
    /// with [`connect`](Self::connect) and the same `authkey`.
    ///
    /// # Errors
    /// [`ErrorKind::Auth`] for an empty key; [`ErrorKind::Io`] when `addr`
    /// does not resolve; [`ErrorKind::Spawn`] when the server cannot start
    /// or bind.
    pub fn serve(addr: impl ToSocketAddrs, authkey: &[u8]) -> Result<Manager, Error> {
        let addr = resolve(addr, authkey)?;
        Self::launch(get_start_method(), authkey.to_vec(), Some(addr), None)
    }

    /// [`serve`](Self::serve) with TLS on the TCP listener: clients must
    /// use [`connect_tls`](Self::connect_tls). The key's handshake runs
    /// inside the TLS session.
    ///
    /// # Errors
    /// As [`serve`](Self::serve); [`ErrorKind::Spawn`] also when the
    /// certificate or key is refused.
    pub fn serve_tls(
        addr: impl ToSocketAddrs,
        authkey: &[u8],
        tls: ServerTls,
    ) -> Result<Manager, Error> {
        let addr = resolve(addr, authkey)?;
        Self::launch(get_start_method(), authkey.to_vec(), Some(addr), Some(tls))
    }

    /// Connects to a manager served at `addr` by another program (or
    /// host). Checks the key at once: a wrong one gives an error of kind
    /// [`ErrorKind::Auth`].
    ///
    /// # Errors
    /// [`ErrorKind::Auth`] for a wrong or empty key;
    /// [`ErrorKind::Disconnected`] when nothing serves at `addr`.
    pub fn connect(addr: impl ToSocketAddrs, authkey: &[u8]) -> Result<Manager, Error> {
        let addr = resolve(addr, authkey)?;
        Self::connect_to(Addr::Tcp(addr), addr, authkey)
    }

    /// [`connect`](Self::connect) to a manager served with
    /// [`serve_tls`](Self::serve_tls), trusting what `tls` names.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); [`ErrorKind::Auth`] also when the
    /// server's certificate is not trusted.
    pub fn connect_tls(
        addr: impl ToSocketAddrs,
        authkey: &[u8],
        tls: ClientTls,
    ) -> Result<Manager, Error> {
        let addr = resolve(addr, authkey)?;
        Self::connect_to(Addr::Tls(addr, tls), addr, authkey)
    }

    fn connect_to(to: Addr, addr: SocketAddr, authkey: &[u8]) -> Result<Manager, Error> {
        let remote = Remote::get(to, authkey);
        // Authenticate now, so a wrong key is reported here.
        drop(remote.connect()?);
        Ok(Manager {
            remote,
            tcp: Some(addr),
            server: Mutex::new(None),
        })
    }

    fn launch(
        method: StartMethod,
        authkey: Vec<u8>,
        tcp: Option<SocketAddr>,
        tls: Option<ServerTls>,
    ) -> Result<Manager, Error> {
        static N: AtomicU64 = AtomicU64::new(0);
        let msg = StartManager {
            version: PROTOCOL_VERSION,
            fingerprint: crate::registry::fingerprint(),
            // Not a long-lived helper: no `mproc-` prefix (API §9).
            name: format!("Manager-{}", N.fetch_add(1, Ordering::Relaxed) + 1),
            authkey: authkey.clone(),
            tcp: tcp.map(|a| a.to_string()),
            tls,
        };
        let mut buf = vec![MODE_MANAGER];
        crate::protocol::encode_frame(&mut buf, &msg, 64 * 1024 * 1024).map_err(spawn_err)?;
        drop(msg);

        crate::children::reap_finished();
        let (ours, theirs) = UnixStream::pair().map_err(spawn_err)?;
        let theirs = theirs.into();
        let child =
            crate::spawn::run_on_spawner(move || crate::spawn::start_process(method, theirs))
                .and_then(|r| r)
                .map_err(spawn_err)?;
        let server = Server { child, boot: ours };
        let ready = server.handshake(&buf);
        let ready = match ready {
            Ok(r) => r,
            Err(e) => {
                server.stop();
                return Err(e);
            }
        };
        let (unix, tcp) = match ready {
            ManagerReady::Listening { unix, tcp } => (unix, tcp),
            ManagerReady::Failed { reason } => {
                server.stop();
                return Err(Error::new(
                    ErrorKind::Spawn,
                    format!("the manager's server cannot start: {reason}"),
                ));
            }
        };
        Ok(Manager {
            remote: Remote::get(Addr::Local(unix), &authkey),
            tcp,
            server: Mutex::new(Some(server)),
        })
    }

    /// The TCP address of a served or connected manager (the bound port
    /// after `serve` on port 0).
    ///
    /// # Panics
    /// When the manager was made by [`start`](Self::start), which has no
    /// TCP address.
    pub fn address(&self) -> SocketAddr {
        self.tcp
            .expect("Manager::address: this manager does not listen on TCP (use Manager::serve)")
    }

    /// The pid of the server process, if this `Manager` started it.
    pub fn server_pid(&self) -> Option<u32> {
        self.lock_server().as_ref().map(|s| s.child.pid())
    }

    fn lock_server(&self) -> std::sync::MutexGuard<'_, Option<Server>> {
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the server (if this `Manager` started it) and waits for it to
    /// exit; proxies then fail with [`ErrorKind::Disconnected`]. Called
    /// again, or on a connected manager, it does nothing.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for a remote shutdown.
    pub fn shutdown(&self) -> Result<(), Error> {
        if let Some(s) = self.lock_server().take() {
            s.stop();
        }
        Ok(())
    }

    fn create(
        &self,
        kind: ObjKind,
        name: Option<&str>,
        type_tag: &str,
        init: Option<Vec<u8>>,
    ) -> Result<Handle, Error> {
        match self.remote.call(&Request::Create {
            kind,
            name: name.map(str::to_string),
            type_tag: type_tag.to_string(),
            init,
        })? {
            Reply::Created { id } => Ok(Handle::new(self.remote.clone(), id)),
            r => Err(Error::new(
                ErrorKind::Protocol,
                format!("unexpected reply from the manager: {r:?}"),
            )),
        }
    }

    /// A new, empty dict on the server.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when the server is gone.
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>, Error>
    where
        K: Serialize + DeserializeOwned + Eq + std::hash::Hash + Send,
        V: Serialize + DeserializeOwned + Send,
    {
        let tag = std::any::type_name::<(K, V)>();
        self.create(ObjKind::Dict, None, tag, None)
            .map(DictProxy::from_handle)
    }

    /// The dict named `name`, created empty if the server has none: how
    /// clients of a served manager find the same object. The same name with
    /// other types is an error of kind [`ErrorKind::Protocol`].
    ///
    /// # Errors
    /// As [`dict`](Self::dict).
    pub fn dict_named<K, V>(&self, name: &str) -> Result<DictProxy<K, V>, Error>
    where
        K: Serialize + DeserializeOwned + Eq + std::hash::Hash + Send,
        V: Serialize + DeserializeOwned + Send,
    {
        let tag = std::any::type_name::<(K, V)>();
        self.create(ObjKind::Dict, Some(name), tag, None)
            .map(DictProxy::from_handle)
    }

    /// A new, empty list on the server.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when the server is gone.
    pub fn list<T: Serialize + DeserializeOwned + Send>(&self) -> Result<ListProxy<T>, Error> {
        self.create(ObjKind::List, None, std::any::type_name::<T>(), None)
            .map(ListProxy::from_handle)
    }

    /// The list named `name`, created empty if absent (see
    /// [`dict_named`](Self::dict_named)).
    ///
    /// # Errors
    /// As [`list`](Self::list).
    pub fn list_named<T: Serialize + DeserializeOwned + Send>(
        &self,
        name: &str,
    ) -> Result<ListProxy<T>, Error> {
        self.create(ObjKind::List, Some(name), std::any::type_name::<T>(), None)
            .map(ListProxy::from_handle)
    }

    /// A new, empty, unbounded queue on the server.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when the server is gone.
    pub fn queue<T: Serialize + DeserializeOwned + Send>(&self) -> Result<QueueProxy<T>, Error> {
        self.create(ObjKind::Queue, None, std::any::type_name::<T>(), None)
            .map(QueueProxy::from_handle)
    }

    /// The queue named `name`, created empty if absent (see
    /// [`dict_named`](Self::dict_named)).
    ///
    /// # Errors
    /// As [`queue`](Self::queue).
    pub fn queue_named<T: Serialize + DeserializeOwned + Send>(
        &self,
        name: &str,
    ) -> Result<QueueProxy<T>, Error> {
        self.create(ObjKind::Queue, Some(name), std::any::type_name::<T>(), None)
            .map(QueueProxy::from_handle)
    }

    /// A new value on the server, first set to `v`.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when the server is gone;
    /// [`ErrorKind::Protocol`] when `v` cannot be encoded.
    pub fn value<T: Serialize + DeserializeOwned + Send>(
        &self,
        v: T,
    ) -> Result<ValueProxy<T>, Error> {
        let init = postcard::to_stdvec(&v)
            .map_err(|e| Error::with_source(ErrorKind::Protocol, "cannot encode the value", e))?;
        self.create(ObjKind::Value, None, std::any::type_name::<T>(), Some(init))
            .map(ValueProxy::from_handle)
    }
}

/// The first address of `addr`, after checking that `authkey` is not empty.
fn resolve(addr: impl ToSocketAddrs, authkey: &[u8]) -> Result<SocketAddr, Error> {
    if authkey.is_empty() {
        return Err(Error::new(
            ErrorKind::Auth,
            "the authentication key is empty",
        ));
    }
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| Error::new(ErrorKind::Io, "the address resolves to nothing"))
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(s) = self.lock_server().take() {
            s.stop();
        }
    }
}

impl Server {
    /// Sends the start message and reads the child's hello and the
    /// server's answer, within [`START_TIMEOUT`].
    fn handshake(&self, start: &[u8]) -> Result<ManagerReady, Error> {
        use std::io::Write;
        let mut s = &self.boot;
        s.write_all(start).map_err(spawn_err)?;
        self.boot
            .set_read_timeout(Some(START_TIMEOUT))
            .map_err(spawn_err)?;
        let hello = crate::protocol::manager::read_frame(&mut s, 4096).map_err(spawn_err)?;
        match crate::protocol::decode::<ToParent<'_>>(&hello) {
            Ok(ToParent::Hello {
                magic,
                version,
                fingerprint,
                ..
            }) if magic == MAGIC
                && version == PROTOCOL_VERSION
                && fingerprint == crate::registry::fingerprint() => {}
            _ => {
                return Err(Error::new(
                    ErrorKind::Spawn,
                    "the manager's server is another build of the program",
                ))
            }
        }
        let ready: ManagerReady = read_msg(&mut s, 4096).map_err(spawn_err)?;
        let _ = self.boot.set_read_timeout(None);
        Ok(ready)
    }

    /// Lets the server go and reaps it; kills it if it does not exit in
    /// time.
    fn stop(self) {
        let _ = self.boot.shutdown(std::net::Shutdown::Both);
        if self.child.wait_timeout(Some(STOP_GRACE)).is_none() {
            let _ = self.child.signal(Signal::SIGKILL);
            self.child.wait_timeout(None);
        }
        self.child.try_wait();
    }
}
