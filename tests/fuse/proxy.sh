#!/bin/bash
# proxy.sh — etcdfs works unchanged through etcd's own gRPC proxy (`etcd grpc-proxy start`):
# two mounts against the proxy endpoint only, ls/cat/echo/rm checked against etcd itself, and a
# change made directly on etcd reaching both mounts through the proxy's coalesced watch.
# shellcheck shell=bash
_src=${ETCDFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
source "$_src/tests/fixture/lib.sh"
source "$_src/tests/fixture/etcd.sh"

[ -e /dev/fuse ] || skip_all "no /dev/fuse"
command -v fusermount3 >/dev/null || skip_all "no fusermount3"
command -v etcd >/dev/null || skip_all "no etcd"
etcd grpc-proxy start --help >/dev/null 2>&1 || skip_all "this etcd has no grpc-proxy subcommand"
etcd_start || { not_ok "etcd starts"; done_testing; }

VISIBLE=2
content() { local v; IFS= read -r -d '' v <"$1"; printf '%s' "$v"; }
has() { [ "$(content "$1" 2>/dev/null)" == "$2" ]; }
gone() { [ ! -e "$1" ]; }
value() { ectl get "$1" --print-value-only | head -c -1; }
absent() { [ -z "$(ectl get "$1" --keys-only)" ]; }

# ---- the proxy, on a free port, in front of the fixture's member(s)
proxy_port() {
    local used p
    used=" $(_etcd_used_ports | tr '\n' ' ') "
    while :; do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        case "$used" in *" $p "*) continue ;; esac
        echo "$p"
        return
    done
}
PROXY_PID=""
stop_proxy() {
    [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null
    PROXY_PID=""
    return 0
}
at_exit stop_proxy
backends=$(sed 's#[a-z]*://##g' <<<"$ETCD_ENDPOINTS")
for attempt in 1 2 3; do
    PORT=$(proxy_port)
    etcd grpc-proxy start --endpoints="$backends" --listen-addr="127.0.0.1:$PORT" \
        --data-dir="$TEST_TMP/proxy" >"$TEST_TMP/proxy.log" 2>&1 &
    PROXY_PID=$!
    tap_guard kill "$PROXY_PID"
    wait_until 10 env ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$PORT" --dial-timeout=1s \
        get /probe && break
    stop_proxy
done
if [ -z "$PROXY_PID" ]; then
    not_ok "grpc-proxy starts"
    diag "$(tail -n 20 "$TEST_TMP/proxy.log")"
    done_testing
fi
ok "grpc-proxy serves on 127.0.0.1:$PORT"
PROXY_EP=http://127.0.0.1:$PORT

ectl put /app/config '{"replicas":3}' >/dev/null
ectl put /app/db/host db1.example >/dev/null

# Both mounts see only the proxy (mount_etcdfs passes --endpoints=$ETCD_ENDPOINTS).
M1=$TEST_TMP/m1
M2=$TEST_TMP/m2
ETCD_ENDPOINTS=$PROXY_EP mount_etcdfs "$M1" || { not_ok "mount through the proxy"; done_testing; }
ok "mounted through the proxy"
ETCD_ENDPOINTS=$PROXY_EP mount_etcdfs "$M2" || { not_ok "second mount through the proxy"; done_testing; }
ok "a second mount through the same proxy"
check "the daemon talks to the proxy only" \
    bash -c "tr '\0' ' ' </proc/$(etcdfs_pid "$M1")/cmdline | grep -qF -- '--endpoints=$PROXY_EP '"

check_eq "ls of the root" "app" "$(ls "$M1")"
check_eq "ls of a directory" "config db" "$(ls "$M1/app" | tr '\n' ' ' | sed 's/ $//')"
check_eq "cat a value" db1.example "$(cat "$M1/app/db/host")"
check_eq "st_size" 14 "$(stat -c %s "$M1/app/config")"

echo written >"$M1/app/new"
check_eq "echo > creates the key in etcd" written "$(value /app/new)"
check "... and the other mount sees it (coalesced watch)" wait_until $VISIBLE has "$M2/app/new" written
echo replaced >"$M1/app/new"
check_eq "echo > replaces the value in etcd" replaced "$(value /app/new)"
check "... the other mount sees the new value" wait_until $VISIBLE has "$M2/app/new" replaced

ectl put /app/db/host db2.example >/dev/null
check "a put made on etcd directly reaches mount 1" wait_until $VISIBLE has "$M1/app/db/host" db2.example
check "... and mount 2" wait_until $VISIBLE has "$M2/app/db/host" db2.example
ectl put /app/remote/deep/k v >/dev/null
check "a new prefix made on etcd directly shows as directories" \
    wait_until $VISIBLE has "$M2/app/remote/deep/k" v

rm "$M1/app/new"
check "rm deletes the key in etcd" absent /app/new
check "... and it disappears from the other mount" wait_until $VISIBLE gone "$M2/app/new"
ectl del /app/remote/deep/k >/dev/null
check "a delete made on etcd directly removes the directory" wait_until $VISIBLE gone "$M1/app/remote"

# 50 quick remote puts: the last one wins everywhere (nothing lost or reordered by the proxy).
for i in $(seq 1 50); do ectl put /app/burst "v$i" >/dev/null; done
check "50 remote puts: mount 1 ends with the last" wait_until $VISIBLE has "$M1/app/burst" v50
check "50 remote puts: mount 2 ends with the last" wait_until $VISIBLE has "$M2/app/burst" v50

umount_etcdfs "$M2"
umount_etcdfs "$M1"
check "unmounted" _tap_unmounted "$M1"
done_testing
