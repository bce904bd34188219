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
    /// The node running the task was lost (killed, cut off, or silent past
    /// the heartbeat limit) before the task finished.
    NodeLost {
        /// The node that was lost.
        node: crate::address::NodeId,
    },
    /// No worker could be started to run the task (after retries); the
    /// message names the cause, e.g. the file-descriptor limit.
    Spawn {
        /// Why workers could not be started.
        message: String,
    },
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
            TaskError::Spawn { message } => write!(f, "no worker could be started: {message}"),
            TaskError::NodeLost { node } => write!(f, "{node} was lost"),
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
    /// A task failed: the error came from a [`TaskError`] (see
    /// [`Error::task_error`]) or from a task's own
    /// [`Failure`](crate::Failure).
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
///
/// Its message says what failed and why, cause included (`cannot start 8
/// workers: cannot start a worker process: Too many open files …`), so
/// printing it alone tells the whole story. The cause is kept too, for
/// [`task_error`](Self::task_error) and downcasting, but
/// [`source`](std::error::Error::source) continues *after* it, so a report
/// that walks the chain prints each cause once.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    /// What failed; `None` for a converted error, which shows its cause's
    /// message alone.
    context: Option<String>,
    cause: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    /// Printed after the cause: which limit a failed start ran into.
    hint: String,
}

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            context: Some(message.into()),
            cause: None,
            hint: String::new(),
        }
    }

    /// An error of `kind`: `context` says what failed, `cause` why. A
    /// start ([`ErrorKind::Spawn`]) that failed for want of descriptors,
    /// processes or threads says which limit it met (see [`limit_hint`]).
    pub(crate) fn with_source(
        kind: ErrorKind,
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let hint = match (&cause as &dyn std::any::Any).downcast_ref::<std::io::Error>() {
            Some(io) if kind == ErrorKind::Spawn => limit_hint(io),
            _ => String::new(),
        };
        Error {
            kind,
            context: Some(context.into()),
            cause: Some(Box::new(cause)),
            hint,
        }
    }

    /// `cause` itself, as an error of `kind`.
    pub(crate) fn transparent(
        kind: ErrorKind,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            context: None,
            cause: Some(Box::new(cause)),
            hint: String::new(),
        }
    }

    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The [`TaskError`] behind an error of kind [`ErrorKind::Task`].
    pub fn task_error(&self) -> Option<&TaskError> {
        self.cause.as_ref()?.downcast_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.context, &self.cause) {
            (Some(c), Some(cause)) => write!(f, "{c}: {cause}{}", self.hint),
            (Some(c), None) => f.write_str(c),
            (None, Some(cause)) => fmt::Display::fmt(cause, f),
            (None, None) => f.write_str("unknown error"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The cause's own message is part of ours: the chain goes on from
        // what caused it.
        self.cause.as_deref()?.source()
    }
}

impl From<TaskError> for Error {
    fn from(e: TaskError) -> Self {
        Error::transparent(ErrorKind::Task, e)
    }
}

/// Advice for the failures users meet at scale when a process, thread or
/// socket cannot be created: which limit was reached, its value, and what
/// to do. Empty for other errors.
pub(crate) fn limit_hint(e: &std::io::Error) -> String {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    let soft = |r| {
        getrlimit(r).map_or_else(
            |_| "?".to_string(),
            |(s, _)| {
                if s == RLIM_INFINITY {
                    "unlimited".to_string()
                } else {
                    s.to_string()
                }
            },
        )
    };
    let sysctl = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .map_or_else(|_| "?".to_string(), |v| v.trim().to_string())
    };
    match e.raw_os_error() {
        Some(libc::EMFILE) => format!(
            " (the process has run out of file descriptors: its limit, RLIMIT_NOFILE, is {}, \
             and each worker or actor needs several; raise it with `ulimit -n` or start fewer)",
            soft(Resource::RLIMIT_NOFILE)
        ),
        Some(libc::ENFILE) => " (the system has run out of file descriptors: its limit is \
             fs.file-max; start fewer workers or actors)"
            .to_string(),
        Some(libc::EAGAIN) => format!(
            " (no more processes or threads can be made: the user's limit, RLIMIT_NPROC, is {} \
             (not applied to root), the system's kernel.pid_max is {} and kernel.threads-max \
             {}; each worker or actor is a process, with a thread or two here; raise \
             `ulimit -u` or start fewer)",
            soft(Resource::RLIMIT_NPROC),
            sysctl("pid_max"),
            sysctl("threads-max")
        ),
        _ => String::new(),
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::transparent(ErrorKind::Io, e)
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
        Error::transparent(kind, e)
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
        Error::transparent(ErrorKind::Queue, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints an error and its chain of causes, as a report would.
    fn report(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut cur = e.source();
        while let Some(c) = cur {
            out.push_str(" <- ");
            out.push_str(&c.to_string());
            cur = c.source();
        }
        out
    }

    #[test]
    fn a_start_that_met_a_limit_names_it() {
        let e = |errno| {
            let io = std::io::Error::from_raw_os_error(errno);
            Error::with_source(ErrorKind::Spawn, "cannot start a process", io).to_string()
        };
        assert!(
            e(libc::EMFILE).contains("RLIMIT_NOFILE"),
            "{}",
            e(libc::EMFILE)
        );
        assert!(
            e(libc::ENFILE).contains("fs.file-max"),
            "{}",
            e(libc::ENFILE)
        );
        let procs = e(libc::EAGAIN);
        assert!(
            procs.contains("RLIMIT_NPROC") && procs.contains("pid_max"),
            "{procs}"
        );
        assert_eq!(
            e(libc::ENOENT),
            "cannot start a process: No such file or directory (os error 2)"
        );
        // Only starts get the advice.
        let io = std::io::Error::from_raw_os_error(libc::EAGAIN);
        let other = Error::with_source(ErrorKind::Io, "cannot read", io).to_string();
        assert!(!other.contains("RLIMIT"), "{other}");
    }

    #[test]
    fn a_cause_is_printed_once() {
        let io = std::io::Error::from_raw_os_error(libc::EMFILE);
        let text = io.to_string();
        let converted = Error::from(std::io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(
            report(&converted).matches(&text).count(),
            1,
            "{}",
            report(&converted)
        );
        let wrapped = Error::with_source(ErrorKind::Spawn, "cannot start a worker", io);
        assert_eq!(
            report(&wrapped).matches(&text).count(),
            1,
            "{}",
            report(&wrapped)
        );
        assert_eq!(wrapped.kind(), ErrorKind::Spawn);
        assert!(wrapped.to_string().contains("RLIMIT_NOFILE"), "{wrapped}");
        let task = Error::from(TaskError::TimedOut);
        assert_eq!(task.task_error(), Some(&TaskError::TimedOut));
        assert_eq!(report(&task), "task timed out");
    }
}
