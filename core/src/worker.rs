//! The worker process: handshake, then a reader thread that queues requests
//! and the main thread that runs them in order.
//!
//! Threads of a worker:
//! * **main** (the boot hook's thread): runs sync tasks one at a time, in the
//!   order they arrived, and starts async tasks on the runtime thread. Before
//!   it starts request `seq` it stores `seq + 1` in the shared progress
//!   counter (see `protocol.rs`).
//! * **reader**: decodes frames from the parent. End of stream means the
//!   parent is gone: the worker exits at once.
//! * **writer** (inside [`Outbox`]): takes over large writes.
//! * **runtime** (only once an async task arrives): a current-thread tokio
//!   runtime that runs `async fn` tasks concurrently.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use futures::FutureExt;
use mproc_transport::{ByteStream, FrameReader, TransportError, UnixChannel, DEFAULT_MAX_FRAME};
use serde::Serialize;

use crate::error::TaskError;
use crate::outbox::Outbox;
use crate::protocol::{
    encode_frame, push_varint, Bytes, ExtendVec, ToParent, ToWorker, MAGIC, PROTOCOL_VERSION,
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
    IN_TASK.with(|f| f.set(true));
    let r = catch_unwind(AssertUnwindSafe(|| T::__call(args))).map_err(panic_message);
    IN_TASK.with(|f| f.set(false));
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
                    Ok(TaskCall::Pending(f)) => {
                        AssertUnwindSafe(f).catch_unwind().await.map_err(panic_message)
                    }
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
                IN_TASK.with(|flag| flag.set(true));
                let r = catch_unwind(AssertUnwindSafe(|| runtime().block_on(f)))
                    .map_err(panic_message);
                IN_TASK.with(|flag| flag.set(false));
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
                IN_TASK.with(|f| f.set(true));
                rt.block_on(std::future::pending::<()>())
            })
            .expect("spawn the worker's runtime thread");
        handle
    })
}

enum Item {
    Run {
        id: u64,
        seq: u64,
        entry: Result<&'static TaskEntry, String>,
        args: Vec<u8>,
    },
    Shutdown,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Item>,
    /// The sync request running on the main thread.
    running: Option<u64>,
}

struct Shared {
    outbox: Arc<Outbox>,
    queue: Mutex<QueueState>,
    queue_cond: Condvar,
    /// Async requests in progress, for cancellation and a clean shutdown.
    asyncs: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
    asyncs_cond: Condvar,
}

/// Entry point from the boot hook; never returns.
pub(crate) fn worker_main(parent_pid: u32) -> ! {
    sys::ignore_sigint();
    if !sys::die_with_parent(parent_pid) {
        sys::exit_now(0);
    }
    let sock = match sys::take_stdin_socket() {
        Ok(s) => s,
        Err(_) => sys::exit_now(70),
    };
    match run_worker(UnixChannel::from_fd(sock), parent_pid) {
        Ok(()) => std::process::exit(0),
        Err(msg) => {
            eprintln!("mproc worker {}: {msg}", std::process::id());
            std::process::exit(70)
        }
    }
}

fn run_worker(chan: UnixChannel, parent_pid: u32) -> Result<(), String> {
    let chan: Arc<UnixChannel> = Arc::new(chan);
    let mut hello = Vec::new();
    let msg = ToParent::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        fingerprint: crate::task::fingerprint(),
        pid: std::process::id(),
    };
    encode_frame(&mut hello, &msg, DEFAULT_MAX_FRAME).map_err(|e| e.message())?;
    chan.write_all(&hello).map_err(|e| format!("handshake: {e}"))?;
    let counter_fd = match sys::recv_fd(&*chan) {
        Ok(fd) => fd,
        // The parent refused us (other build) or went away.
        Err(_) => sys::exit_now(0),
    };
    let counter = SharedCounter::map(counter_fd).map_err(|e| format!("map counter: {e}"))?;

    let mut reader = FrameReader::new(DEFAULT_MAX_FRAME);
    let frame = reader.next_frame(&*chan).map_err(|e| format!("handshake: {e}"))?;
    let welcome: ToWorker<'_> =
        postcard::from_bytes(frame).map_err(|e| format!("bad welcome: {e}"))?;
    let (max_frame, log_level, initializer) = match welcome {
        ToWorker::Welcome {
            name,
            worker_id: _,
            parent_pid: ppid,
            max_frame,
            log_level,
            initializer,
        } => {
            debug_assert_eq!(ppid, parent_pid);
            sys::set_thread_name(&name);
            crate::identity::set_worker_identity(name, ppid);
            (max_frame as usize, log_level, initializer)
        }
        ToWorker::Reject { reason } => return Err(format!("refused by parent: {reason}")),
        _ => return Err("protocol error: expected welcome".into()),
    };
    let mut reader = FrameReader::new(max_frame);

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
        queue: Mutex::new(QueueState::default()),
        queue_cond: Condvar::new(),
        asyncs: Mutex::new(HashMap::new()),
        asyncs_cond: Condvar::new(),
    });
    let rshared = shared.clone();
    let rchan = chan.clone();
    std::thread::Builder::new()
        .name("mproc-reader".into())
        .spawn(move || reader_loop(&rshared, &*rchan, &mut reader))
        .map_err(|e| format!("spawn reader: {e}"))?;
    exec_loop(&shared, &counter);
    Ok(())
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
        _ => Err(postcard::from_bytes::<TaskError>(bytes.get(2..).unwrap_or(&[]))
            .map_or_else(|e| format!("initializer failed: {e}"), |e| e.to_string())),
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

fn reader_loop(shared: &Shared, chan: &dyn ByteStream, reader: &mut FrameReader) {
    loop {
        let frame = match reader.next_frame(chan) {
            Ok(f) => f,
            Err(TransportError::Disconnected) => sys::exit_now(0),
            Err(e) => {
                eprintln!("mproc worker {}: {e}", std::process::id());
                sys::exit_now(71)
            }
        };
        let msg: ToWorker<'_> = match postcard::from_bytes(frame) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("mproc worker {}: malformed message: {e}", std::process::id());
                sys::exit_now(71)
            }
        };
        match msg {
            ToWorker::Run { id, seq, task, args } => {
                let entry = lookup(task).ok_or_else(|| task.to_string());
                let item = Item::Run {
                    id,
                    seq,
                    entry,
                    args: args.0.to_vec(),
                };
                let mut q = shared.queue.lock().unwrap();
                q.items.push_back(item);
                drop(q);
                shared.queue_cond.notify_one();
            }
            ToWorker::Cancel { id } => cancel(shared, id),
            ToWorker::Shutdown => {
                shared.queue.lock().unwrap().items.push_back(Item::Shutdown);
                shared.queue_cond.notify_one();
            }
            ToWorker::Welcome { .. } | ToWorker::Reject { .. } => {}
        }
    }
}

fn cancel(shared: &Shared, id: u64) {
    let mut q = shared.queue.lock().unwrap();
    if let Some(pos) = q
        .items
        .iter()
        .position(|i| matches!(i, Item::Run { id: x, .. } if *x == id))
    {
        q.items.remove(pos);
        drop(q);
        let _ = shared.outbox.send(&ToParent::Cancelled { id });
        return;
    }
    if q.running == Some(id) {
        // A sync task cannot be interrupted: recycle this worker.
        sys::exit_now(0);
    }
    drop(q);
    if let Some(h) = shared.asyncs.lock().unwrap().remove(&id) {
        h.abort();
        shared.asyncs_cond.notify_all();
        let _ = shared.outbox.send(&ToParent::Cancelled { id });
    }
}

fn exec_loop(shared: &Arc<Shared>, counter: &SharedCounter) {
    loop {
        let mut q = shared.queue.lock().unwrap();
        let item = loop {
            if let Some(i) = q.items.pop_front() {
                break i;
            }
            q = shared.queue_cond.wait(q).unwrap();
        };
        let Item::Run {
            id,
            seq,
            entry,
            args,
        } = item
        else {
            drop(q);
            let mut a = shared.asyncs.lock().unwrap();
            while !a.is_empty() {
                a = shared.asyncs_cond.wait(a).unwrap();
            }
            drop(a);
            shared.outbox.drain();
            return;
        };
        counter.store(seq + 1);
        let entry = match entry {
            Ok(e) => e,
            Err(name) => {
                drop(q);
                send_done(shared, id, 0, Err(TaskError::UnknownTask { name }));
                continue;
            }
        };
        if entry.is_async {
            drop(q);
            start_async(shared, id, entry, &args);
            continue;
        }
        q.running = Some(id);
        drop(q);
        let span = tracing::debug_span!("mproc.task", task = entry.name, id);
        let started = Instant::now();
        let result = span.in_scope(|| match (entry.run)(&args) {
            BatchRun::Done(r) => r,
            BatchRun::Async(f) => runtime().block_on(f),
        });
        let exec_ns = started.elapsed().as_nanos() as u64;
        shared.queue.lock().unwrap().running = None;
        send_done(shared, id, exec_ns, result);
    }
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
