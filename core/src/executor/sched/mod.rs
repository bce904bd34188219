//! The scheduler shared by [`Executor`](super::Executor) and
//! [`Pool`](super::Pool): the job table, the queue, the worker set, and the
//! accounting that decides what runs where.
//!
//! # Dispatch (`dispatch.rs`)
//! Jobs wait in one FIFO queue. A job goes to an idle worker first; when
//! none is idle it may be *sent ahead* to the least loaded worker, up to a
//! window that covers about 200 µs of measured work (2 while tasks are long,
//! up to 128 while they take microseconds), so a worker's channel is never
//! idle. Work sent ahead is never stranded: when a worker is idle and the
//! queue is empty, requests that have waited more than [`STEAL_AFTER`]
//! behind another worker's running task are taken back through the claim
//! table (see `protocol::claims`) and sent to the idle worker — even from a
//! worker that is stopped or wedged.
//!
//! # Submission
//! `submit` takes the state lock only when the queue is empty, to place
//! its job at once. While work waits in the queue a new job could not go
//! before it anyway, so `submit` sends it into a lock-free intake instead,
//! off the lock the result readers hold; the next `fill` (which a queued
//! job guarantees) takes the batch in. `settle` publishes whether the queue
//! is backed up and, when it is not, takes in what raced with it, so no
//! job waits in the intake with nothing to come for it.
//!
//! # Accounting
//! Every request sent to a worker has a per-worker `seq` and a slot in the
//! claim table shared with it. The worker claims a slot before it starts
//! the request; the parent takes requests back, and dooms the one it kills
//! for, by compare-and-swap on the same slot. So:
//! * when a worker dies, its requests that never started go back to the
//!   front of the queue and the others fail with
//!   [`TaskError::WorkerDied`]: only what it was running fails, and no task
//!   ever runs twice;
//! * a timeout or `cancel` kills a worker only after dooming *that*
//!   request's claim while it runs; a request that finished first keeps its
//!   result.
//!
//! # Lifetimes
//! Workers come from a [`Launcher`](link::Launcher) and are reached through
//! [`WorkerLink`](link::WorkerLink)s (see `link.rs`); the process-backed
//! ones run a reader thread per worker. `live` counts workers not yet
//! reaped; stopping waits for it to reach zero and joins every thread the
//! scheduler started, so nothing outlives a dropped executor.

mod dispatch;
mod events;
pub(crate) mod link;
pub(crate) mod proc_link;
mod timer;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use mproc_transport::{Spin, LINK_SPIN_NS, LONG_TASK_NS};

use self::link::{BootError, Launcher, WorkerLink};
use super::completion::{Completion, Gate};
use crate::error::{Error, ErrorKind, TaskError};
use crate::outbox::Sidecars;
use crate::protocol::batch::{Args, Encoded, Parts};
use crate::protocol::claims::Claim;
use crate::protocol::ToWorker;

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
        // The table finds a key's bucket from the low bits and tags it
        // with the top 7. Low bits = the id itself: sequential ids (tasks
        // are submitted, dispatched and resolved in about that order) sit
        // in neighbouring buckets, so a burst of 100 000 is walked through
        // memory in order instead of at random, one cache miss per lookup.
        // Top bits = a Fibonacci hash of it, so neighbours get different
        // tags and a probe rarely compares a key in vain.
        const TAG: u64 = !0 << 57;
        self.0 = (n & !TAG) | (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) & TAG);
    }
}

type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh task id, for handles that fail before reaching a scheduler.
pub(crate) fn next_task_id() -> u64 {
    NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed)
}
static NEXT_WORKER: AtomicU64 = AtomicU64::new(1);

/// How long a request sent ahead may wait behind another before an idle
/// worker takes it (plus its transfer time; see `Job::steal_due`).
pub(crate) const STEAL_AFTER: Duration = Duration::from_millis(1);
/// How long starting the initial workers may take in all.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Failed starts in a row, with no worker up, before queued work fails.
const MAX_BOOT_FAILURES: u32 = 3;
/// The first and the longest pause before starting a worker again after a
/// failed start.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long stopping waits for workers to be reaped.
const STOP_LIMIT: Duration = Duration::from_secs(10);

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
    pub(crate) start_method: crate::spawn::StartMethod,
    /// Large byte strings in arguments go out of band (see
    /// `protocol::oob`): only where every worker is a local process.
    pub(crate) out_of_band: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `start`: the initial workers are coming up.
    Starting,
    Running,
    /// `shutdown`: finish what was submitted, accept nothing new.
    Draining,
    /// `shutdown_now` or drop: everything is being torn down.
    Stopping,
}

#[derive(Debug, Clone, Copy)]
enum Place {
    Queued,
    Sent { worker: u64, seq: u64, at: Instant },
}

/// What a submitter asks of one job besides running it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    /// Fail it with `TimedOut` this long after submission.
    pub(crate) timeout: Option<Duration>,
    /// Run it again, up to this many times, when the worker (or node)
    /// running it is lost.
    pub(crate) retries: u32,
}

#[derive(Debug)]
struct Job {
    /// Runs again allowed when its worker is lost (`Limits::retries`, at
    /// most 65 535: a job's table entry stays within 120 bytes).
    retries_left: u16,
    task: &'static str,
    payload: Args,
    /// The arguments are encoded out of band: `sides` are their sidecars
    /// (none: no allocation for the common small request), sent before
    /// every `Run` of this job.
    oob: bool,
    sides: Option<Sidecars>,
    is_async: bool,
    /// Part of a map whose caller waits for all of it (see
    /// [`Core::submit_many`]).
    gather: bool,
    comp: Arc<Completion>,
    place: Place,
    /// Resolved early (cancel, timeout) while a worker still holds it.
    aborted: bool,
    /// Asked back from a worker that answers later (a node's slot).
    recalling: bool,
    /// Results that arrived in parts before the final answer (boxed: rare,
    /// and a job of at most 120 bytes is freed by another thread without
    /// the allocator's lock).
    parts: Option<Box<Parts>>,
    /// `mproc.task{task, id, worker}`: the parent-side span of this task.
    span: JobSpan,
}

impl Job {
    /// The bytes its arguments put on the wire, sidecars included.
    fn wire_len(&self) -> usize {
        self.sides
            .iter()
            .flat_map(|set| set.iter())
            .fold(self.payload.len(), |n, s| n.saturating_add(s.len()))
    }
}

impl Drop for Job {
    /// Large sidecars serve the next large message (the payload's own
    /// buffer goes back when `Args` drops).
    fn drop(&mut self) {
        // Shared with an outbox only while it writes them.
        if let Some(sides) = self.sides.as_mut().and_then(Arc::get_mut) {
            sides.drain(..).for_each(mproc_transport::spare::give);
        }
    }
}

// Freed on a result reader's thread, allocated on the submitter's: at
// most 120 bytes, glibc's fast bins take it back without a lock.
const _: () = assert!(std::mem::size_of::<Job>() <= 120);

/// A job's span, kept (boxed) only when a subscriber enabled it, so a job
/// costs nothing for it when nobody traces.
#[derive(Debug)]
struct JobSpan(Option<Box<tracing::Span>>);

impl JobSpan {
    fn new(span: tracing::Span) -> Self {
        JobSpan((!span.is_disabled()).then(|| Box::new(span)))
    }

    fn is_disabled(&self) -> bool {
        self.0.is_none()
    }

    /// Runs `f` inside the span, or as it is when there is none (its
    /// events are emitted either way).
    fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.0 {
            Some(span) => span.in_scope(f),
            None => f(),
        }
    }

    /// Records the worker the task went to.
    fn record_worker(&self, name: &str) {
        if let Some(span) = &self.0 {
            span.record("worker", name);
        }
    }
}

#[derive(Debug)]
struct Worker {
    name: String,
    link: Option<Arc<dyn WorkerLink>>,
    ready: bool,
    /// `(seq, job id)` of requests sent and not resolved, in `seq` order.
    outstanding: VecDeque<(u64, u64)>,
    next_seq: u64,
    assigned: u64,
    retiring: bool,
    shutdown_sent: bool,
    /// Being killed for a timeout or cancel: takes no more work.
    doomed: bool,
    /// What it said before it aborted.
    last_words: Option<String>,
}

/// The state of starting workers.
#[derive(Debug, Default)]
struct Boot {
    /// Failed starts in a row.
    failures: u32,
    /// No start before this instant (backoff).
    retry_at: Option<Instant>,
    /// Why the initial start failed.
    start_error: Option<BootError>,
}

/// A submission on its way into the job table (see [`Core::submit`]).
#[derive(Debug)]
struct Intake {
    id: u64,
    job: Box<Job>,
    /// When it times out, counted from submission.
    deadline: Option<Instant>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// The other of the two intake buffers (see [`Core::admit`]): empty,
    /// kept for its capacity.
    intake_spare: Vec<Intake>,
    /// Boxed, so the table stays dense (16 bytes a slot) and a lookup
    /// rarely misses the cache in a table of many pending jobs.
    jobs: IdMap<Box<Job>>,
    queue: VecDeque<u64>,
    workers: IdMap<Worker>,
    /// Workers requested and not yet reaped.
    live: usize,
    /// Workers that ever completed their handshake.
    ready_total: usize,
    boot: Boot,
    ewma_exec_ns: f64,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// When an idle worker should look again for work to take back.
    steal_at: Option<Instant>,
    /// When the tables of a drained burst shrink (see [`Core::plan_trim`]).
    trim_at: Option<Instant>,
    waiters: Vec<Waker>,
    /// While a gathered map is placed: the requests each worker may hold
    /// at least, whatever the window (see [`Core::submit_many`]); else 0.
    spread: usize,
}

/// Tables smaller than this are never shrunk.
const TRIM_FLOOR: usize = 4096;
/// How long the tables stay under a sixteenth full before they shrink.
const TRIM_AFTER: Duration = Duration::from_millis(500);

impl State {
    /// True when the job table or the queue is large and under a
    /// sixteenth full: a burst has drained.
    fn oversized(&self) -> bool {
        let sparse = |len: usize, cap: usize| cap > TRIM_FLOOR && len < cap / 16;
        sparse(self.jobs.len(), self.jobs.capacity())
            || sparse(self.queue.len(), self.queue.capacity())
    }

    /// Gives back the memory of a burst that has drained: the job table
    /// and the queue shrink, so a burst of a million tasks does not keep
    /// its tables for good.
    fn trim(&mut self) {
        if self.jobs.capacity() > TRIM_FLOOR && self.jobs.len() < self.jobs.capacity() / 16 {
            self.jobs
                .shrink_to((self.jobs.len() * 2).max(TRIM_FLOOR / 4));
        }
        if self.queue.capacity() > TRIM_FLOOR && self.queue.len() < self.queue.capacity() / 16 {
            self.queue
                .shrink_to((self.queue.len() * 2).max(TRIM_FLOOR / 4));
        }
    }
}

/// How [`Core::abort`] treats a request that is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Running {
    /// Stop it: cancel an async task, kill the worker of a sync one.
    Stop,
    /// Let it finish; only what has not started is taken back.
    Spare,
}

/// The shared state of one executor or pool.
#[derive(Debug)]
pub(crate) struct Core {
    cfg: Config,
    launcher: Arc<dyn Launcher>,
    st: Mutex<State>,
    /// Where `submit` puts a job while the queue is backed up, without
    /// taking the state lock: the next `fill` takes the whole buffer in at
    /// once. Its lock is only ever held for a push or a swap.
    intake: Mutex<Vec<Intake>>,
    /// Jobs sent to `intake` and not yet taken in (it may read one too
    /// many or too few for a moment; only zero versus not zero matters).
    pending: AtomicUsize,
    /// The queue had work waiting when the lock was last released, so a
    /// later `fill` is sure to come (a result, an exit, a worker up).
    /// While it is set, `submit` leaves its job in `intake`.
    backed_up: AtomicBool,
    changed: Condvar,
    timer: timer::Timer,
    /// Threads started for this scheduler (workers' readers), joined when
    /// it stops.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// More jobs than workers: every worker has work, so a thread that
    /// spins for a result only takes a core from one (see
    /// [`spin_worth`](Self::spin_worth)).
    backlog: AtomicBool,
    /// A backlog of tasks that take long (see
    /// [`long_backlog`](Self::long_backlog)).
    long_backlog: AtomicBool,
    /// The measured task time is [`LONG_TASK_NS`] or more (see
    /// [`long_tasks`](Self::long_tasks)).
    long_tasks: AtomicBool,
    /// How long callers blocked on a result of this scheduler poll for it
    /// before they sleep.
    caller_spin: Spin,
    /// The gates of gathered maps whose callers wait (see
    /// [`Core::watch_gate`]); usually none.
    gates: Mutex<Vec<Arc<Gate>>>,
    /// `gates.len()`, read without the lock.
    gate_count: AtomicUsize,
    /// How long a nudged caller polls for the end of its map.
    endgame_spin: Spin,
}

/// How long a caller nudged by an idle worker polls for the rest of its
/// map before it sleeps again: in a map spread evenly the other workers'
/// last tasks end within tens of microseconds of the first worker's, and
/// the poll runs on the CPU that worker left idle, once per map.
const ENDGAME_SPIN_NS: u32 = 150_000;

/// A gate registered with [`Core::watch_gate`], until dropped.
pub(crate) struct GateWatch<'a> {
    core: &'a Core,
    gate: Arc<Gate>,
}

impl Drop for GateWatch<'_> {
    fn drop(&mut self) {
        let mut gates = self.core.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates.retain(|g| !Arc::ptr_eq(g, &self.gate));
        self.core.gate_count.store(gates.len(), Ordering::Relaxed);
    }
}

type Flush = Vec<Arc<dyn WorkerLink>>;

fn add_flush(flush: &mut Flush, link: &Arc<dyn WorkerLink>) {
    if !flush.iter().any(|l| Arc::ptr_eq(l, link)) {
        flush.push(link.clone());
    }
}

/// Sends what was queued for each worker in `flush`. Workers last seen
/// waiting on this thread's CPU go last: waking such a worker may hand it
/// this CPU at once (it preempts the writer), and the writes to the others
/// would then wait for this thread's next turn, up to a whole share of a
/// map later; a worker on another CPU never takes this one.
fn run_flush(mut flush: Flush) {
    if flush.len() > 1 {
        if let Some(here) = crate::sys::current_cpu() {
            flush.sort_by_key(|l| l.claims().worker_cpu() == Some(here));
        }
    }
    for l in flush {
        l.flush();
    }
}

impl Core {
    /// A scheduler whose workers are processes.
    pub(crate) fn new(cfg: Config) -> Arc<Self> {
        Self::with_launcher(cfg, Arc::new(proc_link::ProcLauncher))
    }

    /// A scheduler whose workers come from `launcher`.
    pub(crate) fn with_launcher(cfg: Config, launcher: Arc<dyn Launcher>) -> Arc<Self> {
        Arc::new(Core {
            cfg,
            launcher,
            intake: Mutex::new(Vec::new()),
            pending: AtomicUsize::new(0),
            backed_up: AtomicBool::new(false),
            st: Mutex::new(State {
                intake_spare: Vec::new(),
                phase: Phase::Starting,
                jobs: IdMap::default(),
                queue: VecDeque::new(),
                workers: IdMap::default(),
                live: 0,
                ready_total: 0,
                boot: Boot::default(),
                ewma_exec_ns: 0.0,
                timers: BinaryHeap::new(),
                steal_at: None,
                trim_at: None,
                waiters: Vec::new(),
                spread: 0,
            }),
            changed: Condvar::new(),
            timer: timer::Timer::default(),
            threads: Mutex::new(Vec::new()),
            backlog: AtomicBool::new(false),
            long_backlog: AtomicBool::new(false),
            long_tasks: AtomicBool::new(false),
            caller_spin: Spin::polite(LINK_SPIN_NS),
            gates: Mutex::new(Vec::new()),
            gate_count: AtomicUsize::new(0),
            endgame_spin: Spin::steady(ENDGAME_SPIN_NS),
        })
    }

    /// Registers the gate of a gathered map's caller, until the returned
    /// watch drops: when a worker goes idle while work is still out, the
    /// gate is nudged (see [`Gate::nudge`]).
    ///
    /// A worker that went idle before the gate was registered (its share
    /// was done before the caller got here) nudges it now.
    pub(crate) fn watch_gate(&self, gate: &Arc<Gate>) -> GateWatch<'_> {
        {
            let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
            gates.push(gate.clone());
            self.gate_count.store(gates.len(), Ordering::Relaxed);
        }
        // After registering: a worker going idle from now on nudges it.
        let idle = self
            .lock()
            .workers
            .values()
            .any(|w| w.ready && w.outstanding.is_empty());
        if idle {
            gate.nudge();
        }
        GateWatch {
            core: self,
            gate: gate.clone(),
        }
    }

    /// The spinner of a caller nudged by an idle worker.
    pub(crate) fn endgame_spin(&self) -> &Spin {
        &self.endgame_spin
    }

    /// Nudges every watched gate: a worker has just gone idle.
    fn nudge_gates(&self) {
        if self.gate_count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        for g in gates.iter() {
            g.nudge();
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    /// True when a thread waiting for one of this scheduler's answers
    /// (a caller, a worker's reader thread) may poll for it briefly before
    /// it sleeps: no more jobs than workers, so an answer is a round trip
    /// away and a core is free to poll on. Under a backlog every core has a
    /// worker to run, and answers come in batches that amortise their
    /// wake-ups.
    pub(crate) fn spin_worth(&self) -> bool {
        !self.backlog.load(Ordering::Relaxed)
    }

    /// True under a backlog of tasks that take [`LONG_TASK_NS`] or more:
    /// every CPU is computing, and a worker's reader thread should sleep
    /// for answers only (see `ByteStream::wake_on_input_only`).
    pub(crate) fn long_backlog(&self) -> bool {
        self.long_backlog.load(Ordering::Relaxed)
    }

    /// True while the measured task time is [`LONG_TASK_NS`] or more: a
    /// worker's reader thread then runs under `SCHED_BATCH` (see
    /// `proc_link::serve`). Its worker's answers come at most every
    /// [`LONG_TASK_NS`], and a wake-up that preempted another worker in
    /// the middle of a task would stretch that task (by about 25 µs in a
    /// map of 0.36 ms tasks, WORKLOADS.md W3).
    pub(crate) fn long_tasks(&self) -> bool {
        self.long_tasks.load(Ordering::Relaxed)
    }

    /// The spinner of a caller blocked on a result, when spinning is worth
    /// it (see [`spin_worth`](Self::spin_worth)).
    pub(crate) fn caller_spin(&self) -> Option<&Spin> {
        self.spin_worth().then_some(&self.caller_spin)
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

    /// Once a burst has drained, has the timer shrink its tables
    /// [`TRIM_AFTER`] later, if they are still oversized then. Not at once:
    /// shrinking while the burst drains would reallocate them several
    /// times, a burst that follows would grow them again, and every large
    /// free makes glibc sweep all its small free blocks (a burst's worth).
    fn plan_trim(self: &Arc<Self>, st: &mut State) {
        if !st.oversized() {
            st.trim_at = None;
        } else if st.trim_at.is_none() {
            let at = Instant::now() + TRIM_AFTER;
            st.trim_at = Some(at);
            self.timer.wake_at(self, at);
        }
    }

    /// Keeps a thread started for this scheduler, to join when it stops.
    pub(crate) fn adopt_thread(&self, handle: std::thread::JoinHandle<()>) {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.retain(|h| !h.is_finished());
        threads.push(handle);
    }

    // ----- starting -----------------------------------------------------

    /// Starts the configured number of workers and waits until all are up;
    /// fails at the first that cannot start.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<(), Error> {
        self.begin_start();
        // Each worker comes up, or fails, within the handshake's own time
        // limit, so this wait is bounded without a timer of its own.
        let deadline = Instant::now() + START_LIMIT;
        self.until(move |st| Self::start_settled(st, deadline))
            .await;
        self.finish_start(deadline)
    }

    /// [`start`](Self::start) for blocking code.
    pub(crate) fn start_blocking(self: &Arc<Self>) -> Result<(), Error> {
        self.begin_start();
        let deadline = Instant::now() + START_LIMIT;
        self.wait_blocking(|st| Self::start_settled(st, deadline), Some(START_LIMIT));
        self.finish_start(deadline)
    }

    fn begin_start(self: &Arc<Self>) {
        let mut st = self.lock();
        if self.cfg.workers == 0 {
            // Only a cluster's node workers: nothing local to wait for.
            st.phase = Phase::Running;
        }
        self.top_up_workers(&mut st);
    }

    fn start_settled(st: &State, deadline: Instant) -> bool {
        st.phase != Phase::Starting || st.boot.start_error.is_some() || Instant::now() >= deadline
    }

    fn finish_start(self: &Arc<Self>, deadline: Instant) -> Result<(), Error> {
        let mut st = self.lock();
        let n = self.cfg.workers;
        let err = match st.boot.start_error.take() {
            Some(e) => Some(e),
            None if st.phase == Phase::Starting && Instant::now() >= deadline => {
                Some(BootError::Handshake(format!(
                    "only {} of {n} workers were up after {START_LIMIT:?}",
                    st.ready_total
                )))
            }
            None => None,
        };
        drop(st);
        match err {
            None => Ok(()),
            Some(e) => {
                self.stop_blocking(TaskError::Shutdown);
                Err(Error::with_source(
                    ErrorKind::Spawn,
                    format!("cannot start {n} workers"),
                    e,
                ))
            }
        }
    }

    /// The workers to keep: the configured local ones plus what the
    /// launcher offers elsewhere (the slots of a cluster's nodes).
    pub(crate) fn capacity(&self) -> usize {
        self.cfg.workers + self.launcher.extra_capacity()
    }

    /// The launcher can start more (or fewer) workers than before: a node
    /// joined or was lost.
    pub(crate) fn capacity_changed(self: &Arc<Self>) {
        let mut st = self.lock();
        let mut flush = Vec::new();
        self.top_up_workers(&mut st);
        self.fill(&mut st, &mut flush);
        self.notify(&mut st);
        drop(st);
        run_flush(flush);
    }

    fn active_workers(st: &State) -> usize {
        st.workers
            .values()
            .filter(|w| !w.retiring && !w.doomed)
            .count()
    }

    /// Starts workers until the configured number is running or starting,
    /// unless a failed start asked for a pause.
    fn top_up_workers(self: &Arc<Self>, st: &mut State) {
        let wanted = match st.phase {
            Phase::Starting | Phase::Running => true,
            Phase::Draining => !st.jobs.is_empty(),
            Phase::Stopping => false,
        };
        if !wanted || st.boot.start_error.is_some() {
            return;
        }
        if let Some(t) = st.boot.retry_at {
            if Instant::now() < t {
                self.timer.wake_at(self, t);
                return;
            }
            st.boot.retry_at = None;
        }
        while Self::active_workers(st) < self.capacity() {
            let key = NEXT_WORKER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}-{key}", self.cfg.name_prefix);
            st.workers.insert(
                key,
                Worker {
                    name: name.clone(),
                    link: None,
                    ready: false,
                    outstanding: VecDeque::new(),
                    next_seq: 0,
                    assigned: 0,
                    retiring: false,
                    shutdown_sent: false,
                    doomed: false,
                    last_words: None,
                },
            );
            st.live += 1;
            self.launcher.launch(self.clone(), key, name);
        }
    }

    // ----- submitting ---------------------------------------------------

    /// Queues one request; `payload` is an encoded batch of arguments.
    pub(crate) fn submit(
        self: &Arc<Self>,
        task: &'static str,
        is_async: bool,
        payload: impl Into<Encoded>,
        limits: Limits,
    ) -> (u64, Arc<Completion>) {
        let (id, comp, entry) = self.new_job(task, is_async, payload.into(), limits);
        let Some(entry) = entry else {
            return (id, comp);
        };
        if self.backed_up.load(Ordering::SeqCst) {
            // Work is waiting already, so this job could not be placed now
            // anyway: leave it for the `fill` that is sure to come, and
            // keep off the lock the result readers use.
            self.intake
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(entry);
            // After the push, so that whoever sees the count also finds
            // the job. Paired with `settle`: either it sees this count, or
            // this sees `backed_up` cleared.
            self.pending.fetch_add(1, Ordering::SeqCst);
            if self.backed_up.load(Ordering::SeqCst) {
                return (id, comp);
            }
            // The queue drained meanwhile: take the job in now (`admit`
            // finds it in `intake`).
            let mut st = self.lock();
            let mut flush = Vec::new();
            self.fill(&mut st, &mut flush);
            drop(st);
            run_flush(flush);
            return (id, comp);
        }
        self.place_now(std::iter::once(entry));
        (id, comp)
    }

    /// Queues several jobs at once, in order, under one lock, and writes to
    /// each worker once: a node submitting the requests of one read from
    /// its driver. Each job is as [`submit`](Self::submit) makes it.
    pub(crate) fn submit_all(
        self: &Arc<Self>,
        jobs: impl IntoIterator<Item = (&'static str, bool, Encoded, Limits)>,
    ) -> Vec<(u64, Arc<Completion>)> {
        let (out, entries) = self.new_jobs(jobs);
        if !entries.is_empty() {
            self.place_now(entries);
        }
        out
    }

    /// Queues the chunks of a map whose caller waits for all of them, in
    /// order, under one lock: they are placed together (each idle worker
    /// gets its first request before any is sent ahead) and spread over
    /// the ready workers at once, past the window, so each worker's share
    /// leaves in one write and it is woken once. They are marked
    /// *gathered*: a worker holds their answers back (kept in the claim
    /// table, so none is lost with the worker) while it runs the next
    /// gathered request it holds, and the parent is woken once per worker,
    /// not once per chunk. Work that waits behind a slow chunk is taken
    /// back as usual (`Core::steal`).
    pub(crate) fn submit_many(
        self: &Arc<Self>,
        task: &'static str,
        is_async: bool,
        payloads: Vec<Encoded>,
        limits: Limits,
    ) -> Vec<(u64, Arc<Completion>)> {
        let (out, mut entries) =
            self.new_jobs(payloads.into_iter().map(|p| (task, is_async, p, limits)));
        for e in &mut entries {
            e.job.gather = true;
        }
        if !entries.is_empty() {
            let n = entries.len();
            self.place_with(entries, |st| {
                let ready = st
                    .workers
                    .values()
                    .filter(|w| w.ready && !w.retiring && !w.doomed)
                    .count();
                n.div_ceil(ready.max(1))
            });
        }
        out
    }

    /// [`new_job`](Self::new_job) for each of `jobs`: their ids and
    /// completions, in order, and the jobs to place (those that did not
    /// fail at once).
    fn new_jobs(
        &self,
        jobs: impl IntoIterator<Item = (&'static str, bool, Encoded, Limits)>,
    ) -> (Vec<(u64, Arc<Completion>)>, Vec<Intake>) {
        let jobs = jobs.into_iter();
        let mut out = Vec::with_capacity(jobs.size_hint().0);
        let mut entries = Vec::with_capacity(jobs.size_hint().0);
        for (task, is_async, payload, limits) in jobs {
            let (id, comp, entry) = self.new_job(task, is_async, payload, limits);
            out.push((id, comp));
            entries.extend(entry);
        }
        (out, entries)
    }

    /// A new job and its completion; the job is `None` when it failed
    /// already (its arguments exceed the message limit).
    fn new_job(
        &self,
        task: &'static str,
        is_async: bool,
        payload: Encoded,
        limits: Limits,
    ) -> (u64, Arc<Completion>, Option<Intake>) {
        let id = NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed);
        let comp = Completion::new();
        let overhead = task.len() + 64;
        let size = payload.wire_len();
        if size.saturating_add(overhead) > self.cfg.max_frame {
            comp.resolve(Err(TaskError::Serialization {
                message: format!(
                    "arguments of {size} bytes exceed the {}-byte message limit (see max_message_size)",
                    self.cfg.max_frame
                ),
            }));
            return (id, comp, None);
        }
        let Encoded {
            bytes: payload,
            sides,
            oob,
        } = payload;
        let job = Box::new(Job {
            retries_left: u16::try_from(limits.retries).unwrap_or(u16::MAX),
            task,
            payload,
            oob,
            sides: (!sides.is_empty()).then(|| Arc::new(sides)),
            is_async,
            gather: false,
            comp: comp.clone(),
            place: Place::Queued,
            aborted: false,
            recalling: false,
            parts: None,
            span: JobSpan::new(tracing::debug_span!(
                "mproc.task",
                task,
                id,
                worker = tracing::field::Empty
            )),
        });
        let entry = Intake {
            id,
            job,
            deadline: limits.timeout.map(|d| Instant::now() + d),
        };
        (id, comp, Some(entry))
    }

    /// Takes `entries` in under the lock, after what waits in `intake`,
    /// and places what can go now.
    fn place_now(self: &Arc<Self>, entries: impl IntoIterator<Item = Intake>) {
        self.place_with(entries, |_| 0);
    }

    /// [`place_now`](Self::place_now), with each worker allowed at least
    /// `spread(state)` requests for this placement (see [`State::spread`]).
    fn place_with(
        self: &Arc<Self>,
        entries: impl IntoIterator<Item = Intake>,
        spread: impl FnOnce(&State) -> usize,
    ) {
        let mut st = self.lock();
        let mut flush = Vec::new();
        // What waits in `intake` goes first, in order.
        self.admit(&mut st);
        for entry in entries {
            self.admit_one(&mut st, entry);
        }
        st.spread = spread(&st);
        self.fill(&mut st, &mut flush);
        st.spread = 0;
        drop(st);
        run_flush(flush);
    }

    /// Takes every job waiting in `intake` into the job table and queue:
    /// swaps the intake's buffer for the empty spare in one short hold of
    /// its lock, then admits the batch in order.
    fn admit(self: &Arc<Self>, st: &mut State) {
        if self.pending.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut batch = std::mem::take(&mut st.intake_spare);
        std::mem::swap(
            &mut batch,
            &mut *self.intake.lock().unwrap_or_else(|p| p.into_inner()),
        );
        self.pending.fetch_sub(batch.len(), Ordering::SeqCst);
        for entry in batch.drain(..) {
            self.admit_one(st, entry);
        }
        // A burst's buffer is not kept for good.
        if batch.capacity() <= TRIM_FLOOR {
            st.intake_spare = batch;
        }
    }

    /// Queues one submitted job, or fails it when the pool no longer
    /// accepts work.
    fn admit_one(self: &Arc<Self>, st: &mut State, entry: Intake) {
        let Intake { id, job, deadline } = entry;
        if !matches!(st.phase, Phase::Running | Phase::Starting) {
            job.comp.resolve(Err(TaskError::Shutdown));
            return;
        }
        st.jobs.insert(id, job);
        st.queue.push_back(id);
        if let Some(at) = deadline {
            st.timers.push(Reverse((at, id)));
            self.timer.wake_at(self, at);
        }
        if st.boot.failures >= MAX_BOOT_FAILURES && st.live == 0 {
            st.boot.retry_at = None; // new work: try again at once
        }
        self.top_up_workers(st);
    }

    /// Publishes whether work waits in the queue, for `submit`. When it
    /// does not, jobs sent to `intake` meanwhile are taken in here and
    /// placed; returns true when it took any in.
    fn settle(self: &Arc<Self>, st: &mut State) -> bool {
        let backed_up = !st.queue.is_empty() && st.phase != Phase::Stopping;
        self.backed_up.store(backed_up, Ordering::SeqCst);
        if backed_up || self.pending.load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.admit(st);
        true
    }

    /// Resolves a job early with `err` (cancel, timeout, a dropped map).
    /// Returns false when it had finished (or, with [`Running::Spare`], was
    /// running) and keeps its own result.
    pub(crate) fn abort(self: &Arc<Self>, id: u64, err: TaskError, running: Running) -> bool {
        let mut st = self.lock();
        let mut flush = Vec::new();
        // The job may still wait in `intake`.
        self.admit(&mut st);
        let done = self.abort_locked(&mut st, id, err, running, &mut flush);
        // A worker being killed is replaced at once, and the work taken back
        // from it goes elsewhere now.
        self.top_up_workers(&mut st);
        self.fill(&mut st, &mut flush);
        self.finish_drain(&mut st, &mut flush);
        if done {
            self.notify(&mut st);
        }
        drop(st);
        run_flush(flush);
        done
    }

    fn abort_locked(
        &self,
        st: &mut State,
        id: u64,
        err: TaskError,
        running: Running,
        flush: &mut Flush,
    ) -> bool {
        let Some(job) = st.jobs.get(&id) else {
            return false;
        };
        if job.aborted {
            return false;
        }
        let (worker, seq) = match job.place {
            Place::Queued => {
                let job = st.jobs.remove(&id).expect("present");
                job.comp.resolve(Err(err));
                return true;
            }
            Place::Sent { worker, seq, .. } => (worker, seq),
        };
        let is_async = job.is_async;
        let Some(link) = st.workers.get(&worker).and_then(|w| w.link.clone()) else {
            return false;
        };
        match link.claims().revoke(seq) {
            Ok(()) => {
                // Never started, never will: gone from the worker's books.
                Self::forget_outstanding(st, worker, id, true);
                let job = st.jobs.remove(&id).expect("present");
                job.comp.resolve(Err(err));
                true
            }
            Err(Claim::Started)
                if running == Running::Stop && (is_async || link.cancels_in_place()) =>
            {
                let job = st.jobs.get_mut(&id).expect("present");
                job.aborted = true;
                job.comp.resolve(Err(err));
                if link.enqueue(&ToWorker::Cancel { id }).is_ok() {
                    add_flush(flush, &link);
                }
                true
            }
            Err(Claim::Started) if running == Running::Stop => {
                if link.claims().doom(seq).is_err() {
                    return false; // it finished just now: its result stands
                }
                let job = st.jobs.get_mut(&id).expect("present");
                job.aborted = true;
                job.comp.resolve(Err(err));
                if let Some(w) = st.workers.get_mut(&worker) {
                    w.doomed = true;
                }
                // A sync task cannot be interrupted in place: the worker is
                // killed, and what it held that had not started goes first
                // to another worker.
                self.take_back_all(st, worker);
                link.kill();
                true
            }
            Err(_) => false,
        }
    }

    /// Removes job `id` from worker `key`'s outstanding requests.
    fn forget_outstanding(st: &mut State, key: u64, id: u64, given_back: bool) {
        if let Some(w) = st.workers.get_mut(&key) {
            if let Some(pos) = w.outstanding.iter().position(|(_, j)| *j == id) {
                w.outstanding.remove(pos);
                if given_back {
                    w.assigned = w.assigned.saturating_sub(1);
                }
            }
        }
    }

    // ----- stopping -----------------------------------------------------

    /// Finishes everything submitted, then stops the workers.
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        self.begin_drain();
        self.until(|st| st.live == 0).await;
        self.join_threads();
    }

    fn begin_drain(self: &Arc<Self>) {
        let mut st = self.lock();
        let mut flush = Vec::new();
        // Submitted before the shutdown: runs.
        self.admit(&mut st);
        if matches!(st.phase, Phase::Running | Phase::Starting) {
            st.phase = Phase::Draining;
        }
        self.finish_drain(&mut st, &mut flush);
        self.notify(&mut st);
        drop(st);
        run_flush(flush);
    }

    /// Resolves everything pending with `err` and stops the workers.
    pub(crate) async fn stop_now(self: &Arc<Self>, err: TaskError) {
        self.begin_stop(err);
        self.until(|st| st.live == 0).await;
        self.join_threads();
    }

    /// [`stop_now`](Self::stop_now) from blocking code; waits (bounded) for
    /// the workers to be reaped and joins the scheduler's threads.
    pub(crate) fn stop_blocking(self: &Arc<Self>, err: TaskError) {
        self.begin_stop(err);
        if !self.wait_blocking(|st| st.live == 0, Some(STOP_LIMIT)) {
            tracing::warn!("mproc workers were not reaped within {STOP_LIMIT:?}");
        }
        self.join_threads();
    }

    /// Stops accepting work; queued work still runs, then the workers exit.
    pub(crate) fn close(self: &Arc<Self>) {
        self.begin_drain();
    }

    /// Waits until every worker has been reaped (after `close` or a stop).
    pub(crate) fn join_blocking(&self) {
        self.wait_blocking(|st| st.live == 0, None);
        self.join_threads();
    }

    fn begin_stop(self: &Arc<Self>, err: TaskError) {
        let mut st = self.lock();
        // Submitted before the stop: resolved with `err` below, as queued
        // work is; anything later fails with `Shutdown` (`settle`).
        self.admit(&mut st);
        st.phase = Phase::Stopping;
        for (_, job) in st.jobs.drain() {
            job.comp.resolve(Err(err.clone()));
        }
        st.queue.clear();
        st.timers.clear();
        while self.settle(&mut st) {}
        for w in st.workers.values() {
            if let Some(l) = &w.link {
                // A running task is not interrupted by end of stream.
                l.close();
                l.kill();
            }
        }
        self.notify(&mut st);
        drop(st);
        self.timer.stop();
    }

    /// Joins the timer and every finished worker thread (never the calling
    /// thread itself).
    fn join_threads(&self) {
        if self.lock().phase == Phase::Stopping {
            self.timer.join();
        }
        let me = std::thread::current().id();
        let handles: Vec<_> = {
            let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
            let (mine, others): (Vec<_>, Vec<_>) =
                threads.drain(..).partition(|h| h.thread().id() == me);
            threads.extend(mine);
            others
        };
        for h in handles {
            let _ = h.join();
        }
    }

    // ----- observing ----------------------------------------------------

    /// Pids of the live worker processes.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let st = self.lock();
        let mut v: Vec<u32> = st
            .workers
            .values()
            .filter_map(|w| w.link.as_ref().map(|l| l.pid()))
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
            .filter(|w| w.ready)
            .filter_map(|w| w.link.as_ref().map(|l| (w.name.clone(), l.pid())))
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
                None => st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    st = self
                        .changed
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        true
    }
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
