//! How long a shared object lives when only its handles in flight hold it,
//! and what a receiver is told when it cannot (`segment.rs`, module doc).
//!
//! The "no time limit" half is proven in `segment.rs`'s unit tests (the
//! keep-alive has no time term, and releases on acknowledgement only); here
//! the same through the public API and real processes.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{run, LIMIT};
use mproc::prelude::*;

const HELPER_ENV: &str = "MPROC_SHARED_LIFETIME_HELPER";

#[mproc::task]
fn wait_for(e: Event) -> bool {
    e.wait_timeout(LIMIT)
}

#[mproc::task]
fn take(q: Queue<u32>) -> u32 {
    q.get_timeout(LIMIT).unwrap()
}

/// A task queued behind a long one, whose only handle to its queue is its
/// argument, still finds the queue and its item.
#[test]
fn a_moved_handle_survives_a_long_wait_in_the_task_queue() {
    if std::env::var_os(HELPER_ENV).is_some() {
        return;
    }
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let gate = Event::new().unwrap();
        let blocker = ex.submit(wait_for, gate.clone());
        let q: Queue<u32> = Queue::new().unwrap();
        q.put(42).unwrap();
        // Moved: the parent holds no handle to the queue from here on.
        let queued = ex.submit(take, q);
        // Long enough for the keep-alive's fast polling to be over.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        gate.set();
        assert!(blocker.await.unwrap());
        assert_eq!(queued.await.unwrap(), 42);
        ex.shutdown().await;
    });
}

/// Not a test of its own: the child of the next test. It receives a
/// `Queue<Queue<u32>>` handle in the environment, puts a fresh queue in it,
/// and exits at once, so nobody holds the inner queue any more.
#[test]
fn helper_sends_a_queue_then_exits() {
    let Some(hex) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let hex = hex.to_str().unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let outer: Queue<Queue<u32>> = postcard::from_bytes(&bytes).unwrap();
    let inner = Queue::new().unwrap();
    inner.put(7).unwrap();
    outer.put(inner).unwrap();
}

/// A handle whose sender exited before it was received fails with an error
/// that says so, not a bare "Serde Deserialization Error".
#[test]
fn a_handle_from_an_exited_process_names_the_cause() {
    if std::env::var_os(HELPER_ENV).is_some() {
        return;
    }
    let outer: Queue<Queue<u32>> = Queue::new().unwrap();
    let bytes = postcard::to_stdvec(&outer).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_sends_a_queue_then_exits",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, hex)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = child.wait().unwrap();
    assert!(status.success(), "helper failed: {status}");
    match outer.get_timeout(LIMIT) {
        Err(QueueError::Encoding { message }) => assert_eq!(
            message,
            format!(
                "the process (pid {pid}) that sent this Queue handle has exited, so the shared \
                 object could not be opened"
            )
        ),
        other => panic!("expected a decoding error, got {other:?}"),
    }
}
