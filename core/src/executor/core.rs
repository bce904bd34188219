//! The scheduler shared by [`Executor`](super::Executor) (and, later, the
//! blocking pool): the job table, the queue, the worker set, and the threads
//! that serve each worker.
//!
//! # Dispatch
//! Jobs wait in one FIFO queue. Each ready worker may hold a *window* of
//! jobs in flight, so its socket is never idle: two while tasks are long,
//! up to 64 while they take microseconds (the window covers about 200 µs of
//! measured work). Whoever changes the state — a submitter, a worker's reader
//! thread on results, the death handler — tops the windows up under the one
//! state lock, and writes frames after releasing it.
//!
//! # Crash accounting
//! Every request sent to a worker gets a per-worker sequence number. The
//! worker stores `seq + 1` in a shared page before it starts request `seq`.
//! When a worker dies, its requests with `seq` below that mark may have
//! started: they fail with [`TaskError::WorkerDied`]. The rest never started
//! and go back to the front of the queue, so only the tasks the worker was
//! running fail and no task ever runs twice.
//!
//! # Lifetimes
//! Each worker has a reader thread (which also reaps the process) and an
//! outbox writer thread. Both end with the worker. `live` counts processes
//! not yet reaped; shutdown waits for it to reach zero.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use mproc_transport::{
    socketpair, ByteStream, FrameReader, PipeChannel, ShmChannel, TransportError, UnixChannel,
    DEFAULT_RING_SIZE,
};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd};

use super::handle::{Completion, Outcome};
use crate::error::{Error, ErrorKind, ExitInfo, TaskError};
use crate::outbox::Outbox;
use crate::process::ChildProc;
use crate::protocol::{level_to_u8, Bytes, ToParent, ToWorker, MAGIC, PROTOCOL_VERSION};
use crate::sys::SharedCounter;

/// Hashes the scheduler's `u64` keys (task ids, worker keys) with one
/// multiplication: they are process-local and never attacker-chosen, so
/// SipHash's DoS resistance buys nothing on this hot path.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: spreads sequential ids over the high bits,
        // which the table uses for its control bytes.
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_WORKER: AtomicU64 = AtomicU64::new(1);

/// How long a fresh worker may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an exiting worker gets before SIGKILL.
const REAP_GRACE: Duration = Duration::from_secs(2);
/// Boot failures in a row, with no worker up, before queued work fails.
const MAX_BOOT_FAILURES: u32 = 3;
/// Work a window should cover.
const WINDOW_NS: f64 = 200_000.0;
const MIN_WINDOW: usize = 2;
const MAX_WINDOW: usize = 64;

/// Settings fixed when the pool is built.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) max_tasks_per_child: Option<u64>,
    pub(crate) initializer: Option<(&'static str, Vec<u8>)>,
    pub(crate) max_frame: usize,
    pub(crate) name_prefix: &'static str,
    /// The parent–worker channel.
    pub(crate) transport: super::TransportKind,
    /// How worker processes are started.
    pub(crate) start_method: super::StartMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// `shutdown`: finish what was submitted, accept nothing new.
    Draining,
    /// `shutdown_now` or drop: everything is being torn down.
    Stopping,
}

#[derive(Debug)]
enum Place {
    Queued,
    Sent { worker: u64, seq: u64 },
}

#[derive(Debug)]
struct Job {
    task: &'static str,
    payload: Vec<u8>,
    is_async: bool,
    comp: Arc<Completion>,
    place: Place,
    /// Resolved early (cancel, timeout) while a worker still holds it.
    aborted: bool,
    /// `mproc.task{task, id, worker}`: the parent-side span of this task.
    span: tracing::Span,
}

#[derive(Debug)]
struct Worker {
    name: String,
    pid: u32,
    link: Option<Link>,
    outstanding: VecDeque<(u64, u64)>,
    next_seq: u64,
    assigned: u64,
    retiring: bool,
    shutdown_sent: bool,
}

#[derive(Debug, Clone)]
struct Link {
    chan: Arc<dyn ByteStream>,
    outbox: Arc<Outbox>,
    counter: Arc<SharedCounter>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    jobs: IdMap<Job>,
    queue: VecDeque<u64>,
    workers: IdMap<Worker>,
    /// Worker processes requested and not yet reaped.
    live: usize,
    /// Workers that ever completed their handshake.
    ready_total: usize,
    boot_failures: u32,
    boot_error: Option<String>,
    ewma_exec_ns: f64,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_running: bool,
    waiters: Vec<Waker>,
}

/// The shared state of one executor or pool.
#[derive(Debug)]
pub(crate) struct Core {
    cfg: Config,
    st: Mutex<State>,
    changed: Condvar,
    timer_cond: Condvar,
}

type Flush = Vec<Arc<Outbox>>;

fn add_flush(flush: &mut Flush, ob: &Arc<Outbox>) {
    if !flush.iter().any(|o| Arc::ptr_eq(o, ob)) {
        flush.push(ob.clone());
    }
}

fn run_flush(flush: Flush) {
    for ob in flush {
        ob.flush();
    }
}

impl Core {
    pub(crate) fn new(cfg: Config) -> Arc<Self> {
        Arc::new(Core {
            cfg,
            st: Mutex::new(State {
                phase: Phase::Running,
                jobs: IdMap::default(),
                queue: VecDeque::new(),
                workers: IdMap::default(),
                live: 0,
                ready_total: 0,
                boot_failures: 0,
                boot_error: None,
                ewma_exec_ns: 0.0,
                timers: BinaryHeap::new(),
                timer_running: false,
                waiters: Vec::new(),
            }),
            changed: Condvar::new(),
            timer_cond: Condvar::new(),
        })
    }

    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self, st: &mut State) {
        for w in st.waiters.drain(..) {
            w.wake();
        }
        self.changed.notify_all();
    }

    // ----- starting -----------------------------------------------------

    /// Starts the configured number of workers and waits until all are up.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<(), Error> {
        {
            let mut st = self.lock();
            self.top_up_workers(&mut st);
        }
        let n = self.cfg.workers;
        self.until(|st| st.ready_total >= n || st.boot_error.is_some())
            .await;
        let err = self.lock().boot_error.clone();
        match err {
            None => Ok(()),
            Some(msg) => {
                self.stop_now(TaskError::Shutdown).await;
                Err(Error::new(ErrorKind::Spawn, msg))
            }
        }
    }

    /// [`start`](Self::start) for blocking code.
    pub(crate) fn start_blocking(self: &Arc<Self>) -> Result<(), Error> {
        {
            let mut st = self.lock();
            self.top_up_workers(&mut st);
        }
        let n = self.cfg.workers;
        self.wait_blocking(|st| st.ready_total >= n || st.boot_error.is_some(), None);
        let err = self.lock().boot_error.clone();
        match err {
            None => Ok(()),
            Some(msg) => {
                self.stop_blocking(TaskError::Shutdown);
                Err(Error::new(ErrorKind::Spawn, msg))
            }
        }
    }

    fn active_workers(st: &State) -> usize {
        st.workers.values().filter(|w| !w.retiring).count()
    }

    /// Spawns workers until the configured number is running or starting.
    fn top_up_workers(self: &Arc<Self>, st: &mut State) {
        let wanted = match st.phase {
            Phase::Running => true,
            Phase::Draining => !st.jobs.is_empty(),
            Phase::Stopping => false,
        };
        if !wanted || st.boot_failures >= MAX_BOOT_FAILURES {
            return;
        }
        while Self::active_workers(st) < self.cfg.workers {
            self.request_spawn(st);
        }
    }

    fn request_spawn(self: &Arc<Self>, st: &mut State) {
        let key = NEXT_WORKER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{key}", self.cfg.name_prefix);
        st.workers.insert(
            key,
            Worker {
                name,
                pid: 0,
                link: None,
                outstanding: VecDeque::new(),
                next_seq: 0,
                assigned: 0,
                retiring: false,
                shutdown_sent: false,
            },
        );
        st.live += 1;
        let core = self.clone();
        crate::boot::on_spawner_thread(move || core.spawn_on_spawner_thread(key));
    }

    fn spawn_on_spawner_thread(self: Arc<Self>, key: u64) {
        if self.lock().phase == Phase::Stopping {
            return self.boot_failed(key, None, "pool is stopping".into(), false);
        }
        let made = socketpair().and_then(|(ours, theirs)| {
            let counter = SharedCounter::create()?;
            let child = crate::boot::start_process(self.cfg.start_method, theirs.into_fd())?;
            Ok((ours, counter, child))
        });
        match made {
            Ok((chan, counter, child)) => {
                let pid = child.pid();
                if let Some(w) = self.lock().workers.get_mut(&key) {
                    w.pid = pid;
                }
                let core = self.clone();
                let spawned = std::thread::Builder::new()
                    .name("mproc-conn".into())
                    .spawn(move || core.serve_worker(key, chan, counter, child));
                if let Err(e) = spawned {
                    tracing::error!("cannot start a thread for worker {pid}: {e}");
                }
            }
            Err(e) => self.boot_failed(
                key,
                None,
                format!("cannot start a worker process: {e}"),
                true,
            ),
        }
    }

    fn boot_failed(self: &Arc<Self>, key: u64, exit: Option<ExitInfo>, msg: String, count: bool) {
        let mut st = self.lock();
        st.workers.remove(&key);
        st.live -= 1;
        if count {
            tracing::warn!("mproc worker failed to start: {msg}");
            st.boot_failures += 1;
            if st.boot_failures >= MAX_BOOT_FAILURES && st.ready_total == 0 {
                st.boot_error.get_or_insert(msg.clone());
            }
            let none_up = st.workers.values().all(|w| w.link.is_none());
            if st.boot_failures >= MAX_BOOT_FAILURES && none_up {
                // Nothing can run the queue: fail it rather than hang.
                let exit = exit.unwrap_or(ExitInfo {
                    code: None,
                    signal: None,
                });
                let ids: Vec<u64> = st.queue.drain(..).collect();
                for id in ids {
                    if let Some(job) = st.jobs.remove(&id) {
                        job.span.in_scope(
                            || tracing::warn!(%exit, "worker died while running the task"),
                        );
                        job.comp.resolve(Err(TaskError::WorkerDied { exit }));
                    }
                }
            }
        }
        self.top_up_workers(&mut st);
        self.finish_drain(&mut st, &mut Vec::new());
        self.notify(&mut st);
    }

    // ----- serving one worker -------------------------------------------

    fn serve_worker(
        self: Arc<Self>,
        key: u64,
        chan: UnixChannel,
        counter: SharedCounter,
        child: ChildProc,
    ) {
        let chan = Arc::new(chan);
        let counter = Arc::new(counter);
        let mut reader = FrameReader::new(self.cfg.max_frame);
        let name = self
            .lock()
            .workers
            .get(&key)
            .map(|w| w.name.clone())
            .unwrap_or_default();
        let pid = child.pid();
        let link = match self.handshake(&chan, &counter, &mut reader, &name, pid) {
            Ok(transport) => Link {
                outbox: Outbox::new(transport.clone(), self.cfg.max_frame),
                chan: transport,
                counter: counter.clone(),
            },
            Err(msg) => {
                chan.shutdown();
                let exit = child.reap(REAP_GRACE);
                drop(child); // its pidfd is closed before anyone hears of the exit
                let stopping = self.lock().phase == Phase::Stopping;
                return self.boot_failed(key, Some(exit), format!("{msg} ({exit})"), !stopping);
            }
        };
        // From here on the worker talks over the chosen transport; the
        // bootstrap socket is closed unless it is that transport.
        drop(chan);
        let chan = link.chan.clone();
        {
            let mut st = self.lock();
            let mut flush = Vec::new();
            if st.phase == Phase::Stopping {
                chan.shutdown();
            }
            if let Some(w) = st.workers.get_mut(&key) {
                w.link = Some(link.clone());
            }
            st.ready_total += 1;
            st.boot_failures = 0;
            tracing::debug!(worker = %name, pid, "mproc worker ready");
            self.fill(&mut st, &mut flush);
            self.finish_drain(&mut st, &mut flush);
            self.notify(&mut st);
            drop(st);
            run_flush(flush);
        }

        let mut events: Vec<Event> = Vec::new();
        let why = loop {
            let frame = match reader.next_frame(&*chan) {
                Ok(f) => f,
                Err(TransportError::Disconnected) => break None,
                Err(e) => break Some(e.to_string()),
            };
            match postcard::from_bytes::<ToParent<'_>>(frame) {
                Ok(ToParent::Done {
                    id,
                    exec_ns,
                    result,
                }) => events.push(Event::Done(id, exec_ns, result.map(|b| b.0.to_vec()))),
                Ok(ToParent::Cancelled { id }) => events.push(Event::Cancelled(id)),
                Ok(ToParent::Log {
                    level,
                    target,
                    message,
                }) => crate::trace::reemit(&name, pid, level, target, message),
                Ok(other) => break Some(format!("unexpected message {other:?}")),
                Err(e) => break Some(format!("malformed message: {e}")),
            }
            if !reader.has_frame() && !events.is_empty() {
                self.on_events(key, &mut events);
            }
        };
        if !events.is_empty() {
            self.on_events(key, &mut events);
        }
        if let Some(why) = why {
            tracing::error!(worker = %name, pid, "protocol error from worker, killing it: {why}");
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        chan.shutdown();
        let exit = child.reap(REAP_GRACE);
        drop(child); // its pidfd is closed before anyone hears of the exit
                     // Release the worker's socket, ring and counter before it counts as
                     // gone, so a returned `shutdown` leaves no descriptor behind.
        link.outbox.close();
        drop((link, chan, counter));
        self.on_exit(key, exit);
    }

    /// Runs the handshake on the bootstrap socket and returns the channel the
    /// worker uses from then on.
    fn handshake(
        &self,
        chan: &Arc<UnixChannel>,
        counter: &SharedCounter,
        reader: &mut FrameReader,
        name: &str,
        child_pid: u32,
    ) -> Result<Arc<dyn ByteStream>, String> {
        let timeout = TimeVal::new(HELLO_TIMEOUT.as_secs() as i64, 0);
        let _ = setsockopt(&**chan, sockopt::ReceiveTimeout, &timeout);
        let frame = reader.next_frame(&**chan).map_err(|e| match e {
            TransportError::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                "worker did not say hello in time".to_string()
            }
            e => format!("worker handshake failed: {e}"),
        })?;
        let _ = setsockopt(&**chan, sockopt::ReceiveTimeout, &TimeVal::new(0, 0));
        match postcard::from_bytes::<ToParent<'_>>(frame) {
            Ok(ToParent::Hello {
                magic,
                version,
                fingerprint,
                pid: _,
            }) => {
                if magic != MAGIC || version != PROTOCOL_VERSION {
                    return Err(format!(
                        "worker speaks protocol {version}, this program speaks {PROTOCOL_VERSION}"
                    ));
                }
                let ours = crate::task::fingerprint();
                if fingerprint != ours {
                    return Err(format!(
                        "worker is another build of the program (task registry {fingerprint:016x}, ours {ours:016x})"
                    ));
                }
            }
            _ => return Err("worker sent no valid hello".into()),
        }
        use super::TransportKind as K;
        use crate::protocol::TransportWire as W;
        let setup = |e: std::io::Error| {
            format!("cannot set up the {:?} transport: {e}", self.cfg.transport)
        };
        let (transport, wire, theirs): (Arc<dyn ByteStream>, W, Vec<OwnedFd>) =
            match self.cfg.transport {
                K::UnixSocket => (chan.clone(), W::UnixSocket, Vec::new()),
                K::Pipe => {
                    let (ours, (r, w)) = PipeChannel::pair().map_err(setup)?;
                    (Arc::new(ours), W::Pipe, vec![r, w])
                }
                K::ShmRing => {
                    let (ours, fds) =
                        ShmChannel::create(DEFAULT_RING_SIZE, child_pid).map_err(setup)?;
                    (Arc::new(ours), W::ShmRing, fds)
                }
            };
        let mut fds = vec![counter.fd()];
        fds.extend(theirs.iter().map(|f| f.as_raw_fd()));
        crate::sys::send_fds(&**chan, crate::protocol::MODE_WORKER, &fds)
            .map_err(|e| format!("handshake: {e}"))?;
        drop(theirs); // the worker holds its ends now
        let welcome = ToWorker::Welcome {
            name: name.to_string(),
            worker_id: 0,
            parent_pid: std::process::id(),
            max_frame: self.cfg.max_frame as u64,
            log_level: level_to_u8(tracing::level_filters::LevelFilter::current()),
            initializer: self
                .cfg
                .initializer
                .as_ref()
                .map(|(n, a)| (n.to_string(), a.clone())),
            transport: wire,
        };
        let mut buf = Vec::new();
        crate::protocol::encode_frame(&mut buf, &welcome, self.cfg.max_frame)
            .map_err(|e| e.message())?;
        chan.write_all(&buf)
            .map_err(|e| format!("handshake: {e}"))?;
        if wire != W::UnixSocket {
            *reader = FrameReader::new(self.cfg.max_frame);
        }
        let frame = reader
            .next_frame(&*transport)
            .map_err(|e| format!("worker died during start-up: {e}"))?;
        match postcard::from_bytes::<ToParent<'_>>(frame) {
            Ok(ToParent::Ready { init_error: None }) => Ok(transport),
            Ok(ToParent::Ready {
                init_error: Some(e),
            }) => Err(format!("initializer failed: {e}")),
            _ => Err("worker sent no valid ready".into()),
        }
    }

    fn on_events(self: &Arc<Self>, key: u64, events: &mut Vec<Event>) {
        let mut st = self.lock();
        let mut flush = Vec::new();
        for ev in events.drain(..) {
            let (id, outcome) = match ev {
                Event::Done(id, exec_ns, outcome) => {
                    if exec_ns > 0 {
                        let e = exec_ns as f64;
                        st.ewma_exec_ns = if st.ewma_exec_ns == 0.0 {
                            e
                        } else {
                            0.8 * st.ewma_exec_ns + 0.2 * e
                        };
                    }
                    (id, outcome)
                }
                Event::Cancelled(id) => (id, Err(TaskError::Cancelled)),
            };
            if let Some(w) = st.workers.get_mut(&key) {
                if let Some(pos) = w.outstanding.iter().position(|(_, j)| *j == id) {
                    w.outstanding.remove(pos);
                }
            }
            if let Some(job) = st.jobs.remove(&id) {
                if !job.aborted {
                    if !job.span.is_disabled() {
                        job.span.in_scope(|| match &outcome {
                            Ok(_) => tracing::debug!("finished"),
                            Err(e) => tracing::debug!(error = %e, "failed"),
                        });
                    }
                    job.comp.resolve(outcome);
                }
            }
        }
        if let Some(w) = st.workers.get_mut(&key) {
            if w.retiring && w.outstanding.is_empty() && !w.shutdown_sent {
                w.shutdown_sent = true;
                if let Some(l) = &w.link {
                    let _ = l.outbox.enqueue(&ToWorker::Shutdown);
                    add_flush(&mut flush, &l.outbox);
                }
            }
        }
        self.fill(&mut st, &mut flush);
        self.finish_drain(&mut st, &mut flush);
        if !st.waiters.is_empty() {
            self.notify(&mut st);
        }
        drop(st);
        run_flush(flush);
    }

    fn on_exit(self: &Arc<Self>, key: u64, exit: ExitInfo) {
        let mut st = self.lock();
        let mut flush = Vec::new();
        st.live -= 1;
        if let Some(w) = st.workers.remove(&key) {
            let started = w.link.as_ref().map_or(0, |l| l.counter.load());
            let mut requeue = Vec::new();
            let mut failed = 0;
            for (seq, id) in w.outstanding {
                let Some(job) = st.jobs.get_mut(&id) else {
                    continue;
                };
                if job.aborted {
                    st.jobs.remove(&id);
                } else if seq < started {
                    failed += 1;
                    if let Some(job) = st.jobs.remove(&id) {
                        job.span.in_scope(
                            || tracing::warn!(%exit, "worker died while running the task"),
                        );
                        job.comp.resolve(Err(TaskError::WorkerDied { exit }));
                    }
                } else {
                    job.place = Place::Queued;
                    requeue.push(id);
                }
            }
            for id in requeue.into_iter().rev() {
                st.queue.push_front(id);
            }
            if failed > 0 || !(w.retiring || st.phase != Phase::Running) {
                tracing::warn!(worker = %w.name, pid = w.pid, %exit, failed, "mproc worker exited");
            }
        }
        self.top_up_workers(&mut st);
        self.fill(&mut st, &mut flush);
        self.finish_drain(&mut st, &mut flush);
        self.notify(&mut st);
        drop(st);
        run_flush(flush);
    }

    // ----- dispatch -----------------------------------------------------

    fn window(st: &State) -> usize {
        if st.ewma_exec_ns <= 0.0 {
            return MIN_WINDOW;
        }
        ((WINDOW_NS / st.ewma_exec_ns).ceil() as usize).clamp(MIN_WINDOW, MAX_WINDOW)
    }

    fn fill(self: &Arc<Self>, st: &mut State, flush: &mut Flush) {
        if st.phase == Phase::Stopping {
            return;
        }
        let window = Self::window(st);
        let mut spawn_needed = false;
        while let Some(&id) = st.queue.front() {
            if !st.jobs.contains_key(&id) {
                st.queue.pop_front(); // cancelled or timed out while queued
                continue;
            }
            let pick = st
                .workers
                .iter()
                .filter(|(_, w)| w.link.is_some() && !w.retiring && w.outstanding.len() < window)
                .min_by_key(|(_, w)| w.outstanding.len())
                .map(|(k, _)| *k);
            let Some(wk) = pick else { break };
            st.queue.pop_front();
            let job = st.jobs.get_mut(&id).expect("checked above");
            let w = st.workers.get_mut(&wk).expect("picked above");
            let link = w.link.as_ref().expect("ready worker has a link");
            let seq = w.next_seq;
            let msg = ToWorker::Run {
                id,
                seq,
                task: job.task,
                args: Bytes(&job.payload),
            };
            if let Err(e) = link.outbox.enqueue(&msg) {
                let job = st.jobs.remove(&id).expect("present");
                job.comp.resolve(Err(TaskError::Serialization {
                    message: e.message(),
                }));
                continue;
            }
            add_flush(flush, &link.outbox);
            w.next_seq += 1;
            w.assigned += 1;
            w.outstanding.push_back((seq, id));
            job.place = Place::Sent { worker: wk, seq };
            if !job.span.is_disabled() {
                job.span.record("worker", w.name.as_str());
                job.span.in_scope(|| tracing::trace!(seq, "sent to worker"));
            }
            if let Some(max) = self.cfg.max_tasks_per_child {
                if w.assigned >= max {
                    w.retiring = true;
                    spawn_needed = true;
                    if w.outstanding.is_empty() {
                        w.shutdown_sent = true;
                    }
                }
            }
        }
        if spawn_needed {
            // A retiring worker's replacement starts now, before it leaves,
            // so recycling never stalls the queue.
            self.top_up_workers(st);
        }
    }

    /// During `shutdown`, once every job is done, asks each worker to exit.
    fn finish_drain(&self, st: &mut State, flush: &mut Flush) {
        if st.phase != Phase::Draining || !st.jobs.is_empty() {
            return;
        }
        for w in st.workers.values_mut() {
            if let (false, Some(l)) = (w.shutdown_sent, &w.link) {
                w.shutdown_sent = true;
                let _ = l.outbox.enqueue(&ToWorker::Shutdown);
                add_flush(flush, &l.outbox);
            }
        }
    }

    // ----- submitting ---------------------------------------------------

    /// Queues one request; `payload` is a postcard `Vec<Args>`.
    pub(crate) fn submit(
        self: &Arc<Self>,
        task: &'static str,
        is_async: bool,
        payload: Vec<u8>,
        timeout: Option<Duration>,
    ) -> (u64, Arc<Completion>) {
        let id = NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed);
        let comp = Completion::new();
        let overhead = task.len() + 64;
        if payload.len().saturating_add(overhead) > self.cfg.max_frame {
            comp.resolve(Err(TaskError::Serialization {
                message: format!(
                    "arguments of {} bytes exceed the {}-byte message limit (see max_message_size)",
                    payload.len(),
                    self.cfg.max_frame
                ),
            }));
            return (id, comp);
        }
        let mut st = self.lock();
        if st.phase != Phase::Running {
            drop(st);
            comp.resolve(Err(TaskError::Shutdown));
            return (id, comp);
        }
        st.jobs.insert(
            id,
            Job {
                task,
                payload,
                is_async,
                comp: comp.clone(),
                place: Place::Queued,
                aborted: false,
                span: tracing::debug_span!("mproc.task", task, id, worker = tracing::field::Empty),
            },
        );
        st.queue.push_back(id);
        if let Some(d) = timeout {
            st.timers.push(Reverse((Instant::now() + d, id)));
            if !st.timer_running {
                st.timer_running = true;
                let core = self.clone();
                std::thread::Builder::new()
                    .name("mproc-timer".into())
                    .spawn(move || core.timer_thread())
                    .expect("spawn mproc timer thread");
            }
            self.timer_cond.notify_one();
        }
        if st.boot_failures >= MAX_BOOT_FAILURES && st.workers.is_empty() {
            st.boot_failures = 0; // new work: try again
        }
        self.top_up_workers(&mut st);
        let mut flush = Vec::new();
        self.fill(&mut st, &mut flush);
        drop(st);
        run_flush(flush);
        (id, comp)
    }

    /// Resolves a job early with `err` (cancel, timeout). Returns false when
    /// it had already finished.
    pub(crate) fn abort(&self, id: u64, err: TaskError) -> bool {
        let mut st = self.lock();
        let mut flush = Vec::new();
        let Some(job) = st.jobs.get_mut(&id) else {
            return false;
        };
        if job.aborted {
            return false;
        }
        match job.place {
            Place::Queued => {
                let job = st.jobs.remove(&id).expect("present");
                job.comp.resolve(Err(err));
            }
            Place::Sent { worker, seq } => {
                job.aborted = true;
                job.comp.resolve(Err(err));
                let is_async = job.is_async;
                if let Some(w) = st.workers.get(&worker) {
                    if let Some(l) = &w.link {
                        if !is_async && l.counter.load() > seq {
                            // Running now: a sync task cannot be interrupted
                            // in place, so the worker is recycled.
                            let _ = kill(Pid::from_raw(w.pid as i32), Signal::SIGKILL);
                        } else {
                            let _ = l.outbox.enqueue(&ToWorker::Cancel { id });
                            add_flush(&mut flush, &l.outbox);
                        }
                    }
                }
            }
        }
        self.finish_drain(&mut st, &mut flush);
        drop(st);
        run_flush(flush);
        true
    }

    fn timer_thread(self: Arc<Self>) {
        let mut st = self.lock();
        loop {
            if st.phase == Phase::Stopping && st.live == 0 {
                st.timer_running = false;
                return;
            }
            let now = Instant::now();
            let mut expired = Vec::new();
            while let Some(Reverse((t, id))) = st.timers.peek().copied() {
                if t > now {
                    break;
                }
                st.timers.pop();
                if st.jobs.contains_key(&id) {
                    expired.push(id);
                }
            }
            if !expired.is_empty() {
                drop(st);
                for id in expired {
                    self.abort(id, TaskError::TimedOut);
                }
                st = self.lock();
                continue;
            }
            st = match st.timers.peek() {
                Some(Reverse((t, _))) => {
                    let d = t.saturating_duration_since(now);
                    self.timer_cond.wait_timeout(st, d).unwrap().0
                }
                None => self.timer_cond.wait(st).unwrap(),
            };
        }
    }

    // ----- stopping -----------------------------------------------------

    /// Finishes everything submitted, then stops the workers.
    pub(crate) async fn shutdown(&self) {
        self.begin_drain();
        self.until(|st| st.live == 0).await;
    }

    fn begin_drain(&self) {
        let mut st = self.lock();
        let mut flush = Vec::new();
        if st.phase == Phase::Running {
            st.phase = Phase::Draining;
        }
        self.finish_drain(&mut st, &mut flush);
        drop(st);
        run_flush(flush);
    }

    /// Resolves everything pending with `err` and stops the workers.
    pub(crate) async fn stop_now(&self, err: TaskError) {
        self.begin_stop(err);
        self.until(|st| st.live == 0).await;
    }

    /// [`stop_now`](Self::stop_now) from blocking code; waits (bounded) for
    /// the workers to be reaped.
    pub(crate) fn stop_blocking(&self, err: TaskError) {
        self.begin_stop(err);
        self.wait_blocking(|st| st.live == 0, Some(Duration::from_secs(10)));
    }

    /// Stops accepting work; queued work still runs, then the workers exit.
    pub(crate) fn close(&self) {
        self.begin_drain();
    }

    /// Waits until every worker has been reaped (after `close` or a stop).
    pub(crate) fn join_blocking(&self) {
        self.wait_blocking(|st| st.live == 0, None);
    }

    fn begin_stop(&self, err: TaskError) {
        let mut st = self.lock();
        st.phase = Phase::Stopping;
        for (_, job) in st.jobs.drain() {
            job.comp.resolve(Err(err.clone()));
        }
        st.queue.clear();
        st.timers.clear();
        for w in st.workers.values() {
            if let Some(l) = &w.link {
                l.chan.shutdown();
            }
            if w.pid != 0 {
                // A running task is not interrupted by end of stream; the
                // process is not reaped yet, so its pid is still its own.
                let _ = kill(Pid::from_raw(w.pid as i32), Signal::SIGKILL);
            }
        }
        self.timer_cond.notify_all();
        self.notify(&mut st);
    }

    // ----- observing ----------------------------------------------------

    /// Pids of the live worker processes.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let st = self.lock();
        let mut v: Vec<u32> = st
            .workers
            .values()
            .map(|w| w.pid)
            .filter(|p| *p != 0)
            .collect();
        v.sort_unstable();
        v
    }

    /// Names and pids of the ready workers.
    pub(crate) fn ready_workers(&self) -> Vec<(String, u32)> {
        let st = self.lock();
        st.workers
            .values()
            .filter(|w| w.link.is_some())
            .map(|w| (w.name.clone(), w.pid))
            .collect()
    }

    fn until<F: Fn(&State) -> bool + Unpin>(&self, pred: F) -> Until<'_, F> {
        Until { core: self, pred }
    }

    fn wait_blocking(&self, pred: impl Fn(&State) -> bool, limit: Option<Duration>) -> bool {
        let deadline = limit.map(|d| Instant::now() + d);
        let mut st = self.lock();
        while !pred(&st) {
            match deadline {
                None => st = self.changed.wait(st).unwrap(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    st = self.changed.wait_timeout(st, d - now).unwrap().0;
                }
            }
        }
        true
    }
}

enum Event {
    Done(u64, u64, Outcome),
    Cancelled(u64),
}

/// A future that is ready once `pred` holds for the state.
struct Until<'a, F> {
    core: &'a Core,
    pred: F,
}

impl<F: Fn(&State) -> bool + Unpin> Future for Until<'_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.core.lock();
        if (self.pred)(&st) {
            return Poll::Ready(());
        }
        if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            st.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_frame;

    fn core() -> Arc<Core> {
        Core::new(Config {
            workers: 1,
            max_tasks_per_child: None,
            initializer: None,
            max_frame: 1 << 20,
            name_prefix: "PoolWorker",
            transport: super::super::TransportKind::UnixSocket,
            start_method: super::super::StartMethod::Spawn,
        })
    }

    /// Runs the parent's side of the handshake against a fake worker that
    /// sends `hello` bytes, and returns the parent's verdict.
    fn handshake_with(hello: Vec<u8>) -> Result<(), String> {
        let (ours, theirs) = socketpair().unwrap();
        let fake = std::thread::spawn(move || {
            theirs.write_all(&hello).unwrap();
            theirs // keep the socket open until the verdict
        });
        let counter = SharedCounter::create().unwrap();
        let mut reader = FrameReader::new(1 << 20);
        let ours = Arc::new(ours);
        let r = core().handshake(
            &ours,
            &counter,
            &mut reader,
            "PoolWorker-0",
            std::process::id(),
        );
        drop(fake.join().unwrap());
        r.map(|_| ())
    }

    fn hello(magic: [u8; 4], version: u32, fingerprint: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        let msg = ToParent::Hello {
            magic,
            version,
            fingerprint,
            pid: 1,
        };
        encode_frame(&mut buf, &msg, 1 << 20).unwrap();
        buf
    }

    #[test]
    fn a_worker_of_another_build_is_refused() {
        let other = crate::task::fingerprint() ^ 0xdead_beef;
        let err = handshake_with(hello(MAGIC, PROTOCOL_VERSION, other)).unwrap_err();
        assert!(err.contains("another build"), "{err}");
    }

    #[test]
    fn a_worker_speaking_another_protocol_is_refused() {
        let ours = crate::task::fingerprint();
        let err = handshake_with(hello(MAGIC, PROTOCOL_VERSION + 1, ours)).unwrap_err();
        assert!(err.contains("protocol"), "{err}");
    }

    #[test]
    fn garbage_instead_of_a_hello_is_refused() {
        let mut junk = Vec::new();
        let s = mproc_transport::begin_frame(&mut junk);
        junk.extend_from_slice(&[0xff; 40]);
        mproc_transport::end_frame(&mut junk, s, 1 << 20).unwrap();
        let err = handshake_with(junk).unwrap_err();
        assert!(err.contains("no valid hello"), "{err}");
        // A length prefix over the limit is refused before any allocation.
        let err = handshake_with((u32::MAX).to_le_bytes().to_vec()).unwrap_err();
        assert!(err.contains("exceeds"), "{err}");
    }
}
