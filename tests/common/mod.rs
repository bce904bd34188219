//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Every wait in a test is bounded by this.
pub(crate) const LIMIT: Duration = Duration::from_secs(60);

/// True when `pid` no longer names a live process (gone or a zombie).
pub(crate) fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Waits (bounded) until every pid is gone.
pub(crate) fn wait_gone(pids: &[u32], within: Duration) -> bool {
    let end = Instant::now() + within;
    loop {
        if pids.iter().all(|p| gone(*p)) {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs an async test body on a multi-threaded runtime with a time limit.
pub(crate) fn run<F: std::future::Future<Output = ()>>(f: F) {
    run_within(LIMIT, f)
}

/// [`run`] with a time limit of its own, for a long test. The limit is
/// multiplied by `MPROC_TEST_TIME_SCALE` when set (`scripts/valgrind.sh`
/// runs the suites under memcheck, some twenty times slower).
pub(crate) fn run_within<F: std::future::Future<Output = ()>>(limit: Duration, f: F) {
    let scale = std::env::var("MPROC_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    let limit = limit * scale;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(limit, f)
                .await
                .expect("test timed out");
        });
}

/// Asserts that this process is back to `fds` descriptors and `threads`
/// threads (waiting up to 5 s for both), and that the processes `pids` left
/// no mproc file that was not in `files` before.
pub(crate) async fn assert_back_to(fds: usize, threads: usize, files: &[String], pids: &[u32]) {
    let end = Instant::now() + Duration::from_secs(5);
    while open_fds() > fds && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open_fds(), fds, "descriptors leaked");
    while thread_count() > threads && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(thread_count(), threads, "threads left running");
    let left: Vec<String> = mproc_files_of(pids)
        .into_iter()
        .filter(|f| !files.contains(f))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "files left behind");
}

/// Descriptors open in this process now.
pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Entries whose name contains "mproc" in the temp dir and `/dev/shm`.
pub(crate) fn mproc_files() -> Vec<String> {
    let mut v = Vec::new();
    for dir in [std::env::temp_dir(), "/dev/shm".into()] {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains("mproc") {
                    v.push(format!("{}/{name}", dir.display()));
                }
            }
        }
    }
    v.sort();
    v
}

/// A `tracing` writer that keeps everything written, for tests that check
/// what reached the parent's subscriber.
#[derive(Clone, Default)]
pub(crate) struct Capture(pub(crate) std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs test `name` of this same test binary in a child process with
/// `env` set (the test is `#[ignore]`d so only such runs execute it),
/// bounded by [`LIMIT`]; returns its output once it exits.
pub(crate) fn run_self(name: &str, env: &[(&str, &str)]) -> std::process::Output {
    use std::process::{Command, Stdio};
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = rx.recv_timeout(Duration::from_secs(5));
            panic!("helper test {name} did not finish within {LIMIT:?}");
        }
    }
}

/// Threads of this process now.
pub(crate) fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Starts test `name` of this binary as a *victim* helper (`#[ignore]`d,
/// run with `role_var=role`) and waits (up to 30 s) for the line
/// `PIDS p1 p2 …` it prints; returns the child and those pids. The child is
/// killed and reaped if it never reports.
pub(crate) fn start_victim(
    name: &str,
    role_var: &str,
    role: &str,
) -> (std::process::Child, Vec<u32>) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(role_var, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once("PIDS ") {
                let pids: Vec<u32> = rest
                    .split_whitespace()
                    .map(|p| p.parse().unwrap())
                    .collect();
                let _ = tx.send(pids);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(pids) => (child, pids),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("helper {name} did not report its pids: {e}");
        }
    }
}

/// [`mproc_files`] that belong to the processes `pids` (whose pid is part
/// of the name), and anything in `/dev/shm`: what a test that shares the
/// machine with others can hold its own processes to.
pub(crate) fn mproc_files_of(pids: &[u32]) -> Vec<String> {
    mproc_files()
        .into_iter()
        .filter(|f| {
            f.starts_with("/dev/shm/")
                || pids.iter().any(|p| {
                    let p = p.to_string();
                    f.rsplit('/')
                        .next()
                        .is_some_and(|name| name.split('-').any(|part| part == p))
                })
        })
        .collect()
}
