//! The `Process` contract (API.md §5, §9), under every start method: each
//! case is a function of the method, and `per_method!` makes one test per
//! (case, method).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{gone, run_self, wait_gone, LIMIT};
use mproc::prelude::*;

/// A scratch file that is removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Scratch(std::env::temp_dir().join(format!("mproc-test-{tag}-{}-{n}", std::process::id())))
    }
    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
    fn read(&self) -> Option<String> {
        std::fs::read_to_string(&self.0).ok()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[mproc::task]
fn report(path: String) -> u64 {
    let me = current_process();
    let parent = parent_process().map(|p| format!("{} {}", p.name(), p.pid()));
    let text = format!(
        "{}|{}|{}",
        me.name(),
        me.pid(),
        parent.unwrap_or_else(|| "none".into())
    );
    std::fs::write(path, text).unwrap();
    42 // discarded
}

#[mproc::task]
fn exit_with(code: i32) {
    std::process::exit(code)
}

/// Panics; see `a_panicking_target_exits_1_and_prints_its_message`.
#[mproc::task]
fn boom() {
    panic!("boom from the target")
}

#[mproc::task]
fn abort_now() {
    std::process::abort()
}

#[mproc::task]
fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[mproc::task]
async fn async_touch(path: String) {
    tokio::time::sleep(Duration::from_millis(1)).await;
    std::fs::write(path, "async").unwrap();
}

#[mproc::task]
fn spawn_grandchild(path: String) {
    // A process started from a child: joined when the child exits.
    let p = Process::new(report, path).start().unwrap();
    drop(p);
}

fn start(p: Process, m: StartMethod) -> ProcessHandle {
    p.start_method(m).start().expect("process starts")
}

fn wait_for_file(s: &Scratch) -> String {
    let end = Instant::now() + LIMIT;
    loop {
        if let Some(t) = s.read().filter(|t| !t.is_empty()) {
            return t;
        }
        assert!(Instant::now() < end, "{} never appeared", s.path());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn runs_the_target_in_a_named_child(m: StartMethod) {
    let s = Scratch::new("report");
    let p = start(Process::new(report, s.path()), m);
    assert!(p.name().starts_with("Process-"), "{}", p.name());
    assert_ne!(p.pid(), std::process::id());
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    let text = s.read().expect("the target ran");
    let parts: Vec<&str> = text.split('|').collect();
    assert_eq!(parts[0], p.name());
    assert_eq!(parts[1], p.pid().to_string());
    assert_eq!(parts[2], format!("MainProcess {}", std::process::id()));
    assert!(gone(p.pid()));

    let s = Scratch::new("named");
    let p = start(Process::new(report, s.path()).name("Test"), m);
    assert_eq!(p.name(), "Test");
    assert!(p.join_timeout(LIMIT).unwrap());
    assert!(s.read().unwrap().starts_with("Test|"));
}

fn exit_codes_follow_python(m: StartMethod) {
    let cases: Vec<(ProcessHandle, i32)> = vec![
        (start(Process::new(exit_with, 3), m), 3),
        (start(Process::new(exit_with, 0), m), 0),
        (start(Process::new(abort_now, ()), m), -libc::SIGABRT),
    ];
    for (p, want) in cases {
        assert!(p.join_timeout(LIMIT).unwrap());
        assert_eq!(p.exitcode(), Some(want), "{}", p.name());
    }
}

fn terminate_kill_and_join_timeout(m: StartMethod) {
    let p = start(Process::new(sleep_ms, 60_000), m);
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert!(!p.join_timeout(Duration::from_millis(50)).unwrap());
    p.terminate().unwrap();
    assert!(p.join_timeout(LIMIT).unwrap());
    assert_eq!(p.exitcode(), Some(-libc::SIGTERM));
    // After exit, signals are no-ops, never errors.
    p.terminate().unwrap();
    p.kill().unwrap();

    let p = start(Process::new(sleep_ms, 60_000), m);
    p.kill().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-libc::SIGKILL));
    assert!(gone(p.pid()));
}

fn async_targets_and_join_async(m: StartMethod) {
    let s = Scratch::new("async");
    let p = start(Process::new(async_touch, s.path()), m);
    common::run(async move {
        p.join_async().await.unwrap();
        assert_eq!(p.exitcode(), Some(0));
    });
    assert_eq!(s.read().as_deref(), Some("async"));
}

fn dropping_a_handle_does_not_stop_the_process(m: StartMethod) {
    let s = Scratch::new("dropped");
    let p = start(Process::new(report, s.path()), m);
    let pid = p.pid();
    drop(p);
    let text = wait_for_file(&s);
    assert!(text.contains(&pid.to_string()));
    // `active_children` reaps it once it has finished.
    let end = Instant::now() + LIMIT;
    while active_children().iter().any(|c| c.pid() == pid) {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(wait_gone(&[pid], LIMIT));
}

fn active_children_lists_running_ones(m: StartMethod) {
    let p = start(Process::new(sleep_ms, 60_000).name("sleeper"), m);
    let found = active_children()
        .into_iter()
        .find(|c| c.pid() == p.pid())
        .expect("a running child is active");
    assert_eq!(found.name(), "sleeper");
    p.kill().unwrap();
    p.join().unwrap();
    assert!(active_children().iter().all(|c| c.pid() != p.pid()));
}

fn children_of_children_are_joined(m: StartMethod) {
    let s = Scratch::new("grandchild");
    let p = start(Process::new(spawn_grandchild, s.path()), m);
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    // The child joined its own non-daemon child before exiting.
    let text = s
        .read()
        .expect("the grandchild ran before the child exited");
    let parts: Vec<&str> = text.split('|').collect();
    assert!(parts[0].starts_with("Process-"), "{text}");
    assert!(parts[0].contains(':'), "nested name: {text}");
    assert!(parts[2].ends_with(&p.pid().to_string()), "{text}");
}

macro_rules! per_method {
    ($($case:ident),* $(,)?) => {
        mod spawn {
            $( #[test] fn $case() { super::$case(mproc::StartMethod::Spawn) } )*
        }
        mod forkserver {
            $( #[test] fn $case() { super::$case(mproc::StartMethod::Forkserver) } )*
        }
        mod fork {
            $( #[test] fn $case() { super::$case(mproc::StartMethod::Fork) } )*
        }
    };
}

per_method!(
    runs_the_target_in_a_named_child,
    exit_codes_follow_python,
    terminate_kill_and_join_timeout,
    async_targets_and_join_async,
    dropping_a_handle_does_not_stop_the_process,
    active_children_lists_running_ones,
    children_of_children_are_joined,
);

#[test]
fn names_are_numbered_whether_or_not_named_or_started() {
    assert_eq!(current_process().name(), "MainProcess");
    assert!(parent_process().is_none());
    assert!(cpu_count() >= 1);
    let num = |p: &Process| -> u64 {
        let s = format!("{p:?}");
        let i = s.find("Process-").expect("default name") + "Process-".len();
        s[i..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let a = Process::new(sleep_ms, 0);
    let _named = Process::new(sleep_ms, 0).name("x");
    let c = Process::new(sleep_ms, 0);
    // Other tests create processes concurrently, so numbers only grow, and
    // the named one took a number too.
    assert!(num(&c) >= num(&a) + 2, "{a:?} {c:?}");
}

#[test]
fn handles_are_send_and_sync_and_methods_have_python_names() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ProcessHandle>();
    send_sync::<ProcessInfo>();
    for (m, s) in [
        (StartMethod::Spawn, "spawn"),
        (StartMethod::Forkserver, "forkserver"),
        (StartMethod::Fork, "fork"),
    ] {
        assert_eq!(m.to_string(), s);
        assert_eq!(s.parse::<StartMethod>().unwrap(), m);
    }
    let err = "threads".parse::<StartMethod>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Spawn);
}

#[test]
fn start_method_defaults_to_spawn_without_being_fixed() {
    // `set_start_method` is exercised in a separate process (start_methods.rs):
    // it is global to the program. Reading never fixes the method.
    assert_eq!(get_start_method(), StartMethod::Spawn);
    assert_eq!(get_start_method(), StartMethod::Spawn);
}

#[test]
fn bad_arguments_are_a_clear_error_not_a_panic() {
    #[derive(Debug, serde::Deserialize)]
    struct Unsendable;
    impl serde::Serialize for Unsendable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("this value refuses to be sent"))
        }
    }
    #[mproc::task]
    fn takes_unsendable(_u: Unsendable) {}

    let err = Process::new(takes_unsendable, Unsendable)
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Task);
    assert!(err.to_string().contains("encode"), "{err}");
}

#[test]
fn fork_is_safe_while_other_threads_hold_stdout_and_allocate() {
    // Threads print and allocate without pause while processes are forked:
    // a child that inherited a held stdout lock would hang on its print.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noisy: Vec<_> = (0..3)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut v = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    v.push(vec![i as u8; 100]);
                    if v.len() > 100 {
                        v.clear();
                    }
                    eprint!("");
                    print!("");
                }
            })
        })
        .collect();
    let mut procs = Vec::new();
    for _ in 0..20 {
        procs.push(start(
            Process::new(say, "forked".to_string()),
            StartMethod::Fork,
        ));
    }
    for p in &procs {
        assert!(p.join_timeout(LIMIT).unwrap(), "a forked child hung");
        assert_eq!(p.exitcode(), Some(0));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in noisy {
        t.join().unwrap();
    }
}

#[mproc::task]
fn say(s: String) {
    println!("{s} {}", std::process::id());
}

/// A target that panics exits with code 1 and prints its message on stderr
/// (API.md §5). The panic runs in a helper test process whose stderr is
/// captured and checked here, so the expected panic does not print into the
/// test run's output.
#[test]
fn a_panicking_target_exits_1_and_prints_its_message() {
    for method in ["spawn", "forkserver", "fork"] {
        let out = run_self("helper_panicking_target", &[("MPROC_TEST_METHOD", method)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{method}: helper failed:\n{stderr}");
        assert!(
            stderr.contains("boom from the target"),
            "{method}: the panic message is not on stderr:\n{stderr}"
        );
    }
}

#[test]
#[ignore = "helper process for a_panicking_target_exits_1_and_prints_its_message"]
fn helper_panicking_target() {
    let m = match std::env::var("MPROC_TEST_METHOD").as_deref() {
        Ok("spawn") => StartMethod::Spawn,
        Ok("forkserver") => StartMethod::Forkserver,
        Ok("fork") => StartMethod::Fork,
        _ => return, // run by `--ignored` without the parent test: nothing to do
    };
    let p = start(Process::new(boom, ()), m);
    assert!(p.join_timeout(LIMIT).unwrap());
    assert_eq!(p.exitcode(), Some(1));
}
