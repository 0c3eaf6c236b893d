#!/usr/bin/env bash
# proxy-bench.sh — many mounts, one cluster: 20 etcdfs mounts of one 3-member etcd cluster,
# first directly, then through `etcd grpc-proxy start`. For each: time until all 20 are ready
# (started together), etcd's CPU seconds and RSS (the 3 members summed; the proxy's own beside),
# and etcd's watcher count (etcd_debugging_mvcc_watcher_total from /metrics on the client URLs),
# idle and under 200 puts/s for 15 s (scale_churn.c, compiled here).
# Usage: tests/bench/proxy-bench.sh [--mounts N] [--keys N]
set -uo pipefail

SRC=${ETCDFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${ETCDFS_BUILD:-$SRC/build-tests}
ETCDFS=${ETCDFS:-$BUILD/fs/etcdfs}
GEN=${GEN_REGISTRY:-$BUILD/tools/gen-registry}
N=20 KEYS=10000 CHURN_RATE=200 CHURN_S=15
while [ $# -gt 0 ]; do
    case "$1" in
        --mounts) N=$2; shift ;;
        --keys) KEYS=$2; shift ;;
        *) echo "usage: $0 [--mounts N] [--keys N]" >&2; exit 2 ;;
    esac
    shift
done
skip() { echo "1..0 # SKIP $*"; exit 77; }
[ -x "$ETCDFS" ] || skip "etcdfs not found at $ETCDFS (set ETCDFS_BUILD=dir)"
[ -x "$GEN" ] || skip "gen-registry not found at $GEN"
[ -e /dev/fuse ] || skip "no /dev/fuse"
command -v curl >/dev/null || skip "no curl"
etcd grpc-proxy start --help >/dev/null 2>&1 || skip "etcd has no grpc-proxy subcommand"

source "$SRC/tests/fixture/lib.sh"
source "$SRC/tests/fixture/etcd.sh"
log() { echo "proxy-bench: $*" >&2; }

CHURN=$TEST_TMP/scale_churn
cc -O2 -std=gnu11 -I "$SRC/client" -I "$BUILD" -o "$CHURN" "$SRC/tests/bench/scale_churn.c" \
    "$BUILD/client/libetcdclient.a" $(pkg-config --libs libnghttp2 openssl libprotobuf-c) \
    -lpthread || { log "cannot compile scale_churn.c"; exit 1; }

etcd_start --members 3 || { log "cannot start etcd"; exit 1; }
IFS=, read -r -a MEMBERS <<<"$ETCD_ENDPOINTS"
log "$("$GEN" --endpoints="$ETCD_ENDPOINTS" --keys "$KEYS")"

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
etcd_ticks() { local s=0 i; for i in 0 1 2; do s=$((s + $(ticks "$(etcd_pid $i)"))); done; echo $s; }
etcd_rss() {
    local s=0 i
    for i in 0 1 2; do s=$((s + $(awk '/VmRSS/ { print $2 }' "/proc/$(etcd_pid $i)/status"))); done
    echo $s
}
watchers() {
    local s=0 m v
    for m in "${MEMBERS[@]}"; do
        v=$(curl -s "$m/metrics" | awk '$1 == "etcd_debugging_mvcc_watcher_total" { print $2 }')
        s=$(awk -v a="$s" -v b="${v:-0}" 'BEGIN { print a + b }')
    done
    echo "$s"
}
HZ=$(getconf CLK_TCK)
secs() { awk -v t="$1" -v h="$HZ" 'BEGIN { printf "%.2f s", t / h }'; }

PROXY_PID=""
stop_proxy() { [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null; PROXY_PID=""; return 0; }
at_exit stop_proxy
start_proxy() {
    local p
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    etcd grpc-proxy start --endpoints="$(sed 's#http://##g' <<<"$ETCD_ENDPOINTS")" \
        --listen-addr="127.0.0.1:$p" --data-dir="$TEST_TMP/proxy" >"$TEST_TMP/proxy.log" 2>&1 &
    PROXY_PID=$!
    tap_guard kill "$PROXY_PID"
    PROXY_EP=http://127.0.0.1:$p
    wait_until 10 env ETCDCTL_API=3 etcdctl --endpoints="$PROXY_EP" get /x
}

MNTS=()
for i in $(seq 1 "$N"); do MNTS+=("$TEST_TMP/m$i"); mkdir -p "$TEST_TMP/m$i"; done
unmount_all() { local m; for m in "${MNTS[@]}"; do umount_etcdfs "$m" >/dev/null 2>&1; done; return 0; }
at_exit unmount_all
for m in "${MNTS[@]}"; do tap_guard fusermount3 -uz "$m"; done

ROWS=()
# measure LABEL ENDPOINTS
measure() {
    local label=$1 eps=$2 t0 t1 c0 c1 m pids=() ready w_idle w_churn rss pc0=0 pc1=0 prss="-"
    c0=$(etcd_ticks)
    [ -n "$PROXY_PID" ] && pc0=$(ticks "$PROXY_PID")
    t0=$(date +%s%N)
    for m in "${MNTS[@]}"; do
        "$ETCDFS" --endpoints="$eps" "$m" 2>>"$TEST_TMP/etcdfs.log" &
        pids+=($!)
    done
    ready=0
    for p in "${pids[@]}"; do wait "$p" && ready=$((ready + 1)); done
    t1=$(date +%s%N)
    c1=$(etcd_ticks)
    sleep 2
    w_idle=$(watchers)
    local cc0 cc1 pcc0=0 pcc1=0
    cc0=$(etcd_ticks)
    [ -n "$PROXY_PID" ] && pcc0=$(ticks "$PROXY_PID")
    "$CHURN" "${MEMBERS[0]}" - "$CHURN_RATE" "$CHURN_S" 100 >/dev/null
    cc1=$(etcd_ticks)
    [ -n "$PROXY_PID" ] && { pcc1=$(ticks "$PROXY_PID"); prss="$(awk '/VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$PROXY_PID/status")"; }
    w_churn=$(watchers)
    rss=$(etcd_rss)
    # every mount saw the last churn put?
    local seen=0
    for m in "${MNTS[@]}"; do [ -d "$m/registry/events/churn" ] && seen=$((seen + 1)); done
    ROWS+=("$(printf '%-22s %9s %10s %14s %14s %12s %10s %16s' "$label" "$ready/$N" \
        "$(( (t1 - t0) / 1000000 )) ms" "$(secs $((c1 - c0)))" "$(secs $((cc1 - cc0)))" \
        "$(awk -v k="$rss" 'BEGIN { printf "%.1f MiB", k / 1024 }')" "$w_idle/$w_churn" \
        "${PROXY_PID:+$(secs $((pcc1 - pcc0))), $prss}")")
    log "${ROWS[-1]}"
    unmount_all
    ectl del --prefix /registry/events/churn/ >/dev/null
}

log "direct: $N mounts of ${#MEMBERS[@]} members"
measure "direct" "$ETCD_ENDPOINTS"
start_proxy || { log "grpc-proxy did not start"; tail "$TEST_TMP/proxy.log" >&2; exit 1; }
log "through grpc-proxy $PROXY_EP"
measure "via grpc-proxy" "$PROXY_EP"
stop_proxy

echo
echo "etcdfs proxy benchmark: $N mounts, $KEYS keys, 3 members; churn $CHURN_RATE puts/s for $CHURN_S s"
echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %9s %10s %14s %14s %12s %10s %16s\n' "" "ready" "all ready" "etcd CPU mount" \
    "etcd CPU churn" "etcd RSS" "watchers" "proxy CPU, RSS"
printf '%s\n' "${ROWS[@]}"
