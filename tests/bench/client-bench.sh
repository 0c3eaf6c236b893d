#!/usr/bin/env bash
# client-bench.sh — the client library against etcdctl on one local etcd member: Range and Put
# (1 KiB values) latency p50/p99 and throughput with 1, 16 and 64 calls in flight, next to the
# per-call cost of etcdctl get/put run in a loop (a process per call). Prints a table; not a test.
# Usage: tests/bench/client-bench.sh [--ops N] [--perf]   (--perf also runs `etcdctl check perf`)
set -uo pipefail

SRC=${ETCDFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BENCH=${CLIENT_BENCH:-$SRC/build/tests/bench/client_bench}
OPS=4000
PERF=0
while [ $# -gt 0 ]; do
    case "$1" in
        --ops) OPS=$2; shift ;;
        --ops=*) OPS=${1#*=} ;;
        --perf) PERF=1 ;;
        *) echo "usage: $0 [--ops N] [--perf]" >&2; exit 2 ;;
    esac
    shift
done
[ -x "$BENCH" ] || { echo "client_bench not found at $BENCH (set CLIENT_BENCH=path)" >&2; exit 77; }
command -v etcdctl >/dev/null || { echo "no etcdctl" >&2; exit 77; }

# shellcheck source=/dev/null
source "$SRC/tests/fixture/etcd.sh"
etcd_start --members 1 >/dev/null || { echo "cannot start etcd" >&2; exit 1; }
EP=${ETCD_ENDPOINTS%%,*}

ms_now() { date +%s%N; }

# etcdctl: a process per call, 200 calls each; per-call time in microseconds.
ctl_loop() {
    local what=$1 n=200 t0 t1 i
    t0=$(ms_now)
    for ((i = 0; i < n; i++)); do
        if [ "$what" = put ]; then
            etcdctl --endpoints="$EP" put "/ctl/$((i % 100))" "$VAL" >/dev/null
        else
            etcdctl --endpoints="$EP" get "/ctl/$((i % 100))" >/dev/null
        fi
    done
    t1=$(ms_now)
    echo $(((t1 - t0) / n / 1000))
}
VAL=$(head -c 1024 /dev/zero | tr '\0' v)
ctl_put=$(ctl_loop put)
ctl_get=$(ctl_loop get)

printf '%-6s %8s %8s %10s %10s %12s\n' op inflight ops p50_us p99_us ops_per_s
for mode in range put; do
    for c in 1 16 64; do
        read -r m cc n secs p50 p99 tput < <("$BENCH" "$EP" "$mode" "$c" "$OPS") || continue
        printf '%-6s %8s %8s %10s %10s %12s\n' "$m" "$cc" "$n" "$p50" "$p99" "$tput"
    done
done
printf '%-6s %8s %8s %10s %10s %12s\n' "get" "etcdctl" 200 "$ctl_get" "-" "$((1000000 / (ctl_get > 0 ? ctl_get : 1)))"
printf '%-6s %8s %8s %10s %10s %12s\n' "put" "etcdctl" 200 "$ctl_put" "-" "$((1000000 / (ctl_put > 0 ? ctl_put : 1)))"
if [ "$PERF" = 1 ]; then
    echo "# etcdctl check perf --load=s:"
    etcdctl --endpoints="$EP" check perf --load=s 2>&1 | tr '\r' '\n' |
        grep -E 'PASS|FAIL|Throughput|Slowest|Stddev' | sed 's/^/# /'
fi
etcd_stop
