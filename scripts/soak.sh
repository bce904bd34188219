#!/usr/bin/env bash
# Soak test: a mixed load (maps, actors, queues, a Manager, worker crashes)
# for MINUTES, sampling the driver's RSS, descriptors and threads every 10 s.
#
#   scripts/soak.sh MINUTES [OUT_DIR]      # OUT_DIR defaults to target/soak
#
# Writes OUT_DIR/soak.csv (one line per sample), OUT_DIR/soak.txt (the
# check's table, Markdown) and OUT_DIR/soak.png (the plot). The load and the
# check are `benches/soak.rs` (built in the bench profile); the check
# ignores a warm-up (a fifth of the run, at least 60 s) and fails when the
# median of the later samples exceeds that of the earlier ones by more than
# its tolerance (2 MiB or 5 % of RSS; 2 descriptors, threads or processes).
# Exit status: 0 flat, 1 something grew or the load failed, 2 wrong usage.
# Runs at least 2 minutes to have samples after the warm-up; 10 gives the
# figures of BENCHMARKS.md ("Soak").
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "usage: scripts/soak.sh MINUTES [OUT_DIR]" >&2
    exit 2
fi
minutes=$1
out=${2:-target/soak}
mkdir -p "$out"
# Absolute: cargo runs the bench from the benches/ package directory.
out=$(cd "$out" && pwd)

soak() { cargo bench -q -p mproc-benches --bench soak -- "$@"; }

echo "soak: building the load (cargo bench -p mproc-benches --bench soak) ..." >&2
cargo bench -q -p mproc-benches --bench soak --no-run
echo "soak: running for $minutes min; samples in $out/soak.csv" >&2
status=0
soak --minutes "$minutes" --csv "$out/soak.csv" | tee "$out/soak.txt" || status=$?
if [[ -s "$out/soak.csv" ]]; then
    soak --plot "$out/soak.csv" "$out/soak.png" && echo "soak: plot in $out/soak.png" >&2
fi
if [[ $status -ne 0 ]]; then
    echo "soak: FAILED (see above)" >&2
    exit 1
fi
echo "soak: flat" >&2
