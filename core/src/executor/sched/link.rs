//! The seam between the scheduler and its workers.
//!
//! The scheduler never touches a process, a socket or a signal itself. It
//! asks a [`Launcher`] for a worker, talks to each worker through a
//! [`WorkerLink`], and learns what happened through the `worker_*` methods
//! of [`Core`](super::Core), which a link calls from any thread:
//!
//! 1. `worker_started(key, link)` once the worker exists (its link can be
//!    killed from then on);
//! 2. `worker_ready(key)` once it can take requests, or
//!    `worker_failed(key, error)` if it never will (the link has reaped it);
//! 3. `worker_events(key, events)` for what it answered;
//! 4. `worker_exited(key, exit)` once it is gone for good.
//!
//! The process-backed implementation is `proc_link`; the unit tests drive
//! the scheduler through an in-process fake. Remote workers will be one
//! more implementation.

use std::fmt::Debug;
use std::sync::Arc;

use super::Core;
use crate::address::NodeId;
use crate::error::{ExitInfo, TaskError};
use crate::outbox::Sidecars;
use crate::protocol::batch::Outcome;
use crate::protocol::claims::Claims;
use crate::protocol::{FrameError, ToWorker};

/// Starts workers for a scheduler.
pub(crate) trait Launcher: Send + Sync + Debug {
    /// Starts worker `key`, named `name`, and reports to `core` as the module
    /// docs describe. Must not block on the worker.
    fn launch(&self, core: Arc<Core>, key: u64, name: String);
    /// Workers it can start beyond the configured local ones (a cluster's
    /// node slots).
    fn extra_capacity(&self) -> usize {
        0
    }
    /// Worker `key` is gone (exited, lost or never started).
    fn released(&self, _key: u64) {}
}

/// One worker, as the scheduler sees it.
pub(crate) trait WorkerLink: Send + Sync + Debug {
    /// Its process id (0 where there is none).
    fn pid(&self) -> u32;
    /// The claim table shared with the worker.
    fn claims(&self) -> &Claims;
    /// Queues a message without blocking; [`flush`](Self::flush) sends.
    fn enqueue(&self, msg: &ToWorker<'_>) -> Result<(), FrameError>;
    /// Queues `sides` as the sidecars of `msg`, then `msg` (a request
    /// whose arguments are encoded out of band). A link that cannot carry
    /// sidecars refuses.
    fn enqueue_with_sidecars(
        &self,
        msg: &ToWorker<'_>,
        sides: &Sidecars,
    ) -> Result<(), FrameError> {
        if sides.is_empty() {
            self.enqueue(msg)
        } else {
            Err(FrameError::OutOfBand)
        }
    }
    /// Sends what was queued, without blocking the caller.
    fn flush(&self);
    /// Kills the worker at once (never another process).
    fn kill(&self);
    /// Closes the channel: the worker sees end of stream and exits.
    fn close(&self);
    /// The most requests it may hold at once. A worker whose requests can
    /// never be taken back (a node's: see `cluster`) gets only what it can
    /// start at once, so nothing waits there behind a long task.
    fn max_outstanding(&self) -> usize {
        usize::MAX
    }
    /// False once the worker cannot take work, before its end is reported
    /// (a node known lost: its other slots must not be sent a task that
    /// was just taken back from one of them).
    fn usable(&self) -> bool {
        true
    }
    /// True when work sent ahead is taken back by asking the worker, which
    /// answers later ([`recall`](Self::recall), then `Event::Returned`),
    /// instead of in the claim table (a node's slot: see `cluster`).
    fn recalls(&self) -> bool {
        false
    }
    /// Asks for request `id` back; the answer is an `Event::Returned` when
    /// it had not started, nothing when it had.
    fn recall(&self, _id: u64) {}
    /// True when a running request, sync or async, is stopped in place by a
    /// `Cancel` (a node stops it on its own worker), so stopping one never
    /// costs the others this worker holds.
    fn cancels_in_place(&self) -> bool {
        false
    }
}

/// Why a ready worker is gone.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Gone {
    /// Its process ended.
    Exited(ExitInfo),
    /// The node it ran on is lost.
    NodeLost(NodeId),
}

impl Gone {
    /// What a task it had started gets.
    pub(crate) fn task_error(self) -> TaskError {
        match self {
            Gone::Exited(exit) => TaskError::WorkerDied { exit },
            Gone::NodeLost(node) => TaskError::NodeLost { node },
        }
    }
}

/// What a worker answered.
#[derive(Debug)]
pub(crate) enum Event {
    /// A request finished: the encoded results, or one error for the batch.
    Done {
        id: u64,
        exec_ns: u64,
        outcome: Outcome,
    },
    /// The first results of a batch too large for one message (with their
    /// sidecars when the batch is out of band).
    Part {
        id: u64,
        count: u32,
        items: Vec<u8>,
        sides: Vec<Vec<u8>>,
    },
    /// A running async request was cancelled.
    Cancelled { id: u64 },
    /// The worker is about to abort while running request `id`.
    LastWords { id: u64, message: String },
    /// Request `id`, recalled, had not started: it is back.
    Returned { id: u64 },
}

/// Why a worker never became ready.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BootError {
    /// The process (or what it needs: a socket, a shared page, a thread)
    /// could not be created.
    #[error("cannot start a worker process: {0}{hint}", hint = crate::error::limit_hint(.0))]
    Spawn(std::io::Error),
    /// The worker broke off the handshake.
    #[error("worker handshake failed: {0}")]
    Handshake(String),
    /// The worker was SIGKILLed from outside (the OOM killer, a user)
    /// during its start-up: that says nothing about the next start.
    #[error("worker killed during start-up: {0}")]
    Killed(String),
    /// The worker is another build or speaks another protocol.
    #[error("{0}")]
    Incompatible(String),
    /// Its initializer failed.
    #[error("initializer failed: {0}")]
    Initializer(String),
}

impl BootError {
    /// The task error for work that no worker could be started for.
    pub(crate) fn task_error(&self) -> TaskError {
        TaskError::Spawn {
            message: self.to_string(),
        }
    }
}
