//! A parent killed by SIGKILL leaves no worker behind (API.md §5): each
//! worker exits within about a second.

mod common;

use std::time::{Duration, Instant};

use common::{gone, wait_gone};
use mproc::prelude::*;

#[mproc::task]
fn sleep_ms(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

const ROLE: &str = "MPROC_TEST_ROLE";

/// Runs only when re-executed by `workers_die_with_a_killed_parent`: starts
/// workers, keeps them busy, prints their pids and waits to be killed.
#[test]
#[ignore = "helper process for workers_die_with_a_killed_parent"]
fn victim() {
    if std::env::var_os(ROLE).is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ex = Executor::new(2).await.unwrap();
        let busy: Vec<_> = (0..4).map(|_| ex.submit(sleep_ms, 60_000)).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pids: Vec<String> = ex.worker_pids().iter().map(u32::to_string).collect();
        println!("PIDS {}", pids.join(" "));
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(busy);
    });
}

#[test]
fn workers_die_with_a_killed_parent() {
    let (mut child, pids) = common::start_victim("victim", ROLE, "victim");
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| !gone(*p)));
    child.kill().unwrap(); // SIGKILL: no destructor, no exit handler runs
    let killed = Instant::now();
    child.wait().unwrap();
    assert!(
        wait_gone(&pids, Duration::from_millis(1500)),
        "workers outlived their killed parent: {pids:?}"
    );
    eprintln!(
        "workers gone {:?} after the parent's death",
        killed.elapsed()
    );
}
