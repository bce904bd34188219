//! [`Failure`]: the error a task returns, in a form that crosses processes.
//!
//! A task's `Output` must be serde, and most error types are not
//! (`std::io::Error`, `ParseIntError`, `Box<dyn Error>`). `Failure` keeps
//! what the caller needs of any error — its message, the messages of its
//! source chain, the name of its type and, where the chain holds an
//! `io::Error`, its kind — as plain data.
//!
//! Why `Failure` does not implement `std::error::Error` itself: it converts
//! *from* every error (`impl<E: Error> From<E>`), which is what makes `?`
//! work in a task, and Rust's coherence rules forbid that blanket impl on a
//! type that is itself an `Error` (it would overlap `impl From<T> for T`).
//! anyhow's `Error` makes the same trade. The error view is one call away:
//! [`Failure::as_error`], `Deref<Target = dyn Error>`, and `From<Failure>`
//! for `Box<dyn Error + Send + Sync>`, `std::io::Error` and `mproc::Error`,
//! so `?` goes on working in the caller.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};

/// The error a task returns: any `std::error::Error` converted with `?`,
/// serializable so it can travel from the worker back to the caller.
///
/// This is how a task "raises". Write the task as returning
/// `Result<T, mproc::Failure>` and use `?` on any error; the caller gets the
/// same message, the messages of the whole source chain, the name of the
/// original error type, and [`io_kind`](Failure::io_kind) when the chain
/// held an `io::Error`.
///
/// ```no_run
/// use mproc::prelude::*;
///
/// #[mproc::task]
/// fn read_len(path: String) -> Result<usize, Failure> {
///     Ok(std::fs::read(&path)?.len())              // io::Error -> Failure
/// }
///
/// #[mproc::task]
/// fn parse(s: String) -> Result<u32, Failure> {
///     if s.is_empty() {
///         return Err(Failure::msg("empty input")); // like `raise ValueError("...")`
///     }
///     Ok(s.trim().parse()?)                        // ParseIntError -> Failure
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let pool = Pool::new(2)?;
///     // The outer `?` is for mproc's own failures (TaskError), the inner
///     // result is the task's.
///     match pool.apply(read_len, "/no/such/file".to_string())? {
///         Ok(n) => println!("{n} bytes"),
///         Err(e) => {
///             assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound));
///             println!("{e} ({})", e.type_name());
///         }
///     }
///     let n = pool.apply(parse, "42".to_string())??; // both at once
///     assert_eq!(n, 42);
///     Ok(())
/// }
/// ```
///
/// # Errors and panics in tasks
///
/// | in the task | the caller gets |
/// |---|---|
/// | `Ok(v)` | `Ok(Ok(v))` |
/// | `Err(e)` of any serde error type `E` | `Ok(Err(e))`, the same value |
/// | `Err(e)` or `?` with `Result<T, Failure>` | `Ok(Err(failure))`: message, chain, type name, `io_kind` |
/// | a panic | `Err(TaskError::Panicked { message })`; the worker lives on |
/// | `std::process::abort`, a segfault, `exit`, a kill | `Err(TaskError::WorkerDied { exit })`; only this task fails, the worker is replaced |
/// | past `TaskOptions::timeout` | `Err(TaskError::TimedOut)` |
///
/// Formatting: `{}` prints the error's own message, `{:#}` the message and
/// every cause (`"cannot read config: No such file or directory (os error
/// 2)"`); `{:?}` every field.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    head: Link,
    type_name: String,
    io_kind: Option<String>,
}

/// One error of the chain: its message and what caused it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Link {
    message: String,
    source: Option<Box<Link>>,
}

impl Failure {
    /// A failure with only a message, like `raise RuntimeError("...")`.
    pub fn msg(message: impl fmt::Display) -> Self {
        Failure {
            head: Link {
                message: message.to_string(),
                source: None,
            },
            type_name: "mproc::Failure".to_string(),
            io_kind: None,
        }
    }

    /// A failure with a message, caused by `cause` (kept as the chain).
    pub fn context(message: impl fmt::Display, cause: impl Into<Failure>) -> Self {
        let cause = cause.into();
        Failure {
            head: Link {
                message: message.to_string(),
                source: Some(Box::new(cause.head)),
            },
            type_name: "mproc::Failure".to_string(),
            io_kind: cause.io_kind,
        }
    }

    /// The message of the error itself, without its causes.
    pub fn message(&self) -> &str {
        &self.head.message
    }

    /// The messages of the causes, nearest first (the error's `source()`
    /// chain when it was converted).
    pub fn causes(&self) -> impl Iterator<Item = &str> + '_ {
        let mut cur = self.head.source.as_deref();
        std::iter::from_fn(move || {
            let link = cur?;
            cur = link.source.as_deref();
            Some(link.message.as_str())
        })
    }

    /// The Rust type name of the converted error (`"std::io::error::Error"`),
    /// or `"mproc::Failure"` for [`Failure::msg`]; Python's exception class.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The kind of the first `std::io::Error` in the converted chain, if
    /// there was one. A kind this build does not know comes back as
    /// `io::ErrorKind::Other`.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        self.io_kind.as_deref().map(io_kind_from_name)
    }

    /// This failure as a `std::error::Error` whose `source()` walks the
    /// chain, for code that takes `&dyn Error`.
    pub fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &self.head
    }
}

impl<E: StdError + 'static> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::from_chain(&e, std::any::type_name::<E>())
    }
}

impl Failure {
    /// A failure from a boxed error, such as a library's
    /// `Result<T, Box<dyn Error + Send + Sync>>`: `Box<dyn Error>` is not
    /// itself an `Error`, so `?` cannot convert it; `map_err(Failure::from_boxed)`
    /// keeps its message, chain and io kind. Its type name is the box's.
    pub fn from_boxed(e: Box<dyn StdError + Send + Sync + 'static>) -> Self {
        Failure::from_chain(
            &*e,
            std::any::type_name::<Box<dyn StdError + Send + Sync>>(),
        )
    }

    /// Walks `e` and its sources into a chain of messages, noting the kind
    /// of the first `io::Error` met.
    fn from_chain(e: &(dyn StdError + 'static), type_name: &str) -> Self {
        let mut io_kind = None;
        let mut messages = Vec::new();
        let mut cur = Some(e);
        while let Some(err) = cur {
            if io_kind.is_none() {
                if let Some(io) = err.downcast_ref::<io::Error>() {
                    io_kind = Some(format!("{:?}", io.kind()));
                }
            }
            messages.push(err.to_string());
            cur = err.source();
        }
        let mut head: Option<Link> = None;
        for message in messages.into_iter().rev() {
            head = Some(Link {
                message,
                source: head.map(Box::new),
            });
        }
        Failure {
            head: head.expect("an error has a message"),
            type_name: type_name.to_string(),
            io_kind,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.head.message)?;
        if f.alternate() {
            for cause in self.causes() {
                write!(f, ": {cause}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("message", &self.head.message)
            .field("causes", &self.causes().collect::<Vec<_>>())
            .field("type_name", &self.type_name)
            .field("io_kind", &self.io_kind)
            .finish()
    }
}

impl std::ops::Deref for Failure {
    type Target = dyn StdError + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        self.as_error()
    }
}

impl AsRef<dyn StdError + Send + Sync> for Failure {
    fn as_ref(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self.as_error()
    }
}

impl From<Failure> for Box<dyn StdError + Send + Sync + 'static> {
    fn from(f: Failure) -> Self {
        Box::new(f.head)
    }
}

impl From<Failure> for Box<dyn StdError + 'static> {
    fn from(f: Failure) -> Self {
        Box::new(f.head)
    }
}

impl From<Failure> for io::Error {
    /// An `io::Error` of the failure's [`io_kind`](Failure::io_kind)
    /// (`Other` when it has none) carrying the whole chain.
    fn from(f: Failure) -> Self {
        io::Error::new(f.io_kind().unwrap_or(io::ErrorKind::Other), f.head)
    }
}

impl From<Failure> for Error {
    /// An error of kind [`ErrorKind::Task`] with the failure's message and
    /// chain.
    fn from(f: Failure) -> Self {
        Error::transparent(ErrorKind::Task, f.head)
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

impl StdError for Link {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|l| l as &(dyn StdError + 'static))
    }
}

/// The `io::ErrorKind` whose `Debug` name is `name`.
fn io_kind_from_name(name: &str) -> io::ErrorKind {
    use io::ErrorKind as K;
    const KINDS: &[K] = &[
        K::NotFound,
        K::PermissionDenied,
        K::ConnectionRefused,
        K::ConnectionReset,
        K::HostUnreachable,
        K::NetworkUnreachable,
        K::ConnectionAborted,
        K::NotConnected,
        K::AddrInUse,
        K::AddrNotAvailable,
        K::NetworkDown,
        K::BrokenPipe,
        K::AlreadyExists,
        K::WouldBlock,
        K::NotADirectory,
        K::IsADirectory,
        K::DirectoryNotEmpty,
        K::ReadOnlyFilesystem,
        K::StaleNetworkFileHandle,
        K::InvalidInput,
        K::InvalidData,
        K::TimedOut,
        K::WriteZero,
        K::StorageFull,
        K::NotSeekable,
        K::QuotaExceeded,
        K::FileTooLarge,
        K::ResourceBusy,
        K::ExecutableFileBusy,
        K::Deadlock,
        K::CrossesDevices,
        K::TooManyLinks,
        K::ArgumentListTooLong,
        K::Interrupted,
        K::Unsupported,
        K::UnexpectedEof,
        K::OutOfMemory,
        K::Other,
    ];
    KINDS
        .iter()
        .copied()
        .find(|k| format!("{k:?}") == name)
        .unwrap_or(K::Other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot read config")
        }
    }

    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    fn read(path: &str) -> Result<Vec<u8>, Failure> {
        Ok(std::fs::read(path)?)
    }

    #[test]
    fn question_mark_keeps_message_kind_and_type() {
        let e = read("/nonexistent/mproc-failure-test").unwrap_err();
        assert_eq!(e.io_kind(), Some(io::ErrorKind::NotFound));
        assert_eq!(e.type_name(), "std::io::error::Error");
        assert!(e.message().contains("No such file"), "{e:?}");
        assert_eq!(e.causes().count(), 0);
    }

    #[test]
    fn the_source_chain_survives_the_wire() {
        let io = io::Error::new(io::ErrorKind::PermissionDenied, "locked");
        let f = Failure::from(Outer(io));
        let bytes = postcard::to_stdvec(&f).unwrap();
        let back: Failure = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.to_string(), "cannot read config");
        assert_eq!(format!("{back:#}"), "cannot read config: locked");
        assert_eq!(back.io_kind(), Some(io::ErrorKind::PermissionDenied));
        let as_err = back.as_error();
        assert_eq!(as_err.source().unwrap().to_string(), "locked");
        let mproc_err = Error::from(back.clone());
        assert_eq!(mproc_err.kind(), ErrorKind::Task);
        assert_eq!(mproc_err.to_string(), "cannot read config");
        let io_back = io::Error::from(back);
        assert_eq!(io_back.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn every_listed_kind_maps_back_to_itself() {
        for k in [
            io::ErrorKind::NotFound,
            io::ErrorKind::TimedOut,
            io::ErrorKind::Other,
        ] {
            assert_eq!(io_kind_from_name(&format!("{k:?}")), k);
        }
        assert_eq!(io_kind_from_name("NoSuchKind"), io::ErrorKind::Other);
    }

    #[test]
    fn a_boxed_error_keeps_its_chain() {
        let boxed: Box<dyn StdError + Send + Sync> =
            Box::new(Outer(io::Error::new(io::ErrorKind::TimedOut, "slow disk")));
        let f = Failure::from_boxed(boxed);
        assert_eq!(format!("{f:#}"), "cannot read config: slow disk");
        assert_eq!(f.io_kind(), Some(io::ErrorKind::TimedOut));
    }

    #[test]
    fn msg_and_context() {
        let f = Failure::context("loading", Failure::msg("empty input"));
        assert_eq!(format!("{f:#}"), "loading: empty input");
        assert_eq!(f.causes().collect::<Vec<_>>(), ["empty input"]);
        assert_eq!(f.type_name(), "mproc::Failure");
    }
}
