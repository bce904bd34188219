"""The Python mirror of WORKLOADS.md: the peer side of `scripts/compare.py`.

Stdlib only (`multiprocessing`, `concurrent.futures`). Every workload has
the same id, inputs and outputs as the Rust runner `benches/compare.rs`, and
2 workers wherever a pool is involved. One invocation runs one workload and
prints one JSON line:

    python3 benches/python/workloads.py --workload W2a [--budget S] [--max-reps N]
    python3 benches/python/workloads.py --list

A workload is `setup()` (untimed: pool start-up and warm-up), then timed
repetitions `rep()` while the time budget lasts (at least one, at most
`--max-reps`), then `metrics(reps)` turns the samples into the reported
figures. Only W5 and W5p time process start-up, because that is what they
measure. The JSON line is

    {"id": ..., "side": "python", "reps": n, "metrics": [
        {"name": ..., "unit": ..., "better": "higher"|"lower", "value": x}, ...]}

Adding a workload is one class and one entry in WORKLOADS.
"""

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

N_TASKS = 100_000
WORKERS = 2
MIB = 1 << 20


# --- task functions (WORKLOADS.md) -------------------------------------------


def square(x):
    return x * x


def echo(x):
    return x


def cpu_intensive(n):
    return sum(i * i for i in range(n))


def noop():
    return None


# --- helpers -----------------------------------------------------------------


def metric(name, unit, better, value):
    return {"name": name, "unit": unit, "better": better, "value": value}


def median(xs):
    return statistics.median(xs)


def percentile(xs, p):
    s = sorted(xs)
    return s[round((len(s) - 1) * p)]


def flat(reps):
    return [x for rep in reps for x in rep]


def column(reps, i):
    return [rep[i] for rep in reps]


class Workload:
    """Base: no set-up, nothing to tear down."""

    def setup(self):
        pass

    def teardown(self):
        pass


class RoundTrips(Workload):
    """W1: warm pool of 2; 2000 sequential calls, each awaited before the next."""

    COUNT = 2000

    def metrics(self, reps):
        lat = flat(reps)
        return [
            metric("median", "µs", "lower", median(lat) * 1e6),
            metric("p99", "µs", "lower", percentile(lat, 0.99) * 1e6),
        ]


class W1(RoundTrips):
    title = "2000 sequential submit(square, i), each awaited (ProcessPoolExecutor)"

    def setup(self):
        self.ex = ProcessPoolExecutor(WORKERS)
        list(self.ex.map(square, range(200)))
        for i in range(200):
            self.ex.submit(square, i).result()

    def rep(self):
        out = []
        submit, clock = self.ex.submit, time.perf_counter
        for i in range(self.COUNT):
            t = clock()
            submit(square, i).result()
            out.append(clock() - t)
        return out

    def teardown(self):
        self.ex.shutdown()


class W1Apply(RoundTrips):
    title = "2000 sequential Pool.apply(square, (i,))"

    def setup(self):
        self.pool = mp.Pool(WORKERS)
        self.pool.map(square, range(200))
        for i in range(200):
            self.pool.apply(square, (i,))

    def rep(self):
        out = []
        apply, clock = self.pool.apply, time.perf_counter
        for i in range(self.COUNT):
            t = clock()
            apply(square, (i,))
            out.append(clock() - t)
        return out

    def teardown(self):
        self.pool.terminate()
        self.pool.join()


class Throughput(Workload):
    """A batch of N_TASKS tasks per repetition; reports tasks/s."""

    def metrics(self, reps):
        return [metric("throughput", "tasks/s", "higher", N_TASKS / median(flat(reps)))]


class ExecutorThroughput(Throughput):
    def setup(self):
        self.ex = ProcessPoolExecutor(WORKERS)
        list(self.ex.map(square, range(1000)))

    def rep(self):
        t = time.perf_counter()
        self.batch()
        return [time.perf_counter() - t]

    def teardown(self):
        self.ex.shutdown()


class PoolThroughput(ExecutorThroughput):
    def setup(self):
        self.pool = mp.Pool(WORKERS)
        self.pool.map(square, range(1000))

    def teardown(self):
        self.pool.terminate()
        self.pool.join()


class W2a(ExecutorThroughput):
    title = "100 000 submit(square, i), then wait for all (ProcessPoolExecutor)"

    def batch(self):
        futs = [self.ex.submit(square, i) for i in range(N_TASKS)]
        return [f.result() for f in futs]


class W2b(ExecutorThroughput):
    title = "ProcessPoolExecutor.map(square, range(100_000))"

    def batch(self):
        return list(self.ex.map(square, range(N_TASKS)))


class W2c(ExecutorThroughput):
    title = "ProcessPoolExecutor.map(square, range(100_000), chunksize=1000)"

    def batch(self):
        return list(self.ex.map(square, range(N_TASKS), chunksize=1000))


class W2d(PoolThroughput):
    title = "Pool.map(square, range(100_000))"

    def batch(self):
        return self.pool.map(square, range(N_TASKS))


class W2e(PoolThroughput):
    title = "Pool.imap_unordered(square, range(100_000), chunksize=1)"

    def batch(self):
        return list(self.pool.imap_unordered(square, range(N_TASKS), chunksize=1))


class W2f(PoolThroughput):
    title = "100 000 Pool.apply_async(square, (i,)), then get all"

    def batch(self):
        rs = [self.pool.apply_async(square, (i,)) for i in range(N_TASKS)]
        return [r.get() for r in rs]


class W3(Workload):
    title = "8 x cpu_intensive(10**6): in-process sequential vs Pool(2).map"
    N = 10**6

    def setup(self):
        self.pool = mp.Pool(WORKERS)
        self.pool.map(square, range(100))

    def rep(self):
        t = time.perf_counter()
        seq = [cpu_intensive(self.N) for _ in range(8)]
        t_seq = time.perf_counter() - t
        t = time.perf_counter()
        par = self.pool.map(cpu_intensive, [self.N] * 8)
        t_par = time.perf_counter() - t
        assert seq == par
        return [t_seq, t_par]

    def metrics(self, reps):
        seq, par = column(reps, 0), column(reps, 1)
        return [
            metric("sequential", "s", "lower", median(seq)),
            metric("2 workers", "s", "lower", median(par)),
            metric("speedup", "x", "higher", median([s / p for s, p in reps])),
        ]

    def teardown(self):
        self.pool.terminate()
        self.pool.join()


class W4s(ExecutorThroughput):
    title = "echo of 1 KiB bytes payloads, 20 000 tasks (ProcessPoolExecutor)"
    COUNT = 20_000
    SIZE = 1024

    def setup(self):
        super().setup()
        self.payloads = [bytes([i % 251]) * self.SIZE for i in range(self.COUNT)]
        for f in [self.ex.submit(echo, p) for p in self.payloads[:1000]]:
            f.result()

    def batch(self):
        futs = [self.ex.submit(echo, p) for p in self.payloads]
        out = [f.result() for f in futs]
        assert len(out[-1]) == self.SIZE
        return out

    def metrics(self, reps):
        per_s = self.COUNT / median(flat(reps))
        return [
            metric("throughput", "tasks/s", "higher", per_s),
            metric("payload", "MB/s", "higher", per_s * self.SIZE / 1e6),
        ]


class W4l(Workload):
    title = "echo of one 64 MiB bytes payload (ProcessPoolExecutor)"
    SIZE = 64 * MIB

    def setup(self):
        self.ex = ProcessPoolExecutor(WORKERS)
        list(self.ex.map(square, range(100)))
        self.payload = bytes(range(256)) * (self.SIZE // 256)
        # memoryview slice assignment is one memcpy (bytearray slice
        # assignment is several times slower); fault the pages in first.
        self.dst = memoryview(bytearray(self.SIZE))
        self.dst[:] = self.payload
        self.ex.submit(echo, b"x" * MIB).result()

    def rep(self):
        t = time.perf_counter()
        back = self.ex.submit(echo, self.payload).result()
        rt = time.perf_counter() - t
        assert len(back) == self.SIZE
        del back
        t = time.perf_counter()
        self.dst[:] = self.payload  # one memcpy of 64 MiB, in-process
        cp = time.perf_counter() - t
        return [rt, cp]

    def metrics(self, reps):
        rt, cp = median(column(reps, 0)), median(column(reps, 1))
        return [
            metric("round trip", "s", "lower", rt),
            metric("both directions", "GB/s", "higher", 2 * self.SIZE / rt / 1e9),
            metric("memcpy 64 MiB", "ms", "lower", cp * 1e3),
            metric("round trip / memcpy", "x", "lower", rt / cp),
        ]

    def teardown(self):
        self.dst.release()
        self.ex.shutdown()


class W5(Workload):
    """Pool(2) constructed -> first result of a trivial task, per start method."""

    def __init__(self, method):
        self.method = method
        self.title = f"Pool(2) constructed -> first result of noop, start method {method}"

    def setup(self):
        # One untimed repetition first: imports are warm and, for
        # forkserver, the server is running, so the reps measure the
        # steady state.
        self.ctx = mp.get_context(self.method)
        self.rep()

    def rep(self):
        t = time.perf_counter()
        pool = self.ctx.Pool(WORKERS)
        pool.apply(noop)
        dt = time.perf_counter() - t
        pool.terminate()
        pool.join()
        return [dt]

    def metrics(self, reps):
        return [metric("first result", "ms", "lower", median(flat(reps)) * 1e3)]


class W5p(W5):
    """start + join of one Process running a no-op, per start method."""

    def __init__(self, method):
        super().__init__(method)
        self.title = f"Process(target=noop).start() + join(), start method {method}"

    def rep(self):
        t = time.perf_counter()
        p = self.ctx.Process(target=noop)
        p.start()
        p.join()
        dt = time.perf_counter() - t
        assert p.exitcode == 0
        return [dt]

    def metrics(self, reps):
        return [metric("start + join", "ms", "lower", median(flat(reps)) * 1e3)]


def _pipe_echo(conn):
    while True:
        x = conn.recv()
        if x is None:
            return
        conn.send(x)


class W6p(Workload):
    title = "Pipe ping-pong of a small int with a child process, 10 000 round trips"
    COUNT = 10_000

    def setup(self):
        self.conn, theirs = mp.Pipe()
        self.child = mp.Process(target=_pipe_echo, args=(theirs,))
        self.child.start()
        theirs.close()
        for i in range(1000):
            self.conn.send(i)
            self.conn.recv()

    def rep(self):
        out = []
        send, recv, clock = self.conn.send, self.conn.recv, time.perf_counter
        for i in range(self.COUNT):
            t = clock()
            send(i)
            recv()
            out.append(clock() - t)
        return out

    def metrics(self, reps):
        lat = flat(reps)
        return [
            metric("median", "µs", "lower", median(lat) * 1e6),
            metric("p99", "µs", "lower", percentile(lat, 0.99) * 1e6),
        ]

    def teardown(self):
        self.conn.send(None)
        self.child.join()


def _produce(q, go, n):
    go.wait()
    for i in range(n):
        q.put(i)
    q.put(None)


def _consume(q, done):
    count = 0
    while q.get() is not None:
        count += 1
    done.send(count)


class W6q(Workload):
    title = "one producer process -> one consumer process, 200 000 ints via Queue"
    COUNT = 200_000

    def rep(self):
        # Processes start before the clock; the clock runs from the go signal
        # to the consumer's report that it has seen the last item.
        q, go = mp.Queue(), mp.Event()
        done_r, done_w = mp.Pipe(duplex=False)
        prod = mp.Process(target=_produce, args=(q, go, self.COUNT))
        cons = mp.Process(target=_consume, args=(q, done_w))
        cons.start()
        prod.start()
        time.sleep(0.05)
        t = time.perf_counter()
        go.set()
        count = done_r.recv()
        dt = time.perf_counter() - t
        prod.join()
        cons.join()
        assert count == self.COUNT
        return [dt]

    def metrics(self, reps):
        return [metric("throughput", "items/s", "higher", self.COUNT / median(flat(reps)))]


def _increment(v, go, n):
    go.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1


class W7(Workload):
    title = "4 processes x 10 000 locked increments of a shared Value('i')"
    PROCS, EACH = 4, 10_000

    def rep(self):
        v, go = mp.Value("i", 0), mp.Event()
        ps = [mp.Process(target=_increment, args=(v, go, self.EACH)) for _ in range(self.PROCS)]
        for p in ps:
            p.start()
        time.sleep(0.05)
        t = time.perf_counter()
        go.set()
        for p in ps:
            p.join()
        dt = time.perf_counter() - t
        assert v.value == self.PROCS * self.EACH, v.value
        return [dt]

    def metrics(self, reps):
        total = self.PROCS * self.EACH
        return [metric("throughput", "increments/s", "higher", total / median(flat(reps)))]


def _manager_child(d, lst, n, out):
    t = time.perf_counter()
    for i in range(n):
        d[i] = i
    for i in range(n):
        assert d[i] == i
    t_dict = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(n):
        lst.append(i)
    t_list = time.perf_counter() - t
    out.send((t_dict, t_list))


class W8(Workload):
    title = "a child: 10 000 dict sets + 10 000 gets, 10 000 list appends on a Manager"
    COUNT = 10_000

    def setup(self):
        self.manager = mp.Manager()

    def rep(self):
        d, lst = self.manager.dict(), self.manager.list()
        r, w = mp.Pipe(duplex=False)
        p = mp.Process(target=_manager_child, args=(d, lst, self.COUNT, w))
        p.start()
        t_dict, t_list = r.recv()
        p.join()
        assert len(lst) == self.COUNT
        return [t_dict, t_list]

    def metrics(self, reps):
        return [
            metric("dict ops", "ops/s", "higher", 2 * self.COUNT / median(column(reps, 0))),
            metric("list appends", "ops/s", "higher", self.COUNT / median(column(reps, 1))),
        ]

    def teardown(self):
        self.manager.shutdown()


# Same ids and order as the Rust runner's table in benches/compare.rs.
WORKLOADS = {
    "W1": W1,
    "W1-apply": W1Apply,
    "W2a": W2a,
    "W2b": W2b,
    "W2c": W2c,
    "W2d": W2d,
    "W2e": W2e,
    "W2f": W2f,
    "W3": W3,
    "W4s": W4s,
    "W4l": W4l,
    "W5-fork": lambda: W5("fork"),
    "W5-forkserver": lambda: W5("forkserver"),
    "W5-spawn": lambda: W5("spawn"),
    "W5p-fork": lambda: W5p("fork"),
    "W5p-forkserver": lambda: W5p("forkserver"),
    "W5p-spawn": lambda: W5p("spawn"),
    "W6p": W6p,
    "W6q": W6q,
    "W7": W7,
    "W8": W8,
}


def run(wid, budget, max_reps):
    w = WORKLOADS[wid]()
    w.setup()
    try:
        reps, spent = [], 0.0
        while not reps or (spent < budget and len(reps) < max_reps):
            t = time.perf_counter()
            reps.append(w.rep())
            spent += time.perf_counter() - t
    finally:
        w.teardown()
    return {"id": wid, "side": "python", "reps": len(reps), "metrics": w.metrics(reps)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print the workload ids, one JSON line each")
    ap.add_argument("--workload", help="the workload id to run")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timed repetitions")
    ap.add_argument("--max-reps", type=int, default=20)
    args = ap.parse_args()
    if args.list:
        for wid, make in WORKLOADS.items():
            print(json.dumps({"id": wid, "title": make().title}))
        return 0
    if args.workload not in WORKLOADS:
        ap.error(f"unknown workload {args.workload!r}; see --list")
    print(json.dumps(run(args.workload, args.budget, args.max_reps)), flush=True)
    return 0


if __name__ == "__main__":
    # Ordinary, default start method for the platform (fork on Linux before
    # 3.14) except where a workload names one.
    sys.exit(main())
