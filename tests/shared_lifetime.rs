//! How long a shared object lives when only its handles in flight hold it,
//! what a receiver is told when it cannot (`segment.rs`, module doc), and
//! how much address space objects take (`ring.rs`: areas that grow).
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
const AS_HELPER_ENV: &str = "MPROC_SHARED_AS_HELPER";

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
    if std::env::var_os(HELPER_ENV).is_some() || std::env::var_os(AS_HELPER_ENV).is_some() {
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
    if std::env::var_os(HELPER_ENV).is_some() || std::env::var_os(AS_HELPER_ENV).is_some() {
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

/// This process's virtual size in bytes.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Not a test of its own: the child of the next test, run under an
/// address-space limit of 1 GiB above what it uses at start.
#[test]
fn helper_makes_many_objects_under_an_address_space_limit() {
    if std::env::var_os(AS_HELPER_ENV).is_none() {
        return;
    }
    let limit = vm_size() + (1 << 30);
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit reads the struct we pass; it affects only this
    // (child) process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
    let queues: Vec<Queue<Vec<u8>>> = (0..32).map(|_| Queue::new().unwrap()).collect();
    let pipes: Vec<_> = (0..32).map(|_| pipe::<Vec<u8>>().unwrap()).collect();
    for (i, q) in queues.iter().enumerate() {
        q.put(vec![i as u8; 100]).unwrap();
        assert_eq!(q.get().unwrap(), vec![i as u8; 100]);
    }
    for (i, (a, b)) in pipes.iter().enumerate() {
        a.send(&vec![i as u8; 100]).unwrap();
        assert_eq!(b.recv().unwrap(), vec![i as u8; 100]);
    }
    // Growing still works under the limit.
    queues[0].put(vec![9; 8 << 20]).unwrap();
    assert_eq!(queues[0].get().unwrap(), vec![9; 8 << 20]);
    pipes[0].1.send(&vec![8; 8 << 20]).unwrap();
    assert_eq!(pipes[0].0.recv().unwrap(), vec![8; 8 << 20]);
    println!(
        "AS-OK {} MiB used of a {} MiB limit",
        vm_size() >> 20,
        limit >> 20
    );
}

/// Address space follows an object's size: 32 queues and 32 pipes (which
/// used to reserve 1 GiB and 2 GiB each) fit under a `ulimit -v` of 1 GiB
/// above the process's own size.
#[test]
fn many_queues_and_pipes_fit_under_an_address_space_limit() {
    if std::env::var_os(HELPER_ENV).is_some() || std::env::var_os(AS_HELPER_ENV).is_some() {
        return;
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_makes_many_objects_under_an_address_space_limit",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(AS_HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("AS-OK"),
        "helper failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
