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

#[mproc::task]
fn slow_on(node: u32, ms: u64, started: String) -> u32 {
    let here = mproc::current_node().get();
    if here == node {
        // Says it has started there: a file named after its worker.
        let _ = std::fs::write(format!("{started}/{}", std::process::id()), b"");
        std::thread::sleep(Duration::from_millis(ms));
    }
    here
}

fn kill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn a_killed_node_fails_its_running_task_with_node_lost_and_retries_run_elsewhere() {
    run(async {
        let cluster = Cluster::listen("127.0.0.1:0", KEY).unwrap();
        let victim = start_node(cluster.address(), KEY, 2);
        let victim_pid = victim.id();
        let executor = Executor::builder()
            .max_workers(0)
            .cluster(&cluster)
            .build()
            .await
            .unwrap();
        let first = cluster
            .wait_for_nodes(1, Duration::from_secs(30))
            .await
            .unwrap();
        let lost = first[0].id();
        // Both start on the victim (two slots) and would sleep there long.
        let started = std::env::temp_dir().join(format!("mproc-victim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&started);
        std::fs::create_dir(&started).unwrap();
        let mark = started.to_string_lossy().into_owned();
        let plain = executor.submit(slow_on, (lost.get(), 60_000, mark.clone()));
        let retried = executor.submit_with(
            slow_on,
            (lost.get(), 60_000, mark),
            TaskOptions::default().retries(1),
        );
        // Only once both run there does another node join: a task still
        // waiting for a slot would be moved to it, and not be lost.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_dir(&started).map_or(0, |d| d.count()) < 2 {
            assert!(
                Instant::now() < deadline,
                "the tasks never started on the victim"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::remove_dir_all(&started).unwrap();
        let survivor = start_node(cluster.address(), KEY, 1);
        let survivor_pid = survivor.id();
        cluster
            .wait_for_nodes(2, Duration::from_secs(30))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        kill(victim_pid);
        let lost_at = Instant::now();
        let (status, _) = finish(victim, Duration::from_secs(10));
        assert!(!status.success());
        assert_eq!(plain.await, Err(TaskError::NodeLost { node: lost }));
        assert!(
            lost_at.elapsed() < Duration::from_secs(6),
            "the loss took {:?} to notice",
            lost_at.elapsed()
        );
        let again = retried.await.expect("retried on the surviving node");
        assert_ne!(again, lost.get());
        assert!(cluster.nodes().iter().all(|n| n.id() != lost));
        let ran_on = executor
            .submit(nap_then, 10)
            .await
            .expect("the executor keeps serving");
        assert_ne!(ran_on, lost.get());
        drop(executor);
        drop(cluster);
        let (status, err) = finish(survivor, Duration::from_secs(10));
        assert!(status.success(), "{status} {err}");
        assert!(wait_gone(
            &[victim_pid, survivor_pid],
            Duration::from_secs(5)
        ));
    });
}

/// The processes below `pid` (children, grandchildren…) now.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

#[test]
fn a_wrong_key_is_refused_with_one_clear_line_and_the_driver_keeps_serving() {
    run(async {
        let cluster = Cluster::listen("127.0.0.1:0", KEY).unwrap();
        let intruder = start_node(cluster.address(), b"not the key", 1);
        let (status, err) = finish(intruder, Duration::from_secs(20));
        assert_eq!(status.code(), Some(3), "stderr: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line expected, got: {err}");
        assert!(lines[0].contains("refused this node's key"), "{err}");
        assert!(!err.contains("not the key") && !err.contains("cluster test key"));
        // Garbage and silence do not stop the driver either.
        let mut junk = std::net::TcpStream::connect(cluster.address()).unwrap();
        std::io::Write::write_all(&mut junk, &[0xff; 64]).unwrap();
        let _silent = std::net::TcpStream::connect(cluster.address()).unwrap();
        let node = start_node(cluster.address(), KEY, 1);
        let pid = node.id();
        let executor = Executor::builder()
            .max_workers(0)
            .cluster(&cluster)
            .build()
            .await
            .unwrap();
        let joined = cluster
            .wait_for_nodes(1, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(joined.len(), 1);
        assert_eq!(executor.submit(where_am_i, 3).await.unwrap().0, 9);
        drop(executor);
        drop(cluster);
        let (status, err) = finish(node, Duration::from_secs(10));
        assert!(status.success(), "{status} {err}");
        assert!(wait_gone(&[pid], Duration::from_secs(5)));
    });
}

#[test]
fn an_empty_key_is_refused() {
    let e = Cluster::listen("127.0.0.1:0", b"").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth);
    let e = mproc::join("127.0.0.1:1", b"").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth);
}

#[test]
fn another_build_is_refused() {
    // The `demo` example links other tasks: another registry fingerprint.
    let demo = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/demo");
    // `cargo test` builds the examples with the tests; a lone
    // `cargo test --test cluster` does not, and an old build of the example
    // may not know clusters yet.
    let built = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let me = built(&std::env::current_exe().unwrap());
    if built(&demo).is_none() || built(&demo) < me {
        eprintln!("skipped: {} is not built with this test", demo.display());
        return;
    }
    let cluster = Cluster::listen("127.0.0.1:0", KEY).unwrap();
    let node = Command::new(&demo)
        .env("MPROC_JOIN", cluster.address().to_string())
        .env("MPROC_AUTHKEY", std::str::from_utf8(KEY).unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, err) = finish(node, Duration::from_secs(20));
    assert!(!status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("another build"), "{err}");
    assert!(cluster.nodes().is_empty());
}

/// Run by `nodes_exit_when_the_driver_dies`: a driver whose address goes
/// to stdout; it then waits to be killed.
#[test]
#[ignore = "a helper process of nodes_exit_when_the_driver_dies"]
fn driver_to_be_killed() {
    if std::env::var_os("MPROC_TEST_DRIVER").is_none() {
        return;
    }
    run(async {
        let cluster = Cluster::listen("127.0.0.1:0", KEY).unwrap();
        let executor = Executor::builder()
            .max_workers(0)
            .cluster(&cluster)
            .build()
            .await
            .unwrap();
        println!("ADDR {}", cluster.address());
        cluster
            .wait_for_nodes(2, Duration::from_secs(30))
            .await
            .unwrap();
        // Keep the nodes busy when the driver dies.
        let _busy: Vec<_> = (0..4).map(|_| executor.submit(nap_then, 60_000)).collect();
        println!("READY");
        std::thread::sleep(Duration::from_secs(60));
    });
}

#[test]
fn nodes_and_their_workers_exit_when_the_driver_dies() {
    use std::io::BufRead;
    let mut driver = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "driver_to_be_killed", "--ignored", "--nocapture"])
        .env("MPROC_TEST_DRIVER", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(driver.stdout.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines
            .next()
            .expect("the driver printed its address")
            .unwrap();
        if let Some(a) = line.strip_prefix("ADDR ") {
            break a.parse().unwrap();
        }
    };
    let nodes: Vec<Child> = (0..2).map(|_| start_node(addr, KEY, 2)).collect();
    loop {
        let line = lines.next().expect("the driver got its nodes").unwrap();
        if line == "READY" {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut all: Vec<u32> = nodes.iter().map(Child::id).collect();
    for n in &nodes {
        all.extend(descendants(n.id()));
    }
    assert!(all.len() >= 6, "nodes and their workers: {all:?}");
    kill(driver.id());
    let _ = driver.wait();
    let killed_at = Instant::now();
    for n in nodes {
        let (status, err) = finish(n, Duration::from_secs(10));
        assert!(status.success(), "{status} {err}");
    }
    assert!(
        wait_gone(
            &all,
            Duration::from_secs(5).saturating_sub(killed_at.elapsed())
        ),
        "a node or node worker outlived the driver by 5 s"
    );
}

#[test]
fn nodes_join_over_tls_and_a_node_that_does_not_trust_the_driver_is_refused() {
    run(async {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = ck.cert.der().to_vec();
        let tls = mproc::ServerTls::new(vec![cert.clone()], ck.signing_key.serialize_der());
        let cluster = Cluster::listen_tls("127.0.0.1:0", KEY, tls).unwrap();
        let dir = std::env::temp_dir().join(format!("mproc-cluster-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let trusted = dir.join("driver.der");
        std::fs::write(&trusted, &cert).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let untrusted = dir.join("other.der");
        std::fs::write(&untrusted, other.cert.der()).unwrap();
        let tls_node = |ca: &std::path::Path| {
            Command::new(std::env::current_exe().unwrap())
                .env("MPROC_JOIN", cluster.address().to_string())
                .env("MPROC_AUTHKEY", std::str::from_utf8(KEY).unwrap())
                .env("MPROC_NODE_WORKERS", "1")
                .env("MPROC_TLS_CA_FILE", ca)
                .env("MPROC_TLS_SERVER_NAME", "localhost")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let doubter = tls_node(&untrusted);
        let (status, err) = finish(doubter, Duration::from_secs(20));
        assert!(!status.success());
        assert!(err.contains("TLS"), "{err}");
        let node = tls_node(&trusted);
        let pid = node.id();
        let executor = Executor::builder()
            .max_workers(0)
            .cluster(&cluster)
            .build()
            .await
            .unwrap();
        cluster
            .wait_for_nodes(1, Duration::from_secs(30))
            .await
            .unwrap();
        let all: Vec<(u64, u32)> = executor
            .map(where_am_i, 0..50u64)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all[7].0, 49);
        assert!(all.iter().all(|(_, n)| *n != 0));
        drop(executor);
        drop(cluster);
        std::fs::remove_dir_all(&dir).unwrap();
        let (status, err) = finish(node, Duration::from_secs(10));
        assert!(status.success(), "{status} {err}");
        assert!(wait_gone(&[pid], Duration::from_secs(5)));
    });
}

#[test]
fn a_peer_that_trickles_its_handshake_is_dropped_after_the_deadline() {
    use std::io::{Read, Write};
    let cluster = Cluster::listen("127.0.0.1:0", KEY).unwrap();
    let mut peer = std::net::TcpStream::connect(cluster.address()).unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    // Read the challenge, then answer one byte at a time, slowly: a
    // plausible length (64) first, then the body.
    let _ = peer.read(&mut buf);
    let mut bytes = 64u32.to_le_bytes().into_iter().chain(std::iter::repeat(0));
    let dropped = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the trickling peer was still connected after 20 s"
        );
        if peer.write_all(&[bytes.next().unwrap()]).is_err() {
            break started.elapsed();
        }
        match peer.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break started.elapsed(),
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(800));
    };
    assert!(
        dropped >= Duration::from_secs(9),
        "dropped after {dropped:?}, before the deadline"
    );
    assert!(cluster.nodes().is_empty());
}

#[test]
fn a_map_on_node_workers_only_keeps_every_node_slot_busy() {
    run(async {
        let cluster = Cluster::listen("127.0.0.1:0", KEY).unwrap();
        let nodes: Vec<Child> = (0..2)
            .map(|_| start_node(cluster.address(), KEY, 2))
            .collect();
        let pids: Vec<u32> = nodes.iter().map(Child::id).collect();
        let executor = Executor::builder()
            .max_workers(0)
            .cluster(&cluster)
            .build()
            .await
            .unwrap();
        cluster
            .wait_for_nodes(2, Duration::from_secs(30))
            .await
            .unwrap();
        // Every slot up.
        let _: Vec<(u64, u32)> = executor
            .map(where_am_i, 0..20u64)
            .try_collect()
            .await
            .unwrap();
        // Four slots, four slow items: all four run at once, so both nodes
        // get some (a map sized by the local workers alone, zero here, kept
        // two in flight on the first node's slots).
        let nap = Duration::from_millis(1000);
        let started = Instant::now();
        let ran_on: Vec<u32> = executor
            .map(nap_then, [nap.as_millis() as u64; 4])
            .try_collect()
            .await
            .unwrap();
        let took = started.elapsed();
        let used: std::collections::BTreeSet<u32> = ran_on.iter().copied().collect();
        assert_eq!(used.len(), 2, "ran on {ran_on:?}");
        assert!(took < 2 * nap, "four naps on four slots took {took:?}");
        drop(executor);
        drop(cluster);
        for n in nodes {
            let (status, err) = finish(n, Duration::from_secs(10));
            assert!(status.success(), "node failed: {status} {err}");
        }
        assert!(wait_gone(&pids, Duration::from_secs(5)));
    });
}
