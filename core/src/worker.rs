//! The worker process: handshake, then one loop that reads requests and runs
//! them in order.
//!
//! Threads of a worker:
//! * **main** (the boot hook's thread) reads the socket itself: it blocks in
//!   `recv` while it has nothing to do, and between two tasks it takes in,
//!   without blocking, whatever has arrived — so a `Cancel` for a queued task
//!   is always seen before that task would start, and a request costs no
//!   thread hand-off. It runs sync tasks one at a time and starts async tasks
//!   on the runtime thread. Before it starts request `seq` it stores
//!   `seq + 1` in the shared progress counter (see `protocol.rs`). End of
//!   stream means the parent is gone: the worker exits at once.
//! * **writer** (inside [`Outbox`]): takes over writes the socket cannot take
//!   at once.
//! * **runtime** (only once an async task arrives): a current-thread tokio
//!   runtime that runs `async fn` tasks concurrently.
//!
//! A running sync task is not interrupted from inside: the parent stops it by
//! killing the worker (see `executor/core.rs`).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use futures::FutureExt;
use mproc_transport::{
    ByteStream, FrameReader, PipeChannel, ShmChannel, TransportError, UnixChannel,
    DEFAULT_MAX_FRAME,
};
use serde::Serialize;

use crate::error::TaskError;
use crate::outbox::Outbox;
use crate::protocol::{
    encode_frame, push_varint, Bytes, ExtendVec, ToParent, ToWorker, TransportWire, MAGIC,
    MODE_PROCESS, MODE_WORKER, PROTOCOL_VERSION,
};
use crate::sys::{self, SharedCounter};
use crate::task::{lookup, Task, TaskCall, TaskEntry};

/// How a registered task runs a batch of encoded arguments.
pub(crate) enum BatchRun {
    /// A sync task ran; here is the encoded `Vec<Result<Output, TaskError>>`.
    Done(Result<Vec<u8>, TaskError>),
    /// An async task: await this on the worker's runtime.
    Async(Pin<Box<dyn Future<Output = Result<Vec<u8>, TaskError>> + Send>>),
}

thread_local! {
    /// Set while a task runs on this thread: its panics are caught and
    /// reported to the caller, not printed.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> TaskError {
    let message = if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    };
    TaskError::Panicked { message }
}

/// Appends one `Result<Output, TaskError>`; an output that fails to encode
/// becomes `Err(Serialization)`.
fn encode_item<O: Serialize>(out: &mut Vec<u8>, r: Result<O, TaskError>) {
    let mark = out.len();
    if let Err(e) = postcard::to_extend(&r, ExtendVec(out)) {
        out.truncate(mark);
        let err: Result<(), TaskError> = Err(TaskError::Serialization {
            message: format!("cannot encode the result: {e}"),
        });
        postcard::to_extend(&err, ExtendVec(out)).expect("encoding a TaskError cannot fail");
    }
}

fn call_guarded<T: Task>(args: T::Args) -> Result<TaskCall<T::Output>, TaskError> {
    let was = IN_TASK.with(|f| f.replace(true));
    let r = catch_unwind(AssertUnwindSafe(|| T::__call(args))).map_err(panic_message);
    IN_TASK.with(|f| f.set(was));
    r
}

/// The registry's entry point for task `T` (see [`TaskEntry::of`]).
pub(crate) fn run_batch<T: Task>(input: &[u8]) -> BatchRun {
    let args: Vec<T::Args> = match postcard::from_bytes(input) {
        Ok(a) => a,
        Err(e) => {
            return BatchRun::Done(Err(TaskError::Serialization {
                message: format!("cannot decode the arguments of `{}`: {e}", T::NAME),
            }))
        }
    };
    let mut out = Vec::with_capacity(16);
    push_varint(&mut out, args.len() as u64);
    if T::IS_ASYNC {
        return BatchRun::Async(Box::pin(async move {
            for a in args {
                let r = match call_guarded::<T>(a) {
                    Ok(TaskCall::Ready(v)) => Ok(v),
                    Ok(TaskCall::Pending(f)) => AssertUnwindSafe(f)
                        .catch_unwind()
                        .await
                        .map_err(panic_message),
                    Err(e) => Err(e),
                };
                encode_item(&mut out, r);
            }
            Ok(out)
        }));
    }
    for a in args {
        let r = match call_guarded::<T>(a) {
            Ok(TaskCall::Ready(v)) => Ok(v),
            Ok(TaskCall::Pending(f)) => {
                let was = IN_TASK.with(|flag| flag.replace(true));
                let r =
                    catch_unwind(AssertUnwindSafe(|| runtime().block_on(f))).map_err(panic_message);
                IN_TASK.with(|flag| flag.set(was));
                r
            }
            Err(e) => Err(e),
        };
        encode_item(&mut out, r);
    }
    BatchRun::Done(Ok(out))
}

/// The worker's tokio runtime, started on first use on a thread of its own.
fn runtime() -> &'static tokio::runtime::Handle {
    static RT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build the worker's tokio runtime");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("mproc-runtime".into())
            .spawn(move || {
                crate::trace::enter_worker_dispatch();
                IN_TASK.with(|f| f.set(true));
                rt.block_on(std::future::pending::<()>())
            })
            .expect("spawn the worker's runtime thread");
        handle
    })
}

struct Request {
    id: u64,
    seq: u64,
    entry: Result<&'static TaskEntry, String>,
    args: Vec<u8>,
}

struct Shared {
    outbox: Arc<Outbox>,
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
        Ok(code) => crate::boot::exit_child(code),
        Err(msg) => {
            eprintln!("mproc worker {}: {msg}", std::process::id());
            crate::boot::exit_child(70)
        }
    }
}

/// Runs the handshake, then serves requests (a pool worker) or runs one
/// task (a `Process` child). Returns the exit code.
fn run_worker(chan: UnixChannel) -> Result<i32, String> {
    let chan: Arc<UnixChannel> = Arc::new(chan);
    let mut hello = Vec::new();
    let msg = ToParent::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        fingerprint: crate::task::fingerprint(),
        pid: std::process::id(),
    };
    encode_frame(&mut hello, &msg, DEFAULT_MAX_FRAME).map_err(|e| e.message())?;
    chan.write_all(&hello)
        .map_err(|e| format!("handshake: {e}"))?;
    // The counter memfd, then the transport's descriptors (see protocol.rs).
    let mut fds = match sys::recv_byte_fds(&*chan) {
        Ok(Some((MODE_PROCESS, fds))) if fds.is_empty() => {
            return crate::process::run_child(&*chan);
        }
        Ok(Some((MODE_WORKER, fds))) if !fds.is_empty() => fds.into_iter(),
        Ok(Some(_)) => return Err("protocol error: bad start byte".into()),
        // The parent refused us (other build) or went away.
        Ok(None) | Err(_) => sys::exit_now(0),
    };
    let counter_fd = fds.next().ok_or("handshake: no progress counter")?;
    let counter = SharedCounter::map(counter_fd).map_err(|e| format!("map counter: {e}"))?;
    let transport_fds: Vec<std::os::fd::OwnedFd> = fds.collect();

    let mut reader = FrameReader::new(DEFAULT_MAX_FRAME);
    let frame = reader
        .next_frame(&*chan)
        .map_err(|e| format!("handshake: {e}"))?;
    let welcome: ToWorker<'_> =
        postcard::from_bytes(frame).map_err(|e| format!("bad welcome: {e}"))?;
    let (max_frame, log_level, initializer, wire, program) = match welcome {
        ToWorker::Welcome {
            name,
            worker_id: _,
            parent_pid,
            max_frame,
            log_level,
            initializer,
            transport,
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
            )
        }
        ToWorker::Reject { reason } => return Err(format!("refused by parent: {reason}")),
        _ => return Err("protocol error: expected welcome".into()),
    };
    let mut reader = FrameReader::new(max_frame);
    let chan: Arc<dyn ByteStream> = match wire {
        TransportWire::UnixSocket => chan,
        TransportWire::Pipe => {
            let mut it = transport_fds.into_iter();
            let (Some(r), Some(w)) = (it.next(), it.next()) else {
                return Err("handshake: pipe transport without its pipes".into());
            };
            Arc::new(PipeChannel::from_fds(r, w).map_err(|e| format!("pipe transport: {e}"))?)
        }
        // The ring's peer is the program, which for a forkserver worker is
        // not the OS parent (the fork server).
        TransportWire::ShmRing => Arc::new(
            ShmChannel::open(transport_fds, program).map_err(|e| format!("ring transport: {e}"))?,
        ),
    };

    let outbox = Outbox::new(chan.clone(), max_frame);
    install_panic_hook();
    crate::trace::install_forwarder(outbox.clone(), log_level);

    let init_error = initializer.and_then(|(name, args)| run_initializer(&name, &args).err());
    let failed = init_error.is_some();
    let _ = outbox.send(&ToParent::Ready { init_error });
    if failed {
        outbox.drain();
        return Err("initializer failed".into());
    }

    let shared = Arc::new(Shared {
        outbox,
        asyncs: Mutex::new(HashMap::new()),
        asyncs_cond: Condvar::new(),
    });
    serve(&shared, &*chan, &mut reader, &counter);
    Ok(0)
}

fn run_initializer(name: &str, args: &[u8]) -> Result<(), String> {
    let entry = lookup(name).ok_or_else(|| format!("unknown initializer task `{name}`"))?;
    let r = match (entry.run)(args) {
        BatchRun::Done(r) => r,
        BatchRun::Async(f) => runtime().block_on(f),
    };
    let bytes = r.map_err(|e| e.to_string())?;
    // One item: a leading length of 1, then the variant, Ok (0) or Err (1).
    match bytes.get(1) {
        Some(0) => Ok(()),
        _ => Err(
            postcard::from_bytes::<TaskError>(bytes.get(2..).unwrap_or(&[]))
                .map_or_else(|e| format!("initializer failed: {e}"), |e| e.to_string()),
        ),
    }
}

fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if IN_TASK.with(|f| f.get()) {
            tracing::debug!(target: "mproc::worker", "task panicked: {info}");
        } else {
            default(info);
        }
    }));
}

fn serve(
    shared: &Arc<Shared>,
    chan: &dyn ByteStream,
    reader: &mut FrameReader,
    counter: &SharedCounter,
) {
    let mut queue: VecDeque<Request> = VecDeque::new();
    let mut shutdown = false;
    loop {
        // Take in what has arrived; block only when there is nothing to run.
        loop {
            let got = if queue.is_empty() && !shutdown {
                reader.next_frame(chan).map(Some)
            } else {
                reader.try_next_frame(chan)
            };
            let frame = match got {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(TransportError::Disconnected) => sys::exit_now(0),
                Err(e) => {
                    eprintln!("mproc worker {}: {e}", std::process::id());
                    sys::exit_now(71)
                }
            };
            match postcard::from_bytes::<ToWorker<'_>>(frame) {
                Ok(ToWorker::Run {
                    id,
                    seq,
                    task,
                    args,
                }) => queue.push_back(Request {
                    id,
                    seq,
                    entry: lookup(task).ok_or_else(|| task.to_string()),
                    args: args.0.to_vec(),
                }),
                Ok(ToWorker::Cancel { id }) => cancel(shared, &mut queue, id),
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
            Some(req) => run_request(shared, counter, req),
            None if shutdown => {
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

fn cancel(shared: &Shared, queue: &mut VecDeque<Request>, id: u64) {
    if let Some(pos) = queue.iter().position(|r| r.id == id) {
        queue.remove(pos);
        let _ = shared.outbox.send(&ToParent::Cancelled { id });
        return;
    }
    if let Some(h) = shared.asyncs.lock().unwrap().remove(&id) {
        h.abort();
        shared.asyncs_cond.notify_all();
        let _ = shared.outbox.send(&ToParent::Cancelled { id });
    }
    // Otherwise it has finished already; its result is on its way.
}

fn run_request(shared: &Arc<Shared>, counter: &SharedCounter, req: Request) {
    counter.store(req.seq + 1);
    let entry = match req.entry {
        Ok(e) => e,
        Err(name) => return send_done(shared, req.id, 0, Err(TaskError::UnknownTask { name })),
    };
    if entry.is_async {
        return start_async(shared, req.id, entry, &req.args);
    }
    let span = tracing::debug_span!("mproc.task", task = entry.name, id = req.id);
    let started = Instant::now();
    let result = span.in_scope(|| match (entry.run)(&req.args) {
        BatchRun::Done(r) => r,
        BatchRun::Async(f) => runtime().block_on(f),
    });
    let exec_ns = started.elapsed().as_nanos().max(1) as u64;
    send_done(shared, req.id, exec_ns, result);
}

fn start_async(shared: &Arc<Shared>, id: u64, entry: &'static TaskEntry, args: &[u8]) {
    let fut = match (entry.run)(args) {
        BatchRun::Async(f) => f,
        BatchRun::Done(r) => {
            send_done(shared, id, 0, r);
            return;
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
        if still_ours {
            send_done(&sh, id, exec_ns, result);
        }
    });
    asyncs.insert(id, handle.abort_handle());
}

fn send_done(shared: &Shared, id: u64, exec_ns: u64, result: Result<Vec<u8>, TaskError>) {
    let msg = ToParent::Done {
        id,
        exec_ns,
        result: result.as_ref().map(|b| Bytes(b)).map_err(Clone::clone),
    };
    if let Err(e) = shared.outbox.send(&msg) {
        let err = ToParent::Done {
            id,
            exec_ns,
            result: Err(TaskError::Serialization {
                message: format!("the result cannot be sent: {}", e.message()),
            }),
        };
        let _ = shared.outbox.send(&err);
    }
}
