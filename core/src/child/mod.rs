//! What runs in a child process mproc started: the boot hook, the worker
//! loop, `Process` mode, the Manager server, actors and the fork server.
//!
//! Nothing here runs in the program's own process except the fork entry's
//! bookkeeping; the parent side of the same conversations lives in `spawn`
//! and the executor's process link.

mod actor;
pub(crate) mod boot;
pub(crate) mod entry;
pub(crate) mod forkserver;
mod manager;
mod panics;
mod process;
mod worker;

/// The exit code of a child that could not start a thread it needs
/// (`EX_OSERR`): the process or thread limit was reached. The parent names
/// the limit in the error it reports.
pub(crate) const EXIT_NO_THREAD: i32 = 71;

/// Why a child could not do what it was started for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChildError {
    /// The conversation with the parent broke before work could start.
    #[error("handshake with the parent failed: {0}")]
    Handshake(mproc_transport::TransportError),
    /// The parent sent something that is not a valid message.
    #[error("malformed message from the parent: {0}")]
    Malformed(postcard::Error),
    /// The parent broke the protocol's order.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The parent is another build of the program.
    #[error("the parent is another build of the program")]
    OtherBuild,
    /// The parent refused this worker.
    #[error("refused by the parent: {0}")]
    Refused(String),
    /// The chosen transport could not be opened.
    #[error("cannot open the {what} transport: {cause}")]
    Transport {
        /// Which transport.
        what: &'static str,
        /// Why.
        cause: std::io::Error,
    },
    /// The initializer failed (the parent has been told).
    #[error("the initializer failed")]
    Initializer,
    /// A thread could not be started (the process or thread limit).
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}
