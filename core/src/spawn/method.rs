//! [`StartMethod`] and the program-wide setting behind
//! [`set_start_method`] / [`get_start_method`].

use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::{Error, ErrorKind};

/// How new processes — pool and executor workers, [`Process`](crate::Process)
/// children — are started. Choose per builder, or for the whole program
/// with [`set_start_method`](crate::set_start_method).
///
/// Every method gives the same child: it runs only mproc's boot and the
/// task, never user code from `main`, and it dies with its parent (even if
/// the parent is killed by SIGKILL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartMethod {
    /// The program's own executable, started afresh (`posix_spawn` of
    /// `/proc/self/exe`). Safe with threads in the parent; the slowest
    /// (a fresh process image, ~1–3 ms).
    #[default]
    Spawn,
    /// Forked on request by a single-threaded fork server, itself spawned
    /// the first time it is needed (its `/proc/PID/comm` is
    /// `mproc-forksrv`). Children come from a clean, thread-free image;
    /// cheaper than spawn once the server runs.
    Forkserver,
    /// A fork of the calling process: the fastest. Works from a
    /// multi-threaded parent — the child runs only mproc's worker loop on a
    /// fresh thread, with the locks mproc and std's stdio use released,
    /// default signal handlers and no inherited descriptor but stdio — but
    /// user code in the child inherits the usual fork hazards: locks that
    /// other parent threads held stay locked, their threads are gone, and
    /// objects owning descriptors refer to closed ones. See the
    /// [`Process`](crate::Process) docs.
    Fork,
}

impl StartMethod {
    /// The name Python uses: `"spawn"`, `"forkserver"` or `"fork"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StartMethod::Spawn => "spawn",
            StartMethod::Forkserver => "forkserver",
            StartMethod::Fork => "fork",
        }
    }
}

impl std::fmt::Display for StartMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StartMethod {
    type Err = Error;

    /// Parses Python's names: `"spawn"`, `"forkserver"`, `"fork"`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::Forkserver),
            "fork" => Ok(StartMethod::Fork),
            other => Err(Error::new(
                ErrorKind::Spawn,
                format!("unknown start method {other:?}: use spawn, forkserver or fork"),
            )),
        }
    }
}

/// 0: not set; otherwise 1 + the method's index.
static START_METHOD: AtomicU8 = AtomicU8::new(0);

fn method_code(m: StartMethod) -> u8 {
    match m {
        StartMethod::Spawn => 1,
        StartMethod::Forkserver => 2,
        StartMethod::Fork => 3,
    }
}

/// Sets the start method used by every [`Process`](crate::Process), executor and pool that
/// does not choose one itself. Like Python's `set_start_method`, it may be
/// called once per program.
///
/// # Errors
/// [`ErrorKind::Spawn`] when the method has already been set.
pub fn set_start_method(method: StartMethod) -> Result<(), Error> {
    START_METHOD
        .compare_exchange(0, method_code(method), Ordering::AcqRel, Ordering::Acquire)
        .map(|_| ())
        .map_err(|_| {
            Error::new(
                ErrorKind::Spawn,
                format!(
                    "the start method has already been set (to {:?})",
                    get_start_method()
                ),
            )
        })
}

/// The start method in effect: the one set by [`set_start_method`], or the
/// default, [`StartMethod::Spawn`]. Reading it never fixes it.
pub fn get_start_method() -> StartMethod {
    match START_METHOD.load(Ordering::Acquire) {
        2 => StartMethod::Forkserver,
        3 => StartMethod::Fork,
        _ => StartMethod::Spawn,
    }
}
