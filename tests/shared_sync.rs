//! Locks, semaphores, events, conditions, barriers, values and arrays
//! (API.md §6, §9): in one process, across threads, and across worker
//! processes with the handles passed as task arguments.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::run;
use mproc::prelude::*;

const SHORT: Duration = Duration::from_millis(20);
const LONG: Duration = Duration::from_secs(20);

#[mproc::task]
fn locked_increments(lock: Lock, v: Value<i64>, n: u32) {
    for _ in 0..n {
        let _g = lock.acquire();
        // A read-modify-write split in two locked halves of the value would
        // lose updates without the outer lock.
        let x = v.load();
        v.store(x + 1);
    }
}

#[mproc::task]
fn value_increments(v: Value<i32>, n: u32) {
    for _ in 0..n {
        *v.get_lock() += 1;
    }
}

#[mproc::task]
fn double_all(arr: Array<f64>) {
    for x in arr.get_lock().iter_mut() {
        *x *= 2.0;
    }
}

#[mproc::task]
fn set_event_after(ev: Event, ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    ev.set();
}

#[mproc::task]
fn wait_event(ev: Event) -> bool {
    ev.wait_timeout(LONG)
}

#[mproc::task]
fn barrier_party(b: Barrier) -> usize {
    b.wait_timeout(LONG).expect("barrier tripped")
}

#[mproc::task]
fn cond_consumer(c: Condition, v: Value<u32>) -> u32 {
    let g = c.acquire();
    let g = c.wait_for(g, || v.load() > 0);
    let got = v.load();
    drop(g);
    got
}

#[mproc::task]
fn sem_worker(s: Semaphore, inside: Value<i32>, max_seen: Value<i32>) {
    for _ in 0..50 {
        let _p = s.acquire();
        let now = {
            let mut g = inside.get_lock();
            *g += 1;
            *g
        };
        {
            let mut m = max_seen.get_lock();
            if now > *m {
                *m = now;
            }
        }
        std::thread::yield_now();
        *inside.get_lock() -= 1;
    }
}

#[mproc::task]
fn release_sem(s: Semaphore) {
    s.release().unwrap();
}

#[test]
fn lock_basics() {
    let l = Lock::new().unwrap();
    let g = l.acquire();
    assert!(!g.owner_died());
    assert!(l.is_locked());
    assert!(l.try_acquire().is_none());
    let t = Instant::now();
    assert!(l.acquire_timeout(SHORT).is_none());
    assert!(t.elapsed() >= SHORT);
    drop(g);
    assert!(!l.is_locked());
    assert!(l.try_acquire().is_some());
    let l2 = l.clone();
    let _g = l2.acquire();
    assert!(l.try_acquire().is_none(), "clones are the same lock");
}

#[test]
fn lock_excludes_threads() {
    let l = Lock::new().unwrap();
    let v = Value::new(0i64).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..2000 {
                    let _g = l.acquire();
                    let x = v.load();
                    v.store(x + 1);
                }
            });
        }
    });
    assert_eq!(v.load(), 8000);
}

#[test]
fn lock_and_value_across_processes() {
    run(async {
        let ex = Executor::new(4).await.unwrap();
        let lock = Lock::new().unwrap();
        let v = Value::new(0i64).unwrap();
        let hs: Vec<_> = (0..4)
            .map(|_| ex.submit(locked_increments, (lock.clone(), v.clone(), 2500)))
            .collect();
        for h in hs {
            h.await.unwrap();
        }
        assert_eq!(v.load(), 10_000);
        ex.shutdown().await;
    });
}

#[test]
fn value_and_array_across_processes() {
    run(async {
        let ex = Executor::new(4).await.unwrap();
        let counter = Value::new(0i32).unwrap();
        let hs: Vec<_> = (0..4)
            .map(|_| ex.submit(value_increments, (counter.clone(), 10_000)))
            .collect();
        for h in hs {
            h.await.unwrap();
        }
        assert_eq!(counter.load(), 40_000);

        let arr = Array::from_slice(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        ex.submit(double_all, arr.clone()).await.unwrap();
        assert_eq!(arr.to_vec(), vec![2.0, 4.0, 6.0, 8.0]);
        ex.shutdown().await;
    });
}

#[test]
fn value_and_array_api() {
    let v = Value::new([1u8, 2, 3]).unwrap();
    assert_eq!(v.load(), [1, 2, 3]);
    v.store([4, 5, 6]);
    {
        let mut g = v.get_lock();
        g[0] = 9;
        assert!(!g.owner_died());
        assert!(v.try_get_lock().is_none());
    }
    assert_eq!(v.load(), [9, 5, 6]);
    let b = Value::new(false).unwrap();
    b.store(true);
    assert!(b.load());

    let z: Array<u64> = Array::zeroed(1000).unwrap();
    assert_eq!(z.len(), 1000);
    assert!(z.to_vec().iter().all(|x| *x == 0));
    z.set(999, 7);
    assert_eq!(z.get(999), 7);
    let e: Array<i8> = Array::zeroed(0).unwrap();
    assert!(e.is_empty());
    assert_eq!(e.to_vec(), Vec::<i8>::new());
    let c = Array::from_slice(&['a', 'b']).unwrap();
    assert_eq!(c.get_lock().iter().collect::<String>(), "ab");
}

#[test]
#[should_panic(expected = "index out of bounds")]
fn array_get_out_of_bounds_panics() {
    let a: Array<i32> = Array::zeroed(3).unwrap();
    a.get(3);
}

#[test]
#[should_panic(expected = "index out of bounds")]
fn array_set_out_of_bounds_panics() {
    let a: Array<i32> = Array::zeroed(3).unwrap();
    a.set(5, 1);
}

#[test]
fn rlock_is_reentrant_per_thread() {
    let l = RLock::new().unwrap();
    let a = l.acquire();
    let b = l.acquire();
    let c = l.try_acquire().expect("re-entrant try");
    let l2 = l.clone();
    std::thread::spawn(move || {
        assert!(l2.try_acquire().is_none(), "another thread must wait");
        assert!(l2.acquire_timeout(SHORT).is_none());
    })
    .join()
    .unwrap();
    drop((c, b));
    let l3 = l.clone();
    std::thread::spawn(move || assert!(l3.try_acquire().is_none()))
        .join()
        .unwrap();
    drop(a);
    let l4 = l.clone();
    std::thread::spawn(move || assert!(l4.try_acquire().is_some()))
        .join()
        .unwrap();
}

#[test]
fn semaphore_counts_and_bounds() {
    let s = Semaphore::new(2).unwrap();
    let a = s.acquire();
    let b = s.try_acquire().unwrap();
    assert_eq!(s.value(), 0);
    assert!(s.try_acquire().is_none());
    assert!(s.acquire_timeout(SHORT).is_none());
    drop(a);
    assert_eq!(s.value(), 1);
    b.forget();
    assert_eq!(s.value(), 1);
    s.release().unwrap();
    s.release().unwrap();
    assert_eq!(s.value(), 3, "a plain semaphore may grow past n");

    let bs = BoundedSemaphore::new(1).unwrap();
    assert!(bs.release().is_err(), "release past n is an error");
    let p = bs.acquire();
    p.forget();
    assert_eq!(bs.value(), 0);
    bs.release().unwrap();
    assert!(bs.release().is_err());
    assert_eq!(bs.value(), 1);
}

#[test]
fn semaphore_limits_concurrency_across_processes() {
    run(async {
        let ex = Executor::new(3).await.unwrap();
        let s = Semaphore::new(2).unwrap();
        let inside = Value::new(0i32).unwrap();
        let max_seen = Value::new(0i32).unwrap();
        let hs: Vec<_> = (0..3)
            .map(|_| ex.submit(sem_worker, (s.clone(), inside.clone(), max_seen.clone())))
            .collect();
        for h in hs {
            h.await.unwrap();
        }
        assert!(max_seen.load() <= 2, "more than 2 holders at once");
        assert_eq!(s.value(), 2);
        // A release by another process, without a guard.
        let p = s.acquire();
        p.forget();
        ex.submit(release_sem, s.clone()).await.unwrap();
        assert_eq!(s.value(), 2);
        ex.shutdown().await;
    });
}

#[test]
fn event_across_processes() {
    run(async {
        let ex = Executor::new(2).await.unwrap();
        let ev = Event::new().unwrap();
        assert!(!ev.is_set());
        assert!(!ev.wait_timeout(SHORT));
        let waiter = ex.submit(wait_event, ev.clone());
        ex.submit(set_event_after, (ev.clone(), 30)).await.unwrap();
        assert!(waiter.await.unwrap());
        assert!(ev.is_set());
        ev.wait();
        ev.clear();
        assert!(!ev.is_set());
        ex.shutdown().await;
    });
}

#[test]
fn barrier_across_processes() {
    run(async {
        let ex = Executor::new(3).await.unwrap();
        let b = Barrier::new(4).unwrap();
        assert_eq!(b.parties(), 4);
        let hs: Vec<_> = (0..3)
            .map(|_| ex.submit(barrier_party, b.clone()))
            .collect();
        let me = b.wait_async().await;
        let mut idx = vec![me];
        for h in hs {
            idx.push(h.await.unwrap());
        }
        idx.sort();
        assert_eq!(idx, vec![0, 1, 2, 3]);
        // A timeout breaks the barrier, as in Python, until a reset.
        let b1 = Barrier::new(2).unwrap();
        assert_eq!(b1.wait_timeout(SHORT), Err(BrokenBarrierError));
        assert!(b1.broken());
        assert_eq!(b1.n_waiting(), 0);
        ex.shutdown().await;
    });
}

#[test]
fn condition_notify_wakes_exactly_n() {
    let c = Condition::new().unwrap();
    let woke = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..3 {
            let (c, woke) = (c.clone(), woke.clone());
            s.spawn(move || {
                let g = c.acquire();
                let (_g, notified) = c.wait_timeout(g, Duration::from_millis(1500));
                if notified {
                    woke.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
        // Let all three wait, then notify two.
        std::thread::sleep(Duration::from_millis(200));
        c.notify(2);
    });
    assert_eq!(woke.load(std::sync::atomic::Ordering::SeqCst), 2);

    let g = c.acquire();
    let (g, notified) = c.wait_timeout(g, SHORT);
    assert!(!notified);
    assert!(!g.owner_died());
    drop(g);
    c.notify_all(); // nobody waits: a no-op
}

#[test]
fn condition_across_processes() {
    run(async {
        let ex = Executor::new(2).await.unwrap();
        let c = Condition::new().unwrap();
        let v = Value::new(0u32).unwrap();
        let hs: Vec<_> = (0..2)
            .map(|_| ex.submit(cond_consumer, (c.clone(), v.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        {
            let _g = c.acquire();
            v.store(42);
            c.notify_all();
        }
        for h in hs {
            assert_eq!(h.await.unwrap(), 42);
        }
        ex.shutdown().await;
    });
}

#[test]
fn async_twins_do_not_block_the_runtime() {
    // A current-thread runtime: if a twin blocked its only thread, the
    // ticker below could not run and the release would never come.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(LONG, async {
            let lock = Lock::new().unwrap();
            let ev = Event::new().unwrap();
            let sem = Semaphore::new(0).unwrap();
            let v = Value::new(1u8).unwrap();
            let g = lock.acquire();
            let vg = v.get_lock();
            let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let t2 = ticks.clone();
            let (ev2, sem2) = (ev.clone(), sem.clone());
            let ticker = tokio::spawn(async move {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    t2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                ev2.set();
                sem2.release().unwrap();
            });
            ev.wait_async().await;
            assert!(ticks.load(std::sync::atomic::Ordering::SeqCst) >= 5);
            let _p = sem.acquire_async().await;
            drop(g);
            drop(vg);
            let g2 = lock.acquire_async().await;
            assert!(!g2.owner_died());
            assert_eq!(*v.get_lock_async().await, 1);
            ticker.await.unwrap();
        })
        .await
        .expect("async twins hung");
    });
}

#[test]
fn handles_debug_and_kind_checks() {
    let l = Lock::new().unwrap();
    assert!(format!("{l:?}").contains("Lock"));
    let bytes = postcard::to_stdvec(&l).unwrap();
    // A handle decoded as another kind is refused with a clear error.
    let wrong = postcard::from_bytes::<Event>(&bytes);
    assert!(wrong.is_err());
    let wrong = postcard::from_bytes::<Value<i32>>(
        &postcard::to_stdvec(&Value::new(1u32).unwrap()).unwrap(),
    );
    assert!(wrong.is_err(), "Value<u32> decoded as Value<i32>");
    let right: Lock = postcard::from_bytes(&bytes).unwrap();
    let _g = right.acquire();
    assert!(l.is_locked(), "a decoded handle is the same lock");
}

#[test]
fn handles_are_send_sync_clone_and_serde() {
    fn check<T: Send + Sync + Clone + serde::Serialize + serde::de::DeserializeOwned + 'static>() {}
    check::<Lock>();
    check::<RLock>();
    check::<Semaphore>();
    check::<BoundedSemaphore>();
    check::<Event>();
    check::<Condition>();
    check::<Barrier>();
    check::<Value<i32>>();
    check::<Array<f64>>();
    check::<Queue<String>>();
    check::<SimpleQueue<String>>();
    check::<JoinableQueue<String>>();
    check::<Connection<String>>();
    fn error<E: std::error::Error + Send + Sync + Clone + PartialEq + Eq + 'static>() {}
    error::<QueueError>();
    // Guards of process-owned locks may cross threads (and `.await`s).
    fn send<T: Send>() {}
    send::<mproc::LockGuard<'static>>();
    send::<mproc::ValueGuard<'static, i32>>();
    send::<mproc::SemaphoreGuard<'static>>();
}

#[mproc::task]
#[allow(deprecated)] // a few bytes of an encoded handle
fn make_queue_handle() -> Vec<u8> {
    let q: Queue<u32> = Queue::new().unwrap();
    q.put(1).unwrap();
    postcard::to_stdvec(&q).unwrap()
}

#[mproc::task]
fn sigkill_self() {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
}

#[test]
fn a_handle_from_a_process_that_is_gone_gives_a_clear_error() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let bytes = ex.submit(make_queue_handle, ()).await.unwrap();
        let pid = ex.worker_pids()[0];
        assert!(ex.submit(sigkill_self, ()).await.is_err());
        assert!(common::wait_gone(&[pid], LONG));
        // The reason ("shared object is gone: process N … has exited") is
        // logged; postcard itself keeps only "custom error".
        assert!(postcard::from_bytes::<Queue<u32>>(&bytes).is_err());
        ex.shutdown().await;
    });
}
