//! The Rust side of the side-by-side comparison with Python
//! (`python3 scripts/compare.py`): a small runner that executes **one**
//! workload of `WORKLOADS.md` per invocation and prints one JSON line.
//!
//! ```text
//! compare --list                       the workload table, one JSON line each
//! compare --workload W2a [--budget S] [--max-reps N]
//!                                      run one workload, print its figures
//! compare --floor                      the raw floor: pipe, socketpair and
//!                                      futex ping-pong between two processes,
//!                                      memcpy of 64 MiB
//! compare --plot results.json out.png  draw the comparison (log scale)
//! ```
//!
//! The pools use the default transport; `MPROC_BENCH_TRANSPORT=pipe` (or
//! `shm`, `unix`) runs a workload on another one.
//!
//! It is a `harness = false` bench target: `cargo bench --bench compare --
//! --workload W2a`, or the built binary directly (the script does that).
//!
//! A workload starts its pool and warms it off the clock, then runs timed
//! repetitions while the budget lasts (at least one, at most `--max-reps`);
//! only W5/W5p, which measure start-up, will time it. The Python mirror
//! (`benches/python/workloads.py`) follows the same rule with the same ids,
//! so the script can pair them up. The JSON line is
//!
//! ```text
//! {"id": .., "side": "mproc", "reps": n, "metrics": [
//!     {"name": .., "unit": .., "better": "higher"|"lower", "value": x}, ..]}
//! ```
//!
//! Adding a workload: write a function `fn(&Budget) -> Vec<Metric>` that
//! sets up, calls [`Budget::run`] with the timed body and returns its figures
//! under the same metric names as the Python mirror; then point its entry in
//! [`WORKLOADS`] at it.

mod common;
#[path = "compare/floor.rs"]
mod floor;
#[path = "compare/plot.rs"]
mod plot;

use std::cell::Cell;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;

/// Which way a figure improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

/// One reported figure of a workload.
#[derive(Debug, Clone)]
struct Metric {
    name: String,
    unit: &'static str,
    better: Better,
    value: f64,
}

impl Metric {
    fn new(name: &str, unit: &'static str, better: Better, value: f64) -> Self {
        Metric {
            name: name.to_string(),
            unit,
            better,
            value,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "name": self.name,
            "unit": self.unit,
            "better": match self.better { Better::Higher => "higher", Better::Lower => "lower" },
            "value": self.value,
        })
    }
}

/// How long to keep repeating a workload.
#[derive(Debug)]
struct Budget {
    /// Seconds spent in repetitions after which no new one starts.
    seconds: f64,
    /// Most repetitions.
    max_reps: usize,
    /// Repetitions run so far (reported with the figures).
    reps: Cell<usize>,
}

impl Budget {
    /// Runs `rep` at least once, and again while the budget lasts.
    fn run<T>(&self, mut rep: impl FnMut() -> T) -> Vec<T> {
        let mut out = Vec::new();
        let mut spent = Duration::ZERO;
        while out.is_empty() || (spent.as_secs_f64() < self.seconds && out.len() < self.max_reps) {
            let t = Instant::now();
            out.push(rep());
            spent += t.elapsed();
        }
        self.reps.set(self.reps.get() + out.len());
        out
    }
}

/// One row of the workload table.
#[derive(Debug)]
struct Workload {
    id: &'static str,
    title: &'static str,
    /// `None`: mproc cannot run this workload yet.
    run: Option<fn(&Budget) -> Vec<Metric>>,
    /// Why `run` is `None`.
    note: &'static str,
    /// Metric name → the floor figure (from `--floor`) it is shown against.
    floors: &'static [(&'static str, &'static str)],
}

const ROUND_TRIP_FLOORS: &[(&str, &str)] = &[
    ("median", "socketpair ping-pong median"),
    ("p99", "socketpair ping-pong p99"),
];

/// Every workload of `WORKLOADS.md`, in report order. The ids are shared
/// with `benches/python/workloads.py`.
const WORKLOADS: &[Workload] = &[
    Workload {
        id: "W1",
        title: "2000 sequential submit(square, i), each awaited (Executor)",
        run: Some(w1),
        note: "",
        floors: ROUND_TRIP_FLOORS,
    },
    Workload {
        id: "W1-apply",
        title: "2000 sequential Pool::apply(square, i)",
        run: Some(w1_apply),
        note: "",
        floors: ROUND_TRIP_FLOORS,
    },
    Workload {
        id: "W2a",
        title: "100 000 submit(square, i), then wait for all (Executor)",
        run: Some(w2a),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W2b",
        title: "Executor::map(square, 0..100_000)",
        run: Some(w2b),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W2c",
        title: "Executor::map_with(square, 0..100_000, chunksize 1000)",
        run: Some(w2c),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W2d",
        title: "Pool::map(square, 0..100_000)",
        run: Some(w2d),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W2e",
        title: "Pool::imap_unordered_with(square, 0..100_000, chunksize 1)",
        run: Some(w2e),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W2f",
        title: "100 000 Pool::apply_async(square, i), then get all",
        run: Some(w2f),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W3",
        title: "8 x cpu_intensive(10^6): in-process sequential vs Pool(2)::map",
        run: Some(w3),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W3-1e8",
        title: "8 x cpu_intensive(10^8): in-process sequential vs Pool(2)::map (the work dominates)",
        run: Some(w3_big),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W4s",
        title: "echo of 1 KiB byte payloads (Bytes), 20 000 tasks (Executor)",
        run: Some(w4s),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W4l",
        title: "echo of one 64 MiB byte payload (Bytes) (Executor)",
        run: Some(w4l),
        note: "",
        floors: &[
            ("round trip", "memcpy 2 x 64 MiB"),
            ("both directions", "memcpy"),
            ("memcpy 64 MiB", "memcpy 64 MiB"),
        ],
    },
    Workload {
        id: "W4l-shared",
        title: "echo of the same 64 MiB as a SharedBytes by handle: made beforehand, its ends read in the worker, handed back (Executor); and made from the bytes on the clock, read through in the worker and here",
        run: Some(w4l_shared),
        note: "",
        floors: &[
            ("round trip", "memcpy 2 x 64 MiB"),
            ("both directions", "memcpy"),
            ("made and read through: round trip", "memcpy 2 x 64 MiB"),
        ],
    },
    Workload {
        id: "M1",
        title: "parent RSS growth: map over an endless iterator consumed slowly (200 000 items), and 1 000 000 tasks submitted and awaited in batches of 10 000 (Executor)",
        run: Some(m1),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W5-fork",
        title: "Pool(2) constructed -> first result of a no-op, start method fork",
        run: Some(w5_fork),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W5-forkserver",
        title: "Pool(2) constructed -> first result of a no-op, start method forkserver",
        run: Some(w5_forkserver),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W5-spawn",
        title: "Pool(2) constructed -> first result of a no-op, start method spawn",
        run: Some(w5_spawn),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W5p-fork",
        title: "Process running a no-op: start + join, start method fork",
        run: Some(w5p_fork),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W5p-forkserver",
        title: "Process running a no-op: start + join, start method forkserver",
        run: Some(w5p_forkserver),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W5p-spawn",
        title: "Process running a no-op: start + join, start method spawn",
        run: Some(w5p_spawn),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W6p",
        title: "Pipe ping-pong of a small int with a child process, 10 000 round trips",
        run: Some(w6p),
        note: "",
        floors: &[
            ("median", "pipe ping-pong median"),
            ("p99", "pipe ping-pong p99"),
        ],
    },
    Workload {
        id: "W6q",
        title: "one producer process -> one consumer process, 200 000 ints via Queue",
        run: Some(w6q),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W7",
        title: "4 processes x 10 000 locked increments of a shared Value<i32>",
        run: Some(w7),
        note: "",
        floors: &[],
    },
    Workload {
        id: "A1",
        title: "2000 sequential calls to one actor, each awaited before the next",
        run: Some(a1),
        note: "",
        floors: ROUND_TRIP_FLOORS,
    },
    Workload {
        id: "A1-1core",
        title: "A1 with the caller and the actor pinned to one core",
        run: Some(a1_one_core),
        note: "",
        floors: &[
            ("median", "socketpair ping-pong same core median"),
            ("p99", "socketpair ping-pong same core p99"),
        ],
    },
    Workload {
        id: "A2",
        title: "20 x (1000 calls made to one actor, then all awaited): 1000 in flight",
        run: Some(a2),
        note: "",
        floors: &[],
    },
    Workload {
        id: "A3-fork",
        title: "actor spawned -> its first reply, start method fork",
        run: Some(a3_fork),
        note: "",
        floors: &[],
    },
    Workload {
        id: "A3-forkserver",
        title: "actor spawned -> its first reply; 16 spawned at once -> each replied, start method forkserver",
        run: Some(a3_forkserver),
        note: "",
        floors: &[],
    },
    Workload {
        id: "A3-spawn",
        title: "actor spawned -> its first reply; 16 spawned at once -> each replied, start method spawn",
        run: Some(a3_spawn),
        note: "",
        floors: &[],
    },
    Workload {
        id: "N1",
        title: "W1 through a node on loopback: 2000 sequential submit(square, i), node workers only",
        run: Some(n1),
        note: "",
        floors: ROUND_TRIP_FLOORS,
    },
    Workload {
        id: "N2a",
        title: "W2a through 2 nodes of 1 worker each on loopback: 100 000 submits, then all awaited",
        run: Some(n2a),
        note: "",
        floors: &[],
    },
    Workload {
        id: "N3",
        title: "8 x cpu_intensive(10^8): 1 local worker vs 2 nodes of 1 worker each (loopback)",
        run: Some(n3),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W8",
        title: "a child: 10 000 dict sets + 10 000 gets, 10 000 list appends on a Manager",
        run: Some(w8),
        note: "",
        floors: &[],
    },
    Workload {
        id: "W8-tcp",
        title: "W8 through the server: the child connects over TCP loopback with the key",
        run: Some(w8_tcp),
        note: "",
        floors: &[],
    },
];

// --- figures -----------------------------------------------------------------

fn secs(d: &Duration) -> f64 {
    d.as_secs_f64()
}

/// The `p` quantile (nearest rank) of sorted data.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Median and p99 of round-trip latencies, in µs.
fn latency(samples: &[Duration]) -> Vec<Metric> {
    let mut us: Vec<f64> = samples.iter().map(|d| secs(d) * 1e6).collect();
    us.sort_by(f64::total_cmp);
    vec![
        Metric::new("median", "µs", Better::Lower, median(us.clone())),
        Metric::new("p99", "µs", Better::Lower, quantile(&us, 0.99)),
    ]
}

/// `count` tasks per repetition: tasks/s at the median repetition.
fn throughput(count: f64, reps: &[Duration]) -> Vec<Metric> {
    let t = median(reps.iter().map(secs).collect());
    vec![Metric::new(
        "throughput",
        "tasks/s",
        Better::Higher,
        count / t,
    )]
}

// --- the workloads -------------------------------------------------------------

use mproc::prelude::*;

/// The trivial task of W5/W5p.
#[mproc::task]
fn noop() {}

/// W6p's child: echoes until it receives `None`.
#[mproc::task]
fn pipe_echo(conn: Connection<Option<u64>>) {
    while let Ok(Some(x)) = conn.recv() {
        if conn.send(&Some(x)).is_err() {
            return;
        }
    }
}

/// W6q's producer: waits for the start signal, then puts `n` items and a
/// `None` sentinel.
#[mproc::task]
fn produce(q: Queue<Option<u64>>, go: Event, n: u64) {
    go.wait();
    for i in 0..n {
        q.put(Some(i)).expect("put");
    }
    q.put(None).expect("put");
}

/// W6q's consumer: counts items up to the sentinel and reports the count.
#[mproc::task]
fn consume(q: Queue<Option<u64>>, done: Connection<u64>) {
    let mut count = 0u64;
    while let Ok(Some(_)) = q.get() {
        count += 1;
    }
    done.send(&count).expect("report");
}

/// W7's worker: `n` increments under the value's lock.
#[mproc::task]
fn increment(v: Value<i32>, go: Event, n: u32) {
    go.wait();
    for _ in 0..n {
        *v.get_lock() += 1;
    }
}

/// W5: pool of 2 constructed → first result of a no-op (start-up is the
/// point, so it is timed). One untimed repetition first, as in Python, so a
/// fork server already runs.
fn w5(b: &Budget, method: StartMethod) -> Vec<Metric> {
    let rep = || {
        let t = Instant::now();
        let pool = Pool::builder()
            .processes(2)
            .start_method(method)
            .build()
            .expect("pool");
        pool.apply(noop, ()).expect("noop");
        let dt = t.elapsed();
        pool.terminate();
        dt
    };
    rep();
    let times = b.run(rep);
    vec![Metric::new(
        "first result",
        "ms",
        Better::Lower,
        median(times.iter().map(secs).collect()) * 1e3,
    )]
}

/// W5p: start + join of one `Process` running a no-op.
fn w5p(b: &Budget, method: StartMethod) -> Vec<Metric> {
    let rep = || {
        let t = Instant::now();
        let p = Process::new(noop, ())
            .start_method(method)
            .start()
            .expect("start");
        p.join().expect("join");
        let dt = t.elapsed();
        assert_eq!(p.exitcode(), Some(0));
        dt
    };
    rep();
    let times = b.run(rep);
    vec![Metric::new(
        "start + join",
        "ms",
        Better::Lower,
        median(times.iter().map(secs).collect()) * 1e3,
    )]
}

fn w5_fork(b: &Budget) -> Vec<Metric> {
    w5(b, StartMethod::Fork)
}
fn w5_forkserver(b: &Budget) -> Vec<Metric> {
    w5(b, StartMethod::Forkserver)
}
fn w5_spawn(b: &Budget) -> Vec<Metric> {
    w5(b, StartMethod::Spawn)
}
fn w5p_fork(b: &Budget) -> Vec<Metric> {
    w5p(b, StartMethod::Fork)
}
fn w5p_forkserver(b: &Budget) -> Vec<Metric> {
    w5p(b, StartMethod::Forkserver)
}
fn w5p_spawn(b: &Budget) -> Vec<Metric> {
    w5p(b, StartMethod::Spawn)
}

/// W6p: 10 000 timed round trips of a small int with a child process
/// through a `Pipe`.
fn w6p(b: &Budget) -> Vec<Metric> {
    const COUNT: u64 = 10_000;
    let (ours, theirs) = pipe::<Option<u64>>().expect("pipe");
    let child = Process::new(pipe_echo, theirs).start().expect("start");
    for i in 0..1000 {
        ours.send(&Some(i)).expect("send");
        ours.recv().expect("recv");
    }
    let lat = b
        .run(|| {
            (0..COUNT)
                .map(|i| {
                    let t = Instant::now();
                    ours.send(&Some(i)).expect("send");
                    std::hint::black_box(ours.recv().expect("recv"));
                    t.elapsed()
                })
                .collect::<Vec<_>>()
        })
        .concat();
    ours.send(&None).expect("send");
    child.join().expect("join");
    latency(&lat)
}

/// W6q: one producer process → one consumer process, 200 000 ints through a
/// `Queue`; the clock runs from the go signal to the consumer's report.
fn w6q(b: &Budget) -> Vec<Metric> {
    const COUNT: u64 = 200_000;
    let times = b.run(|| {
        let q = Queue::<Option<u64>>::new().expect("queue");
        let go = Event::new().expect("event");
        let (done_r, done_w) = pipe::<u64>().expect("pipe");
        let cons = Process::new(consume, (q.clone(), done_w))
            .start()
            .expect("start");
        let prod = Process::new(produce, (q, go.clone(), COUNT))
            .start()
            .expect("start");
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        go.set();
        let count = done_r.recv().expect("count");
        let dt = t.elapsed();
        prod.join().expect("join");
        cons.join().expect("join");
        assert_eq!(count, COUNT);
        dt
    });
    vec![Metric::new(
        "throughput",
        "items/s",
        Better::Higher,
        COUNT as f64 / median(times.iter().map(secs).collect()),
    )]
}

/// W7: 4 processes × 10 000 increments of a shared `Value<i32>` under its
/// lock; the final value must be 40 000.
fn w7(b: &Budget) -> Vec<Metric> {
    const PROCS: u32 = 4;
    const EACH: u32 = 10_000;
    let times = b.run(|| {
        let v = Value::new(0i32).expect("value");
        let go = Event::new().expect("event");
        let ps: Vec<_> = (0..PROCS)
            .map(|_| {
                Process::new(increment, (v.clone(), go.clone(), EACH))
                    .start()
                    .expect("start")
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        go.set();
        for p in &ps {
            p.join().expect("join");
        }
        let dt = t.elapsed();
        assert_eq!(v.load(), (PROCS * EACH) as i32);
        dt
    });
    let total = f64::from(PROCS * EACH);
    vec![Metric::new(
        "throughput",
        "increments/s",
        Better::Higher,
        total / median(times.iter().map(secs).collect()),
    )]
}

/// W8's figures from (dict seconds, list seconds) per repetition.
fn w8_metrics(reps: &[(f64, f64)]) -> Vec<Metric> {
    let n = f64::from(common::W8_COUNT);
    vec![
        Metric::new(
            "dict ops",
            "ops/s",
            Better::Higher,
            2.0 * n / median(reps.iter().map(|r| r.0).collect()),
        ),
        Metric::new(
            "list appends",
            "ops/s",
            Better::Higher,
            n / median(reps.iter().map(|r| r.1).collect()),
        ),
    ]
}

/// W8: a child does 10 000 dict sets + 10 000 gets, then 10 000 list
/// appends, on a running `Manager`; the child times itself.
fn w8(b: &Budget) -> Vec<Metric> {
    let manager = Manager::start().expect("manager");
    // One repetition off the clock: the first connection and page faults.
    let _ = common::w8(&manager);
    let reps = b.run(|| common::w8(&manager));
    w8_metrics(&reps)
}

/// W8 with every operation a round trip to the server over TCP loopback
/// (what a client on another host gets); no Python mirror.
fn w8_tcp(b: &Budget) -> Vec<Metric> {
    let key = b"w8 bench key";
    let manager = Manager::serve("127.0.0.1:0", key).expect("manager");
    let _ = common::w8_remote(&manager, key);
    let reps = b.run(|| common::w8_remote(&manager, key));
    w8_metrics(&reps)
}

/// A1: sequential calls to one warm actor: round-trip latency, and calls
/// per second over a whole repetition.
fn a1(b: &Budget) -> Vec<Metric> {
    let rt = common::runtime();
    let ex = common::executor(&rt);
    let actor = common::actor(&rt, &ex);
    let reps = b.run(|| common::a1(&rt, &actor, common::A1_COUNT));
    rt.block_on(ex.shutdown());
    let per_rep: Vec<Duration> = reps.iter().map(|r| r.iter().sum()).collect();
    let mut out = latency(&reps.concat());
    out.push(Metric::new(
        "throughput",
        "calls/s",
        Better::Higher,
        common::A1_COUNT as f64 / median(per_rep.iter().map(secs).collect()),
    ));
    out
}

/// A1 with this process, its threads and the processes it starts (the
/// actor's included) pinned to the core it runs on: the cost of a call
/// without the wake-ups of another core, to set beside the same-core floor.
fn a1_one_core(b: &Budget) -> Vec<Metric> {
    // SAFETY: `set` is a zeroed `cpu_set_t` that CPU_SET writes into within
    // its bounds (`sched_getcpu` is below CPU_SETSIZE), and
    // `sched_setaffinity` reads `size_of::<cpu_set_t>()` bytes of it.
    // Threads and processes started afterwards inherit the mask.
    unsafe {
        let cpu = libc::sched_getcpu().max(0) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let r = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(r, 0, "sched_setaffinity");
    }
    a1(b)
}

/// A2: 1000 calls in flight to one warm actor: calls per second.
fn a2(b: &Budget) -> Vec<Metric> {
    let rt = common::runtime();
    let ex = common::executor(&rt);
    let actor = common::actor(&rt, &ex);
    let reps = b.run(|| common::a2(&rt, &actor));
    rt.block_on(ex.shutdown());
    let calls = (common::A2_BATCHES * common::A2_IN_FLIGHT) as f64;
    vec![Metric::new(
        "throughput",
        "calls/s",
        Better::Higher,
        calls / median(reps.iter().map(secs).collect()),
    )]
}

/// A3: an actor spawned on a warm executor until its first reply (one
/// untimed repetition first, so a fork server already runs, as in W5); and
/// the rate of creations with 16 spawned at once.
fn a3(b: &Budget, method: StartMethod) -> Vec<Metric> {
    let rt = common::runtime();
    let ex = rt
        .block_on(
            Executor::builder()
                .max_workers(common::WORKERS)
                .start_method(method)
                .build(),
        )
        .expect("executor starts");
    let many = true;
    common::a3(&rt, &ex);
    let times = b.run(|| {
        let one = common::a3(&rt, &ex);
        (one, many.then(|| common::a3_many(&rt, &ex)))
    });
    rt.block_on(ex.shutdown());
    let one = median(times.iter().map(|(t, _)| secs(t)).collect());
    let mut out = vec![Metric::new("first reply", "ms", Better::Lower, one * 1e3)];
    if many {
        let t = median(
            times
                .iter()
                .filter_map(|(_, t)| t.as_ref())
                .map(secs)
                .collect(),
        );
        out.push(Metric::new(
            "creations, 16 at once",
            "actors/s",
            Better::Higher,
            common::A3_AT_ONCE as f64 / t,
        ));
    }
    out
}

fn a3_fork(b: &Budget) -> Vec<Metric> {
    a3(b, StartMethod::Fork)
}
fn a3_forkserver(b: &Budget) -> Vec<Metric> {
    a3(b, StartMethod::Forkserver)
}
fn a3_spawn(b: &Budget) -> Vec<Metric> {
    a3(b, StartMethod::Spawn)
}

/// `n` nodes of this runner (its boot hook makes them nodes) with
/// `workers` workers each, joined to a fresh loopback cluster, and an
/// executor with node workers only; warmed off the clock.
fn nodes(
    rt: &tokio::runtime::Runtime,
    n: usize,
    workers: usize,
) -> (Cluster, Executor, Vec<std::process::Child>) {
    let key = format!("compare-{}", std::process::id());
    let cluster = Cluster::listen("127.0.0.1:0", key.as_bytes()).expect("cluster listens");
    let children = (0..n)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().expect("this runner"))
                .env("MPROC_JOIN", cluster.address().to_string())
                .env("MPROC_AUTHKEY", &key)
                .env("MPROC_NODE_WORKERS", workers.to_string())
                .stdin(std::process::Stdio::null())
                .spawn()
                .expect("a node starts")
        })
        .collect();
    let ex = rt.block_on(async {
        let ex = Executor::builder()
            .max_workers(0)
            .cluster(&cluster)
            .build()
            .await
            .expect("executor starts");
        cluster
            .wait_for_nodes(n, Duration::from_secs(60))
            .await
            .expect("nodes join");
        let warm: Vec<_> = (0..1000).map(|i| ex.submit(common::square, i)).collect();
        for h in warm {
            h.await.expect("warm-up task");
        }
        ex
    });
    (cluster, ex, children)
}

/// Ends what [`nodes`] started: the nodes exit once the cluster closes.
fn close_nodes(rt: &tokio::runtime::Runtime, parts: (Cluster, Executor, Vec<std::process::Child>)) {
    let (cluster, ex, children) = parts;
    rt.block_on(ex.shutdown());
    drop(ex);
    drop(cluster);
    for mut c in children {
        let _ = c.wait();
    }
}

/// N1: W1 with the worker on a node.
fn n1(b: &Budget) -> Vec<Metric> {
    let rt = common::runtime();
    let parts = nodes(&rt, 1, 1);
    let lat = b
        .run(|| common::w1(&rt, &parts.1, common::W1_COUNT))
        .concat();
    close_nodes(&rt, parts);
    latency(&lat)
}

/// N2a: W2a with the workers on two nodes.
fn n2a(b: &Budget) -> Vec<Metric> {
    let rt = common::runtime();
    let parts = nodes(&rt, 2, 1);
    let reps = b.run(|| common::w2a(&rt, &parts.1));
    close_nodes(&rt, parts);
    throughput(common::N_TASKS as f64, &reps)
}

/// N3: eight `cpu_intensive(10^8)` on one local worker, then on two
/// nodes of one worker each: the speed-up the nodes give.
fn n3(b: &Budget) -> Vec<Metric> {
    const N: u64 = 100_000_000;
    let rt = common::runtime();
    let run = |ex: &Executor| {
        rt.block_on(async {
            let t = Instant::now();
            let hs: Vec<_> = (0..8)
                .map(|_| ex.submit(common::cpu_intensive, N))
                .collect();
            for h in hs {
                h.await.expect("cpu_intensive");
            }
            t.elapsed()
        })
    };
    let local = rt.block_on(Executor::new(1)).expect("executor starts");
    let parts = nodes(&rt, 2, 1);
    let reps = b.run(|| (run(&local), run(&parts.1)));
    rt.block_on(local.shutdown());
    close_nodes(&rt, parts);
    let one = median(reps.iter().map(|(l, _)| secs(l)).collect());
    let two = median(reps.iter().map(|(_, n)| secs(n)).collect());
    let speedup = median(reps.iter().map(|(l, n)| secs(l) / secs(n)).collect());
    vec![
        Metric::new("1 local worker", "s", Better::Lower, one),
        Metric::new("2 nodes x 1 worker", "s", Better::Lower, two),
        Metric::new("speedup", "x", Better::Higher, speedup),
    ]
}

fn w1(b: &Budget) -> Vec<Metric> {
    let rt = common::runtime();
    let ex = common::executor(&rt);
    let lat = b.run(|| common::w1(&rt, &ex, common::W1_COUNT)).concat();
    rt.block_on(ex.shutdown());
    latency(&lat)
}

fn w1_apply(b: &Budget) -> Vec<Metric> {
    let pool = common::pool();
    let lat = b.run(|| common::w1_apply(&pool, common::W1_COUNT)).concat();
    latency(&lat)
}

fn w2a(b: &Budget) -> Vec<Metric> {
    let rt = common::runtime();
    let ex = common::executor(&rt);
    let reps = b.run(|| common::w2a(&rt, &ex));
    rt.block_on(ex.shutdown());
    throughput(common::N_TASKS as f64, &reps)
}

fn w2b(b: &Budget) -> Vec<Metric> {
    let rt = common::runtime();
    let ex = common::executor(&rt);
    let reps = b.run(|| common::w2b(&rt, &ex));
    rt.block_on(ex.shutdown());
    throughput(common::N_TASKS as f64, &reps)
}

fn w2c(b: &Budget) -> Vec<Metric> {
    let rt = common::runtime();
    let ex = common::executor(&rt);
    let reps = b.run(|| common::w2c(&rt, &ex));
    rt.block_on(ex.shutdown());
    throughput(common::N_TASKS as f64, &reps)
}

fn w2d(b: &Budget) -> Vec<Metric> {
    let pool = common::pool();
    throughput(common::N_TASKS as f64, &b.run(|| common::w2d(&pool)))
}

fn w2e(b: &Budget) -> Vec<Metric> {
    let pool = common::pool();
    throughput(common::N_TASKS as f64, &b.run(|| common::w2e(&pool)))
}

fn w2f(b: &Budget) -> Vec<Metric> {
    let pool = common::pool();
    throughput(common::N_TASKS as f64, &b.run(|| common::w2f(&pool)))
}

fn w3(b: &Budget) -> Vec<Metric> {
    w3_with(b, common::W3_N)
}

/// W3 with `cpu_intensive(10^8)` (about 36 ms a call here): what is left
/// of W3's overheads when each task is long.
fn w3_big(b: &Budget) -> Vec<Metric> {
    w3_with(b, common::W3_BIG_N)
}

/// W3's two halves with `cpu_intensive(n)`, and the speedup of each rep.
fn w3_with(b: &Budget, n: u64) -> Vec<Metric> {
    let pool = common::pool();
    let reps = b.run(|| (common::w3_sequential_of(n), common::w3_pool_of(&pool, n)));
    let seq = median(reps.iter().map(|(s, _)| secs(s)).collect());
    let par = median(reps.iter().map(|(_, p)| secs(p)).collect());
    let speedup = median(reps.iter().map(|(s, p)| secs(s) / secs(p)).collect());
    vec![
        Metric::new("sequential", "s", Better::Lower, seq),
        Metric::new("2 workers", "s", Better::Lower, par),
        Metric::new("speedup", "x", Better::Higher, speedup),
    ]
}

fn w4s(b: &Budget) -> Vec<Metric> {
    let rt = common::runtime();
    let ex = common::executor(&rt);
    let reps = b.run(|| {
        let payloads = common::w4s_payloads();
        common::w4s(&rt, &ex, payloads)
    });
    rt.block_on(ex.shutdown());
    let per_s = common::W4S_COUNT as f64 / median(reps.iter().map(secs).collect());
    vec![
        Metric::new("throughput", "tasks/s", Better::Higher, per_s),
        Metric::new(
            "payload",
            "MB/s",
            Better::Higher,
            per_s * common::W4S_SIZE as f64 / 1e6,
        ),
    ]
}

/// The resident set size of this process, in MiB.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}

fn m1(_b: &Budget) -> Vec<Metric> {
    use mproc::prelude::StreamExt;
    let rt = common::runtime();
    let ex = common::executor(&rt);
    // A map over an endless iterator, consumed slowly: in-flight work stays
    // bounded, so memory does too.
    let base = rss_mib();
    let mut peak_map = base;
    rt.block_on(async {
        let mut stream = ex.map(common::square, 0u64..);
        for i in 0..200_000u64 {
            let r = stream.next().await.expect("endless").expect("square");
            assert_eq!(r, i * i);
            if i % 1000 == 0 {
                tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                peak_map = peak_map.max(rss_mib());
            }
        }
    });
    // A million tasks, submitted and awaited in batches.
    let base2 = rss_mib();
    let mut peak_tasks = base2;
    rt.block_on(async {
        for batch in 0..100u64 {
            let handles: Vec<_> = (0..10_000u64)
                .map(|i| ex.submit(common::square, batch * 10_000 + i))
                .collect();
            for h in handles {
                h.await.expect("square");
            }
            peak_tasks = peak_tasks.max(rss_mib());
        }
    });
    rt.block_on(ex.shutdown());
    vec![
        Metric::new("slow endless map", "MiB", Better::Lower, peak_map - base),
        Metric::new("1 M tasks", "MiB", Better::Lower, peak_tasks - base2),
    ]
}

fn w4l_shared(b: &Budget) -> Vec<Metric> {
    let rt = common::runtime();
    let ex = common::executor(&rt);
    let payload = common::w4l_payload();
    let shared = mproc::SharedBytes::from_slice(&payload).expect("shared buffer");
    common::w4l_shared(&rt, &ex, &payload[..1 << 20]); // warm-up
    common::w4l_shared_handle(&rt, &ex, &shared);
    let reps = b.run(|| {
        (
            common::w4l_shared_handle(&rt, &ex, &shared),
            common::w4l_shared(&rt, &ex, &payload),
        )
    });
    rt.block_on(ex.shutdown());
    let round_trip = median(reps.iter().map(|(h, _)| secs(h)).collect());
    let through = median(reps.iter().map(|(_, t)| secs(t)).collect());
    vec![
        Metric::new("round trip", "s", Better::Lower, round_trip),
        Metric::new(
            "both directions",
            "GB/s",
            Better::Higher,
            2.0 * common::W4L_SIZE as f64 / round_trip / 1e9,
        ),
        Metric::new(
            "made and read through: round trip",
            "s",
            Better::Lower,
            through,
        ),
    ]
}

fn w4l(b: &Budget) -> Vec<Metric> {
    let rt = common::runtime();
    let ex = common::executor(&rt);
    let payload = common::w4l_payload();
    let mut dst = payload.clone(); // faulted in, off the clock
    common::w4l(&rt, &ex, Bytes::from(&payload[..1 << 20])); // warm-up
    let reps = b.run(|| {
        let copy = payload.clone();
        let rt_time = common::w4l(&rt, &ex, copy);
        (rt_time, common::memcpy(&mut dst, &payload))
    });
    rt.block_on(ex.shutdown());
    let round_trip = median(reps.iter().map(|(r, _)| secs(r)).collect());
    let copy = median(reps.iter().map(|(_, c)| secs(c)).collect());
    vec![
        Metric::new("round trip", "s", Better::Lower, round_trip),
        Metric::new(
            "both directions",
            "GB/s",
            Better::Higher,
            2.0 * common::W4L_SIZE as f64 / round_trip / 1e9,
        ),
        Metric::new("memcpy 64 MiB", "ms", Better::Lower, copy * 1e3),
        Metric::new("round trip / memcpy", "x", Better::Lower, round_trip / copy),
    ]
}

// --- command line ----------------------------------------------------------------

const USAGE: &str = "usage: compare --list | --floor | --workload ID [--budget SECONDS] [--max-reps N] | --plot RESULTS.json OUT.png";

fn list() {
    for w in WORKLOADS {
        let floors: serde_json::Map<String, serde_json::Value> = w
            .floors
            .iter()
            .map(|(m, f)| (m.to_string(), json!(f)))
            .collect();
        println!(
            "{}",
            json!({
                "id": w.id,
                "title": w.title,
                "available": w.run.is_some(),
                "note": w.note,
                "floors": floors,
            })
        );
    }
}

fn run_one(id: &str, budget: Budget) -> Result<(), String> {
    let w = WORKLOADS
        .iter()
        .find(|w| w.id == id)
        .ok_or_else(|| format!("unknown workload {id:?}; see --list"))?;
    let run = w.run.ok_or_else(|| format!("{id}: {} in mproc", w.note))?;
    let metrics = run(&budget);
    println!(
        "{}",
        json!({
            "id": id,
            "side": "mproc",
            "reps": budget.reps.get(),
            "metrics": metrics.iter().map(Metric::to_json).collect::<Vec<_>>(),
        })
    );
    Ok(())
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; it means nothing here.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut budget = Budget {
        seconds: 1.0,
        max_reps: 20,
        reps: Cell::new(0),
    };
    let mut workload = None;
    let mut it = args.iter();
    let result = loop {
        let Some(arg) = it.next() else {
            break match workload {
                Some(id) => run_one(id, budget),
                None => {
                    // Plain `cargo bench`: nothing selected, nothing to do.
                    eprintln!("{USAGE}");
                    Ok(())
                }
            };
        };
        match arg.as_str() {
            "--list" => {
                list();
                break Ok(());
            }
            "--floor" => break floor::run().map(|m| floor::print(&m)),
            "--plot" => match (it.next(), it.next()) {
                (Some(input), Some(output)) => break plot::draw(input, output),
                _ => break Err(USAGE.to_string()),
            },
            "--workload" => workload = it.next().map(String::as_str),
            "--budget" => match it.next().and_then(|s| s.parse().ok()) {
                Some(s) => budget.seconds = s,
                None => break Err(USAGE.to_string()),
            },
            "--max-reps" => match it.next().and_then(|s| s.parse().ok()) {
                Some(n) => budget.max_reps = n,
                None => break Err(USAGE.to_string()),
            },
            other => break Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::FAILURE
        }
    }
}
