#!/usr/bin/env bash
# mount-bench.sh — etcdfs against etcdctl and tmpfs on a Kubernetes-shaped /registry (10,000 keys,
# ~35 MB, from tools/gen-registry): mount time, cold/warm find and grep, cat, echo, remote-change
# latency and daemon memory, side by side in one table. Best of 3 runs; timings with date +%s%N.
# Usage: tests/bench/mount-bench.sh [--keys N] [--strict]   (--strict: exit 1 when a goal is missed)
set -uo pipefail

SRC=${ETCDFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
ETCDFS=${ETCDFS:-$SRC/build-tests/fs/etcdfs}
GEN=${GEN_REGISTRY:-$(dirname "$ETCDFS")/../tools/gen-registry}
KEYS=10000
STRICT=0
RUNS=${BENCH_RUNS:-3}
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) KEYS=$2; shift ;;
        --keys=*) KEYS=${1#*=} ;;
        --strict) STRICT=1 ;;
        *) echo "usage: $0 [--keys N] [--strict]" >&2; exit 2 ;;
    esac
    shift
done

skip() { echo "1..0 # SKIP $*"; exit 77; }
[ -x "$ETCDFS" ] || skip "etcdfs binary not found at $ETCDFS (build it, or set ETCDFS=path)"
[ -x "$GEN" ] || skip "gen-registry not found at $GEN (set GEN_REGISTRY=path)"
[ -e /dev/fuse ] || skip "no /dev/fuse"
command -v etcdctl >/dev/null || skip "no etcdctl"
command -v cc >/dev/null || skip "no C compiler for mount_latency.c"

WORK=$(mktemp -d /tmp/etcdfs-bench.XXXXXX)
MNT=$WORK/mnt
TREE=""
ETCDFS_PID=""

# ---- etcd ------------------------------------------------------------------------------------

# The shared fixture when present; otherwise one member of our own on free loopback ports.
if [ -f "$SRC/tests/fixture/etcd.sh" ]; then
    # shellcheck source=/dev/null
    . "$SRC/tests/fixture/etcd.sh"
fi
if ! declare -F etcd_start >/dev/null; then
    etcd_start() {
        local p
        for p in $(seq 24100 2 24398); do
            [ -z "$(ss -Htln "sport = :$p or sport = :$((p + 1))" 2>/dev/null)" ] && break
        done
        ETCD_ENDPOINTS=http://127.0.0.1:$p
        etcd --name bench --data-dir "$WORK/etcd" --listen-client-urls "$ETCD_ENDPOINTS" \
            --advertise-client-urls "$ETCD_ENDPOINTS" \
            --listen-peer-urls "http://127.0.0.1:$((p + 1))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((p + 1))" \
            --initial-cluster "bench=http://127.0.0.1:$((p + 1))" >"$WORK/etcd.log" 2>&1 &
        BENCH_ETCD_PID=$!
        for _ in $(seq 100); do
            ETCDCTL_API=3 etcdctl --endpoints="$ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1 \
                && return 0
            sleep 0.2
        done
        echo "bench: etcd did not start (log $WORK/etcd.log)" >&2
        return 1
    }
    etcd_stop() {
        [ -n "${BENCH_ETCD_PID:-}" ] && kill "$BENCH_ETCD_PID" 2>/dev/null && wait "$BENCH_ETCD_PID"
        BENCH_ETCD_PID=""
    }
fi

remove_dirs() { [ -n "$TREE" ] && rm -rf "$TREE"; rm -rf "$WORK"; }
stop_mount() {
    if grep -qs " $MNT fuse" /proc/mounts; then
        fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null
    fi
    [ -n "$ETCDFS_PID" ] && [ -d "/proc/$ETCDFS_PID" ] && kill "$ETCDFS_PID" 2>/dev/null
    return 0
}
# lib.sh (sourced by etcd.sh) owns the EXIT trap: register with it when it is there, so its own
# cleanups (etcd_stop, its temp dir) run too. Registered last runs first: the mount goes first.
if declare -F at_exit >/dev/null; then
    at_exit remove_dirs
else
    trap 'stop_mount; declare -F etcd_stop >/dev/null && etcd_stop; remove_dirs' EXIT
    trap 'exit 130' INT TERM
fi

# Timings on a shared machine swing with its load: recorded at the start and the end.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
etcd_start || { echo "bench: cannot start etcd" >&2; exit 1; }
declare -F at_exit >/dev/null && at_exit stop_mount
EP=${ETCD_ENDPOINTS%%,*}
export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=$EP
HOSTPORT=${EP#*://}

# ---- timing helpers --------------------------------------------------------------------------

now_ns() { date +%s%N; }
US=0
# timed CMD...: runs CMD, sets US to the elapsed microseconds.
timed() { local t0 t1; t0=$(now_ns); "$@"; t1=$(now_ns); US=$(( (t1 - t0) / 1000 )); }
# best FN: runs FN $RUNS times (FN sets US itself, so it can prepare untimed), keeps the least.
BEST=0
best() {
    local i b=""
    for i in $(seq "$RUNS"); do
        "$@"
        if [ -z "$b" ] || [ "$US" -lt "$b" ]; then b=$US; fi
    done
    BEST=$b
}
ms() { awk -v u="$1" 'BEGIN { printf "%.1f ms", u / 1000 }'; }

# ---- the mount -------------------------------------------------------------------------------

daemon_pid() {
    local p
    for p in $(pgrep -x etcdfs); do
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$MNT" && { echo "$p"; return; }
    done
}

unmount() {
    local p
    p=$(daemon_pid)
    grep -qs " $MNT fuse" /proc/mounts && fusermount3 -u "$MNT"
    for _ in $(seq 100); do
        [ -z "$p" ] || [ ! -d "/proc/$p" ] && break
        sleep 0.05
    done
}

# mount_fresh: a new daemon (empty kernel and etcdfs caches); US = time until MNT/registry shows.
mount_fresh() {
    unmount
    local t0 t1
    t0=$(now_ns)
    "$ETCDFS" --endpoints="$EP" "$MNT" 2>>"$WORK/etcdfs.log" \
        || { echo "bench: etcdfs failed to mount:" >&2; tail -5 "$WORK/etcdfs.log" >&2; exit 1; }
    for _ in $(seq 2000); do
        [ -d "$MNT/registry" ] && break
        sleep 0.005
    done
    t1=$(now_ns)
    US=$(( (t1 - t0) / 1000 ))
    [ -d "$MNT/registry" ] || { echo "bench: mounted, but $MNT/registry never showed" >&2; exit 1; }
    ETCDFS_PID=$(daemon_pid)
}

# ---- results table ---------------------------------------------------------------------------

ROWS=()
MISSED=0
# row NAME ETCDFS_US BASE_US GOAL_KIND GOAL: GOAL_KIND is "max_ms" (etcdfs ≤ GOAL ms), "ratio"
# (etcdfs ≤ GOAL × baseline) or "faster" (baseline ≥ GOAL × etcdfs).
row() {
    local name=$1 a=$2 b=$3 kind=$4 goal=$5 line
    line=$(awk -v n="$name" -v a="$a" -v b="$b" -v k="$kind" -v g="$goal" 'BEGIN {
        ok = 1; ratio = "-"; base = "-"
        if (b > 0) base = sprintf("%.1f ms", b / 1000)
        if (k == "info")   { r = a / b; ratio = sprintf("%.2fx", r); goal = "(reference)"; ok = 2 }
        if (k == "max_ms") { goal = sprintf("<= %g ms", g); ok = (a / 1000 <= g) }
        if (k == "ratio")  { r = a / b; ratio = sprintf("%.2fx", r); goal = sprintf("<= %gx", g); ok = (r <= g) }
        if (k == "faster") { r = b / (a > 0 ? a : 1); ratio = sprintf("%.1fx faster", r);
                             goal = sprintf(">= %gx faster", g); ok = (r >= g) }
        printf "%-44s %12s %12s %15s %16s  %s\n", n, sprintf("%.1f ms", a / 1000), base, ratio,
               goal, ok == 2 ? "" : ok ? "ok" : "MISSED"
    }')
    ROWS+=("$line")
    case "$line" in *MISSED) MISSED=$((MISSED + 1)) ;; esac
    echo "  $line" >&2
}

# ---- data ------------------------------------------------------------------------------------

if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
    TREE=$(mktemp -d /dev/shm/etcdfs-bench-tree.XXXXXX)
else
    TREE=$WORK/tree
    mkdir -p "$TREE"
    echo "bench: /dev/shm is not tmpfs; the 'tmpfs' column uses $TREE" >&2
fi
echo "bench: generating $KEYS keys into etcd ($EP) and $TREE" >&2
GEN_OUT=$("$GEN" --endpoints="$EP" --keys "$KEYS" --out "$TREE") || { echo "bench: gen-registry failed" >&2; exit 1; }
echo "  $GEN_OUT" >&2
VALUE_BYTES=$(sed -n 's/.* \([0-9]*\) value bytes.*/\1/p' <<<"$GEN_OUT")
KEY_BYTES=$(sed -n 's/.*MiB, \([0-9]*\) key bytes.*/\1/p' <<<"$GEN_OUT")
DATA_BYTES=$(( ${VALUE_BYTES:-0} + ${KEY_BYTES:-0} ))
mkdir -p "$MNT"
PATTERN='"app":"nginx"'

# 1. mount ready
m_mount() { mount_fresh; }
best m_mount
row "mount ready ($KEYS keys)" "$BEST" 0 max_ms 1000

# 2. cold find vs etcdctl --keys-only
FOUND=0
m_find() { mount_fresh; timed find_count; }
find_count() { FOUND=$(find "$MNT/registry" -type f | wc -l); }
m_keys() { timed eval 'etcdctl get --prefix --keys-only /registry >/dev/null'; }
best m_find; A=$BEST
[ "$FOUND" -eq "$KEYS" ] || echo "bench: WARNING: find saw $FOUND files, expected $KEYS" >&2
best m_keys; B=$BEST
row "cold find -type f / etcdctl --keys-only" "$A" "$B" ratio 1.5
m_tfind() { timed eval 'find "$TREE/registry" -type f >/dev/null'; }
best m_tfind
row "  cold find / find on tmpfs" "$A" "$BEST" info 0

# 3. cold grep -r vs etcdctl get --prefix | grep
GREP_HITS=0
grep_mount() { GREP_HITS=$(grep -rl -- "$PATTERN" "$MNT/registry" | wc -l); }
m_cgrep() { mount_fresh; timed grep_mount; }
m_egrep() { timed eval 'etcdctl get --prefix /registry | grep -c -- "$PATTERN" >/dev/null'; }
best m_cgrep; A=$BEST
best m_egrep; B=$BEST
row "cold grep -r / etcdctl get --prefix | grep" "$A" "$B" ratio 2

# 4. warm grep -r vs the same tree on tmpfs
TMPFS_HITS=$(grep -rl -- "$PATTERN" "$TREE/registry" | wc -l)
m_wgrep() { timed grep_mount; }
m_tgrep() { timed eval 'grep -rl -- "$PATTERN" "$TREE/registry" >/dev/null'; }
grep_mount
best m_wgrep; A=$BEST
best m_tgrep; B=$BEST
[ "$GREP_HITS" -eq "$TMPFS_HITS" ] \
    || echo "bench: WARNING: grep found $GREP_HITS files in the mount, $TMPFS_HITS on tmpfs" >&2
row "warm grep -r / grep -r on tmpfs" "$A" "$B" ratio 1.5

# 5. 200 cat vs 200 etcdctl get
mapfile -t SAMPLE < <(cd "$TREE" && find registry -type f | sort | awk 'NR % 7 == 1' | head -200)
m_cat() { timed eval 'for f in "${SAMPLE[@]}"; do cat "$MNT/$f" >/dev/null; done'; }
m_get() { timed eval 'for f in "${SAMPLE[@]}"; do etcdctl get "/$f" >/dev/null; done'; }
best m_cat; A=$BEST
best m_get; B=$BEST
row "${#SAMPLE[@]} cat / ${#SAMPLE[@]} etcdctl get" "$A" "$B" faster 10
m_tcat() { timed eval 'for f in "${SAMPLE[@]}"; do cat "$TREE/$f" >/dev/null; done'; }
best m_tcat
row "  ${#SAMPLE[@]} cat / ${#SAMPLE[@]} cat on tmpfs" "$A" "$BEST" info 0

# 6. 100 echo > f vs 100 etcdctl put (the same keys, overwritten)
ROUND=0
m_put() {
    ROUND=$((ROUND + 1))
    timed eval 'for i in $(seq 100); do etcdctl put /registry/bench/w$i "put-$ROUND-$i" >/dev/null; done'
}
m_echo() {
    ROUND=$((ROUND + 1))
    timed eval 'for i in $(seq 100); do echo "echo-$ROUND-$i" > "$MNT/registry/bench/w$i"; done'
}
best m_put; B=$BEST
for _ in $(seq 400); do [ -f "$MNT/registry/bench/w100" ] && break; sleep 0.05; done
best m_echo; A=$BEST
GOT=$(etcdctl get --print-value-only /registry/bench/w100)
[ "$GOT" = "echo-$ROUND-100" ] || echo "bench: WARNING: etcd holds '$GOT' after echo, expected echo-$ROUND-100" >&2
row "100 echo > f / 100 etcdctl put" "$A" "$B" faster 15

# 7. remote change → visible through the mount
LAT="n/a"
if cc -O2 -o "$WORK/mount_latency" "$SRC/tests/bench/mount_latency.c" 2>"$WORK/cc.log"; then
    LAT=$("$WORK/mount_latency" "${HOSTPORT%%:*}" "${HOSTPORT##*:}" /registry/bench/latency \
          "$MNT/registry/bench/latency" 200) || { MISSED=$((MISSED + 1)); LAT="FAILED: $LAT"; }
else
    echo "bench: cannot compile mount_latency.c:" >&2; cat "$WORK/cc.log" >&2
fi

# 8. daemon memory against the data it serves (values all read by now: warm grep)
RSS_KB=$(awk '/^VmRSS/ { print $2 }' "/proc/$ETCDFS_PID/status" 2>/dev/null)
HWM_KB=$(awk '/^VmHWM/ { print $2 }' "/proc/$ETCDFS_PID/status" 2>/dev/null)
RSS_LINE=$(awk -v r="${RSS_KB:-0}" -v h="${HWM_KB:-0}" -v d="$DATA_BYTES" 'BEGIN {
    x = r * 1024 / (d > 0 ? d : 1)
    printf "%-44s %12s %12s %15s %16s  %s", "daemon RSS (peak) / data size",
           sprintf("%.1f MiB", r / 1024), sprintf("%.1f MiB", d / 1048576), sprintf("%.2fx", x),
           "<= 2x", x <= 2 ? "ok" : "MISSED"
    printf "\n%44s peak %.1f MiB", "", h / 1024 }')
case "$RSS_LINE" in *MISSED*) MISSED=$((MISSED + 1)) ;; esac

# ---- report ----------------------------------------------------------------------------------

LAT_ROW=$(awk -v l="$LAT" 'BEGIN {
    if (match(l, /p50_ms=[0-9.]+/)) p50 = substr(l, RSTART + 7, RLENGTH - 7)
    if (match(l, /p99_ms=[0-9.]+/)) p99 = substr(l, RSTART + 7, RLENGTH - 7)
    if (p50 == "") { printf "%-44s %s", "remote put -> visible in mount", l; exit }
    printf "%-44s %12s %12s %15s %16s  %s", "remote put -> visible in mount (p50/p99)",
           sprintf("p50 %.2f ms", p50), sprintf("p99 %.2f ms", p99), "", "(no goal)", "" }')

echo
printf '%-44s %12s %12s %15s %16s  %s\n' "etcdfs benchmark ($KEYS keys, best of $RUNS)" \
    "etcdfs" "baseline" "ratio" "goal" ""
printf '%s\n' "${ROWS[@]}" "$LAT_ROW" "$RSS_LINE"
echo "latency detail: $LAT"
echo "load average: start $LOAD_START, end $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
echo "goals missed: $MISSED"
[ "$STRICT" -eq 1 ] && [ "$MISSED" -gt 0 ] && exit 1
exit 0
