//! A node's workers under an executor's scheduler: [`ClusterLauncher`]
//! starts local workers up to the configured number and gives the rest of
//! the scheduler's slots to nodes, each as a [`RemoteLink`] — one more
//! implementation of the scheduler's worker seam (`sched::link`).
//!
//! # Work sent ahead to a node, and taken back
//! A local worker and its parent share a claim table, so work sent ahead to
//! a busy worker is taken back in place when another worker is idle. A
//! node is across a network: a slot is sent up to [`SLOT_DEPTH`] requests
//! (to hide the round trip behind short tasks), each marked started on the
//! driver's side, and what waits there is *asked* back (`recalls()`): the
//! node gives a request back only if it has not started, and the scheduler
//! requeues it only when the node says so (`Event::Returned`). So nothing
//! strands on a node behind a long task, and nothing runs twice. A
//! request is stopped in place (`cancels_in_place()`): the node cancels or
//! kills only the worker running it, never another request of the slot. A
//! lost node fails what it held (`NodeLost`, or runs it again under
//! `retries`). The node runs each request on its own scheduler, which has
//! one worker per slot it offers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{lock, NodeConn, Shared};
use crate::error::ExitInfo;
use crate::executor::sched::link::{BootError, Event, Gone, Launcher, WorkerLink};
use crate::executor::sched::proc_link::ProcLauncher;
use crate::executor::sched::Core;
use crate::protocol::claims::Claims;
use crate::protocol::cluster::ToNode;
use crate::protocol::{Bytes, FrameError, ToWorker};

/// Starts local workers first, then node slots.
#[derive(Debug)]
pub(crate) struct ClusterLauncher {
    shared: Arc<Shared>,
    local_max: usize,
    local: Mutex<HashSet<u64>>,
    remote: Mutex<HashMap<u64, Arc<NodeConn>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("address", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ClusterLauncher {
    pub(crate) fn new(shared: Arc<Shared>, local_max: usize) -> ClusterLauncher {
        ClusterLauncher {
            shared,
            local_max,
            local: Mutex::new(HashSet::new()),
            remote: Mutex::new(HashMap::new()),
        }
    }
}

/// Reports to a scheduler from a thread of its own: the scheduler may hold
/// its lock where a launch or a kill is asked for.
fn report(f: impl FnOnce() + Send + 'static) {
    if std::thread::Builder::new()
        .name("mproc-node-report".into())
        .spawn(f)
        .is_err()
    {
        tracing::error!("cannot start a thread to report a node worker's state");
    }
}

impl Launcher for ClusterLauncher {
    fn launch(&self, core: Arc<Core>, key: u64, name: String) {
        {
            let mut local = lock(&self.local);
            if local.len() < self.local_max {
                local.insert(key);
                drop(local);
                return ProcLauncher.launch(core, key, name);
            }
        }
        let Some(node) = self.shared.pick_node() else {
            return report(move || {
                core.worker_failed(
                    key,
                    BootError::Handshake("no node of the cluster is left to run on".into()),
                )
            });
        };
        node.used.fetch_add(1, Ordering::AcqRel);
        lock(&self.remote).insert(key, node.clone());
        let link = Arc::new_cyclic(|me| RemoteLink {
            me: me.clone(),
            node: node.clone(),
            key,
            core: Arc::downgrade(&core),
            claims: Claims::local(),
            ended: AtomicBool::new(false),
            state: Mutex::new(Slot::default()),
        });
        lock(&node.links).push(Arc::downgrade(&link));
        report(move || {
            core.worker_started(key, link.clone());
            if link.node.alive.load(Ordering::Acquire) {
                core.worker_ready(key);
            } else {
                link.lost();
            }
        });
    }

    fn extra_capacity(&self) -> usize {
        self.shared.capacity()
    }

    fn released(&self, key: u64) {
        if lock(&self.local).remove(&key) {
            return;
        }
        if let Some(node) = lock(&self.remote).remove(&key) {
            node.used.fetch_sub(1, Ordering::AcqRel);
            lock(&node.links).retain(|l| l.upgrade().is_some_and(|l| l.key != key));
        }
    }
}

/// Requests a slot may hold: enough to hide a round trip to the node
/// behind short tasks; what waits there is recalled when a worker elsewhere
/// is idle.
const SLOT_DEPTH: usize = 32;

#[derive(Debug, Default)]
struct Slot {
    /// The requests sent there and not answered: job id → seq.
    held: std::collections::HashMap<u64, u64>,
    /// Told to retire or close: ends once idle.
    closing: bool,
}

/// One worker slot of a node, as a scheduler sees it.
#[derive(Debug)]
pub(crate) struct RemoteLink {
    me: Weak<RemoteLink>,
    node: Arc<NodeConn>,
    key: u64,
    core: Weak<Core>,
    /// This side's claim table: a request is started when sent.
    claims: Claims,
    ended: AtomicBool,
    state: Mutex<Slot>,
}

impl std::fmt::Debug for NodeConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConn")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl RemoteLink {
    /// Reports the slot gone, once.
    fn end(&self, why: Gone) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(core) = self.core.upgrade() {
            let key = self.key;
            report(move || core.worker_gone(key, why));
        }
    }

    /// The node is lost.
    pub(crate) fn lost(&self) {
        self.end(Gone::NodeLost(self.node.info.id));
    }

    /// The node gave request `id` back, unstarted.
    pub(crate) fn returned(&self, id: u64) {
        self.answered(vec![Event::Returned { id }]);
    }

    /// The node answered: `Done` for requests that ran, `Returned` for
    /// ones it gave back.
    pub(crate) fn answered(&self, mut events: Vec<Event>) {
        let (closing, idle) = {
            let mut st = lock(&self.state);
            for ev in &events {
                let id = match ev {
                    Event::Done { id, .. } | Event::Returned { id } => *id,
                    _ => continue,
                };
                if let Some(seq) = st.held.remove(&id) {
                    self.claims.finish(seq);
                }
            }
            (st.closing, st.held.is_empty())
        };
        if let Some(core) = self.core.upgrade() {
            core.worker_events(self.key, &mut events);
        }
        if closing && idle {
            self.end(Gone::Exited(ExitInfo {
                code: Some(0),
                signal: None,
            }));
        }
    }

    fn retire(&self) {
        let idle = {
            let mut st = lock(&self.state);
            st.closing = true;
            st.held.is_empty()
        };
        if idle {
            self.end(Gone::Exited(ExitInfo {
                code: Some(0),
                signal: None,
            }));
        }
    }
}

impl WorkerLink for RemoteLink {
    fn pid(&self) -> u32 {
        0
    }

    fn claims(&self) -> &Claims {
        &self.claims
    }

    fn enqueue(&self, msg: &ToWorker<'_>) -> Result<(), FrameError> {
        match msg {
            // An executor with a cluster encodes in band; a node's worker
            // could not read this batch.
            ToWorker::Run { oob: true, .. } => Err(FrameError::OutOfBand),
            ToWorker::Run {
                id,
                seq,
                task,
                args,
                ..
            } => {
                // Never taken back through the table: see the module docs.
                self.claims.start(*seq);
                lock(&self.state).held.insert(*id, *seq);
                lock(&self.node.routes).insert(*id, self.me.clone());
                self.node.out.enqueue(&ToNode::Run {
                    id: *id,
                    task,
                    args: Bytes(args.0),
                })
            }
            ToWorker::Cancel { id } => self.node.out.enqueue(&ToNode::Stop { id: *id }),
            ToWorker::Shutdown => {
                self.retire();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn flush(&self) {
        self.node.out.flush();
    }

    fn kill(&self) {
        let held: Vec<u64> = lock(&self.state).held.drain().map(|(id, _)| id).collect();
        for id in held {
            lock(&self.node.routes).remove(&id);
            let _ = self.node.out.send(&ToNode::Stop { id });
        }
        self.end(Gone::Exited(ExitInfo {
            code: None,
            signal: Some(libc::SIGKILL),
        }));
    }

    fn close(&self) {
        self.retire();
    }

    fn max_outstanding(&self) -> usize {
        SLOT_DEPTH
    }

    fn usable(&self) -> bool {
        self.node.alive.load(Ordering::Acquire) && !self.ended.load(Ordering::Acquire)
    }

    fn recalls(&self) -> bool {
        true
    }

    fn recall(&self, id: u64) {
        let _ = self.node.out.send(&ToNode::Recall { id });
    }

    fn cancels_in_place(&self) -> bool {
        true
    }
}
