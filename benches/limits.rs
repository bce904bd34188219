//! `limits`: what mproc does at the edges, measured (see `docs/limits.md`).
//!
//! ```text
//! limits workers N      an executor of N workers: start, a map, stop
//! limits queued N       N tasks submitted at once, then awaited
//! limits actors N       N actors, one process each, spawned one by one
//!                       until N or the first error; each called; stopped
//! limits message        at the default message limit (1 GiB + 1 MiB):
//!                       the largest argument and result, and one byte
//!                       more; a queue item at its limit (1 GiB − 8)
//! ```
//! Each prints `key: value` lines and exits 0 when the outcome is one the
//! docs promise: it worked, or it failed with a clear error within a
//! bounded time (the error is printed), and nothing was left running.
//! `scripts/limits.sh` runs them, also under lowered limits (`prlimit`,
//! and as an unprivileged user for `RLIMIT_NPROC`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mproc::prelude::*;

const USAGE: &str = "usage: limits workers N | queued N | actors N | message";

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[mproc::task]
fn len_of(b: serde_bytes::ByteBuf) -> usize {
    b.len()
}

#[mproc::task]
fn bytes_of(n: usize) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![7u8; n])
}

/// Keeps a number.
#[mproc::actor]
#[derive(Debug)]
pub(crate) struct Cell {
    n: u64,
}

#[mproc::actor]
impl Cell {
    /// Holds `n`.
    pub(crate) fn new(n: u64) -> Self {
        Cell { n }
    }

    /// The number held.
    pub(crate) fn get(&self) -> u64 {
        self.n
    }
}

/// A field of `/proc/PID/status`, as a number (kB for sizes).
fn status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Every process below this one.
fn descendants() -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![std::process::id()];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

/// What this process and its descendants hold now.
fn report(prefix: &str) {
    let me = std::process::id();
    let kids = descendants();
    let kid_threads: u64 = kids.iter().map(|p| status(*p, "Threads:")).sum();
    let kid_rss: u64 = kids.iter().map(|p| status(*p, "VmRSS:")).sum();
    println!(
        "{prefix}: driver rss {} MiB, fds {}, threads {}; {} processes below it, {} threads there, rss {} MiB",
        status(me, "VmRSS:") / 1024,
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()),
        status(me, "Threads:"),
        kids.len(),
        kid_threads,
        kid_rss / 1024
    );
}

/// The soft limits that matter here.
fn limits() {
    use nix::sys::resource::{getrlimit, Resource};
    let show = |r| {
        getrlimit(r).map_or("?".into(), |(s, _)| {
            if s == nix::sys::resource::RLIM_INFINITY {
                "unlimited".to_string()
            } else {
                s.to_string()
            }
        })
    };
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    println!(
        "limits: RLIMIT_NOFILE {}, RLIMIT_NPROC {}, uid {}, kernel.pid_max {}, kernel.threads-max {}",
        show(Resource::RLIMIT_NOFILE),
        show(Resource::RLIMIT_NPROC),
        status(std::process::id(), "Uid:"),
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
    );
}

/// Waits (at most 10 s) until no process is left below this one.
fn all_gone() -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = descendants()
            .into_iter()
            .filter(|p| {
                // A zombie is gone for our purpose: its parent reaps it.
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map(|s| {
                        !s.rsplit(')')
                            .next()
                            .unwrap_or("")
                            .trim_start()
                            .starts_with('Z')
                    })
                    .unwrap_or(false)
            })
            .collect();
        if left.is_empty() {
            println!("left behind: nothing");
            return Ok(());
        }
        if Instant::now() > end {
            return Err(format!("processes left behind: {left:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn workers(n: usize) -> Result<(), String> {
    report("before");
    let t = Instant::now();
    let built = Executor::new(n).await;
    let took = t.elapsed();
    let ex = match built {
        Ok(ex) => ex,
        Err(e) => {
            println!("outcome: error after {took:.2?}: {e} (kind {:?})", e.kind());
            return all_gone();
        }
    };
    println!("start: {n} workers up in {took:.2?}");
    report("up");
    let t = Instant::now();
    let items = 200_000u64;
    let opts = MapOptions::default().chunksize(100);
    let sum = ex
        .map_with(square, 0..items, opts)
        .try_fold(0u64, |a, x| async move { Ok(a.wrapping_add(x)) })
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(sum, (0..items).map(|x| x * x).sum::<u64>());
    println!("map: {items} items in {:.2?}", t.elapsed());
    let t = Instant::now();
    ex.shutdown().await;
    drop(ex);
    println!("stop: {:.2?}", t.elapsed());
    println!("outcome: ok");
    all_gone()
}

async fn queued(n: u64) -> Result<(), String> {
    let ex = Executor::new(2).await.map_err(|e| e.to_string())?;
    let before = status(std::process::id(), "VmRSS:");
    let t = Instant::now();
    let handles: Vec<TaskHandle<u64>> = (0..n).map(|i| ex.submit(square, i)).collect();
    let submitted = t.elapsed();
    let queued_rss = status(std::process::id(), "VmRSS:");
    println!(
        "submit: {n} tasks in {submitted:.2?}; driver rss +{} MiB ({} bytes per queued task)",
        (queued_rss.saturating_sub(before)) / 1024,
        queued_rss.saturating_sub(before) * 1024 / n.max(1)
    );
    let mut ok = 0u64;
    for (i, h) in handles.into_iter().enumerate() {
        let v = h.await.map_err(|e| format!("task {i}: {e}"))?;
        assert_eq!(v, (i as u64) * (i as u64));
        ok += 1;
    }
    println!(
        "done: {ok} results in {:.2?} in all; peak driver rss {} MiB",
        t.elapsed(),
        status(std::process::id(), "VmHWM:") / 1024
    );
    // The same through a map, which pulls its input lazily.
    let t = Instant::now();
    let count = ex
        .map_with(square, 0..n, MapOptions::default().chunksize(1))
        .try_fold(0u64, |a, _| async move { Ok(a + 1) })
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "map: {count} items (chunksize 1) in {:.2?}; driver rss now {} MiB",
        t.elapsed(),
        status(std::process::id(), "VmRSS:") / 1024
    );
    ex.shutdown().await;
    drop(ex);
    println!("outcome: ok");
    all_gone()
}

async fn actors(n: usize) -> Result<(), String> {
    let ex = Executor::new(1).await.map_err(|e| e.to_string())?;
    report("before");
    let t = Instant::now();
    let mut refs = Vec::with_capacity(n);
    let mut failure = None;
    for i in 0..n {
        let t1 = Instant::now();
        match Cell::spawn(&ex, i as u64).await {
            Ok(r) => refs.push(r),
            Err(e) => {
                failure = Some((i, t1.elapsed(), e));
                break;
            }
        }
        if (i + 1) % 1000 == 0 {
            report(&format!("{} actors", i + 1));
        }
    }
    let took = t.elapsed();
    println!(
        "spawn: {} actors in {took:.2?} ({:.2?} each)",
        refs.len(),
        took / refs.len().max(1) as u32
    );
    report("spawned");
    if let Some((i, after, e)) = &failure {
        println!(
            "outcome: actor {} failed after {after:.2?}: {e} (kind {:?})",
            i + 1,
            e.kind()
        );
    }
    // Those that started answer; after a failed spawn a first call may
    // meet the same limit (a connection needs a descriptor and threads):
    // then it must fail with an error that names it.
    let t = Instant::now();
    let mut answered = 0;
    for (i, r) in refs.iter().enumerate() {
        match r.get().await {
            Ok(v) => {
                assert_eq!(v, i as u64);
                answered += 1;
            }
            Err(TaskError::Spawn { message }) if failure.is_some() => {
                println!("call: actor {} failed at the limit: {message}", i + 1);
                break;
            }
            Err(e) => return Err(format!("actor {i}: {e}")),
        }
    }
    println!(
        "call: {answered} of {} answered in {:.2?}",
        refs.len(),
        t.elapsed()
    );
    report("called");
    let t = Instant::now();
    ex.shutdown().await;
    drop(refs);
    drop(ex);
    println!("stop: {:.2?}", t.elapsed());
    if failure.is_none() {
        println!("outcome: ok");
    }
    all_gone()
}

async fn message() -> Result<(), String> {
    use serde_bytes::ByteBuf;
    let limit = mproc::transport::DEFAULT_MAX_FRAME;
    println!("message: the default limit is {limit} bytes");
    let ex = Executor::new(1).await.map_err(|e| e.to_string())?;
    let under = limit - 128;
    let t = Instant::now();
    let r = ex.submit(len_of, ByteBuf::from(vec![1u8; under])).await;
    println!("argument of {under} bytes: {r:?} in {:.2?}", t.elapsed());
    r.map_err(|e| e.to_string())?;
    let t = Instant::now();
    let r = ex.submit(len_of, ByteBuf::from(vec![1u8; limit + 1])).await;
    println!(
        "argument of {} bytes: {r:?} in {:.2?}",
        limit + 1,
        t.elapsed()
    );
    if !matches!(r, Err(TaskError::Serialization { .. })) {
        return Err("an argument over the limit was not refused".into());
    }
    let t = Instant::now();
    let r = ex.submit(bytes_of, under).await.map(|b| b.len());
    println!("result of {under} bytes: {r:?} in {:.2?}", t.elapsed());
    r.map_err(|e| e.to_string())?;
    let t = Instant::now();
    let r = ex.submit(bytes_of, limit + 1).await.map(|b| b.len());
    println!(
        "result of {} bytes: {r:?} in {:.2?}",
        limit + 1,
        t.elapsed()
    );
    if !matches!(r, Err(TaskError::Serialization { .. })) {
        return Err("a result over the limit was not refused".into());
    }
    println!(
        "worker after both refusals: {:?} (the same one serves on)",
        ex.worker_pids()
    );
    ex.shutdown().await;
    drop(ex);

    let q: Queue<ByteBuf> = Queue::new().map_err(|e| e.to_string())?;
    // postcard: a 5-byte length prefix for a byte string of 1 GiB.
    let fits = mproc::QUEUE_BYTES - 8 - 5;
    let t = Instant::now();
    let r = q.put(ByteBuf::from(vec![2u8; fits]));
    println!(
        "queue item of {fits} bytes: put {r:?} in {:.2?}",
        t.elapsed()
    );
    r.map_err(|e| e.to_string())?;
    let got = q.get().map_err(|e| e.to_string())?;
    println!("queue item of {fits} bytes: got {} bytes back", got.len());
    drop(got);
    let r = q.put(ByteBuf::from(vec![2u8; fits + 1]));
    println!("queue item of {} bytes: put {r:?}", fits + 1);
    println!("outcome: ok");
    all_gone()
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; it means nothing here.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if args.is_empty() {
        // Plain `cargo bench`: nothing asked, nothing to do.
        eprintln!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    limits();
    let n = args.get(1).and_then(|n| n.parse::<u64>().ok());
    let result = match (args[0], n) {
        ("workers", Some(n)) => rt.block_on(workers(n as usize)),
        ("queued", Some(n)) => rt.block_on(queued(n)),
        ("actors", Some(n)) => rt.block_on(actors(n as usize)),
        ("message", None) => rt.block_on(message()),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("outcome: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
