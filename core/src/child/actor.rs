//! Actor mode in the child: one instance of an `#[mproc::actor]` type,
//! serving calls from any process that holds its reference.
//!
//! The process boots as every child does (it dies with the program through
//! `PR_SET_PDEATHSIG`), receives its listening socket and a `StartActor`
//! frame on the boot socket (see `protocol::actor`), builds the instance
//! with the type's constructor and answers `Ready`.
//!
//! # Threads
//! * **The actor thread** (the process's main thread) owns the instance.
//!   It waits in `poll` on every caller's connection, the boot socket and a
//!   wake-up pipe, and runs the requests it reads one at a time: a method
//!   never runs concurrently with another, and each caller's calls run in
//!   the order it sent them, since a caller's calls share one connection. A
//!   sync method runs right there; an `async` one is driven to completion on
//!   the process's runtime before the next call starts. Replies are queued
//!   per connection and flushed once everything readable has run, so a
//!   burst of pipelined calls costs a few writes, not one each, and a call
//!   costs one wake-up of this thread, with no hand-off between threads.
//!   The end of the boot socket (the supervisor stopped the actor, or the
//!   program died) ends the process after the call in progress. A
//!   malformed or oversized frame closes that caller's connection only.
//! * **The acceptors** take connections from the listening sockets; each
//!   connection gets a short-lived thread for the key's handshake (bounded
//!   in size and time) and the hello, then goes to the actor thread.

use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use mproc_transport::{ByteStream, FrameReader, UnixChannel};

use super::ChildError;
use crate::address::WorkerId;
use crate::children::exit_child;
use crate::outbox::Outbox;
use crate::protocol::actor::{ActorHello, FromActor, StartActor, ToActor};
use crate::protocol::auth::{self, AUTH_DEADLINE};
use crate::protocol::manager::frame;
use crate::protocol::{decode, Bytes, ToParent, PROTOCOL_VERSION};
use crate::registry::actors::{self, ActorEntry, ActorObject};

/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 1024;

/// In the child, after the start byte: build the instance and serve until
/// told to stop. Returns the exit code.
pub(crate) fn run_actor(
    chan: Arc<UnixChannel>,
    listener: OwnedFd,
    tcp: Option<OwnedFd>,
) -> Result<i32, ChildError> {
    let mut reader = FrameReader::new(64 * 1024 * 1024);
    let msg: StartActor = {
        let bytes = reader.next_frame(&*chan).map_err(ChildError::Handshake)?;
        decode(bytes).map_err(ChildError::Malformed)?
    };
    if msg.version != PROTOCOL_VERSION || msg.fingerprint != crate::registry::fingerprint() {
        return Err(ChildError::OtherBuild);
    }
    crate::sys::set_thread_name(&msg.name);
    crate::sys::set_process_name(&msg.name);
    crate::identity::set_worker_identity(msg.name.clone(), msg.parent_pid);
    crate::address::set_current_node(msg.id.node());
    let max_frame = usize::try_from(msg.max_frame).unwrap_or(usize::MAX);
    let boot: Arc<dyn ByteStream> = chan.clone();
    let boot_out = Outbox::try_new(boot.clone(), max_frame).map_err(ChildError::Thread)?;
    crate::trace::install_forwarder(boot_out.clone(), msg.log_level);
    // A panic in the constructor or a method is the caller's error, as a
    // task's is: reported, not printed.
    super::panics::install_panic_hook(boot_out.clone());

    let entry = actors::lookup(&msg.type_name);
    let built = match entry {
        Some(e) => (e.construct)(&msg.args),
        None => Err(crate::error::TaskError::UnknownTask {
            name: msg.type_name.clone(),
        }),
    };
    let (entry, mut actor) = match (entry, built) {
        (Some(e), Ok(a)) => (e, a),
        (_, Err(e)) => {
            let _ = boot_out.send(&ToParent::Ready {
                init_error: Some(e.to_string()),
            });
            boot_out.drain();
            return Ok(1);
        }
        (None, Ok(_)) => unreachable!("an instance without a type"),
    };

    let (tx, rx) = mpsc::channel();
    let (wake_r, wake_w) = nix::unistd::pipe2(
        nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK,
    )
    .map_err(|e| ChildError::Transport {
        what: "wake-up pipe",
        cause: e.into(),
    })?;
    let hello = ActorHello {
        generation: u32::try_from(msg.history.len()).unwrap_or(u32::MAX),
        history: msg.history.clone(),
        live: true,
    };
    let server = Arc::new(Acceptor {
        key: msg.key,
        hello,
        max_frame,
        live: Arc::new(AtomicUsize::new(0)),
        wake: wake_w,
    });
    let listener = UnixListener::from(listener);
    spawn_thread("mproc-actor-accept", {
        let (server, tx) = (server.clone(), tx.clone());
        move || server.accept_loop(listener.incoming(), tx)
    });
    if let Some(tcp) = tcp {
        let tcp = TcpListener::from(tcp);
        spawn_thread("mproc-actor-accept", {
            let (server, tx) = (server.clone(), tx.clone());
            move || server.accept_loop(tcp.incoming(), tx)
        });
    }
    drop(tx);
    let _ = boot_out.send(&ToParent::Ready { init_error: None });

    let mut lp = Loop {
        actor: &mut *actor,
        entry,
        id: &msg.id,
        boot: &chan,
        boot_out: &boot_out,
        wake: wake_r,
        fresh: rx,
        conns: Vec::new(),
        live: server.live.clone(),
    };
    let code = lp.run();
    boot_out.drain();
    Ok(code)
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) {
    // Without its threads the actor can serve nobody: exit, and the
    // supervisor reports the death like any other.
    if std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            crate::trace::enter_worker_dispatch();
            f()
        })
        .is_err()
    {
        exit_child(super::EXIT_NO_THREAD);
    }
}

/// One caller's connection, read by the actor thread.
struct Caller {
    chan: Arc<UnixChannel>,
    out: Arc<Outbox>,
    reader: FrameReader,
    dirty: bool,
    closed: bool,
}

/// The actor thread: it waits in `poll` on every caller's connection, the
/// boot socket and a wake-up pipe (new connections), and runs each request
/// it reads at once, so a call costs one wake-up of this thread and no
/// hand-off.
struct Loop<'a> {
    actor: &'a mut dyn ActorObject,
    entry: &'static ActorEntry,
    id: &'a WorkerId,
    boot: &'a UnixChannel,
    boot_out: &'a Outbox,
    wake: OwnedFd,
    fresh: Receiver<Caller>,
    conns: Vec<Caller>,
    live: Arc<AtomicUsize>,
}

/// What the loop does next.
enum Next {
    Go,
    Exit(i32),
}

impl Loop<'_> {
    fn run(&mut self) -> i32 {
        loop {
            let ready = match self.wait() {
                Ok(r) => r,
                Err(_) => return 70,
            };
            if ready.boot {
                let mut buf = [0u8; 64];
                // End of stream: the supervisor let go of the actor.
                if matches!(self.boot.try_read(&mut buf), Ok(Some(0)) | Err(_)) {
                    self.flush();
                    return 0;
                }
            }
            if ready.wake {
                let mut buf = [0u8; 64];
                while matches!(nix::unistd::read(&self.wake, &mut buf), Ok(n) if n > 0) {}
                self.conns.extend(self.fresh.try_iter());
            }
            for i in ready.conns {
                if let Next::Exit(code) = self.serve_conn(i) {
                    self.flush();
                    return code;
                }
            }
            self.flush();
            let live = &self.live;
            self.conns.retain(|c| {
                if c.closed {
                    c.out.close();
                    c.chan.shutdown();
                    live.fetch_sub(1, Ordering::AcqRel);
                }
                !c.closed
            });
        }
    }

    /// Waits until something is readable.
    fn wait(&self) -> nix::Result<Ready> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = Vec::with_capacity(self.conns.len() + 2);
        fds.push(PollFd::new(self.boot.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
        for c in &self.conns {
            fds.push(PollFd::new(c.chan.as_fd(), PollFlags::POLLIN));
        }
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
        let hit = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
        Ok(Ready {
            boot: hit(&fds[0]),
            wake: hit(&fds[1]),
            conns: (0..self.conns.len()).filter(|i| hit(&fds[i + 2])).collect(),
        })
    }

    /// Runs every request connection `i` has sent so far.
    fn serve_conn(&mut self, i: usize) -> Next {
        let c = &mut self.conns[i];
        loop {
            let frame = match c.reader.try_next_frame(&*c.chan) {
                Ok(Some(f)) => f,
                Ok(None) => return Next::Go,
                Err(_) => {
                    c.closed = true;
                    return Next::Go;
                }
            };
            match decode::<ToActor<'_>>(frame) {
                Ok(ToActor::Call { seq, method, args }) => {
                    let span = tracing::debug_span!(
                        "mproc.actor",
                        actor = self.entry.name,
                        method = self.entry.method_name(method),
                        id = %self.id
                    );
                    let result =
                        span.in_scope(|| actors::run_method(self.actor.call(method, args.0)));
                    let reply = FromActor::Reply {
                        seq,
                        result: result.as_deref().map(Bytes).map_err(Clone::clone),
                    };
                    if let Err(e) = c.out.enqueue(&reply) {
                        // The result is too large for a frame: say so instead.
                        let _ = c.out.enqueue(&FromActor::Reply {
                            seq,
                            result: Err(e.into_task_error()),
                        });
                    }
                    c.dirty = true;
                }
                Ok(ToActor::Stop { .. }) => {
                    let _ = self.boot_out.send(&ToParent::Stopping);
                    return Next::Exit(0);
                }
                Err(e) => {
                    tracing::debug!("malformed request to an actor: {e}");
                    c.closed = true;
                    return Next::Go;
                }
            }
        }
    }

    fn flush(&mut self) {
        for c in &mut self.conns {
            if std::mem::take(&mut c.dirty) {
                c.out.flush();
            }
        }
    }
}

/// What `poll` found readable.
struct Ready {
    boot: bool,
    wake: bool,
    conns: Vec<usize>,
}

/// A connection to the actor: a Unix one from its host, a TCP one from
/// another.
trait Conn: auth::Bounded + Into<OwnedFd> + Send + 'static {
    /// Bounds reads and writes (`None`: no bound).
    fn timeouts(&self, t: Option<std::time::Duration>) -> std::io::Result<()>;
}

impl Conn for UnixStream {
    fn timeouts(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t).and(self.set_write_timeout(t))
    }
}

impl Conn for TcpStream {
    fn timeouts(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
        let _ = self.set_nodelay(true);
        self.set_read_timeout(t).and(self.set_write_timeout(t))
    }
}

/// The accepting side: the key, the hello every connection gets, the
/// connection count, and how to wake the actor thread for a new caller.
struct Acceptor {
    key: Vec<u8>,
    hello: ActorHello,
    max_frame: usize,
    live: Arc<AtomicUsize>,
    wake: OwnedFd,
}

impl Acceptor {
    fn accept_loop<S: Conn>(
        self: Arc<Self>,
        incoming: impl Iterator<Item = std::io::Result<S>>,
        tx: Sender<Caller>,
    ) {
        for conn in incoming {
            let conn = match conn {
                Ok(c) => c,
                // The supervisor shut the socket: the actor is being stopped.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
                Err(_) => {
                    // Out of descriptors or memory for a moment: let it pass.
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            };
            if self.live.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                self.live.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let (me, tx) = (self.clone(), tx.clone());
            let spawned = std::thread::Builder::new()
                .name("mproc-actor-conn".into())
                .spawn(move || {
                    crate::trace::enter_worker_dispatch();
                    if !me.admit(conn, &tx) {
                        me.live.fetch_sub(1, Ordering::AcqRel);
                    }
                });
            if spawned.is_err() {
                self.live.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// One connection: the handshake (bounded in size and time) and the
    /// hello, then it goes to the actor thread. False when it was refused.
    fn admit<S: Conn>(&self, mut conn: S, tx: &Sender<Caller>) -> bool {
        if conn.timeouts(Some(AUTH_DEADLINE)).is_err() {
            return false;
        }
        if let Err(e) =
            auth::server_within(&mut conn, &self.key, auth::Purpose::Actor, AUTH_DEADLINE)
        {
            tracing::debug!("actor connection refused: {e}");
            return false;
        }
        let Ok(hello) = frame(&self.hello, 64 * 1024) else {
            return false;
        };
        if std::io::Write::write_all(&mut conn, &hello).is_err() || conn.timeouts(None).is_err() {
            return false;
        }
        let chan = Arc::new(UnixChannel::from_fd(conn.into()));
        // No thread to spare (the process limit): the caller is told by
        // the connection's end.
        let Ok(out) = Outbox::try_new(chan.clone(), self.max_frame) else {
            return false;
        };
        let caller = Caller {
            chan,
            out,
            reader: FrameReader::new(self.max_frame),
            dirty: false,
            closed: false,
        };
        if tx.send(caller).is_err() {
            return false;
        }
        let _ = nix::unistd::write(&self.wake, &[1]);
        true
    }
}
