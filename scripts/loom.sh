#!/usr/bin/env bash
# Runs the loom models of the two rings, built with `--cfg loom`:
#   transport/tests/loom_shm_ring.rs   the shared-memory transport's ring
#   core/tests/loom_queue_ring.rs      the queue's and pipe's shared ring
# Each is a self-contained mirror of the real protocol (the files say which
# lines and why). Builds into $CARGO_TARGET_DIR/loom (else target/loom), so
# the cfg change does not invalidate the normal build. About 5 minutes of
# building on 2 cores the first time; the models run in seconds.
#
#   scripts/loom.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}/loom
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
# Loom prints the interleaving that failed when asked to.
export LOOM_LOCATION=1

cargo test --locked --release -p mproc-transport --test loom_shm_ring
cargo test --locked --release -p mproc-core --test loom_queue_ring
