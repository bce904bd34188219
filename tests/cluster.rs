//! Clusters on loopback (API.md §8 "Nodes"): nodes are this test binary
//! started with `MPROC_JOIN`, which makes them nodes before libtest's
//! `main`; every node is reaped and checked gone.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{run, wait_gone};
use mproc::prelude::*;

const KEY: &[u8] = b"cluster test key";

#[mproc::task]
fn where_am_i(x: u64) -> (u64, u32) {
    (x * x, mproc::current_node().get())
}

#[mproc::task]
fn nap_then(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    mproc::current_node().get()
}

/// A node of this test binary joining `addr`, with `workers` workers.
fn start_node(addr: std::net::SocketAddr, key: &[u8], workers: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("MPROC_JOIN", addr.to_string())
        .env("MPROC_AUTHKEY", std::str::from_utf8(key).unwrap())
        .env("MPROC_NODE_WORKERS", workers.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit (at most `within`); its status and stderr.
fn finish(mut child: Child, within: Duration) -> (std::process::ExitStatus, String) {
    let end = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            return (status, err);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node {} did not exit within {within:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tasks_and_maps_run_on_node_workers_only() {
    run(async {
        let cluster = Cluster::listen("127.0.0.1:0", KEY).unwrap();
        let nodes: Vec<Child> = (0..2)
            .map(|_| start_node(cluster.address(), KEY, 1))
            .collect();
        let pids: Vec<u32> = nodes.iter().map(Child::id).collect();
        let executor = Executor::builder()
            .max_workers(0)
            .cluster(&cluster)
            .build()
            .await
            .unwrap();
        let joined = cluster
            .wait_for_nodes(2, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(joined.len(), 2);
        assert!(joined
            .iter()
            .all(|n| n.workers() == 1 && n.id() != NodeId::DRIVER));
        let (sq, node) = executor.submit(where_am_i, 7).await.unwrap();
        assert_eq!(sq, 49);
        assert_ne!(node, 0, "ran on the driver, not a node");
        let all: Vec<(u64, u32)> = executor
            .map(where_am_i, 0..200u64)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all.len(), 200);
        assert!(all
            .iter()
            .enumerate()
            .all(|(i, (sq, _))| *sq == (i * i) as u64));
        // Two slow tasks at once: one per node.
        let a = executor.submit(nap_then, 300);
        let b = executor.submit(nap_then, 300);
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_ne!(a, b, "both slow tasks went to the same node");
        drop(executor);
        drop(cluster);
        for n in nodes {
            let (status, err) = finish(n, Duration::from_secs(10));
            assert!(status.success(), "node failed: {status} {err}");
        }
        assert!(wait_gone(&pids, Duration::from_secs(5)));
    });
}
