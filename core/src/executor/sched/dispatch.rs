//! Dispatch: which worker gets the next queued job, how far ahead work is
//! sent, and taking back work that waits behind another task.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{add_flush, Core, Flush, Job, Phase, Place, State, Worker, STEAL_AFTER};
use crate::error::TaskError;
use crate::protocol::claims::{Claim, SLOTS};
use crate::protocol::{Bytes, ToWorker};

/// Work a window should cover.
const WINDOW_NS: f64 = 200_000.0;
const MIN_WINDOW: usize = 2;
const MAX_WINDOW: usize = 128;

impl Job {
    /// When this request, sent ahead and not started, may be taken back:
    /// [`STEAL_AFTER`] after it was sent, plus 8 ns per byte of arguments.
    /// A worker claims a request only once it has read and decoded it, and
    /// a large one takes a while to cross (a 64 MiB argument: about 0.1 s
    /// on this VM at the rates BENCHMARKS.md gives), so it must not be
    /// taken back, and sent again, while it is still on its way.
    fn steal_due(&self) -> Option<Instant> {
        match self.place {
            Place::Sent { at, .. } => {
                let transfer = Duration::from_nanos(8 * self.wire_len() as u64);
                Some(at + STEAL_AFTER + transfer)
            }
            Place::Queued => None,
        }
    }
}

impl Worker {
    /// Whether the worker may be sent one more request.
    fn can_take(&self, window: usize) -> bool {
        let slot_free = self
            .outstanding
            .front()
            .is_none_or(|(oldest, _)| self.next_seq - oldest < SLOTS);
        if self.link.as_ref().is_some_and(|l| !l.usable()) {
            return false;
        }
        let cap = self.link.as_ref().map_or(window, |l| {
            // A worker that can be asked back what it holds (a node's
            // slot) is sent ahead past the window of local workers: a
            // round trip over the network is its latency to hide.
            if l.recalls() {
                l.max_outstanding()
            } else {
                window.min(l.max_outstanding())
            }
        });
        self.ready && !self.retiring && !self.doomed && self.outstanding.len() < cap && slot_free
    }
}

impl Core {
    /// How many requests a worker may hold: enough to cover about
    /// [`WINDOW_NS`] of measured work.
    pub(super) fn window(st: &State) -> usize {
        if st.ewma_exec_ns <= 0.0 {
            return MIN_WINDOW;
        }
        ((WINDOW_NS / st.ewma_exec_ns).ceil() as usize).clamp(MIN_WINDOW, MAX_WINDOW)
    }

    /// Sends queued jobs to workers: an idle worker first, else the least
    /// loaded one under the window. Then, if a worker is still idle, takes
    /// back work that waits behind another worker's task.
    ///
    /// Takes in what `submit` left in the intake first, and publishes at the
    /// end whether work still waits (see `Core::settle`).
    pub(super) fn fill(self: &Arc<Self>, st: &mut State, flush: &mut Flush) {
        self.admit(st);
        loop {
            // Written only when they change: callers and reader threads
            // read them all the time, and a store takes the line from them.
            let backlog = st.jobs.len() > st.workers.len();
            if self.backlog.load(Ordering::Relaxed) != backlog {
                self.backlog.store(backlog, Ordering::Relaxed);
            }
            let long_tasks = st.ewma_exec_ns >= super::LONG_TASK_NS as f64;
            if self.long_tasks.load(Ordering::Relaxed) != long_tasks {
                self.long_tasks.store(long_tasks, Ordering::Relaxed);
            }
            let long = backlog && long_tasks;
            if self.long_backlog.load(Ordering::Relaxed) != long {
                self.long_backlog.store(long, Ordering::Relaxed);
            }
            if st.phase != Phase::Stopping {
                self.place_queued(st, flush);
                if st.queue.is_empty() && self.steal(st) {
                    self.place_queued(st, flush);
                }
            }
            if !self.settle(st) {
                return;
            }
        }
    }

    fn place_queued(self: &Arc<Self>, st: &mut State, flush: &mut Flush) {
        // A gathered map being submitted is spread over the workers at
        // once (see `Core::submit_many`).
        let window = Self::window(st).max(st.spread);
        let mut spawn_needed = false;
        // One reading of the clock for the batch: the send time only ages
        // requests for `steal`, at millisecond scale.
        let now = Instant::now();
        while let Some(&id) = st.queue.front() {
            if !st.jobs.contains_key(&id) {
                st.queue.pop_front(); // cancelled or timed out while queued
                continue;
            }
            let pick = st
                .workers
                .iter()
                .filter(|(_, w)| w.can_take(window))
                .min_by_key(|(_, w)| w.outstanding.len())
                .map(|(k, _)| *k);
            let Some(wk) = pick else { break };
            st.queue.pop_front();
            spawn_needed |= self.send_job(st, wk, id, now, flush);
        }
        if spawn_needed {
            // A retiring worker's replacement starts now, before it leaves,
            // so recycling never stalls the queue.
            self.top_up_workers(st);
        }
    }

    /// Sends job `id` to worker `wk`; true when the worker now retires.
    fn send_job(&self, st: &mut State, wk: u64, id: u64, now: Instant, flush: &mut Flush) -> bool {
        let job = st.jobs.get_mut(&id).expect("queued job exists");
        let w = st.workers.get_mut(&wk).expect("picked worker exists");
        // Borrowed, not cloned: a clone per job is two atomic operations on
        // a count the other reader thread touches too.
        let link = w.link.as_ref().expect("a ready worker has a link");
        let seq = w.next_seq;
        let msg = ToWorker::Run {
            id,
            seq,
            task: job.task,
            oob: job.oob,
            gather: job.gather,
            args: Bytes(&job.payload[..]),
        };
        // The slot is marked before the request can reach the worker.
        link.claims().offer(seq);
        let queued = match &job.sides {
            Some(sides) => link.enqueue_with_sidecars(&msg, sides),
            None => link.enqueue(&msg),
        };
        if let Err(e) = queued {
            let _ = link.claims().revoke(seq);
            let job = st.jobs.remove(&id).expect("present");
            job.comp.resolve(Err(e.into_task_error()));
            return false;
        }
        add_flush(flush, link);
        w.next_seq += 1;
        w.assigned += 1;
        w.outstanding.push_back((seq, id));
        job.place = Place::Sent {
            worker: wk,
            seq,
            at: now,
        };
        if !job.span.is_disabled() {
            job.span.record_worker(&w.name);
            job.span.in_scope(|| tracing::trace!(seq, "sent to worker"));
        }
        let mut retires = false;
        if let Some(max) = self.cfg.max_tasks_per_child {
            if w.assigned >= max && !w.retiring {
                w.retiring = true;
                retires = true;
            }
        }
        retires
    }

    /// With the queue empty and a worker idle: takes back requests that
    /// have waited at least their steal age (`Job::steal_due`) on another worker without
    /// starting (behind its running task, or on a worker that is stopped or
    /// wedged), and puts them at the front of the queue. Requests not that
    /// old yet are looked at again when they will be (the timer). Returns
    /// true when something was taken back.
    fn steal(self: &Arc<Self>, st: &mut State) -> bool {
        let window = Self::window(st);
        let idle = st
            .workers
            .values()
            .filter(|w| w.outstanding.is_empty() && w.can_take(window))
            .count();
        if idle == 0 {
            return false;
        }
        let now = Instant::now();
        let mut taken: Vec<u64> = Vec::new();
        let mut recalls: Vec<(Arc<dyn super::link::WorkerLink>, u64)> = Vec::new();
        let mut recheck: Option<Instant> = None;
        let jobs = &st.jobs;
        for w in st.workers.values_mut() {
            let Some(link) = w.link.clone() else { continue };
            if link.recalls() {
                // Asked back, answered later: every request behind the
                // first that is due and not asked for already.
                for &(_, id) in w.outstanding.iter().skip(1) {
                    let Some(job) = jobs.get(&id).filter(|j| !j.aborted && !j.recalling) else {
                        continue;
                    };
                    match job.steal_due() {
                        Some(due) if due <= now => recalls.push((link.clone(), id)),
                        Some(due) => recheck = Some(recheck.map_or(due, |r| r.min(due))),
                        None => {}
                    }
                }
                continue;
            }
            let Some(&(head_seq, _)) = w.outstanding.front() else {
                continue;
            };
            // The oldest request that waits: the head itself if it has not
            // started, else the one behind it.
            let first = if link.claims().state(head_seq) == Claim::Sent {
                0
            } else {
                1
            };
            let Some(&(_, first_id)) = w.outstanding.get(first) else {
                continue;
            };
            let Some(due) = jobs.get(&first_id).and_then(|j| j.steal_due()) else {
                continue;
            };
            if due > now {
                recheck = Some(recheck.map_or(due, |r| r.min(due)));
                continue;
            }
            // Half of what waits (at least one), from the youngest back;
            // what is too young yet is looked at again when it is due.
            let want = (w.outstanding.len() - first).div_ceil(2);
            let (mut idx, mut got) = (w.outstanding.len(), 0);
            while idx > first && got < want {
                idx -= 1;
                let (seq, id) = w.outstanding[idx];
                let Some(job) = jobs.get(&id).filter(|j| !j.aborted) else {
                    continue;
                };
                match job.steal_due() {
                    Some(due) if due <= now => {}
                    Some(due) => {
                        recheck = Some(recheck.map_or(due, |r| r.min(due)));
                        continue;
                    }
                    None => continue,
                }
                if link.claims().revoke(seq).is_err() {
                    break; // started: so has everything before it
                }
                w.outstanding.remove(idx);
                w.assigned = w.assigned.saturating_sub(1);
                taken.push(id);
                got += 1;
            }
        }
        if let Some(t) = recheck {
            if st.steal_at.is_none_or(|s| t < s) {
                st.steal_at = Some(t);
                self.timer.wake_at(self, t);
            }
        }
        for (link, id) in recalls {
            if let Some(job) = st.jobs.get_mut(&id) {
                job.recalling = true;
                link.recall(id);
            }
        }
        if taken.is_empty() {
            return false;
        }
        // Back to the front of the queue, oldest first.
        taken.sort_unstable_by_key(|&id| std::cmp::Reverse(id));
        for id in taken {
            if let Some(job) = st.jobs.get_mut(&id) {
                job.place = Place::Queued;
                if !job.span.is_disabled() {
                    job.span
                        .in_scope(|| tracing::trace!("taken back from a busy worker"));
                }
                st.queue.push_front(id);
            }
        }
        true
    }

    /// Takes back every request of worker `key` that has not started (its
    /// worker is being killed) and queues them first.
    pub(super) fn take_back_all(&self, st: &mut State, key: u64) {
        let Some(w) = st.workers.get_mut(&key) else {
            return;
        };
        let Some(link) = w.link.clone() else { return };
        let mut back = Vec::new();
        w.outstanding.retain(|&(seq, id)| {
            if link.claims().revoke(seq).is_ok() {
                back.push(id);
                false
            } else {
                true
            }
        });
        for id in back.into_iter().rev() {
            if let Some(job) = st.jobs.get_mut(&id) {
                job.place = Place::Queued;
                st.queue.push_front(id);
            }
        }
    }

    /// During `shutdown`, once every job is done, asks each worker to exit.
    pub(super) fn finish_drain(&self, st: &mut State, flush: &mut Flush) {
        if st.phase != Phase::Draining || !st.jobs.is_empty() {
            return;
        }
        for w in st.workers.values_mut().filter(|w| w.ready) {
            if let (false, Some(l)) = (w.shutdown_sent, &w.link) {
                w.shutdown_sent = true;
                if l.enqueue(&ToWorker::Shutdown).is_ok() {
                    add_flush(flush, l);
                }
            }
        }
    }

    /// Fails every queued job with `err` (no worker can be started to run
    /// them).
    pub(super) fn fail_queue(&self, st: &mut State, err: &TaskError) {
        let ids: Vec<u64> = st.queue.drain(..).collect();
        for id in ids {
            if let Some(job) = st.jobs.remove(&id) {
                job.span
                    .in_scope(|| tracing::warn!(error = %err, "no worker to run the task"));
                job.comp.resolve(Err(err.clone()));
            }
        }
    }
}
