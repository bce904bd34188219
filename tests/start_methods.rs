//! Start methods, exit handling and signals, observed from outside: each
//! test re-runs this test binary as a helper program (selected by
//! `MPROC_TEST_ROLE`), acts on it (lets it exit, SIGKILLs it, sends Ctrl-C to
//! its process group) and checks what is left.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{gone, wait_gone};
use mproc::prelude::*;

const ROLE: &str = "MPROC_TEST_ROLE";

#[mproc::task]
fn sleep_ms(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

#[mproc::task]
fn sleep_then_write(ms: u64, path: String) {
    std::thread::sleep(Duration::from_millis(ms));
    std::fs::write(path, "joined").unwrap();
}

#[mproc::task]
fn whoami() -> (String, u32) {
    let me = current_process();
    (me.name().to_string(), me.pid())
}

fn method_named(s: &str) -> StartMethod {
    match s {
        "spawn" => StartMethod::Spawn,
        "forkserver" => StartMethod::Forkserver,
        "fork" => StartMethod::Fork,
        other => panic!("unknown method {other}"),
    }
}

fn role() -> Option<(String, String)> {
    let r = std::env::var(ROLE).ok()?;
    let (a, b) = r.split_once(':').unwrap_or((r.as_str(), ""));
    Some((a.to_string(), b.to_string()))
}

/// The parent pid of `pid`, from `/proc`.
fn ppid_of(pid: u32) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = s.rsplit(')').next().unwrap();
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// Starts this test binary as a helper running test `name` in `role`.
fn helper(name: &str, role: &str, own_group: bool) -> (Child, Receiver<String>) {
    helper_with(name, role, own_group, &[])
}

fn helper_with(
    name: &str,
    role: &str,
    own_group: bool,
    env: &[(&str, &str)],
) -> (Child, Receiver<String>) {
    // With `MPROC_TEST_IGNORED_SIGNALS` set, the helper starts with SIGINT
    // and SIGQUIT ignored, as a background job or `nohup` would start it.
    let mut cmd = if env.iter().any(|(k, _)| *k == IGNORED_SIGNALS) {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "trap '' INT QUIT; exec \"$0\" \"$@\""])
            .arg(std::env::current_exe().unwrap());
        c
    } else {
        Command::new(std::env::current_exe().unwrap())
    };
    cmd.envs(env.iter().copied());
    cmd.args([
        "--exact",
        name,
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, role)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if own_group {
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// The first line starting with `tag`, without the tag (bounded wait).
fn expect_line(child: &mut Child, rx: &Receiver<String>, tag: &str) -> String {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                // libtest may print its "test … " prefix on the same line.
                if let Some((_, rest)) = line.split_once(tag) {
                    return rest.trim().to_string();
                }
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("helper never printed {tag:?}: {e}");
            }
        }
    }
}

fn pids(s: &str) -> Vec<u32> {
    s.split_whitespace().map(|p| p.parse().unwrap()).collect()
}

/// Waits (bounded) for the helper to exit.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("helper did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

// ----- set_start_method ------------------------------------------------------

#[test]
#[ignore = "helper process for set_start_method_once_per_program"]
fn helper_set_once() {
    if role().is_none() {
        return;
    }
    assert_eq!(get_start_method(), StartMethod::Spawn);
    set_start_method(StartMethod::Forkserver).unwrap();
    assert_eq!(get_start_method(), StartMethod::Forkserver);
    let err = set_start_method(StartMethod::Fork).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Spawn);
    assert_eq!(get_start_method(), StartMethod::Forkserver);
    // Every way of starting a process now uses the fork server...
    let p = Process::new(sleep_ms, 300).start().unwrap();
    let server = ppid_of(p.pid());
    assert_ne!(server, std::process::id());
    assert!(comm_of(server).starts_with("mproc-"), "{}", comm_of(server));
    p.join().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ex = Executor::new(1).await.unwrap();
        let (_, pid) = ex.submit(whoami, ()).await.unwrap();
        assert_eq!(ppid_of(pid), server);
        ex.shutdown().await;
    });
    // ...unless a builder chooses.
    let p = Process::new(sleep_ms, 300)
        .start_method(StartMethod::Spawn)
        .start()
        .unwrap();
    assert_eq!(ppid_of(p.pid()), std::process::id());
    p.join().unwrap();
    println!("SETONCE ok");
}

#[test]
fn set_start_method_once_per_program() {
    let (mut child, rx) = helper("helper_set_once", "setonce", false);
    expect_line(&mut child, &rx, "SETONCE");
    assert!(wait_exit(&mut child).success());
}

// ----- exit of the parent: daemons ended, others joined -------------------

#[test]
#[ignore = "helper process for exit_ends_daemons_and_joins_the_rest"]
fn helper_exit() {
    let Some((how, method)) = role() else { return };
    set_start_method(method_named(&method)).unwrap();
    let path = std::env::var("MPROC_TEST_FILE").unwrap();
    let joined = Process::new(sleep_then_write, (400, path)).start().unwrap();
    let daemon = Process::new(sleep_ms, 60_000).daemon(true).start().unwrap();
    println!("PIDS {} {}", joined.pid(), daemon.pid());
    drop((joined, daemon));
    match how.as_str() {
        "exit" => std::process::exit(0),
        "panic" => panic!("the helper's main panics"),
        _ => {} // return normally
    }
}

fn exit_case(how: &str, method: &str) {
    let file = std::env::temp_dir().join(format!(
        "mproc-test-exit-{how}-{method}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&file);
    let started = Instant::now();
    let (mut child, rx) = helper_with(
        "helper_exit",
        &format!("{how}:{method}"),
        false,
        &[("MPROC_TEST_FILE", file.to_string_lossy().as_ref())],
    );
    let p = pids(&expect_line(&mut child, &rx, "PIDS "));
    let st = wait_exit(&mut child);
    let took = started.elapsed();
    assert_eq!(st.success(), how != "panic", "{st:?}");
    assert_eq!(
        std::fs::read_to_string(&file).ok().as_deref(),
        Some("joined"),
        "the non-daemon child was joined before exit ({how}, {method})"
    );
    assert!(took >= Duration::from_millis(400));
    assert!(
        wait_gone(&p, Duration::from_secs(2)),
        "children left after exit: {p:?}"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn exit_ends_daemons_and_joins_the_rest() {
    for method in ["spawn", "forkserver", "fork"] {
        exit_case("return", method);
    }
    exit_case("exit", "spawn");
    exit_case("panic", "fork");
}

// ----- a parent killed by SIGKILL --------------------------------------------

#[test]
#[ignore = "helper process for nothing_outlives_a_killed_parent"]
fn helper_victim() {
    let Some((_, method)) = role() else { return };
    let m = method_named(&method);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ex = Executor::builder()
            .max_workers(2)
            .start_method(m)
            .build()
            .await
            .unwrap();
        let busy: Vec<_> = (0..2).map(|_| ex.submit(sleep_ms, 60_000)).collect();
        let a = Process::new(sleep_ms, 60_000)
            .start_method(m)
            .start()
            .unwrap();
        let b = Process::new(sleep_ms, 60_000)
            .daemon(true)
            .start_method(m)
            .start()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut all = ex.worker_pids();
        all.extend([a.pid(), b.pid()]);
        if m == StartMethod::Forkserver {
            all.push(ppid_of(a.pid()));
        }
        let all: Vec<String> = all.iter().map(u32::to_string).collect();
        println!("PIDS {}", all.join(" "));
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(busy);
    });
}

#[test]
fn nothing_outlives_a_killed_parent() {
    for method in ["spawn", "forkserver", "fork"] {
        let (mut child, rx) = helper("helper_victim", &format!("victim:{method}"), false);
        let p = pids(&expect_line(&mut child, &rx, "PIDS "));
        assert_eq!(p.len(), if method == "forkserver" { 5 } else { 4 });
        assert!(p.iter().all(|x| !gone(*x)));
        for &pid in &p[..4] {
            assert!(
                !comm_of(pid).starts_with("mproc-"),
                "worker or child named {}",
                comm_of(pid)
            );
        }
        if method == "forkserver" {
            assert!(comm_of(p[4]).starts_with("mproc-"), "{}", comm_of(p[4]));
        }
        child.kill().unwrap(); // SIGKILL: no destructor, no exit handler
        let killed = Instant::now();
        child.wait().unwrap();
        assert!(
            wait_gone(&p, Duration::from_millis(1500)),
            "{method}: left behind after the parent's death: {p:?}"
        );
        eprintln!("{method}: all gone {:?} after the kill", killed.elapsed());
    }
}

// ----- Ctrl-C ------------------------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

#[test]
#[ignore = "helper process for ctrl_c_shuts_down_cleanly"]
fn helper_ctrl_c() {
    let Some((how, method)) = role() else { return };
    if how == "default" {
        // A program that keeps Ctrl-C's default: say so, since the test run
        // may have been started with SIGINT ignored (a background job).
        // SAFETY: SIG_DFL registers no handler.
        unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGINT,
                nix::sys::signal::SigHandler::SigDfl,
            )
        }
        .unwrap();
    }
    if how == "handled" {
        let act = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(on_sigint),
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGINT, &act) }.unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ex = Executor::builder()
            .max_workers(2)
            .start_method(method_named(&method))
            .build()
            .await
            .unwrap();
        let busy: Vec<_> = (0..4).map(|_| ex.submit(sleep_ms, 60_000)).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let all: Vec<String> = ex.worker_pids().iter().map(u32::to_string).collect();
        println!("PIDS {}", all.join(" "));
        let end = Instant::now() + Duration::from_secs(30);
        while !INTERRUPTED.load(Ordering::SeqCst) && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ex.shutdown_now().await;
        for h in busy {
            assert_eq!(h.await, Err(TaskError::Cancelled));
        }
        println!("CLEAN");
    });
}

/// Set in a helper's environment to start it with SIGINT and SIGQUIT
/// ignored.
const IGNORED_SIGNALS: &str = "MPROC_TEST_IGNORED_SIGNALS";

#[test]
fn ctrl_c_shuts_down_cleanly() {
    ctrl_c_cases(&[]);
}

/// The same, in a program started with SIGINT and SIGQUIT ignored: nothing
/// of mproc relies on inherited signal dispositions.
#[test]
fn ctrl_c_shuts_down_cleanly_when_started_with_signals_ignored() {
    ctrl_c_cases(&[(IGNORED_SIGNALS, "1")]);
}

fn ctrl_c_cases(env: &[(&str, &str)]) {
    for method in ["spawn", "forkserver", "fork"] {
        for how in ["handled", "default"] {
            let (mut child, rx) =
                helper_with("helper_ctrl_c", &format!("{how}:{method}"), true, env);
            let p = pids(&expect_line(&mut child, &rx, "PIDS "));
            // Ctrl-C: SIGINT to the whole process group.
            nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            )
            .unwrap();
            let st = wait_exit(&mut child);
            let err = stderr_of(&mut child);
            if how == "handled" {
                assert!(st.success(), "{method}: {st:?}\n{err}");
                expect_line(&mut child, &rx, "CLEAN");
            } else {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(st.signal(), Some(libc::SIGINT), "{method}: {st:?}");
            }
            assert!(
                !err.contains("mproc") && !err.contains("panicked"),
                "{how} {method}: noise on stderr:\n{err}"
            );
            assert!(
                wait_gone(&p, Duration::from_millis(1500)),
                "{how} {method}: workers left: {p:?}"
            );
        }
    }
}

// ----- tracing in forked workers ---------------------------------------------

#[mproc::task]
fn chatty(n: u32) -> u32 {
    tracing::info!(n, "hello from a forked worker");
    n + 1
}

#[test]
#[ignore = "helper process for forked_workers_forward_events_not_log_through_the_parent"]
fn helper_fork_tracing() {
    if role().is_none() {
        return;
    }
    let cap = common::Capture::default();
    let writer = cap.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ex = Executor::builder()
            .max_workers(1)
            .start_method(StartMethod::Fork)
            .build()
            .await
            .unwrap();
        assert_eq!(ex.submit(chatty, 1).await, Ok(2));
        let (name, _) = ex.workers()[0].clone();
        ex.shutdown().await;
        let text = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("hello from a forked worker"))
            .unwrap_or_else(|| panic!("no forwarded event in:\n{text}"));
        assert!(
            line.contains(&name),
            "forwarded with the worker's name: {line}"
        );
    });
    println!("TRACING ok");
}

#[test]
fn forked_workers_forward_events_not_log_through_the_parent() {
    let (mut child, rx) = helper("helper_fork_tracing", "tracing", false);
    expect_line(&mut child, &rx, "TRACING");
    assert!(wait_exit(&mut child).success());
}

// ----- a fork server that dies is replaced ------------------------------------

#[test]
fn a_dead_fork_server_is_replaced() {
    // The only test of this binary that uses the fork server in-process.
    let start = || {
        Process::new(sleep_ms, 300)
            .start_method(StartMethod::Forkserver)
            .start()
            .unwrap()
    };
    let p = start();
    let server = ppid_of(p.pid());
    assert!(comm_of(server).starts_with("mproc-"), "{}", comm_of(server));
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while comm_of(server).starts_with("mproc-") && !gone(server) {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(5));
    }
    let p = start();
    let again = ppid_of(p.pid());
    assert_ne!(again, server, "a new fork server");
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    // The dead server was reaped by the program (no zombie left).
    assert!(
        std::fs::metadata(format!("/proc/{server}")).is_err(),
        "the dead fork server was not reaped"
    );
}

// ----- names ---------------------------------------------------------------------

/// A user's process never carries a helper's `mproc-` name, not even for the
/// instant right after `start()` returns (a forked child is born with the
/// name of the thread or process that forked it).
#[test]
fn a_started_process_never_carries_a_helper_name() {
    for m in [
        StartMethod::Spawn,
        StartMethod::Forkserver,
        StartMethod::Fork,
    ] {
        let mut started = Vec::new();
        for _ in 0..20 {
            let p = Process::new(sleep_ms, 50).start_method(m).start().unwrap();
            let name = comm_of(p.pid());
            assert!(
                !name.starts_with("mproc-"),
                "{m}: a process named {name:?} right after start()"
            );
            started.push(p);
        }
        for p in started {
            assert!(p.join_timeout(Duration::from_secs(30)).unwrap());
            assert_eq!(p.exitcode(), Some(0));
        }
    }
}
