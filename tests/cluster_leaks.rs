//! A driver that loses nodes keeps nothing of them: no descriptor, no
//! thread. Nodes are this test binary started with `MPROC_JOIN` (as in
//! `cluster.rs`). One test per binary, so the counts are exact.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run, wait_gone};
use mproc::prelude::*;

const KEY: &[u8] = b"cluster leak test key";

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

/// Waits (bounded) until `f()` is at most `target`; its last value.
async fn settles(f: impl Fn() -> usize, target: usize) -> usize {
    let end = Instant::now() + Duration::from_secs(5);
    while f() > target && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

#[test]
fn lost_nodes_leave_no_descriptor_or_thread_in_the_driver() {
    run(async {
        let cluster = Cluster::listen("127.0.0.1:0", KEY).unwrap();
        let ex = Executor::builder()
            .max_workers(0)
            .cluster(&cluster)
            .build()
            .await
            .unwrap();
        let mut pids = Vec::new();
        let mut baseline = None;
        // The first round warms up (runtime threads, lazily made state);
        // the counts after it are the baseline for the others.
        for round in 0..4 {
            let known: HashSet<NodeId> = cluster.nodes().iter().map(NodeInfo::id).collect();
            let mut node = Command::new(std::env::current_exe().unwrap())
                .env("MPROC_JOIN", cluster.address().to_string())
                .env("MPROC_AUTHKEY", std::str::from_utf8(KEY).unwrap())
                .env("MPROC_NODE_WORKERS", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            pids.push(node.id());
            cluster
                .wait_for_nodes(known.len() + 1, Duration::from_secs(30))
                .await
                .unwrap();
            assert_eq!(ex.submit(square, 9).await, Ok(81));
            node.kill().unwrap();
            node.wait().unwrap();
            let end = Instant::now() + Duration::from_secs(10);
            while !cluster.nodes().is_empty() {
                assert!(Instant::now() < end, "the killed node was never lost");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            match baseline {
                None => {
                    // What the loss closes, it closes just after.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    baseline = Some((common::open_fds(), common::thread_count()));
                }
                Some((fds, threads)) => {
                    let now = settles(common::open_fds, fds).await;
                    assert!(
                        now <= fds,
                        "round {round}: descriptors of lost nodes kept: {now} > {fds}"
                    );
                    let now = settles(common::thread_count, threads).await;
                    assert!(
                        now <= threads,
                        "round {round}: threads of lost nodes kept: {now} > {threads}"
                    );
                }
            }
        }
        drop(ex);
        drop(cluster);
        // A killed node's workers exit on their own.
        assert!(wait_gone(&pids, Duration::from_secs(5)));
    });
}
