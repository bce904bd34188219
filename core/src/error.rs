//! Error types: [`TaskError`] for one task, [`Error`] for everything else.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, when the process exited by itself.
    pub code: Option<i32>,
    /// The signal number, when a signal ended the process.
    pub signal: Option<i32>,
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (_, Some(sig)) => write!(f, "killed by signal {sig} ({})", signal_name(sig)),
            (Some(code), None) => write!(f, "exit code {code}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(sig).map_or("unknown", |s| s.as_str())
}

/// Why a task produced no value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the worker caught it and lives on.
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The worker process running the task died (abort, segfault, SIGKILL,
    /// OOM kill, `exit`). It has been replaced.
    WorkerDied {
        /// How the worker ended.
        exit: ExitInfo,
    },
    /// The task ran past its timeout; its worker was recycled.
    TimedOut,
    /// The task was cancelled before it finished.
    Cancelled,
    /// Arguments or result could not be encoded or decoded, or exceeded the
    /// message size limit.
    Serialization {
        /// What failed.
        message: String,
    },
    /// The worker does not know a task of this name.
    UnknownTask {
        /// The name that was asked for.
        name: String,
    },
    /// The executor or pool was shut down before the task could run.
    Shutdown,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked { message } => write!(f, "task panicked: {message}"),
            TaskError::WorkerDied { exit } => write!(f, "worker died ({exit})"),
            TaskError::TimedOut => f.write_str("task timed out"),
            TaskError::Cancelled => f.write_str("task was cancelled"),
            TaskError::Serialization { message } => write!(f, "serialization failed: {message}"),
            TaskError::UnknownTask { name } => write!(f, "unknown task `{name}`"),
            TaskError::Shutdown => f.write_str("executor is shut down"),
        }
    }
}

impl std::error::Error for TaskError {}

/// The category of an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The other side closed or died.
    Disconnected,
    /// An operating-system error.
    Io,
    /// A task failed; the source is a [`TaskError`].
    Task,
    /// A queue operation failed.
    Queue,
    /// A process could not be started, or a worker failed to come up.
    Spawn,
    /// The peer broke the protocol: bad frame, wrong version, other build.
    Protocol,
    /// Authentication was refused.
    Auth,
}

/// The error type of mproc's fallible operations other than a task's own
/// result.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The [`TaskError`] behind an error of kind [`ErrorKind::Task`].
    pub fn task_error(&self) -> Option<&TaskError> {
        self.source.as_ref()?.downcast_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

impl From<TaskError> for Error {
    fn from(e: TaskError) -> Self {
        Error::with_source(ErrorKind::Task, e.to_string(), e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::with_source(ErrorKind::Io, e.to_string(), e)
    }
}

impl From<mproc_transport::TransportError> for Error {
    fn from(e: mproc_transport::TransportError) -> Self {
        use mproc_transport::TransportError as T;
        let kind = match e {
            T::Disconnected => ErrorKind::Disconnected,
            T::FrameTooLarge { .. } => ErrorKind::Protocol,
            T::Io(_) => ErrorKind::Io,
            _ => ErrorKind::Protocol,
        };
        Error::with_source(kind, e.to_string(), e)
    }
}

/// Why a queue operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueError {
    /// No item arrived in time (`get_timeout`, `try_get`).
    Empty,
    /// No room freed up in time (`put_timeout`, `try_put` on a full queue).
    Full,
    /// The queue was closed: no more puts; gets fail once it is drained.
    Closed,
    /// `task_done` was called more times than items were put.
    TooManyTaskDone,
    /// The encoded item is larger than the queue can ever hold.
    TooLarge {
        /// The encoded size in bytes.
        size: usize,
        /// The largest encoded item the queue accepts.
        max: usize,
    },
    /// The item could not be encoded or decoded.
    Encoding {
        /// What failed.
        message: String,
    },
    /// The queue's buffer could not grow, or could not be mapped in this
    /// process, for lack of address space or memory (e.g. under
    /// `ulimit -v`).
    OutOfMemory,
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Empty => f.write_str("queue is empty"),
            QueueError::Full => f.write_str("queue is full"),
            QueueError::Closed => f.write_str("queue is closed"),
            QueueError::TooManyTaskDone => f.write_str("task_done() called too many times"),
            QueueError::TooLarge { size, max } => {
                write!(
                    f,
                    "item of {size} bytes is larger than the queue's limit of {max} bytes"
                )
            }
            QueueError::Encoding { message } => {
                write!(f, "cannot encode or decode the item: {message}")
            }
            QueueError::OutOfMemory => f.write_str(
                "the queue's buffer cannot be grown or mapped in this process: out of address \
                 space or memory",
            ),
        }
    }
}

impl std::error::Error for QueueError {}

impl From<QueueError> for Error {
    fn from(e: QueueError) -> Self {
        Error::with_source(ErrorKind::Queue, e.to_string(), e)
    }
}
