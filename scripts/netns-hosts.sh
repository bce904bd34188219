#!/usr/bin/env bash
# Three test "hosts" on one machine, made of network namespaces.
#
#   scripts/netns-hosts.sh check          exit 0 if namespaces can be made here,
#                                         else print why and exit 77 (skip)
#   scripts/netns-hosts.sh up             make the hosts (idempotent; also heals cuts)
#   scripts/netns-hosts.sh down           remove everything it made (idempotent)
#   scripts/netns-hosts.sh exec HOST CMD… run CMD inside HOST
#   scripts/netns-hosts.sh cut HOST       take HOST's link down (a cut cable)
#   scripts/netns-hosts.sh heal HOST      bring HOST's link back up
#   scripts/netns-hosts.sh status         show the hosts, their links and addresses
#   scripts/netns-hosts.sh selftest       up, ping, cut, ping fails, heal, down, check clean
#
# HOST is h0, h1 or h2 (mproc-h0 … and 0 … are accepted too).
#
# Layout. Nothing is made in the machine's own network namespace: the hosts'
# links and the switch live in namespaces of their own, so the machine's
# interfaces, addresses and routes are never touched.
#
#     mproc-h0 (10.77.0.1/24)   mproc-h1 (10.77.0.2/24)   mproc-h2 (10.77.0.3/24)
#          eth0                      eth0                      eth0
#           |  veth                   |  veth                   |  veth
#           p0 ---------------------- p1 ---------------------- p2
#                        br0 (a bridge) in namespace mproc-sw
#
# Each host has `lo` up as well, so a program in a host can also use
# 127.0.0.1 there. A cut takes the switch-side end (pN) down: the host's eth0
# loses its carrier and nothing crosses the link either way until `heal`
# (or `up`). `down` kills any process still running inside the namespaces,
# then deletes them, which deletes their links and the bridge with them.
#
# Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2.
set -euo pipefail

PREFIX=mproc
HOSTS=(h0 h1 h2)
SWITCH=$PREFIX-sw
SUBNET=10.77.0
BRIDGE=br0

usage() {
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
}

ns_exists() { [[ -e /run/netns/$1 ]]; }

# h1 | mproc-h1 | 1  ->  index 1
host_index() {
    local h=${1#"$PREFIX"-}
    h=${h#h}
    if [[ $h =~ ^[0-9]+$ ]] && ((h < ${#HOSTS[@]})); then
        echo "$h"
    else
        echo "netns-hosts: no host '$1' (hosts: ${HOSTS[*]})" >&2
        exit 2
    fi
}

host_ns() { echo "$PREFIX-${HOSTS[$1]}"; }
host_addr() { echo "$SUBNET.$(($1 + 1))"; }

cmd_check() {
    local why=
    if ! command -v ip >/dev/null; then
        why="iproute2's 'ip' is not installed"
    elif [[ $EUID -ne 0 ]]; then
        why="network namespaces need root (CAP_SYS_ADMIN); run as root"
    else
        # Try the real thing, in a namespace of our own, and undo it.
        local probe=$PREFIX-check-$$ err
        if ! err=$(ip netns add "$probe" 2>&1); then
            why="cannot create a network namespace: ${err//$'\n'/ }"
        else
            if ! err=$(ip -n "$probe" link add ck-a type veth peer name ck-b 2>&1); then
                why="cannot create a veth pair: ${err//$'\n'/ }"
            elif ! err=$(ip -n "$probe" link add ck-br type bridge 2>&1); then
                why="cannot create a bridge: ${err//$'\n'/ }"
            fi
            ip netns delete "$probe" 2>/dev/null || true
        fi
    fi
    if [[ -n $why ]]; then
        echo "netns-hosts: $why"
        exit 77
    fi
    echo "netns-hosts: network namespaces, veth and bridges are available"
}

cmd_up() {
    if ! ns_exists "$SWITCH"; then
        ip netns add "$SWITCH"
    fi
    ip -n "$SWITCH" link set lo up
    if ! ip -n "$SWITCH" link show "$BRIDGE" >/dev/null 2>&1; then
        # No spanning tree: ports forward as soon as they are up.
        ip -n "$SWITCH" link add "$BRIDGE" type bridge stp_state 0 forward_delay 0
    fi
    ip -n "$SWITCH" link set "$BRIDGE" up
    local i ns
    for i in "${!HOSTS[@]}"; do
        ns=$(host_ns "$i")
        if ! ns_exists "$ns"; then
            ip netns add "$ns"
        fi
        ip -n "$ns" link set lo up
        if ! ip -n "$SWITCH" link show "p$i" >/dev/null 2>&1; then
            # A leftover eth0 whose switch end is gone cannot be reused.
            ip -n "$ns" link delete eth0 2>/dev/null || true
            ip -n "$SWITCH" link add "p$i" type veth peer name eth0 netns "$ns"
        fi
        ip -n "$SWITCH" link set "p$i" master "$BRIDGE" up
        ip -n "$ns" addr replace "$(host_addr "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
    echo "netns-hosts: up: ${HOSTS[*]} on $SUBNET.0/24 (addresses $(host_addr 0)…$(host_addr $((${#HOSTS[@]} - 1))))"
}

# Kill what still runs inside a namespace: it would keep the namespace (and
# its links) alive after `ip netns delete` removed its name.
kill_inside() {
    local ns=$1 pids i
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -n $pids ]] || return 0
    # shellcheck disable=SC2086 # one pid a word
    kill -TERM $pids 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [[ -n $pids ]] || return 0
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
}

cmd_down() {
    local i ns removed=0
    for ns in $(for i in "${!HOSTS[@]}"; do host_ns "$i"; done) "$SWITCH"; do
        ns_exists "$ns" || continue
        kill_inside "$ns"
        ip netns delete "$ns"
        removed=$((removed + 1))
    done
    local left
    left=$(ip netns list | awk -v p="$PREFIX-" 'index($1, p) == 1 && $1 !~ /-check-/ {print $1}')
    if [[ -n $left ]]; then
        echo "netns-hosts: still there after down: $left" >&2
        exit 1
    fi
    echo "netns-hosts: down: removed $removed namespaces"
}

cmd_cut() {
    local i
    i=$(host_index "${1:?cut needs a HOST}")
    ip -n "$SWITCH" link set "p$i" down
    echo "netns-hosts: cut ${HOSTS[$i]}'s link"
}

cmd_heal() {
    local i
    i=$(host_index "${1:?heal needs a HOST}")
    ip -n "$SWITCH" link set "p$i" up
    echo "netns-hosts: healed ${HOSTS[$i]}'s link"
}

cmd_exec() {
    local i
    i=$(host_index "${1:?exec needs a HOST and a command}")
    shift
    (($#)) || { echo "netns-hosts: exec needs a command" >&2; exit 2; }
    exec ip netns exec "$(host_ns "$i")" "$@"
}

cmd_status() {
    local i ns
    for i in "${!HOSTS[@]}"; do
        ns=$(host_ns "$i")
        if ns_exists "$ns"; then
            echo "$ns:"
            ip -n "$ns" -br addr | sed 's/^/  /'
        else
            echo "$ns: absent"
        fi
    done
    if ns_exists "$SWITCH"; then
        echo "$SWITCH:"
        ip -n "$SWITCH" -br link | sed 's/^/  /'
    else
        echo "$SWITCH: absent"
    fi
}

# --- selftest ---------------------------------------------------------------

ping_ok() { # FROM-INDEX TO-INDEX: one ping, at most 1 s
    ip netns exec "$(host_ns "$1")" ping -n -q -c1 -W1 "$(host_addr "$2")" >/dev/null 2>&1
}

cmd_selftest() {
    local failed=0
    expect() { # DESCRIPTION COMMAND…
        local what=$1
        shift
        if "$@"; then
            echo "  ok    $what"
        else
            echo "  FAIL  $what"
            failed=1
        fi
    }
    not() { ! "$@"; }
    ended() { [[ ! -e /proc/$1 || $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }

    echo "== check"
    cmd_check
    if ! command -v ping >/dev/null; then
        echo "== installing ping (iputils-ping) for the self-test"
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q iputils-ping >/dev/null ||
            { timeout 600 apt-get update -q >/dev/null &&
                DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q iputils-ping >/dev/null; }
    fi

    # What the machine's own namespace looks like; it must look the same after.
    local before_links before_routes after_links after_routes
    before_links=$(ip -o link show | sed 's/^[0-9]*: //' | awk '{print $1}' | sort)
    before_routes=$( (ip route show; ip -6 route show) | sort)
    trap 'cmd_down >/dev/null 2>&1 || true' EXIT

    echo "== up (twice: the second must change nothing)"
    cmd_up
    cmd_up
    echo "== links"
    expect "h0 -> h1" ping_ok 0 1
    expect "h0 -> h2" ping_ok 0 2
    expect "h1 -> h2" ping_ok 1 2
    expect "h2 -> h0" ping_ok 2 0
    expect "h1 reaches itself on 127.0.0.1" \
        ip netns exec "$(host_ns 1)" ping -n -q -c1 -W1 127.0.0.1 >/dev/null
    expect "exec runs in the host" \
        bash -c "[[ \$('${BASH_SOURCE[0]}' exec h1 ip -br -4 addr show dev eth0 | awk '{print \$3}') == $(host_addr 1)/24 ]]"

    echo "== cut h2"
    cmd_cut h2
    expect "h0 -> h2 fails" not ping_ok 0 2
    expect "h2 -> h1 fails" not ping_ok 2 1
    expect "h0 -> h1 still works" ping_ok 0 1
    echo "== heal h2"
    cmd_heal h2
    expect "h0 -> h2 works again" ping_ok 0 2

    echo "== a process left running in a host"
    ip netns exec "$(host_ns 0)" sleep 300 &
    local sleeper=$!
    sleep 0.2

    echo "== down (twice)"
    cmd_down
    cmd_down
    trap - EXIT
    expect "the process in h0 was ended" ended "$sleeper"
    wait "$sleeper" 2>/dev/null || true
    expect "no $PREFIX-* namespace is left" \
        bash -c "! ip netns list | grep -q '^$PREFIX-'"
    after_links=$(ip -o link show | sed 's/^[0-9]*: //' | awk '{print $1}' | sort)
    after_routes=$( (ip route show; ip -6 route show) | sort)
    expect "the machine's links are as before" test "$before_links" == "$after_links"
    expect "the machine's routes are as before" test "$before_routes" == "$after_routes"

    if ((failed)); then
        echo "== selftest FAILED"
        exit 1
    fi
    echo "== selftest passed"
}

case ${1:-} in
check) cmd_check ;;
up) cmd_up ;;
down) cmd_down ;;
cut) shift; cmd_cut "$@" ;;
heal) shift; cmd_heal "$@" ;;
exec) shift; cmd_exec "$@" ;;
status) cmd_status ;;
selftest) cmd_selftest ;;
*) usage ;;
esac
