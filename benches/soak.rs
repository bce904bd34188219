//! `soak`: a mixed load for a long time, to show that nothing grows.
//!
//! ```text
//! soak --minutes M --csv FILE   run the load for M minutes, sampling every
//!                               10 s into FILE, then check it (exit 1 if
//!                               anything grew)
//! soak --check FILE             check a CSV written before
//! soak --plot FILE OUT.png      plot it
//! ```
//! `scripts/soak.sh MINUTES` runs all three. The load, one *cycle* at a time
//! (well under a second each), on one long-lived executor, pool, actor and
//! manager: a chunked map and an unordered map, tasks that abort their
//! worker, panic or time out (so workers die and are replaced all along),
//! calls to the actor, a `Queue` filled by a task and drained here, a
//! shared `Value` bumped under its lock by a map, a `Pool` map, a `Process`
//! started and joined, the manager's dict and list; and things started and
//! stopped every cycle: a second manager, and an executor of one worker
//! with an actor spawned, called and stopped on it. (That executor is a
//! fresh one because a stopped actor keeps its address — a thread and a
//! descriptor — until its executor stops; see `docs/limits.md`. Likewise
//! the long-lived manager's objects are made once: a manager keeps its
//! objects until it ends.) Every 10 s, between two cycles, the driver's
//! RSS, descriptors and threads are sampled, with its child processes and
//! their RSS.
//!
//! The check ignores a warm-up (the first fifth of the run, at least 60 s)
//! and compares the median of the rest's second half with that of its
//! first half; see [`check`] for the tolerances.

#[path = "soak/plot.rs"]
mod plot;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mproc::prelude::*;

const USAGE: &str = "usage: soak --minutes M --csv FILE | --check FILE | --plot FILE OUT.png";
/// Seconds between samples.
const EVERY: f64 = 10.0;
const HEADER: &str = "t_s,cycles,rss_kib,fds,threads,children,children_rss_kib";

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[mproc::task]
fn abort_worker() {
    std::process::abort()
}

#[mproc::task]
fn panics(n: u64) -> u64 {
    if n < u64::MAX {
        panic!("soak: a task that panics ({n})");
    }
    n
}

#[mproc::task]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[mproc::task]
fn fill(q: Queue<u64>, n: u64) {
    for i in 0..n {
        q.put(i).expect("the queue takes every item");
    }
}

#[mproc::task]
fn bump(v: Value<u64>) {
    *v.get_lock() += 1;
}

#[mproc::task]
fn nothing() {}

/// Keeps a running sum.
#[mproc::actor]
#[derive(Debug)]
pub(crate) struct Tally {
    n: u64,
}

#[mproc::actor]
impl Tally {
    /// Starts at `n`.
    pub(crate) fn new(n: u64) -> Self {
        Tally { n }
    }

    /// Adds `by`; the sum.
    pub(crate) fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

/// One line of the CSV.
#[derive(Debug, Clone, Copy)]
struct Sample {
    t_s: f64,
    cycles: u64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    children: u64,
    children_rss_kib: u64,
}

impl Sample {
    fn take(t_s: f64, cycles: u64) -> Sample {
        let me = std::process::id();
        let kids = children(me);
        Sample {
            t_s,
            cycles,
            rss_kib: rss_kib(me),
            fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
            threads: std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count() as u64),
            children: kids.len() as u64,
            children_rss_kib: kids.iter().map(|p| rss_kib(*p)).sum(),
        }
    }

    fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{},{}",
            self.t_s,
            self.cycles,
            self.rss_kib,
            self.fds,
            self.threads,
            self.children,
            self.children_rss_kib
        )
    }

    fn parse(line: &str) -> Option<Sample> {
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() != 7 {
            return None;
        }
        let n = |i: usize| f[i].parse::<u64>().ok();
        Some(Sample {
            t_s: f[0].parse().ok()?,
            cycles: n(1)?,
            rss_kib: n(2)?,
            fds: n(3)?,
            threads: n(4)?,
            children: n(5)?,
            children_rss_kib: n(6)?,
        })
    }
}

/// `VmRSS` of `pid`, in KiB (0 once it is gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// The long-lived objects of the load.
struct Load {
    ex: Executor,
    pool: std::sync::Arc<Pool>,
    manager: std::sync::Arc<Manager>,
    tally: ActorRef<Tally>,
    dict: DictProxy<u64, u64>,
    list: ListProxy<u64>,
}

impl Load {
    /// One cycle of the mixed load; panics on a wrong answer.
    async fn cycle(&self, n: u64) {
        let ex = &self.ex;
        // Faults first, so their replacement workers are up by the sample.
        assert!(matches!(
            ex.submit(abort_worker, ()).await,
            Err(TaskError::WorkerDied { .. })
        ));
        assert!(matches!(
            ex.submit(panics, n).await,
            Err(TaskError::Panicked { .. })
        ));
        let slow = TaskOptions::default().timeout(Duration::from_millis(20));
        assert_eq!(
            ex.submit_with(nap, 5_000, slow).await,
            Err(TaskError::TimedOut)
        );

        // Blocking parts on a thread of their own, meanwhile.
        let pool = self.pool.clone();
        let (dict, list) = (self.dict.clone(), self.list.clone());
        let blocking = tokio::task::spawn_blocking(move || blocking_part(&pool, &dict, &list, n));

        let map = async {
            let opts = MapOptions::default().chunksize(100);
            let sum = ex
                .map_with(square, 0..20_000u64, opts)
                .try_fold(0u64, |a, x| async move { Ok(a.wrapping_add(x)) })
                .await
                .unwrap();
            assert_eq!(sum, (0..20_000u64).map(|x| x * x).sum::<u64>());
            let count = ex
                .map_unordered(square, 0..1_000u64)
                .try_fold(0u64, |a, _| async move { Ok(a + 1) })
                .await
                .unwrap();
            assert_eq!(count, 1_000);
        };
        let actors = async {
            let before = self.tally.add(0).await.unwrap();
            for i in 1..=100 {
                assert_eq!(self.tally.add(1).await.unwrap(), before + i);
            }
            let side = Executor::new(1).await.unwrap();
            let t = Tally::spawn(&side, n).await.unwrap();
            let mut last = 0;
            for _ in 0..100 {
                last = t.add(1).await.unwrap();
            }
            assert_eq!(last, n + 100);
            t.stop().await.unwrap();
            side.shutdown().await;
        };
        let shared = async {
            let v = Value::new(0u64).unwrap();
            let args = std::iter::repeat_n(v.clone(), 200);
            let done: Vec<()> = ex.map(bump, args).try_collect().await.unwrap();
            assert_eq!(done.len(), 200);
            assert_eq!(v.load(), 200);
            let q: Queue<u64> = Queue::new().unwrap();
            let filler = ex.submit(fill, (q.clone(), 1_000));
            for i in 0..1_000u64 {
                assert_eq!(q.get_async().await.unwrap(), i);
            }
            filler.await.unwrap();
        };
        tokio::join!(map, actors, shared);
        blocking.await.expect("the blocking part");
    }
}

/// The blocking APIs: a pool map, a process, the manager's proxies, and a
/// second manager started and shut down.
fn blocking_part(pool: &Pool, d: &DictProxy<u64, u64>, l: &ListProxy<u64>, n: u64) {
    let v: Vec<u64> = pool
        .map_with(square, 0..2_000u64, MapOptions::default().chunksize(50))
        .unwrap();
    assert_eq!(v[1_999], 1_999 * 1_999);
    let p = Process::new(nothing, ()).start().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    // The same 100 keys every cycle; the list is emptied and refilled.
    l.clear().unwrap();
    for i in 0..100 {
        d.insert(i, n).unwrap();
        l.push(i).unwrap();
    }
    assert_eq!(d.get(&7).unwrap(), Some(n));
    assert_eq!(l.len().unwrap(), 100);
    let other = Manager::start().unwrap();
    let q = other.queue::<u64>().unwrap();
    q.put(n).unwrap();
    assert_eq!(q.get().unwrap(), n);
    other.shutdown().unwrap();
}

/// Runs the load for `minutes`, writing a sample every [`EVERY`] seconds.
fn run(minutes: f64, csv: &str) -> Result<Vec<Sample>, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = std::fs::File::create(csv).map_err(|e| format!("{csv}: {e}"))?;
    let mut write = |line: &str| {
        use std::io::Write;
        writeln!(out, "{line}")
            .and_then(|_| out.flush())
            .map_err(|e| format!("{csv}: {e}"))
    };
    write(HEADER)?;
    rt.block_on(async {
        let ex = Executor::new(2).await.map_err(|e| e.to_string())?;
        let manager = Manager::start().map_err(|e| e.to_string())?;
        let load = Load {
            tally: Tally::spawn(&ex, 0).await.map_err(|e| e.to_string())?,
            dict: manager.dict().map_err(|e| e.to_string())?,
            list: manager.list().map_err(|e| e.to_string())?,
            ex,
            pool: std::sync::Arc::new(Pool::new(2).map_err(|e| e.to_string())?),
            manager: std::sync::Arc::new(manager),
        };
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(minutes * 60.0);
        let mut samples = Vec::new();
        let mut next = 0.0;
        let mut cycles = 0u64;
        loop {
            let t = start.elapsed().as_secs_f64();
            if t >= next {
                let s = Sample::take(t, cycles);
                eprintln!(
                    "soak: {:>6.0} s  {:>6} cycles  rss {:>7} KiB  fds {:>4}  threads {:>3}  children {:>2} ({} KiB)",
                    s.t_s, s.cycles, s.rss_kib, s.fds, s.threads, s.children, s.children_rss_kib
                );
                write(&s.csv())?;
                samples.push(s);
                next += EVERY;
            }
            if Instant::now() >= end {
                break;
            }
            load.cycle(cycles).await;
            cycles += 1;
        }
        let Load {
            ex, pool, manager, ..
        } = load;
        ex.shutdown().await;
        pool.close();
        pool.join();
        manager.shutdown().map_err(|e| e.to_string())?;
        Ok(samples)
    })
}

/// The median of `v` (not empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Least-squares slope of `(x, y)`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

/// Where the warm-up ends, in seconds: a fifth of the run, at least 60 s.
pub(crate) fn warmup_end(samples: &[Sample]) -> f64 {
    let last = samples.last().map_or(0.0, |s| s.t_s);
    (last / 5.0).max(60.0)
}

/// Checks that the samples after the warm-up are flat: for each quantity
/// the median of their second half exceeds that of their first half by at
/// most the tolerance — RSS: 2 MiB or 5 % of the first half's median,
/// whichever is more; children's RSS: 5 MiB or 5 %; descriptors, threads
/// and children: 2. Prints a table (Markdown) of what it found.
fn check(samples: &[Sample]) -> Result<(), String> {
    let from = warmup_end(samples);
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= from).collect();
    if after.len() < 6 {
        return Err(format!(
            "{} samples after the warm-up ({from:.0} s): run for longer (at least 2 minutes)",
            after.len()
        ));
    }
    let (a, b) = after.split_at(after.len() / 2);
    type Get = fn(&Sample) -> f64;
    let rows: [(&str, Get, f64, f64); 5] = [
        ("driver RSS (MiB)", |s| s.rss_kib as f64 / 1024.0, 2.0, 0.05),
        ("descriptors", |s| s.fds as f64, 2.0, 0.0),
        ("threads", |s| s.threads as f64, 2.0, 0.0),
        ("child processes", |s| s.children as f64, 2.0, 0.0),
        (
            "children's RSS (MiB)",
            |s| s.children_rss_kib as f64 / 1024.0,
            5.0,
            0.05,
        ),
    ];
    let last = samples.last().expect("samples");
    println!(
        "{} samples over {:.1} min, {} cycles; warm-up: first {from:.0} s",
        samples.len(),
        last.t_s / 60.0,
        last.cycles
    );
    println!();
    println!("| quantity | min | max | median, 1st half | median, 2nd half | change | tolerance | trend per hour | verdict |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut bad = Vec::new();
    for (name, get, abs, rel) in rows {
        let m1 = median(a.iter().map(|s| get(s)).collect());
        let m2 = median(b.iter().map(|s| get(s)).collect());
        let all: Vec<f64> = after.iter().map(|s| get(s)).collect();
        let (lo, hi) = all
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
        let pts: Vec<(f64, f64)> = after.iter().map(|s| (s.t_s / 3600.0, get(s))).collect();
        let tol = abs.max(rel * m1);
        let ok = m2 - m1 <= tol;
        let fmt = |v: f64| {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        };
        println!(
            "| {name} | {} | {} | {} | {} | {:+.1} | {:.1} | {:+.1} | {} |",
            fmt(lo),
            fmt(hi),
            fmt(m1),
            fmt(m2),
            m2 - m1,
            tol,
            slope(&pts),
            if ok { "flat" } else { "GREW" }
        );
        if !ok {
            bad.push(name);
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("grew after the warm-up: {}", bad.join(", ")))
    }
}

fn read_csv(path: &str) -> Result<Vec<Sample>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let samples: Vec<Sample> = text.lines().skip(1).filter_map(Sample::parse).collect();
    if samples.is_empty() {
        return Err(format!("{path}: no samples"));
    }
    Ok(samples)
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; it means nothing here.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        // Plain `cargo bench`: nothing asked, nothing to do.
        [] => {
            eprintln!("{USAGE}");
            Ok(())
        }
        ["--minutes", m, "--csv", csv] => match m.parse::<f64>() {
            Ok(m) if m > 0.0 => run(m, csv).and_then(|s| check(&s)),
            _ => Err(USAGE.to_string()),
        },
        ["--check", csv] => read_csv(csv).and_then(|s| check(&s)),
        ["--plot", csv, png] => read_csv(csv).and_then(|s| plot::draw(&s, png)),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}
