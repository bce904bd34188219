//! An in-process stand-in for worker processes, so the scheduler's
//! accounting can be tested without starting any: the test plays the
//! worker, claiming and finishing requests and dying when it likes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::link::{BootError, Event, Launcher, WorkerLink};
use super::{Config, Core};
use crate::error::{ExitInfo, TaskError};
use crate::protocol::batch::Items;
use crate::protocol::claims::Claims;
use crate::protocol::{FrameError, ToWorker};

/// A message the scheduler sent to a fake worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Sent {
    Run { id: u64, seq: u64, gather: bool },
    Cancel { id: u64 },
    Shutdown,
}

#[derive(Debug)]
pub(super) struct FakeLink {
    pub(super) key: u64,
    claims: Claims,
    sent: Mutex<Vec<Sent>>,
    pub(super) killed: AtomicBool,
    pub(super) closed: AtomicBool,
    /// Its exit has been reported.
    exited: AtomicBool,
    core: Weak<Core>,
    /// Plays a node's slot: holds up to 4, answers recalls later.
    pub(super) remote: AtomicBool,
    /// The requests asked back, in order.
    pub(super) recalled: Mutex<Vec<u64>>,
}

impl WorkerLink for FakeLink {
    fn pid(&self) -> u32 {
        1_000_000 + self.key as u32
    }
    fn claims(&self) -> &Claims {
        &self.claims
    }
    fn enqueue(&self, msg: &ToWorker<'_>) -> Result<(), FrameError> {
        let m = match msg {
            ToWorker::Run {
                id, seq, gather, ..
            } => Sent::Run {
                id: *id,
                seq: *seq,
                gather: *gather,
            },
            ToWorker::Cancel { id } => Sent::Cancel { id: *id },
            ToWorker::Shutdown => Sent::Shutdown,
            _ => return Ok(()),
        };
        self.sent.lock().unwrap().push(m);
        Ok(())
    }
    fn flush(&self) {}
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        // A killed process dies: reported from another thread, as a real
        // reader thread would (the scheduler may hold its lock here).
        if !self.exited.swap(true, Ordering::SeqCst) {
            let (core, key) = (self.core.clone(), self.key);
            std::thread::spawn(move || {
                if let Some(core) = core.upgrade() {
                    core.worker_exited(key, KILLED);
                }
            });
        }
    }
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
    fn max_outstanding(&self) -> usize {
        if self.remote.load(Ordering::SeqCst) {
            4
        } else {
            usize::MAX
        }
    }
    fn recalls(&self) -> bool {
        self.remote.load(Ordering::SeqCst)
    }
    fn recall(&self, id: u64) {
        self.recalled.lock().unwrap().push(id);
    }
    fn cancels_in_place(&self) -> bool {
        self.remote.load(Ordering::SeqCst)
    }
}

impl FakeLink {
    pub(super) fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    /// The `(id, seq)` of every request sent to this worker.
    pub(super) fn runs(&self) -> Vec<(u64, u64)> {
        self.sent()
            .into_iter()
            .filter_map(|m| match m {
                Sent::Run { id, seq, .. } => Some((id, seq)),
                _ => None,
            })
            .collect()
    }

    /// The ids of the requests sent here marked gathered (part of a map
    /// whose caller waits for all of it).
    pub(super) fn gathered(&self) -> Vec<u64> {
        self.sent()
            .into_iter()
            .filter_map(|m| match m {
                Sent::Run {
                    id, gather: true, ..
                } => Some(id),
                _ => None,
            })
            .collect()
    }
}

/// What a launch does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// Waits for the test to call [`FakeLauncher::ready_all`].
    Manual,
    /// Fails at once, as when the process cannot be created (EMFILE).
    Fail,
    /// Is SIGKILLed from outside during its start-up.
    Killed,
}

#[derive(Debug, Default)]
struct Inner {
    pending: Vec<u64>,
    links: HashMap<u64, Arc<FakeLink>>,
    plans: Vec<Plan>,
    launches: Vec<Instant>,
}

/// Starts fake workers.
#[derive(Debug, Default)]
pub(super) struct FakeLauncher {
    inner: Mutex<Inner>,
    cond: Condvar,
}

impl Launcher for FakeLauncher {
    fn launch(&self, core: Arc<Core>, key: u64, _name: String) {
        let mut inner = self.inner.lock().unwrap();
        inner.launches.push(Instant::now());
        let plan = if inner.plans.is_empty() {
            Plan::Manual
        } else {
            inner.plans.remove(0)
        };
        match plan {
            Plan::Manual => inner.pending.push(key),
            Plan::Fail => {
                // Reported from another thread, as a real launch would: the
                // scheduler holds its lock while it launches.
                std::thread::spawn(move || {
                    let e = std::io::Error::from_raw_os_error(libc::EMFILE);
                    core.worker_failed(key, BootError::Spawn(e));
                });
            }
            Plan::Killed => {
                std::thread::spawn(move || {
                    let e = BootError::Killed("peer disconnected (killed by signal 9)".into());
                    core.worker_failed(key, e);
                });
            }
        }
        self.cond.notify_all();
    }
}

impl FakeLauncher {
    /// The next launches follow `plans` (then [`Plan::Manual`]).
    pub(super) fn plan(&self, plans: &[Plan]) {
        self.inner.lock().unwrap().plans.extend_from_slice(plans);
    }

    /// Brings every pending worker up; returns their links.
    pub(super) fn ready_all(&self, core: &Arc<Core>) -> Vec<Arc<FakeLink>> {
        let pending: Vec<u64> = std::mem::take(&mut self.inner.lock().unwrap().pending);
        let mut out = Vec::new();
        for key in pending {
            let link = Arc::new(FakeLink {
                key,
                claims: Claims::local(),
                sent: Mutex::new(Vec::new()),
                killed: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                exited: AtomicBool::new(false),
                core: Arc::downgrade(core),
                remote: AtomicBool::new(false),
                recalled: Mutex::new(Vec::new()),
            });
            self.inner.lock().unwrap().links.insert(key, link.clone());
            core.worker_started(key, link.clone());
            core.worker_ready(key);
            out.push(link);
        }
        out.sort_by_key(|l| l.key);
        out
    }

    /// Waits (up to 5 s) until `n` launches are pending.
    pub(super) fn wait_pending(&self, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut inner = self.inner.lock().unwrap();
        while inner.pending.len() < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            inner = self.cond.wait_timeout(inner, deadline - now).unwrap().0;
        }
        true
    }

    /// Reports every pending launch as failed (for a scheduler that stops).
    pub(super) fn fail_pending(&self, core: &Arc<Core>) {
        let pending: Vec<u64> = std::mem::take(&mut self.inner.lock().unwrap().pending);
        for key in pending {
            let e = std::io::Error::from_raw_os_error(libc::ECANCELED);
            core.worker_failed(key, BootError::Spawn(e));
        }
    }

    /// When each launch happened.
    pub(super) fn launches(&self) -> Vec<Instant> {
        self.inner.lock().unwrap().launches.clone()
    }
}

/// A scheduler of `workers` fake workers, all up.
pub(super) fn running(
    workers: usize,
    max_tasks_per_child: Option<u64>,
) -> (Arc<Core>, Arc<FakeLauncher>, Vec<Arc<FakeLink>>) {
    let launcher = Arc::new(FakeLauncher::default());
    let core = Core::with_launcher(config(workers, max_tasks_per_child), launcher.clone());
    core.begin_start();
    let links = launcher.ready_all(&core);
    assert_eq!(links.len(), workers);
    (core, launcher, links)
}

pub(super) fn config(workers: usize, max_tasks_per_child: Option<u64>) -> Config {
    Config {
        workers,
        max_tasks_per_child,
        initializer: None,
        max_frame: 1 << 20,
        name_prefix: "FakeWorker",
        transport: crate::executor::TransportKind::UnixSocket,
        start_method: crate::spawn::StartMethod::Spawn,
        out_of_band: false,
    }
}

/// The worker's side of one request: claim it, "run" it, answer `value`.
/// False when the parent had taken it back (nothing is answered).
pub(super) fn run(core: &Arc<Core>, link: &FakeLink, id: u64, seq: u64, value: u64) -> bool {
    if !link.claims().start(seq) {
        return false;
    }
    finish(core, link, id, seq, value)
}

/// The end of a request the worker had started. False if it was doomed.
pub(super) fn finish(core: &Arc<Core>, link: &FakeLink, id: u64, seq: u64, value: u64) -> bool {
    if !link.claims().finish(seq) {
        return false;
    }
    let mut items = Items::with_capacity(1);
    items.push(Ok::<u64, TaskError>(value));
    let batch = items.finish(usize::MAX, |_, _, _| {}).to_vec();
    core.worker_events(
        link.key,
        &mut vec![Event::Done {
            id,
            exec_ns: 1_000,
            outcome: Ok(batch.into()),
        }],
    );
    true
}

/// The worker process ends (once: a kill already ended it).
pub(super) fn exit(core: &Arc<Core>, link: &FakeLink, exit: ExitInfo) {
    if !link.exited.swap(true, Ordering::SeqCst) {
        core.worker_exited(link.key, exit);
    }
}

/// Stops the scheduler as an owner's drop does; no worker is left.
pub(super) fn stop(core: &Arc<Core>, launcher: &FakeLauncher) {
    core.begin_stop(TaskError::Shutdown);
    launcher.fail_pending(core);
    let started = Instant::now();
    core.stop_blocking(TaskError::Shutdown);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "workers were left behind"
    );
    assert_eq!(core.lock().live, 0);
}

pub(super) const KILLED: ExitInfo = ExitInfo {
    code: None,
    signal: Some(libc::SIGKILL),
};
