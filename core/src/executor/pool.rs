//! [`Pool`]: the blocking process pool, like `multiprocessing.Pool`.
//!
//! It is a thin blocking face over the executor's scheduler: the same
//! dispatch, windows, crash accounting and recycling. It needs no async
//! runtime and works from any thread, including a blocking thread of a tokio
//! program.

use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::callbacks::{CallbackThread, Callbacks, Decode};
use super::completion::{Completion, Gate};
use super::map::{max_chunks, MapOptions, MapStream};
use super::sched::{Core, Limits, Running};
use super::{ExecutorBuilder, TransportKind};
use crate::error::{Error, ErrorKind, TaskError};
use crate::protocol::batch::{
    decode_batch, decode_one, encode_chunk_mode, encode_one_owned, Outcome,
};
use crate::registry::Task;
use crate::spawn::StartMethod;

/// Configures and starts a [`Pool`].
#[derive(Debug, Clone, Default)]
pub struct PoolBuilder {
    inner: ExecutorBuilder,
}

impl PoolBuilder {
    /// The number of worker processes (default: [`cpu_count`](crate::cpu_count)).
    /// Zero is refused by [`build`](Self::build), as Python's `Pool(0)` is.
    pub fn processes(mut self, n: usize) -> Self {
        self.inner = self.inner.max_workers(n);
        self
    }

    /// A task to run once in each worker, replacements included, before its
    /// first task.
    pub fn initializer<T: Task>(mut self, task: T, args: T::Args) -> Self {
        self.inner = self.inner.initializer(task, args);
        self
    }

    /// Replaces each worker after it has been given `n` tasks (a chunk counts
    /// as one).
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.inner = self.inner.max_tasks_per_child(n);
        self
    }

    /// How workers are started.
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.inner = self.inner.start_method(m);
        self
    }

    /// The parent–worker channel.
    pub fn transport(mut self, t: TransportKind) -> Self {
        self.inner = self.inner.transport(t);
        self
    }

    /// The largest message either side will send or accept.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.inner = self.inner.max_message_size(bytes);
        self
    }

    /// Starts the workers and waits until they are up.
    ///
    /// # Errors
    /// [`ErrorKind::Spawn`](crate::ErrorKind::Spawn) when workers cannot be
    /// started or their initializer fails, or when
    /// [`processes(0)`](Self::processes) was asked for (a pool of no process
    /// could never run anything; Python's `Pool(0)` raises `ValueError`).
    pub fn build(self) -> Result<Pool, Error> {
        if self.inner.workers == Some(0) {
            return Err(Error::new(
                ErrorKind::Spawn,
                "a pool needs at least one process (processes(0) was asked for)",
            ));
        }
        let mut cfg = self.inner.into_config()?;
        cfg.name_prefix = "PoolWorker";
        let core = Core::new(cfg);
        core.start_blocking()?;
        Ok(Pool {
            core,
            callbacks: CallbackThread::default(),
        })
    }
}

/// A blocking pool of worker processes, like Python's `multiprocessing.Pool`.
///
/// Dropping the pool is [`terminate`](Pool::terminate), as leaving Python's
/// `with Pool(…)` block is.
///
/// # Examples
/// ```no_run
/// use mproc::Pool;
///
/// #[mproc::task]
/// fn square(x: u64) -> u64 { x * x }
///
/// # fn main() -> Result<(), mproc::Error> {
/// let pool = Pool::new(4)?;
/// let squares: Vec<u64> = pool.map(square, 0..10)?;
/// assert_eq!(squares[3], 9);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Pool {
    core: Arc<Core>,
    callbacks: CallbackThread,
}

/// The largest chunk `Pool::map` picks on its own.
const MAX_AUTO_CHUNK: usize = 2048;

/// Python's rule, about four chunks per worker, with chunks of at most
/// [`MAX_AUTO_CHUNK`] items: a long map then keeps several chunks per worker
/// in flight, so encoding, computing and decoding overlap and the last
/// chunks end close together (on 2 workers, 100 000 trivial items ran
/// about 4 % faster in chunks of 2 048 than in Python's 12 500, and faster
/// than the hand-picked 1 000 of WORKLOADS.md W2c).
fn auto_chunksize(len: usize, workers: usize) -> usize {
    len.div_ceil(workers * 4).clamp(1, MAX_AUTO_CHUNK)
}

impl Pool {
    /// Starts `processes` workers with the defaults.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn new(processes: usize) -> Result<Pool, Error> {
        Self::builder().processes(processes).build()
    }

    /// A builder with the defaults.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.core.config().workers
    }

    /// The pids of the worker processes alive right now.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.core.pids()
    }

    /// Runs `task(args)` and waits for its result.
    pub fn apply<T: Task>(&self, task: T, args: T::Args) -> Result<T::Output, TaskError> {
        self.apply_async(task, args).get()
    }

    /// Queues `task(args)` and returns at once.
    pub fn apply_async<T: Task>(&self, task: T, args: T::Args) -> AsyncResult<T::Output> {
        let _ = task;
        let comp = match encode_one_owned(args, self.core.config().out_of_band) {
            Ok(payload) => {
                self.core
                    .submit(T::NAME, T::IS_ASYNC, payload, Limits::default())
                    .1
            }
            Err(e) => failed(e),
        };
        AsyncResult::new(
            Some(self.core.clone()),
            vec![(comp, 1)],
            Arc::new(|mut outs: Vec<Outcome>| decode_one(outs.pop().expect("one part"))),
        )
    }

    /// [`apply_async`](Self::apply_async) with callbacks run in the parent
    /// when the result arrives (Python's `apply_async(f, args, callback=…,
    /// error_callback=…)`); see [`mproc::Callbacks`](Callbacks). The
    /// result is ready once the callbacks have run.
    pub fn apply_async_with<T: Task>(
        &self,
        task: T,
        args: T::Args,
        callbacks: Callbacks<T::Output>,
    ) -> AsyncResult<T::Output> {
        self.with_callbacks(self.apply_async(task, args), callbacks)
    }

    /// [`map_async`](Self::map_async) with callbacks run in the parent when
    /// the whole result arrives (Python's `map_async(f, it, callback=…,
    /// error_callback=…)`); see [`mproc::Callbacks`](Callbacks).
    pub fn map_async_with<T, I>(
        &self,
        task: T,
        iter: I,
        callbacks: Callbacks<Vec<T::Output>>,
    ) -> AsyncResult<Vec<T::Output>>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
    {
        self.with_callbacks(self.map_async(task, iter), callbacks)
    }

    fn with_callbacks<T: 'static>(
        &self,
        mut r: AsyncResult<T>,
        callbacks: Callbacks<T>,
    ) -> AsyncResult<T> {
        let gate = self.callbacks.attach(&r.parts, r.decode.clone(), callbacks);
        r.gate = Some(gate);
        r
    }

    /// Runs `task` on every item and returns the results in order; the first
    /// failure is returned as the error. The chunk size is chosen from the
    /// input length: about four chunks per worker, of at most 2 048 items.
    pub fn map<T, I>(&self, task: T, iter: I) -> Result<Vec<T::Output>, TaskError>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
    {
        self.map_with(task, iter, MapOptions::default())
    }

    /// [`map`](Self::map) with options (chunk size, progress bar).
    pub fn map_with<T, I>(
        &self,
        task: T,
        iter: I,
        opts: MapOptions,
    ) -> Result<Vec<T::Output>, TaskError>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
    {
        let items: Vec<T::Args> = iter.into_iter().collect();
        let mut opts = opts;
        let chunksize = *opts
            .chunksize
            .get_or_insert_with(|| auto_chunksize(items.len(), self.processes()));
        let _ = task;
        let chunks = items.len().div_ceil(chunksize);
        if !opts.progress && chunks <= max_chunks(self.core.capacity(), chunksize) {
            if let Some(out) = self.map_at_once::<T>(&items, chunksize, opts.retries) {
                return out;
            }
        }
        let stream = MapStream::new::<T, _>(self.core.clone(), items.into_iter(), opts, true);
        // One blocking wait for the whole map (stopping at the first
        // error): a wait per item would build an executor per item.
        futures::executor::block_on(stream.try_collect())
    }

    /// [`map`](Self::map) of a map whose chunks all fit the window of work
    /// in flight: every chunk is submitted at once (see
    /// `Core::submit_many`), and the caller sleeps once, until all have
    /// finished or one has failed, rather than once per chunk. `None` when
    /// a chunk cannot go as it is (too large for one message, or its
    /// arguments cannot be encoded): the streaming map splits it, or fails
    /// it in its place.
    fn map_at_once<T: Task>(
        &self,
        items: &[T::Args],
        chunksize: usize,
        retries: u32,
    ) -> Option<Result<Vec<T::Output>, TaskError>> {
        let limit = self
            .core
            .config()
            .max_frame
            .saturating_sub(T::NAME.len() + 64);
        let mut payloads = Vec::with_capacity(items.len().div_ceil(chunksize));
        for chunk in items.chunks(chunksize) {
            match encode_chunk_mode(chunk, self.core.config().out_of_band) {
                Ok(p) if p.wire_len() <= limit => payloads.push(p),
                _ => return None,
            }
        }
        let limits = Limits {
            timeout: None,
            retries,
        };
        let parts = self
            .core
            .submit_many(T::NAME, T::IS_ASYNC, payloads, limits);
        let gate = Gate::over(parts.iter().map(|(_, c)| c));
        let _watch = self.core.watch_gate(&gate);
        gate.wait(self.core.caller_spin(), Some(self.core.endgame_spin()));
        let mut out = Vec::with_capacity(items.len());
        for (i, ((_, comp), chunk)) in parts.iter().zip(items.chunks(chunksize)).enumerate() {
            // Resolved, unless the gate opened early for a failure.
            comp.wait_until(None);
            let outcome = comp.take().unwrap_or(Err(TaskError::Cancelled));
            for item in decode_batch::<T::Output>(outcome, chunk.len()) {
                match item {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        // As a streaming map dropped early: what has not
                        // started is taken back, what runs finishes.
                        for (id, c) in &parts[i + 1..] {
                            if !c.is_resolved() {
                                self.core.abort(*id, TaskError::Cancelled, Running::Spare);
                            }
                        }
                        return Some(Err(e));
                    }
                }
            }
        }
        Some(Ok(out))
    }

    /// `map` for functions of several arguments, given as tuples (kept for
    /// porting: mproc tasks already take their arguments as one tuple).
    pub fn starmap<T, I>(&self, task: T, iter: I) -> Result<Vec<T::Output>, TaskError>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
    {
        self.map(task, iter)
    }

    /// Queues a whole `map` and returns at once.
    pub fn map_async<T, I>(&self, task: T, iter: I) -> AsyncResult<Vec<T::Output>>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
    {
        let _ = task;
        let items: Vec<T::Args> = iter.into_iter().collect();
        let chunksize = auto_chunksize(items.len(), self.processes());
        let parts: Vec<(Arc<Completion>, usize)> = items
            .chunks(chunksize)
            .map(|chunk| {
                let comp = match encode_chunk_mode(chunk, self.core.config().out_of_band) {
                    Ok(payload) => {
                        self.core
                            .submit(T::NAME, T::IS_ASYNC, payload, Limits::default())
                            .1
                    }
                    Err(e) => failed(e),
                };
                (comp, chunk.len())
            })
            .collect();
        let sizes: Vec<usize> = parts.iter().map(|(_, n)| *n).collect();
        AsyncResult::new(
            Some(self.core.clone()),
            parts,
            Arc::new(move |outs: Vec<Outcome>| {
                let mut all = Vec::with_capacity(sizes.iter().sum());
                for (o, n) in outs.into_iter().zip(&sizes) {
                    for item in decode_batch::<T::Output>(o, *n) {
                        all.push(item?);
                    }
                }
                Ok(all)
            }),
        )
    }

    /// A lazy iterator of results in input order; inputs are pulled as
    /// results are consumed (one per message).
    pub fn imap<T, I>(&self, task: T, iter: I) -> Imap<T::Output>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'static,
    {
        self.imap_with(task, iter, MapOptions::default())
    }

    /// [`imap`](Self::imap) with options.
    pub fn imap_with<T, I>(&self, task: T, iter: I, opts: MapOptions) -> Imap<T::Output>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'static,
    {
        self.imap_inner(task, iter, opts, true)
    }

    /// Like [`imap`](Self::imap), in completion order.
    pub fn imap_unordered<T, I>(&self, task: T, iter: I) -> Imap<T::Output>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'static,
    {
        self.imap_unordered_with(task, iter, MapOptions::default())
    }

    /// [`imap_unordered`](Self::imap_unordered) with options.
    pub fn imap_unordered_with<T, I>(&self, task: T, iter: I, opts: MapOptions) -> Imap<T::Output>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'static,
    {
        self.imap_inner(task, iter, opts, false)
    }

    fn imap_inner<T, I>(&self, task: T, iter: I, opts: MapOptions, ordered: bool) -> Imap<T::Output>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'static,
    {
        let _ = task;
        let stream = MapStream::new::<T, _>(self.core.clone(), iter.into_iter(), opts, ordered);
        Imap { inner: stream }
    }

    /// Accepts no more work; what was submitted still runs, then the workers
    /// exit. Later submissions fail with [`TaskError::Shutdown`].
    pub fn close(&self) {
        self.core.close();
    }

    /// Waits for the workers to exit. Closes the pool first if that has not
    /// happened (Python raises an error there instead).
    pub fn join(&self) {
        self.core.close();
        self.core.join_blocking();
        self.callbacks.stop();
    }

    /// Stops the workers at once; pending results resolve to
    /// [`TaskError::Shutdown`].
    pub fn terminate(&self) {
        self.core.stop_blocking(TaskError::Shutdown);
        self.callbacks.stop();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn failed(e: TaskError) -> Arc<Completion> {
    let c = Completion::new();
    c.resolve(Err(e));
    c
}

/// The lazy results of [`Pool::imap`] / [`Pool::imap_unordered`].
pub struct Imap<T> {
    inner: MapStream<T>,
}

impl<T> std::fmt::Debug for Imap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap").finish_non_exhaustive()
    }
}

impl<T> Iterator for Imap<T> {
    type Item = Result<T, TaskError>;
    fn next(&mut self) -> Option<Self::Item> {
        // `block_on` parks this thread on a thread-local waker; the
        // `futures` blocking iterator would build a whole executor per item.
        futures::executor::block_on(self.inner.next())
    }
}

/// The pending result of [`Pool::apply_async`] or [`Pool::map_async`].
pub struct AsyncResult<T> {
    /// The scheduler the parts run on (its spinner, for [`wait`](Self::wait)).
    core: Option<Arc<Core>>,
    parts: Vec<(Arc<Completion>, usize)>,
    decode: Decode<T>,
    /// Resolved once the callbacks ran (results with callbacks only).
    gate: Option<Arc<Completion>>,
    value: OnceLock<Result<T, TaskError>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<T> AsyncResult<T> {
    fn new(
        core: Option<Arc<Core>>,
        parts: Vec<(Arc<Completion>, usize)>,
        decode: Decode<T>,
    ) -> Self {
        AsyncResult {
            core,
            parts,
            decode,
            gate: None,
            value: OnceLock::new(),
            _t: PhantomData,
        }
    }

    /// True once the result is available.
    pub fn ready(&self) -> bool {
        self.value.get().is_some()
            || (self.parts.iter().all(|(c, _)| c.is_resolved())
                && self.gate.as_ref().is_none_or(|g| g.is_resolved()))
    }

    /// `Some(true)` if it finished without error, `Some(false)` if with an
    /// error, `None` while not ready.
    pub fn successful(&self) -> Option<bool> {
        if !self.ready() {
            return None;
        }
        Some(self.settle().is_ok())
    }

    /// Blocks until the result is available.
    pub fn wait(&self) {
        for (c, _) in &self.parts {
            // Polled for briefly first: see `Core::caller_spin`.
            let spin = self.core.as_ref().and_then(|core| core.caller_spin());
            if !c.spin_resolved(spin) {
                c.wait_until(None);
            }
        }
        if let Some(g) = &self.gate {
            g.wait_until(None);
        }
    }

    /// Blocks up to `d`; true when the result is available.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        self.parts.iter().all(|(c, _)| c.wait_until(Some(deadline)))
            && self
                .gate
                .as_ref()
                .is_none_or(|g| g.wait_until(Some(deadline)))
    }

    /// Decodes the finished result once; later calls return the cache.
    fn settle(&self) -> &Result<T, TaskError> {
        self.value.get_or_init(|| {
            let outs = self
                .parts
                .iter()
                .map(|(c, _)| c.take().unwrap_or(Err(TaskError::Shutdown)))
                .collect();
            (self.decode)(outs)
        })
    }

    /// Waits for the result and returns it.
    pub fn get(mut self) -> Result<T, TaskError> {
        self.wait();
        self.settle();
        self.value.take().expect("settled")
    }
}

impl<T: Clone> AsyncResult<T> {
    /// Waits up to `d`: [`TaskError::TimedOut`] on expiry, and the result
    /// stays retrievable; may be called again after it succeeded.
    pub fn get_timeout(&self, d: Duration) -> Result<T, TaskError> {
        if self.value.get().is_none() && !self.wait_timeout(d) {
            return Err(TaskError::TimedOut);
        }
        self.settle().clone()
    }
}
