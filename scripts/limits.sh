#!/usr/bin/env bash
# Measures mproc at its limits (docs/limits.md has the figures of a run):
#
#   scripts/limits.sh [OUT_DIR]        # OUT_DIR defaults to target/limits
#
# Runs `benches/limits.rs` (bench profile) for: the default message size
# (1 GiB + 1 MiB; about 4 GiB of memory), 1 000 workers, 1 000 000 queued
# tasks, 1 000 actors, and then 1 000 workers and 10 000 actors under a
# lowered descriptor limit (prlimit --nofile) and a lowered process limit
# (prlimit --nproc, as user nobody when run as root, since root ignores
# RLIMIT_NPROC). Each case must end, within its timeout, with the work done
# or a clear error naming the limit, and nothing left running; the output of
# each goes to OUT_DIR/<case>.txt. Exit status: 0 when every case did, 1
# otherwise.
#
# Heavy: several GiB of memory and a few thousand processes at once, for
# about 3 minutes; not part of CI. It never lets 10 000 actors start with
# the machine's own limits: on a shared host that would exhaust
# kernel.pid_max for every user (see docs/limits.md for the arithmetic).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/limits}
mkdir -p "$out"

echo "limits: building (cargo bench -p mproc-benches --bench limits) ..." >&2
exe=$(cargo bench -q -p mproc-benches --bench limits --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "limits" and m.get("executable"):
        print(m["executable"])')
[[ -x "$exe" ]] || { echo "limits: no executable built" >&2; exit 1; }

as_nobody=()
if [[ $(id -u) -eq 0 ]]; then
    chmod o+rx "$exe"
    as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
fi

failed=0
run() {
    local name=$1
    shift
    echo "== $name" >&2
    if timeout 900 "$@" >"$out/$name.txt" 2>"$out/$name.err"; then
        grep -E '^(start|up|map|submit|done|spawn|spawned|call|called|stop|outcome|message|argument|result|queue|left)' \
            "$out/$name.txt" | cut -c1-300 >&2 || true
    else
        echo "limits: $name FAILED (status $?); see $out/$name.txt" >&2
        failed=1
    fi
}

run message "$exe" message
run workers-1000 "$exe" workers 1000
run queued-1M "$exe" queued 1000000
run actors-1000 "$exe" actors 1000
run workers-1000-nofile-1024 prlimit --nofile=1024 -- "$exe" workers 1000
run workers-1000-nproc-2048 "${as_nobody[@]}" prlimit --nproc=2048 -- "$exe" workers 1000
run actors-10000-nofile-2048 prlimit --nofile=2048 -- "$exe" actors 10000
run actors-10000-nproc-4096 "${as_nobody[@]}" prlimit --nproc=4096 -- "$exe" actors 10000

exit $failed
