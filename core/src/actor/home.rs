//! The home of an actor whose instance runs on a node: the address its
//! references hold, kept by the driver for the actor's whole life.
//!
//! A node's instance listens on the node, and the node may be lost; an
//! actor placed there must still have one address that survives a restart
//! on another node. So the driver keeps it: a `Home` listens on an abstract
//! Unix socket (callers on the driver's host) and on TCP (callers
//! anywhere), and relays each caller's connection to the instance
//! currently running. Calls therefore take two hops; in exchange every
//! reference, wherever it was sent, follows the actor to its new node, and
//! learns how each earlier instance ended (its exit, or `NodeLost`) from
//! the hello the home sends — the same conversation a local actor holds
//! (see `protocol::actor`), so the caller's side is the same code.
//!
//! Restarts are the home's: the node runs each instance with none, reports
//! its end, and the home starts the next one (on the same node after a
//! crash, on another member after a loss) while `max_restarts` allows.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::address::{NodeId, WorkerId};
use crate::cluster::{ActorWatch, NodeConn, Shared};
use crate::error::{Error, ExitInfo};
use crate::executor::Attachment;
use crate::protocol::actor::{ActorHello, Ended};
use crate::protocol::auth::{self, Purpose, AUTH_DEADLINE};
use crate::protocol::manager::{frame, read_msg};

/// How long a caller waits for an instance while the actor restarts.
const RESTART_PATIENCE: Duration = Duration::from_secs(120);

/// What the home needs to start instances.
pub(crate) struct HomeSpec {
    pub(crate) id: WorkerId,
    pub(crate) type_name: &'static str,
    pub(crate) args: Vec<u8>,
    pub(crate) key: Vec<u8>,
    pub(crate) max_restarts: u32,
}

/// One node actor's address and supervisor, on the driver.
pub(crate) struct Home {
    spec: HomeSpec,
    me: Weak<Home>,
    cluster: Arc<Shared>,
    unix: UnixListener,
    tcp: TcpListener,
    pub(crate) restarts: Arc<AtomicU32>,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The running instance: its node and TCP address.
    current: Option<(Arc<NodeConn>, SocketAddr)>,
    history: Vec<Ended>,
    /// Gone for good.
    dead: bool,
    closing: bool,
    /// Relayed connections, shut when their instance ends.
    relays: Vec<Relay>,
}

/// The two sockets of one relayed connection.
struct Relay {
    id: u64,
    caller: Caller,
    upstream: TcpStream,
}

impl Relay {
    fn shut(&self) {
        self.caller.shut();
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

/// A caller's socket.
enum Caller {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Caller {
    fn shut(&self) {
        let _ = match self {
            Caller::Unix(s) => s.shutdown(Shutdown::Both),
            Caller::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
    fn try_clone(&self) -> std::io::Result<Caller> {
        Ok(match self {
            Caller::Unix(s) => Caller::Unix(s.try_clone()?),
            Caller::Tcp(s) => Caller::Tcp(s.try_clone()?),
        })
    }
    fn set_timeouts(&self, t: Option<Duration>) {
        let _ = match self {
            Caller::Unix(s) => s.set_read_timeout(t).and(s.set_write_timeout(t)),
            Caller::Tcp(s) => s.set_read_timeout(t).and(s.set_write_timeout(t)),
        };
    }
}

impl auth::Bounded for Caller {
    fn bound_reads(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Caller::Unix(s) => s.set_read_timeout(t),
            Caller::Tcp(s) => s.set_read_timeout(t),
        }
    }
}

impl Read for Caller {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Caller::Unix(s) => s.read(buf),
            Caller::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Caller {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Caller::Unix(s) => s.write(buf),
            Caller::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for Home {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Home")
            .field("type", &self.spec.type_name)
            .field("id", &self.spec.id)
            .finish_non_exhaustive()
    }
}

impl Home {
    /// Opens the home's addresses, starts the first instance on `node`, and
    /// starts serving callers.
    pub(crate) fn start(
        spec: HomeSpec,
        cluster: Arc<Shared>,
        node: Arc<NodeConn>,
        unix: UnixListener,
    ) -> Result<(Arc<Home>, SocketAddr), Error> {
        let tcp = TcpListener::bind((cluster.addr().ip(), 0)).map_err(Error::from)?;
        let tcp_addr = tcp.local_addr().map_err(Error::from)?;
        let home = Arc::new_cyclic(|me| Home {
            spec,
            me: me.clone(),
            cluster,
            unix,
            tcp,
            restarts: Arc::new(AtomicU32::new(0)),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let addr = home.start_on(&node, Vec::new())?;
        home.lock().current = Some((node.clone(), addr));
        home.cluster.count_actor(node.info.id(), true);
        let unix = home.unix.try_clone().map_err(Error::from)?;
        let tcp = home.tcp.try_clone().map_err(Error::from)?;
        let weak = home.me.clone();
        spawn("mproc-actor-home", move || {
            for c in unix.incoming() {
                match c {
                    Ok(c) => serve_caller(&weak, Caller::Unix(c)),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let weak = home.me.clone();
        spawn("mproc-actor-home", move || {
            for c in tcp.incoming() {
                match c {
                    Ok(c) => serve_caller(&weak, Caller::Tcp(c)),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok((home, tcp_addr))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_on(&self, node: &Arc<NodeConn>, history: Vec<Ended>) -> Result<SocketAddr, Error> {
        let watch: Weak<dyn ActorWatch> = self.me.clone();
        node.spawn_actor(
            &self.spec.id,
            self.spec.type_name,
            &self.spec.args,
            &self.spec.key,
            history,
            watch,
        )
    }

    /// Starts the next instance after one ended, while restarts remain.
    fn restart(&self, lost: Option<NodeId>, last_node: NodeId) {
        loop {
            let done = self.restarts.load(Ordering::Acquire);
            if done >= self.spec.max_restarts || self.lock().closing {
                break;
            }
            self.restarts.store(done + 1, Ordering::Release);
            // After a crash the same node; after a loss the member with the
            // fewest actors among the nodes left.
            let target = match lost {
                None => self.cluster.node(last_node),
                Some(l) => self
                    .cluster
                    .pick_actor_home(Some(l), true)
                    .and_then(|n| self.cluster.node(n)),
            };
            let history = self.lock().history.clone();
            let started = match &target {
                Some(node) => self.start_on(node, history).map(|a| (node.clone(), a)),
                None => Err(Error::new(
                    crate::error::ErrorKind::Spawn,
                    "no node is left to restart the actor on",
                )),
            };
            match started {
                Ok((node, addr)) => {
                    self.cluster.count_actor(node.info.id(), true);
                    self.lock().current = Some((node, addr));
                    self.changed.notify_all();
                    return;
                }
                Err(e) => {
                    tracing::warn!(id = %self.spec.id, "actor restart failed: {e}");
                    self.lock().history.push(Ended::Exited(ExitInfo {
                        code: None,
                        signal: None,
                    }));
                }
            }
        }
        self.lock().dead = true;
        self.changed.notify_all();
    }

    /// Waits for an instance to relay to; `None` when the actor is gone
    /// for good (or the wait ran out).
    fn instance(&self) -> (Option<(Arc<NodeConn>, SocketAddr)>, ActorHello) {
        let end = Instant::now() + RESTART_PATIENCE;
        let mut st = self.lock();
        loop {
            let hello = ActorHello {
                generation: u32::try_from(st.history.len()).unwrap_or(u32::MAX),
                history: st.history.clone(),
                live: !(st.dead || st.closing),
            };
            if st.current.is_some() || !hello.live {
                return (st.current.clone(), hello);
            }
            let now = Instant::now();
            if now >= end {
                return (None, hello);
            }
            st = self
                .changed
                .wait_timeout(st, end - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl ActorWatch for Home {
    fn ended(&self, ended: Ended, stopped: bool) {
        let (node, relays) = {
            let mut st = self.lock();
            let node = st.current.take().map(|(n, _)| n.info.id());
            st.history.push(ended);
            (node, std::mem::take(&mut st.relays))
        };
        for r in &relays {
            r.shut();
        }
        if let Some(n) = node {
            self.cluster.count_actor(n, false);
        }
        if !stopped {
            if let Ended::Exited(exit) = ended {
                tracing::warn!(actor = self.spec.type_name, id = %self.spec.id, "actor process died ({exit})");
            }
        }
        let Some(node) = node else { return };
        if stopped {
            self.lock().dead = true;
            self.changed.notify_all();
            return;
        }
        let lost = match ended {
            Ended::Lost(n) => Some(n),
            Ended::Exited(_) => None,
        };
        let me = self.me.clone();
        spawn("mproc-actor-home", move || {
            if let Some(home) = me.upgrade() {
                home.restart(lost, node);
            }
        });
    }
}

impl Attachment for Home {
    fn shutdown(&self) {
        let (current, relays) = {
            let mut st = self.lock();
            st.closing = true;
            (st.current.take(), std::mem::take(&mut st.relays))
        };
        self.changed.notify_all();
        if let Some((node, _)) = current {
            node.stop_actor(&self.spec.id);
            self.cluster.count_actor(node.info.id(), false);
        }
        for r in &relays {
            r.shut();
        }
        for fd in [self.unix.as_raw_fd(), self.tcp.as_raw_fd()] {
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .is_err()
    {
        tracing::error!("cannot start a thread for an actor's home");
    }
}

/// One caller: the key's handshake, then the hello, then its bytes relayed
/// to the instance and back until either side ends.
fn serve_caller(home: &Weak<Home>, caller: Caller) {
    let home = home.clone();
    spawn("mproc-actor-relay", move || {
        let Some(h) = home.upgrade() else { return };
        let mut caller = caller;
        caller.set_timeouts(Some(AUTH_DEADLINE));
        if auth::server_within(&mut caller, &h.spec.key, Purpose::Actor, AUTH_DEADLINE).is_err() {
            return;
        }
        caller.set_timeouts(Some(RESTART_PATIENCE));
        let (current, hello) = h.instance();
        let upstream = current.and_then(|(_, addr)| dial(addr, &h.spec.key));
        let hello = match (&upstream, hello.live) {
            (Some(_), _) | (None, false) => hello,
            // The instance is ending: let the caller dial again.
            (None, true) => return,
        };
        let Ok(bytes) = frame(&hello, 64 * 1024) else {
            return;
        };
        if caller.write_all(&bytes).is_err() {
            return;
        }
        let Some(upstream) = upstream else { return };
        caller.set_timeouts(None);
        let (Ok(c2), Ok(u2)) = (caller.try_clone(), upstream.try_clone()) else {
            return;
        };
        static RELAY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let relay = RELAY.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = h.lock();
            if st.current.is_none() {
                return;
            }
            st.relays.push(Relay {
                id: relay,
                caller: c2,
                upstream: u2,
            });
        }
        drop(h);
        let (Ok(mut c_in), Ok(mut u_out)) = (caller.try_clone(), upstream.try_clone()) else {
            return;
        };
        let up = std::thread::Builder::new()
            .name("mproc-actor-relay".into())
            .spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut u_out);
                let _ = u_out.shutdown(Shutdown::Both);
            });
        let (mut u_in, mut c_out) = (upstream, caller);
        let _ = std::io::copy(&mut u_in, &mut c_out);
        c_out.shut();
        let _ = u_in.shutdown(Shutdown::Both);
        if let Ok(t) = up {
            let _ = t.join();
        }
        if let Some(h) = home.upgrade() {
            h.lock().relays.retain(|r| r.id != relay);
        }
    });
}

/// Connects to an instance, authenticates, and reads (and drops) its own
/// hello: the home speaks for the actor.
fn dial(addr: SocketAddr, key: &[u8]) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, AUTH_DEADLINE).ok()?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(AUTH_DEADLINE)).ok()?;
    s.set_write_timeout(Some(AUTH_DEADLINE)).ok()?;
    auth::client(&mut s, key, Purpose::Actor).ok()?;
    let _: ActorHello = read_msg(&mut s, 64 * 1024).ok()?;
    s.set_read_timeout(None).ok()?;
    s.set_write_timeout(None).ok()?;
    Some(s)
}
