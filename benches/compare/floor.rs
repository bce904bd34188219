//! The raw floor of the transport workloads, measured in the same run as
//! them: what the machine does with no framework at all.
//!
//! * ping-pong of 8 bytes between this process and a forked child, over a
//!   pair of pipes, over a Unix socketpair, and over a futex word in a shared
//!   anonymous mapping (blocking wait/wake, no spinning); 10 000 timed round
//!   trips each after 1000 untimed; each where the scheduler puts the two
//!   processes (as a pool's processes run), then pinned to one core, then
//!   pinned to two (a blocking hand-off costs several times more across
//!   cores on this kind of VM);
//! * memcpy of 64 MiB in-process, destination already faulted in.
//!
//! `fork` happens before this process has any other thread (checked), and
//! the child makes only raw system calls (`read`, `write`, `close`, `futex`,
//! `_exit`) and plain atomic loads and stores: no allocation, no lock, no
//! unwinding.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{latency, median, Better, Metric};

const WARM: usize = 1000;
const ROUND_TRIPS: usize = 10_000;
const MEMCPY_REPS: usize = 7;

/// Every floor figure.
pub(crate) fn run() -> Result<Vec<Metric>, String> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map_err(|e| format!("/proc/self/task: {e}"))?
        .count();
    if threads != 1 {
        return Err(format!(
            "the floor forks, and needs a single-threaded process (have {threads} threads)"
        ));
    }
    let cpus = allowed_cpus()?;
    let mut placements = vec![(Placement::Scheduler, "")];
    if let [a, b, ..] = cpus[..] {
        placements.push((Placement::Pinned(a, a), " same core"));
        placements.push((Placement::Pinned(a, b), " across cores"));
    }
    let mut out = Vec::new();
    for (kind, f) in [
        ("pipe", pipe_ping_pong as fn(Placement) -> _),
        ("socketpair", socketpair_ping_pong),
        ("futex", futex_ping_pong),
    ] {
        for &(place, suffix) in &placements {
            out.extend(named(&format!("{kind} ping-pong{suffix}"), f(place)?));
        }
    }
    out.extend(memcpy());
    Ok(out)
}

/// Where the two ends of a ping-pong run.
#[derive(Debug, Clone, Copy)]
enum Placement {
    /// Wherever the scheduler puts them (as a pool's processes run).
    Scheduler,
    /// Parent on the first CPU, child on the second (maybe the same).
    Pinned(usize, usize),
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Result<Vec<usize>, String> {
    let set = get_affinity()?;
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `set` is an initialised cpu_set_t and `c` is below
        // CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

fn get_affinity() -> Result<libc::cpu_set_t, String> {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid out-pointer of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if r != 0 {
        return Err(os_err("sched_getaffinity"));
    }
    Ok(set)
}

/// Pins the calling thread to `cpu`; raw system call only (used in the
/// child too).
fn pin(cpu: usize) -> bool {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set; CPU_SET writes
    // one bit inside it for a cpu below CPU_SETSIZE (from `allowed_cpus`).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) == 0
    }
}

/// The parent's affinity, put back on drop.
struct Restore(libc::cpu_set_t);

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: `self.0` is the mask read by `get_affinity`.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&self.0), &self.0) };
    }
}

/// Prints the floor as one JSON line, like a workload.
pub(crate) fn print(metrics: &[Metric]) {
    println!(
        "{}",
        json!({
            "id": "floor",
            "side": "floor",
            "metrics": metrics.iter().map(Metric::to_json).collect::<Vec<_>>(),
        })
    );
}

fn named(what: &str, lat: Vec<Duration>) -> Vec<Metric> {
    latency(&lat)
        .into_iter()
        .map(|m| Metric {
            name: format!("{what} {}", m.name),
            ..m
        })
        .collect()
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Pins this process as `place` asks for the parent's end (undone when the
/// guard drops).
fn place_parent(place: Placement) -> Result<Option<Restore>, String> {
    match place {
        Placement::Scheduler => Ok(None),
        Placement::Pinned(parent, _) => {
            let saved = Restore(get_affinity()?);
            if !pin(parent) {
                return Err(os_err("sched_setaffinity"));
            }
            Ok(Some(saved))
        }
    }
}

/// Forks a child that runs `child` and exits; `child` must make raw system
/// calls only (see the module docs). The child pins itself as `place` says.
fn fork_child(place: Placement, child: impl FnOnce() -> i32) -> Result<libc::pid_t, String> {
    // SAFETY: the process is single-threaded (checked in `run`), so the child
    // is a faithful copy with no lock held by a vanished thread; the child
    // runs `child`, which only makes raw system calls, and leaves with
    // `_exit`, never returning into Rust code of the parent.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(os_err("fork")),
        0 => {
            if let Placement::Pinned(_, cpu) = place {
                if !pin(cpu) {
                    // SAFETY: as below.
                    unsafe { libc::_exit(3) }
                }
            }
            let code = child();
            // SAFETY: `_exit` ends the child at once, running no destructor
            // or atexit handler of the parent's state.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid),
    }
}

/// Waits for the child and checks it exited with status 0.
fn reap(pid: libc::pid_t) -> Result<(), String> {
    let mut status = 0;
    // SAFETY: `pid` is our child and `status` a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    if r != pid {
        return Err(os_err("waitpid"));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!("floor child failed: wait status {status:#x}"))
    }
}

/// The child side of a fd ping-pong: echo 8-byte messages from `rfd` to
/// `wfd` until end of file. Raw system calls only.
fn echo_child(rfd: i32, wfd: i32, close: &[i32]) -> i32 {
    for &fd in close {
        // SAFETY: closing the child's copy of a descriptor it does not use.
        unsafe { libc::close(fd) };
    }
    let mut buf = [0u8; 8];
    loop {
        let mut got = 0usize;
        while got < buf.len() {
            // SAFETY: the pointer and length stay within `buf`.
            let n = unsafe { libc::read(rfd, buf.as_mut_ptr().add(got).cast(), buf.len() - got) };
            if n == 0 {
                return 0;
            }
            if n < 0 {
                return 1;
            }
            got += n as usize;
        }
        let mut sent = 0usize;
        while sent < buf.len() {
            // SAFETY: the pointer and length stay within `buf`.
            let n = unsafe { libc::write(wfd, buf.as_ptr().add(sent).cast(), buf.len() - sent) };
            if n <= 0 {
                return 2;
            }
            sent += n as usize;
        }
    }
}

/// Times `ROUND_TRIPS` round trips of 8 bytes through `tx` → child → `rx`.
fn ping_pong(tx: &mut impl Write, rx: &mut impl Read) -> Result<Vec<Duration>, String> {
    let mut one = |i: u64| -> Result<(), String> {
        tx.write_all(&i.to_le_bytes()).map_err(|e| e.to_string())?;
        let mut b = [0u8; 8];
        rx.read_exact(&mut b).map_err(|e| e.to_string())?;
        if u64::from_le_bytes(b) != i {
            return Err("ping-pong: wrong echo".into());
        }
        Ok(())
    };
    for i in 0..WARM as u64 {
        one(i)?;
    }
    let mut out = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS as u64 {
        let t = Instant::now();
        one(i)?;
        out.push(t.elapsed());
    }
    Ok(out)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two descriptors to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_err("pipe2"));
    }
    // SAFETY: both descriptors were just created and are owned by nothing
    // else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn pipe_ping_pong(place: Placement) -> Result<Vec<Duration>, String> {
    let _restore = place_parent(place)?;
    let (down_r, down_w) = pipe()?;
    let (up_r, up_w) = pipe()?;
    let (cr, cw) = (down_r.as_raw_fd(), up_w.as_raw_fd());
    let close = [down_w.as_raw_fd(), up_r.as_raw_fd()];
    let pid = fork_child(place, || echo_child(cr, cw, &close))?;
    drop((down_r, up_w));
    let (mut tx, mut rx) = (File::from(down_w), File::from(up_r));
    let lat = ping_pong(&mut tx, &mut rx);
    drop((tx, rx)); // end of file: the child leaves
    reap(pid)?;
    lat
}

fn socketpair_ping_pong(place: Placement) -> Result<Vec<Duration>, String> {
    let _restore = place_parent(place)?;
    let (mut ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let fd = theirs.as_raw_fd();
    let close = [ours.as_raw_fd()];
    let pid = fork_child(place, || echo_child(fd, fd, &close))?;
    drop(theirs);
    let mut rx = ours.try_clone().map_err(|e| e.to_string())?;
    let lat = ping_pong(&mut ours, &mut rx);
    drop((ours, rx));
    reap(pid)?;
    lat
}

/// A futex word in a shared anonymous mapping, unmapped on drop.
struct SharedWord {
    ptr: *mut libc::c_void,
}

impl SharedWord {
    fn new() -> Result<Self, String> {
        // SAFETY: an anonymous shared mapping of one page; no file, no
        // address hint.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(os_err("mmap"));
        }
        Ok(SharedWord { ptr })
    }

    fn word(&self) -> &AtomicU32 {
        debug_assert!(self.ptr.cast::<AtomicU32>().is_aligned());
        // SAFETY: the mapping is page-aligned, zero-filled, at least 4 bytes
        // and lives as long as `self`; it is only ever accessed atomically.
        unsafe { &*self.ptr.cast::<AtomicU32>() }
    }
}

impl Drop for SharedWord {
    fn drop(&mut self) {
        // SAFETY: unmapping the page mapped in `new`; no reference into it
        // outlives `self`.
        unsafe { libc::munmap(self.ptr, 4096) };
    }
}

/// Blocks while `*word == expected` (a shared, not private, futex: the word
/// is in memory shared with another process).
fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 with no timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE of at most one waiter on a valid, aligned u32.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

/// Turn-taking on one word: the parent writes 1 ("ping") and waits for 0;
/// the child waits for non-zero, writes 0 ("pong"); 2 tells it to leave.
fn futex_ping_pong(place: Placement) -> Result<Vec<Duration>, String> {
    const PONG: u32 = 0;
    const PING: u32 = 1;
    const LEAVE: u32 = 2;
    let _restore = place_parent(place)?;
    let shared = SharedWord::new()?;
    let word = shared.word();
    let pid = fork_child(place, || loop {
        let mut v = word.load(Ordering::Acquire);
        while v == PONG {
            futex_wait(word, PONG);
            v = word.load(Ordering::Acquire);
        }
        if v == LEAVE {
            return 0;
        }
        word.store(PONG, Ordering::Release);
        futex_wake(word);
    })?;
    let one = || {
        word.store(PING, Ordering::Release);
        futex_wake(word);
        while word.load(Ordering::Acquire) == PING {
            futex_wait(word, PING);
        }
    };
    for _ in 0..WARM {
        one();
    }
    let mut out = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let t = Instant::now();
        one();
        out.push(t.elapsed());
    }
    word.store(LEAVE, Ordering::Release);
    futex_wake(word);
    reap(pid)?;
    Ok(out)
}

fn memcpy() -> Vec<Metric> {
    let src = crate::common::w4l_payload();
    let mut dst = src.clone();
    let t = median(
        (0..MEMCPY_REPS)
            .map(|_| crate::common::memcpy(&mut dst, &src).as_secs_f64())
            .collect(),
    );
    vec![
        Metric::new("memcpy 64 MiB", "ms", Better::Lower, t * 1e3),
        Metric::new("memcpy", "GB/s", Better::Higher, src.len() as f64 / t / 1e9),
        // A round trip of 64 MiB moves it there and back: two copies at least.
        Metric::new("memcpy 2 x 64 MiB", "s", Better::Lower, 2.0 * t),
    ]
}
