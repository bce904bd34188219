//! Python parity (issue 18): what CPython's own tests expect of `Pool`,
//! `wait`/`as_completed`, `TaskHandle`, `Barrier` and `Condition`, against
//! real worker processes. Every wait is bounded; every child is reaped.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{run, LIMIT};
use mproc::prelude::*;

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[mproc::task]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[mproc::task]
fn boom(x: u64) -> u64 {
    panic!("boom {x}")
}

#[mproc::task]
fn bump(v: Value<u32>) {
    *v.get_lock() += 1;
}

#[mproc::task]
fn action_panics() {
    panic!("the action fails")
}

#[mproc::task]
fn barrier_party(b: Barrier) -> Result<usize, String> {
    b.wait_timeout(Duration::from_secs(20))
        .map_err(|e| e.to_string())
}

#[mproc::task]
fn park_at_barrier(b: Barrier) {
    let _ = b.wait_timeout(Duration::from_secs(30));
}

// ----- 1. Pool::new(0) -----------------------------------------------------

#[test]
fn a_pool_of_zero_processes_is_refused() {
    let e = Pool::new(0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Spawn);
    assert!(e.to_string().contains("at least one process"), "{e}");
    let e = Pool::builder().processes(0).build().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Spawn);
}

#[test]
fn an_executor_of_zero_workers_still_starts_one() {
    run(async {
        let ex = Executor::builder().max_workers(0).build().await.unwrap();
        assert_eq!(ex.max_workers(), 1);
        assert_eq!(ex.submit(square, 3).await.unwrap(), 9);
        ex.shutdown().await;
    });
}

// ----- 2. Pool callbacks ---------------------------------------------------

#[test]
fn callbacks_run_in_completion_order_on_one_parent_thread() {
    let pool = Pool::new(2).unwrap();
    let seen: Arc<Mutex<Vec<(String, String, u32)>>> = Arc::default();
    let log = |tag: &'static str| {
        let seen = seen.clone();
        move |v: u64| {
            let t = std::thread::current();
            seen.lock().unwrap().push((
                format!("{tag}={v}"),
                t.name().unwrap_or("").to_string(),
                std::process::id(),
            ));
        }
    };
    let slow = pool.apply_async_with(sleep_ms, 400, Callbacks::new().on_success(log("slow")));
    let fast = pool.apply_async_with(sleep_ms, 10, Callbacks::new().on_success(log("fast")));
    let errs: Arc<Mutex<Vec<TaskError>>> = Arc::default();
    let e2 = errs.clone();
    let bad = pool.apply_async_with(
        boom,
        1,
        Callbacks::new()
            .on_success(|_| panic!("not a success"))
            .on_error(move |e| e2.lock().unwrap().push(e)),
    );
    let m = pool.map_async_with(
        square,
        0..5,
        Callbacks::new().on_success({
            let seen = seen.clone();
            move |v: Vec<u64>| {
                seen.lock()
                    .unwrap()
                    .push((format!("map={v:?}"), String::new(), 0))
            }
        }),
    );
    assert_eq!(slow.get_timeout(LIMIT).unwrap(), 400);
    assert_eq!(fast.get_timeout(LIMIT).unwrap(), 10);
    assert!(bad.wait_timeout(LIMIT) && m.wait_timeout(LIMIT));
    assert!(matches!(bad.get(), Err(TaskError::Panicked { .. })));
    assert_eq!(m.get().unwrap(), vec![0, 1, 4, 9, 16]);
    // `get` returned, so each callback has run.
    let seen = seen.lock().unwrap().clone();
    let order: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    let pos = |x: &str| order.iter().position(|o| *o == x).unwrap();
    assert!(pos("fast=10") < pos("slow=400"), "{order:?}");
    assert!(order.contains(&"map=[0, 1, 4, 9, 16]"));
    for (_, thread, pid) in seen.iter().filter(|s| s.2 != 0) {
        assert_eq!(thread, "mproc-callback");
        assert_eq!(*pid, std::process::id());
    }
    assert!(matches!(
        errs.lock().unwrap().as_slice(),
        [TaskError::Panicked { .. }]
    ));
    pool.close();
    pool.join();
}

#[test]
fn a_panicking_callback_does_not_harm_the_pool_and_the_thread_ends_with_it() {
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async_with(
        square,
        2,
        Callbacks::new().on_success(|_| panic!("callback panics")),
    );
    assert!(r.wait_timeout(LIMIT));
    assert_eq!(r.get().unwrap(), 4);
    let ran = Arc::new(AtomicUsize::new(0));
    let ran2 = ran.clone();
    let r = pool.apply_async_with(
        square,
        3,
        Callbacks::new().on_success(move |v| {
            ran2.fetch_add(v as usize, Ordering::SeqCst);
        }),
    );
    assert_eq!(r.get_timeout(LIMIT).unwrap(), 9);
    assert_eq!(ran.load(Ordering::SeqCst), 9);
    assert_eq!(pool.apply_async(square, 4).get_timeout(LIMIT).unwrap(), 16);
    let tid: Arc<Mutex<Option<String>>> = Arc::default();
    let tid2 = tid.clone();
    let r = pool.apply_async_with(
        square,
        5,
        Callbacks::new().on_success(move |_| {
            let me = std::fs::read_link("/proc/thread-self").unwrap();
            *tid2.lock().unwrap() = Some(me.file_name().unwrap().to_string_lossy().into_owned());
        }),
    );
    assert_eq!(r.get_timeout(LIMIT).unwrap(), 25);
    let tid = tid.lock().unwrap().clone().expect("the callback ran");
    let task = format!("/proc/self/task/{tid}");
    assert!(std::path::Path::new(&task).exists());
    drop(pool);
    // Dropping the pool joined its callback thread.
    assert!(
        !std::path::Path::new(&task).exists(),
        "{task} outlived the pool"
    );
}

// ----- 3. wait and as_completed with a timeout -----------------------------

#[test]
fn wait_timeout_hands_back_done_and_pending_at_the_deadline() {
    run(async {
        let ex = Executor::new(2).await.unwrap();
        let quick = ex.submit(sleep_ms, 1);
        let slow = ex.submit(sleep_ms, 3000);
        let t = Instant::now();
        let (done, pending) = wait_timeout(
            vec![quick.clone(), slow.clone()],
            ReturnWhen::AllCompleted,
            Duration::from_millis(800),
        )
        .await;
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(750), "{took:?}");
        assert!(took < Duration::from_millis(2500), "{took:?}");
        assert_eq!(done, vec![quick]);
        assert_eq!(pending, vec![slow.clone()]);
        // The pending handle is still a live handle.
        assert!(pending[0].cancel());
        assert_eq!(slow.await, Err(TaskError::Cancelled));
        // Without a deadline reached, it returns as `wait` does.
        let (done, pending) =
            wait_timeout(vec![ex.submit(square, 2)], ReturnWhen::AllCompleted, LIMIT).await;
        assert_eq!((done.len(), pending.len()), (1, 0));
        ex.shutdown().await;
    });
}

#[test]
fn as_completed_with_a_timeout_ends_and_hands_back_the_pending() {
    run(async {
        let ex = Executor::new(2).await.unwrap();
        let hs = vec![ex.submit(sleep_ms, 5), ex.submit(sleep_ms, 3000)];
        let slow_id = hs[1].id();
        let mut s = as_completed(hs).timeout(Duration::from_millis(800));
        let mut got = Vec::new();
        while let Some(r) = s.next().await {
            got.push(r.unwrap());
        }
        assert_eq!(got, vec![5]);
        assert!(s.timed_out());
        let pending = s.into_pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id(), slow_id);
        assert!(pending[0].cancel());

        let mut s = as_completed(vec![ex.submit(square, 4)]).timeout(LIMIT);
        assert_eq!(s.next().await, Some(Ok(16)));
        assert_eq!(s.next().await, None);
        assert!(!s.timed_out());
        ex.shutdown().await;
    });
}

// ----- 6. TaskHandle: Clone, Eq, Hash; duplicates taken once ---------------

#[test]
fn handles_clone_compare_by_task_and_are_taken_once() {
    run(async {
        let ex = Executor::new(2).await.unwrap();
        let h = ex.submit(square, 6);
        let c = h.clone();
        assert_eq!(h, c);
        assert_ne!(h, ex.submit(square, 6));
        // Each clone gets the result, in any order.
        assert_eq!(c.clone().await, Ok(36));
        assert_eq!(h.clone().wait_blocking(), Ok(36));
        assert_eq!(h.await, Ok(36));
        assert_eq!(c.await, Ok(36));

        // Passed twice: yielded once.
        let a = ex.submit(square, 2);
        let b = ex.submit(square, 3);
        let mut got: Vec<u64> = as_completed(vec![a.clone(), a.clone(), b.clone()])
            .map(|r| r.unwrap())
            .collect()
            .await;
        got.sort();
        assert_eq!(got, vec![4, 9]);
        let (done, pending) = wait(
            vec![a.clone(), b.clone(), a.clone()],
            ReturnWhen::AllCompleted,
        )
        .await;
        assert_eq!((done.len(), pending.len()), (2, 0));

        // Python's future-to-key dict, both ways.
        let inputs = [2u64, 3, 4];
        // Clippy cannot see that a handle hashes by its immutable id alone.
        #[allow(clippy::mutable_key_type)]
        let by_handle: HashMap<TaskHandle<u64>, u64> =
            inputs.iter().map(|&x| (ex.submit(square, x), x)).collect();
        let mut s = as_completed_keyed(by_handle.iter().map(|(h, x)| (*x, h.clone())));
        let mut pairs = HashSet::new();
        while let Some((x, r)) = s.next().await {
            pairs.insert((x, r.unwrap()));
        }
        assert_eq!(pairs, HashSet::from([(2, 4), (3, 9), (4, 16)]));
        for (h, x) in by_handle {
            assert_eq!(h.await.unwrap(), x * x);
        }
        ex.shutdown().await;
    });
}

// ----- 4. Barrier ------------------------------------------------------------

#[test]
fn barrier_abort_reset_broken_and_n_waiting() {
    let b = Barrier::new(3).unwrap();
    assert!(!b.broken());
    std::thread::scope(|s| {
        let waiters: Vec<_> = (0..2).map(|_| s.spawn(|| b.wait_timeout(LIMIT))).collect();
        let end = Instant::now() + LIMIT;
        while b.n_waiting() < 2 {
            assert!(Instant::now() < end, "waiters never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
        b.abort();
        for w in waiters {
            assert_eq!(w.join().unwrap(), Err(BrokenBarrierError));
        }
    });
    assert!(b.broken());
    assert_eq!(b.n_waiting(), 0);
    assert_eq!(b.wait_checked(), Err(BrokenBarrierError));
    b.reset();
    assert!(!b.broken());
    // Usable again, and the arrival indexes are 0..parties.
    let mut idx: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3).map(|_| s.spawn(|| b.wait_timeout(LIMIT))).collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    idx.sort();
    assert_eq!(idx, vec![0, 1, 2]);

    // A reset while parties wait fails them, and the barrier works after.
    std::thread::scope(|s| {
        let w = s.spawn(|| b.wait_timeout(LIMIT));
        let end = Instant::now() + LIMIT;
        while b.n_waiting() < 1 {
            assert!(Instant::now() < end);
            std::thread::sleep(Duration::from_millis(5));
        }
        b.reset();
        assert_eq!(w.join().unwrap(), Err(BrokenBarrierError));
    });
    assert!(!b.broken());
    let b1 = Barrier::new(1).unwrap();
    assert_eq!(b1.wait(), 0);
}

#[test]
fn a_timeout_breaks_the_barrier_for_every_party() {
    let b = Barrier::new(3).unwrap();
    std::thread::scope(|s| {
        let patient = s.spawn(|| b.wait_timeout(LIMIT));
        let t = Instant::now();
        assert_eq!(
            b.wait_timeout(Duration::from_millis(100)),
            Err(BrokenBarrierError)
        );
        assert_eq!(patient.join().unwrap(), Err(BrokenBarrierError));
        assert!(t.elapsed() < Duration::from_secs(10));
    });
    assert!(b.broken());
}

#[test]
#[should_panic(expected = "broken barrier")]
fn wait_on_a_broken_barrier_panics() {
    let b = Barrier::new(2).unwrap();
    b.abort();
    b.wait();
}

#[test]
fn the_action_runs_once_per_round_in_one_party_across_processes() {
    run(async {
        let ex = Executor::new(2).await.unwrap();
        let count = Value::new(0u32).unwrap();
        let b = Barrier::with_action(3, bump, count.clone()).unwrap();
        for round in 1..=2u32 {
            let hs: Vec<_> = (0..2)
                .map(|_| ex.submit(barrier_party, b.clone()))
                .collect();
            let me = b.wait_checked_async().await.unwrap();
            let mut idx = vec![me];
            for h in hs {
                idx.push(h.await.unwrap().unwrap());
            }
            idx.sort();
            assert_eq!(idx, vec![0, 1, 2]);
            assert_eq!(count.load(), round);
        }
        // An action that panics breaks the barrier for everyone.
        let b = Barrier::with_action(2, action_panics, ()).unwrap();
        let h = ex.submit(barrier_party, b.clone());
        assert_eq!(b.wait_checked_async().await, Err(BrokenBarrierError));
        assert_eq!(h.await.unwrap(), Err("the barrier is broken".to_string()));
        assert!(b.broken());
        ex.shutdown().await;
    });
    // A task that is not registered cannot be an action.
    #[derive(Clone, Copy)]
    struct Unregistered;
    impl Task for Unregistered {
        type Args = ();
        type Output = ();
        const NAME: &'static str = "parity::Unregistered";
        fn __call(_: ()) -> mproc::__private::TaskCall<()> {
            mproc::__private::TaskCall::Ready(())
        }
    }
    assert!(Barrier::with_action(2, Unregistered, ()).is_err());
}

#[test]
fn a_party_killed_while_waiting_breaks_the_barrier() {
    let b = Barrier::new(3).unwrap();
    let child = Process::new(park_at_barrier, b.clone()).start().unwrap();
    let end = Instant::now() + LIMIT;
    while b.n_waiting() < 1 {
        assert!(Instant::now() < end, "the child never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = Instant::now();
    let r = std::thread::scope(|s| {
        let killer = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            child.kill().unwrap();
        });
        let r = b.wait_timeout(Duration::from_secs(20));
        killer.join().unwrap();
        r
    });
    assert_eq!(r, Err(BrokenBarrierError));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(b.broken());
    assert!(child.join_timeout(LIMIT).unwrap());
    assert_eq!(child.exitcode(), Some(-9));
    // A reset makes it usable again: the dead party is no longer counted.
    b.reset();
    assert_eq!(b.n_waiting(), 0);
}

// ----- 5. Condition::wait_for_timeout -----------------------------------------

#[test]
fn condition_wait_for_timeout_returns_the_last_value_of_the_predicate() {
    let c = Condition::new().unwrap();
    let v = Value::new(0u32).unwrap();
    let g = c.acquire();
    let t = Instant::now();
    let (g, ok) = c.wait_for_timeout(g, || v.load() > 0, Duration::from_millis(100));
    assert!(!ok);
    assert!(t.elapsed() >= Duration::from_millis(90));
    drop(g);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            let _g = c.acquire();
            v.store(7);
            c.notify_all();
        });
        let g = c.acquire();
        let (_g, ok) = c.wait_for_timeout(g, || v.load() == 7, LIMIT);
        assert!(ok);
    });
    // True at once: no wait at all.
    let g = c.acquire();
    let (_g, ok) = c.wait_for_timeout(g, || true, Duration::ZERO);
    assert!(ok);
}
