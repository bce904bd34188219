//! What links report about their workers: started, ready, failed to start,
//! answers, exit. Each updates the books under the one state lock, then
//! dispatches again.

use std::sync::Arc;
use std::time::Instant;

use super::link::{BootError, Event, Gone, WorkerLink};
use super::{
    add_flush, run_flush, Core, Phase, Place, BACKOFF_MAX, BACKOFF_MIN, MAX_BOOT_FAILURES,
};
use crate::error::{ExitInfo, TaskError};
use crate::protocol::batch::{join_parts, Batch};
use crate::protocol::claims::Claim;
use crate::protocol::ToWorker;

impl Core {
    /// Worker `key` exists; `link` can reach (and kill) it.
    pub(crate) fn worker_started(&self, key: u64, link: Arc<dyn WorkerLink>) {
        let mut st = self.lock();
        let stopping = st.phase == Phase::Stopping;
        if let Some(w) = st.workers.get_mut(&key) {
            w.link = Some(link.clone());
        }
        drop(st);
        if stopping {
            link.close();
            link.kill();
        }
    }

    /// Worker `key` can take requests.
    pub(crate) fn worker_ready(self: &Arc<Self>, key: u64) {
        let mut st = self.lock();
        let mut flush = Vec::new();
        let Some(w) = st.workers.get_mut(&key) else {
            return;
        };
        w.ready = true;
        let name = w.name.clone();
        let link = w.link.clone();
        st.ready_total += 1;
        st.boot.failures = 0;
        if st.phase == Phase::Starting && st.ready_total >= self.cfg.workers {
            st.phase = Phase::Running;
        }
        if st.phase == Phase::Stopping {
            if let Some(l) = &link {
                l.close();
                l.kill();
            }
        }
        tracing::debug!(worker = %name, pid = link.map_or(0, |l| l.pid()), "mproc worker ready");
        self.fill(&mut st, &mut flush);
        self.finish_drain(&mut st, &mut flush);
        self.notify(&mut st);
        drop(st);
        run_flush(flush);
    }

    /// Worker `key` will never be ready (its process, if any, is reaped).
    pub(crate) fn worker_failed(self: &Arc<Self>, key: u64, err: BootError) {
        let mut st = self.lock();
        st.workers.remove(&key);
        st.live -= 1;
        self.launcher.released(key);
        match st.phase {
            Phase::Stopping => {}
            Phase::Starting => {
                // The initial start fails as a whole, with this cause.
                if st.boot.start_error.is_none() {
                    st.boot.start_error = Some(err);
                }
            }
            Phase::Running | Phase::Draining if matches!(err, BootError::Killed(_)) => {
                // Replaced at once, like a ready worker that dies: not a
                // failed start, so a kill storm never fails queued work.
                tracing::warn!("mproc {err}; starting another");
                self.top_up_workers(&mut st);
            }
            Phase::Running | Phase::Draining => {
                st.boot.failures += 1;
                let n = st.boot.failures;
                let pause = BACKOFF_MIN
                    .saturating_mul(1 << (n - 1).min(16))
                    .min(BACKOFF_MAX);
                tracing::warn!(
                    failures = n,
                    retry_in = ?pause,
                    "mproc worker failed to start: {err}"
                );
                st.boot.retry_at = Some(Instant::now() + pause);
                let none_up = !st.workers.values().any(|w| w.ready);
                if n >= MAX_BOOT_FAILURES && none_up {
                    // Nothing can run the queue: fail it rather than hang.
                    self.fail_queue(&mut st, &err.task_error());
                }
                self.top_up_workers(&mut st);
            }
        }
        let mut flush = Vec::new();
        // The queue may have been failed: `submit` must hear it is empty.
        self.fill(&mut st, &mut flush);
        self.finish_drain(&mut st, &mut flush);
        self.notify(&mut st);
        drop(st);
        run_flush(flush);
    }

    /// Worker `key` answered. What the completions' hooks send with
    /// `Outbox::send_deferred` (a node relaying answers to its driver)
    /// leaves in one write per outbox, after the lock is released.
    pub(crate) fn worker_events(self: &Arc<Self>, key: u64, events: &mut Vec<Event>) {
        crate::outbox::deferring_flushes(|| self.take_events(key, events));
    }

    fn take_events(self: &Arc<Self>, key: u64, events: &mut Vec<Event>) {
        let mut st = self.lock();
        let mut flush = Vec::new();
        let had_work = st
            .workers
            .get(&key)
            .is_some_and(|w| !w.outstanding.is_empty());
        for ev in events.drain(..) {
            let (id, outcome) = match ev {
                Event::Done {
                    id,
                    exec_ns,
                    outcome,
                } => {
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
                Event::Part {
                    id,
                    count,
                    items,
                    sides,
                } => {
                    if let Some(job) = st.jobs.get_mut(&id) {
                        match &mut job.parts {
                            // The first part's buffer is kept as it is.
                            None => job.parts = Some(Box::new((u64::from(count), items, sides))),
                            Some(parts) => {
                                parts.0 += u64::from(count);
                                parts.1.extend_from_slice(&items);
                                parts.2.extend(sides);
                            }
                        }
                    }
                    continue;
                }
                Event::Cancelled { id } => (id, Err(TaskError::Cancelled)),
                Event::Returned { id } => {
                    Self::forget_outstanding(&mut st, key, id, true);
                    let back = match st.jobs.get_mut(&id) {
                        Some(job) if !job.aborted => {
                            job.recalling = false;
                            job.place = Place::Queued;
                            true
                        }
                        Some(_) => {
                            st.jobs.remove(&id);
                            false
                        }
                        None => false,
                    };
                    if back {
                        st.queue.push_front(id);
                    }
                    continue;
                }
                Event::LastWords { id, message } => {
                    if let Some(job) = st.jobs.get(&id) {
                        job.span.in_scope(
                            || tracing::error!(%message, "task panicked; its worker aborts"),
                        );
                    }
                    if let Some(w) = st.workers.get_mut(&key) {
                        w.last_words = Some(message);
                    }
                    continue;
                }
            };
            Self::forget_outstanding(&mut st, key, id, false);
            if let Some(mut job) = st.jobs.remove(&id) {
                if !job.aborted {
                    let outcome = match (job.parts.take(), outcome) {
                        (Some(parts), Ok(last)) => join_parts(*parts, last),
                        (_, o) => o,
                    };
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
        self.plan_trim(&mut st);
        if let Some(w) = st.workers.get_mut(&key) {
            if w.retiring && w.outstanding.is_empty() && !w.shutdown_sent {
                w.shutdown_sent = true;
                if let Some(l) = &w.link {
                    if l.enqueue(&ToWorker::Shutdown).is_ok() {
                        add_flush(&mut flush, l);
                    }
                }
            }
        }
        self.fill(&mut st, &mut flush);
        self.finish_drain(&mut st, &mut flush);
        if !st.waiters.is_empty() {
            self.notify(&mut st);
        }
        if had_work
            && st
                .workers
                .get(&key)
                .is_some_and(|w| w.outstanding.is_empty())
        {
            // Idle with nothing left to give it: a CPU is free.
            self.nudge_gates();
        }
        drop(st);
        run_flush(flush);
    }

    /// Worker `key`, once ready, has exited (and been reaped): what it had
    /// not started runs elsewhere, what it had started fails (or runs again
    /// under `retries`).
    pub(crate) fn worker_exited(self: &Arc<Self>, key: u64, exit: ExitInfo) {
        self.worker_gone(key, Gone::Exited(exit));
    }

    /// Worker `key` is gone, as `why` says; see [`worker_exited`](Self::worker_exited).
    pub(crate) fn worker_gone(self: &Arc<Self>, key: u64, why: Gone) {
        let mut st = self.lock();
        let mut flush = Vec::new();
        st.live -= 1;
        self.launcher.released(key);
        if let Some(w) = st.workers.remove(&key) {
            let mut requeue = Vec::new();
            let mut failed = 0;
            for (seq, id) in w.outstanding {
                let Some(job) = st.jobs.get_mut(&id) else {
                    continue;
                };
                let claims = w.link.as_ref().map(|l| l.claims());
                let never_started = claims.is_some_and(|c| c.state(seq) == Claim::Sent);
                // Finished, its answer held back when the worker died: the
                // result is in the claim table (see `protocol::claims`).
                let kept = claims.and_then(|c| c.kept(seq));
                if job.aborted {
                    st.jobs.remove(&id);
                } else if let Some(result) = kept {
                    if let Some(mut job) = st.jobs.remove(&id) {
                        let outcome = match job.parts.take() {
                            Some(parts) => join_parts(*parts, Batch::from(result)),
                            None => Ok(result.into()),
                        };
                        job.comp.resolve(outcome);
                    }
                } else if never_started {
                    job.place = Place::Queued;
                    job.recalling = false;
                    requeue.push(id);
                } else if job.retries_left > 0 {
                    job.retries_left -= 1;
                    job.place = Place::Queued;
                    job.recalling = false;
                    // Results the dead run sent in parts are not this run's.
                    job.parts = None;
                    job.span.in_scope(|| {
                        tracing::info!(
                            "{}; running the task again ({} retries left)",
                            why.task_error(),
                            job.retries_left
                        )
                    });
                    requeue.push(id);
                } else {
                    failed += 1;
                    if let Some(job) = st.jobs.remove(&id) {
                        let err = why.task_error();
                        job.span
                            .in_scope(|| tracing::warn!("{err} while running the task"));
                        job.comp.resolve(Err(err));
                    }
                }
            }
            for id in requeue.into_iter().rev() {
                st.queue.push_front(id);
            }
            let expected = w.retiring || w.doomed || st.phase != Phase::Running;
            // A lost node is reported once, by the cluster, not per worker.
            let exit = match why {
                Gone::Exited(exit) if failed > 0 || !expected => Some(exit),
                _ => None,
            };
            if let Some(exit) = exit {
                let pid = w.link.as_ref().map_or(0, |l| l.pid());
                match &w.last_words {
                    Some(words) => tracing::warn!(
                        worker = %w.name, pid, %exit, failed, last_words = %words,
                        "mproc worker exited"
                    ),
                    None => {
                        tracing::warn!(worker = %w.name, pid, %exit, failed, "mproc worker exited")
                    }
                }
            }
        }
        self.top_up_workers(&mut st);
        self.fill(&mut st, &mut flush);
        self.finish_drain(&mut st, &mut flush);
        self.notify(&mut st);
        drop(st);
        run_flush(flush);
    }
}
