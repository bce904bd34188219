//! [`MapStream`]: lazy, bounded, chunked `map` over a worker pool.
//!
//! A chunk whose encoded arguments exceed the message limit is split until
//! it fits, so an oversized argument fails only its own item. Dropping the
//! stream takes back every chunk that has not started (see `Core::abort`);
//! chunks already running finish and their results are dropped.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::Stream;
use serde::de::DeserializeOwned;

use super::completion::Completion;
use super::sched::{Core, Limits, Running};
use crate::error::TaskError;
use crate::protocol::batch::{decode_batch, encode_chunk_mode};
use crate::registry::Task;

/// Options for `map` and friends.
#[derive(Debug, Clone, Default)]
pub struct MapOptions {
    pub(crate) chunksize: Option<usize>,
    pub(crate) progress: bool,
    pub(crate) retries: u32,
}

impl MapOptions {
    /// Shows a progress bar with rate and ETA on stderr while the map runs —
    /// only when stderr is a terminal; otherwise nothing is printed.
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Sends `n` inputs per message (default 1). Larger chunks cut per-task
    /// overhead for small tasks; a failing item fails only itself.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = Some(n.max(1));
        self
    }

    /// Runs a chunk again, up to `n` more times (`n + 1` runs in all), when
    /// the worker running it dies ([`TaskError::WorkerDied`]) or the node
    /// running it is lost ([`TaskError::NodeLost`]), as
    /// [`TaskOptions::retries`](super::TaskOptions::retries) does for one
    /// task. The whole chunk runs again, so with a `chunksize` above one an
    /// item may run again although it had finished: use it for tasks that
    /// may run twice. A task that panics or fails is not run again. More
    /// than 65 535 retries count as 65 535.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }
}

/// Chunks a map keeps in flight for `workers` workers: enough to keep each
/// busy, with requests sent ahead to local ones.
pub(crate) fn max_chunks(workers: usize, chunksize: usize) -> usize {
    (workers * 64)
        .min((workers * 8192 / chunksize).max(workers * 2))
        .max(2)
}

/// One chunk in flight.
struct Chunk<T> {
    comp: Arc<Completion>,
    n: usize,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Future for Chunk<T> {
    type Output = Vec<Result<T, TaskError>>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let n = self.n;
        self.comp.poll_take(cx).map(|o| decode_batch(o, n))
    }
}

enum InFlight<T: DeserializeOwned> {
    Ordered(FuturesOrdered<Chunk<T>>),
    Unordered(FuturesUnordered<Chunk<T>>),
}

struct Driver<T: DeserializeOwned, I> {
    core: Arc<Core>,
    task: &'static str,
    is_async: bool,
    iter: I,
    chunksize: usize,
    /// Runs again allowed per chunk (see [`MapOptions::retries`]).
    retries: u32,
    max_chunks: usize,
    inflight: InFlight<T>,
    ready: VecDeque<Result<T, TaskError>>,
    exhausted: bool,
    bar: Option<indicatif::ProgressBar>,
    /// Ids and completions of the chunks submitted, for a drop before the
    /// end; resolved ones are pruned as results drain.
    pending: Vec<(u64, Arc<Completion>)>,
}

// The driver is only ever used behind `Pin<Box<_>>` and never relies on
// being pinned: results wait in a heap-allocated queue.
impl<T: DeserializeOwned, I> Unpin for Driver<T, I> {}

impl<T, I> Driver<T, I>
where
    T: DeserializeOwned,
    I: Iterator,
    I::Item: serde::Serialize,
{
    fn len(&self) -> usize {
        match &self.inflight {
            InFlight::Ordered(f) => f.len(),
            InFlight::Unordered(f) => f.len(),
        }
    }

    fn top_up(&mut self) {
        // Nodes join and leave while a map runs: size the window to the
        // workers there are now, node slots included.
        self.max_chunks = max_chunks(self.core.capacity(), self.chunksize);
        while !self.exhausted && self.len() < self.max_chunks {
            let chunk: Vec<I::Item> = self.iter.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                self.exhausted = true;
                break;
            }
            self.submit_chunk(&chunk);
        }
    }

    /// Submits `items` as one request, or as several when they do not fit
    /// one message: halves until they do, so that an argument too large
    /// for any message fails alone.
    fn submit_chunk(&mut self, items: &[I::Item]) {
        let limit = self
            .core
            .config()
            .max_frame
            .saturating_sub(self.task.len() + 64);
        let (id, comp) = match encode_chunk_mode(items, self.core.config().out_of_band) {
            Ok(payload) if payload.wire_len() > limit && items.len() > 1 => {
                let (a, b) = items.split_at(items.len() / 2);
                self.submit_chunk(a);
                self.submit_chunk(b);
                return;
            }
            Ok(payload) => self.core.submit(
                self.task,
                self.is_async,
                payload,
                Limits {
                    timeout: None,
                    retries: self.retries,
                },
            ),
            Err(e) => {
                let c = Completion::new();
                c.resolve(Err(e));
                (0, c)
            }
        };
        let fut = Chunk {
            comp: comp.clone(),
            n: items.len(),
            _t: std::marker::PhantomData,
        };
        self.pending.push((id, comp));
        match &mut self.inflight {
            InFlight::Ordered(f) => f.push_back(fut),
            InFlight::Unordered(f) => f.push(fut),
        }
    }
}

impl<T: DeserializeOwned, I> Drop for Driver<T, I> {
    fn drop(&mut self) {
        // A map stopped early takes back what has not started.
        for (id, comp) in self.pending.drain(..) {
            if id != 0 && !comp.is_resolved() {
                self.core.abort(id, TaskError::Cancelled, Running::Spare);
            }
        }
    }
}

impl<T, I> Stream for Driver<T, I>
where
    T: DeserializeOwned,
    I: Iterator + Unpin,
    I::Item: serde::Serialize,
{
    type Item = Result<T, TaskError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(x) = this.ready.pop_front() {
                return Poll::Ready(Some(x));
            }
            this.top_up();
            let next = match &mut this.inflight {
                InFlight::Ordered(f) => Pin::new(f).poll_next(cx),
                InFlight::Unordered(f) => Pin::new(f).poll_next(cx),
            };
            match next {
                Poll::Ready(Some(items)) => {
                    if this.pending.len() > 2 * this.max_chunks {
                        this.pending.retain(|(_, c)| !c.is_resolved());
                    }
                    if let Some(bar) = &this.bar {
                        bar.inc(items.len() as u64);
                    }
                    this.ready.extend(items)
                }
                Poll::Ready(None) if this.exhausted => {
                    if let Some(bar) = this.bar.take() {
                        bar.finish();
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(None) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The results of a `map`: a stream of `Result<T, TaskError>`, in input
/// order for `map` and completion order for `map_unordered`.
pub struct MapStream<T> {
    inner: Pin<Box<dyn Stream<Item = Result<T, TaskError>> + Send>>,
}

impl<T> std::fmt::Debug for MapStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapStream").finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned + Send + 'static> MapStream<T> {
    pub(crate) fn new<K, I>(core: Arc<Core>, iter: I, opts: MapOptions, ordered: bool) -> Self
    where
        K: Task<Output = T>,
        I: Iterator<Item = K::Args> + Send + 'static,
    {
        let bar = opts.progress.then(|| progress_bar(iter.size_hint()));
        let chunksize = opts.chunksize.unwrap_or(1);
        let max_chunks = max_chunks(core.capacity(), chunksize);
        let inflight = if ordered {
            InFlight::Ordered(FuturesOrdered::new())
        } else {
            InFlight::Unordered(FuturesUnordered::new())
        };
        let driver = Driver {
            core,
            task: K::NAME,
            is_async: K::IS_ASYNC,
            iter: Box::new(iter) as Box<dyn Iterator<Item = K::Args> + Send>,
            chunksize,
            retries: opts.retries,
            max_chunks,
            inflight,
            ready: VecDeque::new(),
            exhausted: false,
            bar,
            pending: Vec::new(),
        };
        MapStream {
            inner: Box::pin(driver),
        }
    }
}

impl<T> Stream for MapStream<T> {
    type Item = Result<T, TaskError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// A progress bar on stderr, or a hidden one when stderr is not a terminal.
fn progress_bar(size_hint: (usize, Option<usize>)) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let len = match size_hint {
        (lo, Some(hi)) if lo == hi => Some(lo as u64),
        _ => None,
    };
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::no_length(),
    };
    let template = if len.is_some() {
        "{bar:40} {pos}/{len} [{elapsed_precise}] {per_sec} ETA {eta}"
    } else {
        "{spinner} {pos} done [{elapsed_precise}] {per_sec}"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}
