#!/usr/bin/env python3
"""A stand-in for `examples/cluster.rs`, for testing launch scripts today.

It follows the same contract the real example will follow, so a launcher
can run either one unchanged:

* Started with `MPROC_JOIN=host:port` and `MPROC_AUTHKEY_FILE=path` (or
  `MPROC_AUTHKEY=...`) in its environment, it is a *node*: it connects to
  the driver, proves it holds the key, computes the share of the job it is
  given, and waits until the driver ends, then exits 0.
* Started with `--listen ADDR --wait-nodes K --key-file PATH`, it is the
  *driver*: it listens on ADDR, waits for K nodes, hands each a share of a
  Monte Carlo estimate of pi, and prints `node ...` lines, `nodes: K` and a
  final line starting with `pi ≈`.
* Started with no arguments, it computes the estimate alone and prints
  `nodes: 0`.

The wire protocol is a few lines of text, and only this file speaks it:

    driver -> node   CHALLENGE <hex nonce>
    node -> driver   HELLO <name> <hex HMAC-SHA256(key, nonce)>
    driver -> node   WORK <seed> <samples>
    node -> driver   RESULT <hits> <samples>
    driver closes the connection when the job is done; the node exits 0.

The key file's content is the key, less one trailing newline, as for mproc.
Everything is bounded in time: no wait here lasts more than `--timeout`
seconds (driver) or MPROC_STANDIN_TIMEOUT seconds (node, default 60).
"""

import argparse
import hashlib
import hmac
import os
import random
import secrets
import socket
import sys
import time

SAMPLES_PER_NODE = 200_000


def read_key_file(path):
    with open(path, "rb") as f:
        key = f.read()
    if key.endswith(b"\n"):
        key = key[:-1]
    if not key:
        raise SystemExit(f"standin: key file {path} is empty")
    return key


def node_key():
    path = os.environ.get("MPROC_AUTHKEY_FILE")
    if path:
        return read_key_file(path)
    inline = os.environ.get("MPROC_AUTHKEY")
    if inline:
        return inline.encode()
    raise SystemExit("standin: node needs MPROC_AUTHKEY_FILE or MPROC_AUTHKEY")


def split_addr(addr):
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SystemExit(f"standin: address {addr!r} is not host:port")
    return host.strip("[]"), int(port)


def hits_for(seed, samples):
    rng = random.Random(seed)
    hits = 0
    for _ in range(samples):
        x = rng.random()
        y = rng.random()
        if x * x + y * y <= 1.0:
            hits += 1
    return hits


def node_name():
    rank = os.environ.get("SLURM_PROCID") or os.environ.get(
        "JOB_COMPLETION_INDEX", "?"
    )
    return f"rank={rank},host={socket.gethostname()},pid={os.getpid()}"


def run_node(join):
    key = node_key()
    host, port = split_addr(join)
    limit = float(os.environ.get("MPROC_STANDIN_TIMEOUT", "60"))
    deadline = time.monotonic() + limit
    # The driver may not be listening yet: retry, within the deadline.
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=5)
            break
        except OSError as err:
            if time.monotonic() >= deadline:
                raise SystemExit(f"standin node: cannot reach {join}: {err}")
            time.sleep(0.2)
    sock.settimeout(max(1.0, deadline - time.monotonic()))
    f = sock.makefile("rwb", buffering=0)
    word, nonce = f.readline().decode().split()
    if word != "CHALLENGE":
        raise SystemExit(f"standin node: unexpected {word!r}")
    mac = hmac.new(key, bytes.fromhex(nonce), hashlib.sha256).hexdigest()
    f.write(f"HELLO {node_name()} {mac}\n".encode())
    line = f.readline().decode().split()
    if not line:
        raise SystemExit("standin node: driver refused this node (wrong key?)")
    word, seed, samples = line
    if word != "WORK":
        raise SystemExit(f"standin node: unexpected {word!r}")
    hits = hits_for(int(seed), int(samples))
    f.write(f"RESULT {hits} {samples}\n".encode())
    # Serve until the driver ends: it closes the connection.
    while f.readline():
        pass
    sock.close()
    return 0


def run_driver(args):
    if args.listen is None:
        hits = hits_for(0, SAMPLES_PER_NODE)
        print("nodes: 0")
        print(f"pi ≈ {4.0 * hits / SAMPLES_PER_NODE:.5f}")
        return 0
    if args.key_file is None:
        raise SystemExit("standin driver: --listen needs --key-file")
    key = read_key_file(args.key_file)
    host, port = split_addr(args.listen)
    deadline = time.monotonic() + args.timeout
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(16)
    print(f"driver: listening on {args.listen}, waiting for {args.wait_nodes} nodes",
          flush=True)
    nodes = []
    total_hits = 0
    total_samples = 0
    while len(nodes) < args.wait_nodes:
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"driver: timed out with {len(nodes)} of {args.wait_nodes} nodes",
                  file=sys.stderr)
            return 1
        srv.settimeout(left)
        try:
            conn, peer = srv.accept()
        except socket.timeout:
            continue
        conn.settimeout(max(1.0, deadline - time.monotonic()))
        f = conn.makefile("rwb", buffering=0)
        nonce = secrets.token_bytes(16)
        try:
            f.write(f"CHALLENGE {nonce.hex()}\n".encode())
            word, name, mac = f.readline().decode().split()
        except (OSError, ValueError):
            print(f"driver: dropped a connection from {peer[0]} (bad hello)",
                  flush=True)
            conn.close()
            continue
        want = hmac.new(key, nonce, hashlib.sha256).hexdigest()
        if word != "HELLO" or not hmac.compare_digest(mac, want):
            print(f"driver: refused {name} from {peer[0]} (wrong key)", flush=True)
            conn.close()
            continue
        seed = len(nodes) + 1
        f.write(f"WORK {seed} {SAMPLES_PER_NODE}\n".encode())
        word, hits, samples = f.readline().decode().split()
        total_hits += int(hits)
        total_samples += int(samples)
        nodes.append((conn, name))
        print(f"node {name} from {peer[0]}: {hits}/{samples}", flush=True)
    for conn, _ in nodes:
        conn.close()
    srv.close()
    print(f"nodes: {len(nodes)}")
    print(f"pi ≈ {4.0 * total_hits / total_samples:.5f}")
    return 0


def main():
    join = os.environ.get("MPROC_JOIN")
    if join:
        return run_node(join)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", metavar="ADDR")
    p.add_argument("--wait-nodes", type=int, default=1, metavar="K")
    p.add_argument("--key-file", metavar="PATH")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
    return run_driver(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
