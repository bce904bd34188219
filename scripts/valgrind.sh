#!/usr/bin/env bash
# Runs the shared-object and transport test suites under valgrind's
# memcheck; any memory error, or a definite leak, fails the run.
#
#   scripts/valgrind.sh            # every suite below
#   scripts/valgrind.sh transport  # suites whose name contains "transport"
#
# Suites: mproc-transport's unit tests and tests/conformance.rs;
# mproc-core's unit tests of `shared::` (segments, byte maps, bytes);
# and tests/shared_*.rs of the mproc facade (queues, pipes, locks,
# values, lifetimes, crashes and leaks, across worker processes).
#
# Each test binary runs with --test-threads=1 under
#   valgrind --error-exitcode=1 --leak-check=full --trace-children=yes
#            --vgdb=no --log-file=…/vg.%p
# and fails on a memory error in any process, or a definite leak in the
# test process (see below for why not in forked children)
# (no gdbserver FIFOs in the temp dir, which the leak tests check)
# so the worker processes the tests start (the test binary again, by
# exec) run under memcheck too. The suppressions in scripts/valgrind.supp
# are explained there, one by one. Needs valgrind 3.20 or later, or apt
# access to Debian's archive to fetch one (see below); installs nothing
# system-wide. Workers are started from the program's own path under
# valgrind (mproc's `sys::self_exe`), so --trace-children follows them.
# Slow: about 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

# The workers' start uses pidfd_open (Linux 5.3), which memcheck handles
# from valgrind 3.20 on; 3.19 (Debian bookworm's) fails it with ENOSYS, so
# no worker starts. An older valgrind is replaced by Debian trixie's
# (3.24), unpacked into target/valgrind (not installed: it is run with
# VALGRIND_LIB pointing into the unpacked tree).
vg=valgrind
vg_version() { "$@" --version 2>/dev/null | sed -n 's/^valgrind-\([0-9]*\)\.\([0-9]*\).*/\1 \2/p'; }
new_enough() {
    local v
    v=$(vg_version "$@")
    [ -n "$v" ] && { read -r major minor <<<"$v"; [ "$major" -gt 3 ] || [ "$minor" -ge 20 ]; }
}
if ! command -v valgrind >/dev/null || ! new_enough valgrind; then
    here=$PWD/target/valgrind
    if ! VALGRIND_LIB=$here/root/usr/libexec/valgrind new_enough "$here/root/usr/bin/valgrind"; then
        echo "== fetching Debian trixie's valgrind into $here (found: $(vg_version valgrind || true))"
        rm -rf "$here" && mkdir -p "$here/lists/partial" "$here/archives/partial"
        echo "deb http://deb.debian.org/debian trixie main" >"$here/sources.list"
        apt_opts=(-o "Dir::Etc::sourcelist=$here/sources.list" -o Dir::Etc::sourceparts=/dev/null
            -o "Dir::State::lists=$here/lists" -o "Dir::Cache::archives=$here/archives")
        apt-get "${apt_opts[@]}" update -qq
        (cd "$here" && apt-get "${apt_opts[@]}" download valgrind 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
        dpkg -x "$here"/valgrind_*.deb "$here/root"
    fi
    export VALGRIND_LIB=$here/root/usr/libexec/valgrind
    vg=$here/root/usr/bin/valgrind
fi
echo "== $("$vg" --version)"
filter=${1:-}
# Whole-test time limits (tests/common) stretched for memcheck's slowdown.
export MPROC_TEST_TIME_SCALE=${MPROC_TEST_TIME_SCALE:-10}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

# suite name | cargo arguments | arguments for the test binary
# The conformance suite's two volume tests (frames up to 64 MiB on every
# transport, a million small frames) take hours under memcheck; they are
# skipped here. Their code paths run at small sizes in the other
# conformance tests and in frame_codec.rs (also run under miri).
suites=(
    "transport-unit|-p mproc-transport --lib|"
    "transport-frame-codec|-p mproc-transport --test frame_codec|"
    "transport-conformance|-p mproc-transport --test conformance|--skip ordered_frames_from_one_byte_to_64_mib --skip a_million_small_frames"
    "core-shared-unit|-p mproc-core --lib|shared::"
)
for t in tests/shared_*.rs; do
    name=$(basename "$t" .rs)
    suites+=("$name|-p mproc --test $name|")
done

exe_of() {
    # The test executable cargo builds for these arguments.
    # shellcheck disable=SC2086
    cargo test --no-run --locked $1 --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])
' | tail -1
}

failed=()
passed=()
for s in "${suites[@]}"; do
    IFS='|' read -r name args targs <<<"$s"
    if [ -n "$filter" ] && [[ $name != *"$filter"* ]]; then
        continue
    fi
    echo "== $name: building"
    # shellcheck disable=SC2086
    cargo test --no-run --locked $args 2>&1 | { grep -E '^(error|warning)' || true; }
    exe=$(exe_of "$args")
    if [ -z "$exe" ]; then
        echo "valgrind.sh: no test executable for $args" >&2
        exit 2
    fi
    echo "== $name: $(basename "$exe") under memcheck"
    log=$(mktemp)
    vglogs=$(mktemp -d)
    start=$(date +%s)
    # One memcheck log per process (%p). Memory errors anywhere count: the
    # error exit code makes a worker that hit one exit 1, and every log's
    # ERROR SUMMARY is read too, in case a test does not look at a child's
    # exit. Definite leaks count in the test process itself only: a child
    # made by fork (the fork start method, the fork server) inherits the
    # parent's heap without the other threads whose stacks pointed into
    # it, so at its exit memcheck calls those blocks lost, and would fail
    # the child (seen: a `Process` child exiting 1 with 14 KiB "lost").
    # shellcheck disable=SC2086
    "$vg" --tool=memcheck --error-exitcode=1 \
        --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=none \
        --trace-children=yes --track-origins=no --num-callers=30 --vgdb=no \
        --suppressions=scripts/valgrind.supp --log-file="$vglogs/vg.%p" \
        "$exe" $targs --test-threads=1 >"$log" 2>&1 &
    top=$!
    rc=0
    wait "$top" || rc=$?
    why=""
    if [ "$rc" -ne 0 ]; then
        why="the test binary exited $rc"
    fi
    bad=$(grep -lE 'ERROR SUMMARY: [1-9]' "$vglogs"/vg.* 2>/dev/null || true)
    if [ -n "$bad" ]; then
        why="$why; memory errors in $(echo "$bad" | wc -l) process(es)"
    fi
    if grep -qE 'definitely lost: [1-9]' "$vglogs/vg.$top" 2>/dev/null; then
        why="$why; definite leaks in the test process"
    fi
    if [ -z "$why" ]; then
        echo "   ok ($(($(date +%s) - start)) s, $(ls "$vglogs" | wc -l) processes under memcheck): $(grep -E '^test result' "$log" | tail -1)"
        passed+=("$name")
    else
        echo "   FAILED ($(($(date +%s) - start)) s): ${why#; }; the logs follow"
        cat "$log"
        for f in $bad "$vglogs/vg.$top"; do
            echo "--- $f"
            cat "$f"
        done
        failed+=("$name")
    fi
    rm -rf "$vglogs"
    rm -f "$log"
done

echo "== summary: ${#passed[@]} passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
    printf '   failed: %s\n' "${failed[@]}"
    exit 1
fi
