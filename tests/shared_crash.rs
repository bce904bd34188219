//! Crash safety (API.md §6): a process SIGKILLed while holding a lock, in
//! the middle of a `put`, in the middle of a `get`. The survivors never hang,
//! see `owner_died`, lose no item and find no torn one.
//!
//! A worker reports its pid through a queue when it has reached the point
//! to die at, then blocks; the test kills it there.

mod common;

use std::time::Duration;

use common::{run, wait_gone};
use mproc::prelude::*;

const LONG: Duration = Duration::from_secs(20);

fn kill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[mproc::task]
fn hold_lock(lock: Lock, report: Queue<u32>) {
    let _g = lock.acquire();
    report.put(std::process::id()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[mproc::task]
fn hold_rlock(lock: RLock, report: Queue<u32>) {
    let _a = lock.acquire();
    let _b = lock.acquire();
    report.put(std::process::id()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[mproc::task]
fn hold_value(v: Value<i64>, report: Queue<u32>) {
    let mut g = v.get_lock();
    *g = -1; // half-way through an update
    report.put(std::process::id()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[mproc::task]
fn hold_array(a: Array<u8>, report: Queue<u32>) {
    let _g = a.get_lock();
    report.put(std::process::id()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[mproc::task]
fn hold_condition(c: Condition, report: Queue<u32>) {
    let _g = c.acquire();
    report.put(std::process::id()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[mproc::task]
fn stalled_put(q: Queue<String>, report: Queue<u32>) {
    report.put(std::process::id()).unwrap();
    q.__put_stalled("torn".to_string(), Duration::from_secs(60))
        .unwrap();
}

#[mproc::task]
fn stalled_get(q: Queue<String>, report: Queue<u32>) -> String {
    report.put(std::process::id()).unwrap();
    q.__get_stalled(Duration::from_secs(60)).unwrap()
}

/// Runs `task` in a worker, waits for its pid, gives it `settle` to reach
/// its crash point, kills it and checks it is gone.
async fn kill_worker_at<T>(ex: &Executor, h: TaskHandle<T>, report: &Queue<u32>, settle: Duration)
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    let pid = tokio::time::timeout(LONG, report.get_async())
        .await
        .expect("worker reported")
        .unwrap();
    tokio::time::sleep(settle).await;
    kill(pid);
    assert!(matches!(h.await, Err(TaskError::WorkerDied { .. })));
    assert!(wait_gone(&[pid], LONG));
    let _ = ex;
}

#[test]
fn a_dead_lock_holder_does_not_wedge_the_lock() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let report: Queue<u32> = Queue::new().unwrap();

        let lock = Lock::new().unwrap();
        let h = ex.submit(hold_lock, (lock.clone(), report.clone()));
        kill_worker_at(&ex, h, &report, Duration::ZERO).await;
        let g = lock.acquire_timeout(LONG).expect("lock recovered");
        assert!(g.owner_died());
        drop(g);
        let g = lock.acquire();
        assert!(!g.owner_died(), "reported once");
        drop(g);

        let lock = Lock::new().unwrap();
        let h = ex.submit(hold_lock, (lock.clone(), report.clone()));
        kill_worker_at(&ex, h, &report, Duration::ZERO).await;
        let g = lock.acquire_async().await;
        assert!(g.owner_died(), "the async twin recovers too");
        drop(g);

        let rl = RLock::new().unwrap();
        let h = ex.submit(hold_rlock, (rl.clone(), report.clone()));
        kill_worker_at(&ex, h, &report, Duration::ZERO).await;
        let g = rl.acquire_timeout(LONG).expect("rlock recovered");
        assert!(g.owner_died());
        drop(g);
        assert!(rl.try_acquire().is_some(), "recursion count was reset");

        let c = Condition::new().unwrap();
        let h = ex.submit(hold_condition, (c.clone(), report.clone()));
        kill_worker_at(&ex, h, &report, Duration::ZERO).await;
        assert!(c.acquire_timeout(LONG).expect("recovered").owner_died());
        ex.shutdown().await;
    });
}

#[test]
fn a_dead_value_or_array_holder_does_not_wedge_it() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let report: Queue<u32> = Queue::new().unwrap();
        let v = Value::new(5i64).unwrap();
        let h = ex.submit(hold_value, (v.clone(), report.clone()));
        kill_worker_at(&ex, h, &report, Duration::ZERO).await;
        let g = v.get_lock_timeout(LONG).expect("value lock recovered");
        assert!(g.owner_died());
        assert_eq!(*g, -1, "the dead owner's half-done write is visible");
        drop(g);
        assert_eq!(v.load(), -1);

        let a = Array::from_slice(&[1u8, 2, 3]).unwrap();
        let h = ex.submit(hold_array, (a.clone(), report.clone()));
        kill_worker_at(&ex, h, &report, Duration::ZERO).await;
        let g = a.get_lock();
        assert!(g.owner_died());
        assert_eq!(&*g, &[1, 2, 3]);
        ex.shutdown().await;
    });
}

#[test]
fn a_producer_killed_mid_put_leaves_no_torn_item() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let report: Queue<u32> = Queue::new().unwrap();
        let q: Queue<String> = Queue::new().unwrap();
        q.put("before".into()).unwrap();
        let h = ex.submit(stalled_put, (q.clone(), report.clone()));
        // Let it write its record and stall before the commit.
        kill_worker_at(&ex, h, &report, Duration::from_millis(200)).await;
        assert_eq!(q.len(), 1);
        // The next producer takes over the dead one's producer lock.
        tokio::task::spawn_blocking({
            let q = q.clone();
            move || q.put_timeout("after".into(), LONG)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(q.get().unwrap(), "before");
        assert_eq!(q.get().unwrap(), "after");
        assert_eq!(q.try_get(), Err(QueueError::Empty));
        ex.shutdown().await;
    });
}

#[test]
fn a_consumer_killed_mid_get_loses_no_item() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let report: Queue<u32> = Queue::new().unwrap();
        let q: Queue<String> = Queue::new().unwrap();
        q.put("first".into()).unwrap();
        q.put("second".into()).unwrap();
        let h = ex.submit(stalled_get, (q.clone(), report.clone()));
        // Let it decode "first" and stall before consuming it.
        kill_worker_at(&ex, h, &report, Duration::from_millis(200)).await;
        let got = tokio::task::spawn_blocking({
            let q = q.clone();
            move || (q.get_timeout(LONG), q.get_timeout(LONG))
        })
        .await
        .unwrap();
        assert_eq!(got, (Ok("first".to_string()), Ok("second".to_string())));
        assert!(q.is_empty());
        ex.shutdown().await;
    });
}
