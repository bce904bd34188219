//! [`as_completed`], [`as_completed_keyed`], [`wait`] and [`wait_timeout`],
//! as in `concurrent.futures`, with the deadline timer they share.
//!
//! Each takes a task once even when its handle is passed twice (handles
//! compare by [`TaskId`](super::TaskId)), and the timeout forms hand back the
//! handles still pending instead of losing them.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::Stream;
use serde::de::DeserializeOwned;

use super::handle::TaskHandle;
use crate::error::TaskError;

/// Keeps the first handle of each task, in order.
fn dedup<K, T>(items: impl IntoIterator<Item = (K, TaskHandle<T>)>) -> Vec<(K, TaskHandle<T>)> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|(_, h)| seen.insert(h.id()))
        .collect()
}

/// A key and a handle, ready once the handle's task is done.
struct Done<K, T>(Option<(K, TaskHandle<T>)>);

impl<K, T> Unpin for Done<K, T> {}

impl<K, T> Future for Done<K, T> {
    type Output = (K, TaskHandle<T>);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let ready = match &self.0 {
            Some((_, h)) => h.poll_done(cx).is_ready(),
            None => return Poll::Pending,
        };
        if ready {
            Poll::Ready(self.0.take().expect("polled after completion"))
        } else {
            Poll::Pending
        }
    }
}

/// The engine of both `as_completed` streams: done handles in completion
/// order, until a deadline.
struct Race<K, T> {
    inner: FuturesUnordered<Done<K, T>>,
    deadline: Option<Delay>,
    timed_out: bool,
}

impl<K, T> Race<K, T> {
    fn new(items: impl IntoIterator<Item = (K, TaskHandle<T>)>) -> Self {
        Race {
            inner: dedup(items).into_iter().map(|kh| Done(Some(kh))).collect(),
            deadline: None,
            timed_out: false,
        }
    }

    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Option<(K, TaskHandle<T>)>> {
        if self.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if let Some(d) = &mut self.deadline {
            if Pin::new(d).poll(cx).is_ready() {
                self.timed_out = true;
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    }

    fn into_pending(self) -> Vec<(K, TaskHandle<T>)> {
        self.inner.into_iter().filter_map(|d| d.0).collect()
    }
}

/// The results of several handles in completion order; see [`as_completed`].
pub struct AsCompleted<T> {
    race: Race<(), T>,
}

impl<T> std::fmt::Debug for AsCompleted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("pending", &self.race.inner.len())
            .field("timed_out", &self.race.timed_out)
            .finish()
    }
}

/// Yields each handle's result as soon as it completes. A task whose
/// handle is passed more than once is yielded once.
///
/// Python's `as_completed(fs, timeout=t)` is
/// `mproc::as_completed(handles).timeout(t)`: the stream ends at the
/// deadline, [`timed_out`](AsCompleted::timed_out) says so, and
/// [`into_pending`](AsCompleted::into_pending) hands back the handles not yet
/// done. To know which task a result belongs to, use
/// [`mproc::as_completed_keyed`](as_completed_keyed).
///
/// # Examples
/// ```no_run
/// # extern crate mproc_core as mproc;
/// use std::time::Duration;
/// use futures::StreamExt;
/// use mproc::{as_completed, Executor};
///
/// #[mproc_macros::task] // `#[mproc::task]` through the facade crate
/// fn square(x: u64) -> u64 { x * x }
///
/// # async fn demo() -> Result<(), mproc::Error> {
/// let executor = Executor::new(2).await?;
/// let handles: Vec<_> = (0..4).map(|n| executor.submit(square, n)).collect();
/// let mut done = as_completed(handles).timeout(Duration::from_secs(5));
/// while let Some(r) = done.next().await {
///     println!("{}", r?);
/// }
/// if done.timed_out() {
///     for h in done.into_pending() {
///         h.cancel();
///     }
/// }
/// # Ok(()) }
/// ```
pub fn as_completed<T>(handles: impl IntoIterator<Item = TaskHandle<T>>) -> AsCompleted<T> {
    AsCompleted {
        race: Race::new(handles.into_iter().map(|h| ((), h))),
    }
}

impl<T> AsCompleted<T> {
    /// Ends the stream `d` from now if handles are still pending then
    /// (Python's `timeout=`; there a `TimeoutError` is raised).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.race.deadline = Some(Delay::after(d));
        self
    }

    /// True once the stream ended because the timeout passed.
    pub fn timed_out(&self) -> bool {
        self.race.timed_out
    }

    /// The handles whose result has not been yielded.
    pub fn into_pending(self) -> Vec<TaskHandle<T>> {
        self.race
            .into_pending()
            .into_iter()
            .map(|(_, h)| h)
            .collect()
    }
}

impl<T: DeserializeOwned> Stream for AsCompleted<T> {
    type Item = Result<T, TaskError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.race
            .poll_done(cx)
            .map(|o| o.map(|((), h)| resolved(h)))
    }
}

/// Takes the result of a handle that is done.
fn resolved<T: DeserializeOwned>(mut h: TaskHandle<T>) -> Result<T, TaskError> {
    let waker = Waker::noop();
    match Pin::new(&mut h).poll(&mut Context::from_waker(waker)) {
        Poll::Ready(r) => r,
        Poll::Pending => unreachable!("a done handle is ready"),
    }
}

/// `(key, result)` pairs in completion order; see [`as_completed_keyed`].
pub struct AsCompletedKeyed<K, T> {
    race: Race<K, T>,
}

impl<K, T> std::fmt::Debug for AsCompletedKeyed<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompletedKeyed")
            .field("pending", &self.race.inner.len())
            .field("timed_out", &self.race.timed_out)
            .finish()
    }
}

/// As [`as_completed`], for `(key, handle)` pairs: yields `(key, result)`,
/// so each result says which input it belongs to — Python's
/// `{executor.submit(f, x): x for x in xs}` idiom (see
/// [`mproc::TaskHandle`](TaskHandle#examples)). A task passed twice is
/// yielded once, with its first key.
pub fn as_completed_keyed<K, T>(
    pairs: impl IntoIterator<Item = (K, TaskHandle<T>)>,
) -> AsCompletedKeyed<K, T> {
    AsCompletedKeyed {
        race: Race::new(pairs),
    }
}

impl<K, T> AsCompletedKeyed<K, T> {
    /// Ends the stream `d` from now if pairs are still pending then.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.race.deadline = Some(Delay::after(d));
        self
    }

    /// True once the stream ended because the timeout passed.
    pub fn timed_out(&self) -> bool {
        self.race.timed_out
    }

    /// The pairs whose result has not been yielded.
    pub fn into_pending(self) -> Vec<(K, TaskHandle<T>)> {
        self.race.into_pending()
    }
}

impl<K, T: DeserializeOwned> Stream for AsCompletedKeyed<K, T> {
    type Item = (K, Result<T, TaskError>);
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.race
            .poll_done(cx)
            .map(|o| o.map(|(k, h)| (k, resolved(h))))
    }
}

/// When [`wait`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReturnWhen {
    /// As soon as one handle is done.
    FirstCompleted,
    /// When every handle is done.
    AllCompleted,
    /// When one handle is done with an error, or all are done.
    FirstException,
}

/// Waits for handles, then splits them into `(done, pending)`. A handle in
/// `done` resolves without waiting. A task passed twice appears once.
pub async fn wait<T>(
    handles: impl IntoIterator<Item = TaskHandle<T>>,
    when: ReturnWhen,
) -> (Vec<TaskHandle<T>>, Vec<TaskHandle<T>>) {
    wait_until(handles, when, None).await
}

/// As [`wait`], returning at the latest `d` from now (Python's
/// `wait(fs, timeout=d, return_when=…)`): `(done, pending)` at that moment,
/// every handle handed back.
///
/// # Examples
/// ```no_run
/// # extern crate mproc_core as mproc;
/// use std::time::Duration;
/// use mproc::{wait_timeout, Executor, ReturnWhen};
///
/// #[mproc_macros::task] // `#[mproc::task]` through the facade crate
/// fn square(x: u64) -> u64 { x * x }
///
/// # async fn demo() -> Result<(), mproc::Error> {
/// let executor = Executor::new(2).await?;
/// let hs = vec![executor.submit(square, 1), executor.submit(square, 2)];
/// let (done, pending) =
///     wait_timeout(hs, ReturnWhen::AllCompleted, Duration::from_secs(1)).await;
/// println!("{} done, {} still running", done.len(), pending.len());
/// # Ok(()) }
/// ```
pub async fn wait_timeout<T>(
    handles: impl IntoIterator<Item = TaskHandle<T>>,
    when: ReturnWhen,
    d: Duration,
) -> (Vec<TaskHandle<T>>, Vec<TaskHandle<T>>) {
    wait_until(handles, when, Some(Delay::after(d))).await
}

async fn wait_until<T>(
    handles: impl IntoIterator<Item = TaskHandle<T>>,
    when: ReturnWhen,
    mut deadline: Option<Delay>,
) -> (Vec<TaskHandle<T>>, Vec<TaskHandle<T>>) {
    let handles: Vec<TaskHandle<T>> = dedup(handles.into_iter().map(|h| ((), h)))
        .into_iter()
        .map(|(_, h)| h)
        .collect();
    std::future::poll_fn(|cx| {
        let mut done = 0;
        let mut failed = false;
        for h in &handles {
            if h.poll_done(cx).is_ready() {
                done += 1;
                failed |= h.comp.peek_failed();
            }
        }
        let ready = handles.is_empty()
            || match when {
                ReturnWhen::FirstCompleted => done > 0,
                ReturnWhen::AllCompleted => done == handles.len(),
                ReturnWhen::FirstException => failed || done == handles.len(),
            };
        if ready
            || deadline
                .as_mut()
                .is_some_and(|d| Pin::new(d).poll(cx).is_ready())
        {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    handles.into_iter().partition(|h| h.is_done())
}

/// A deadline future that needs no particular async runtime: the first
/// poll before the deadline starts a thread that sleeps until it (or until
/// the future is dropped) and then wakes the task.
struct Delay {
    at: Instant,
    shared: Option<Arc<DelayShared>>,
}

#[derive(Default)]
struct DelayShared {
    state: Mutex<(bool, Option<Waker>)>,
    cond: Condvar,
}

impl Delay {
    fn after(d: Duration) -> Delay {
        Delay {
            at: Instant::now().checked_add(d).unwrap_or_else(far_future),
            shared: None,
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

impl Future for Delay {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        if let Some(sh) = &self.shared {
            sh.state.lock().unwrap().1 = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let sh = Arc::new(DelayShared::default());
        sh.state.lock().unwrap().1 = Some(cx.waker().clone());
        let (sh2, at) = (sh.clone(), self.at);
        let started = std::thread::Builder::new()
            .name("mproc-deadline".into())
            .spawn(move || {
                let mut st = sh2.state.lock().unwrap();
                while !st.0 {
                    let now = Instant::now();
                    if now >= at {
                        break;
                    }
                    st = sh2.cond.wait_timeout(st, at - now).unwrap().0;
                }
                let waker = st.1.take();
                drop(st);
                if let Some(w) = waker {
                    w.wake();
                }
            });
        if started.is_err() {
            // No thread to be had: look again soon rather than never.
            cx.waker().wake_by_ref();
        } else {
            self.shared = Some(sh);
        }
        Poll::Pending
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        if let Some(sh) = &self.shared {
            sh.state.lock().unwrap().0 = true;
            sh.cond.notify_all();
        }
    }
}
