//! The Manager (API.md §7, §9): proxies of a server process used from the
//! program, from `Process` children of every start method and from pool
//! workers; the server's end with its `Manager`; nothing left behind.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{gone, mproc_files, wait_gone, LIMIT};
use mproc::prelude::*;

#[mproc::task]
fn fill(d: DictProxy<u32, u32>, l: ListProxy<u32>, base: u32, n: u32) {
    for i in 0..n {
        d.insert(base + i, (base + i) * 10).unwrap();
    }
    l.push(base).unwrap();
}

#[mproc::task]
fn bump(v: ValueProxy<String>, q: QueueProxy<u64>, x: u64) -> u64 {
    q.put(x * 2).unwrap();
    v.set(format!("seen {x}")).unwrap();
    x
}

fn server_gone(pid: u32) {
    assert!(
        wait_gone(&[pid], Duration::from_secs(5)),
        "the manager's server {pid} is still alive"
    );
}

#[test]
fn dict_list_queue_and_value_from_the_program() {
    let before = mproc_files();
    let m = Manager::start().unwrap();
    let pid = m.server_pid().unwrap();
    let d: DictProxy<u32, u32> = m.dict().unwrap();
    assert_eq!(d.insert(1, 10).unwrap(), None);
    assert_eq!(d.insert(1, 11).unwrap(), Some(10));
    assert_eq!(d.get(&1).unwrap(), Some(11));
    assert_eq!(d.get(&2).unwrap(), None);
    assert!(d.contains_key(&1).unwrap());
    assert_eq!(d.len().unwrap(), 1);
    assert_eq!(d.to_hashmap().unwrap(), HashMap::from([(1, 11)]));
    assert_eq!(d.remove(&1).unwrap(), Some(11));
    assert!(d.is_empty().unwrap());

    let l: ListProxy<String> = m.list().unwrap();
    l.push("a".into()).unwrap();
    l.push("b".into()).unwrap();
    assert_eq!(l.get(1).unwrap().as_deref(), Some("b"));
    assert_eq!(l.get(2).unwrap(), None);
    l.set(0, "z".into()).unwrap();
    assert_eq!(
        l.set(5, "x".into()).unwrap_err().kind(),
        ErrorKind::Protocol
    );
    assert_eq!(l.to_vec().unwrap(), vec!["z".to_string(), "b".into()]);
    assert_eq!(l.pop().unwrap().as_deref(), Some("b"));
    assert_eq!(l.len().unwrap(), 1);

    let q: QueueProxy<u8> = m.queue().unwrap();
    q.put(7).unwrap();
    assert_eq!(q.len().unwrap(), 1);
    assert_eq!(q.get().unwrap(), 7);
    let t = Instant::now();
    let e = q.get_timeout(Duration::from_millis(100)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Queue);
    assert!(t.elapsed() >= Duration::from_millis(90));

    let v = m.value(vec![1u8, 2]).unwrap();
    assert_eq!(v.get().unwrap(), vec![1, 2]);
    v.set(vec![]).unwrap();
    assert_eq!(v.get().unwrap(), Vec::<u8>::new());

    m.shutdown().unwrap();
    server_gone(pid);
    assert_eq!(d.len().unwrap_err().kind(), ErrorKind::Disconnected);
    assert_eq!(mproc_files(), before);
}

#[test]
fn proxies_reach_the_same_objects_from_processes_of_every_start_method() {
    for method in [
        StartMethod::Spawn,
        StartMethod::Fork,
        StartMethod::Forkserver,
    ] {
        let m = Manager::start_with(method).unwrap();
        let d: DictProxy<u32, u32> = m.dict().unwrap();
        let l: ListProxy<u32> = m.list().unwrap();
        let ps: Vec<_> = (0..4u32)
            .map(|i| {
                Process::new(fill, (d.clone(), l.clone(), i * 100, 3))
                    .start_method(method)
                    .start()
                    .unwrap()
            })
            .collect();
        for p in &ps {
            assert!(p.join_timeout(LIMIT).unwrap(), "{method:?}: child hung");
            assert_eq!(p.exitcode(), Some(0), "{method:?}");
        }
        assert_eq!(d.len().unwrap(), 12, "{method:?}");
        assert_eq!(d.get(&301).unwrap(), Some(3010));
        let mut bases = l.to_vec().unwrap();
        bases.sort();
        assert_eq!(bases, vec![0, 100, 200, 300]);
        let pid = m.server_pid().unwrap();
        drop(m);
        server_gone(pid);
    }
}

#[test]
fn eight_processes_hammering_one_dict_lose_no_update() {
    let m = Manager::start().unwrap();
    let d: DictProxy<u32, u32> = m.dict().unwrap();
    let l: ListProxy<u32> = m.list().unwrap();
    let ps: Vec<_> = (0..8u32)
        .map(|i| {
            Process::new(fill, (d.clone(), l.clone(), i * 1000, 500))
                .start()
                .unwrap()
        })
        .collect();
    for p in &ps {
        assert!(p.join_timeout(LIMIT).unwrap());
        assert_eq!(p.exitcode(), Some(0));
    }
    assert_eq!(d.len().unwrap(), 8 * 500);
    let all = d.to_hashmap().unwrap();
    for i in 0..8u32 {
        for j in 0..500 {
            assert_eq!(all.get(&(i * 1000 + j)), Some(&((i * 1000 + j) * 10)));
        }
    }
    assert_eq!(l.len().unwrap(), 8);
}

#[test]
fn proxies_work_in_pool_workers() {
    let m = Manager::start().unwrap();
    let v = m.value(String::new()).unwrap();
    let q: QueueProxy<u64> = m.queue().unwrap();
    let pool = Pool::new(2).unwrap();
    let args: Vec<_> = (1..=6u64).map(|x| (v.clone(), q.clone(), x)).collect();
    let got: Vec<u64> = pool.starmap(bump, args).unwrap();
    assert_eq!(got, vec![1, 2, 3, 4, 5, 6]);
    let mut doubled: Vec<u64> = (0..6)
        .map(|_| q.get_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    doubled.sort();
    assert_eq!(doubled, vec![2, 4, 6, 8, 10, 12]);
    assert!(v.get().unwrap().starts_with("seen "));
    let pids = pool.worker_pids();
    pool.terminate();
    assert!(wait_gone(&pids, Duration::from_secs(5)));
}

#[test]
fn a_proxy_of_a_killed_server_fails_promptly() {
    let m = Manager::start().unwrap();
    let d: DictProxy<u32, u32> = m.dict().unwrap();
    let q: QueueProxy<u32> = m.queue().unwrap();
    d.insert(1, 1).unwrap();
    let pid = m.server_pid().unwrap();
    // A blocked get on another thread must end too.
    let q2 = q.clone();
    let waiter = std::thread::spawn(move || q2.get().map_err(|e| e.kind()));
    std::thread::sleep(Duration::from_millis(100));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // A signal is delivered asynchronously: wait until the server is gone
    // (a zombie counts), then every call must fail at once.
    assert!(wait_gone(&[pid], Duration::from_secs(5)));
    let t = Instant::now();
    assert_eq!(d.get(&1).unwrap_err().kind(), ErrorKind::Disconnected);
    assert_eq!(d.insert(2, 2).unwrap_err().kind(), ErrorKind::Disconnected);
    assert_eq!(q.put(1).unwrap_err().kind(), ErrorKind::Disconnected);
    assert!(t.elapsed() < Duration::from_secs(2));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(waiter.join().unwrap()));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        Err(ErrorKind::Disconnected)
    );
    drop(m);
    assert!(gone(pid));
}

const ROLE: &str = "MPROC_TEST_MANAGER_VICTIM";

/// Runs only when re-executed by `the_server_dies_with_a_killed_program`:
/// starts managers with each start method, prints their servers' pids and
/// waits to be killed.
#[test]
#[ignore = "helper process for the_server_dies_with_a_killed_program"]
fn manager_victim() {
    if std::env::var_os(ROLE).is_none() {
        return;
    }
    let ms: Vec<Manager> = [
        StartMethod::Spawn,
        StartMethod::Fork,
        StartMethod::Forkserver,
    ]
    .into_iter()
    .map(|m| Manager::start_with(m).unwrap())
    .collect();
    for m in &ms {
        let d: DictProxy<u8, u8> = m.dict().unwrap();
        d.insert(1, 1).unwrap();
    }
    let pids: Vec<String> = ms
        .iter()
        .map(|m| m.server_pid().unwrap().to_string())
        .collect();
    println!("PIDS {}", pids.join(" "));
    std::thread::sleep(LIMIT);
}

#[test]
fn the_server_dies_with_a_killed_program() {
    let before = mproc_files();
    let (mut child, pids) = common::start_victim("manager_victim", ROLE, "1");
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|p| !gone(*p)));
    for p in &pids {
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap();
        assert!(!comm.starts_with("mproc-"), "server named {comm:?}");
    }
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    assert!(
        wait_gone(&pids, Duration::from_secs(2)),
        "a manager's server outlived its killed program"
    );
    assert_eq!(mproc_files(), before);
}

#[test]
fn manager_and_proxies_are_send_and_sync() {
    fn check<T: Send + Sync + Clone + serde::Serialize + serde::de::DeserializeOwned>() {}
    check::<DictProxy<String, Vec<u8>>>();
    check::<ListProxy<String>>();
    check::<QueueProxy<u64>>();
    check::<ValueProxy<String>>();
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Manager>();
}
