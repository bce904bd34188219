//! A pool's reader threads (one per worker, in the parent) run under
//! `SCHED_BATCH` while tasks are long, so an answer never preempts another
//! worker in the middle of its task, and go back to the default policy
//! when tasks are short again; a policy the user chose is left alone. One
//! test in its own binary: it reads the policy of every reader thread of
//! this process, so no other pool may run meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::{run_self, wait_gone};
use mproc::Pool;

const SCHED_OTHER: i32 = 0;
const SCHED_BATCH: i32 = 3;
const SCHED_IDLE: i32 = 5;

#[mproc::task]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

/// The scheduling policy of each reader thread of this process (thread
/// name `mproc-conn`), from field 41 of `/proc/self/task/<tid>/stat`.
fn reader_policies() -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = entry.expect("task entry").path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread has just exited
        };
        if comm.trim_end() != "mproc-conn" {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses: the
        // first of them is field 3.
        let rest = &stat[stat.rfind(')').expect("stat has a command") + 1..];
        let policy = rest
            .split_whitespace()
            .nth(41 - 3)
            .expect("stat has a policy field")
            .parse()
            .expect("policy is a number");
        out.push(policy);
    }
    out
}

/// Waits (up to 10 s) until the pool's `n` reader threads all have
/// `policy`; returns the policies last seen.
fn readers_reach(n: usize, policy: i32) -> Result<(), Vec<i32>> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = reader_policies();
        if seen.len() == n && seen.iter().all(|&p| p == policy) {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(seen);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `step` until the `n` reader threads all have `policy` (up to
/// 10 s); returns the policies last seen if they never did.
fn drive_until(step: impl Fn(), n: usize, policy: i32) -> Result<(), Vec<i32>> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        step();
        let seen = reader_policies();
        if seen.len() == n && seen.iter().all(|&p| p == policy) {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(seen);
        }
    }
}

fn close_and_check(pool: Pool) {
    let pids = pool.worker_pids();
    pool.close();
    pool.join();
    assert!(
        wait_gone(&pids, Duration::from_secs(5)),
        "workers left: {pids:?}"
    );
}

/// This thread's policy set to `policy` (priority 0).
fn set_policy(policy: i32) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call; pid 0 is this
    // thread.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn readers_batch_while_tasks_are_long_and_a_chosen_policy_stays() {
    // SAFETY: reads this thread's policy; touches no memory of ours.
    let own = unsafe { libc::sched_getscheduler(0) };
    if own != SCHED_OTHER {
        // The whole test run was given a policy: the readers keep it.
        let pool = Pool::new(2).expect("pool starts");
        assert_eq!(pool.map(sleep_ms, vec![2; 8]).unwrap(), vec![2; 8]);
        assert_eq!(readers_reach(2, own), Ok(()), "the run's own policy");
        return close_and_check(pool);
    }
    let pool = Pool::new(2).expect("pool starts");
    // Short tasks (maps of 8, spread over both workers): each reader
    // checks the measured task time each time it goes to sleep, so after
    // a few maps both run under the default policy (a first measurement
    // in a cold worker may be long for a moment).
    let short = || assert_eq!(pool.map(square, 0..8).unwrap().len(), 8);
    assert_eq!(
        drive_until(short, 2, SCHED_OTHER),
        Ok(()),
        "short tasks: the default policy"
    );

    // Tasks of 2 ms: the measured task time passes 50 µs at once.
    let long = || assert_eq!(pool.map(sleep_ms, vec![2; 8]).unwrap(), vec![2; 8]);
    assert_eq!(
        drive_until(long, 2, SCHED_BATCH),
        Ok(()),
        "long tasks: batch, so an answer waits for a free CPU"
    );

    // Short tasks again: the average decays (by a fifth per answer), and
    // each reader goes back when it next goes to sleep.
    assert_eq!(
        drive_until(short, 2, SCHED_OTHER),
        Ok(()),
        "short tasks again: the default policy again"
    );
    close_and_check(pool);
    assert_eq!(readers_reach(0, SCHED_OTHER), Ok(()), "readers gone");

    // A process the user put under SCHED_IDLE, in a child of its own (a
    // pool's threads inherit the policy of the program's first pool
    // user, long gone here).
    let out = run_self("a_chosen_policy_stays", &[]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run by the test above in a fresh process.
#[test]
#[ignore = "run in a child process by readers_batch_while_tasks_are_long_and_a_chosen_policy_stays"]
fn a_chosen_policy_stays() {
    set_policy(SCHED_IDLE);
    let pool = Pool::new(2).expect("pool starts");
    assert_eq!(pool.map(sleep_ms, vec![2; 8]).unwrap(), vec![2; 8]);
    assert_eq!(pool.map(sleep_ms, vec![2; 8]).unwrap(), vec![2; 8]);
    assert_eq!(
        readers_reach(2, SCHED_IDLE),
        Ok(()),
        "a policy the user chose is left alone"
    );
    close_and_check(pool);
}
