#!/usr/bin/env bash
# Runs an mproc cluster job under a real, throwaway, one-host Slurm cluster.
#
#   sudo scripts/slurm-test.sh                      # examples/cluster.rs (once it exists)
#   SLURM_TEST_STANDIN=1 scripts/slurm-test.sh      # the stand-in, scripts/cluster-standin.py
#   SLURM_TEST_PROGRAM=/path/to/bin scripts/slurm-test.sh   # any prebuilt program
#
# What it does, in order:
#   1. builds (or picks) the program that is both the driver and the nodes;
#   2. installs Slurm and munge from Debian's packages if they are missing;
#   3. starts munged (as user munge, with a fresh key), slurmctld and slurmd
#      from a config generated in a temporary directory, and waits until the
#      node is idle;
#   4. starts the driver in the background, listening on 127.0.0.1:PORT and
#      waiting for 2 nodes, then launches the 2 nodes with
#      `srun -n 2 --export=ALL,MPROC_JOIN=127.0.0.1:PORT,MPROC_AUTHKEY_FILE=...`;
#   5. checks the driver's output (`nodes: 2` and a line starting `pi ≈`);
#   6. always tears everything down (trap on EXIT): cancels jobs, stops the
#      three daemons by their pid files, kills anything left that carries this
#      run's tag, and removes the temporary directory.
#
# Needs root (it installs packages and runs the daemons), no terminal and no
# systemd. Every wait is bounded. Exit status: 0 when the job ran and the
# driver saw both nodes; 1 on any failure; 2 on wrong usage (for instance no
# program to run yet).
#
# Tunables (environment): SLURM_TEST_STANDIN=1, SLURM_TEST_PROGRAM=PATH,
# SLURM_TEST_CTLD_PORT (default 16817), SLURM_TEST_SLURMD_PORT (16818),
# SLURM_TEST_JOB_TIMEOUT seconds for the job (default 120),
# SLURM_TEST_KEEP_LOGS=DIR to copy the daemons' logs there before cleanup.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
NTASKS=2
CTLD_PORT=${SLURM_TEST_CTLD_PORT:-16817}
SLURMD_PORT=${SLURM_TEST_SLURMD_PORT:-16818}
JOB_TIMEOUT=${SLURM_TEST_JOB_TIMEOUT:-120}
TMP_PREFIX=/tmp/mproc-slurm-test.
# Every process this run starts inherits this variable; teardown (and the
# next run, after a crash) finds leftovers by it, and only by it.
TAG_VAR=MPROC_SLURM_TEST_TAG

T0=$SECONDS
section() { printf '\n== %s  (t=%ds)\n' "$*" "$((SECONDS - T0))"; }
note() { printf '   %s\n' "$*"; }
die() { printf 'slurm-test: %s\n' "$*" >&2; exit 1; }

if [[ $EUID -ne 0 ]]; then
    echo "slurm-test: must run as root (it installs packages and starts slurmd)" >&2
    exit 2
fi

# One run at a time: the lock is the script file itself, so nothing is left
# behind in /tmp for it. Every long-lived process below is started with fd 9
# closed (`9<&-`): a daemon that inherited it would hold the lock after this
# script died, and the next run could not clean up after it.
exec 9<"${BASH_SOURCE[0]}"
if ! flock -w 30 9; then
    die "another slurm-test.sh is still running"
fi

###########################################################################
# THE HOOK: which program is the cluster job.
#
# choose_program sets PROGRAM (an array: the command line of the program
# without arguments) and PROGRAM_KIND. The same PROGRAM is run twice:
#   driver:  "${PROGRAM[@]}" --listen 127.0.0.1:PORT --wait-nodes 2 --key-file KEY
#   nodes:   srun -n 2 --export=ALL,MPROC_JOIN=...,MPROC_AUTHKEY_FILE=KEY "${PROGRAM[@]}"
# and check_driver_output decides whether the run passed.
#
# Once examples/cluster.rs exists, the default branch builds it with
# `cargo build --release --example cluster` and uses the binary; nothing
# else in this script needs to change.
###########################################################################
choose_program() {
    if [[ -n ${SLURM_TEST_PROGRAM:-} ]]; then
        [[ -x $SLURM_TEST_PROGRAM ]] || die "SLURM_TEST_PROGRAM=$SLURM_TEST_PROGRAM is not executable"
        PROGRAM=("$SLURM_TEST_PROGRAM")
        PROGRAM_KIND=given
    elif [[ ${SLURM_TEST_STANDIN:-0} == 1 ]]; then
        command -v python3 >/dev/null || die "the stand-in needs python3"
        PROGRAM=(python3 "$SCRIPT_DIR/cluster-standin.py")
        PROGRAM_KIND=standin
    elif [[ -f $REPO/examples/cluster.rs ]]; then
        command -v cargo >/dev/null || die "cargo is needed to build examples/cluster.rs"
        (cd "$REPO" && timeout 1800 cargo build --release --example cluster 9<&-)
        local target_dir
        target_dir=${CARGO_TARGET_DIR:-$(cd "$REPO" && cargo metadata --no-deps --format-version 1 |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')}
        PROGRAM=("$target_dir/release/examples/cluster")
        [[ -x ${PROGRAM[0]} ]] || die "built, but ${PROGRAM[0]} is missing"
        PROGRAM_KIND=example
    else
        echo "slurm-test: examples/cluster.rs does not exist yet." >&2
        echo "  Run with SLURM_TEST_STANDIN=1 to test the launch path with the stand-in," >&2
        echo "  or SLURM_TEST_PROGRAM=/path/to/program to use a prebuilt program." >&2
        exit 2
    fi
}

# Passes when the driver saw every node and printed its result. The stand-in
# also names each node's Slurm rank, so there it checks that srun started one
# task per rank and that each task got the exported environment (a task
# without MPROC_JOIN would have run as a second driver, not as a node).
check_driver_output() {
    local out=$1 ok=0
    grep -qE "^nodes: $NTASKS( |\$)" "$out" || { note "FAIL: no line 'nodes: $NTASKS'"; ok=1; }
    grep -q '^pi ≈ ' "$out" || { note "FAIL: no line starting 'pi ≈ '"; ok=1; }
    if [[ $PROGRAM_KIND == standin ]]; then
        local rank
        for ((rank = 0; rank < NTASKS; rank++)); do
            grep -q "^node rank=$rank," "$out" || { note "FAIL: no node with rank $rank"; ok=1; }
        done
    fi
    return $ok
}
###########################################################################

# --- cleanup ---------------------------------------------------------------

# Kill every process whose environment carries the tag (one run's value, or
# any value when $1 is empty). Reading /proc/PID/environ needs root, which we
# are; a process's environment is fixed at exec, so this finds exactly what
# this script started, including daemonised slurmstepd and job tasks.
kill_tagged() {
    local want=$1 pid env found=()
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        { env=$(tr '\0' '\n' <"/proc/$pid/environ"); } 2>/dev/null || continue
        if [[ -n $want ]]; then
            grep -qx "$TAG_VAR=$want" <<<"$env" || continue
        else
            grep -q "^$TAG_VAR=" <<<"$env" || continue
        fi
        found+=("$pid")
    done
    ((${#found[@]})) || return 0
    kill -TERM "${found[@]}" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do
        local alive=()
        for pid in "${found[@]}"; do [[ -d /proc/$pid ]] && alive+=("$pid"); done
        ((${#alive[@]})) || return 0
        sleep 0.1
    done
    kill -KILL "${alive[@]}" 2>/dev/null || true
}

# Stop a daemon by its pid file, checking the pid still is that daemon.
stop_by_pidfile() {
    local name=$1 pidfile=$2 pid i
    [[ -s $pidfile ]] || return 0
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        [[ -d /proc/$pid ]] || { note "stopped $name ($pid)"; return 0; }
        sleep 0.1
    done
    note "$name ($pid) ignored SIGTERM for 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

WORK=
DRIVER_PID=
CREATED_POLICY_RC=0
teardown() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    section "teardown"
    if [[ -n $DRIVER_PID ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
        kill -TERM "$DRIVER_PID" 2>/dev/null
    fi
    if [[ -n $WORK && -f $WORK/slurm.conf ]]; then
        export SLURM_CONF=$WORK/slurm.conf
        if [[ -s $WORK/slurmctld.pid ]] && timeout 10 squeue -h -o %i >/dev/null 2>&1; then
            timeout 10 scancel --quiet --user=root 2>/dev/null
            local i
            for ((i = 0; i < 50; i++)); do
                [[ -z $(timeout 5 squeue -h -o %i 2>/dev/null) ]] && break
                sleep 0.2
            done
        fi
        if [[ -n ${SLURM_TEST_KEEP_LOGS:-} ]]; then
            mkdir -p "$SLURM_TEST_KEEP_LOGS" && cp "$WORK"/*.log "$WORK"/munge/*.log "$WORK"/*.out \
                "$SLURM_TEST_KEEP_LOGS"/ 2>/dev/null
        fi
        # Each takes a few seconds to stop: the two Slurm daemons together,
        # then munged, which they may still ask on the way out.
        local stoppers=()
        stop_by_pidfile slurmd "$WORK/slurmd.pid" &
        stoppers+=($!)
        stop_by_pidfile slurmctld "$WORK/slurmctld.pid" &
        stoppers+=($!)
        wait "${stoppers[@]}"
        stop_by_pidfile munged "$WORK/munge/munged.pid"
    fi
    [[ -n ${TAG:-} ]] && kill_tagged "$TAG"
    if [[ -n $WORK && $WORK == "$TMP_PREFIX"* ]]; then
        rm -rf -- "$WORK"
        note "removed $WORK"
    fi
    if ((CREATED_POLICY_RC)); then
        rm -f /usr/sbin/policy-rc.d
    fi
    if ((rc == 0)); then
        section "PASS (${SECONDS}s in all)"
    elif ((rc == 2)); then
        section "NOT RUN (exit 2)"
    else
        section "FAIL (exit $rc)"
    fi
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Leftovers of an earlier run that was killed before its teardown ran: we
# hold the lock, so no other run owns them.
section "leftovers of earlier runs"
kill_tagged ""
stale=0
for d in "$TMP_PREFIX"*; do
    [[ -d $d ]] || continue
    for f in slurmd.pid slurmctld.pid munge/munged.pid; do
        name=${f##*/}
        stop_by_pidfile "${name%.pid}" "$d/$f"
    done
    rm -rf -- "$d"
    stale=$((stale + 1))
done
note "removed $stale stale temporary directories"

# --- 1. program -----------------------------------------------------------
section "program under test"
choose_program
note "kind: $PROGRAM_KIND"
note "command: ${PROGRAM[*]}"

# --- 2. install ------------------------------------------------------------
section "install Slurm and munge (if missing)"
need_install=0
for cmd in slurmctld slurmd srun sinfo squeue scancel munged; do
    command -v "$cmd" >/dev/null || need_install=1
done
if ((need_install)); then
    export DEBIAN_FRONTEND=noninteractive
    # Package scripts must not start system-wide daemons on install: a
    # policy-rc.d that says no (unless one is there already), removed on exit.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        CREATED_POLICY_RC=1
    fi
    t=$SECONDS
    timeout 600 apt-get update -q
    timeout 1200 apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        slurm-wlm munge
    note "installed in $((SECONDS - t))s"
else
    note "already installed"
fi
note "$(slurmctld -V)"
note "munged $(munged --version 2>&1 | head -n1)"

# --- 3. cluster ------------------------------------------------------------
section "start a one-host Slurm cluster"
for p in "$CTLD_PORT" "$SLURMD_PORT"; do
    if ss -Htln "sport = :$p" | grep -q .; then
        die "port $p is taken; set SLURM_TEST_CTLD_PORT / SLURM_TEST_SLURMD_PORT"
    fi
done
WORK=$(mktemp -d "${TMP_PREFIX}XXXXXX")
TAG=${WORK#"$TMP_PREFIX"}
export "$TAG_VAR=$TAG"
# munged runs as user munge and must reach its directory below WORK; munged
# wants the directory of its socket open to all (the key file itself is 0400).
chmod 711 "$WORK"
mkdir -p "$WORK/state" "$WORK/spool" "$WORK/munge" "$WORK/job"
chown munge:munge "$WORK/munge"
chmod 755 "$WORK/munge"
note "work directory: $WORK"

# munge: a fresh key, readable only by munge.
head -c 1024 /dev/urandom >"$WORK/munge/munge.key"
chown munge:munge "$WORK/munge/munge.key"
chmod 400 "$WORK/munge/munge.key"
MUNGE_SOCKET=$WORK/munge/munge.socket
runuser -u munge -- munged \
    --key-file="$WORK/munge/munge.key" \
    --socket="$MUNGE_SOCKET" \
    --pid-file="$WORK/munge/munged.pid" \
    --log-file="$WORK/munge/munged.log" \
    --seed-file="$WORK/munge/munged.seed" 9<&-
for ((i = 0; i < 100; i++)); do
    [[ -S $MUNGE_SOCKET ]] && break
    sleep 0.1
done
[[ -S $MUNGE_SOCKET ]] || die "munged did not create its socket in 10 s ($(tail -n3 "$WORK/munge/munged.log" 2>/dev/null))"
munge --socket="$MUNGE_SOCKET" -n | unmunge --socket="$MUNGE_SOCKET" >/dev/null ||
    die "munge cannot encode and decode a credential"
note "munged up (pid $(<"$WORK/munge/munged.pid"))"

NODE=$(hostname -s)
CPUS=$(nproc)
cat >"$WORK/slurm.conf" <<EOF
# Generated by scripts/slurm-test.sh for one throwaway run; removed after it.
ClusterName=mproctest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
# No systemd and no cgroups here.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
MinJobAge=10
InactiveLimit=0
MailProg=/bin/true
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=test Nodes=$NODE Default=YES MaxTime=10 State=UP OverSubscribe=YES
EOF
export SLURM_CONF=$WORK/slurm.conf

slurmctld -c -f "$SLURM_CONF" 9<&-
slurmd -f "$SLURM_CONF" 9<&-

state=
for ((i = 0; i < 60; i++)); do
    state=$(timeout 5 sinfo -h -N -n "$NODE" -o %T 2>/dev/null || true)
    [[ $state == idle ]] && break
    sleep 1
done
if [[ $state != idle ]]; then
    note "slurmctld.log:"; tail -n 20 "$WORK/slurmctld.log" 2>/dev/null | sed 's/^/     /'
    note "slurmd.log:"; tail -n 20 "$WORK/slurmd.log" 2>/dev/null | sed 's/^/     /'
    die "node $NODE is '${state:-not listed}' after 60 s, not idle"
fi
sinfo | sed 's/^/   /'

# --- 4. job ---------------------------------------------------------------
section "run the job: driver + srun -n $NTASKS nodes"
KEY=$WORK/job/authkey
# A random key, written with one trailing newline (which mproc ignores).
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$KEY"
echo >>"$KEY"
chmod 600 "$KEY"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DRIVER_OUT=$WORK/driver.out

timeout -k 5 "$JOB_TIMEOUT" "${PROGRAM[@]}" --listen "127.0.0.1:$PORT" --wait-nodes "$NTASKS" \
    --key-file "$KEY" >"$DRIVER_OUT" 2>&1 9<&- &
DRIVER_PID=$!
for ((i = 0; i < 300; i++)); do
    ss -Htln "sport = :$PORT" | grep -q . && break
    kill -0 "$DRIVER_PID" 2>/dev/null || break
    sleep 0.1
done
if ! ss -Htln "sport = :$PORT" | grep -q .; then
    sed 's/^/   driver| /' "$DRIVER_OUT"
    die "the driver is not listening on 127.0.0.1:$PORT (it exited, or 30 s passed)"
fi
note "driver (pid $DRIVER_PID) listening on 127.0.0.1:$PORT"

srun_rc=0
(cd "$WORK/job" && timeout -k 10 "$JOB_TIMEOUT" srun -N 1 -n "$NTASKS" --time=5 --kill-on-bad-exit=1 \
    --job-name=mproc-nodes --label \
    --export="ALL,MPROC_JOIN=127.0.0.1:$PORT,MPROC_AUTHKEY_FILE=$KEY" \
    "${PROGRAM[@]}" 9<&-) || srun_rc=$?
note "srun exited $srun_rc"

driver_rc=0
wait "$DRIVER_PID" || driver_rc=$?
DRIVER_PID=
note "driver exited $driver_rc; its output:"
sed 's/^/   driver| /' "$DRIVER_OUT"

# --- 5. check --------------------------------------------------------------
section "check"
failed=0
((srun_rc == 0)) || { note "FAIL: srun (the nodes) exited $srun_rc"; failed=1; }
((driver_rc == 0)) || { note "FAIL: the driver exited $driver_rc"; failed=1; }
check_driver_output "$DRIVER_OUT" || failed=1
((failed == 0)) || exit 1
note "ok: the driver saw $NTASKS nodes launched by srun"
