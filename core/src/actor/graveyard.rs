//! Answers for actors gone for good, all on one thread of the process that
//! spawned them (`mproc-actor-rip`).
//!
//! A dead actor's address must keep answering: a caller that dials it later
//! (a reference held by a task, say) learns how each instance ended and
//! fails its calls with the right `WorkerDied`. Rather than keep a
//! supervisor thread per dead actor, the supervisor hands its listening
//! sockets here and ends; one thread waits in `poll` on every grave and a
//! wake-up pipe, accepts, and gives each caller the hello on a short-lived
//! thread (the key's handshake may take a slow peer up to its deadline).

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::protocol::auth::{self, AUTH_DEADLINE};

/// One dead actor's address and what it answers.
pub(crate) struct Grave {
    pub(crate) unix: UnixListener,
    pub(crate) tcp: Option<TcpListener>,
    /// The framed hello (`live: false`, the whole history).
    pub(crate) hello: Arc<Vec<u8>>,
    pub(crate) key: Arc<Vec<u8>>,
}

struct Yard {
    graves: HashMap<u64, Grave>,
    /// Written to wake the thread when the graves change.
    wake: OwnedFd,
}

fn yard() -> Option<&'static Mutex<Yard>> {
    static YARD: OnceLock<Option<Mutex<Yard>>> = OnceLock::new();
    YARD.get_or_init(|| {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .ok()?;
        std::thread::Builder::new()
            .name("mproc-actor-rip".into())
            .spawn(move || serve(r))
            .ok()?;
        Some(Mutex::new(Yard {
            graves: HashMap::new(),
            wake: w,
        }))
    })
    .as_ref()
}

fn lock(y: &Mutex<Yard>) -> MutexGuard<'_, Yard> {
    y.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps answering for actor `id` until [`forget`]; false when the thread
/// that answers could not be started.
pub(crate) fn bury(id: u64, grave: Grave) -> bool {
    let Some(y) = yard() else { return false };
    let mut yard = lock(y);
    yard.graves.insert(id, grave);
    let _ = nix::unistd::write(&yard.wake, &[1]);
    true
}

/// Stops answering for actor `id` (its executor is stopping).
pub(crate) fn forget(id: u64) {
    let Some(y) = yard() else { return };
    let mut yard = lock(y);
    if yard.graves.remove(&id).is_some() {
        let _ = nix::unistd::write(&yard.wake, &[1]);
    }
}

fn serve(wake: OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let Some(y) = yard() else { return };
        // The listeners are duplicated so that polling them needs no lock.
        let mut socks: Vec<Answer> = Vec::new();
        for g in lock(y).graves.values() {
            let dups = std::iter::once(g.unix.try_clone().map(Listener::Unix))
                .chain(g.tcp.as_ref().map(|t| t.try_clone().map(Listener::Tcp)));
            for l in dups.flatten() {
                socks.push((l, g.hello.clone(), g.key.clone()));
            }
        }
        let mut fds = vec![PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            socks
                .iter()
                .map(|(l, _, _)| PollFd::new(l.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
        let ready: Vec<usize> = fds
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(i, _)| i - 1)
            .collect();
        drop(fds);
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(&wake, &mut buf), Ok(n) if n > 0) {}
        for i in ready {
            let (l, hello, key) = &socks[i];
            l.accept_one(hello, key);
        }
    }
}

/// A listening socket of a grave, with what it answers (hello, key).
type Answer = (Listener, Arc<Vec<u8>>, Arc<Vec<u8>>);

/// A grave's listening socket.
enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Listener::Unix(l) => l.as_fd(),
            Listener::Tcp(l) => l.as_fd(),
        }
    }

    /// Accepts one caller without blocking, if one is there, and answers
    /// it. (Non-blocking is set on the socket itself, which no instance
    /// uses any more.)
    fn accept_one(&self, hello: &Arc<Vec<u8>>, key: &Arc<Vec<u8>>) {
        match self {
            Listener::Unix(l) => {
                if l.set_nonblocking(true).is_ok() {
                    if let Ok((c, _)) = l.accept() {
                        if c.set_nonblocking(false).is_ok() {
                            answer_dead(c, hello.clone(), key.clone());
                        }
                    }
                }
            }
            Listener::Tcp(l) => {
                if l.set_nonblocking(true).is_ok() {
                    if let Ok((c, _)) = l.accept() {
                        if c.set_nonblocking(false).is_ok() {
                            answer_dead(c, hello.clone(), key.clone());
                        }
                    }
                }
            }
        }
    }
}

/// Tells one caller how the actor's instances ended. The handshake may take
/// a slow peer up to its deadline: not on the accepting thread.
fn answer_dead<S>(mut conn: S, hello: Arc<Vec<u8>>, key: Arc<Vec<u8>>)
where
    S: auth::Bounded + Send + 'static + Timeouts,
{
    let _ = std::thread::Builder::new()
        .name("mproc-actor-rip".into())
        .spawn(move || {
            conn.set_timeouts(Some(AUTH_DEADLINE));
            if auth::server_within(&mut conn, &key, auth::Purpose::Actor, AUTH_DEADLINE).is_ok() {
                let _ = conn.write_all(&hello);
            }
        });
}

/// Sockets whose reads and writes can be bounded.
trait Timeouts {
    /// Bounds reads and writes (`None`: no bound).
    fn set_timeouts(&self, t: Option<Duration>);
}

impl Timeouts for std::os::unix::net::UnixStream {
    fn set_timeouts(&self, t: Option<Duration>) {
        let _ = self.set_read_timeout(t);
        let _ = self.set_write_timeout(t);
    }
}

impl Timeouts for std::net::TcpStream {
    fn set_timeouts(&self, t: Option<Duration>) {
        let _ = self.set_read_timeout(t);
        let _ = self.set_write_timeout(t);
        let _ = self.set_nodelay(true);
    }
}
