//! The `Executor` contract (API.md §1–§3), against real worker processes.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{gone, run, wait_gone};
use mproc::prelude::*;
use serde::{Deserialize, Serialize};

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[mproc::task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[mproc::task]
fn whoami() -> (String, u32) {
    let me = current_process();
    (me.name().to_string(), me.pid())
}

#[mproc::task]
fn parent_pid() -> Option<u32> {
    parent_process().map(|p| p.pid())
}

#[mproc::task]
async fn count_bytes(s: String) -> usize {
    tokio::time::sleep(Duration::from_millis(1)).await;
    s.len()
}

#[mproc::task]
fn parse(s: String) -> Result<u32, String> {
    s.parse().map_err(|e| format!("{e}"))
}

#[mproc::task]
fn sleep_ms(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

#[mproc::task]
fn boom(msg: String) -> u32 {
    panic!("{msg}")
}

#[mproc::task]
async fn async_boom() -> u32 {
    panic!("async boom")
}

#[mproc::task]
fn abort_now() {
    std::process::abort()
}

#[mproc::task]
fn exit_with(code: i32) {
    std::process::exit(code)
}

#[mproc::task]
fn sigkill_self() {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
}

/// Kills its worker the first time it sees item `i`; returns `i` after.
#[mproc::task]
fn die_first_time(seen: Array<u8>, i: usize) -> usize {
    if seen.get(i) == 0 {
        seen.set(i, 1);
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    i
}

#[mproc::task]
fn segfault() {
    // SAFETY: none — this deliberately writes through a null pointer to
    // crash the worker with SIGSEGV, which is what the test is about.
    unsafe { std::ptr::null_mut::<u64>().write_volatile(7) };
}

#[mproc::task]
fn announce_and_sleep(path: String, ms: u64) {
    std::fs::write(&path, std::process::id().to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
}

#[mproc::task]
fn touch(path: String) {
    std::fs::write(path, b"ran").unwrap();
}

/// `Vec<u8>` on purpose: the encoding tests below are about it.
#[mproc::task]
#[allow(deprecated)]
fn echo(v: Vec<u8>) -> Vec<u8> {
    v
}

#[mproc::task]
fn echo_bytes(v: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
    v
}

#[mproc::task]
#[allow(deprecated)]
fn bytes_of(n: usize) -> Vec<u8> {
    vec![1; n]
}

/// A value whose `Serialize` always fails.
#[derive(Debug, Deserialize)]
struct Unsendable;

impl Serialize for Unsendable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value refuses to be sent"))
    }
}

#[mproc::task]
fn unsendable_result() -> Unsendable {
    Unsendable
}

#[mproc::task]
fn takes_unsendable(_u: Unsendable) {}

static INIT_CALLS: AtomicU64 = AtomicU64::new(0);

#[mproc::task]
fn init_worker(tag: u64) {
    INIT_CALLS.fetch_add(tag, Ordering::SeqCst);
}

#[mproc::task]
fn init_calls() -> u64 {
    INIT_CALLS.load(Ordering::SeqCst)
}

#[mproc::task]
fn failing_init() {
    panic!("initializer refuses")
}

/// A task no worker knows: implemented by hand, not registered.
#[derive(Clone, Copy)]
struct Unregistered;

impl Task for Unregistered {
    type Args = u32;
    type Output = u32;
    const NAME: &'static str = "tests::no_such_task";
    fn __call(args: u32) -> mproc::__private::TaskCall<u32> {
        mproc::__private::TaskCall::Ready(args)
    }
}

#[test]
fn task_stays_callable_in_process() {
    assert_eq!(square(10), 100);
    assert_eq!(add(2, 3), 5);
    let v: Vec<u64> = (0..4).map(*square).collect();
    assert_eq!(v, vec![0, 1, 4, 9]);
    assert_eq!(current_process().name(), "MainProcess");
    assert!(parent_process().is_none());
    assert!(<square as Task>::NAME.ends_with("::square"));
    assert!(mproc::registered_tasks().contains(&<square as Task>::NAME));
}

#[test]
fn a_map_with_retries_runs_a_chunk_again_when_its_worker_dies() {
    run(async {
        let ex = Executor::builder()
            .max_workers(2)
            .start_method(start_method())
            .build()
            .await
            .unwrap();
        let items = |seen: &Array<u8>| {
            let seen = seen.clone();
            (0..6usize).map(move |i| (seen.clone(), i))
        };
        // Without retries every item dies once.
        let seen = Array::<u8>::zeroed(6).unwrap();
        let plain: Vec<_> = ex.map(die_first_time, items(&seen)).collect().await;
        assert!(
            plain
                .iter()
                .all(|r| matches!(r, Err(TaskError::WorkerDied { .. }))),
            "{plain:?}"
        );
        // With retries each runs again on a fresh worker: one item per
        // chunk; then chunks of two, which die twice (once per item) since
        // the whole chunk runs again.
        for chunksize in [1, 2] {
            let seen = Array::<u8>::zeroed(6).unwrap();
            let opts = MapOptions::default()
                .chunksize(chunksize)
                .retries(chunksize as u32);
            let again: Vec<usize> = ex
                .map_with(die_first_time, items(&seen), opts)
                .try_collect()
                .await
                .unwrap();
            assert_eq!(again, (0..6).collect::<Vec<_>>());
        }
        let pids = ex.worker_pids();
        ex.shutdown().await;
        assert!(wait_gone(&pids, Duration::from_secs(5)));
    });
    // Pool::map_with takes the same option.
    let pool = Pool::builder()
        .processes(1)
        .start_method(start_method())
        .build()
        .unwrap();
    let seen = Array::<u8>::zeroed(3).unwrap();
    let args: Vec<_> = (0..3usize).map(|i| (seen.clone(), i)).collect();
    let opts = MapOptions::default().chunksize(1).retries(1);
    assert_eq!(pool.map_with(die_first_time, args, opts), Ok(vec![0, 1, 2]));
    pool.close();
    pool.join();
}

/// The start method of this copy of the suite, from the test crate's name.
fn start_method() -> StartMethod {
    let krate = module_path!().split("::").next().unwrap_or_default();
    match krate {
        "executor_forkserver" => StartMethod::Forkserver,
        "executor_fork" => StartMethod::Fork,
        _ => StartMethod::Spawn,
    }
}

/// The whole suite, once per transport: every test builds its executor with
/// `KIND`.
macro_rules! executor_suite {
    ($($module:ident => $kind:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            const KIND: TransportKind = $kind;

        /// Waits (bounded) until `n` workers have pids, e.g. after a replacement.
        async fn wait_for_workers(ex: &Executor, n: usize) -> Vec<u32> {
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                let pids = ex.worker_pids();
                if pids.len() == n || Instant::now() > end {
                    assert_eq!(pids.len(), n, "workers: {pids:?}");
                    return pids;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        fn builder(n: usize) -> ExecutorBuilder {
            Executor::builder()
                .max_workers(n)
                .transport(KIND)
                .start_method(start_method())
        }

        async fn executor(n: usize) -> Executor {
            builder(n).build().await.expect("executor starts")
        }

        async fn finish(ex: Executor) {
            let pids = ex.worker_pids();
            ex.shutdown().await;
            assert!(ex.worker_pids().is_empty());
            assert!(
                wait_gone(&pids, Duration::from_secs(5)),
                "workers left behind: {pids:?}"
            );
        }

        #[test]
        fn submit_runs_every_kind_of_task_in_a_worker() {
            run(async {
                let ex = executor(2).await;
                assert_eq!(ex.submit(square, 10).await, Ok(100));
                assert_eq!(ex.submit(add, (2, -5)).await, Ok(-3));
                assert_eq!(ex.submit(count_bytes, "hello".into()).await, Ok(5));
                assert_eq!(ex.submit(parse, "42".into()).await, Ok(Ok(42)));
                assert!(matches!(ex.submit(parse, "x".into()).await, Ok(Err(_))));
                let (name, pid) = ex.submit(whoami, ()).await.unwrap();
                assert!(name.starts_with("PoolWorker-"), "{name}");
                assert_ne!(pid, std::process::id());
                assert!(ex.worker_pids().contains(&pid));
                assert_eq!(
                    ex.submit(parent_pid, ()).await,
                    Ok(Some(std::process::id()))
                );
                finish(ex).await;
            });
        }

        #[test]
        fn map_keeps_order_and_map_unordered_loses_nothing() {
            run(async {
                let ex = executor(2).await;
                let v: Vec<u64> = ex.map(square, 0..1000u64).try_collect().await.unwrap();
                assert_eq!(v, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
                let v: Vec<u64> = ex
                    .map_with(square, 0..10_001u64, MapOptions::default().chunksize(97))
                    .try_collect()
                    .await
                    .unwrap();
                assert_eq!(v, (0..10_001u64).map(|x| x * x).collect::<Vec<_>>());
                let mut u: Vec<u64> = ex
                    .map_unordered(square, 0..500u64)
                    .try_collect()
                    .await
                    .unwrap();
                u.sort_unstable();
                assert_eq!(u, (0..500u64).map(|x| x * x).collect::<Vec<_>>());
                let sum = ex
                    .map_with(square, 0..100_000u64, MapOptions::default().chunksize(1000))
                    .try_fold(0u64, |a, x| async move { Ok(a + x) })
                    .await
                    .unwrap();
                assert_eq!(sum, (0..100_000u64).map(|x| x * x).sum::<u64>());
                let empty: Vec<u64> = ex.map(square, Vec::new()).try_collect().await.unwrap();
                assert!(empty.is_empty());
                finish(ex).await;
            });
        }

        #[test]
        fn map_pulls_lazily_from_an_endless_iterator() {
            run(async {
                let ex = executor(2).await;
                let pulled = Arc::new(AtomicUsize::new(0));
                let p = pulled.clone();
                let endless = (0u64..).inspect(move |_| {
                    p.fetch_add(1, Ordering::Relaxed);
                });
                let first: Vec<u64> = ex
                    .map_with(square, endless, MapOptions::default().chunksize(4))
                    .take(50)
                    .try_collect()
                    .await
                    .unwrap();
                assert_eq!(first, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
                let n = pulled.load(Ordering::Relaxed);
                assert!(n < 50 + 2 * 8192, "pulled {n} items for 50 results");
                finish(ex).await;
            });
        }

        #[test]
        fn submits_from_many_threads_all_resolve_with_their_own_result() {
            run(async {
                let ex = executor(2).await;
                // Enough per thread that the queue backs up and submissions
                // race with results being taken in.
                let threads: Vec<_> = (0..4u64)
                    .map(|t| {
                        let ex = ex.clone();
                        std::thread::spawn(move || {
                            (0..5000u64)
                                .map(|i| {
                                    let x = t * 1_000_000 + i;
                                    (x, ex.submit(square, x))
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                let mut ids = HashSet::new();
                for th in threads {
                    for (x, h) in th.join().unwrap() {
                        assert!(ids.insert(h.id()), "a task id was given twice");
                        assert_eq!(h.await, Ok(x * x));
                    }
                }
                assert_eq!(ids.len(), 20_000);
                finish(ex).await;
            });
        }

        #[test]
        fn submits_racing_a_shutdown_each_run_or_fail_with_shutdown() {
            run(async {
                let ex = executor(2).await;
                let returned = Arc::new(AtomicUsize::new(0));
                let submitter = {
                    let ex = ex.clone();
                    let returned = returned.clone();
                    std::thread::spawn(move || {
                        (0..20_000u64)
                            .map(|i| {
                                let h = ex.submit(square, i);
                                returned.fetch_add(1, Ordering::SeqCst);
                                (i, h)
                            })
                            .collect::<Vec<_>>()
                    })
                };
                while returned.load(Ordering::SeqCst) < 2000 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                // Everything submitted before this call must still run.
                let before = returned.load(Ordering::SeqCst) as u64;
                let pids = ex.worker_pids();
                ex.shutdown().await;
                let mut ran = 0;
                for (i, h) in submitter.join().unwrap() {
                    match h.await {
                        Ok(v) => {
                            assert_eq!(v, i * i);
                            ran += 1;
                        }
                        Err(e) => {
                            assert_eq!(e, TaskError::Shutdown);
                            assert!(i >= before, "task {i}, submitted before the shutdown, did not run");
                        }
                    }
                }
                assert!(ran >= before);
                assert_eq!(ex.submit(square, 2).await, Err(TaskError::Shutdown));
                assert!(
                    wait_gone(&pids, Duration::from_secs(5)),
                    "workers left behind: {pids:?}"
                );
            });
        }

        #[test]
        fn map_reports_failures_per_item() {
            run(async {
                let ex = executor(2).await;
                let inputs = vec!["1".to_string(), "x".into(), "3".into()];
                let out: Vec<Result<Result<u32, String>, TaskError>> = ex
                    .map_with(parse, inputs, MapOptions::default().chunksize(3))
                    .collect()
                    .await;
                assert_eq!(out[0], Ok(Ok(1)));
                assert!(matches!(out[1], Ok(Err(_))));
                assert_eq!(out[2], Ok(Ok(3)));
                let msgs = vec!["a".to_string(), "b".into()];
                let out: Vec<_> = ex.map(boom, msgs).collect().await;
                assert!(out
                    .iter()
                    .all(|r| matches!(r, Err(TaskError::Panicked { .. }))));
                finish(ex).await;
            });
        }

        #[test]
        fn as_completed_yields_in_completion_order() {
            run(async {
                let ex = executor(2).await;
                let slow = ex.submit(sleep_ms, 600);
                let fast = ex.submit(sleep_ms, 10);
                let mut order = Vec::new();
                let mut done = as_completed(vec![slow, fast]);
                let start = Instant::now();
                while let Some(r) = done.next().await {
                    order.push((r.unwrap(), start.elapsed()));
                }
                assert_eq!(order.len(), 2);
                assert!(order[0].1 < order[1].1);
                assert!(
                    order[0].1 < Duration::from_millis(500),
                    "fast one came first"
                );
                finish(ex).await;
            });
        }

        #[test]
        fn wait_splits_done_and_pending() {
            run(async {
                let ex = executor(2).await;
                let hs = vec![ex.submit(sleep_ms, 5), ex.submit(sleep_ms, 2000)];
                let (done, pending) = wait(hs, ReturnWhen::FirstCompleted).await;
                assert_eq!((done.len(), pending.len()), (1, 1));
                assert!(done[0].is_done());
                assert!(pending[0].cancel());

                let hs = vec![ex.submit(sleep_ms, 5), ex.submit(sleep_ms, 30)];
                let (done, pending) = wait(hs, ReturnWhen::AllCompleted).await;
                assert_eq!((done.len(), pending.len()), (2, 0));
                for h in done {
                    assert!(h.await.is_ok());
                }

                let hs = vec![ex.submit(boom, "x".into()), ex.submit(sleep_ms, 3000)];
                let (done, pending) = wait(hs, ReturnWhen::FirstException).await;
                assert_eq!((done.len(), pending.len()), (1, 1));
                assert!(pending[0].cancel());
                let (none_done, none_pending) =
                    wait(Vec::<TaskHandle<u32>>::new(), ReturnWhen::AllCompleted).await;
                assert!(none_done.is_empty() && none_pending.is_empty());
                finish(ex).await;
            });
        }

        #[test]
        fn panics_are_caught_and_the_worker_lives_on() {
            run(async {
                let ex = executor(1).await;
                let before = ex.worker_pids();
                match ex.submit(boom, "kaboom 42".into()).await {
                    Err(TaskError::Panicked { message }) => assert!(message.contains("kaboom 42")),
                    other => panic!("expected a panic, got {other:?}"),
                }
                assert!(matches!(
                    ex.submit(async_boom, ()).await,
                    Err(TaskError::Panicked { .. })
                ));
                assert_eq!(ex.submit(square, 3).await, Ok(9));
                assert_eq!(ex.worker_pids(), before, "the same worker served on");
                finish(ex).await;
            });
        }

        async fn crash_case<T: Task<Args = A, Output = ()>, A: Clone>(
            task: T,
            args: A,
            code: Option<i32>,
            signal: Option<i32>,
        ) {
            let ex = executor(2).await;
            let before = ex.worker_pids();
            let r = ex.submit(task, args).await;
            match r {
                Err(TaskError::WorkerDied { exit }) => {
                    assert_eq!((exit.code, exit.signal), (code, signal), "{exit}");
                }
                other => panic!("expected WorkerDied, got {other:?}"),
            }
            // The executor keeps serving, with a replacement worker.
            let v: Vec<u64> = ex.map(square, 0..100u64).try_collect().await.unwrap();
            assert_eq!(v[99], 99 * 99);
            let after = wait_for_workers(&ex, 2).await;
            assert_ne!(after, before);
            finish(ex).await;
        }

        #[test]
        fn abort_fails_only_its_task() {
            run(crash_case(abort_now, (), None, Some(libc::SIGABRT)));
        }

        #[test]
        fn segfault_fails_only_its_task() {
            run(crash_case(segfault, (), None, Some(libc::SIGSEGV)));
        }

        #[test]
        fn sigkill_fails_only_its_task() {
            run(crash_case(sigkill_self, (), None, Some(libc::SIGKILL)));
        }

        #[test]
        fn exit_fails_only_its_task() {
            run(crash_case(exit_with, 3, Some(3), None));
        }

        #[test]
        fn queued_tasks_behind_a_crash_are_not_lost() {
            run(async {
                // One worker: the crash and the tasks behind it share its window.
                let ex = executor(1).await;
                let crash = ex.submit(abort_now, ());
                let rest: Vec<_> = (0..20u64).map(|i| ex.submit(square, i)).collect();
                assert!(matches!(crash.await, Err(TaskError::WorkerDied { .. })));
                for (i, h) in rest.into_iter().enumerate() {
                    assert_eq!(h.await, Ok((i * i) as u64), "task {i} behind the crash");
                }
                finish(ex).await;
            });
        }

        #[test]
        fn worker_killed_from_outside_mid_task() {
            run(async {
                let path = std::env::temp_dir().join(format!("mproc-victim-{}", std::process::id()));
                let path_s = path.to_string_lossy().into_owned();
                let ex = executor(2).await;
                let h = ex.submit(announce_and_sleep, (path_s, 20_000));
                let end = Instant::now() + Duration::from_secs(10);
                let pid: u32 = loop {
                    if let Some(p) = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        break p;
                    }
                    assert!(Instant::now() < end, "the task never started");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                };
                std::fs::remove_file(&path).unwrap();
                let others: Vec<_> = (0..10u64).map(|i| ex.submit(square, i)).collect();
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .unwrap();
                match h.await {
                    Err(TaskError::WorkerDied { exit }) => assert_eq!(exit.signal, Some(libc::SIGKILL)),
                    other => panic!("expected WorkerDied, got {other:?}"),
                }
                for (i, h) in others.into_iter().enumerate() {
                    assert_eq!(
                        h.await,
                        Ok((i * i) as u64),
                        "square {i} was not on the killed worker's CPU"
                    );
                }
                assert!(wait_gone(&[pid], Duration::from_secs(5)));
                finish(ex).await;
            });
        }

        #[test]
        fn timeout_recycles_the_worker() {
            run(async {
                let ex = executor(1).await;
                let before = ex.worker_pids();
                let start = Instant::now();
                let r = ex
                    .submit_with(
                        sleep_ms,
                        20_000,
                        TaskOptions::default().timeout(Duration::from_millis(200)),
                    )
                    .await;
                assert_eq!(r, Err(TaskError::TimedOut));
                assert!(start.elapsed() < Duration::from_secs(5));
                assert_eq!(ex.submit(square, 4).await, Ok(16));
                assert_ne!(ex.worker_pids(), before, "the stuck worker was replaced");
                assert!(wait_gone(&before, Duration::from_secs(5)));
                // A task that finishes in time is unaffected by its timeout.
                let ok = ex.submit_with(
                    square,
                    5,
                    TaskOptions::default().timeout(Duration::from_secs(30)),
                );
                assert_eq!(ok.await, Ok(25));
                finish(ex).await;
            });
        }

        #[test]
        fn cancel_queued_running_and_finished() {
            run(async {
                let dir = std::env::temp_dir().join(format!("mproc-cancel-{}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                let marker = dir.join("ran");
                let ex = executor(1).await;
                let busy = ex.submit(sleep_ms, 400);
                let queued = ex.submit(touch, marker.to_string_lossy().into_owned());
                assert!(queued.cancel(), "a queued task can be cancelled");
                assert!(!queued.cancel(), "only once");
                assert_eq!(queued.await, Err(TaskError::Cancelled));
                assert!(busy.await.is_ok());
                assert_eq!(ex.submit(square, 2).await, Ok(4));
                assert!(!marker.exists(), "a cancelled queued task never runs");

                let before = ex.worker_pids();
                let running = ex.submit(sleep_ms, 20_000);
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(running.cancel());
                assert_eq!(running.await, Err(TaskError::Cancelled));
                assert_eq!(ex.submit(square, 3).await, Ok(9));
                assert!(
                    wait_gone(&before, Duration::from_secs(5)),
                    "the running task's worker was recycled"
                );

                let done = ex.submit(square, 6);
                while !done.is_done() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                assert!(!done.cancel(), "a finished task cannot be cancelled");
                assert_eq!(done.await, Ok(36));
                finish(ex).await;
                std::fs::remove_dir_all(&dir).unwrap();
            });
        }

        #[test]
        fn max_tasks_per_child_recycles_workers() {
            run(async {
                let ex = Executor::builder()
                    .max_workers(2)
                    .max_tasks_per_child(3)
                    .build()
                    .await
                    .unwrap();
                let mut seen = std::collections::HashMap::<u32, usize>::new();
                for _ in 0..30 {
                    let (_, pid) = ex.submit(whoami, ()).await.unwrap();
                    *seen.entry(pid).or_default() += 1;
                }
                assert!(seen.values().all(|n| *n <= 3), "{seen:?}");
                assert!(seen.len() >= 10);
                // Concurrent load while recycling must not stall (CPython #115634).
                let v: Vec<u64> = ex.map(square, 0..300u64).try_collect().await.unwrap();
                assert_eq!(v.len(), 300);
                finish(ex).await;
            });
        }

        #[test]
        fn initializer_runs_once_in_every_worker_including_replacements() {
            run(async {
                let ex = Executor::builder()
                    .max_workers(1)
                    .initializer(init_worker, 7)
                    .build()
                    .await
                    .unwrap();
                assert_eq!(ex.submit(init_calls, ()).await, Ok(7));
                assert_eq!(ex.submit(init_calls, ()).await, Ok(7), "once, not per task");
                assert!(ex.submit(abort_now, ()).await.is_err());
                assert_eq!(
                    ex.submit(init_calls, ()).await,
                    Ok(7),
                    "the replacement ran it too"
                );
                finish(ex).await;
                assert_eq!(INIT_CALLS.load(Ordering::SeqCst), 0, "never in the parent");
            });
        }

        #[test]
        fn failing_initializer_fails_build() {
            run(async {
                let err = Executor::builder()
                    .max_workers(1)
                    .initializer(failing_init, ())
                    .build()
                    .await
                    .unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Spawn);
                assert!(err.to_string().contains("initializer refuses"), "{err}");
            });
        }

        #[test]
        fn unknown_task_is_refused_by_name() {
            run(async {
                let ex = executor(1).await;
                match ex.submit(Unregistered, 1).await {
                    Err(TaskError::UnknownTask { name }) => assert_eq!(name, "tests::no_such_task"),
                    other => panic!("expected UnknownTask, got {other:?}"),
                }
                assert_eq!(ex.submit(square, 2).await, Ok(4));
                finish(ex).await;
            });
        }

        #[test]
        fn serialization_failures_are_reported() {
            run(async {
                let ex = executor(1).await;
                assert!(matches!(
                    ex.submit(unsendable_result, ()).await,
                    Err(TaskError::Serialization { .. })
                ));
                assert!(matches!(
                    ex.submit(takes_unsendable, Unsendable).await,
                    Err(TaskError::Serialization { .. })
                ));
                assert_eq!(ex.submit(square, 2).await, Ok(4));
                finish(ex).await;
            });
        }

        #[test]
        fn oversized_messages_are_refused_with_a_clear_error() {
            run(async {
                let ex = Executor::builder()
                    .max_workers(1)
                    .max_message_size(1 << 20)
                    .build()
                    .await
                    .unwrap();
                match ex.submit(echo, vec![0u8; 2 << 20]).await {
                    Err(TaskError::Serialization { message }) => {
                        assert!(message.contains("limit"), "{message}")
                    }
                    other => panic!("expected a size error, got {other:?}"),
                }
                match ex.submit(bytes_of, 2 << 20).await {
                    Err(TaskError::Serialization { message }) => {
                        assert!(message.contains("limit"), "{message}")
                    }
                    other => panic!("expected a size error, got {other:?}"),
                }
                assert_eq!(
                    ex.submit(echo, vec![5u8; 1000]).await.unwrap(),
                    vec![5u8; 1000]
                );
                finish(ex).await;
            });
        }

        #[test]
        fn large_payloads_round_trip() {
            run(async {
                let ex = executor(1).await;
                let big: Vec<u8> = (0..64 << 20).map(|i: usize| (i % 251) as u8).collect();
                let back = ex.submit(echo_bytes, serde_bytes::ByteBuf::from(big.clone())).await.unwrap();
                assert!(back.into_vec() == big, "64 MiB as a byte string");
                let mid: Vec<u8> = (0..1 << 20).map(|i: usize| (i % 13) as u8).collect();
                assert!(ex.submit(echo, mid.clone()).await.unwrap() == mid, "1 MiB as a Vec<u8>");
                finish(ex).await;
            });
        }

        #[test]
        fn shutdown_finishes_submitted_work_then_refuses() {
            run(async {
                let ex = executor(2).await;
                let pids = ex.worker_pids();
                let hs: Vec<_> = (0..6).map(|_| ex.submit(sleep_ms, 50)).collect();
                ex.shutdown().await;
                for h in hs {
                    assert!(h.is_done());
                    assert!(h.await.is_ok());
                }
                assert_eq!(ex.submit(square, 1).await, Err(TaskError::Shutdown));
                assert!(wait_gone(&pids, Duration::from_secs(5)));
            });
        }

        #[test]
        fn shutdown_now_cancels_queued_and_running() {
            run(async {
                let ex = executor(1).await;
                let pids = ex.worker_pids();
                let running = ex.submit(sleep_ms, 20_000);
                let queued = ex.submit(square, 3);
                tokio::time::sleep(Duration::from_millis(100)).await;
                let start = Instant::now();
                ex.shutdown_now().await;
                assert!(start.elapsed() < Duration::from_secs(5));
                assert_eq!(running.await, Err(TaskError::Cancelled));
                assert_eq!(queued.await, Err(TaskError::Cancelled));
                assert_eq!(ex.submit(square, 1).await, Err(TaskError::Shutdown));
                assert!(wait_gone(&pids, Duration::from_secs(5)));
            });
        }

        #[test]
        fn dropping_the_last_clone_stops_every_worker() {
            run(async {
                let ex = executor(2).await;
                let clone = ex.clone();
                let pids = ex.worker_pids();
                assert_eq!(pids.len(), 2);
                let pending = ex.submit(sleep_ms, 20_000);
                drop(ex);
                assert!(
                    pids.iter().all(|p| !gone(*p)),
                    "a clone keeps the pool alive"
                );
                assert_eq!(clone.submit(square, 3).await, Ok(9));
                drop(clone);
                assert!(
                    pids.iter().all(|p| gone(*p)),
                    "drop reaps before it returns"
                );
                assert_eq!(pending.await, Err(TaskError::Cancelled));
            });
        }

        #[test]
        fn concurrent_submitters_from_many_tasks() {
            run(async {
                let ex = executor(2).await;
                let mut joins = Vec::new();
                for t in 0..8u64 {
                    let ex = ex.clone();
                    joins.push(tokio::spawn(async move {
                        let mut sum = 0;
                        for i in 0..200u64 {
                            sum += ex.submit(square, t * 1000 + i).await.unwrap();
                        }
                        sum
                    }));
                }
                let mut total = 0;
                for j in joins {
                    total += j.await.unwrap();
                }
                let want: u64 = (0..8u64)
                    .flat_map(|t| (0..200u64).map(move |i| (t * 1000 + i).pow(2)))
                    .sum();
                assert_eq!(total, want);
                let ids: HashSet<TaskId> = (0..50).map(|i| ex.submit(square, i).id()).collect();
                assert_eq!(ids.len(), 50, "task ids are unique");
                finish(ex).await;
            });
        }

        #[test]
        fn workers_come_from_this_suites_start_method() {
            run(async {
                let ex = executor(1).await;
                let (_, pid) = ex.submit(whoami, ()).await.unwrap();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
                let ppid: u32 = stat
                    .rsplit(')')
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .parse()
                    .unwrap();
                let parent_comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap();
                match start_method() {
                    StartMethod::Forkserver => {
                        assert_ne!(ppid, std::process::id());
                        assert!(parent_comm.starts_with("mproc-"), "{parent_comm}");
                    }
                    m => {
                        assert_eq!(ppid, std::process::id());
                        // A spawned worker's initial environment marks it as one; a
                        // forked worker's is this process's.
                        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
                        let marked = env
                            .split(|b| *b == 0)
                            .any(|kv| kv.starts_with(b"__MPROC_WORKER="));
                        assert_eq!(marked, m == StartMethod::Spawn);
                    }
                }
                finish(ex).await;
            });
        }
        }
    )*};
}

executor_suite! {
    unix_socket => TransportKind::UnixSocket,
    pipe => TransportKind::Pipe,
    shm_ring => TransportKind::ShmRing,
}
