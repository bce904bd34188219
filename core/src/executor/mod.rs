//! [`Executor`]: an async process pool, like `ProcessPoolExecutor`.

mod callbacks;
mod completion;
mod handle;
mod map;
mod pool;
pub(crate) mod sched;
mod wait;

use std::sync::Arc;
use std::time::Duration;

pub use self::callbacks::Callbacks;
pub use self::handle::{TaskHandle, TaskId};
pub use self::map::{MapOptions, MapStream};
pub use self::pool::{AsyncResult, Imap, Pool, PoolBuilder};
pub use self::wait::{
    as_completed, as_completed_keyed, wait, wait_timeout, AsCompleted, AsCompletedKeyed, ReturnWhen,
};

use self::sched::{Config, Core, Limits};
use crate::error::{Error, TaskError};
use crate::protocol::batch::{encode_one, encode_one_owned};
use crate::registry::Task;
use crate::spawn::StartMethod;

/// The channel between the parent and each worker. All carry the same
/// frames; see the README for measurements of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TransportKind {
    /// Two anonymous pipes.
    Pipe,
    /// A Unix-domain socket pair.
    #[default]
    UnixSocket,
    /// Two single-producer/single-consumer rings in a shared-memory segment,
    /// with eventfd wake-ups only when the other side sleeps.
    ShmRing,
}

/// Per-task options for [`Executor::submit_with`].
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: u32,
}

impl TaskOptions {
    /// Fails the task with [`TaskError::TimedOut`] when it has not finished
    /// `d` after submission; a worker running it is recycled.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Runs the task again, up to `n` more times (`n + 1` runs in all),
    /// when the worker running it dies ([`TaskError::WorkerDied`]) or the
    /// node running it is lost ([`TaskError::NodeLost`]). A task that
    /// panics, fails or times out is not run again. Use it for tasks that
    /// may run twice: a task that died half-way may have done part of its
    /// work. More than 65 535 retries count as 65 535.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }
}

/// Configures and starts an [`Executor`].
#[derive(Debug, Clone)]
pub struct ExecutorBuilder {
    workers: Option<usize>,
    start_method: Option<StartMethod>,
    transport: TransportKind,
    max_tasks_per_child: Option<u64>,
    initializer: Option<(&'static str, Result<Vec<u8>, TaskError>)>,
    max_message_size: usize,
    cluster: Option<crate::cluster::Cluster>,
}

impl Default for ExecutorBuilder {
    fn default() -> Self {
        ExecutorBuilder {
            workers: None,
            start_method: None,
            transport: TransportKind::default(),
            max_tasks_per_child: None,
            initializer: None,
            max_message_size: mproc_transport::DEFAULT_MAX_FRAME,
            cluster: None,
        }
    }
}

impl ExecutorBuilder {
    /// The number of local worker processes (default:
    /// [`cpu_count`](crate::cpu_count)).
    ///
    /// With a [`cluster`](Self::cluster), `max_workers(0)` means node
    /// workers only: tasks wait until a node joins. Without one it starts
    /// one worker.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// How workers are started (default: [`get_start_method`](crate::get_start_method),
    /// which is [`StartMethod::Spawn`] unless set otherwise).
    pub fn start_method(mut self, m: StartMethod) -> Self {
        self.start_method = Some(m);
        self
    }

    /// The parent–worker channel (default: [`TransportKind::UnixSocket`]).
    pub fn transport(mut self, t: TransportKind) -> Self {
        self.transport = t;
        self
    }

    /// Replaces each worker after it has been given `n` tasks (a chunk of a
    /// map counts as one), to bound leaks in long runs.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = Some(n.max(1));
        self
    }

    /// A task to run once in each worker, replacements included, before its
    /// first task. If it panics in an initial worker, [`build`](Self::build)
    /// fails.
    pub fn initializer<T: Task>(mut self, task: T, args: T::Args) -> Self {
        let _ = task;
        self.initializer = Some((T::NAME, encode_one(&args)));
        self
    }

    /// The largest message, in bytes, either side will send or accept
    /// (default: 1 GiB plus 1 MiB; at most 4 GiB − 1). Larger arguments fail
    /// with [`TaskError::Serialization`] on the sending side.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes.clamp(1024, mproc_transport::MAX_FRAME_LIMIT);
        self
    }

    /// Also places tasks and maps on the workers of every node that joins
    /// `cluster` (those that joined already included), besides the local
    /// workers. A node's worker is given only what it starts at once, so no
    /// task waits there behind another; a node that is lost fails what it
    /// was running with [`TaskError::NodeLost`] (or runs it again under
    /// [`TaskOptions::retries`]). The executor keeps the cluster up.
    ///
    /// A worker [`initializer`](Self::initializer) runs in local workers
    /// only.
    pub fn cluster(mut self, cluster: &crate::cluster::Cluster) -> Self {
        self.cluster = Some(cluster.clone());
        self
    }

    /// Starts the workers and waits until every one has completed its
    /// handshake (and initializer).
    ///
    /// # Errors
    /// [`ErrorKind::Spawn`](crate::ErrorKind::Spawn) when any of the workers
    /// cannot be started (its [`source`](std::error::Error::source) names
    /// the cause, e.g. the file-descriptor limit) or an initializer fails;
    /// no worker is left running then. Never waits without bound: a worker
    /// that does not come up within the handshake's time limit fails the
    /// start.
    pub async fn build(self) -> Result<Executor, Error> {
        let cluster = self.cluster.clone();
        let cfg = self.into_config()?;
        let core = match cluster.clone() {
            None => Core::new(cfg),
            Some(c) => {
                let workers = cfg.workers;
                let core = Core::with_launcher(
                    cfg,
                    Arc::new(crate::cluster::ClusterLauncher::new(
                        c.shared().clone(),
                        workers,
                    )),
                );
                c.shared().add_core(&core);
                core
            }
        };
        core.start().await?;
        Ok(Executor {
            owner: Arc::new(Owner {
                core,
                attached: std::sync::Mutex::new(Vec::new()),
                cluster,
            }),
        })
    }

    pub(crate) fn into_config(self) -> Result<Config, Error> {
        let method = self.start_method.unwrap_or_else(crate::get_start_method);
        let initializer = match self.initializer {
            None => None,
            Some((name, Ok(bytes))) => Some((name, bytes)),
            Some((_, Err(e))) => return Err(Error::from(e)),
        };
        Ok(Config {
            workers: match (self.workers, &self.cluster) {
                (Some(0), Some(_)) => 0,
                (n, _) => n.unwrap_or_else(crate::cpu_count).max(1),
            },
            max_tasks_per_child: self.max_tasks_per_child,
            initializer,
            max_frame: self.max_message_size,
            name_prefix: "PoolWorker",
            transport: self.transport,
            start_method: method,
            // A node's link carries arguments in band only.
            out_of_band: self.cluster.is_none(),
        })
    }
}

/// Something that lives as long as an executor and stops with it: an
/// actor's supervisor.
pub(crate) trait Attachment: Send + Sync + std::fmt::Debug {
    /// Stops it for good; may block for a few seconds.
    fn shutdown(&self);
}

#[derive(Debug)]
struct Owner {
    core: Arc<Core>,
    attached: std::sync::Mutex<Vec<Arc<dyn Attachment>>>,
    cluster: Option<crate::cluster::Cluster>,
}

impl Owner {
    fn stop_attached(&self) {
        let all = std::mem::take(&mut *self.attached.lock().unwrap_or_else(|p| p.into_inner()));
        for a in all {
            a.shutdown();
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.stop_attached();
        self.core.stop_blocking(TaskError::Cancelled);
    }
}

/// An async pool of worker processes, like Python's `ProcessPoolExecutor`.
///
/// A cheap handle: clones share one pool. Dropping the last clone cancels
/// what is left and stops the workers; none is left behind.
///
/// # Examples
/// ```no_run
/// use mproc::prelude::*;
///
/// #[mproc::task]
/// fn square(x: u64) -> u64 { x * x }
///
/// # async fn demo() -> Result<(), mproc::Error> {
/// let executor = Executor::new(2).await?;
/// assert_eq!(executor.submit(square, 7).await?, 49);
/// let all: Vec<u64> = executor.map(square, 0..10u64).try_collect().await?;
/// assert_eq!(all[3], 9);
/// executor.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Executor {
    owner: Arc<Owner>,
}

impl Executor {
    /// A builder with the defaults.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// Starts `workers` worker processes with the defaults.
    ///
    /// # Errors
    /// As [`ExecutorBuilder::build`].
    pub async fn new(workers: usize) -> Result<Executor, Error> {
        Self::builder().max_workers(workers).build().await
    }

    fn core(&self) -> &Arc<Core> {
        &self.owner.core
    }

    /// Queues `task(args)` at once and returns its handle.
    pub fn submit<T: Task>(&self, task: T, args: T::Args) -> TaskHandle<T::Output> {
        self.submit_with(task, args, TaskOptions::default())
    }

    /// [`submit`](Self::submit) with options (a timeout).
    pub fn submit_with<T: Task>(
        &self,
        task: T,
        args: T::Args,
        opts: TaskOptions,
    ) -> TaskHandle<T::Output> {
        let _ = task;
        let payload = match encode_one_owned(args, self.core().config().out_of_band) {
            Ok(p) => p,
            Err(e) => return TaskHandle::resolved(e),
        };
        let (id, comp) = self.core().submit(
            T::NAME,
            T::IS_ASYNC,
            payload,
            Limits {
                timeout: opts.timeout,
                retries: opts.retries,
            },
        );
        TaskHandle::new(TaskId(id), comp, Some(self.core().clone()))
    }

    /// Runs `task` on every item, yielding results in input order. Items are
    /// pulled from `iter` as results drain, so in-flight work stays bounded.
    pub fn map<T, I>(&self, task: T, iter: I) -> MapStream<T::Output>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'static,
    {
        self.map_with(task, iter, MapOptions::default())
    }

    /// [`map`](Self::map) with options (chunk size).
    pub fn map_with<T, I>(&self, task: T, iter: I, opts: MapOptions) -> MapStream<T::Output>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'static,
    {
        let _ = task;
        MapStream::new::<T, _>(self.core().clone(), iter.into_iter(), opts, true)
    }

    /// Like [`map`](Self::map), yielding results as they complete.
    pub fn map_unordered<T, I>(&self, task: T, iter: I) -> MapStream<T::Output>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'static,
    {
        self.map_unordered_with(task, iter, MapOptions::default())
    }

    /// [`map_unordered`](Self::map_unordered) with options.
    pub fn map_unordered_with<T, I>(
        &self,
        task: T,
        iter: I,
        opts: MapOptions,
    ) -> MapStream<T::Output>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'static,
    {
        let _ = task;
        MapStream::new::<T, _>(self.core().clone(), iter.into_iter(), opts, false)
    }

    /// Runs everything already submitted, then stops the workers. Later
    /// submissions resolve to [`TaskError::Shutdown`].
    pub async fn shutdown(&self) {
        self.owner.stop_attached();
        self.core().shutdown().await;
    }

    /// Resolves queued and running tasks to [`TaskError::Cancelled`] and stops
    /// the workers at once.
    pub async fn shutdown_now(&self) {
        self.owner.stop_attached();
        self.core().stop_now(TaskError::Cancelled).await;
    }

    /// Ties `a` to this executor: it stops when the executor does.
    pub(crate) fn attach(&self, a: Arc<dyn Attachment>) {
        self.owner
            .attached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(a);
    }

    /// The cluster the executor also places work on.
    pub(crate) fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.owner.cluster.as_ref()
    }

    /// The start method of the executor's processes.
    pub(crate) fn start_method(&self) -> crate::spawn::StartMethod {
        self.core().config().start_method
    }

    /// The largest message the executor accepts.
    pub(crate) fn max_frame(&self) -> usize {
        self.core().config().max_frame
    }

    /// The number of workers the executor keeps running.
    pub fn max_workers(&self) -> usize {
        self.core().config().workers
    }

    /// The pids of the worker processes alive right now.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.core().pids()
    }

    /// Names and pids of the workers that are up.
    pub fn workers(&self) -> Vec<(String, u32)> {
        self.core().ready_workers()
    }
}
