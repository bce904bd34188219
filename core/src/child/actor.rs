//! Actor mode in the child: one instance of an `#[mproc::actor]` type,
//! serving calls from any process that holds its reference.
//!
//! The process boots as every child does (it dies with the program through
//! `PR_SET_PDEATHSIG`), receives its listening socket and a `StartActor`
//! frame on the boot socket (see `protocol::actor`), builds the instance
//! with the type's constructor and answers `Ready`.
//!
//! # Threads
//! * **The actor thread** (the process's main thread) owns the instance
//!   and takes calls from one mailbox, one at a time, in arrival order: a
//!   method never runs concurrently with another, and each caller's calls
//!   run in the order it sent them, since a caller's calls share one
//!   connection. A sync method runs right there; an `async` one is driven
//!   to completion on the process's runtime before the next call starts.
//!   Replies are queued per connection and flushed when the mailbox runs
//!   empty, so a burst of pipelined calls costs a few writes, not one each.
//! * **The acceptor** takes connections from the listening socket; each
//!   gets a reader thread, which runs the key's handshake (bounded in size
//!   and time), sends the hello and then posts every request it reads to
//!   the mailbox. A malformed or oversized frame closes that connection
//!   only.
//! * **The boot watcher** reads the boot socket: its end (the supervisor
//!   stopped the actor, or the program died) ends the process after the
//!   call in progress.

use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
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

/// What the actor thread is asked to do.
enum Mail {
    Call {
        out: Arc<Outbox>,
        seq: u64,
        method: u32,
        args: Vec<u8>,
    },
    Stop,
    /// The supervisor let go of the actor.
    Exit,
}

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
    let boot_out = Outbox::new(boot.clone(), max_frame);
    crate::trace::install_forwarder(boot_out.clone(), msg.log_level);
    // A panic in the constructor or a method is the caller's error, as a
    // task's is: reported, not printed.
    super::worker::install_panic_hook(boot_out.clone());

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
    let hello = ActorHello {
        generation: u32::try_from(msg.history.len()).unwrap_or(u32::MAX),
        history: msg.history.clone(),
        live: true,
    };
    let server = Arc::new(Acceptor {
        key: msg.key,
        hello,
        max_frame,
        live: AtomicUsize::new(0),
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
    spawn_thread("mproc-actor-boot", {
        let tx = tx.clone();
        move || {
            let mut buf = [0u8; 64];
            while matches!(boot.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(Mail::Exit);
        }
    });
    drop(tx);
    let _ = boot_out.send(&ToParent::Ready { init_error: None });

    let code = serve(&mut *actor, entry, &msg.id, &rx, &boot_out);
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
        exit_child(71);
    }
}

/// The actor thread's loop; returns the exit code.
fn serve(
    actor: &mut dyn ActorObject,
    entry: &'static ActorEntry,
    id: &WorkerId,
    rx: &Receiver<Mail>,
    boot_out: &Outbox,
) -> i32 {
    let mut dirty: Vec<Arc<Outbox>> = Vec::new();
    loop {
        let mail = match rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty) => {
                flush(&mut dirty);
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => return 0,
                }
            }
            Err(TryRecvError::Disconnected) => return 0,
        };
        match mail {
            Mail::Call {
                out,
                seq,
                method,
                args,
            } => {
                let span = tracing::debug_span!(
                    "mproc.actor",
                    actor = entry.name,
                    method = entry.method_name(method),
                    id = %id
                );
                let result = span.in_scope(|| actors::run_method(actor.call(method, &args)));
                let reply = FromActor::Reply {
                    seq,
                    result: result.as_deref().map(Bytes).map_err(Clone::clone),
                };
                if let Err(e) = out.enqueue(&reply) {
                    // The result is too large for a frame: say so instead.
                    let _ = out.enqueue(&FromActor::Reply {
                        seq,
                        result: Err(e.into_task_error()),
                    });
                }
                if !dirty.iter().any(|d| Arc::ptr_eq(d, &out)) {
                    dirty.push(out);
                }
            }
            Mail::Stop => {
                flush(&mut dirty);
                let _ = boot_out.send(&ToParent::Stopping);
                return 0;
            }
            Mail::Exit => {
                flush(&mut dirty);
                return 0;
            }
        }
    }
}

fn flush(dirty: &mut Vec<Arc<Outbox>>) {
    for out in dirty.drain(..) {
        out.flush();
    }
}

/// A connection to the actor: a Unix one from its host, a TCP one from
/// another.
trait Conn: std::io::Read + std::io::Write + Into<OwnedFd> + Send + 'static {
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

/// The accepting side: the key, the hello every connection gets, and the
/// connection count.
struct Acceptor {
    key: Vec<u8>,
    hello: ActorHello,
    max_frame: usize,
    live: AtomicUsize,
}

impl Acceptor {
    fn accept_loop<S: Conn>(
        self: Arc<Self>,
        incoming: impl Iterator<Item = std::io::Result<S>>,
        tx: Sender<Mail>,
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
                    me.serve_conn(conn, tx);
                    me.live.fetch_sub(1, Ordering::AcqRel);
                });
            if spawned.is_err() {
                self.live.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// One connection: handshake, hello, then requests into the mailbox
    /// until the caller goes away or breaks the protocol.
    fn serve_conn<S: Conn>(&self, mut conn: S, tx: Sender<Mail>) {
        if conn.timeouts(Some(AUTH_DEADLINE)).is_err() {
            return;
        }
        if let Err(e) = auth::server(&mut conn, &self.key, auth::Purpose::Actor) {
            tracing::debug!("actor connection refused: {e}");
            return;
        }
        let Ok(hello) = frame(&self.hello, 64 * 1024) else {
            return;
        };
        if std::io::Write::write_all(&mut conn, &hello).is_err() || conn.timeouts(None).is_err() {
            return;
        }
        let chan: Arc<dyn ByteStream> = Arc::new(UnixChannel::from_fd(conn.into()));
        let out = Outbox::new(chan.clone(), self.max_frame);
        let mut reader = FrameReader::new(self.max_frame);
        while let Ok(frame) = reader.next_frame(&*chan) {
            let mail = match decode::<ToActor<'_>>(frame) {
                Ok(ToActor::Call { seq, method, args }) => Mail::Call {
                    out: out.clone(),
                    seq,
                    method,
                    args: args.0.to_vec(),
                },
                Ok(ToActor::Stop { .. }) => Mail::Stop,
                Err(e) => {
                    tracing::debug!("malformed request to an actor: {e}");
                    break;
                }
            };
            if tx.send(mail).is_err() {
                break;
            }
        }
        out.close();
        chan.shutdown();
    }
}
