# lib.sh — helpers shared by the fault tests: a 3-member cluster with one proxy (proxy.c) in
# front of each member, a mount through the proxies, proxy control, and which member is in use.
#   faults_start [N]          cluster + proxies; PROXY_ENDPOINTS, PROXY_PORT[i]
#   proxy_set I MODE          pass | delay MS | drop | cut | blackhole | oneway (waits until applied)
#   mount_faults MNT [ARGS]   mounts through the proxies
#   in_use                    index of the proxy the mount's client is connected to (or fails)
#   now_ms, content PATH, has PATH VALUE
# shellcheck shell=bash
_src=${ETCDFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
source "$_src/tests/fixture/lib.sh"
source "$_src/tests/fixture/etcd.sh"

: "${FAULT_PROXY:=$ETCDFS_BUILD/tests/faults/fault_proxy}"
PROXY_PIDS=()
PROXY_PORT=()

now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
content() { local v; IFS= read -r -d '' v <"$1"; printf '%s' "$v"; }
has() { [ -e "$1" ] && [ "$(content "$1")" == "$2" ]; }

_proxy_stop() {
    local p
    for p in "${PROXY_PIDS[@]}"; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    PROXY_PIDS=()
}

proxy_start() {
    local i=$1 ep ctl
    ep=$(etcd_endpoint "$i") || return 1
    ctl="$TEST_TMP/proxy$i"
    echo pass >"$ctl"
    setpriv --pdeathsig KILL -- "$FAULT_PROXY" "${ep#http://}" "$ctl" 2>>"$TEST_TMP/proxy$i.log" &
    PROXY_PIDS[$i]=$!
    wait_until 5 test -s "$ctl.port" || return 1
    PROXY_PORT[$i]=$(cat "$ctl.port")
}

faults_start() {
    local n=${1:-3} i
    [ -x "$FAULT_PROXY" ] || { diag "no proxy at $FAULT_PROXY"; return 1; }
    etcd_start --members "$n" || return 1
    at_exit _proxy_stop
    PROXY_ENDPOINTS=""
    for ((i = 0; i < n; i++)); do
        proxy_start "$i" || return 1
        PROXY_ENDPOINTS+="${PROXY_ENDPOINTS:+,}http://127.0.0.1:${PROXY_PORT[$i]}"
    done
}

_proxy_state_is() { [ "$(cat "$1.state" 2>/dev/null)" == "$2" ]; }
proxy_set() {
    local ctl="$TEST_TMP/proxy$1"
    printf '%s\n' "$2" >"$ctl.tmp" && mv -f -- "$ctl.tmp" "$ctl"
    wait_until 5 _proxy_state_is "$ctl" "$2"
}

mount_faults() {
    local mnt=$1
    shift
    ETCD_ENDPOINTS=$PROXY_ENDPOINTS mount_etcdfs "$mnt" "$@"
}

# in_use: the proxy whose port has an established connection from an etcdfs process.
in_use() {
    local i out
    out=$(ss -Htnp state established 2>/dev/null | grep '"etcdfs"')
    for ((i = 0; i < ${#PROXY_PORT[@]}; i++)); do
        grep -q "127.0.0.1:${PROXY_PORT[$i]} " <<<"$out" && { echo "$i"; return 0; }
    done
    return 1
}
not_in_use() { local u; u=$(in_use) && [ "$u" != "$1" ]; }

# ectl_m I ARGS: etcdctl against member I only (not through a proxy).
ectl_m() {
    env ETCDCTL_API=3 etcdctl --endpoints="$(etcd_endpoint "$1")" --dial-timeout=2s \
        --command-timeout=5s "${@:2}"
}
# ectl_up ARGS: etcdctl against the members not in $DOWN (space-separated indexes).
ectl_up() {
    local i eps=""
    for ((i = 0; i < ETCD_N; i++)); do
        [[ " ${DOWN:-} " == *" $i "* ]] && continue
        eps+="${eps:+,}$(etcd_endpoint "$i")"
    done
    env ETCDCTL_API=3 etcdctl --endpoints="$eps" --dial-timeout=2s --command-timeout=5s "$@"
}
