//! The scheduler's timer thread: task timeouts, the pause before starting a
//! worker again after a failed start, and the moment an idle worker should
//! look again for work to take back.
//!
//! The thread is started the first time something needs a deadline, sleeps
//! until the earliest one, and exits when the scheduler stops; stopping
//! joins it, so no thread outlives a dropped executor.

use std::cmp::Reverse;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::{Core, Phase, Running};
use crate::error::TaskError;

#[derive(Debug, Default)]
struct Ctl {
    handle: Option<JoinHandle<()>>,
    /// The earliest deadline the thread was told of.
    next: Option<Instant>,
    stopped: bool,
}

/// The timer of one scheduler.
#[derive(Debug, Default)]
pub(super) struct Timer {
    ctl: Mutex<Ctl>,
    cond: Condvar,
}

impl Timer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ctl> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure the thread wakes by `at`, starting it if needed.
    pub(super) fn wake_at(&self, core: &Arc<Core>, at: Instant) {
        let mut ctl = self.lock();
        if ctl.stopped {
            return;
        }
        if ctl.next.is_none_or(|n| at < n) {
            ctl.next = Some(at);
            self.cond.notify_one();
        }
        if ctl.handle.is_none() {
            // The thread holds the core until the scheduler stops (which
            // every owner does when dropped) and is joined then.
            let core = core.clone();
            let spawned = std::thread::Builder::new()
                .name("mproc-timer".into())
                .spawn(move || run(core));
            match spawned {
                Ok(h) => ctl.handle = Some(h),
                Err(e) => tracing::error!("mproc cannot start its timer thread: {e}"),
            }
        }
    }

    /// Tells the thread to exit.
    pub(super) fn stop(&self) {
        let mut ctl = self.lock();
        ctl.stopped = true;
        self.cond.notify_all();
    }

    /// Waits for the thread to exit (after [`stop`](Self::stop)).
    pub(super) fn join(&self) {
        let handle = self.lock().handle.take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

fn run(core: Arc<Core>) {
    let timer = &core.timer;
    loop {
        let next = core.on_tick();
        let mut ctl = timer.lock();
        if let Some(n) = next {
            ctl.next = Some(ctl.next.map_or(n, |c| c.min(n)));
        }
        loop {
            if ctl.stopped {
                return;
            }
            let now = Instant::now();
            ctl = match ctl.next {
                Some(t) if t <= now => {
                    ctl.next = None;
                    break;
                }
                Some(t) => {
                    timer
                        .cond
                        .wait_timeout(ctl, t - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => timer.cond.wait(ctl).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

impl Core {
    /// Handles what is due; returns the next deadline.
    fn on_tick(self: &Arc<Self>) -> Option<Instant> {
        let now = Instant::now();
        let mut st = self.lock();
        if st.phase == Phase::Stopping {
            return None;
        }
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
        let mut flush = Vec::new();
        for id in expired {
            self.abort_locked(&mut st, id, TaskError::TimedOut, Running::Stop, &mut flush);
        }
        if st.boot.retry_at.is_some_and(|t| t <= now) {
            self.top_up_workers(&mut st);
        }
        if st.steal_at.is_some_and(|t| t <= now) {
            st.steal_at = None;
        }
        if st.trim_at.is_some_and(|t| t <= now) {
            st.trim_at = None;
            st.trim();
        }
        self.fill(&mut st, &mut flush);
        self.finish_drain(&mut st, &mut flush);
        self.notify(&mut st);
        let next = [
            st.timers.peek().map(|Reverse((t, _))| *t),
            st.boot.retry_at,
            st.steal_at,
            st.trim_at,
        ]
        .into_iter()
        .flatten()
        .min();
        drop(st);
        super::run_flush(flush);
        next
    }
}
