//! `pipe` / `Connection` (API.md §6, §9): duplex typed messages between
//! processes; a closed or dead peer gives `ErrorKind::Disconnected`, never a
//! hang.

mod common;

use std::time::{Duration, Instant};

use common::{run, wait_gone};
use mproc::prelude::*;

const SHORT: Duration = Duration::from_millis(20);
const LONG: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Msg {
    Text(String),
    List(Vec<i32>),
}

#[mproc::task]
fn sender(conn: Connection<Msg>) -> Msg {
    conn.send(&Msg::Text("Hello from sender".into())).unwrap();
    conn.send(&Msg::List(vec![1, 2, 3])).unwrap();
    let response = conn.recv().unwrap();
    conn.close();
    response
}

#[mproc::task]
fn receiver(conn: Connection<Msg>) -> Vec<Msg> {
    let a = conn.recv().unwrap();
    let b = conn.recv().unwrap();
    conn.send(&Msg::Text("Thanks!".into())).unwrap();
    conn.close();
    vec![a, b]
}

#[mproc::task]
fn echo_n(conn: Connection<u64>, n: u32) {
    for _ in 0..n {
        let v = conn.recv().unwrap();
        conn.send(&(v + 1)).unwrap();
    }
}

#[mproc::task]
fn report_then_hang(conn: Connection<u64>) {
    conn.send(&u64::from(std::process::id())).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[mproc::task]
fn send_and_return(conn: Connection<u64>) {
    conn.send(&5).unwrap();
}

#[test]
fn duplex_in_one_process() {
    let (a, b) = pipe::<Msg>().unwrap();
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    let t = Instant::now();
    assert!(!b.poll(Some(SHORT)).unwrap());
    assert!(t.elapsed() >= SHORT);
    a.send(&Msg::Text("x".into())).unwrap();
    b.send(&Msg::List(vec![1])).unwrap();
    assert!(b.poll(None).unwrap());
    assert_eq!(b.recv().unwrap(), Msg::Text("x".into()));
    assert_eq!(a.recv().unwrap(), Msg::List(vec![1]));
    assert_eq!(a.recv_timeout(SHORT).unwrap(), None);
    // Close: the peer drains, then gets Disconnected; this end errors too.
    a.send(&Msg::Text("last".into())).unwrap();
    a.close();
    assert!(a.is_closed());
    assert_eq!(
        a.send(&Msg::List(vec![])).unwrap_err().kind(),
        ErrorKind::Disconnected
    );
    assert_eq!(a.recv().unwrap_err().kind(), ErrorKind::Disconnected);
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(b.recv().unwrap(), Msg::Text("last".into()));
    assert!(
        b.poll(Some(Duration::ZERO)).unwrap(),
        "poll is true at EOF, as in Python"
    );
    assert_eq!(b.recv().unwrap_err().kind(), ErrorKind::Disconnected);
    assert_eq!(
        b.send(&Msg::List(vec![])).unwrap_err().kind(),
        ErrorKind::Disconnected
    );
}

#[test]
fn dropping_every_handle_of_an_end_disconnects() {
    let (a, b) = pipe::<u32>().unwrap();
    a.send(&1).unwrap();
    drop(a);
    assert_eq!(b.recv().unwrap(), 1);
    let t = Instant::now();
    assert_eq!(b.recv().unwrap_err().kind(), ErrorKind::Disconnected);
    assert!(t.elapsed() < LONG);
}

#[test]
fn sender_and_receiver_processes() {
    run(async {
        let ex = Executor::new(2).await.unwrap();
        let (parent_conn, child_conn) = pipe::<Msg>().unwrap();
        let s = ex.submit(sender, parent_conn);
        let r = ex.submit(receiver, child_conn);
        assert_eq!(
            r.await.unwrap(),
            vec![
                Msg::Text("Hello from sender".into()),
                Msg::List(vec![1, 2, 3])
            ]
        );
        assert_eq!(s.await.unwrap(), Msg::Text("Thanks!".into()));
        ex.shutdown().await;
    });
}

#[test]
fn ping_pong_with_a_worker_and_async_twins() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let (here, there) = pipe::<u64>().unwrap();
        let h = ex.submit(echo_n, (there, 200));
        for i in 0..100 {
            here.send(&i).unwrap();
            assert_eq!(here.recv().unwrap(), i + 1);
        }
        for i in 0..100 {
            here.send_async(&i).await.unwrap();
            assert_eq!(here.recv_async().await.unwrap(), i + 1);
        }
        h.await.unwrap();
        // The worker's handle is gone with its task: the end is disconnected.
        let e = tokio::time::timeout(LONG, here.recv_async()).await.unwrap();
        assert_eq!(e.unwrap_err().kind(), ErrorKind::Disconnected);
        ex.shutdown().await;
    });
}

#[test]
fn data_sent_before_the_peer_left_is_delivered() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let (here, there) = pipe::<u64>().unwrap();
        ex.submit(send_and_return, there).await.unwrap();
        assert_eq!(here.recv().unwrap(), 5);
        assert_eq!(here.recv().unwrap_err().kind(), ErrorKind::Disconnected);
        ex.shutdown().await;
    });
}

#[test]
fn a_killed_peer_gives_disconnected_not_a_hang() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let (here, there) = pipe::<u64>().unwrap();
        let h = ex.submit(report_then_hang, there);
        let pid = tokio::time::timeout(LONG, here.recv_async())
            .await
            .unwrap()
            .unwrap() as u32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        assert!(matches!(h.await, Err(TaskError::WorkerDied { .. })));
        // Blocking recv and poll both notice, within a bounded time.
        let here2 = here.clone();
        let r = tokio::task::spawn_blocking(move || here2.recv());
        let r = tokio::time::timeout(LONG, r).await.unwrap().unwrap();
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Disconnected);
        assert!(here.poll(Some(LONG)).unwrap());
        assert!(wait_gone(&[pid], LONG));
        ex.shutdown().await;
    });
}
