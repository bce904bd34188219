//! Starting many processes at once with the fork method while the program's
//! threads come and go: a forked child whose std threads cannot start
//! (a lock of std's held by another thread at the fork) must boot afresh,
//! never hang (API §9: Fork works from a multi-threaded parent).

mod common;

use std::time::Duration;

use common::{run, wait_gone};
use mproc::prelude::*;

#[mproc::actor]
struct Cell {
    n: u64,
}

#[mproc::actor]
impl Cell {
    fn new(n: u64) -> Self {
        Cell { n }
    }
    fn get(&self) -> (u64, u32) {
        (self.n, std::process::id())
    }
}

#[test]
fn sixteen_actors_forked_at_once_all_come_up_and_go() {
    run(async {
        let ex = Executor::builder()
            .max_workers(1)
            .start_method(StartMethod::Fork)
            .build()
            .await
            .unwrap();
        let mut pids = Vec::new();
        for _ in 0..6 {
            let starts: Vec<_> = (0..16u64)
                .map(|i| {
                    let ex = ex.clone();
                    // Each start on a runtime thread of its own: threads are
                    // created and end around every fork.
                    tokio::spawn(async move {
                        let c = Cell::spawn(&ex, i).await.unwrap();
                        let got = c.get().await.unwrap();
                        c.stop().await.unwrap();
                        got
                    })
                })
                .collect();
            let all =
                tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(starts))
                    .await
                    .expect("forked actors hung");
            for (i, r) in all.into_iter().enumerate() {
                let (n, pid) = r.unwrap();
                assert_eq!(n, i as u64);
                pids.push(pid);
            }
        }
        ex.shutdown().await;
        assert!(wait_gone(&pids, Duration::from_secs(5)));
    });
}
