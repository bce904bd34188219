//! The spawning process's side of an actor: the supervisor that starts its
//! process, watches it, restarts it under `max_restarts`, and answers for
//! it once it is gone for good.
//!
//! One supervisor thread (`mproc-actor-sup`) per actor:
//! 1. it owns the actor's listening socket (an abstract Unix name, so
//!    nothing is left on disk) and hands it to each instance it starts;
//! 2. it starts an instance on the spawner thread (so the instance dies
//!    with the program, see `spawn`), sends it the socket and its
//!    `StartActor`, and waits for `Ready`;
//! 3. it reads the instance's boot socket: forwarded log lines, and
//!    `Stopping` when a caller stopped it; end of stream means the instance
//!    is gone, and the supervisor reaps it (SIGKILL after a grace period);
//! 4. it starts the next instance while restarts remain, else becomes a
//!    *tombstone*: it accepts on the listening socket and tells each caller
//!    how every instance ended, so calls fail with the right
//!    `WorkerDied`;
//! 5. when the executor that owns it stops, it shuts the boot socket (the
//!    instance exits after the call it is running) and the listening socket
//!    (callers then learn the actor is gone), reaps, and ends.

use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use mproc_transport::{ByteStream, FrameReader, UnixChannel};
use nix::sys::signal::Signal;

use crate::address::WorkerId;
use crate::children::ChildProc;
use crate::error::{Error, ErrorKind, ExitInfo, TaskError};
use crate::protocol::actor::{ActorHello, Ended, StartActor, MODE_ACTOR};
use crate::protocol::manager::frame;
use crate::protocol::{decode, encode_frame, level_to_u8, ToParent, MAGIC, PROTOCOL_VERSION};
use crate::spawn::StartMethod;

/// How long a fresh instance may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping instance gets before SIGKILL.
const REAP_GRACE: Duration = Duration::from_secs(2);

/// Called once when the actor is gone for good: how its last instance
/// ended, and whether a caller stopped it.
pub(crate) type OnEnd = Box<dyn FnOnce(Ended, bool) + Send + Sync>;

/// What a supervisor needs to start instances.
pub(crate) struct Spec {
    pub(crate) type_name: &'static str,
    pub(crate) id: WorkerId,
    pub(crate) args: Vec<u8>,
    pub(crate) key: Vec<u8>,
    pub(crate) method: StartMethod,
    pub(crate) max_frame: usize,
    pub(crate) max_restarts: u32,
    /// A TCP listener too, for callers on other hosts.
    pub(crate) tcp: Option<TcpListener>,
    /// Told when the actor is gone for good; with a hook the supervisor
    /// serves no tombstone (the hook's owner answers for the actor).
    pub(crate) on_end: Option<OnEnd>,
}

/// One actor, as the process that spawned it keeps it.
pub(crate) struct Supervisor {
    spec: Spec,
    listener: UnixListener,
    /// Restarts done so far (what `ActorRef::restarts` reads here).
    pub(crate) restarts: Arc<AtomicU32>,
    state: Mutex<State>,
    thread: Mutex<Option<JoinHandle<()>>>,
    on_end: Mutex<Option<OnEnd>>,
}

#[derive(Default)]
struct State {
    /// The running instance's boot socket and process.
    boot: Option<(Arc<UnixChannel>, Arc<ChildProc>)>,
    /// The owner is stopping: no more instances.
    closing: bool,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("type", &self.spec.type_name)
            .field("id", &self.spec.id)
            .finish_non_exhaustive()
    }
}

/// Why an instance did not come up.
struct StartFailure {
    /// How its process ended, when there was one.
    exit: ExitInfo,
    error: Error,
}

impl Supervisor {
    /// Starts the first instance and the supervisor thread; returns once the
    /// instance is ready (or could not be).
    pub(crate) fn start(mut spec: Spec, listener: UnixListener) -> Result<Arc<Supervisor>, Error> {
        let on_end = spec.on_end.take();
        let sup = Arc::new(Supervisor {
            spec,
            listener,
            restarts: Arc::new(AtomicU32::new(0)),
            state: Mutex::new(State::default()),
            thread: Mutex::new(None),
            on_end: Mutex::new(None),
        });
        *sup.on_end.lock().unwrap_or_else(|p| p.into_inner()) = on_end;
        let first = sup.start_instance(&[]).map_err(|f| f.error)?;
        let me = sup.clone();
        let handle = std::thread::Builder::new()
            .name("mproc-actor-sup".into())
            .spawn(move || me.supervise(first))
            .map_err(|e| {
                Error::with_source(ErrorKind::Spawn, "cannot start the actor's supervisor", e)
            })?;
        *sup.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(sup)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn process_name(&self) -> String {
        format!("actor-{}", self.spec.id.serial())
    }

    /// Starts one instance, `history` telling it how its predecessors
    /// ended, and waits for its `Ready`.
    fn start_instance(&self, history: &[Ended]) -> Result<Arc<ChildProc>, StartFailure> {
        let spawn_err = |e: std::io::Error| StartFailure {
            exit: ExitInfo {
                code: None,
                signal: None,
            },
            error: Error::with_source(ErrorKind::Spawn, "cannot start the actor's process", e),
        };
        let (ours, theirs) = UnixStream::pair().map_err(spawn_err)?;
        let method = self.spec.method;
        let child = crate::spawn::run_on_spawner(move || {
            crate::spawn::start_process(method, theirs.into())
        })
        .and_then(|r| r)
        .map_err(spawn_err)?;
        let child = Arc::new(child);
        let chan = Arc::new(UnixChannel::from_fd(ours.into()));
        {
            let mut st = self.lock();
            if st.closing {
                drop(st);
                let exit = child.reap(Duration::ZERO);
                return Err(StartFailure {
                    exit,
                    error: Error::new(ErrorKind::Spawn, "the executor is shutting down"),
                });
            }
            st.boot = Some((chan.clone(), child.clone()));
        }
        match self.handshake(&chan, history) {
            Ok(()) => Ok(child),
            Err(error) => {
                self.lock().boot = None;
                chan.shutdown();
                let exit = child.reap(REAP_GRACE);
                let error = if exit.code == Some(crate::child::EXIT_NO_THREAD) {
                    // It said why on stderr; here the limit is named.
                    Error::with_source(
                        ErrorKind::Spawn,
                        format!("the actor's process could not start a thread ({exit})"),
                        std::io::Error::from_raw_os_error(libc::EAGAIN),
                    )
                } else {
                    error
                };
                Err(StartFailure { exit, error })
            }
        }
    }

    fn handshake(&self, chan: &Arc<UnixChannel>, history: &[Ended]) -> Result<(), Error> {
        let proto =
            |what: &str| Error::new(ErrorKind::Spawn, format!("actor start failed: {what}"));
        let start = StartActor {
            version: PROTOCOL_VERSION,
            fingerprint: crate::registry::fingerprint(),
            type_name: self.spec.type_name.to_string(),
            args: self.spec.args.clone(),
            id: self.spec.id.clone(),
            name: self.process_name(),
            parent_pid: std::process::id(),
            history: history.to_vec(),
            key: self.spec.key.clone(),
            log_level: level_to_u8(tracing::level_filters::LevelFilter::current()),
            max_frame: self.spec.max_frame as u64,
        };
        let mut buf = Vec::new();
        encode_frame(&mut buf, &start, usize::MAX).map_err(|e| {
            Error::with_source(ErrorKind::Spawn, "cannot encode the actor's arguments", e)
        })?;
        drop(start);
        let mut fds = vec![self.listener.as_raw_fd()];
        fds.extend(self.spec.tcp.as_ref().map(AsRawFd::as_raw_fd));
        crate::sys::send_fds(&**chan, MODE_ACTOR, &fds)
            .and_then(|()| chan.write_all(&buf))
            .map_err(|e| {
                Error::with_source(ErrorKind::Spawn, "the actor's process went away", e)
            })?;
        if !crate::sys::wait_readable(&**chan, Some(HELLO_TIMEOUT)).unwrap_or(false) {
            return Err(proto("the process did not say hello in time"));
        }
        let mut reader = FrameReader::new(self.spec.max_frame.max(1 << 20));
        loop {
            let frame = reader.next_frame(&**chan).map_err(|e| {
                Error::with_source(ErrorKind::Spawn, "the actor's process went away", e)
            })?;
            match decode::<ToParent<'_>>(frame) {
                Ok(ToParent::Hello {
                    magic,
                    version,
                    fingerprint,
                    ..
                }) => {
                    if magic != MAGIC
                        || version != PROTOCOL_VERSION
                        || fingerprint != crate::registry::fingerprint()
                    {
                        return Err(proto("the process is another build of the program"));
                    }
                }
                Ok(ToParent::Log {
                    level,
                    target,
                    message,
                }) => self.reemit(level, target, message),
                Ok(ToParent::Ready { init_error: None }) => return Ok(()),
                Ok(ToParent::Ready {
                    init_error: Some(message),
                }) => {
                    return Err(Error::with_source(
                        ErrorKind::Task,
                        format!("cannot start actor {}", self.spec.type_name),
                        TaskError::Panicked { message },
                    ))
                }
                _ => return Err(proto("unexpected message")),
            }
        }
    }

    fn reemit(&self, level: u8, target: &str, message: &str) {
        let pid = self.lock().boot.as_ref().map_or(0, |(_, c)| c.pid());
        crate::trace::reemit(&self.process_name(), pid, level, target, message);
    }

    /// The supervisor thread: watch, restart, then answer for the dead.
    fn supervise(self: Arc<Self>, first: Arc<ChildProc>) {
        let mut history = Vec::new();
        let mut child = Some(first);
        let mut stopped = false;
        loop {
            if let Some(c) = child.take() {
                stopped = self.watch();
                let exit = c.reap(REAP_GRACE);
                self.lock().boot = None;
                history.push(Ended::Exited(exit));
                if stopped {
                    break;
                }
                if !stopped && !self.lock().closing {
                    tracing::warn!(
                        actor = self.spec.type_name,
                        id = %self.spec.id,
                        "actor process died ({exit})"
                    );
                }
            }
            if self.lock().closing {
                break;
            }
            let done = self.restarts.load(Ordering::Acquire);
            if done >= self.spec.max_restarts {
                break;
            }
            self.restarts.store(done + 1, Ordering::Release);
            match self.start_instance(&history) {
                Ok(c) => child = Some(c),
                Err(f) => {
                    tracing::warn!(
                        actor = self.spec.type_name,
                        id = %self.spec.id,
                        "actor restart failed: {}",
                        f.error
                    );
                    history.push(Ended::Exited(f.exit));
                }
            }
        }
        let hook = self.on_end.lock().unwrap_or_else(|p| p.into_inner()).take();
        match hook {
            Some(hook) => {
                let last = history.last().copied().unwrap_or(Ended::Exited(ExitInfo {
                    code: None,
                    signal: None,
                }));
                hook(last, stopped);
            }
            None if !self.lock().closing => self.tombstone(history),
            None => {}
        }
    }

    /// Reads the running instance's boot socket until it ends; true when
    /// the instance said it was stopping at a caller's request.
    fn watch(&self) -> bool {
        let Some((chan, _)) = self.lock().boot.clone() else {
            return false;
        };
        let mut reader = FrameReader::new(self.spec.max_frame.max(1 << 20));
        let mut stopping = false;
        while let Ok(frame) = reader.next_frame(&*chan) {
            match decode::<ToParent<'_>>(frame) {
                Ok(ToParent::Log {
                    level,
                    target,
                    message,
                }) => self.reemit(level, target, message),
                Ok(ToParent::Stopping) => stopping = true,
                _ => {}
            }
        }
        stopping
    }

    /// Hands the actor's addresses to the graveyard, which answers every
    /// caller with how the instances ended until the owner stops.
    fn tombstone(&self, history: Vec<Ended>) {
        let hello = ActorHello {
            generation: u32::try_from(history.len()).unwrap_or(u32::MAX),
            history,
            live: false,
        };
        let Ok(bytes) = frame(&hello, 64 * 1024) else {
            return;
        };
        let (Ok(unix), tcp) = (
            self.listener.try_clone(),
            self.spec.tcp.as_ref().map(TcpListener::try_clone),
        ) else {
            return;
        };
        let grave = super::graveyard::Grave {
            unix,
            tcp: tcp.and_then(Result::ok),
            hello: Arc::new(bytes),
            key: Arc::new(self.spec.key.clone()),
        };
        let st = self.lock();
        if !st.closing && super::graveyard::bury(self.spec.id.serial(), grave) {
            drop(st);
        }
    }

    /// Stops the actor for good: no restart, the instance told to exit and
    /// reaped, the address closed. Blocks until done (a few seconds at
    /// most).
    pub(crate) fn shutdown(&self) {
        let boot = {
            let mut st = self.lock();
            st.closing = true;
            st.boot.clone()
        };
        if let Some((chan, child)) = boot {
            chan.shutdown();
            // A call that runs past the grace period is cut short.
            if child.wait_timeout(Some(REAP_GRACE)).is_none() {
                let _ = child.signal(Signal::SIGKILL);
            }
        }
        // No more answers for it, and callers are refused from now on.
        super::graveyard::forget(self.spec.id.serial());
        let _ = nix::sys::socket::shutdown(
            self.listener.as_fd().as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
        if let Some(tcp) = &self.spec.tcp {
            let _ = nix::sys::socket::shutdown(tcp.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}
