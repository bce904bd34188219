#!/usr/bin/env bash
# Runs each fuzz target of fuzz/ (cargo-fuzz, libFuzzer, debug assertions
# and overflow checks on, AddressSanitizer unless FUZZ_SANITIZER says
# otherwise) for SECONDS, one after the other,
# one libFuzzer job each, then prints every target's executions from
# libFuzzer's final stats and whether it found a crash, hang (-timeout) or
# out-of-memory (-rss_limit_mb).
#
#   scripts/fuzz.sh SECONDS [TARGET...]     # all targets when none named
#   FUZZ_SANITIZER=none scripts/fuzz.sh ... # about 3x the executions: the
#                                           # targets reach no unsafe code
#                                           # of ours, so ASan adds little
#
# Needs the nightly toolchain (`rustup toolchain install nightly`);
# installs cargo-fuzz when missing. Builds into $CARGO_TARGET_DIR/fuzz when
# CARGO_TARGET_DIR is set, else fuzz/target. Each target's corpus grows in
# fuzz/corpus/TARGET (not committed) from the seeds in fuzz/seeds/TARGET
# (committed; regenerate with `cargo +nightly run --bin make_seeds` in
# fuzz/); what libFuzzer finds goes to fuzz/artifacts/TARGET/, its log to
# fuzz/runs/TARGET/fuzz-0.log. A finding makes the script exit 1: turn it
# into a regression test (see fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

secs=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
all=(frame msg_parent msg_worker msg_cluster msg_manager msg_actor auth_server auth_client)
if [ $# -eq 0 ]; then
    targets=("${all[@]}")
else
    targets=("$@")
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: the nightly toolchain is required (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked
fi

target_dir=${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}
target_dir=${target_dir:-$root/fuzz/target}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
sanitizer=${FUZZ_SANITIZER:-address}
echo "== build (nightly, sanitizer: $sanitizer, debug assertions) into $target_dir"
# One target at a time: `cargo fuzz build` without one also builds the
# seed maker (fuzz/src/bin), which does not link without a sanitizer's
# runtime.
for t in "${targets[@]}"; do
    cargo +nightly fuzz build --sanitizer "$sanitizer" --target-dir "$target_dir" "$t" 2>&1 |
        { grep -vE '^ *(Compiling|Downloaded|Downloading)' || true; }
done
bin=$target_dir/x86_64-unknown-linux-gnu/release

failed=0
total=0
summary=()
for t in "${targets[@]}"; do
    corpus=$root/fuzz/corpus/$t
    seeds=$root/fuzz/seeds/$t
    artifacts=$root/fuzz/artifacts/$t
    runs=$root/fuzz/runs/$t
    mkdir -p "$corpus" "$seeds" "$artifacts" "$runs"
    before=$(find "$artifacts" -type f | wc -l)
    echo "== $t for ${secs}s"
    rc=0
    (cd "$runs" && rm -f fuzz-0.log &&
        "$bin/$t" "$corpus" "$seeds" \
            -max_total_time="$secs" -jobs=1 -workers=1 \
            -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$artifacts/" >/dev/null 2>&1) || rc=$?
    log=$runs/fuzz-0.log
    execs=$(grep -o 'number_of_executed_units: *[0-9]*' "$log" 2>/dev/null | tail -1 | grep -o '[0-9]*$' || echo 0)
    execs=${execs:-0}
    after=$(find "$artifacts" -type f | wc -l)
    verdict=ok
    if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ] ||
        grep -qE 'ERROR: libFuzzer|==ERROR|panicked at' "$log" 2>/dev/null; then
        verdict="FOUND (exit $rc; see $log and $artifacts)"
        failed=1
        grep -E 'panicked at|ERROR|SUMMARY' -A3 "$log" | head -20 || true
    fi
    total=$((total + execs))
    summary+=("$(printf '%-12s %12s  %s' "$t" "$execs" "$verdict")")
done

echo "== summary (${secs}s per target; executions from libFuzzer's final stats)"
printf '%-12s %12s  %s\n' target executions result
printf '%s\n' "${summary[@]}"
printf '%-12s %12s\n' total "$total"
exit $failed
