//! Nothing outlives a dropped executor: no thread (reader, writer, timer),
//! no descriptor, no process. One test in its own binary, so no other test
//! starts threads meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::{open_fds, thread_count, wait_gone};
use mproc::prelude::*;

#[mproc::task]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Waits (bounded) until `f` holds; returns whether it did.
fn settles(f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn fifty_dropped_executors_that_used_timeouts_leave_nothing_behind() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The program's own helpers (the spawner thread) exist from the first
    // executor on: count from after one.
    rt.block_on(async {
        let ex = Executor::new(1).await.unwrap();
        assert_eq!(ex.submit(sleep_ms, 0).await, Ok(0));
    });
    // The test's threads plus the spawner: nothing of the executor.
    assert!(settles(|| thread_count() <= 3), "{}", thread_count());
    let (threads, fds) = (thread_count(), open_fds());
    let mut pids = Vec::new();
    for i in 0..50u64 {
        rt.block_on(async {
            let ex = Executor::new(2).await.unwrap();
            pids.extend(ex.worker_pids());
            let quick = TaskOptions::default().timeout(Duration::from_secs(30));
            assert_eq!(ex.submit_with(sleep_ms, 0, quick.clone()).await, Ok(0));
            if i % 5 == 0 {
                // Some also time out, recycling a worker.
                let short = TaskOptions::default().timeout(Duration::from_millis(5));
                let r = ex.submit_with(sleep_ms, 2_000, short).await;
                assert_eq!(r, Err(TaskError::TimedOut));
            }
            // Dropped without shutdown, with a timer still pending.
            drop(ex.submit_with(sleep_ms, 0, quick));
        });
    }
    assert!(
        settles(|| thread_count() == threads),
        "threads: {} before, {} after",
        threads,
        thread_count()
    );
    assert!(
        settles(|| open_fds() == fds),
        "descriptors: {} before, {} after",
        fds,
        open_fds()
    );
    assert!(wait_gone(&pids, Duration::from_secs(5)), "workers left");
}
