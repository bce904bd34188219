//! Shared objects work whatever the start method: handles passed to workers
//! started by spawn, forkserver and fork reach the same objects.

mod common;

use std::time::Duration;

use common::run;
use mproc::prelude::*;

#[mproc::task]
fn cooperate(q: Queue<u32>, c: Connection<u32>, l: Lock, v: Value<u32>, e: Event) -> u32 {
    let x = q.get_timeout(Duration::from_secs(20)).unwrap();
    {
        let _g = l.acquire();
        *v.get_lock() += x;
    }
    c.send(&(x * 10)).unwrap();
    e.set();
    x
}

fn exercise(method: StartMethod) {
    run(async move {
        let ex = Executor::builder()
            .max_workers(2)
            .start_method(method)
            .build()
            .await
            .unwrap();
        let q: Queue<u32> = Queue::new().unwrap();
        let (here, there) = pipe::<u32>().unwrap();
        let (l, v, e) = (
            Lock::new().unwrap(),
            Value::new(0u32).unwrap(),
            Event::new().unwrap(),
        );
        q.put(1).unwrap();
        q.put(2).unwrap();
        let hs: Vec<_> = (0..2)
            .map(|_| {
                ex.submit(
                    cooperate,
                    (q.clone(), there.clone(), l.clone(), v.clone(), e.clone()),
                )
            })
            .collect();
        drop(there);
        let mut got: Vec<u32> = Vec::new();
        for h in hs {
            got.push(h.await.unwrap());
        }
        got.sort();
        assert_eq!(got, vec![1, 2], "{method:?}");
        assert_eq!(v.load(), 3);
        assert!(e.is_set());
        let mut sent = vec![here.recv().unwrap(), here.recv().unwrap()];
        sent.sort();
        assert_eq!(sent, vec![10, 20]);
        ex.shutdown().await;
    });
}

#[test]
fn spawn() {
    exercise(StartMethod::Spawn);
}

#[test]
fn forkserver() {
    exercise(StartMethod::Forkserver);
}

#[test]
fn fork() {
    exercise(StartMethod::Fork);
}
