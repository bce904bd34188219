//! Chaos: a 100 000-item `map` while a helper thread SIGKILLs a random
//! worker every few milliseconds. Without retries every item is its value
//! or `WorkerDied`; with `MapOptions::retries(5)` every item is its value;
//! nothing hangs, and no process, descriptor, thread or `/dev/shm` entry
//! is left.
//! One test in this binary, so the descriptor count is exact.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{run_within, wait_gone};
use mproc::prelude::*;

const ITEMS: u64 = 100_000;

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

/// 20 kB tagged with `x`: ten of them do not fit one 64 kB message, so a
/// chunk's results come back in parts.
#[mproc::task]
fn bulky(x: u64) -> serde_bytes::ByteBuf {
    let mut v = vec![0u8; 20_000];
    v[..8].copy_from_slice(&x.to_le_bytes());
    serde_bytes::ByteBuf::from(v)
}

/// A small xorshift generator: the seed is printed, so a failing run can be
/// replayed with `MPROC_CHAOS_SEED`.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("MPROC_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            | 1;
        eprintln!("chaos seed: MPROC_CHAOS_SEED={seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// SIGKILLs a random worker of `ex` every 1–5 ms until stopped, as long
/// as the map made progress: at least `gap` more results since its last
/// kill. So a slow (loaded) machine gets fewer kills, not a map that
/// never ends, and a chunk's odds of being killed six runs in a row (past
/// `retries(5)`) stay negligible: each kill stops at most one running
/// chunk, and [`gap`]'s chunks finish between two kills. Keeps every pid it
/// saw.
struct Killer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashSet<u32>>>,
    thread: Option<JoinHandle<u64>>,
}

impl Killer {
    fn start(ex: &Executor, mut rng: Rng, progress: Arc<AtomicU64>, gap: u64) -> Killer {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let (ex, st, sn) = (ex.clone(), stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut kills = 0u64;
            let mut at = 0;
            while !st.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_micros(1_000 + rng.below(4_000)));
                let pids = ex.worker_pids();
                sn.lock().unwrap().extend(pids.iter().copied());
                let done = progress.load(Ordering::Relaxed);
                if pids.is_empty() || done < at + gap {
                    continue;
                }
                at = done;
                let victim = pids[rng.below(pids.len() as u64) as usize];
                let pid = nix::unistd::Pid::from_raw(victim as i32);
                if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                    kills += 1;
                }
            }
            kills
        });
        Killer {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops the killer: how many kills it made, and every pid it saw.
    fn stop(mut self) -> (u64, Vec<u32>) {
        self.stop.store(true, Ordering::Relaxed);
        let kills = self.thread.take().unwrap().join().unwrap();
        let seen = self.seen.lock().unwrap().iter().copied().collect();
        (kills, seen)
    }
}

/// Results between two kills, for chunks of `chunksize`: at least 30
/// chunks (a chunk killed with probability 1/30 per run dies six runs in a
/// row with probability 1e-9), and 100 items.
fn gap(chunksize: usize) -> u64 {
    (30 * chunksize as u64).max(100)
}

/// One map of [`ITEMS`] under a kill storm; its results and the pids seen.
async fn map_under_fire(
    ex: &Executor,
    opts: MapOptions,
    chunksize: usize,
) -> (Vec<Result<u64, TaskError>>, u64, Vec<u32>, Duration) {
    let progress = Arc::new(AtomicU64::new(0));
    let killer = Killer::start(ex, Rng::from_env(), progress.clone(), gap(chunksize));
    let started = Instant::now();
    let results: Vec<Result<u64, TaskError>> = ex
        .map_with(square, 0..ITEMS, opts)
        .inspect(|_| {
            progress.fetch_add(1, Ordering::Relaxed);
        })
        .collect()
        .await;
    let took = started.elapsed();
    let (kills, mut seen) = killer.stop();
    seen.extend(ex.worker_pids());
    (results, kills, seen, took)
}

/// Every transport, and every start method, with chunks of several sizes.
const RUNS: &[(TransportKind, StartMethod, usize)] = &[
    (TransportKind::UnixSocket, StartMethod::Spawn, 1),
    (TransportKind::Pipe, StartMethod::Spawn, 10),
    (TransportKind::ShmRing, StartMethod::Spawn, 20),
    (TransportKind::UnixSocket, StartMethod::Fork, 10),
    (TransportKind::UnixSocket, StartMethod::Forkserver, 10),
];

#[test]
fn a_map_under_a_kill_storm_gives_values_or_worker_died_and_with_retries_only_values() {
    // About 15 s on an idle 2-vCPU machine; the bound leaves room for a
    // loaded CI host, and is still a bound.
    run_within(Duration::from_secs(110), async {
        // Warm up once: the runtime's and mproc's long-lived threads start
        // (and the fork server, which lives as long as the program).
        for m in [StartMethod::Spawn, StartMethod::Forkserver] {
            let ex = Executor::builder().max_workers(1).start_method(m);
            ex.build().await.unwrap().shutdown().await;
        }
        let fds = common::open_fds();
        let threads = common::thread_count();
        let mut all_pids = vec![std::process::id()];
        let files = common::mproc_files();
        let started = Instant::now();

        for &(transport, method, chunksize) in RUNS {
            let ex = Executor::builder()
                .max_workers(3)
                .transport(transport)
                .start_method(method)
                .build()
                .await
                .unwrap();
            let what = format!("{transport:?}/{method:?}/chunksize {chunksize}");
            let opts = MapOptions::default().chunksize(chunksize);
            let (results, kills, seen, took) = map_under_fire(&ex, opts.clone(), chunksize).await;
            all_pids.extend(seen);
            assert_eq!(results.len(), ITEMS as usize);
            let mut died = 0;
            for (i, r) in results.iter().enumerate() {
                match r {
                    Ok(v) => assert_eq!(*v, (i * i) as u64, "{what}: item {i}"),
                    Err(TaskError::WorkerDied { exit }) => {
                        assert_eq!(exit.signal, Some(9), "{what}: item {i}: {exit}");
                        died += 1;
                    }
                    Err(e) => panic!("{what}: item {i}: {e:?}, neither its value nor WorkerDied"),
                }
            }
            eprintln!("{what}, no retries: {kills} kills, {died} items WorkerDied, {took:?}");
            assert!(kills > 0, "the killer never struck");

            let (results, kills, seen, took) =
                map_under_fire(&ex, opts.retries(5), chunksize).await;
            all_pids.extend(seen);
            assert_eq!(results.len(), ITEMS as usize);
            for (i, r) in results.iter().enumerate() {
                assert_eq!(r, &Ok((i * i) as u64), "{what}: item {i} under retries(5)");
            }
            eprintln!("{what}, retries(5): {kills} kills, {took:?}");
            assert!(kills > 0, "the killer never struck");

            // The executor still serves, then stops.
            assert_eq!(ex.submit(square, 12).await, Ok(144));
            all_pids.extend(ex.worker_pids());
            ex.shutdown().await;
        }
        // Results in parts: a chunk that dies after sending some of them
        // runs again from scratch.
        let ex = Executor::builder()
            .max_workers(3)
            .max_message_size(64 << 10)
            .build()
            .await
            .unwrap();
        let progress = Arc::new(AtomicU64::new(0));
        let killer = Killer::start(&ex, Rng::from_env(), progress.clone(), gap(10));
        let t = Instant::now();
        let opts = MapOptions::default().chunksize(10).retries(5);
        let results: Vec<Result<serde_bytes::ByteBuf, TaskError>> = ex
            .map_with(bulky, 0..5_000u64, opts)
            .inspect(|_| {
                progress.fetch_add(1, Ordering::Relaxed);
            })
            .collect()
            .await;
        let (kills, seen) = killer.stop();
        all_pids.extend(seen);
        for (i, r) in results.iter().enumerate() {
            let b = r
                .as_ref()
                .unwrap_or_else(|e| panic!("bulky item {i}: {e:?}"));
            assert_eq!(b.len(), 20_000, "bulky item {i}");
            assert_eq!(b[..8], (i as u64).to_le_bytes(), "bulky item {i}");
        }
        eprintln!(
            "results in parts, retries(5): {kills} kills, {:?}",
            t.elapsed()
        );
        all_pids.extend(ex.worker_pids());
        ex.shutdown().await;
        drop(ex);
        eprintln!("all runs: {:?}", started.elapsed());

        // Nothing is left: no process, descriptor or file.
        assert!(
            wait_gone(&all_pids[1..], Duration::from_secs(5)),
            "workers left behind"
        );
        common::assert_back_to(fds, threads, &files, &all_pids).await;
    });
}
