//! The node's side of a cluster: [`join`] (and the `MPROC_JOIN` boot path
//! in `child/boot.rs`, which calls [`node_main`]).
//!
//! A node dials the driver (retrying for a while: a launcher may start
//! nodes before the driver listens), runs the key's handshake, says hello
//! and is given its id. It then starts its own scheduler with one worker
//! per slot it offers, runs each `Run` it is sent on it and answers `Done`.
//! It pings the driver every second and treats four seconds of silence,
//! a broken connection or `Close` as the end: it stops its workers (which
//! also die with it if it is killed) and returns.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mproc_transport::{ByteStream, FrameReader, StreamIo, UnixChannel, DEFAULT_MAX_FRAME};

use super::Wire;
use crate::actor::supervisor::{Spec, Supervisor};
use crate::address::{set_current_node, NodeId, WorkerId};
use crate::error::{Error, ErrorKind, TaskError};
use crate::executor::sched::{Config, Core, Limits, Running};
use crate::outbox::Outbox;
use crate::protocol::actor::Ended;
use crate::protocol::auth::{self, AuthError, Purpose, AUTH_DEADLINE};
use crate::protocol::cluster::{NodeHello, ToDriver, ToNode, Welcome, HEARTBEAT, SILENCE_LIMIT};
use crate::protocol::manager::{frame, read_msg};
use crate::protocol::{decode, Bytes, PROTOCOL_VERSION};
use crate::tls::{ClientTls, TlsChannel};

/// How long a node keeps dialing a driver that does not answer yet.
const DIAL_PATIENCE: Duration = Duration::from_secs(30);

/// The variable holding the driver's address on a node.
const JOIN_ENV: &str = "MPROC_JOIN";

/// Becomes a node before `main` when `MPROC_JOIN` is set (see
/// `child/boot.rs`).
#[linkme::distributed_slice(crate::child::boot::BOOT_HOOKS)]
static NODE_BOOT: fn() = node_boot;

fn node_boot() {
    if let Some(addr) = std::env::var_os(JOIN_ENV) {
        // Single-threaded here (before main): removing the variable is
        // sound.
        std::env::remove_var(JOIN_ENV);
        node_main(addr.to_string_lossy().into_owned());
    }
}

/// Joins the cluster whose driver listens at `addr`, as a node: runs the
/// driver's work on this host's workers until the driver closes the
/// cluster or is lost, then stops the workers and returns.
///
/// This is what a program started with `MPROC_JOIN` does before `main`;
/// call it to make a node from code. Workers: `MPROC_NODE_WORKERS`, else
/// [`cpu_count`](crate::cpu_count).
///
/// # Errors
/// [`ErrorKind::Auth`] when the driver refuses the key (or the key is
/// empty); [`ErrorKind::Protocol`] when it refuses this build;
/// [`ErrorKind::Io`] when it cannot be reached.
pub fn join(addr: impl ToSocketAddrs, authkey: &[u8]) -> Result<(), Error> {
    run(addr, authkey, None, workers_from_env())
}

/// [`join`] over TLS, trusting `tls`'s certificate for the driver.
///
/// # Errors
/// As [`join`]; a certificate that is not trusted is [`ErrorKind::Auth`].
pub fn join_tls(addr: impl ToSocketAddrs, authkey: &[u8], tls: ClientTls) -> Result<(), Error> {
    run(addr, authkey, Some(tls), workers_from_env())
}

fn workers_from_env() -> usize {
    std::env::var("MPROC_NODE_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(crate::cpu_count)
}

/// The boot path: the program was started with `MPROC_JOIN`. Runs the
/// node and exits; never returns to `main`.
fn node_main(addr: String) -> ! {
    let code = match node_from_env(&addr) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mproc node: {e}");
            if e.kind() == ErrorKind::Auth {
                3
            } else {
                1
            }
        }
    };
    crate::children::exit_child(code)
}

fn node_from_env(addr: &str) -> Result<(), Error> {
    let key = match (
        std::env::var_os("MPROC_AUTHKEY_FILE"),
        std::env::var_os("MPROC_AUTHKEY"),
    ) {
        (Some(path), _) => {
            let mut k = std::fs::read(&path).map_err(|e| {
                Error::with_source(
                    ErrorKind::Auth,
                    format!("cannot read the key file {}", path.to_string_lossy()),
                    e,
                )
            })?;
            // `echo key > file` leaves one newline: not part of the key.
            if k.last() == Some(&b'\n') {
                k.pop();
            }
            k
        }
        (None, Some(k)) => k.into_encoded_bytes(),
        (None, None) => {
            return Err(Error::new(
                ErrorKind::Auth,
                "MPROC_JOIN is set but neither MPROC_AUTHKEY_FILE nor MPROC_AUTHKEY is",
            ))
        }
    };
    let tls = match std::env::var_os("MPROC_TLS_CA_FILE") {
        Some(path) => {
            let der = read_cert(std::path::Path::new(&path))?;
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let name = std::env::var("MPROC_TLS_SERVER_NAME").unwrap_or_else(|_| host.to_string());
            Some(ClientTls::new(der, name))
        }
        None => None,
    };
    // The node's own workers must not become nodes too.
    for v in [
        JOIN_ENV,
        "MPROC_AUTHKEY_FILE",
        "MPROC_AUTHKEY",
        "MPROC_TLS_CA_FILE",
        "MPROC_TLS_SERVER_NAME",
    ] {
        // SAFETY-free: std's `remove_var` is safe to call here, before
        // `main`, with one thread.
        std::env::remove_var(v);
    }
    run(addr, &key, tls, workers_from_env())
}

/// A certificate file, PEM or DER.
fn read_cert(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bytes = std::fs::read(path).map_err(|e| {
        Error::with_source(
            ErrorKind::Auth,
            format!("cannot read the certificate {}", path.display()),
            e,
        )
    })?;
    match CertificateDer::from_pem_slice(&bytes) {
        Ok(c) => Ok(c.to_vec()),
        Err(_) => Ok(bytes),
    }
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::with_source(ErrorKind::Io, what.to_string(), e)
}

fn auth_err(e: AuthError) -> Error {
    match e {
        AuthError::Refused => Error::new(
            ErrorKind::Auth,
            "the driver refused this node's key (MPROC_AUTHKEY_FILE / MPROC_AUTHKEY differ from the driver's)",
        ),
        AuthError::ServerUnproven => Error::new(
            ErrorKind::Auth,
            "the driver does not hold this node's key",
        ),
        AuthError::EmptyKey => Error::new(ErrorKind::Auth, "the key is empty"),
        e => Error::with_source(ErrorKind::Protocol, "the cluster handshake failed", e),
    }
}

/// Dials `addrs` until one answers or [`DIAL_PATIENCE`] has passed.
fn dial(addrs: &[SocketAddr]) -> Result<TcpStream, Error> {
    let end = Instant::now() + DIAL_PATIENCE;
    loop {
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(a, AUTH_DEADLINE) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        if Instant::now() >= end {
            let e = last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into());
            return Err(Error::with_source(
                ErrorKind::Io,
                format!("cannot reach the driver at {addrs:?} within {DIAL_PATIENCE:?}"),
                e,
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run(
    addr: impl ToSocketAddrs,
    key: &[u8],
    tls: Option<ClientTls>,
    workers: usize,
) -> Result<(), Error> {
    if key.is_empty() {
        return Err(auth_err(AuthError::EmptyKey));
    }
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(io_err("cannot resolve the driver's address"))?
        .collect();
    let tcp = dial(&addrs)?;
    let _ = tcp.set_nodelay(true);
    // Actors here listen on the address the driver is reached from.
    let here = tcp.local_addr().map_err(Error::from)?.ip();
    let driver_ip = tcp.peer_addr().map_err(Error::from)?.ip();
    tcp.set_read_timeout(Some(AUTH_DEADLINE))
        .map_err(Error::from)?;
    tcp.set_write_timeout(Some(AUTH_DEADLINE))
        .map_err(Error::from)?;
    let wire =
        match &tls {
            Some(t) => Wire::tls(TlsChannel::connect(t, tcp).map_err(|e| {
                Error::with_source(ErrorKind::Auth, "TLS with the driver failed", e)
            })?),
            None => Wire::Plain(Arc::new(UnixChannel::from_fd(tcp.into()))),
        };
    wire.set_read_timeout(AUTH_DEADLINE).map_err(Error::from)?;
    let chan = wire.stream();
    let mut io = StreamIo(&*chan);
    auth::client(&mut io, key, Purpose::Cluster).map_err(auth_err)?;
    let hello = NodeHello {
        version: PROTOCOL_VERSION,
        fingerprint: crate::registry::fingerprint(),
        hostname: hostname(),
        workers: u32::try_from(workers).unwrap_or(u32::MAX),
        pid: std::process::id(),
    };
    let bytes = frame(&hello, 4096)
        .map_err(|e| Error::with_source(ErrorKind::Protocol, "cannot encode the hello", e))?;
    chan.write_all(&bytes)
        .map_err(io_err("the driver went away"))?;
    let id = match read_msg::<Welcome>(&mut io, 4096) {
        Ok(Welcome::Joined { id }) => id,
        Ok(Welcome::Refused { reason }) => {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("the driver refused this node: {reason}"),
            ))
        }
        Err(e) => {
            return Err(Error::with_source(
                ErrorKind::Protocol,
                "no welcome from the driver",
                e,
            ))
        }
    };
    wire.set_read_timeout(SILENCE_LIMIT).map_err(Error::from)?;
    set_current_node(id);
    std::env::set_var(crate::address::NODE_ENV, id.get().to_string());
    std::env::set_var(crate::address::DRIVER_ENV, driver_ip.to_string());
    serve(id, chan, workers, here)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Runs the driver's requests until the driver ends.
fn serve(
    id: NodeId,
    chan: Arc<dyn ByteStream>,
    workers: usize,
    here: std::net::IpAddr,
) -> Result<(), Error> {
    let core = Core::new(Config {
        workers,
        max_tasks_per_child: None,
        initializer: None,
        max_frame: DEFAULT_MAX_FRAME,
        name_prefix: "NodeWorker",
        transport: crate::executor::TransportKind::default(),
        start_method: crate::get_start_method(),
        // The driver's arguments arrive encoded, in band.
        out_of_band: false,
    });
    core.start_blocking()?;
    tracing::info!(node = %id, workers, "mproc node serving");
    let out = Outbox::new(chan.clone(), DEFAULT_MAX_FRAME);
    let stop = Arc::new(AtomicBool::new(false));
    let beat = {
        let (out, stop) = (out.clone(), stop.clone());
        std::thread::Builder::new()
            .name("mproc-node-beat".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    if out.send(&ToDriver::Ping).is_err() {
                        break;
                    }
                    // Woken early when the node stops (see below).
                    std::thread::park_timeout(HEARTBEAT);
                }
            })
            .map_err(|e| Error::with_source(ErrorKind::Spawn, "cannot start a thread", e))?
    };
    // Driver job id → this node's job id.
    let jobs: Jobs = Arc::default();
    let actors: Actors = Arc::default();
    let mut reader = FrameReader::new(DEFAULT_MAX_FRAME);
    // The requests of one read, submitted together (one write to each
    // worker) when the read is used up or another message comes, which
    // may refer to them.
    let mut runs: Vec<Run> = Vec::new();
    let why = loop {
        let frame = match reader.next_frame(&*chan) {
            Ok(f) => f,
            Err(e) => break format!("the driver is gone ({e})"),
        };
        let msg = decode::<ToNode<'_>>(frame);
        if !matches!(msg, Ok(ToNode::Run { .. })) {
            run_all(&core, &out, &jobs, &mut runs);
        }
        match msg {
            Ok(ToNode::Run { id, task, args }) => {
                runs.push(Run::new(id, task, args));
                if !reader.has_frame() {
                    run_all(&core, &out, &jobs, &mut runs);
                }
            }
            Ok(ToNode::Stop { id }) => {
                let local = match lock_jobs(&jobs).get(&id) {
                    Some(NodeJob::Running(l) | NodeJob::Recalling(l)) => Some(*l),
                    _ => None,
                };
                if let Some(local) = local {
                    core.abort(local, TaskError::Cancelled, Running::Stop);
                }
            }
            Ok(ToNode::Recall { id }) => recall(&core, &out, &jobs, id),
            Ok(ToNode::SpawnActor {
                req,
                id,
                type_name,
                args,
                key,
                history,
            }) => {
                let spec = ActorStart {
                    req,
                    id,
                    type_name: type_name.to_string(),
                    args: args.0.to_vec(),
                    key: key.0.to_vec(),
                    history,
                };
                let (out, actors) = (out.clone(), actors.clone());
                let _ = std::thread::Builder::new()
                    .name("mproc-actor-start".into())
                    .spawn(move || start_actor(spec, here, &out, &actors));
            }
            Ok(ToNode::StopActor { id }) => {
                let sup = actors.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                if let Some(sup) = sup {
                    let _ = std::thread::Builder::new()
                        .name("mproc-actor-stop".into())
                        .spawn(move || sup.shutdown());
                }
            }
            Ok(ToNode::Ping) => {}
            Ok(ToNode::Close) => break "the driver closed the cluster".to_string(),
            Err(e) => break format!("malformed message from the driver: {e}"),
        }
    };
    tracing::info!(node = %id, "mproc node stopping: {why}");
    stop.store(true, Ordering::Release);
    let all: Vec<_> = actors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .map(|(_, s)| s)
        .collect();
    for sup in all {
        sup.shutdown();
    }
    core.stop_blocking(TaskError::Shutdown);
    out.close();
    chan.shutdown();
    beat.thread().unpark();
    let _ = beat.join();
    Ok(())
}

/// A driver's request on this node.
enum NodeJob {
    /// Submitted here as job `.0` of the node's scheduler.
    Running(u64),
    /// The driver asked for it back; the answer is being worked out.
    Recalling(u64),
    /// It finished while being recalled: its outcome, sent once the recall
    /// is answered.
    Parked(crate::protocol::batch::Outcome),
}

/// The driver's requests here, by the driver's job id.
type Jobs = Arc<Mutex<std::collections::HashMap<u64, NodeJob>>>;

fn lock_jobs(jobs: &Jobs) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, NodeJob>> {
    jobs.lock().unwrap_or_else(|p| p.into_inner())
}

fn send_done(out: &Arc<Outbox>, id: u64, outcome: &crate::protocol::batch::Outcome) {
    // Deferred: answers resolved together (one read from a worker) leave
    // in one write (see `Core::worker_events`).
    let r = out.send_deferred(&ToDriver::Done {
        id,
        exec_ns: 0,
        result: outcome.as_deref().map(Bytes).map_err(Clone::clone),
    });
    if let Err(e) = r {
        // Too large for a frame: say so instead.
        let _ = out.send_deferred(&ToDriver::Done {
            id,
            exec_ns: 0,
            result: Err(e.into_task_error()),
        });
    }
}

/// A driver's request, taken out of its frame.
struct Run {
    /// The driver's job id.
    id: u64,
    /// The task, or the name the driver gave when this build has no such
    /// task.
    task: Result<&'static crate::registry::TaskEntry, String>,
    args: Vec<u8>,
}

impl Run {
    fn new(id: u64, task: &str, args: Bytes<'_>) -> Run {
        Run {
            id,
            task: crate::registry::lookup(task).ok_or_else(|| task.to_string()),
            args: args.0.to_vec(),
        }
    }
}

/// Submits `runs` (drained) to this node's scheduler in one go, and
/// relays each one's outcome to the driver when it resolves.
fn run_all(core: &Arc<Core>, out: &Arc<Outbox>, jobs: &Jobs, runs: &mut Vec<Run>) {
    if runs.is_empty() {
        return;
    }
    let mut known = Vec::with_capacity(runs.len());
    let mut submit = Vec::with_capacity(runs.len());
    for run in runs.drain(..) {
        match run.task {
            Ok(entry) => {
                known.push(run.id);
                submit.push((
                    entry.name,
                    entry.is_async,
                    run.args.into(),
                    Limits::default(),
                ));
            }
            Err(name) => {
                let _ = out.send(&ToDriver::Done {
                    id: run.id,
                    exec_ns: 0,
                    result: Err(TaskError::UnknownTask { name }),
                });
            }
        }
    }
    let submitted = core.submit_all(submit);
    for (id, (local, comp)) in known.into_iter().zip(submitted) {
        lock_jobs(jobs).insert(id, NodeJob::Running(local));
        let (out, jobs, done) = (out.clone(), jobs.clone(), comp.clone());
        comp.on_resolve(move || {
            let outcome = done.take().unwrap_or(Err(TaskError::Shutdown));
            let mut j = lock_jobs(&jobs);
            if let Some(NodeJob::Recalling(_)) = j.get(&id) {
                // Answered with the recall (see `recall`).
                j.insert(id, NodeJob::Parked(outcome));
                return;
            }
            j.remove(&id);
            drop(j);
            send_done(&out, id, &outcome);
        });
    }
}

/// The driver wants request `id` back: given back only if it has not
/// started here, and then never run.
fn recall(core: &Arc<Core>, out: &Arc<Outbox>, jobs: &Jobs, id: u64) {
    let local = {
        let mut j = lock_jobs(jobs);
        match j.get(&id) {
            Some(NodeJob::Running(local)) => {
                let local = *local;
                j.insert(id, NodeJob::Recalling(local));
                local
            }
            _ => {
                drop(j);
                let _ = out.send(&ToDriver::Recalled { id, taken: false });
                return;
            }
        }
    };
    let taken = core.abort(local, TaskError::Cancelled, Running::Spare);
    let parked = {
        let mut j = lock_jobs(jobs);
        match j.remove(&id) {
            // Taken back: the outcome parked is the cancellation, not sent.
            Some(NodeJob::Parked(outcome)) if !taken => Some(outcome),
            Some(NodeJob::Recalling(local)) if !taken => {
                j.insert(id, NodeJob::Running(local));
                None
            }
            _ => None,
        }
    };
    if let Some(outcome) = parked {
        send_done(out, id, &outcome);
    }
    let _ = out.send(&ToDriver::Recalled { id, taken });
}

/// The actors with an instance on this node.
type Actors = Arc<Mutex<std::collections::HashMap<WorkerId, Arc<Supervisor>>>>;

/// What the driver asked to start.
struct ActorStart {
    req: u64,
    id: WorkerId,
    type_name: String,
    args: Vec<u8>,
    key: Vec<u8>,
    history: Vec<Ended>,
}

/// Starts an actor's instance here and tells the driver where it listens;
/// its end is reported too. The driver, which keeps the actor's address,
/// decides about restarts.
fn start_actor(a: ActorStart, here: std::net::IpAddr, out: &Arc<Outbox>, actors: &Actors) {
    let r = (|| -> Result<(Arc<Supervisor>, SocketAddr), Error> {
        let entry = crate::registry::actors::lookup(&a.type_name).ok_or_else(|| {
            Error::new(
                ErrorKind::Spawn,
                format!("unknown actor type {}", a.type_name),
            )
        })?;
        let tcp = std::net::TcpListener::bind((here, 0)).map_err(Error::from)?;
        let addr = tcp.local_addr().map_err(Error::from)?;
        let (listener, _) = crate::actor::bind_local()?;
        let (out, id, gone) = (out.clone(), a.id.clone(), Arc::downgrade(actors));
        let spec = Spec {
            type_name: entry.name,
            id: a.id.clone(),
            args: a.args,
            key: a.key,
            method: crate::get_start_method(),
            max_frame: DEFAULT_MAX_FRAME,
            max_restarts: 0,
            tcp: Some(tcp),
            on_end: Some(Box::new(move |ended, stopped| {
                if let Some(actors) = gone.upgrade() {
                    actors.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                }
                let _ = out.send(&ToDriver::ActorEnded { id, ended, stopped });
            })),
        };
        let _ = a.history;
        let sup = Supervisor::start(spec, listener)?;
        Ok((sup, addr))
    })();
    let result = match r {
        Ok((sup, addr)) => {
            actors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(a.id, sup);
            Ok(addr)
        }
        Err(e) => Err(e.to_string()),
    };
    let _ = out.send(&ToDriver::ActorStarted { req: a.req, result });
}
