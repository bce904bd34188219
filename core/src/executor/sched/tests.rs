//! The scheduler's accounting, proven against fake workers (`fake.rs`):
//! no process is started here.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fake::{self, FakeLink, Plan, Sent, KILLED};
use super::link::{Event, WorkerLink};
use super::{Core, Limits, Running, STEAL_AFTER};
use crate::error::{ErrorKind, TaskError};
use crate::executor::completion::{Completion, Gate};
use crate::protocol::batch::{decode_one, encode_one, Items};

fn submit(core: &Arc<Core>, x: u64) -> (u64, Arc<Completion>) {
    core.submit("t", false, encode_one(&x).unwrap(), Limits::default())
}

fn outcome(c: &Completion) -> Result<u64, TaskError> {
    assert!(
        c.wait_until(Some(Instant::now() + Duration::from_secs(5))),
        "not resolved"
    );
    decode_one(c.take().expect("an outcome"))
}

/// The `seq` of request `id` on `link`, if it was sent there.
fn seq_of(link: &FakeLink, id: u64) -> Option<u64> {
    link.runs()
        .into_iter()
        .find(|(i, _)| *i == id)
        .map(|(_, s)| s)
}

fn holder(links: &[Arc<FakeLink>], id: u64) -> Option<&Arc<FakeLink>> {
    links.iter().find(|l| seq_of(l, id).is_some())
}

/// Waits (up to 5 s) until `f` holds.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_job_goes_to_an_idle_worker_before_any_is_sent_ahead() {
    let (core, launcher, links) = fake::running(2, None);
    let (a, _) = submit(&core, 1);
    let (b, _) = submit(&core, 2);
    let (ha, hb) = (holder(&links, a).unwrap(), holder(&links, b).unwrap());
    assert_ne!(ha.key, hb.key, "the second job must go to the idle worker");
    fake::stop(&core, &launcher);
}

#[test]
fn work_sent_ahead_behind_a_long_task_is_taken_back_by_an_idle_worker() {
    let (core, launcher, links) = fake::running(2, None);
    // A long task, then six short ones: windows of 2 send some ahead.
    let (long, _) = submit(&core, 0);
    let shorts: Vec<_> = (1..=6).map(|x| submit(&core, x)).collect();
    let busy = holder(&links, long).unwrap().clone();
    let free = links.iter().find(|l| l.key != busy.key).unwrap().clone();
    assert!(busy.claims().start(seq_of(&busy, long).unwrap()));
    // The free worker runs everything it gets, as fast as it can.
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while done < shorts.len() {
        assert!(
            Instant::now() < deadline,
            "short tasks stranded behind the long one"
        );
        let mut progressed = false;
        for (id, seq) in free.runs() {
            if shorts.iter().any(|(s, c)| *s == id && !c.is_resolved())
                && fake::run(&core, &free, id, seq, id)
            {
                done += 1;
                progressed = true;
            }
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for (id, c) in &shorts {
        assert_eq!(outcome(c), Ok(*id));
    }
    // What the busy worker was sent ahead was taken back: it never runs.
    for (id, seq) in busy.runs() {
        if id != long {
            assert!(!busy.claims().start(seq), "request {id} would run twice");
        }
    }
    fake::stop(&core, &launcher);
}

#[test]
fn young_work_is_not_taken_back_until_it_has_waited() {
    let (core, launcher, links) = fake::running(2, None);
    let (long, _) = submit(&core, 0); // to an idle worker
    let (b, _) = submit(&core, 1); // to the other, idle worker
                                   // Windows of 2: one of these is sent ahead behind `long`, the other
                                   // behind `b`.
    let (c, _) = submit(&core, 2);
    let (d, _) = submit(&core, 3);
    let sent = Instant::now();
    let busy = holder(&links, long).unwrap().clone();
    let free = holder(&links, b).unwrap().clone();
    assert_ne!(busy.key, free.key);
    assert!(busy.claims().start(seq_of(&busy, long).unwrap()));
    let (behind, other) = if seq_of(&busy, c).is_some() {
        (c, d)
    } else {
        (d, c)
    };
    // The free worker finishes its two and is idle.
    assert!(fake::run(&core, &free, b, seq_of(&free, b).unwrap(), 1));
    assert!(fake::run(
        &core,
        &free,
        other,
        seq_of(&free, other).unwrap(),
        2
    ));
    // Not taken back while it is young (checked only when this thread was
    // quick enough to look before it could have aged)...
    let taken_at_once = seq_of(&free, behind).is_some();
    if sent.elapsed() < STEAL_AFTER {
        assert!(!taken_at_once, "young work was taken back at once");
    }
    // ...but once it has waited STEAL_AFTER (the timer looks again).
    eventually("the timer takes it back", || {
        seq_of(&free, behind).is_some()
    });
    assert!(!busy.claims().start(seq_of(&busy, behind).unwrap()));
    fake::stop(&core, &launcher);
}

#[test]
fn a_stopped_worker_strands_nothing() {
    let (core, launcher, links) = fake::running(2, None);
    // Worker 0 takes one task and never moves again (SIGSTOP).
    let (first, _) = submit(&core, 0);
    let stopped = holder(&links, first).unwrap().clone();
    assert!(stopped.claims().start(seq_of(&stopped, first).unwrap()));
    let other = links.iter().find(|l| l.key != stopped.key).unwrap().clone();
    let jobs: Vec<_> = (1..=40).map(|x| submit(&core, x)).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while jobs.iter().any(|(_, c)| !c.is_resolved()) {
        assert!(
            Instant::now() < deadline,
            "work stranded on a stopped worker"
        );
        let mut progressed = false;
        for (id, seq) in other.runs() {
            if jobs.iter().any(|(j, c)| *j == id && !c.is_resolved())
                && fake::run(&core, &other, id, seq, id)
            {
                progressed = true;
            }
        }
        if !progressed {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    for (id, c) in &jobs {
        assert_eq!(outcome(c), Ok(*id));
    }
    fake::stop(&core, &launcher);
}

#[test]
fn a_crash_fails_what_started_and_requeues_what_did_not() {
    let (core, launcher, links) = fake::running(1, None);
    let (a, ca) = submit(&core, 1);
    let (b, cb) = submit(&core, 2); // sent ahead (window 2)
    let w = &links[0];
    let (sa, sb) = (seq_of(w, a).unwrap(), seq_of(w, b).unwrap());
    assert!(w.claims().start(sa));
    fake::exit(&core, w, KILLED);
    assert_eq!(
        outcome(&ca),
        Err(TaskError::WorkerDied { exit: KILLED }),
        "the running task fails"
    );
    assert!(
        !cb.is_resolved(),
        "the task that never started is not failed"
    );
    // A replacement comes up and gets it.
    assert!(launcher.wait_pending(1));
    let fresh = launcher.ready_all(&core).pop().unwrap();
    let sb2 = seq_of(&fresh, b).expect("requeued to the replacement");
    assert!(fake::run(&core, &fresh, b, sb2, 2));
    assert_eq!(outcome(&cb), Ok(2));
    let _ = sb;
    fake::stop(&core, &launcher);
}

#[test]
fn a_timeout_kills_only_when_its_own_task_runs() {
    let (core, launcher, links) = fake::running(1, None);
    let w = &links[0];
    // `a` has finished (its answer not read yet) and `b` has started: the
    // old "progress > seq" test took `a` for running and killed `b`.
    let (a, ca) = submit(&core, 1);
    let (b, cb) = submit(&core, 2);
    let (sa, sb) = (seq_of(w, a).unwrap(), seq_of(w, b).unwrap());
    assert!(w.claims().start(sa));
    assert!(w.claims().finish(sa));
    assert!(w.claims().start(sb));
    assert!(
        !core.abort(a, TaskError::TimedOut, Running::Stop),
        "a had finished"
    );
    assert!(
        !w.killed.load(Ordering::SeqCst),
        "an innocent task was killed"
    );
    // `a`'s real answer still arrives and stands.
    let mut items = Items::with_capacity(1);
    items.push(Ok::<u64, TaskError>(1));
    let batch = items.finish(usize::MAX, |_, _, _| {}).to_vec();
    core.worker_events(
        w.key,
        &mut vec![Event::Done {
            id: a,
            exec_ns: 1,
            outcome: Ok(batch.into()),
        }],
    );
    assert_eq!(outcome(&ca), Ok(1));
    // Now `b` is the running one: its timeout kills the worker.
    assert!(core.abort(b, TaskError::TimedOut, Running::Stop));
    assert!(w.killed.load(Ordering::SeqCst));
    assert_eq!(outcome(&cb), Err(TaskError::TimedOut));
    assert!(
        !fake::finish(&core, w, b, sb, 2),
        "a doomed worker must start nothing more"
    );
    fake::stop(&core, &launcher);
}

#[test]
fn a_timeout_of_a_task_that_has_not_started_kills_nobody() {
    let (core, launcher, links) = fake::running(1, None);
    let w = &links[0];
    let (a, _ca) = submit(&core, 1);
    let (b, cb) = core.submit(
        "t",
        false,
        encode_one(&2u64).unwrap(),
        Limits {
            timeout: Some(Duration::from_millis(20)),
            retries: 0,
        },
    );
    assert!(w.claims().start(seq_of(w, a).unwrap()));
    // `b` waits behind `a` past its timeout: taken back, not killed for.
    assert_eq!(outcome(&cb), Err(TaskError::TimedOut));
    assert!(!w.killed.load(Ordering::SeqCst));
    assert!(!w.claims().start(seq_of(w, b).unwrap()), "b must never run");
    fake::stop(&core, &launcher);
}

#[test]
fn when_a_doomed_worker_dies_its_waiting_work_runs_elsewhere() {
    let (core, launcher, links) = fake::running(1, None);
    let w = &links[0];
    let (a, ca) = submit(&core, 1);
    let (b, cb) = submit(&core, 2);
    assert!(w.claims().start(seq_of(w, a).unwrap()));
    assert!(core.abort(a, TaskError::Cancelled, Running::Stop));
    assert_eq!(outcome(&ca), Err(TaskError::Cancelled));
    fake::exit(&core, w, KILLED);
    assert!(launcher.wait_pending(1));
    let fresh = launcher.ready_all(&core).pop().unwrap();
    assert!(fake::run(&core, &fresh, b, seq_of(&fresh, b).unwrap(), 2));
    assert_eq!(outcome(&cb), Ok(2));
    fake::stop(&core, &launcher);
}

#[test]
fn cancel_of_a_running_async_task_sends_cancel_and_kills_nobody() {
    let (core, launcher, links) = fake::running(1, None);
    let w = &links[0];
    let (a, ca) = core.submit("t", true, encode_one(&1u64).unwrap(), Limits::default());
    assert!(w.claims().start(seq_of(w, a).unwrap()));
    assert!(core.abort(a, TaskError::Cancelled, Running::Stop));
    assert_eq!(outcome(&ca), Err(TaskError::Cancelled));
    assert!(!w.killed.load(Ordering::SeqCst));
    assert!(w.sent().contains(&Sent::Cancel { id: a }));
    fake::stop(&core, &launcher);
}

#[test]
fn sparing_abort_takes_back_what_waits_and_leaves_what_runs() {
    let (core, launcher, links) = fake::running(1, None);
    let w = &links[0];
    let (a, ca) = submit(&core, 1);
    let (b, cb) = submit(&core, 2);
    let (c, cc) = submit(&core, 3); // still queued (window 2)
    assert!(w.claims().start(seq_of(w, a).unwrap()));
    assert!(!core.abort(a, TaskError::Cancelled, Running::Spare));
    assert!(core.abort(b, TaskError::Cancelled, Running::Spare));
    assert!(core.abort(c, TaskError::Cancelled, Running::Spare));
    assert!(!w.killed.load(Ordering::SeqCst));
    assert_eq!(outcome(&cb), Err(TaskError::Cancelled));
    assert_eq!(outcome(&cc), Err(TaskError::Cancelled));
    assert!(fake::finish(&core, w, a, seq_of(w, a).unwrap(), 1));
    assert_eq!(outcome(&ca), Ok(1));
    fake::stop(&core, &launcher);
}

#[test]
fn max_tasks_per_child_replaces_the_worker_before_it_leaves() {
    let (core, launcher, links) = fake::running(1, Some(2));
    let w = &links[0];
    let jobs: Vec<_> = (1..=3).map(|x| submit(&core, x)).collect();
    assert_eq!(
        w.runs().len(),
        2,
        "the retiring worker gets exactly its quota"
    );
    assert!(launcher.wait_pending(1), "the replacement starts at once");
    let fresh = launcher.ready_all(&core).pop().unwrap();
    assert_eq!(fresh.runs().len(), 1);
    for (id, seq) in w.runs() {
        assert!(fake::run(&core, w, id, seq, id));
    }
    assert!(
        w.sent().contains(&Sent::Shutdown),
        "done with its quota: asked to exit"
    );
    let (id, seq) = fresh.runs()[0];
    assert!(fake::run(&core, &fresh, id, seq, id));
    for (id, c) in &jobs {
        assert_eq!(outcome(c), Ok(*id));
    }
    fake::stop(&core, &launcher);
}

#[test]
fn shutdown_drains_then_asks_workers_to_exit() {
    let (core, launcher, links) = fake::running(2, None);
    let jobs: Vec<_> = (1..=2).map(|x| submit(&core, x)).collect();
    core.close();
    assert_eq!(submit(&core, 9).1.take(), Some(Err(TaskError::Shutdown)));
    for l in &links {
        assert!(!l.sent().contains(&Sent::Shutdown), "work is still running");
    }
    for l in &links {
        for (id, seq) in l.runs() {
            assert!(fake::run(&core, l, id, seq, id));
        }
    }
    for (id, c) in &jobs {
        assert_eq!(outcome(c), Ok(*id));
    }
    for l in &links {
        assert!(l.sent().contains(&Sent::Shutdown));
        fake::exit(
            &core,
            l,
            crate::error::ExitInfo {
                code: Some(0),
                signal: None,
            },
        );
    }
    assert!(
        core.wait_blocking(|st| st.live == 0, Some(Duration::from_secs(5))),
        "workers asked to exit were not counted gone"
    );
    fake::stop(&core, &launcher);
}

#[test]
fn stopping_resolves_everything_and_kills_every_worker() {
    let (core, launcher, links) = fake::running(2, None);
    let jobs: Vec<_> = (1..=5).map(|x| submit(&core, x)).collect();
    let c2 = core.clone();
    let stopper = std::thread::spawn(move || c2.stop_blocking(TaskError::Cancelled));
    eventually("every worker killed", || {
        links.iter().all(|l| l.killed.load(Ordering::SeqCst))
    });
    for l in &links {
        assert!(l.closed.load(Ordering::SeqCst));
    }
    stopper.join().unwrap();
    launcher.fail_pending(&core);
    for (_, c) in &jobs {
        assert_eq!(outcome(c), Err(TaskError::Cancelled));
    }
}

#[test]
fn a_start_that_cannot_start_every_worker_fails_with_the_cause() {
    let launcher = Arc::new(fake::FakeLauncher::default());
    launcher.plan(&[Plan::Manual, Plan::Fail, Plan::Manual]);
    let core = Core::with_launcher(fake::config(3, None), launcher.clone());
    let c2 = core.clone();
    let starter = std::thread::spawn(move || c2.start_blocking());
    assert!(launcher.wait_pending(2));
    launcher.ready_all(&core);
    let err = starter.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Spawn);
    let cause = err.to_string();
    assert!(cause.contains("file descriptors"), "{cause}");
    assert!(cause.contains("RLIMIT_NOFILE"), "{cause}");
}

#[test]
fn failed_respawns_back_off_and_then_fail_the_queue_with_the_cause() {
    let (core, launcher, links) = fake::running(1, None);
    launcher.plan(&[Plan::Fail, Plan::Fail, Plan::Fail]);
    let before = launcher.launches().len();
    fake::exit(&core, &links[0], KILLED);
    let (_, c) = submit(&core, 1);
    match outcome(&c) {
        Err(TaskError::Spawn { message }) => assert!(message.contains("file descriptors")),
        other => panic!("expected TaskError::Spawn, got {other:?}"),
    }
    let times = launcher.launches();
    assert!(
        times.len() >= before + 3,
        "{} launches",
        times.len() - before
    );
    let gaps: Vec<Duration> = times[before..].windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(5)),
        "failed starts are retried after a pause: {gaps:?}"
    );
    // New work tries again at once, and a worker that comes up serves it.
    let (id, c2) = submit(&core, 5);
    assert!(launcher.wait_pending(1));
    let fresh = launcher.ready_all(&core).pop().unwrap();
    assert!(fake::run(&core, &fresh, id, seq_of(&fresh, id).unwrap(), 5));
    assert_eq!(outcome(&c2), Ok(5));
    fake::stop(&core, &launcher);
}

#[test]
fn workers_killed_during_start_up_are_replaced_and_fail_no_queued_work() {
    let (core, launcher, links) = fake::running(1, None);
    // More kills in a row, with no worker up, than failed starts allowed.
    launcher.plan(&[Plan::Killed; 6]);
    let before = launcher.launches().len();
    fake::exit(&core, &links[0], KILLED);
    let (id, c) = submit(&core, 7);
    assert!(launcher.wait_pending(1));
    assert_eq!(launcher.launches().len(), before + 7);
    assert!(!c.is_resolved(), "queued work failed: {:?}", c.take());
    let fresh = launcher.ready_all(&core).pop().unwrap();
    assert!(fake::run(&core, &fresh, id, seq_of(&fresh, id).unwrap(), 7));
    assert_eq!(outcome(&c), Ok(7));
    fake::stop(&core, &launcher);
}

#[test]
fn results_in_parts_are_joined() {
    let (core, launcher, links) = fake::running(1, None);
    let w = &links[0];
    let payload = crate::protocol::batch::encode_chunk(&[1u64, 2, 3]).unwrap();
    let (id, c) = core.submit("t", false, payload, Limits::default());
    let seq = seq_of(w, id).unwrap();
    assert!(w.claims().start(seq) && w.claims().finish(seq));
    let mut items = Items::with_capacity(3);
    for v in [10u64, 20, 30] {
        items.push(Ok::<u64, TaskError>(v));
    }
    let mut events = Vec::new();
    let last = items
        .finish(2, |count, bytes, sides| {
            events.push(Event::Part {
                id,
                count,
                items: bytes.to_vec(),
                sides,
            })
        })
        .to_vec();
    assert!(!events.is_empty());
    events.push(Event::Done {
        id,
        exec_ns: 1,
        outcome: Ok(last.into()),
    });
    core.worker_events(w.key, &mut events);
    assert!(c.wait_until(None));
    let v: Vec<Result<u64, TaskError>> = crate::protocol::batch::decode_batch(c.take().unwrap(), 3);
    assert_eq!(v, vec![Ok(10), Ok(20), Ok(30)]);
    fake::stop(&core, &launcher);
}

#[test]
fn a_retried_batch_keeps_no_part_of_its_first_run() {
    let (core, launcher, links) = fake::running(1, None);
    let w = &links[0];
    let payload = crate::protocol::batch::encode_chunk(&[1u64, 2, 3]).unwrap();
    let limits = Limits {
        timeout: None,
        retries: 1,
    };
    let (id, c) = core.submit("t", false, payload, limits);
    let seq = seq_of(w, id).unwrap();
    assert!(w.claims().start(seq));
    // The first run sends its first results in parts, then dies.
    let mut items = Items::with_capacity(3);
    for v in [10u64, 20, 30] {
        items.push(Ok::<u64, TaskError>(v));
    }
    let mut events = Vec::new();
    let _ = items.finish(2, |count, bytes, sides| {
        events.push(Event::Part {
            id,
            count,
            items: bytes.to_vec(),
            sides,
        })
    });
    assert!(!events.is_empty());
    core.worker_events(w.key, &mut events);
    fake::exit(&core, w, KILLED);
    // The run again answers in one message.
    assert!(launcher.wait_pending(1));
    let fresh = launcher.ready_all(&core).pop().unwrap();
    let seq = seq_of(&fresh, id).unwrap();
    assert!(fresh.claims().start(seq) && fresh.claims().finish(seq));
    let mut items = Items::with_capacity(3);
    for v in [11u64, 21, 31] {
        items.push(Ok::<u64, TaskError>(v));
    }
    let last = items.finish(usize::MAX, |_, _, _| {}).to_vec();
    let mut events = vec![Event::Done {
        id,
        exec_ns: 1,
        outcome: Ok(last.into()),
    }];
    core.worker_events(fresh.key, &mut events);
    assert!(c.wait_until(None));
    let v: Vec<Result<u64, TaskError>> = crate::protocol::batch::decode_batch(c.take().unwrap(), 3);
    assert_eq!(v, vec![Ok(11), Ok(21), Ok(31)]);
    fake::stop(&core, &launcher);
}

#[test]
fn a_worker_still_starting_when_draining_begins_is_asked_to_exit_once_up() {
    let launcher = Arc::new(fake::FakeLauncher::default());
    let core = Core::with_launcher(fake::config(2, None), launcher.clone());
    core.begin_start();
    assert!(launcher.wait_pending(2));
    let first = launcher.ready_all(&core);
    assert_eq!(first.len(), 2);
    // One worker dies and its replacement is still starting when the pool
    // is closed: it must still be told to exit once it is up.
    fake::exit(&core, &first[0], KILLED);
    assert!(launcher.wait_pending(1));
    core.close();
    let late = launcher.ready_all(&core).pop().unwrap();
    assert!(late.sent().contains(&Sent::Shutdown), "{:?}", late.sent());
    assert!(first[1].sent().contains(&Sent::Shutdown));
    fake::stop(&core, &launcher);
}

#[test]
fn a_gathered_map_is_spread_over_the_workers_at_once_and_only_it() {
    let (core, launcher, links) = fake::running(2, None);
    // Nine chunks of a map, before any measurement (a window of 2): each
    // worker is sent its share at once, marked gathered.
    let payloads = (0..9u64).map(|x| encode_one(&x).unwrap().into()).collect();
    let map = core.submit_many("t", false, payloads, Limits::default());
    let shares: Vec<usize> = links.iter().map(|l| l.runs().len()).collect();
    assert_eq!(
        shares.iter().sum::<usize>(),
        9,
        "every chunk sent: {shares:?}"
    );
    assert!(shares.iter().all(|&n| n >= 4), "spread evenly: {shares:?}");
    for l in &links {
        assert_eq!(l.gathered().len(), l.runs().len(), "all marked gathered");
    }
    // A task submitted on its own is not gathered and keeps the window:
    // both workers hold more than two, so it waits in the queue.
    let (alone, alone_c) = submit(&core, 100);
    assert!(holder(&links, alone).is_none(), "sent past the window");
    for l in &links {
        for (id, seq) in l.runs() {
            if id != alone {
                assert!(fake::run(&core, l, id, seq, id));
            }
        }
    }
    for (id, c) in &map {
        assert_eq!(outcome(c), Ok(*id));
    }
    let l = holder(&links, alone)
        .expect("sent once the map drained")
        .clone();
    assert!(l.gathered().iter().all(|&id| id != alone), "not gathered");
    assert!(fake::run(&core, &l, alone, seq_of(&l, alone).unwrap(), 100));
    assert_eq!(outcome(&alone_c), Ok(100));
    fake::stop(&core, &launcher);
}

#[test]
fn a_worker_gone_idle_nudges_the_gates_of_gathered_maps() {
    let (core, launcher, links) = fake::running(2, None);
    let payloads = (0..4u64).map(|x| encode_one(&x).unwrap().into()).collect();
    let map = core.submit_many("t", false, payloads, Limits::default());
    let gate = Gate::over(map.iter().map(|(_, c)| c));
    let watch = core.watch_gate(&gate);
    // One worker runs its share: not a nudge while it still holds work,
    // one once it holds none (the other worker still runs).
    let a = &links[0];
    let runs = a.runs();
    assert_eq!(runs.len(), 2, "two chunks each");
    assert!(fake::run(&core, a, runs[0].0, runs[0].1, runs[0].0));
    assert_eq!(gate.nudges(), 0, "nudged while the worker had work");
    assert!(fake::run(&core, a, runs[1].0, runs[1].1, runs[1].0));
    assert_eq!(gate.nudges(), 1, "not nudged when the worker went idle");
    // The other worker's answers open the gate: no more nudges (and a
    // dropped watch leaves no gate behind to nudge).
    drop(watch);
    let b = &links[1];
    for (id, seq) in b.runs() {
        assert!(fake::run(&core, b, id, seq, id));
    }
    assert_eq!(gate.nudges(), 1);
    for (id, c) in &map {
        assert_eq!(outcome(c), Ok(*id));
    }
    fake::stop(&core, &launcher);
}

#[test]
fn a_worker_idle_before_the_gate_is_watched_nudges_it_at_once() {
    // The caller was preempted between sending its map and watching its
    // gate, and one worker ran its whole share meanwhile: its going idle
    // nudged nothing, so the watch itself nudges.
    let (core, launcher, links) = fake::running(2, None);
    let payloads = (0..4u64).map(|x| encode_one(&x).unwrap().into()).collect();
    let map = core.submit_many("t", false, payloads, Limits::default());
    let gate = Gate::over(map.iter().map(|(_, c)| c));
    let a = &links[0];
    for (id, seq) in a.runs() {
        assert!(fake::run(&core, a, id, seq, id));
    }
    assert_eq!(gate.nudges(), 0, "not watched yet");
    let watch = core.watch_gate(&gate);
    assert_eq!(gate.nudges(), 1, "an idle worker at registration nudges");
    drop(watch);
    // A gate watched while every worker is busy is not nudged.
    let more = (4..8u64).map(|x| encode_one(&x).unwrap().into()).collect();
    let map2 = core.submit_many("t", false, more, Limits::default());
    let gate2 = Gate::over(map2.iter().map(|(_, c)| c));
    let watch2 = core.watch_gate(&gate2);
    assert_eq!(gate2.nudges(), 0, "both workers hold work");
    drop(watch2);
    let resolved = |id: u64| {
        map.iter()
            .chain(&map2)
            .any(|(j, c)| *j == id && c.is_resolved())
    };
    for link in &links {
        for (id, seq) in link.runs() {
            if !resolved(id) {
                assert!(fake::run(&core, link, id, seq, id));
            }
        }
    }
    for (id, c) in map.iter().chain(&map2) {
        assert_eq!(outcome(c), Ok(*id));
    }
    fake::stop(&core, &launcher);
}

#[test]
fn windows_start_at_two_and_widen_for_short_tasks() {
    let (core, launcher, links) = fake::running(1, None);
    let w = &links[0];
    let jobs: Vec<_> = (0..300).map(|x| submit(&core, x)).collect();
    assert_eq!(w.runs().len(), 2, "before any measurement a window is 2");
    // Tasks of 1 µs: a window covers about 200 µs of work, at most 128.
    for (id, seq) in w.runs() {
        assert!(fake::run(&core, w, id, seq, id));
    }
    assert_eq!(
        w.runs().len(),
        2 + 128,
        "short tasks widen the window to 128"
    );
    // The worker drains everything.
    let resolved = |id: u64| jobs.iter().any(|(j, c)| *j == id && c.is_resolved());
    while jobs.iter().any(|(_, c)| !c.is_resolved()) {
        for (id, seq) in w.runs() {
            if !resolved(id) {
                assert!(fake::run(&core, w, id, seq, id));
            }
        }
    }
    for (id, c) in &jobs {
        assert_eq!(outcome(c), Ok(*id));
    }
    fake::stop(&core, &launcher);
}

const ABORTED: crate::error::ExitInfo = crate::error::ExitInfo {
    code: None,
    signal: Some(libc::SIGABRT),
};

#[test]
fn a_task_whose_worker_dies_runs_again_under_retries_then_fails() {
    let (core, launcher, links) = fake::running(1, None);
    let limits = Limits {
        timeout: None,
        retries: 1,
    };
    let (id, c) = core.submit("t", false, encode_one(&7u64).unwrap(), limits);
    let first = &links[0];
    let seq = seq_of(first, id).unwrap();
    assert!(first.claims().start(seq));
    fake::exit(&core, first, ABORTED);
    assert!(!c.is_resolved(), "one retry left: the task must run again");
    // The replacement worker gets it again, starts it, and dies too.
    let second = launcher.ready_all(&core);
    assert_eq!(second.len(), 1);
    let seq = seq_of(&second[0], id).expect("the task was sent again");
    assert!(second[0].claims().start(seq));
    fake::exit(&core, &second[0], ABORTED);
    assert_eq!(outcome(&c), Err(TaskError::WorkerDied { exit: ABORTED }));
    launcher.ready_all(&core);
    fake::stop(&core, &launcher);
}

#[test]
fn a_retried_task_that_then_succeeds_gives_its_value_once() {
    let (core, launcher, links) = fake::running(1, None);
    let limits = Limits {
        timeout: None,
        retries: 3,
    };
    let (id, c) = core.submit("t", false, encode_one(&7u64).unwrap(), limits);
    let seq = seq_of(&links[0], id).unwrap();
    assert!(links[0].claims().start(seq));
    fake::exit(&core, &links[0], ABORTED);
    let next = launcher.ready_all(&core);
    let seq = seq_of(&next[0], id).unwrap();
    assert!(fake::run(&core, &next[0], id, seq, 49));
    assert_eq!(outcome(&c), Ok(49));
    fake::stop(&core, &launcher);
}

#[test]
fn a_lost_node_fails_started_work_with_node_lost_and_requeues_the_rest() {
    use super::link::Gone;
    use crate::address::NodeId;
    let (core, launcher, links) = fake::running(1, None);
    let (a, ca) = submit(&core, 1);
    let (b, cb) = submit(&core, 2);
    let w = &links[0];
    assert!(w.claims().start(seq_of(w, a).unwrap()));
    assert!(seq_of(w, b).is_some(), "b was sent ahead");
    let node = crate::protocol::decode::<NodeId>(&[3]).unwrap();
    core.worker_gone(w.key, Gone::NodeLost(node));
    assert_eq!(outcome(&ca), Err(TaskError::NodeLost { node }));
    assert!(!cb.is_resolved(), "b never started: it runs elsewhere");
    let next = launcher.ready_all(&core);
    let seq = seq_of(&next[0], b).expect("b was sent to the new worker");
    assert!(fake::run(&core, &next[0], b, seq, 4));
    assert_eq!(outcome(&cb), Ok(4));
    fake::stop(&core, &launcher);
}

/// The worker's side of a node slot: it gives request `id` back.
fn give_back(core: &Arc<Core>, link: &FakeLink, id: u64) {
    core.worker_events(link.key, &mut vec![Event::Returned { id }]);
}

#[test]
fn work_waiting_on_a_node_slot_is_asked_back_and_moves_only_when_given_back() {
    let (core, launcher, links) = fake::running(2, None);
    for l in &links {
        l.remote.store(true, Ordering::SeqCst);
    }
    // A long task, then four short ones: the slots take up to four each.
    let (long, _) = submit(&core, 0);
    let shorts: Vec<_> = (1..=4).map(|x| submit(&core, x)).collect();
    let busy = holder(&links, long).unwrap().clone();
    let free = links.iter().find(|l| l.key != busy.key).unwrap().clone();
    assert!(busy.claims().start(seq_of(&busy, long).unwrap()));
    // The free slot runs what it got; then it is idle.
    for (id, seq) in free.runs() {
        assert!(fake::run(&core, &free, id, seq, id));
    }
    let waiting: Vec<u64> = shorts
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| seq_of(&busy, *id).is_some())
        .collect();
    assert!(
        !waiting.is_empty(),
        "some short tasks wait behind the long one"
    );
    eventually("the waiting tasks are asked back", || {
        busy.recalled.lock().unwrap().len() == waiting.len()
    });
    let asked = busy.recalled.lock().unwrap().clone();
    assert!(
        !asked.contains(&long),
        "the running task is never asked back"
    );
    // Nothing moves until the slot answers: no task can run twice.
    assert!(asked.iter().all(|id| seq_of(&free, *id).is_none()));
    // The slot gives the first back and had started the rest.
    give_back(&core, &busy, asked[0]);
    let seq = seq_of(&free, asked[0]).expect("sent to the idle slot once given back");
    assert!(fake::run(&core, &free, asked[0], seq, 100));
    for id in &asked[1..] {
        let seq = seq_of(&busy, *id).unwrap();
        assert!(fake::run(&core, &busy, *id, seq, 200));
        assert!(seq_of(&free, *id).is_none(), "a started task was not moved");
    }
    let by_id: std::collections::HashMap<u64, _> = shorts.into_iter().collect();
    assert_eq!(outcome(&by_id[&asked[0]]), Ok(100));
    for id in &asked[1..] {
        assert_eq!(outcome(&by_id[id]), Ok(200));
    }
    fake::stop(&core, &launcher);
}

#[test]
fn a_timeout_on_a_node_slot_stops_only_its_own_task() {
    let (core, launcher, links) = fake::running(1, None);
    let slot = &links[0];
    slot.remote.store(true, Ordering::SeqCst);
    let (a, ca) = core.submit(
        "t",
        false,
        encode_one(&1u64).unwrap(),
        Limits {
            timeout: Some(Duration::from_millis(20)),
            retries: 0,
        },
    );
    let (b, cb) = submit(&core, 2);
    assert!(slot.claims().start(seq_of(slot, a).unwrap()));
    assert_eq!(outcome(&ca), Err(TaskError::TimedOut));
    // Stopped in place: a Cancel for `a`, no kill of the slot.
    assert!(slot.sent().contains(&Sent::Cancel { id: a }));
    assert!(!slot.killed.load(Ordering::SeqCst));
    let seq = seq_of(slot, b).unwrap();
    assert!(fake::run(&core, slot, b, seq, 4));
    assert_eq!(outcome(&cb), Ok(4));
    fake::stop(&core, &launcher);
}
