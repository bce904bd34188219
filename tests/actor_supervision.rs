//! Actors that fail, are restarted, stopped, or outlived (API.md §8
//! "Actors", §9): calls in flight to a dead actor fail with `WorkerDied`
//! and how it ended; `max_restarts(n)` brings it back, constructor and all,
//! up to n times; `stop` ends it cleanly; the executor's end stops every
//! actor; a killed program leaves none behind; panics and deaths meant to
//! happen print nothing; nothing is leaked.

mod common;

use std::time::{Duration, Instant};

use common::{gone, mproc_files, run, run_self, wait_gone, LIMIT};
use mproc::prelude::*;

#[mproc::actor]
struct Mortal {
    n: u64,
}

#[mproc::actor]
impl Mortal {
    fn new(start: u64) -> Self {
        Mortal { n: start }
    }
    fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
    fn get(&self) -> u64 {
        self.n
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
    fn exit(&self, code: i32) -> u64 {
        std::process::exit(code)
    }
    fn abort(&self) -> u64 {
        std::process::abort()
    }
    fn nap(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        self.n
    }
    fn boom(&self, message: String) -> u64 {
        panic!("{message}")
    }
    /// Holds the actor until `gate` is set: calls made meanwhile are sent
    /// to this instance and wait behind this one.
    fn hold(&self, gate: Event) -> u64 {
        assert!(gate.wait_timeout(LIMIT), "the gate never opened");
        self.n
    }
    /// Says it started, then naps `ms`.
    fn nap_started(&self, started: Event, ms: u64) -> u64 {
        started.set();
        std::thread::sleep(Duration::from_millis(ms));
        self.n
    }
}

/// An actor whose constructor panics.
#[mproc::actor]
struct Doomed;

#[mproc::actor]
impl Doomed {
    fn new(message: String) -> Self {
        panic!("{message}")
    }
    fn anything(&self) {}
}

fn died(code: Option<i32>, signal: Option<i32>) -> TaskError {
    TaskError::WorkerDied {
        exit: ExitInfo { code, signal },
    }
}

fn kill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn a_dead_actor_fails_the_calls_in_flight_and_every_later_call() {
    run(async {
        let ex = Executor::new(1).await.unwrap();

        // An exit: the call that made it, and those sent after it.
        let a = Mortal::spawn(&ex, 0).await.unwrap();
        let pid_a = a.pid().await.unwrap();
        let fatal = a.exit(3);
        let behind: Vec<_> = (0..5).map(|_| a.incr(1)).collect();
        assert_eq!(fatal.await, Err(died(Some(3), None)));
        for call in behind {
            assert_eq!(call.await, Err(died(Some(3), None)));
        }
        // Later calls: the same, for good.
        for _ in 0..3 {
            assert_eq!(a.get().await, Err(died(Some(3), None)));
        }
        assert_eq!(a.restarts(), 0);

        // A signal: abort, and SIGKILL from outside during a long call.
        let b = Mortal::spawn(&ex, 0).await.unwrap();
        let pid_b = b.pid().await.unwrap();
        assert_eq!(b.abort().await, Err(died(None, Some(libc::SIGABRT))));
        assert_eq!(b.get().await, Err(died(None, Some(libc::SIGABRT))));
        let c = Mortal::spawn(&ex, 0).await.unwrap();
        let pid_c = c.pid().await.unwrap();
        let long = c.nap(60_000);
        kill(pid_c);
        assert_eq!(long.await, Err(died(None, Some(libc::SIGKILL))));
        assert_eq!(c.incr(1).await, Err(died(None, Some(libc::SIGKILL))));

        // Other references learn the same: a task's, and a clone's.
        assert_eq!(
            ex.submit(get_from_task, a.clone()).await,
            Ok(Err(died(Some(3), None)))
        );
        assert_eq!(b.clone().get().await, Err(died(None, Some(libc::SIGABRT))));
        // Stopping a dead actor is no error.
        a.stop().await.unwrap();
        assert!(wait_gone(&[pid_a, pid_b, pid_c], Duration::from_secs(5)));
    });
}

#[mproc::task]
async fn get_from_task(m: ActorRef<Mortal>) -> Result<u64, TaskError> {
    m.get().await
}

#[mproc::task]
async fn get_and_restarts(m: ActorRef<Mortal>) -> (u64, u32) {
    (m.get().await.expect("get"), m.restarts())
}

#[test]
fn max_restarts_starts_the_actor_again_until_the_nth_restart_dies() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let m = Mortal::spawn_with(&ex, 5, ActorOptions::default().max_restarts(2))
            .await
            .unwrap();
        let id = m.id().clone();
        assert_eq!(m.incr(10).await, Ok(15));
        let pid0 = m.pid().await.unwrap();

        // Death 1: the calls in flight fail with its exit. (The gate keeps
        // the instance alive until both are sent to it; a call made once the
        // death is noticed would go to the next instance.)
        let gate = Event::new().unwrap();
        let held = m.hold(gate.clone());
        let fatal = m.exit(7);
        let behind = m.incr(1);
        gate.set();
        // `hold` ran, but its reply may have been waiting to go out with
        // the next ones when the process died: replies leave in bursts.
        let h = held.await;
        assert!(h == Ok(15) || h == Err(died(Some(7), None)), "{h:?}");
        assert_eq!(fatal.await, Err(died(Some(7), None)));
        assert_eq!(behind.await, Err(died(Some(7), None)));
        // ... and later calls reach a new instance, built by the constructor
        // from the same arguments.
        assert_eq!(m.restarts(), 1);
        assert_eq!(m.get().await, Ok(5));
        let pid1 = m.pid().await.unwrap();
        assert_ne!(pid1, pid0);
        assert!(wait_gone(&[pid0], Duration::from_secs(5)));
        assert_eq!(m.id(), &id, "a restarted actor keeps its address");
        assert_eq!(m.incr(1).await, Ok(6));
        // A reference elsewhere reaches the new instance and learns the
        // count when it connects.
        assert_eq!(ex.submit(get_and_restarts, m.clone()).await, Ok((6, 1)));

        // Death 2, from outside during a call.
        let long = m.nap(60_000);
        kill(pid1);
        assert_eq!(long.await, Err(died(None, Some(libc::SIGKILL))));
        assert_eq!(m.restarts(), 2);
        assert_eq!(m.get().await, Ok(5));
        let pid2 = m.pid().await.unwrap();
        assert!(![pid0, pid1].contains(&pid2));

        // Death 3: no restart left. Every call fails like the last death.
        assert_eq!(m.abort().await, Err(died(None, Some(libc::SIGABRT))));
        for _ in 0..3 {
            assert_eq!(m.get().await, Err(died(None, Some(libc::SIGABRT))));
        }
        assert_eq!(
            ex.submit(get_from_task, m.clone()).await,
            Ok(Err(died(None, Some(libc::SIGABRT))))
        );
        assert_eq!(m.restarts(), 2);
        assert!(wait_gone(&[pid0, pid1, pid2], Duration::from_secs(5)));
    });
}

/// An actor whose constructor fails from its second run on: it counts its
/// starts in a Manager value given as its argument.
#[mproc::actor]
struct OneShot;

#[mproc::actor]
impl OneShot {
    fn new(starts: ValueProxy<u32>) -> Self {
        let n = starts.get().expect("get") + 1;
        starts.set(n).expect("set");
        assert!(n == 1, "start {n} refused on purpose");
        OneShot
    }
    fn exit(&self, code: i32) {
        std::process::exit(code)
    }
    fn ping(&self) -> bool {
        true
    }
}

#[test]
fn restarts_whose_constructor_fails_use_up_the_budget_and_calls_fail() {
    run(async {
        let m = Manager::start().unwrap();
        let starts = m.value(0u32).unwrap();
        let ex = Executor::new(1).await.unwrap();
        let a = OneShot::spawn_with(&ex, starts.clone(), ActorOptions::default().max_restarts(2))
            .await
            .unwrap();
        assert_eq!(a.exit(4).await, Err(died(Some(4), None)));
        // Both restarts ran the constructor, which refused; the actor is
        // then gone for good, and calls say it died.
        let later = a.ping().await;
        assert!(
            matches!(later, Err(TaskError::WorkerDied { .. })),
            "{later:?}"
        );
        assert_eq!(starts.get().unwrap(), 3);
        assert_eq!(a.restarts(), 2);
        drop(ex);
        m.shutdown().unwrap();
    });
}

#[test]
fn stop_lets_earlier_calls_finish_then_ends_the_actor_for_good() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        for restarts in [0, 3] {
            let m = Mortal::spawn_with(&ex, 0, ActorOptions::default().max_restarts(restarts))
                .await
                .unwrap();
            let pid = m.pid().await.unwrap();
            let before: Vec<_> = (0..50).map(|_| m.incr(1)).collect();
            m.stop().await.unwrap();
            // `stop` resolves once the process is gone.
            assert!(gone(pid), "actor {pid} still runs after stop");
            for (i, call) in before.into_iter().enumerate() {
                assert_eq!(call.await, Ok(i as u64 + 1));
            }
            // A clean exit, and no restart even when restarts are allowed.
            assert_eq!(m.get().await, Err(died(Some(0), None)));
            assert_eq!(m.incr(1).await, Err(died(Some(0), None)));
            assert_eq!(m.restarts(), 0);
            // Stopping again is no error.
            m.stop().await.unwrap();
        }
    });
}

#[test]
fn the_executors_end_stops_every_actor_and_later_calls_fail_with_shutdown() {
    run(async {
        // Dropped.
        let ex = Executor::new(1).await.unwrap();
        let a = Mortal::spawn(&ex, 1).await.unwrap();
        let b = Mortal::spawn_with(&ex, 2, ActorOptions::default().max_restarts(5))
            .await
            .unwrap();
        let pids = [a.pid().await.unwrap(), b.pid().await.unwrap()];
        // A call running when the executor goes finishes first.
        let started = Event::new().unwrap();
        let running = b.nap_started(started.clone(), 300);
        assert!(started.wait_timeout(LIMIT));
        drop(ex);
        assert!(wait_gone(&pids, Duration::from_secs(5)), "{pids:?}");
        assert_eq!(running.await, Ok(2));
        for m in [&a, &b] {
            assert_eq!(m.get().await, Err(TaskError::Shutdown));
            let e = m.stop().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Task);
            assert_eq!(e.task_error(), Some(&TaskError::Shutdown));
        }
        assert_eq!(b.restarts(), 0, "stopped, not restarted");

        // Shut down.
        let ex = Executor::new(1).await.unwrap();
        let c = Mortal::spawn(&ex, 3).await.unwrap();
        let pid = c.pid().await.unwrap();
        ex.shutdown().await;
        assert!(wait_gone(&[pid], Duration::from_secs(5)));
        assert_eq!(c.incr(1).await, Err(TaskError::Shutdown));
    });
}

#[test]
fn actors_run_under_every_start_method() {
    run(async {
        for method in [
            StartMethod::Spawn,
            StartMethod::Forkserver,
            StartMethod::Fork,
        ] {
            let ex = Executor::builder()
                .max_workers(1)
                .start_method(method)
                .build()
                .await
                .unwrap();
            let m = Mortal::spawn_with(&ex, 1, ActorOptions::default().max_restarts(1))
                .await
                .unwrap();
            assert_eq!(m.incr(1).await, Ok(2), "{method:?}");
            let pid0 = m.pid().await.unwrap();
            assert_eq!(m.exit(9).await, Err(died(Some(9), None)), "{method:?}");
            assert_eq!(m.get().await, Ok(1), "{method:?}: restarted");
            let pid1 = m.pid().await.unwrap();
            m.stop().await.unwrap();
            assert!(
                wait_gone(&[pid0, pid1], Duration::from_secs(5)),
                "{method:?}"
            );
        }
    });
}

// ----- helper processes ------------------------------------------------------

const ROLE: &str = "MPROC_TEST_ROLE";

fn role_is(role: &str) -> bool {
    std::env::var(ROLE).as_deref() == Ok(role)
}

/// The pids of this process's children now.
fn children() -> Vec<u32> {
    let mut v = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        v.extend(text.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
    }
    v.sort();
    v
}

/// Run by `a_killed_program_leaves_no_actor_behind`: actors of every start
/// method, one busy in a call and one with restarts left, then waits to be
/// killed.
#[test]
#[ignore = "helper process for a_killed_program_leaves_no_actor_behind"]
fn victim() {
    if !role_is("victim") {
        return;
    }
    run(async {
        let (mut keep, mut keep_ex, mut pids) = (Vec::new(), Vec::new(), Vec::new());
        for method in [
            StartMethod::Spawn,
            StartMethod::Forkserver,
            StartMethod::Fork,
        ] {
            let ex = Executor::builder()
                .max_workers(1)
                .start_method(method)
                .build()
                .await
                .unwrap();
            let busy = Mortal::spawn(&ex, 0).await.unwrap();
            let spare = Mortal::spawn_with(&ex, 0, ActorOptions::default().max_restarts(5))
                .await
                .unwrap();
            pids.push(busy.pid().await.unwrap());
            pids.push(spare.pid().await.unwrap());
            keep.push(busy.nap(60_000));
            keep.push(spare.nap(0));
            keep_ex.push(ex);
        }
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        println!("PIDS {}", pids.join(" "));
        tokio::time::sleep(Duration::from_secs(50)).await;
        drop((keep, keep_ex));
    });
}

#[test]
fn a_killed_program_leaves_no_actor_behind() {
    let (mut child, pids) = common::start_victim("victim", ROLE, "victim");
    assert_eq!(pids.len(), 6);
    assert!(pids.iter().all(|p| !gone(*p)));
    child.kill().unwrap(); // SIGKILL: no destructor, no exit handler runs
    child.wait().unwrap();
    assert!(
        wait_gone(&pids, Duration::from_secs(5)),
        "actors outlived their killed program: {:?}",
        pids.iter().filter(|p| !gone(**p)).collect::<Vec<_>>()
    );
}

/// Run by `failures_meant_to_happen_print_nothing`: a panicking method, a
/// panicking constructor, an abort and an exit, each checked; then checks
/// no child but the executor's worker is left.
#[test]
#[ignore = "helper process for failures_meant_to_happen_print_nothing"]
fn quiet_failures() {
    if !role_is("quiet") {
        return;
    }
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let workers = ex.worker_pids();
        let m = Mortal::spawn(&ex, 0).await.unwrap();
        assert_eq!(m.incr(4).await, Ok(4));
        match m.boom("on purpose".into()).await {
            Err(TaskError::Panicked { message }) => assert!(message.contains("on purpose")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            m.get().await,
            Ok(4),
            "a panic leaves the actor and its state"
        );
        let e = Doomed::spawn(&ex, "no way".to_string()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Task);
        assert!(e.to_string().contains("no way"), "{e}");
        let other = Mortal::spawn(&ex, 0).await.unwrap();
        assert_eq!(m.abort().await, Err(died(None, Some(libc::SIGABRT))));
        assert_eq!(other.exit(1).await, Err(died(Some(1), None)));
        // Every actor process, the failed one included, was reaped.
        let end = Instant::now() + Duration::from_secs(5);
        while children() != workers && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(children(), workers);
        println!("QUIET DONE");
    });
}

#[test]
fn failures_meant_to_happen_print_nothing() {
    let out = run_self("quiet_failures", &[(ROLE, "quiet")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("QUIET DONE"), "{stdout}");
    assert!(stderr.trim().is_empty(), "printed on stderr:\n{stderr}");
    assert!(!stdout.contains("panicked"), "{stdout}");
}

/// Run by `actors_leave_no_process_thread_descriptor_or_file_behind`, alone
/// in its process so that the counts are exact.
#[test]
#[ignore = "helper process for actors_leave_no_process_thread_descriptor_or_file_behind"]
fn leak_check() {
    if !role_is("leaks") {
        return;
    }
    run(async {
        // Warm up once: the runtime's and mproc's long-lived threads and the
        // fork server start.
        for method in [
            StartMethod::Spawn,
            StartMethod::Forkserver,
            StartMethod::Fork,
        ] {
            let ex = Executor::builder()
                .max_workers(1)
                .start_method(method)
                .build()
                .await
                .unwrap();
            let m = Mortal::spawn(&ex, 0).await.unwrap();
            assert_eq!(m.incr(1).await, Ok(1));
            m.stop().await.unwrap();
        }
        // The warm-up's connections close on threads of their own: let the
        // counts settle.
        let settled = || {
            let end = Instant::now() + Duration::from_secs(5);
            let mut last = (common::open_fds(), common::thread_count());
            while Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
                let now = (common::open_fds(), common::thread_count());
                if now == last {
                    break;
                }
                last = now;
            }
            last
        };
        let (fds, threads) = settled();
        let files = mproc_files();
        let mut pids = Vec::new();
        for method in [
            StartMethod::Spawn,
            StartMethod::Forkserver,
            StartMethod::Fork,
        ] {
            let ex = Executor::builder()
                .max_workers(1)
                .start_method(method)
                .build()
                .await
                .unwrap();
            let a = Mortal::spawn_with(&ex, 0, ActorOptions::default().max_restarts(1))
                .await
                .unwrap();
            let b = Mortal::spawn(&ex, 0).await.unwrap();
            let c = Mortal::spawn(&ex, 0).await.unwrap();
            pids.extend([a.pid().await.unwrap(), b.pid().await.unwrap()]);
            pids.push(c.pid().await.unwrap());
            let calls: Vec<_> = (0..200).map(|_| a.incr(1)).collect();
            futures::future::join_all(calls).await;
            assert_eq!(ex.submit(get_from_task, b.clone()).await, Ok(Ok(0)));
            assert!(a.boom("on purpose".into()).await.is_err());
            assert!(a.exit(2).await.is_err());
            pids.push(a.pid().await.unwrap());
            assert!(b.abort().await.is_err());
            c.stop().await.unwrap();
            // `a` lives on until its executor goes.
            drop(ex);
            assert_eq!(a.get().await, Err(TaskError::Shutdown));
        }
        assert!(wait_gone(&pids, Duration::from_secs(5)), "{pids:?}");
        let end = Instant::now() + Duration::from_secs(5);
        while (common::open_fds() > fds || common::thread_count() > threads) && Instant::now() < end
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (fds_now, threads_now) = (common::open_fds(), common::thread_count());
        assert!(fds_now <= fds, "descriptors leaked: {fds} then {fds_now}");
        assert!(
            threads_now <= threads,
            "threads leaked: {threads} then {threads_now}"
        );
        assert_eq!(
            mproc_files(),
            files,
            "files left in the temp dir or /dev/shm"
        );
        // Ended actors of a live executor keep no thread each: one thread
        // answers for all of them.
        let ex = Executor::new(1).await.unwrap();
        let first = Mortal::spawn(&ex, 0).await.unwrap();
        first.stop().await.unwrap();
        let (_, before) = settled();
        for _ in 0..30 {
            let m = Mortal::spawn(&ex, 0).await.unwrap();
            assert_eq!(m.incr(1).await, Ok(1));
            m.stop().await.unwrap();
            assert!(m.get().await.is_err());
        }
        let (_, after) = settled();
        assert!(
            after <= before + 2,
            "30 stopped actors kept threads: {before} then {after}"
        );
        assert!(
            first.get().await.is_err(),
            "the first still answers as dead"
        );
        drop(ex);
        println!("LEAKS DONE");
    });
}

#[test]
fn actors_leave_no_process_thread_descriptor_or_file_behind() {
    let out = run_self("leak_check", &[(ROLE, "leaks")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("LEAKS DONE"), "{stdout}");
}
