//! The worker process: handshake, then one loop that reads requests and runs
//! them in order.
//!
//! Threads of a worker:
//! * **main** (the boot hook's thread) reads the channel itself: with
//!   nothing to do it polls the channel briefly (an adaptive spin of at most
//!   `LINK_SPIN_NS`, learned so that an idle worker stops at once) and then
//!   blocks; between two tasks it takes in, without blocking, whatever has
//!   arrived, so a request costs no thread hand-off.
//!   It runs sync tasks one at a time and starts async tasks on the runtime
//!   thread; a request that finds nothing queued before it runs straight
//!   from the frame it came in, its arguments never copied out. Before it starts request `seq` it claims the request's slot in
//!   the shared claim table (see `protocol::claims`); a request the parent
//!   took back is skipped. End of stream means the parent is gone: the
//!   worker exits at once.
//! * **Answers held back** (see [`Hold`]): the small result of a short
//!   request is kept in the claim table's shared memory and written to the
//!   outbox without sending it; the held answers go out in one write before
//!   the worker waits for input, before it starts a request not known to be
//!   short, and at the latest every [`HOLD_MAX`] answers or
//!   [`HOLD_MAX_AGE`]. A parent that needs one answer (a round trip) is
//!   never kept waiting, and a burst of short tasks costs one write per
//!   batch of answers instead of one per task; a worker that dies with
//!   answers held loses none of them (the parent reads them from the
//!   shared memory). The answer of a *gathered* request (a chunk of a map
//!   whose caller waits for all of it, `Run.gather`) is held however long
//!   its task ran, while the next request the worker already has is
//!   gathered too, unless it reports a failure: a map of long tasks wakes
//!   the parent once per worker, not once per chunk.
//! * **writer** (inside `Outbox`): takes over writes the channel cannot take
//!   at once.
//! * **runtime** (only once an async task arrives): see `registry::runtime`.
//!
//! A running sync task is not interrupted from inside: the parent stops it by
//! dooming its claim and killing the worker. A worker that finishes a doomed
//! request starts nothing more and exits.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mproc_transport::{
    ByteStream, FrameReader, PipeChannel, ShmChannel, Spin, TransportError, UnixChannel,
    DEFAULT_MAX_FRAME, LINK_SPIN_NS, LONG_TASK_NS,
};

use super::ChildError;
use crate::children::exit_child;
use crate::error::TaskError;
use crate::outbox::Outbox;
use crate::protocol::actor::MODE_ACTOR;
use crate::protocol::claims::{Claims, KEEP_MAX};
use crate::protocol::manager::MODE_MANAGER;
use crate::protocol::oob;
use crate::protocol::{
    decode, done_head, encode_frame, Bytes, ToParent, ToWorker, TransportWire, MAGIC, MODE_PROCESS,
    MODE_WORKER, PROTOCOL_VERSION,
};
use crate::registry::invoke::BatchResult;
use crate::registry::runtime::runtime;
use crate::registry::{lookup, BatchRun, TaskEntry};
use crate::sys;

/// Room in a message for everything but the result items.
const FRAME_OVERHEAD: usize = 64;
/// The most answers held back at once: enough to make a write per batch
/// cheap, few enough that the parent sends more work while the worker
/// runs the rest of what it holds.
const HOLD_MAX: u32 = 32;
/// The longest an answer is held back.
const HOLD_MAX_AGE: Duration = Duration::from_micros(100);
/// A task counts as short (the answers held may wait while it runs) once
/// its last [`SHORT_AFTER`] runs on this worker each took under this.
const SHORT_NS: u64 = 20_000;
const SHORT_AFTER: u32 = 8;
/// Result batches from this size on are framed in their own buffer and
/// handed to the outbox whole (see `send_done`).
const IN_PLACE_MIN: usize = 64 << 10;

/// Answers written to the outbox and not yet sent (see the module docs),
/// and what this worker has learnt of how long each task takes.
#[derive(Default)]
struct Hold {
    /// Answers held back.
    held: u32,
    /// When the oldest of them was held.
    since: Option<Instant>,
    /// Every answer held is of a gathered request (its caller waits for
    /// the whole map), so they may wait while the next gathered request
    /// runs, however long it takes.
    gathered: bool,
    /// Per task (by its registry entry's address): its runs in a row on
    /// this worker that took under [`SHORT_NS`].
    seen: Vec<(usize, u32)>,
}

impl Hold {
    fn key(entry: &'static TaskEntry) -> usize {
        entry as *const TaskEntry as usize
    }

    /// True when `entry`'s last [`SHORT_AFTER`] runs here were all short.
    fn short(&self, entry: &'static TaskEntry) -> bool {
        let k = Self::key(entry);
        self.seen
            .iter()
            .any(|&(e, streak)| e == k && streak >= SHORT_AFTER)
    }

    /// Records one run of `entry` that took `exec_ns`.
    fn ran(&mut self, entry: &'static TaskEntry, exec_ns: u64) {
        let k = Self::key(entry);
        let short = u32::from(exec_ns < SHORT_NS);
        match self.seen.iter_mut().find(|(e, _)| *e == k) {
            Some(s) => s.1 = s.1.saturating_add(1) * short,
            None => self.seen.push((k, short)),
        }
    }

    /// Whether the held answers may wait while `next` (gathered or not)
    /// runs, at `now`.
    fn may_wait(&self, next: Option<&'static TaskEntry>, gather: bool, now: Instant) -> bool {
        let Some(next) = next.filter(|e| !e.is_async) else {
            return false;
        };
        self.held < HOLD_MAX
            && ((self.gathered && gather)
                || (self.since.is_some_and(|t| now - t < HOLD_MAX_AGE) && self.short(next)))
    }

    /// Counts one more answer held, of a gathered request or not, since
    /// `at`.
    fn add(&mut self, gather: bool, at: Instant) {
        self.gathered = if self.held == 0 {
            gather
        } else {
            self.gathered && gather
        };
        self.held += 1;
        self.since.get_or_insert(at);
    }

    /// Sends what is held.
    fn release(&mut self, shared: &Shared) {
        if self.held > 0 {
            self.held = 0;
            self.since = None;
            self.gathered = false;
            shared.outbox.flush();
        }
    }
}

struct Request {
    id: u64,
    seq: u64,
    gather: bool,
    entry: Result<&'static TaskEntry, TaskError>,
    args: Vec<u8>,
    /// The arguments' sidecars when they are encoded out of band.
    sides: Option<Vec<Vec<u8>>>,
}

struct Shared {
    outbox: Arc<Outbox>,
    claims: Claims,
    /// The largest frame the parent accepts.
    max_frame: usize,
    /// The parent reads results encoded out of band (see `protocol::oob`).
    out_of_band: bool,
    /// Async requests in progress, for cancellation and a clean shutdown.
    asyncs: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
    asyncs_cond: Condvar,
}

/// Entry point from the boot hook (spawn) or a forked child (fork,
/// forkserver); never returns. `os_parent` is the process this one must die
/// with: the program for spawn and fork, the fork server for forkserver.
pub(crate) fn worker_main(os_parent: u32) -> ! {
    sys::ignore_sigint();
    sys::ignore_sigpipe();
    if !sys::die_with_parent(os_parent) {
        sys::exit_now(0);
    }
    let sock = match sys::take_stdin_socket() {
        Ok(s) => s,
        Err(_) => sys::exit_now(70),
    };
    match run_worker(UnixChannel::from_fd(sock)) {
        Ok(code) => exit_child(code),
        // The parent has the initializer's error and reports it; a line here
        // would only repeat it, in a worse place (a test's output).
        Err(ChildError::Initializer) => exit_child(70),
        Err(e @ ChildError::Thread(_)) => {
            eprintln!("mproc worker {}: {e}", std::process::id());
            exit_child(super::EXIT_NO_THREAD)
        }
        Err(e) => {
            eprintln!("mproc worker {}: {e}", std::process::id());
            exit_child(70)
        }
    }
}

/// Runs the handshake, then serves requests (a pool worker) or runs one
/// task (a `Process` child). Returns the exit code.
fn run_worker(chan: UnixChannel) -> Result<i32, ChildError> {
    let chan: Arc<UnixChannel> = Arc::new(chan);
    let mut hello = Vec::new();
    let msg = ToParent::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        fingerprint: crate::registry::fingerprint(),
        pid: std::process::id(),
    };
    encode_frame(&mut hello, &msg, DEFAULT_MAX_FRAME)
        .map_err(|_| ChildError::Protocol("cannot encode the hello"))?;
    // A forked worker has booted: from here the handshake bounds its start.
    sys::disarm_boot_watchdog();
    chan.write_all(&hello)
        .map_err(|e| ChildError::Handshake(TransportError::Io(e)))?;
    // The claim table's memfd, then the transport's descriptors (see
    // `protocol`).
    let mut fds = match sys::recv_byte_fds(&*chan) {
        Ok(Some((MODE_PROCESS, fds))) if fds.is_empty() => {
            return super::process::run_child(&*chan);
        }
        Ok(Some((MODE_MANAGER, fds))) if fds.is_empty() => {
            return super::manager::run_server(&*chan);
        }
        Ok(Some((MODE_ACTOR, fds))) if matches!(fds.len(), 1 | 2) => {
            let mut fds = fds.into_iter();
            let listener = fds.next().expect("one descriptor");
            return super::actor::run_actor(chan, listener, fds.next());
        }
        Ok(Some((MODE_WORKER, fds))) if !fds.is_empty() => fds.into_iter(),
        Ok(Some(_)) => return Err(ChildError::Protocol("bad start byte")),
        // The parent refused us (other build) or went away.
        Ok(None) | Err(_) => sys::exit_now(0),
    };
    let claims_fd = fds.next().ok_or(ChildError::Protocol("no claim table"))?;
    let claims = Claims::map_shared(claims_fd).map_err(|cause| ChildError::Transport {
        what: "claim table",
        cause,
    })?;
    let transport_fds: Vec<std::os::fd::OwnedFd> = fds.collect();

    let mut reader = FrameReader::new(DEFAULT_MAX_FRAME);
    let frame = reader.next_frame(&*chan).map_err(ChildError::Handshake)?;
    let welcome: ToWorker<'_> = decode(frame).map_err(ChildError::Malformed)?;
    let (max_frame, log_level, initializer, wire, program, out_of_band) = match welcome {
        ToWorker::Welcome {
            name,
            worker_id: _,
            parent_pid,
            max_frame,
            log_level,
            initializer,
            transport,
            out_of_band,
        } => {
            sys::set_thread_name(&name);
            sys::set_process_name(&name);
            crate::identity::set_worker_identity(name, parent_pid);
            (
                max_frame as usize,
                log_level,
                initializer,
                transport,
                parent_pid,
                out_of_band,
            )
        }
        ToWorker::Reject { reason } => return Err(ChildError::Refused(reason)),
        _ => return Err(ChildError::Protocol("expected a welcome")),
    };
    let mut reader = FrameReader::new(max_frame);
    let chan: Arc<dyn ByteStream> = match wire {
        TransportWire::UnixSocket => chan,
        TransportWire::Pipe => {
            let mut it = transport_fds.into_iter();
            let (Some(r), Some(w)) = (it.next(), it.next()) else {
                return Err(ChildError::Protocol("pipe transport without its pipes"));
            };
            Arc::new(
                PipeChannel::from_fds(r, w).map_err(|cause| ChildError::Transport {
                    what: "pipe",
                    cause,
                })?,
            )
        }
        // The ring's peer is the program, which for a forkserver worker is
        // not the OS parent (the fork server).
        TransportWire::ShmRing => {
            Arc::new(ShmChannel::open(transport_fds, program).map_err(|cause| {
                ChildError::Transport {
                    what: "shared-memory ring",
                    cause,
                }
            })?)
        }
    };

    let outbox = Outbox::try_new(chan.clone(), max_frame).map_err(ChildError::Thread)?;
    install_panic_hook(outbox.clone());
    crate::trace::install_forwarder(outbox.clone(), log_level);

    let init_error = initializer
        .and_then(|(name, args)| run_initializer(&name, &args).err())
        .map(|e| e.to_string());
    let failed = init_error.is_some();
    let _ = outbox.send(&ToParent::Ready { init_error });
    if failed {
        outbox.drain();
        return Err(ChildError::Initializer);
    }

    let shared = Arc::new(Shared {
        outbox,
        claims,
        max_frame,
        out_of_band,
        asyncs: Mutex::new(HashMap::new()),
        asyncs_cond: Condvar::new(),
    });
    serve(&shared, &*chan, &mut reader);
    Ok(0)
}

/// Runs the initializer.
fn run_initializer(name: &str, args: &[u8]) -> Result<(), TaskError> {
    let entry = lookup(name).ok_or_else(|| TaskError::UnknownTask {
        name: name.to_string(),
    })?;
    (entry.run)(args)
        .block()
        .and_then(|items| items.single_outcome())
}

use super::panics::{install_panic_hook, RUNNING};

// ----- serving -------------------------------------------------------------

fn serve(shared: &Arc<Shared>, chan: &dyn ByteStream, reader: &mut FrameReader) {
    let mut queue: VecDeque<Request> = VecDeque::new();
    let mut shutdown = false;
    let mut hold = Hold::default();
    // Polls briefly for the next request before sleeping, so a parent
    // that answers at once (a round trip, `Pool.apply`) needs no wake-up;
    // it learns to stop for an idle or sporadic parent.
    let spin = Spin::polite(LINK_SPIN_NS);
    // How long the last task ran, in nanoseconds.
    let mut last_ns = 0;
    loop {
        // Take in what has arrived; block only when there is nothing to run.
        loop {
            let got = if queue.is_empty() && !shutdown {
                if !reader.has_frame() {
                    // Nothing to run: what is held goes out before the wait.
                    hold.release(shared);
                    // Where this worker will likely wake up: the parent
                    // wakes workers on other CPUs first (see
                    // `sched::run_flush`).
                    shared.claims.note_cpu(sys::current_cpu());
                    spin.until(|| chan.ready());
                }
                // After a long task (the parent's CPUs busy with workers),
                // sleep for requests only, not also each time the parent
                // takes in a result (see `LONG_TASK_NS`).
                chan.wake_on_input_only(last_ns >= LONG_TASK_NS);
                reader.next_frame(chan).map(Some)
            } else {
                reader.try_next_frame(chan)
            };
            let frame = match got {
                Ok(Some(_)) => reader.last_frame_and_sidecars(),
                Ok(None) => break,
                Err(TransportError::Disconnected) => sys::exit_now(0),
                Err(e) => {
                    eprintln!("mproc worker {}: {e}", std::process::id());
                    sys::exit_now(71)
                }
            };
            let (frame, sides) = frame;
            match decode::<ToWorker<'_>>(frame) {
                Ok(ToWorker::Run {
                    id,
                    seq,
                    task,
                    oob,
                    gather,
                    args,
                }) => {
                    let entry = lookup(task).ok_or_else(|| TaskError::UnknownTask {
                        name: task.to_string(),
                    });
                    let sides = oob.then_some(sides);
                    if queue.is_empty() {
                        // Nothing before it: run it from the frame, without
                        // copying the arguments out. What else has arrived
                        // is taken in right after, as it would be had it
                        // arrived while the task ran.
                        let req = (id, seq, gather);
                        last_ns = run_request(shared, &mut hold, req, entry, args.0, sides);
                    } else {
                        queue.push_back(Request {
                            id,
                            seq,
                            gather,
                            entry,
                            args: args.0.to_vec(),
                            sides,
                        });
                    }
                }
                Ok(ToWorker::Cancel { id }) => cancel(shared, id),
                Ok(ToWorker::Shutdown) => shutdown = true,
                Ok(ToWorker::Welcome { .. } | ToWorker::Reject { .. }) => {}
                Err(e) => {
                    eprintln!(
                        "mproc worker {}: malformed message: {e}",
                        std::process::id()
                    );
                    sys::exit_now(71)
                }
            }
        }
        match queue.pop_front() {
            Some(req) => {
                let head = (req.id, req.seq, req.gather);
                last_ns = run_request(shared, &mut hold, head, req.entry, &req.args, req.sides)
            }
            None if shutdown => {
                hold.release(shared);
                let mut a = shared.asyncs.lock().unwrap();
                while !a.is_empty() {
                    a = shared.asyncs_cond.wait(a).unwrap();
                }
                drop(a);
                shared.outbox.drain();
                return;
            }
            None => {}
        }
    }
}

/// Cancels a running async request. (The parent takes back requests that
/// have not started through the claim table, not with a message.)
fn cancel(shared: &Shared, id: u64) {
    if let Some(h) = shared.asyncs.lock().unwrap().remove(&id) {
        h.abort();
        shared.asyncs_cond.notify_all();
        let _ = shared.outbox.send(&ToParent::Cancelled { id });
    }
    // Otherwise it has finished already; its result is on its way.
}

/// Runs one request, `(id, seq, gathered)` (starts it, if async); returns
/// how long a sync task ran, in nanoseconds (0 when nothing ran here to the
/// end).
fn run_request(
    shared: &Arc<Shared>,
    hold: &mut Hold,
    (id, seq, gather): (u64, u64, bool),
    entry: Result<&'static TaskEntry, TaskError>,
    args: &[u8],
    sides: Option<Vec<Vec<u8>>>,
) -> u64 {
    let mut started = Instant::now();
    if hold.held > 0 && !hold.may_wait(entry.as_ref().ok().copied(), gather, started) {
        hold.release(shared);
        started = Instant::now();
    }
    if !shared.claims.start(seq) {
        return 0; // taken back by the parent: it runs elsewhere
    }
    let entry = match entry {
        Ok(e) => e,
        Err(unknown) => {
            finish(shared, seq);
            send_done(shared, id, 0, Err(unknown));
            return 0;
        }
    };
    if entry.is_async {
        start_async(shared, id, seq, entry, args, sides);
        return 0;
    }
    let span = tracing::debug_span!("mproc.task", task = entry.name, id = id);
    RUNNING.with(|r| r.set(Some((id, entry.name))));
    // The entry point decodes the arguments first, with their sidecars,
    // then runs the task (which no longer sees them).
    let mut result =
        span.in_scope(|| oob::for_request(sides, shared.out_of_band, || (entry.run)(args)).block());
    RUNNING.with(|r| r.set(None));
    let done = Instant::now();
    let exec_ns = (done - started).as_nanos().max(1) as u64;
    hold.ran(entry, exec_ns);
    // A short task's answer may wait for the next short one; a gathered
    // one's for the next gathered one, unless it carries a failure, which
    // ends the caller's wait at once.
    let keep = exec_ns < SHORT_NS || (gather && result.as_ref().is_ok_and(|i| i.all_ok()));
    if keep {
        if let Ok(items) = &mut result {
            if let Some(bytes) = items.small_batch(KEEP_MAX) {
                // Kept in shared memory before it counts as done, so the
                // answer survives this worker (see `protocol::claims`).
                if shared.claims.keep(seq, bytes) {
                    finish(shared, seq);
                    let msg = ToParent::Done {
                        id,
                        exec_ns,
                        oob: false, // a small batch is in band
                        result: Ok(Bytes(bytes)),
                    };
                    match shared.outbox.enqueue(&msg) {
                        Ok(()) => hold.add(gather, done),
                        Err(e) => send_failed(&shared.outbox, id, exec_ns, e.into_task_error()),
                    }
                    return exec_ns;
                }
            }
        }
    }
    finish(shared, seq);
    send_done(shared, id, exec_ns, result);
    exec_ns
}

/// Marks request `seq` done; a doomed request means the parent is killing
/// this worker for it, so nothing more may start.
fn finish(shared: &Shared, seq: u64) {
    if !shared.claims.finish(seq) {
        sys::exit_now(0);
    }
}

fn start_async(
    shared: &Arc<Shared>,
    id: u64,
    seq: u64,
    entry: &'static TaskEntry,
    args: &[u8],
    sides: Option<Vec<Vec<u8>>>,
) {
    let fut = match oob::for_request(sides, shared.out_of_band, || (entry.run)(args)) {
        BatchRun::Async(f) => f,
        BatchRun::Done(r) => {
            finish(shared, seq);
            return send_done(shared, id, 0, r);
        }
    };
    let sh = shared.clone();
    let mut asyncs = shared.asyncs.lock().unwrap();
    let handle = runtime().spawn(async move {
        let started = Instant::now();
        let result = fut.await;
        let exec_ns = started.elapsed().as_nanos() as u64;
        let still_ours = sh.asyncs.lock().unwrap().remove(&id).is_some();
        sh.asyncs_cond.notify_all();
        if still_ours && sh.claims.finish(seq) {
            send_done(&sh, id, exec_ns, result);
        }
    });
    asyncs.insert(id, handle.abort_handle());
}

/// Answers request `id` with one error for its whole batch.
fn send_failed(outbox: &Outbox, id: u64, exec_ns: u64, e: TaskError) {
    let _ = outbox.send(&ToParent::Done {
        id,
        exec_ns,
        oob: false,
        result: Err(e),
    });
}

/// Sends a request's results: in parts when they do not fit one message,
/// with every item too large for a message replaced by an error.
fn send_done(shared: &Shared, id: u64, exec_ns: u64, result: BatchResult) {
    let limit = shared.max_frame.saturating_sub(FRAME_OVERHEAD);
    let outbox = &shared.outbox;
    let mut items = match result {
        Ok(items) => items,
        Err(e) => return send_failed(outbox, id, exec_ns, e),
    };
    let oob = items.out_of_band();
    items.cap_items(limit);
    let at = items.finish_at(limit, |count, bytes, sides| {
        let msg = ToParent::Part {
            id,
            count,
            items: Bytes(bytes),
        };
        let _ = outbox.enqueue_with(&msg, sides);
    });
    let sides = items.take_sides();
    let len = items.bytes_from(at).len();
    if sides.is_empty() && len >= IN_PLACE_MIN {
        match done_head(id, exec_ns, oob, len, shared.max_frame) {
            // The frame is finished in the items' own buffer and sent from
            // there: encoded once, never copied into the outbox.
            Ok(head) => match items.into_frame(at, &head) {
                Ok((frame, start)) => return outbox.send_owned(frame, start),
                Err(back) => items = back,
            },
            Err(e) => return send_failed(outbox, id, exec_ns, e.into_task_error()),
        }
    }
    // A small batch is copied into the outbox, where it rides along with
    // the other frames of the same write; its large strings go before it,
    // written from their own buffers.
    let msg = ToParent::Done {
        id,
        exec_ns,
        oob,
        result: Ok(Bytes(items.bytes_from(at))),
    };
    match outbox.enqueue_with(&msg, sides) {
        Ok(()) => outbox.flush(),
        Err(e) => send_failed(outbox, id, exec_ns, e.into_task_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::Items;

    #[test]
    fn results_of_a_batch_fit_the_frame_limit() {
        // Eight 400 kB results under a 1 MiB limit: sent in parts, none lost.
        let mut items = Items::with_capacity(8);
        for i in 0..8u8 {
            items.push(Ok::<serde_bytes::ByteBuf, TaskError>(
                serde_bytes::ByteBuf::from(vec![i; 400_000]),
            ));
        }
        let limit = (1 << 20) - FRAME_OVERHEAD;
        items.cap_items(limit);
        let mut parts = 0;
        let last = items.finish(limit, |_, b, _| {
            assert!(b.len() <= limit);
            parts += 1;
        });
        assert!(last.len() <= limit + 5);
        assert!(parts >= 3);
    }
}
