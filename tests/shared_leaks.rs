//! Shared objects leave nothing behind (API.md §6): after use by workers, no
//! descriptor stays open, and no file appears in `/dev/shm` or the temp dir —
//! also when the whole program is SIGKILLed while workers hold the objects.
//! One real test per binary, so descriptor counts are exact.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run, wait_gone};
use mproc::prelude::*;

const LONG: Duration = Duration::from_secs(20);
const HELPER_ENV: &str = "MPROC_SHARED_LEAKS_HELPER";

#[mproc::task]
fn use_everything(
    q: Queue<u32>,
    l: Lock,
    v: Value<i32>,
    a: Array<u8>,
    c: Connection<u32>,
    e: Event,
) -> u32 {
    let x = q.get_timeout(LONG).unwrap();
    let _g = l.acquire();
    *v.get_lock() += 1;
    a.set(0, 9);
    c.send(&x).unwrap();
    e.set();
    std::process::id()
}

#[mproc::task]
fn hold_and_sleep(q: Queue<u32>, l: Lock, c: Connection<u32>) {
    let _g = l.acquire();
    q.put(std::process::id()).unwrap();
    let _ = c.send(&1);
    std::thread::sleep(Duration::from_secs(60));
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn files() -> Vec<String> {
    let mut v = Vec::new();
    for dir in [std::env::temp_dir(), "/dev/shm".into()] {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                v.push(format!(
                    "{}/{}",
                    dir.display(),
                    e.file_name().to_string_lossy()
                ));
            }
        }
    }
    v.sort();
    v
}

/// Not a test of its own: the body of the program that the leak test runs
/// and SIGKILLs (it does nothing unless the helper variable is set).
#[test]
fn helper_program_killed_by_the_leak_test() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    run(async {
        let ex = Executor::new(2).await.unwrap();
        let q: Queue<u32> = Queue::new().unwrap();
        let l = Lock::new().unwrap();
        let (here, there) = pipe::<u32>().unwrap();
        let _h1 = ex.submit(hold_and_sleep, (q.clone(), l.clone(), there.clone()));
        let _h2 = ex.submit(hold_and_sleep, (q.clone(), l.clone(), there));
        let first = q.get_timeout(LONG).unwrap();
        here.recv().unwrap();
        let mut pids = ex.worker_pids();
        pids.push(first);
        let line: Vec<String> = pids.iter().map(u32::to_string).collect();
        println!("PIDS {}", line.join(" "));
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

#[test]
fn shared_objects_leave_no_descriptor_or_file_behind() {
    if std::env::var_os(HELPER_ENV).is_some() {
        return;
    }
    run(async {
        // Warm up: runtime threads, the executor's threads, the keep-alive.
        let ex = Executor::new(2).await.unwrap();
        let q: Queue<u32> = Queue::new().unwrap();
        q.put(1).unwrap();
        let (a, b) = pipe::<u32>().unwrap();
        ex.submit(
            use_everything,
            (
                q.clone(),
                Lock::new().unwrap(),
                Value::new(0).unwrap(),
                Array::zeroed(1).unwrap(),
                b,
                Event::new().unwrap(),
            ),
        )
        .await
        .unwrap();
        drop((q, a));
        ex.shutdown().await;
        settle_fds(usize::MAX).await;
        let fds = open_fds();
        let before = files();

        let ex = Executor::new(2).await.unwrap();
        for round in 0..5u32 {
            let q: Queue<u32> = Queue::new().unwrap();
            let l = Lock::new().unwrap();
            let v = Value::new(0i32).unwrap();
            let arr: Array<u8> = Array::zeroed(16).unwrap();
            let (here, there) = pipe::<u32>().unwrap();
            let e = Event::new().unwrap();
            q.put(round).unwrap();
            q.put(round + 1).unwrap();
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    ex.submit(
                        use_everything,
                        (
                            q.clone(),
                            l.clone(),
                            v.clone(),
                            arr.clone(),
                            there.clone(),
                            e.clone(),
                        ),
                    )
                })
                .collect();
            drop(there);
            for h in hs {
                h.await.unwrap();
            }
            assert_eq!(v.load(), 2);
            assert_eq!(arr.get(0), 9);
            assert!(e.is_set());
            let mut got = vec![here.recv().unwrap(), here.recv().unwrap()];
            got.sort();
            assert_eq!(got, vec![round, round + 1]);
            assert_eq!(here.recv().unwrap_err().kind(), ErrorKind::Disconnected);
        }
        let pids = ex.worker_pids();
        ex.shutdown().await;
        assert!(wait_gone(&pids, LONG));
        settle_fds(fds).await;
        assert_eq!(open_fds(), fds, "descriptors leaked");
        assert_eq!(files(), before, "files left in the temp dir or /dev/shm");

        // The whole program SIGKILLed while its workers hold shared objects.
        let before = files();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_program_killed_by_the_leak_test",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .find_map(|l| l.split_once("PIDS ").map(|(_, p)| p.to_string()))
        });
        let line = tokio::time::timeout(LONG, line).await.unwrap().unwrap();
        let line = line.expect("helper reported its workers");
        let mut pids: Vec<u32> = line.split(' ').map(|p| p.parse().unwrap()).collect();
        pids.push(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(wait_gone(&pids, LONG), "processes left behind: {pids:?}");
        assert_eq!(files(), before, "files left after SIGKILL");
    });
}

/// Waits (bounded) until the descriptor count drops to `target`, or stops
/// falling: threads that hold handles in flight finish on their own.
async fn settle_fds(target: usize) {
    let end = Instant::now() + LONG;
    let mut last = open_fds();
    let mut stable = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = open_fds();
        if now <= target {
            return;
        }
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
        if target == usize::MAX && stable > 10 {
            return;
        }
    }
}
