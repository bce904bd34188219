//! Workers that are processes: the [`Launcher`] and [`WorkerLink`] the
//! scheduler uses by default.
//!
//! A worker is started on the spawner thread (see `spawn`) with one end of a
//! socket pair. A reader thread per worker (`mproc-conn`) runs the parent's
//! side of the handshake (see `protocol`), then reads the worker's answers
//! (polling briefly before it sleeps while the scheduler has no backlog,
//! see `Core::spin_worth`) and hands them to the scheduler; when the channel ends it reaps the
//! process and reports the exit. Signals go through the child's pidfd, so
//! a kill can never reach a later process that reused the pid.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use mproc_transport::{
    socketpair, spare, ByteStream, FrameReader, PipeChannel, ShmChannel, Spin, TransportError,
    UnixChannel, DEFAULT_RING_SIZE, LINK_SPIN_NS,
};
use nix::sys::signal::Signal;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::link::{BootError, Event, Launcher, WorkerLink};
use super::Core;
use crate::children::ChildProc;
use crate::error::ExitInfo;
use crate::executor::TransportKind;
use crate::outbox::{Outbox, Sidecars};
use crate::protocol::batch::Batch;
use crate::protocol::claims::Claims;
use crate::protocol::{
    decode, level_to_u8, FrameError, ToParent, ToWorker, TransportWire, MAGIC, MODE_WORKER,
    PROTOCOL_VERSION,
};

/// How long a fresh worker may take to say hello, and then to be ready.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an exiting worker gets before SIGKILL.
const REAP_GRACE: Duration = Duration::from_secs(2);

/// Starts workers as processes with the scheduler's start method.
#[derive(Debug)]
pub(crate) struct ProcLauncher;

impl Launcher for ProcLauncher {
    fn launch(&self, core: Arc<Core>, key: u64, name: String) {
        crate::spawn::on_spawner_thread(move || spawn_worker(core, key, name));
    }
}

/// A worker process, as the scheduler reaches it.
#[derive(Debug)]
pub(crate) struct ProcLink {
    child: Arc<ChildProc>,
    claims: Claims,
    /// The bootstrap socket until the handshake ends, then the chosen
    /// transport.
    chan: std::sync::OnceLock<(Arc<dyn ByteStream>, Arc<Outbox>)>,
    boot: Arc<UnixChannel>,
}

impl WorkerLink for ProcLink {
    fn pid(&self) -> u32 {
        self.child.pid()
    }
    fn claims(&self) -> &Claims {
        &self.claims
    }
    fn enqueue(&self, msg: &ToWorker<'_>) -> Result<(), FrameError> {
        match self.chan.get() {
            Some((_, outbox)) => outbox.enqueue(msg),
            None => Ok(()), // not ready: nothing is sent before the handshake
        }
    }
    fn enqueue_with_sidecars(
        &self,
        msg: &ToWorker<'_>,
        sides: &Sidecars,
    ) -> Result<(), FrameError> {
        match self.chan.get() {
            Some((_, outbox)) if sides.is_empty() => outbox.enqueue(msg),
            Some((_, outbox)) => outbox.enqueue_with_sidecars(msg, sides),
            None => Ok(()),
        }
    }
    fn flush(&self) {
        if let Some((_, outbox)) = self.chan.get() {
            outbox.flush();
        }
    }
    fn kill(&self) {
        let _ = self.child.signal(Signal::SIGKILL);
    }
    fn close(&self) {
        self.boot.shutdown();
        if let Some((chan, _)) = self.chan.get() {
            chan.shutdown();
        }
    }
}

/// On the spawner thread: starts the process and its reader thread.
fn spawn_worker(core: Arc<Core>, key: u64, name: String) {
    let made = socketpair().and_then(|(ours, theirs)| {
        let claims = Claims::create_shared()?;
        let child = crate::spawn::start_process(core.config().start_method, theirs.into_fd())?;
        Ok((ours, claims, child))
    });
    let (boot, claims, child) = match made {
        Ok(m) => m,
        Err(e) => return core.worker_failed(key, BootError::Spawn(e)),
    };
    let link = Arc::new(ProcLink {
        child: Arc::new(child),
        claims,
        chan: std::sync::OnceLock::new(),
        boot: Arc::new(boot),
    });
    core.worker_started(key, link.clone());
    let c = core.clone();
    let l = link.clone();
    let spawned = std::thread::Builder::new()
        .name("mproc-conn".into())
        .spawn(move || serve(c, key, name, l));
    match spawned {
        Ok(h) => core.adopt_thread(h),
        Err(e) => {
            link.kill();
            let _ = link.child.reap(REAP_GRACE);
            core.worker_failed(key, BootError::Spawn(e));
        }
    }
}

/// The reader thread of one worker.
fn serve(core: Arc<Core>, key: u64, name: String, link: Arc<ProcLink>) {
    let mut reader = FrameReader::new(core.config().max_frame);
    let pid = link.pid();
    let chan = match handshake(&core, &link, &mut reader, &name) {
        Ok(chan) => chan,
        Err(e) => {
            link.close();
            // Exited by itself (or killed by someone else), or killed here.
            let exited = link.child.wait_timeout(Some(REAP_GRACE));
            let exit = exited.unwrap_or_else(|| link.child.reap(Duration::ZERO));
            let killed = exited.is_some_and(|x| x.signal == Some(Signal::SIGKILL as i32));
            let e = match e {
                BootError::Handshake(m) if killed => BootError::Killed(format!("{m} ({exit})")),
                BootError::Handshake(m) if exit.code == Some(crate::child::EXIT_NO_THREAD) => {
                    let no_thread = std::io::Error::from_raw_os_error(libc::EAGAIN);
                    let hint = crate::error::limit_hint(&no_thread);
                    BootError::Handshake(format!(
                        "{m} ({exit}): the worker could not start a thread{hint}"
                    ))
                }
                BootError::Handshake(m) => BootError::Handshake(format!("{m} ({exit})")),
                e => e,
            };
            return core.worker_failed(key, e);
        }
    };
    core.worker_ready(key);

    let mut events: Vec<Event> = Vec::new();
    // Polls briefly for the worker's answer before sleeping, when the
    // scheduler has no backlog (see `Core::spin_worth`), so a round trip
    // needs no wake-up on this side.
    let spin = Spin::polite(LINK_SPIN_NS);
    // Under the default policy, switched to `SCHED_BATCH` while tasks are
    // long (see `Core::long_tasks`); a policy the user chose is left alone.
    let mut policy = crate::sys::default_policy().then_some(false);
    let why = loop {
        if !reader.has_frame() && core.spin_worth() {
            spin.until(|| chan.ready());
        }
        if let Some(batch) = policy.as_mut() {
            let long = core.long_tasks();
            if *batch != long {
                // On failure (a seccomp filter, say) it stays as it is, and
                // is not tried again.
                policy = crate::sys::batch_policy(long).ok().map(|()| long);
            }
        }
        // Under a backlog of long tasks every CPU computes: sleep for
        // answers only, not also each time the worker takes in a request
        // (see `Core::long_backlog`).
        chan.wake_on_input_only(core.long_backlog());
        let (frame, sides) = match reader.next_frame(&*chan) {
            Ok(_) => reader.last_frame_and_sidecars(),
            Err(TransportError::Disconnected) => break None,
            Err(e) => break Some(e.to_string()),
        };
        let base = frame.as_ptr() as usize;
        let msg = decode::<ToParent<'_>>(frame);
        // A large result batch ends the frame: keep it in the frame's own
        // buffer rather than copying it out.
        if let Ok(ToParent::Done {
            id,
            exec_ns,
            oob,
            result: Ok(bytes),
        }) = &msg
        {
            let at = bytes.0.as_ptr() as usize - base;
            let (id, exec_ns, oob) = (*id, *exec_ns, *oob);
            let ends_frame = at + bytes.0.len() == frame.len();
            if ends_frame && bytes.0.len() >= spare::LARGE {
                drop(msg);
                let (buf, start) = reader
                    .take_last_frame()
                    .expect("the frame just read, over spare::LARGE, can be taken");
                events.push(Event::Done {
                    id,
                    exec_ns,
                    outcome: Ok(Batch::within(buf, start + at).with_sides(oob, sides)),
                });
                if !reader.has_frame() {
                    core.worker_events(key, &mut events);
                }
                continue;
            }
        }
        match msg {
            Ok(ToParent::Done {
                id,
                exec_ns,
                oob,
                result,
            }) => events.push(Event::Done {
                id,
                exec_ns,
                outcome: result.map(|b| Batch::copy_of(b.0).with_sides(oob, sides)),
            }),
            Ok(ToParent::Part { id, count, items }) => events.push(Event::Part {
                id,
                count,
                items: spare::copy_of(items.0),
                sides,
            }),
            Ok(ToParent::Cancelled { id }) => events.push(Event::Cancelled { id }),
            Ok(ToParent::LastWords { id, message }) => events.push(Event::LastWords {
                id,
                message: message.to_string(),
            }),
            Ok(ToParent::Log {
                level,
                target,
                message,
            }) => crate::trace::reemit(&name, pid, level, target, message),
            Ok(other) => break Some(format!("unexpected message {other:?}")),
            Err(e) => break Some(format!("malformed message: {e}")),
        }
        if !reader.has_frame() && !events.is_empty() {
            core.worker_events(key, &mut events);
        }
    };
    if !events.is_empty() {
        core.worker_events(key, &mut events);
    }
    if let Some(why) = why {
        tracing::error!(worker = %name, pid, "protocol error from worker, killing it: {why}");
        link.kill();
    }
    link.close();
    let exit: ExitInfo = link.child.reap(REAP_GRACE);
    // Release the worker's channel and writer thread before it counts as
    // gone, so a returned `shutdown` leaves no descriptor or thread behind.
    if let Some((_, outbox)) = link.chan.get() {
        outbox.close();
    }
    drop(chan);
    core.worker_exited(key, exit);
}

/// Runs the parent's side of the handshake on the bootstrap socket and
/// returns the channel the worker uses from then on.
fn handshake(
    core: &Core,
    link: &ProcLink,
    reader: &mut FrameReader,
    name: &str,
) -> Result<Arc<dyn ByteStream>, BootError> {
    let cfg = core.config();
    let boot = &link.boot;
    let timeout = TimeVal::new(HELLO_TIMEOUT.as_secs() as i64, 0);
    let _ = setsockopt(&**boot, sockopt::ReceiveTimeout, &timeout);
    let frame = reader.next_frame(&**boot).map_err(|e| match e {
        TransportError::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => {
            BootError::Handshake(format!(
                "the worker did not say hello within {HELLO_TIMEOUT:?}"
            ))
        }
        e => BootError::Handshake(e.to_string()),
    })?;
    match decode::<ToParent<'_>>(frame) {
        Ok(ToParent::Hello {
            magic,
            version,
            fingerprint,
            pid: _,
        }) => check_hello(magic, version, fingerprint)?,
        _ => return Err(BootError::Incompatible("worker sent no valid hello".into())),
    }
    let setup = |e: std::io::Error| BootError::Spawn(e);
    let (transport, wire, theirs): (Arc<dyn ByteStream>, TransportWire, Vec<OwnedFd>) = match cfg
        .transport
    {
        TransportKind::UnixSocket => (boot.clone(), TransportWire::UnixSocket, Vec::new()),
        TransportKind::Pipe => {
            let (ours, (r, w)) = PipeChannel::pair().map_err(setup)?;
            (Arc::new(ours), TransportWire::Pipe, vec![r, w])
        }
        TransportKind::ShmRing => {
            let (ours, fds) = ShmChannel::create(DEFAULT_RING_SIZE, link.pid()).map_err(setup)?;
            (Arc::new(ours), TransportWire::ShmRing, fds)
        }
    };
    let mut fds = vec![link
        .claims
        .shared_fd()
        .expect("a process link shares its table")];
    fds.extend(theirs.iter().map(|f| f.as_raw_fd()));
    crate::sys::send_fds(&**boot, MODE_WORKER, &fds)
        .map_err(|e| BootError::Handshake(e.to_string()))?;
    drop(theirs); // the worker holds its ends now
    let welcome = ToWorker::Welcome {
        name: name.to_string(),
        worker_id: 0,
        parent_pid: std::process::id(),
        max_frame: cfg.max_frame as u64,
        log_level: level_to_u8(tracing::level_filters::LevelFilter::current()),
        initializer: cfg
            .initializer
            .as_ref()
            .map(|(n, a)| (n.to_string(), a.clone())),
        transport: wire,
        out_of_band: cfg.out_of_band,
    };
    let mut buf = Vec::new();
    crate::protocol::encode_frame(&mut buf, &welcome, cfg.max_frame)
        .map_err(|e| BootError::Handshake(e.to_string()))?;
    boot.write_all(&buf)
        .map_err(|e| BootError::Handshake(e.to_string()))?;
    if wire != TransportWire::UnixSocket {
        *reader = FrameReader::new(cfg.max_frame);
    }
    let frame = reader
        .next_frame(&*transport)
        .map_err(|e| BootError::Handshake(format!("the worker died during start-up: {e}")))?;
    let _ = setsockopt(&**boot, sockopt::ReceiveTimeout, &TimeVal::new(0, 0));
    match decode::<ToParent<'_>>(frame) {
        Ok(ToParent::Ready { init_error: None }) => {}
        Ok(ToParent::Ready {
            init_error: Some(e),
        }) => return Err(BootError::Initializer(e)),
        _ => return Err(BootError::Handshake("worker sent no valid ready".into())),
    }
    let outbox = Outbox::try_new(transport.clone(), cfg.max_frame).map_err(BootError::Spawn)?;
    let _ = link.chan.set((transport.clone(), outbox));
    if wire != TransportWire::UnixSocket {
        // The bootstrap socket is done with.
        boot.shutdown();
    }
    Ok(transport)
}

/// Refuses a worker of another build or protocol.
fn check_hello(magic: [u8; 4], version: u32, fingerprint: u64) -> Result<(), BootError> {
    if magic != MAGIC || version != PROTOCOL_VERSION {
        return Err(BootError::Incompatible(format!(
            "worker speaks protocol {version}, this program speaks {PROTOCOL_VERSION}"
        )));
    }
    let ours = crate::registry::fingerprint();
    if fingerprint != ours {
        return Err(BootError::Incompatible(format!(
            "worker is another build of the program (task registry {fingerprint:016x}, ours {ours:016x})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_frame;

    fn verdict(hello: Vec<u8>) -> Result<(), BootError> {
        let mut reader = FrameReader::new(1 << 20);
        let (ours, theirs) = socketpair().unwrap();
        theirs.write_all(&hello).unwrap();
        let frame = reader
            .next_frame(&ours)
            .map_err(|e| BootError::Handshake(e.to_string()))?;
        match decode::<ToParent<'_>>(frame) {
            Ok(ToParent::Hello {
                magic,
                version,
                fingerprint,
                ..
            }) => check_hello(magic, version, fingerprint),
            _ => Err(BootError::Incompatible("worker sent no valid hello".into())),
        }
    }

    fn hello(magic: [u8; 4], version: u32, fingerprint: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        let msg = ToParent::Hello {
            magic,
            version,
            fingerprint,
            pid: 1,
        };
        encode_frame(&mut buf, &msg, 1 << 20).unwrap();
        buf
    }

    #[test]
    fn a_worker_of_another_build_is_refused() {
        let other = crate::registry::fingerprint() ^ 0xdead_beef;
        let err = verdict(hello(MAGIC, PROTOCOL_VERSION, other)).unwrap_err();
        assert!(err.to_string().contains("another build"), "{err}");
    }

    #[test]
    fn a_worker_speaking_another_protocol_is_refused() {
        let ours = crate::registry::fingerprint();
        let err = verdict(hello(MAGIC, PROTOCOL_VERSION + 1, ours)).unwrap_err();
        assert!(err.to_string().contains("protocol"), "{err}");
    }

    #[test]
    fn garbage_instead_of_a_hello_is_refused() {
        let mut junk = Vec::new();
        let s = mproc_transport::begin_frame(&mut junk);
        junk.extend_from_slice(&[0xff; 40]);
        mproc_transport::end_frame(&mut junk, s, 1 << 20).unwrap();
        let err = verdict(junk).unwrap_err();
        assert!(err.to_string().contains("no valid hello"), "{err}");
        // A length prefix over the limit is refused before any allocation.
        let err = verdict((u32::MAX).to_le_bytes().to_vec()).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
