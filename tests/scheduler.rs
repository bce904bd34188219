//! The scheduler's promises end to end, with real worker processes: no task
//! waits behind a long one while a worker is free, a stopped worker strands
//! nothing, a timeout never kills an innocent task, a start that cannot
//! start fails with the cause, a dropped map stops its work, and one
//! oversized item fails only itself, and a task that finished keeps its
//! result when its worker is killed afterwards.

mod common;

use std::time::{Duration, Instant};

use common::{run, run_self, wait_gone};
use mproc::prelude::*;
use serde_bytes::ByteBuf;

#[mproc::task]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[mproc::task]
fn nothing(x: u64) -> u64 {
    x
}

/// Records its pid in `v`, then sleeps.
#[mproc::task]
fn mark_and_sleep(v: Value<u32>, ms: u64) -> u32 {
    v.store(std::process::id());
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Returns `x` at once; given a marker, records its pid there first and
/// sleeps until it is killed.
#[mproc::task]
fn quick_unless_marked(x: u64, marker: Option<Value<u32>>) -> u64 {
    if let Some(m) = marker {
        m.store(std::process::id());
        std::thread::sleep(Duration::from_secs(60));
    }
    x
}

/// Counts its runs in `v`, then sleeps.
#[mproc::task]
fn count_and_sleep(v: Value<u64>, ms: u64) -> u64 {
    {
        let mut g = v.get_lock();
        *g += 1;
    }
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[mproc::task]
fn big(n: usize) -> ByteBuf {
    ByteBuf::from(vec![7u8; n])
}

#[mproc::task]
fn len_of(b: ByteBuf) -> usize {
    b.len()
}

/// Completion order of a long task and short ones submitted behind it.
async fn shorts_finish_first(ex: &Executor, shorts: usize) {
    let long = ex.submit(sleep_ms, 3_000);
    let handles: Vec<_> = (0..shorts).map(|_| ex.submit(sleep_ms, 10)).collect();
    for h in handles {
        assert_eq!(h.await, Ok(10));
        assert!(
            !long.is_done(),
            "a short task waited behind the long one while a worker was free"
        );
    }
    assert_eq!(long.await, Ok(3_000));
}

#[test]
fn short_tasks_never_wait_behind_a_long_one() {
    run(async {
        let ex = Executor::new(2).await.unwrap();
        shorts_finish_first(&ex, 6).await;
        // Widen the windows with many tiny tasks, then again.
        let v: Vec<u64> = ex.map(nothing, 0..20_000u64).try_collect().await.unwrap();
        assert_eq!(v.len(), 20_000);
        shorts_finish_first(&ex, 100).await;
        ex.shutdown().await;
    });
}

#[test]
fn a_stopped_worker_strands_nothing() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    run(async {
        let ex = Executor::new(2).await.unwrap();
        let pids = ex.worker_pids();
        let marker = Value::new(0u32).unwrap();
        let long = ex.submit(mark_and_sleep, (marker.clone(), 500));
        let deadline = Instant::now() + Duration::from_secs(10);
        while marker.load() == 0 {
            assert!(Instant::now() < deadline, "the long task never started");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let stopped = Pid::from_raw(marker.load() as i32);
        kill(stopped, Signal::SIGSTOP).unwrap();
        // Submitted while it is stopped: none may wait for it.
        let handles: Vec<_> = (0..100u64).map(|i| ex.submit(sleep_ms, i % 2)).collect();
        for (i, h) in handles.into_iter().enumerate() {
            let r = tokio::time::timeout(Duration::from_secs(20), h).await;
            assert_eq!(
                r,
                Ok(Ok(i as u64 % 2)),
                "task {i} stranded on a stopped worker"
            );
        }
        kill(stopped, Signal::SIGCONT).unwrap();
        assert_eq!(long.await, Ok(stopped.as_raw() as u32));
        tokio::time::timeout(Duration::from_secs(20), ex.shutdown())
            .await
            .expect("shutdown after a stop and continue");
        assert!(wait_gone(&pids, Duration::from_secs(5)));
    });
}

#[test]
fn tasks_that_finished_keep_their_results_when_their_worker_is_killed() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    run(async {
        let ex = Executor::new(1).await.unwrap();
        for round in 0..20u64 {
            // Quick every time so far: a worker may hold back its answers
            // while it runs the next one, which here hangs and is killed.
            for i in 0..20 {
                assert_eq!(ex.submit(quick_unless_marked, (i, None)).await, Ok(i));
            }
            let marker = Value::new(0u32).unwrap();
            let quick: Vec<_> = (0..30u64)
                .map(|i| ex.submit(quick_unless_marked, (round * 100 + i, None)))
                .collect();
            let hung = ex.submit(quick_unless_marked, (0, Some(marker.clone())));
            let deadline = Instant::now() + Duration::from_secs(20);
            while marker.load() == 0 {
                assert!(Instant::now() < deadline, "the hanging task never started");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            kill(Pid::from_raw(marker.load() as i32), Signal::SIGKILL).unwrap();
            for (i, h) in quick.into_iter().enumerate() {
                assert_eq!(
                    h.await,
                    Ok(round * 100 + i as u64),
                    "a task that finished before its worker was killed lost its result"
                );
            }
            assert!(
                matches!(hung.await, Err(TaskError::WorkerDied { .. })),
                "the killed task must fail with WorkerDied"
            );
        }
        ex.shutdown().await;
    });
}

#[test]
fn timeouts_firing_as_tasks_finish_never_kill_an_innocent_task() {
    run(async {
        let ex = Executor::new(2).await.unwrap();
        let mut timed_out = 0;
        // 1 000 timeouts that fire about when their task ends, each with an
        // innocent task beside and behind it.
        for round in 0..100 {
            let mut pairs = Vec::new();
            for k in 0..10u64 {
                let ms = k % 3;
                let t = ex.submit_with(
                    sleep_ms,
                    ms,
                    TaskOptions::default().timeout(Duration::from_micros(500 + 400 * ms)),
                );
                let innocent = ex.submit(nothing, round * 100 + k);
                pairs.push((t, innocent, round * 100 + k));
            }
            for (t, innocent, v) in pairs {
                assert_eq!(innocent.await, Ok(v), "an innocent task failed");
                match t.await {
                    Ok(_) => {}
                    Err(TaskError::TimedOut) => timed_out += 1,
                    Err(e) => panic!("a timed task failed with {e}"),
                }
            }
        }
        assert!(timed_out > 0, "no timeout fired at all");
        ex.shutdown().await;
    });
}

#[test]
fn dropping_a_map_early_cancels_what_it_had_queued() {
    run(async {
        let ex = Executor::new(2).await.unwrap();
        let runs = Value::new(0u64).unwrap();
        let inputs = (0..10_000u64).map({
            let r = runs.clone();
            move |_| (r.clone(), 20)
        });
        let mut stream = ex.map(count_and_sleep, inputs);
        for _ in 0..4 {
            assert_eq!(stream.next().await, Some(Ok(20)));
        }
        drop(stream);
        // What was queued or sent ahead never runs: the next task runs at
        // once and the count stops at what had started.
        assert_eq!(ex.submit(nothing, 1).await, Ok(1));
        let after_drop = runs.load();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let settled = runs.load();
        assert_eq!(settled, after_drop, "work of a dropped map kept running");
        assert!(settled <= 4 + 2 * 2, "{settled} items ran for 4 taken");
        ex.shutdown().await;
    });
}

#[test]
fn dropping_an_imap_early_cancels_what_it_had_queued() {
    let pool = Pool::new(2).unwrap();
    let runs = Value::new(0u64).unwrap();
    let r = runs.clone();
    let mut it = pool.imap(
        count_and_sleep,
        (0..10_000u64).map(move |_| (r.clone(), 20)),
    );
    for _ in 0..4 {
        assert_eq!(it.next(), Some(Ok(20)));
    }
    drop(it);
    assert_eq!(pool.apply(nothing, 1), Ok(1));
    let after_drop = runs.load();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        runs.load(),
        after_drop,
        "work of a dropped imap kept running"
    );
    assert!(
        after_drop <= 4 + 2 * 2,
        "{after_drop} items ran for 4 taken"
    );
}

#[test]
fn an_oversized_item_fails_only_itself() {
    run(async {
        let ex = Executor::builder()
            .max_workers(2)
            .max_message_size(1 << 20)
            .build()
            .await
            .unwrap();
        // Results: eight of 400 kB in chunks of four, under a 1 MiB limit,
        // and one of 2 MiB among them.
        let sizes = [
            400_000usize,
            400_000,
            2 << 20,
            400_000,
            400_000,
            400_000,
            400_000,
            400_000,
        ];
        let out: Vec<Result<ByteBuf, TaskError>> = ex
            .map_with(big, sizes, MapOptions::default().chunksize(4))
            .collect()
            .await;
        for (i, r) in out.iter().enumerate() {
            if i == 2 {
                assert!(
                    matches!(r, Err(TaskError::Serialization { message }) if message.contains("message limit")),
                    "{r:?}"
                );
            } else {
                assert_eq!(r.as_ref().map(|b| b.len()), Ok(400_000), "item {i}");
            }
        }
        // Arguments: the same, the other way.
        let args: Vec<ByteBuf> = sizes.iter().map(|n| ByteBuf::from(vec![1u8; *n])).collect();
        let out: Vec<Result<usize, TaskError>> = ex
            .map_with(len_of, args, MapOptions::default().chunksize(4))
            .collect()
            .await;
        for (i, r) in out.iter().enumerate() {
            if i == 2 {
                assert!(matches!(r, Err(TaskError::Serialization { .. })), "{r:?}");
            } else {
                assert_eq!(*r, Ok(400_000), "item {i}");
            }
        }
        ex.shutdown().await;
    });
}

// ----- start under a descriptor limit ---------------------------------------

const FD_CHILD: &str = "MPROC_TEST_FD_LIMIT_CHILD";

#[test]
#[ignore = "helper process for start_fails_clearly_when_descriptors_run_out"]
fn fd_limit_child() {
    if std::env::var_os(FD_CHILD).is_none() {
        return;
    }
    use nix::sys::resource::{setrlimit, Resource};
    setrlimit(Resource::RLIMIT_NOFILE, 24, 24).unwrap();
    let started = Instant::now();
    let err = match Pool::new(8) {
        Ok(_) => panic!("8 workers cannot start with 24 descriptors"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::Spawn);
    println!("POOL {err}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(Executor::new(8))
        .expect_err("8 workers cannot start with 24 descriptors");
    assert_eq!(err.kind(), ErrorKind::Spawn);
    println!("EXECUTOR {err}");
    println!("SECONDS {}", started.elapsed().as_secs());
    // Whatever did start is gone again.
    assert!(nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)).is_err());
}

#[test]
fn start_fails_clearly_when_descriptors_run_out() {
    let out = run_self("fd_limit_child", &[(FD_CHILD, "1")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for tag in ["POOL ", "EXECUTOR "] {
        let line = stdout
            .lines()
            .find_map(|l| l.split_once(tag).map(|(_, m)| m.to_string()))
            .unwrap_or_else(|| panic!("no {tag} line in\n{stdout}\n{stderr}"));
        assert!(line.contains("file descriptors"), "{line}");
        assert!(line.contains("RLIMIT_NOFILE"), "{line}");
    }
}

// ----- a double panic --------------------------------------------------------

struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("second panic, in drop");
    }
}

#[mproc::task]
fn double_panic() {
    let _guard = PanicsOnDrop;
    panic!("first panic, in the task");
}

const DOUBLE_CHILD: &str = "MPROC_TEST_DOUBLE_PANIC_CHILD";

#[test]
#[ignore = "helper process for a_double_panic_says_what_happened"]
fn double_panic_child() {
    if std::env::var_os(DOUBLE_CHILD).is_none() {
        return;
    }
    let pool = Pool::new(1).unwrap();
    match pool.apply(double_panic, ()) {
        Err(TaskError::WorkerDied { exit }) => println!("DIED {}", exit.signal.unwrap_or(0)),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    // The pool goes on.
    assert_eq!(pool.apply(nothing, 3), Ok(3));
}

#[test]
fn a_double_panic_says_what_happened() {
    let out = run_self("double_panic_child", &[(DOUBLE_CHILD, "1")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("DIED {}", libc::SIGABRT)),
        "{stdout}"
    );
    assert!(stderr.contains("first panic, in the task"), "{stderr}");
    assert!(stderr.contains("second panic, in drop"), "{stderr}");
}
