#!/usr/bin/env bash
# scale.sh — etcdfs on a big Kubernetes-shaped /registry (50,000 keys, ~250 MB, 10,000 nodes:
# two 10,000-entry directories, 50 values near 1 MiB) under sustained churn, in one run, as one
# table: mount time, daemon memory (default and 64 MiB value budget, peak during the load, bytes
# per key), cold/warm find and grep -r against etcdctl and tmpfs, ls -l of 10,000 entries, and
# 1,000 remote puts/s for 60 s with a grep -r loop reading: put → visible lag, RSS over time,
# torn values (scale_churn.c, compiled here against the client library).
# Usage: tests/bench/scale.sh [--keys N] [--nodes N] [--big N] [--churn-s S] [--rate R] [--strict]
set -uo pipefail

SRC=${ETCDFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${ETCDFS_BUILD:-$SRC/build-tests}
ETCDFS=${ETCDFS:-$BUILD/fs/etcdfs}
GEN=${GEN_REGISTRY:-$BUILD/tools/gen-registry}
KEYS=50000 NODES=10000 BIG=50 CHURN_S=60 RATE=1000 STRICT=0
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) KEYS=$2; shift ;;
        --nodes) NODES=$2; shift ;;
        --big) BIG=$2; shift ;;
        --churn-s) CHURN_S=$2; shift ;;
        --rate) RATE=$2; shift ;;
        --strict) STRICT=1 ;;
        *) echo "usage: $0 [--keys N] [--nodes N] [--big N] [--churn-s S] [--rate R] [--strict]" >&2
           exit 2 ;;
    esac
    shift
done

skip() { echo "1..0 # SKIP $*"; exit 77; }
[ -x "$ETCDFS" ] || skip "etcdfs not found at $ETCDFS (set ETCDFS_BUILD=dir or ETCDFS=path)"
[ -x "$GEN" ] || skip "gen-registry not found at $GEN"
[ -f "$BUILD/client/libetcdclient.a" ] || skip "no $BUILD/client/libetcdclient.a"
[ -e /dev/fuse ] || skip "no /dev/fuse"
command -v etcdctl >/dev/null || skip "no etcdctl"

# The fixture: etcd on free ports, a private temp dir ($TEST_TMP), cleanup at exit (at_exit).
source "$SRC/tests/fixture/lib.sh"
source "$SRC/tests/fixture/etcd.sh"
log() { echo "scale: $*" >&2; }

TREE=$(mktemp -d /dev/shm/etcdfs-scale-tree.XXXXXX) || exit 1
at_exit rm -rf -- "$TREE"
MNT=$TEST_TMP/mnt
mkdir -p "$MNT"

CHURN=$TEST_TMP/scale_churn
cc -O2 -std=gnu11 -I "$SRC/client" -I "$BUILD" -o "$CHURN" "$SRC/tests/bench/scale_churn.c" \
    "$BUILD/client/libetcdclient.a" $(pkg-config --libs libnghttp2 openssl libprotobuf-c) \
    -lpthread || { log "cannot compile scale_churn.c"; exit 1; }

etcd_start --quota 8589934592 || { log "cannot start etcd"; exit 1; }
EP=${ETCD_ENDPOINTS%%,*}
export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=$EP

now_ns() { date +%s%N; }
US=0
timed() { local t0; t0=$(now_ns); "$@"; US=$(( ($(now_ns) - t0) / 1000 )); }
kib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null; }

# ---- table ----------------------------------------------------------------------------------
ROWS=() MISSED=0
# row NAME VALUE BASE RATIO GOAL OK(ok/MISSED/"")
row() {
    local line
    line=$(printf '%-46s %14s %14s %9s %18s  %s' "$@")
    ROWS+=("$line")
    [ "${6:-}" = MISSED ] && MISSED=$((MISSED + 1))
    echo "  $line" >&2
}
# trow NAME A_US B_US GOAL_RATIO (empty goal: reference)
trow() {
    local r okv=""
    r=$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2fx", a / (b > 0 ? b : 1) }')
    if [ -n "${4:-}" ]; then
        okv=$(awk -v a="$2" -v b="$3" -v g="$4" 'BEGIN { print (a <= g * b) ? "ok" : "MISSED" }')
    fi
    row "$1" "$(awk -v u="$2" 'BEGIN { printf "%.1f ms", u / 1000 }')" \
        "$(awk -v u="$3" 'BEGIN { printf "%.1f ms", u / 1000 }')" "$r" \
        "${4:+<= ${4}x}" "$okv"
}

# ---- data -----------------------------------------------------------------------------------
log "generating $KEYS keys ($NODES nodes, $BIG near 1 MiB) into $EP and $TREE"
GEN_OUT=$("$GEN" --endpoints="$EP" --keys $((KEYS - BIG)) --big "$BIG" --nodes "$NODES" \
    --out "$TREE") || { log "gen-registry failed"; exit 1; }
log "$GEN_OUT"
VALUE_BYTES=$(sed -n 's/.* \([0-9]*\) value bytes.*/\1/p' <<<"$GEN_OUT")
KEY_BYTES=$(sed -n 's/.*MiB, \([0-9]*\) key bytes.*/\1/p' <<<"$GEN_OUT")
DATA_KB=$(( (VALUE_BYTES + KEY_BYTES) / 1024 ))
WIDE=registry/minions
PATTERN='"app":"nginx"'

# ---- mounts ---------------------------------------------------------------------------------
PID=""
unmount() {
    is_mounted "$MNT" && fusermount3 -u "$MNT"
    [ -n "$PID" ] && wait_until 10 bash -c "! kill -0 $PID"
    PID=""
    return 0
}
at_exit unmount
# mount_fresh [OPTS...]: new daemon; US = etcdfs start → MNT/registry listed; PID set.
mount_fresh() {
    unmount
    local t0
    t0=$(now_ns)
    "$ETCDFS" --endpoints="$EP" "$@" "$MNT" 2>>"$TEST_TMP/etcdfs.log" ||
        { log "etcdfs failed:"; tail -5 "$TEST_TMP/etcdfs.log" >&2; exit 1; }
    until [ -d "$MNT/registry" ]; do sleep 0.002; done
    US=$(( ($(now_ns) - t0) / 1000 ))
    PID=$(etcdfs_pid "$MNT")
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

# 1. mount ready, memory at the end of the load (peak = VmHWM)
mount_fresh
READY_US=$US
HWM_LOAD=$(status_kb "$PID" VmHWM) RSS_LOAD=$(status_kb "$PID" VmRSS)
row "mount ready ($KEYS keys, $(kib "$DATA_KB"))" "$(awk -v u="$READY_US" 'BEGIN { printf "%.0f ms", u / 1000 }')" \
    "" "" "<= 3000 ms" "$([ "$READY_US" -le 3000000 ] && echo ok || echo MISSED)"

# 2. cold find (this fresh mount) / etcdctl --keys-only / tmpfs
FOUND=0
timed eval 'FOUND=$(find "$MNT/registry" -type f | wc -l)'; A=$US
[ "$FOUND" -eq "$KEYS" ] || log "WARNING: find saw $FOUND files, expected $KEYS"
timed eval 'etcdctl get --prefix --keys-only /registry >/dev/null'; B=$US
trow "cold find -type f / etcdctl --keys-only" "$A" "$B" 1.5
drop_caches
timed eval 'find "$TREE/registry" -type f >/dev/null'
trow "  cold find / find on tmpfs" "$A" "$US"
timed eval 'find "$MNT/registry" -type f >/dev/null'; A=$US
timed eval 'find "$TREE/registry" -type f >/dev/null'
trow "warm find / find on tmpfs" "$A" "$US"

# 3. cold grep -r (fresh mount) / etcdctl | grep ; warm grep / tmpfs
mount_fresh
timed eval 'H1=$(grep -rl -- "$PATTERN" "$MNT/registry" | wc -l)'; A=$US
timed eval 'etcdctl get --prefix /registry | grep -c -- "$PATTERN" >/dev/null'; B=$US
trow "cold grep -r / etcdctl get --prefix | grep" "$A" "$B" 2
timed eval 'H1=$(grep -rl -- "$PATTERN" "$MNT/registry" | wc -l)'; A=$US
timed eval 'H2=$(grep -rl -- "$PATTERN" "$TREE/registry" | wc -l)'; B=$US
trow "warm grep -r / grep -r on tmpfs" "$A" "$B" 1.5
[ "$H1" = "$H2" ] || log "WARNING: grep found $H1 files in the mount, $H2 on tmpfs"

# 4. ls -l of a 10,000-entry directory, warm
N_WIDE=$(ls "$TREE/$WIDE" | wc -l)
ls -l "$MNT/$WIDE" >/dev/null; ls -l "$TREE/$WIDE" >/dev/null
timed eval 'ls -l "$MNT/$WIDE" >/dev/null'; A=$US
timed eval 'ls -l "$TREE/$WIDE" >/dev/null'; B=$US
trow "warm ls -l ($N_WIDE entries) / tmpfs" "$A" "$B" 2

# 5. memory, default value budget: everything has been read (grep), so every value is held.
RSS_ALL=$(status_kb "$PID" VmRSS) HWM_ALL=$(status_kb "$PID" VmHWM)
PER_KEY=$(( (RSS_ALL * 1024 - VALUE_BYTES) / KEYS ))
row "RSS after load (peak during load)" "$(kib "$RSS_LOAD")" "($(kib "$HWM_LOAD"))" "" "< 2x data" \
    "$([ "$HWM_LOAD" -le $((2 * DATA_KB)) ] && echo ok || echo MISSED)"
row "RSS, all read (peak) / data, 512M budget" "$(kib "$RSS_ALL")" "$(kib "$DATA_KB")" \
    "$(awk -v a="$HWM_ALL" -v b="$DATA_KB" 'BEGIN { printf "%.2fx", a / b }')" "<= 1.5x" \
    "$([ "$HWM_ALL" -le $((DATA_KB * 3 / 2)) ] && echo ok || echo MISSED)"
row "  memory per key beyond its value" "$PER_KEY B" "" "" "" ""
NT=$(ls "/proc/$PID/task" | wc -l) NFD=$(ls "/proc/$PID/fd" | wc -l)
row "daemon threads / open fds ($KEYS keys)" "$NT" "$NFD" "" "no per-key ones" \
    "$([ "$NT" -lt 100 ] && [ "$NFD" -lt 100 ] && echo ok || echo MISSED)"

# 6. memory with -o value_cache=64M
mount_fresh -o value_cache=64M
R64_LOAD=$(status_kb "$PID" VmRSS) H64_LOAD=$(status_kb "$PID" VmHWM)
grep -rl -- "$PATTERN" "$MNT/registry" >/dev/null
R64=$(status_kb "$PID" VmRSS) H64=$(status_kb "$PID" VmHWM)
LIM64=$(( 65536 + KEYS * 200 / 1024 ))
row "RSS 64M budget: loaded / all read" "$(kib "$R64_LOAD")" "$(kib "$R64")" "" \
    "<= $(kib "$LIM64")" "$([ "$H64" -le "$LIM64" ] && echo ok || echo MISSED)"
# Below 64 MiB the budget was never filled (small data): no per-key figure beyond it.
BEYOND=$(( R64 > 65536 ? (R64 - 65536) * 1024 / KEYS : 0 ))
row "  peak 64M budget; per key beyond 64 MiB" "$(kib "$H64")" "$BEYOND B" "" "<= 200 B" \
    "$([ $(( H64 > 65536 ? (H64 - 65536) * 1024 / KEYS : 0 )) -le 200 ] && echo ok || echo MISSED)"

# 7. churn: RATE remote puts/s for CHURN_S s, a grep -r loop reading, probe lag, torn values
mount_fresh
log "churn: $RATE puts/s for $CHURN_S s, grep -r loop running"
( n=0; while [ ! -e "$TEST_TMP/stop" ]; do grep -rl -- "$PATTERN" "$MNT/registry" >/dev/null 2>&1
      n=$((n + 1)); done; echo "$n" >"$TEST_TMP/greps" ) &
GREP_PID=$!
( while [ ! -e "$TEST_TMP/stop" ]; do echo "$(date +%s) $(status_kb "$PID" VmRSS)"; sleep 2; done \
      >"$TEST_TMP/rss" ) &
RSS_PID=$!
CH_OUT=$("$CHURN" "$EP" "$MNT" "$RATE" "$CHURN_S" "$NODES")
CH_RC=$?
touch "$TEST_TMP/stop"
wait "$GREP_PID" "$RSS_PID"
log "$CH_OUT"
get() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$CH_OUT"; }
P50=$(get lat_p50_ms) P99=$(get lat_p99_ms) MAXL=$(get lat_max_ms)
row "churn: puts/s achieved (errors)" "$(get rate)" "($(get put_errors))" "" ">= $((RATE * 9 / 10))" \
    "$(awk -v r="$(get rate)" -v g="$RATE" 'BEGIN { print (r >= 0.9 * g) ? "ok" : "MISSED" }')"
row "churn: put ack -> visible p50 / p99" "$P50 ms" "$P99 ms" "max $MAXL" "p99 <= 100 ms" \
    "$(awk -v p="$P99" 'BEGIN { print (p >= 0 && p <= 100) ? "ok" : "MISSED" }')"
row "churn: verified reads / torn values" "$(get reads)" "$(get torn)" "" "0 torn" \
    "$([ "$(get torn)" = 0 ] && [ "$CH_RC" = 0 ] && echo ok || echo MISSED)"
RSS_FIRST=$(awk 'NR == 3 { print $2 }' "$TEST_TMP/rss")     # after the first few seconds
RSS_LAST=$(awk 'END { print $2 }' "$TEST_TMP/rss")
RSS_MAX=$(awk '$2 > m { m = $2 } END { print m }' "$TEST_TMP/rss")
row "churn: RSS at 4 s / at end (max)" "$(kib "${RSS_FIRST:-0}")" "$(kib "${RSS_LAST:-0}")" \
    "($(kib "${RSS_MAX:-0}"))" "end <= 1.1x 4 s" \
    "$([ "${RSS_LAST:-0}" -le $(( ${RSS_FIRST:-0} * 11 / 10 )) ] && echo ok || echo MISSED)"
row "churn: grep -r loops completed meanwhile" "$(cat "$TEST_TMP/greps")" "" "" "" ""

# ---- table ----------------------------------------------------------------------------------
echo
echo "etcdfs scale benchmark: $KEYS keys, $(kib "$DATA_KB") ($NODES nodes, $BIG values near 1 MiB)"
echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, load $(cut -d' ' -f1-3 /proc/loadavg); etcd $(etcd --version | awk 'NR == 1 { print $3 }')"
printf '%-46s %14s %14s %9s %18s\n' "" "etcdfs" "baseline" "ratio" "goal"
printf '%s\n' "${ROWS[@]}"
[ "$STRICT" = 1 ] && [ "$MISSED" -gt 0 ] && exit 1
exit 0
