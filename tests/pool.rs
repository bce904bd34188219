//! The blocking `Pool` contract (API.md §4), against real worker processes.
//! No async runtime is involved unless a test says so.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::wait_gone;
use mproc::prelude::*;

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[mproc::task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[mproc::task]
fn pid_of(_x: u64) -> u32 {
    std::process::id()
}

#[mproc::task]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[mproc::task]
fn crash_at(x: u64) -> u64 {
    if x == 50 {
        std::process::abort();
    }
    x
}

#[mproc::task]
fn fail_odd(x: u64) -> Result<u64, String> {
    if x % 2 == 1 {
        Err(format!("{x} is odd"))
    } else {
        Ok(x)
    }
}

#[mproc::task]
fn boom(x: u64) -> u64 {
    panic!("boom {x}")
}

static INITIALIZED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[mproc::task]
fn init() {
    INITIALIZED.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[mproc::task]
fn initialized(_x: u64) -> bool {
    INITIALIZED.load(std::sync::atomic::Ordering::SeqCst)
}

fn pool(n: usize) -> Pool {
    Pool::new(n).expect("pool starts")
}

fn close_and_check(pool: Pool) {
    let pids = pool.worker_pids();
    pool.close();
    pool.join();
    assert!(pool.worker_pids().is_empty());
    assert!(
        wait_gone(&pids, Duration::from_secs(5)),
        "workers left: {pids:?}"
    );
}

#[test]
fn every_method_gives_the_python_results() {
    let pool = pool(2);
    assert_eq!(
        pool.map(square, 0..10).unwrap(),
        vec![0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
    );
    assert_eq!(
        pool.starmap(add, vec![(1, 2), (3, 4), (5, 6)]).unwrap(),
        vec![3, 7, 11]
    );
    assert_eq!(pool.apply(square, 10), Ok(100));
    let r = pool.apply_async(square, 10);
    assert_eq!(r.get(), Ok(100));
    let m = pool.map_async(square, 0..5);
    assert_eq!(m.get(), Ok(vec![0, 1, 4, 9, 16]));
    let v: Vec<u64> = pool.imap(square, 0..10).map(Result::unwrap).collect();
    assert_eq!(v, vec![0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    let mut u: Vec<u64> = pool
        .imap_unordered(square, 0..10)
        .map(Result::unwrap)
        .collect();
    u.sort_unstable();
    assert_eq!(u, v);
    let fast = pool
        .map_with(square, 0..100_000u64, MapOptions::default().chunksize(1000))
        .unwrap();
    assert_eq!(fast[99_999], 99_999 * 99_999);
    assert!(pool.map(square, Vec::new()).unwrap().is_empty());
    close_and_check(pool);
}

#[test]
fn map_chunks_automatically() {
    // One task per worker life: the number of distinct workers is the number
    // of chunks, which Python's rule puts at about 4 per worker (with
    // chunks of at most 2 048 items).
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let pids: HashSet<u32> = pool.map(pid_of, 0..100).unwrap().into_iter().collect();
    assert_eq!(
        pids.len(),
        8,
        "ceil(100 / (4 × 2)) = 13 per chunk → 8 chunks"
    );
    // A long map: chunks of at most 2 048 items, so more than 4 per worker.
    let pids: HashSet<u32> = pool.map(pid_of, 0..40_000).unwrap().into_iter().collect();
    assert_eq!(pids.len(), 20, "ceil(40 000 / 2 048) = 20 chunks");
    close_and_check(pool);
}

#[test]
fn errors_are_per_item_and_map_returns_the_first() {
    let pool = pool(2);
    let r = pool.map(fail_odd, 0..6).unwrap();
    assert_eq!(r[0], Ok(0));
    assert_eq!(r[1], Err("1 is odd".to_string()));
    match pool.map(boom, 0..4) {
        Err(TaskError::Panicked { message }) => assert!(message.starts_with("boom"), "{message}"),
        other => panic!("expected a panic, got {other:?}"),
    }
    let items: Vec<_> = pool.imap(boom, 0..3).collect();
    assert!(items
        .iter()
        .all(|r| matches!(r, Err(TaskError::Panicked { .. }))));
    close_and_check(pool);
}

#[test]
fn async_result_waits_times_out_and_stays_retrievable() {
    let pool = pool(1);
    let r = pool.apply_async(sleep_ms, 300);
    assert!(!r.ready());
    assert_eq!(r.successful(), None);
    assert_eq!(
        r.get_timeout(Duration::from_millis(10)),
        Err(TaskError::TimedOut)
    );
    assert!(!r.wait_timeout(Duration::from_millis(10)));
    assert_eq!(
        r.get_timeout(Duration::from_secs(30)),
        Ok(300),
        "still retrievable after a timeout"
    );
    assert_eq!(
        r.get_timeout(Duration::from_millis(1)),
        Ok(300),
        "and again"
    );
    assert!(r.ready());
    assert_eq!(r.successful(), Some(true));
    assert_eq!(r.get(), Ok(300));

    let bad = pool.apply_async(boom, 1);
    bad.wait();
    assert_eq!(bad.successful(), Some(false));
    assert!(matches!(bad.get(), Err(TaskError::Panicked { .. })));
    let m = pool.map_async(fail_odd, 0..4);
    assert!(m.wait_timeout(Duration::from_secs(30)));
    assert_eq!(
        m.successful(),
        Some(true),
        "Err values are results, not failures"
    );
    close_and_check(pool);
}

#[test]
fn a_worker_crash_in_the_middle_of_map_fails_only_its_chunk() {
    let pool = pool(2);
    match pool.map(crash_at, 0..100) {
        Err(TaskError::WorkerDied { exit }) => assert_eq!(exit.signal, Some(libc::SIGABRT)),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    // imap sends one item per message: only the crashing item fails.
    let items: Vec<Result<u64, TaskError>> = pool.imap(crash_at, 0..100).collect();
    for (i, r) in items.iter().enumerate() {
        if i == 50 {
            assert!(matches!(r, Err(TaskError::WorkerDied { .. })), "{r:?}");
        } else {
            assert_eq!(*r, Ok(i as u64));
        }
    }
    assert_eq!(
        pool.map(square, 0..10).unwrap()[9],
        81,
        "the pool keeps serving"
    );
    close_and_check(pool);
}

/// Where `count_runs` records its runs: a directory named after the
/// program, which is the parent of every worker of this test.
fn runs_dir(program: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("mproc-gather-runs-{program}"))
}

/// Counts its runs of `x` in `runs_dir`, takes a millisecond (a long task:
/// its answer is held back only because it is part of a map), and kills
/// its worker on the first run of item 5.
#[mproc::task]
fn count_runs(x: u64) -> u64 {
    use std::io::Write;
    let path = runs_dir(std::os::unix::process::parent_id()).join(x.to_string());
    let first = !path.exists();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"+"))
        .expect("the run is recorded");
    std::thread::sleep(Duration::from_millis(1));
    if x == 5 && first {
        std::process::abort();
    }
    x * 10
}

#[test]
fn answers_held_back_in_a_map_survive_their_worker() {
    // One worker holds the whole map and sends its answers after its last
    // chunk; it dies in the sixth. The five before have finished: they are
    // neither lost nor run again, only the sixth runs again (one retry),
    // and the two behind it, never started, run once elsewhere.
    let dir = runs_dir(std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).expect("runs dir");
    let pool = pool(1);
    let out = pool.map_with(
        count_runs,
        0..8,
        MapOptions::default().chunksize(1).retries(1),
    );
    let runs: Vec<usize> = (0..8)
        .map(|x| std::fs::read(dir.join(x.to_string())).map_or(0, |r| r.len()))
        .collect();
    std::fs::remove_dir_all(&dir).expect("runs dir removed");
    assert_eq!(out, Ok((0..8).map(|x| x * 10).collect::<Vec<u64>>()));
    assert_eq!(runs, [1, 1, 1, 1, 1, 2, 1, 1], "runs per item");
    close_and_check(pool);
}

#[test]
fn imap_over_an_endless_iterator_consumed_partly() {
    let pool = pool(2);
    let first: Vec<u64> = pool
        .imap(square, 0u64..)
        .take(1000)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first[999], 999 * 999);
    let some: Vec<u64> = pool
        .imap_unordered_with(square, 0u64.., MapOptions::default().chunksize(10))
        .take(500)
        .map(Result::unwrap)
        .collect();
    assert_eq!(some.len(), 500);
    assert_eq!(
        pool.apply(square, 7),
        Ok(49),
        "abandoned imaps leave the pool usable"
    );
    close_and_check(pool);
}

#[test]
fn initializer_runs_in_every_worker_also_replacements() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(init, ())
        .build()
        .unwrap();
    assert!(pool.map(initialized, 0..20).unwrap().into_iter().all(|b| b));
    assert!(pool.map(crash_at, 0..100).is_err());
    assert!(pool.map(initialized, 0..20).unwrap().into_iter().all(|b| b));
    assert!(
        !INITIALIZED.load(std::sync::atomic::Ordering::SeqCst),
        "never in the parent"
    );
    close_and_check(pool);
}

#[test]
fn work_after_close_fails_and_never_hangs() {
    let pool = pool(2);
    let pending = pool.apply_async(sleep_ms, 100);
    pool.close();
    assert_eq!(pool.apply(square, 2), Err(TaskError::Shutdown));
    assert_eq!(pool.map(square, 0..3), Err(TaskError::Shutdown));
    assert!(matches!(
        pool.imap(square, 0..3).next(),
        Some(Err(TaskError::Shutdown))
    ));
    assert_eq!(
        pending.get(),
        Ok(100),
        "submitted work still runs after close"
    );
    let pids = pool.worker_pids();
    pool.join();
    assert!(wait_gone(&pids, Duration::from_secs(5)));
}

#[test]
fn terminate_and_drop_stop_at_once_and_resolve_pending_to_shutdown() {
    let pool = pool(2);
    let pids = pool.worker_pids();
    let pending = pool.apply_async(sleep_ms, 20_000);
    let many = pool.map_async(sleep_ms, vec![20_000; 4]);
    let mut lazy = pool.imap(sleep_ms, vec![20_000u64; 4]);
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    pool.terminate();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(pending.get(), Err(TaskError::Shutdown));
    assert_eq!(many.get(), Err(TaskError::Shutdown));
    assert_eq!(lazy.next(), Some(Err(TaskError::Shutdown)));
    assert!(wait_gone(&pids, Duration::from_secs(5)));

    let pool2 = Pool::new(1).unwrap();
    let pids = pool2.worker_pids();
    let pending = pool2.apply_async(sleep_ms, 20_000);
    drop(pool2);
    assert!(pids.iter().all(|p| common::gone(*p)), "drop is terminate");
    assert_eq!(pending.get(), Err(TaskError::Shutdown));
}

#[test]
fn usable_from_a_blocking_thread_of_a_tokio_program() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let v = rt.block_on(async {
        let f = tokio::task::spawn_blocking(|| {
            let pool = Pool::new(2).unwrap();
            let v = pool.map(square, 0..100).unwrap();
            close_and_check(pool);
            v
        });
        tokio::time::timeout(common::LIMIT, f)
            .await
            .unwrap()
            .unwrap()
    });
    assert_eq!(v[10], 100);
}

#[test]
fn usable_from_many_threads_at_once() {
    let pool = std::sync::Arc::new(pool(2));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| pool.apply(square, t * 100 + i).unwrap())
                    .sum::<u64>()
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let want: u64 = (0..4u64)
        .flat_map(|t| (0..50).map(move |i| (t * 100 + i).pow(2)))
        .sum();
    assert_eq!(total, want);
    let pool = std::sync::Arc::try_unwrap(pool).unwrap();
    close_and_check(pool);
}

const ROLE: &str = "MPROC_TEST_ROLE";

/// Runs only when re-executed by `progress_is_silent_without_a_terminal`.
#[test]
#[ignore = "helper process for progress_is_silent_without_a_terminal"]
fn progress_child() {
    if std::env::var_os(ROLE).is_none() {
        return;
    }
    let pool = pool(2);
    let v = pool
        .map_with(
            sleep_ms,
            vec![1; 200],
            MapOptions::default().chunksize(1).progress(true),
        )
        .unwrap();
    assert_eq!(v.len(), 200);
}

#[test]
fn progress_is_silent_without_a_terminal() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "progress_child",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE, "child")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ETA") && !stderr.contains('█'),
        "progress drawn to a pipe: {stderr}"
    );
}

/// CPU time (user + system) a process has used so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at
    // "state"; utime and stime are the 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum()
}

const IDLE_ROLE: &str = "MPROC_TEST_IDLE";

/// Helper of `an_idle_pool_burns_no_cpu`, alone in its process so the
/// process's CPU time is the pool's: after a round-trip burst (which
/// teaches every spinner to spin), a pool of each transport sits idle for
/// 1.5 s; its parent and workers together must use well under a tenth of
/// that.
#[test]
#[ignore = "run by an_idle_pool_burns_no_cpu in its own process"]
fn idle_pool_cpu() {
    if std::env::var(IDLE_ROLE).is_err() {
        return;
    }
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    let hz = 100;
    for kind in [
        TransportKind::ShmRing,
        TransportKind::UnixSocket,
        TransportKind::Pipe,
    ] {
        let pool = Pool::builder()
            .processes(2)
            .transport(kind)
            .build()
            .unwrap();
        for i in 0..300 {
            assert_eq!(pool.apply(square, i), Ok(i * i));
        }
        let mut pids = pool.worker_pids();
        pids.push(std::process::id());
        // Let every spinner give up before measuring.
        std::thread::sleep(Duration::from_millis(100));
        let before: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
        std::thread::sleep(Duration::from_millis(1500));
        let after: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
        let used_ms = (after - before) * 1000 / hz;
        println!("IDLE {kind:?} {used_ms} ms");
        assert!(
            used_ms < 150,
            "an idle {kind:?} pool used {used_ms} ms of CPU in 1.5 s"
        );
        // Still answers at once after the idle spell.
        assert_eq!(pool.apply(square, 7), Ok(49));
    }
}

#[test]
fn an_idle_pool_burns_no_cpu() {
    let out = common::run_self("idle_pool_cpu", &[(IDLE_ROLE, "1")]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("IDLE ").count(), 3, "{text}");
}
