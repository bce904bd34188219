//! Actors (API.md §8 "Actors", §9): `#[mproc::actor]` types spawned by an
//! executor and called through typed references — their methods and
//! types, the order and concurrency of calls, references passed to tasks,
//! `Process` targets and other actors, addresses, Manager proxies given to
//! actors, tracing on both sides, and nothing left behind.
//!
//! Failures, restarts, `stop`, the executor's end and the program's death
//! are in `tests/actor_supervision.rs`.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{run, run_self, wait_gone, LIMIT};
use futures::future::join_all;
use mproc::prelude::*;
use serde::{Deserialize, Serialize};

/// The counter of API.md §8, with a few more methods.
#[mproc::actor]
struct Counter {
    n: u64,
}

#[mproc::actor]
impl Counter {
    fn new(start: u64) -> Self {
        Counter { n: start }
    }
    fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
    fn get(&self) -> u64 {
        self.n
    }
    /// An `async` method that really waits (a timer of the actor's runtime).
    async fn slow_get(&self) -> u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.n
    }
    /// An `async` method that changes the state across an await.
    async fn incr_later(&mut self, by: u64) -> u64 {
        tokio::task::yield_now().await;
        self.n += by;
        self.n
    }
    fn div(&self, d: u64) -> Result<u64, String> {
        self.n.checked_div(d).ok_or(format!("{} / 0", self.n))
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
    fn node(&self) -> u32 {
        mproc::current_node().get()
    }
}

/// A value of a user type, going in and out of actor methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    who: String,
    amount: i64,
    tags: Vec<String>,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    Credit,
    Debit { fee: u8 },
}

/// Several constructor arguments; user types, maps, options and tuples in
/// and out; a `Result` whose error is the caller's to handle.
#[mproc::actor]
struct Ledger {
    owner: String,
    floor: i64,
    entries: Vec<Entry>,
}

#[mproc::actor]
impl Ledger {
    fn new(owner: String, floor: i64) -> Self {
        Ledger {
            owner,
            floor,
            entries: Vec::new(),
        }
    }
    fn balance(&self) -> i64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                Kind::Credit => e.amount,
                Kind::Debit { fee } => -e.amount - i64::from(fee),
            })
            .sum()
    }
    /// The new balance, or why the entry was refused (and not kept).
    fn post(&mut self, e: Entry) -> Result<i64, String> {
        self.entries.push(e);
        let b = self.balance();
        if b < self.floor {
            let e = self.entries.pop().unwrap();
            return Err(format!(
                "{} would take {} below {}",
                e.who, self.owner, self.floor
            ));
        }
        Ok(b)
    }
    fn entries(&self) -> Vec<Entry> {
        self.entries.clone()
    }
    fn totals(&self) -> BTreeMap<String, i64> {
        let mut t = BTreeMap::new();
        for e in &self.entries {
            *t.entry(e.who.clone()).or_insert(0) += e.amount;
        }
        t
    }
    /// A pattern argument and an optional one.
    fn label(&self, prefix: Option<String>, (a, b): (u8, u8)) -> (String, u16) {
        let p = prefix.unwrap_or_default();
        (format!("{p}{}", self.owner), u16::from(a) * u16::from(b))
    }
    async fn owner(&self) -> String {
        self.owner.clone()
    }
    fn nothing(&mut self) {}
}

#[test]
fn an_actor_keeps_state_and_runs_sync_async_and_result_methods() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let c: ActorRef<Counter> = Counter::spawn(&ex, 5).await.unwrap();
        assert_eq!(c.incr(2).await, Ok(7));
        assert_eq!(c.incr(3).await, Ok(10));
        assert_eq!(c.get().await, Ok(10));
        assert_eq!(c.slow_get().await, Ok(10));
        assert_eq!(c.incr_later(5).await, Ok(15));
        assert_eq!(c.div(4).await, Ok(Ok(3)));
        assert_eq!(c.div(0).await, Ok(Err("15 / 0".to_string())));
        assert_eq!(c.get().await, Ok(15), "an Err result changes nothing");
        // Its own process, not the program nor one of the executor's
        // workers, and not one of its `max_workers` slots: the worker still
        // runs tasks.
        let pid = c.pid().await.unwrap();
        assert_ne!(pid, std::process::id());
        assert!(!ex.worker_pids().contains(&pid));
        assert_eq!(ex.submit(square, 9).await, Ok(81));
        assert_eq!(ex.max_workers(), 1);

        // The type is still an ordinary type in this process.
        let mut local = Counter::new(1);
        assert_eq!(local.incr(1), 2);

        // spawn_with and default options: the same.
        let d = Counter::spawn_with(&ex, 100, ActorOptions::default())
            .await
            .unwrap();
        assert_eq!(d.incr(1).await, Ok(101));
        assert_eq!(c.get().await, Ok(15), "two actors, two states");
        let dpid = d.pid().await.unwrap();
        assert_ne!(dpid, pid);

        c.stop().await.unwrap();
        d.stop().await.unwrap();
        assert!(wait_gone(&[pid, dpid], Duration::from_secs(5)));
    });
}

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn several_constructor_arguments_and_serde_types_in_and_out() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let l = Ledger::spawn(&ex, ("ann".to_string(), -10)).await.unwrap();
        assert_eq!(l.owner().await.unwrap(), "ann");
        let credit = Entry {
            who: "bob".into(),
            amount: 20,
            tags: vec!["pay".into(), "june".into()],
            kind: Kind::Credit,
        };
        assert_eq!(l.post(credit.clone()).await, Ok(Ok(20)));
        let debit = Entry {
            who: "cy".into(),
            amount: 25,
            tags: vec![],
            kind: Kind::Debit { fee: 1 },
        };
        assert_eq!(l.post(debit.clone()).await, Ok(Ok(-6)));
        let refused = Entry {
            amount: 5,
            ..debit.clone()
        };
        assert_eq!(
            l.post(refused).await,
            Ok(Err("cy would take ann below -10".to_string()))
        );
        assert_eq!(l.entries().await.unwrap(), vec![credit, debit]);
        assert_eq!(
            l.totals().await.unwrap(),
            BTreeMap::from([("bob".to_string(), 20), ("cy".to_string(), 25)])
        );
        assert_eq!(
            l.label(Some("Ms ".into()), (6, 7)).await,
            Ok(("Ms ann".to_string(), 42))
        );
        assert_eq!(l.label(None, (0, 1)).await, Ok(("ann".to_string(), 0)));
        assert_eq!(l.nothing().await, Ok(()));
        assert_eq!(l.balance().await, Ok(-6));
        l.stop().await.unwrap();
    });
}

/// Calls are applied one at a time: the log of who called, and whether a
/// call ever started while another was still running (across the awaits of
/// an `async` method on `&self`, which nothing in the types forbids).
#[mproc::actor]
struct Sequencer {
    log: RefCell<Vec<(u32, u32)>>,
    running: Cell<bool>,
    overlaps: Cell<u32>,
}

#[mproc::actor]
impl Sequencer {
    fn new() -> Self {
        Sequencer {
            log: RefCell::new(Vec::new()),
            running: Cell::new(false),
            overlaps: Cell::new(0),
        }
    }
    /// Records call `i` of `caller`, holding the actor across an await.
    async fn visit(&self, caller: u32, i: u32) -> usize {
        if self.running.replace(true) {
            self.overlaps.set(self.overlaps.get() + 1);
        }
        if i % 8 == 0 {
            tokio::time::sleep(Duration::from_micros(300)).await;
        } else {
            tokio::task::yield_now().await;
        }
        self.log.borrow_mut().push((caller, i));
        self.running.set(false);
        self.log.borrow().len()
    }
    fn log(&self) -> Vec<(u32, u32)> {
        self.log.borrow().clone()
    }
    fn overlaps(&self) -> u32 {
        self.overlaps.get()
    }
}

/// A worker calling the actor from a sync task, each call awaited.
#[mproc::task]
fn visit_in_turn(seq: ActorRef<Sequencer>, caller: u32, n: u32) -> u32 {
    for i in 0..n {
        futures::executor::block_on(seq.visit(caller, i)).expect("visit");
    }
    n
}

/// A worker calling the actor from an async task, all calls in flight at
/// once.
#[mproc::task]
async fn visit_pipelined(seq: ActorRef<Sequencer>, caller: u32, n: u32) -> u32 {
    let calls: Vec<_> = (0..n).map(|i| seq.visit(caller, i)).collect();
    let done = join_all(calls).await;
    assert!(done.iter().all(Result::is_ok));
    n
}

/// Each caller's calls are in the order it made them, and nothing ran
/// concurrently.
fn check_log(log: &[(u32, u32)], callers: impl IntoIterator<Item = u32>, each: u32) {
    for caller in callers {
        let seen: Vec<u32> = log
            .iter()
            .filter(|(c, _)| *c == caller)
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(
            seen,
            (0..each).collect::<Vec<_>>(),
            "caller {caller}'s calls, in the order applied"
        );
    }
}

#[test]
fn calls_from_many_callers_run_one_at_a_time_in_each_callers_order() {
    run(async {
        let ex = Executor::new(2).await.unwrap();
        let seq = Sequencer::spawn(&ex, ()).await.unwrap();
        const EACH: u32 = 60;
        // Callers 0–3: tokio tasks of this process, each with all its calls
        // in flight at once, on the one connection they share.
        let local: Vec<_> = (0..4u32)
            .map(|caller| {
                let seq = seq.clone();
                tokio::spawn(async move {
                    let calls: Vec<_> = (0..EACH).map(|i| seq.visit(caller, i)).collect();
                    join_all(calls).await
                })
            })
            .collect();
        // Callers 10–13: tasks in the workers, awaiting each call; callers
        // 20–23: async tasks there, pipelining.
        let args = |callers: std::ops::Range<u32>| {
            let seq = seq.clone();
            callers.map(move |c| (seq.clone(), c, EACH))
        };
        let in_turn = ex.map(visit_in_turn, args(10..14));
        let piped = ex.map(visit_pipelined, args(20..24));
        let (in_turn, piped) = tokio::join!(
            in_turn.try_collect::<Vec<u32>>(),
            piped.try_collect::<Vec<u32>>()
        );
        assert_eq!(in_turn.unwrap(), vec![EACH; 4]);
        assert_eq!(piped.unwrap(), vec![EACH; 4]);
        for h in local {
            let replies = h.await.unwrap();
            assert!(replies.iter().all(Result::is_ok), "{replies:?}");
        }
        let log = seq.log().await.unwrap();
        assert_eq!(log.len(), 12 * EACH as usize);
        check_log(&log, (0..4).chain(10..14).chain(20..24), EACH);
        assert_eq!(seq.overlaps().await, Ok(0), "two calls ran at once");
        seq.stop().await.unwrap();
    });
}

#[test]
fn a_thousand_calls_in_flight_to_one_actor_resolve_in_order() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let c = Counter::spawn(&ex, 0).await.unwrap();
        // Every call is on its way when the client method returns: none is
        // awaited before the last is made.
        let calls: Vec<mproc::ActorCall<u64>> = (0..1000).map(|_| c.incr(1)).collect();
        // Awaiting the last first: it does not wait for anyone to poll the
        // others.
        let mut calls = calls.into_iter().rev();
        assert_eq!(calls.next().unwrap().await, Ok(1000));
        let rest: Vec<u64> = join_all(calls)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rest, (1..1000).rev().collect::<Vec<u64>>());
        // A dropped call still runs (only its result is forgotten).
        for _ in 0..10 {
            drop(c.incr(1));
        }
        assert_eq!(c.get().await, Ok(1010));
        c.stop().await.unwrap();
    });
}

/// An actor that holds a reference to another and takes references as
/// arguments.
#[mproc::actor]
struct Relay {
    target: ActorRef<Counter>,
}

#[mproc::actor]
impl Relay {
    fn new(target: ActorRef<Counter>) -> Self {
        Relay { target }
    }
    async fn forward(&self, by: u64) -> Result<u64, TaskError> {
        self.target.incr(by).await
    }
    fn forward_blocking(&self, by: u64) -> Result<u64, TaskError> {
        futures::executor::block_on(self.target.incr(by))
    }
    async fn read(&self, other: ActorRef<Counter>) -> Result<u64, TaskError> {
        other.get().await
    }
    fn target_id(&self) -> String {
        self.target.id().to_string()
    }
}

#[mproc::task]
fn bump(c: ActorRef<Counter>, by: u64) -> u64 {
    futures::executor::block_on(c.incr(by)).expect("incr")
}

#[mproc::task]
async fn bump_async(c: ActorRef<Counter>, by: u64) -> (u64, String) {
    (c.incr(by).await.expect("incr"), c.id().to_string())
}

#[mproc::task]
fn bump_from_process(c: ActorRef<Counter>, by: u64) {
    futures::executor::block_on(c.incr(by)).expect("incr");
}

fn assert_reference<T: Clone + Send + Sync + Serialize + serde::de::DeserializeOwned>() {}

#[test]
fn references_travel_to_tasks_processes_and_other_actors() {
    assert_reference::<ActorRef<Counter>>();
    run(async {
        let ex = Executor::new(2).await.unwrap();
        let c = Counter::spawn(&ex, 0).await.unwrap();
        let id = c.id().to_string();

        // Tasks: sync and async, one submit and a whole map.
        assert_eq!(ex.submit(bump, (c.clone(), 1)).await, Ok(1));
        let (n, seen_id) = ex.submit(bump_async, (c.clone(), 1)).await.unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen_id, id, "the reference keeps the actor's address");
        let all: Vec<u64> = ex
            .map(bump, vec![(c.clone(), 1); 100])
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(c.get().await, Ok(102));
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 100, "each increment seen once: {all:?}");

        // `Process` targets, every start method (a forked child must not use
        // the connection it inherits).
        for method in [
            StartMethod::Fork,
            StartMethod::Spawn,
            StartMethod::Forkserver,
        ] {
            let p = Process::new(bump_from_process, (c.clone(), 10))
                .start_method(method)
                .start()
                .unwrap();
            assert!(p.join_timeout(LIMIT).unwrap(), "{method:?}: child hung");
            assert_eq!(p.exitcode(), Some(0), "{method:?}");
        }
        assert_eq!(c.get().await, Ok(132));

        // Another actor: given one at construction, and one per call.
        let r = Relay::spawn(&ex, c.clone()).await.unwrap();
        assert_eq!(r.forward(1000).await, Ok(Ok(1132)));
        assert_eq!(r.forward_blocking(1000).await, Ok(Ok(2132)));
        assert_eq!(r.target_id().await.unwrap(), id);
        let other = Counter::spawn(&ex, 77).await.unwrap();
        assert_eq!(r.read(other.clone()).await, Ok(Ok(77)));
        assert_eq!(c.get().await, Ok(2132));

        // A reference that went through serde is the same actor; one to
        // another type is refused.
        let bytes = postcard::to_allocvec(&c).unwrap();
        let back: ActorRef<Counter> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.id(), c.id());
        assert_eq!(back.incr(1).await, Ok(2133));
        assert!(postcard::from_bytes::<ActorRef<Ledger>>(&bytes).is_err());

        let pids = [c.pid().await.unwrap(), other.pid().await.unwrap()];
        for a in [&c, &other] {
            a.stop().await.unwrap();
        }
        r.stop().await.unwrap();
        assert!(wait_gone(&pids, Duration::from_secs(5)));
    });
}

#[test]
fn every_actor_has_its_own_address_on_this_node() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let mut actors = Vec::new();
        for i in 0..3 {
            actors.push(Counter::spawn(&ex, i).await.unwrap());
        }
        let ids: HashSet<WorkerId> = actors.iter().map(|a| a.id().clone()).collect();
        assert_eq!(ids.len(), 3);
        let shown: HashSet<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 3, "{shown:?}");
        for a in &actors {
            assert_eq!(a.id().node(), NodeId::DRIVER);
            assert_eq!(a.node().await, Ok(NodeId::DRIVER.get()));
            assert_eq!(a.clone().id(), a.id());
            assert_eq!(a.restarts(), 0);
            let text = format!("{a:?}");
            assert!(text.contains("actors::Counter"), "{text}");
        }
        for a in &actors {
            a.stop().await.unwrap();
        }
    });
}

/// An actor that works on Manager objects: one given at construction, and
/// others per call.
#[mproc::actor]
struct Tally {
    counts: DictProxy<String, u64>,
}

#[mproc::actor]
impl Tally {
    fn new(counts: DictProxy<String, u64>) -> Self {
        Tally { counts }
    }
    /// Takes `n` words from `words`, counts each, and echoes it to `seen`.
    fn drain(&self, words: QueueProxy<String>, seen: ListProxy<String>, n: usize) -> usize {
        for _ in 0..n {
            let w = words.get_timeout(LIMIT).expect("a word");
            let c = self.counts.get(&w).expect("get").unwrap_or(0);
            self.counts.insert(w.clone(), c + 1).expect("insert");
            seen.push(w).expect("push");
        }
        n
    }
    fn publish(&self, out: QueueProxy<u64>, items: Vec<u64>) -> usize {
        for i in &items {
            out.put(*i).expect("put");
        }
        items.len()
    }
}

#[test]
fn manager_proxies_passed_to_an_actor_work_there() {
    run(async {
        let m = Manager::start().unwrap();
        let server = m.server_pid().unwrap();
        let counts: DictProxy<String, u64> = m.dict().unwrap();
        let words: QueueProxy<String> = m.queue().unwrap();
        let seen: ListProxy<String> = m.list().unwrap();
        let out: QueueProxy<u64> = m.queue().unwrap();
        let ex = Executor::new(1).await.unwrap();
        let t = Tally::spawn(&ex, counts.clone()).await.unwrap();
        for w in ["a", "b", "a", "c", "a"] {
            words.put(w.to_string()).unwrap();
        }
        assert_eq!(t.drain(words.clone(), seen.clone(), 5).await, Ok(5));
        assert_eq!(counts.get(&"a".to_string()).unwrap(), Some(3));
        assert_eq!(counts.len().unwrap(), 3);
        assert_eq!(seen.to_vec().unwrap(), ["a", "b", "a", "c", "a"]);
        assert_eq!(t.publish(out.clone(), vec![4, 5, 6]).await, Ok(3));
        let got: Vec<u64> = (0..3).map(|_| out.get_timeout(LIMIT).unwrap()).collect();
        assert_eq!(got, vec![4, 5, 6]);
        t.stop().await.unwrap();
        drop(ex);
        m.shutdown().unwrap();
        assert!(wait_gone(&[server], Duration::from_secs(5)));
    });
}

// ----- tracing, in a helper process with its own global subscriber -------

#[mproc::actor]
struct Chatty;

#[mproc::actor]
impl Chatty {
    fn new() -> Self {
        Chatty
    }
    fn hello(&self, n: u32) -> u32 {
        tracing::info!(n, "hello from the actor");
        n + 1
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
}

const ROLE: &str = "MPROC_TEST_ROLE";

/// Run by `actor_calls_are_traced_on_both_sides`: logs at TRACE to stdout,
/// calls an actor, prints its id and pid.
#[test]
#[ignore = "helper process for actor_calls_are_traced_on_both_sides"]
fn traced_calls() {
    if std::env::var(ROLE).as_deref() != Ok("traced") {
        return;
    }
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .init();
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let a = Chatty::spawn(&ex, ()).await.unwrap();
        assert_eq!(a.hello(41).await, Ok(42));
        let pid = a.pid().await.unwrap();
        println!("ACTOR {} {pid}", a.id());
        a.stop().await.unwrap();
    });
}

#[test]
fn actor_calls_are_traced_on_both_sides() {
    let out = run_self("traced_calls", &[(ROLE, "traced")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (id, pid) = text
        .lines()
        .find_map(|l| l.strip_prefix("ACTOR "))
        .and_then(|l| l.split_once(' '))
        .unwrap_or_else(|| panic!("no ACTOR line in:\n{text}"));
    // In the actor: the event, inside the `mproc.actor` span, forwarded to
    // the program's subscriber with the actor process's pid.
    let line = text
        .lines()
        .find(|l| l.contains("hello from the actor"))
        .unwrap_or_else(|| panic!("no forwarded event in:\n{text}"));
    assert!(line.contains("mproc.actor{"), "{line}");
    assert!(line.contains("actor=\"actors::Chatty\""), "{line}");
    assert!(line.contains("method=\"hello\""), "{line}");
    assert!(line.contains(&format!("id={id}")), "{line}");
    assert!(line.contains("n=41"), "{line}");
    assert!(line.contains(&format!("pid={pid}")), "{line}");
    // In the caller: the `mproc.actor_call` span of the same call.
    assert!(
        text.lines().any(|l| l.contains("mproc.actor_call{")
            && l.contains("actor=\"actors::Chatty\"")
            && l.contains("method=\"hello\"")
            && l.contains(&format!("id={id}"))),
        "no caller-side span in:\n{text}"
    );
}

// ----- the examples ------------------------------------------------------

/// Runs `examples/<name>` as `cargo test` builds it with the tests (a lone
/// `cargo test --test actors` does not): its stdout, or `None` when it is
/// not built, or built before its source last changed.
fn run_example(name: &str) -> Option<String> {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent()?.parent()?.join("examples").join(name);
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.rs"));
    let built = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if built(&path).is_none() || built(&path) < built(&source) {
        eprintln!("skipped: {} is not built from its source", path.display());
        return None;
    }
    let child = std::process::Command::new(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(LIMIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = rx.recv_timeout(Duration::from_secs(5));
            panic!("example {name} did not finish within {LIMIT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name}: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stderr.is_empty(), "{name} printed on stderr:\n{stderr}");
    Some(stdout)
}

#[test]
fn the_actor_examples_print_what_they_promise() {
    if let Some(out) = run_example("actor_counter") {
        for line in [
            "c.incr(2)    = 7",
            "c.slow_get() = 7",
            "five calls in flight: [8, 9, 10, 11, 12]",
            "d.incr(1)    = 1",
            "c.get() fails: worker died (exit code 0)",
        ] {
            assert!(out.contains(line), "no {line:?} in:\n{out}");
        }
    }
    if let Some(out) = run_example("actor_accumulator") {
        assert!(out.contains("7 lines, 85 words"), "{out}");
        assert!(out.contains("the tasks returned 85 words"), "{out}");
        assert!(out.contains(" 11  the"), "{out}");
    }
}
