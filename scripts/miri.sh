#!/usr/bin/env bash
# Runs the pure parts under miri (undefined behaviour, out-of-bounds and
# uninitialised reads, leaks): the frame codec on an in-memory stream
# (transport/tests/frame_codec.rs) and mproc-core's result-batch unit tests
# (the varint and join arithmetic a worker's counts feed), and both rings'
# index arithmetic: the transport ring's wrapped copy (`shm::wrap_copy`) on
# ordinary memory, and the queue ring's record sizes and skips. The rings
# themselves run on shared mappings, eventfds and futexes, which miri cannot
# execute; their protocols are covered by scripts/loom.sh.
#
#   scripts/miri.sh
#
# Needs the nightly toolchain with miri: `rustup +nightly component add
# miri rust-src` (the script tries that once). Builds into
# $CARGO_TARGET_DIR/miri (else target/miri).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup +nightly component add miri rust-src
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}/miri
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

cargo +nightly miri test --locked -p mproc-transport --test frame_codec
cargo +nightly miri test --locked -p mproc-transport --lib -- shm::tests
cargo +nightly miri test --locked -p mproc-core --lib -- protocol::batch shared::ring::index_tests
