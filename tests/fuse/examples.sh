#!/bin/bash
# examples.sh — every script in examples/ run against a real etcd with client-certificate TLS
# (as kubeadm's): browse-registry.sh, backup-snapshot.sh (timestamped, verified, rotated),
# on-change.sh (inotify and .cluster/events modes), mount-kubeadm.sh (kubeadm's PKI layout),
# etcdfs.service (its ExecStart/ExecStop run as written, paths pointed at the test's).
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/../fixture/etcd.sh"

[ -e /dev/fuse ] || skip_all "no /dev/fuse"
command -v fusermount3 >/dev/null || skip_all "no fusermount3"
EX=${ETCDFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}/examples

etcd_start --client-cert-auth || { not_ok "etcd with client-cert TLS starts"; done_testing; }
ok "etcd with client-cert TLS started"
etcd_client_args
GEN=$ETCDFS_BUILD/tools/gen-registry
if [ -x "$GEN" ]; then
    "$GEN" --endpoints="$ETCD_ENDPOINTS" --cacert="$ETCD_CACERT" --cert="$ETCD_CERT" \
        --key="$ETCD_KEY" --keys=300 >/dev/null 2>&1
    check "gen-registry loaded a /registry" test $? -eq 0
fi
ectl put /registry/configmaps/default/plain '{"data":{"a":"b"}}' >/dev/null
ectl put /registry/pods/default/nginx '{"kind":"Pod","metadata":{"name":"nginx"}}' >/dev/null

M=$TEST_TMP/m
mount_etcdfs "$M" "${ETCD_CLIENT_ARGS[@]}" || { not_ok "mount"; done_testing; }
ok "mounted with TLS client certificates"

# ---- browse-registry.sh
out=$("$EX/browse-registry.sh" "$M" 2>&1)
check "browse: exits 0" test $? -eq 0
check "browse: lists pods with a count" grep -Eq '^pods +[0-9]+$' <<<"$out"
total=$(find "$M/registry" -type f | wc -l)
check_eq "browse: TOTAL is the number of keys" "$total" "$(awk '$1 == "TOTAL" { print $2 }' <<<"$out")"
out=$("$EX/browse-registry.sh" "$M" pods default 2>&1)
check "browse pods default: lists nginx with its size" grep -Eq '^nginx +[0-9]+$' <<<"$out"
out=$("$EX/browse-registry.sh" "$M" pods default nginx 2>&1)
check "browse one object: pretty JSON" grep -q '"kind": "Pod"' <<<"$out"
"$EX/browse-registry.sh" "$M" pods nowhere nothing >/dev/null 2>&1
check "browse: a missing object fails" test $? -ne 0
"$EX/browse-registry.sh" "$TEST_TMP" >/dev/null 2>&1
check "browse: not a mount fails" test $? -ne 0

# ---- backup-snapshot.sh
B=$TEST_TMP/backups
mkdir -p "$B"
# Older backups to rotate away (names as the script makes them).
for t in 20200101-000000 20200102-000000 20200103-000000; do echo old >"$B/etcd-$t.db"; done
out=$("$EX/backup-snapshot.sh" "$M" "$B" 2 2>&1)
check "backup: exits 0 ($(tail -n1 <<<"$out"))" test $? -eq 0
new=$(find "$B" -name 'etcd-*.db' ! -name 'etcd-2020*' -printf '%f\n' | head -n1)
check "backup: a timestamped file" grep -Eq '^etcd-[0-9]{8}-[0-9]{6}\.db$' <<<"$new"
check "backup: etcdctl accepts it" env ETCDCTL_API=3 etcdctl snapshot status "$B/$new"
check "backup: the status table was shown" grep -q 'HASH' <<<"$out"
check_eq "backup: rotated to the 2 newest" "etcd-20200103-000000.db $new" "$(ls "$B" | sort | tr '\n' ' ' | sed 's/ $//')"
check "backup: no partial file left" test -z "$(find "$B" -name '.*part')"
"$EX/backup-snapshot.sh" "$TEST_TMP" "$B" >/dev/null 2>&1
check "backup: not a mount fails" test $? -ne 0
"$EX/backup-snapshot.sh" "$M" "$B" zero >/dev/null 2>&1
check "backup: bad KEEP fails" test $? -ne 0

kill_group() { kill -- -"$1" 2>/dev/null; return 0; }

# ---- on-change.sh: both modes; a remote put, a put through the mount, a delete
seen_line() { grep -qx -- "$1" "$2"; }
for mode in inotify events; do
    log=$TEST_TMP/onchange-$mode.log
    : >"$log"
    flag=()
    [ "$mode" = events ] && flag=(--events)
    [ "$mode" = inotify ] && ! command -v inotifywait >/dev/null && { ok "# SKIP no inotifywait"; continue; }
    # shellcheck disable=SC2016
    setsid "$EX/on-change.sh" "${flag[@]}" "$M/registry/configmaps" -- \
        sh -c 'echo "$EVENT ${FILE#'"$M"'/}" >>'"$log" 2>>"$TEST_TMP/onchange.err" &
    pid=$!
    at_exit kill_group "$pid"
    # Ready when a probe key's event arrives (inotifywait -r sets its watches first).
    ready=0
    for i in $(seq 50); do
        ectl put "/registry/configmaps/default/probe-$mode" "$i" >/dev/null
        if wait_until 0.2 grep -q "probe-$mode" "$log"; then ready=1; break; fi
    done
    check "on-change $mode: started and sees a remote put" test "$ready" = 1
    ectl put /registry/configmaps/kube-system/remote-$mode v1 >/dev/null
    check "on-change $mode: remote put of a new key in a new directory" \
        wait_until 5 seen_line "PUT registry/configmaps/kube-system/remote-$mode" "$log"
    echo local >"$M/registry/configmaps/default/local-$mode"
    check "on-change $mode: write through the mount" \
        wait_until 5 seen_line "PUT registry/configmaps/default/local-$mode" "$log"
    ectl del /registry/configmaps/default/plain >/dev/null
    check "on-change $mode: remote delete" \
        wait_until 5 seen_line "DELETE registry/configmaps/default/plain" "$log"
    ectl put /registry/configmaps/default/plain '{"data":{"a":"b"}}' >/dev/null
    ectl put /registry/pods/default/outside x >/dev/null
    ectl put /registry/configmaps/default/marker-$mode x >/dev/null
    wait_until 5 grep -q "marker-$mode" "$log"
    check "on-change $mode: nothing outside the watched path" \
        test -z "$(grep -v '^[A-Z]* registry/configmaps/' "$log")"
    kill -- -"$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
done

umount_etcdfs "$M"

# ---- mount-kubeadm.sh: a kubeadm PKI tree made of the fixture's files
PKI=$TEST_TMP/pki
mkdir -p "$PKI/etcd"
cp "$ETCD_CACERT" "$PKI/etcd/ca.crt"
cp "$ETCD_CERT" "$PKI/apiserver-etcd-client.crt"
cp "$ETCD_KEY" "$PKI/apiserver-etcd-client.key"
K=$TEST_TMP/k
at_exit umount_etcdfs "$K"
tap_guard fusermount3 -uz -- "$K"
out=$(env -u ETCD_CACERT -u ETCD_CERT -u ETCD_KEY KUBE_PKI=$PKI ETCD_ENDPOINTS=$ETCD_ENDPOINTS ETCDFS=$ETCDFS "$EX/mount-kubeadm.sh" "$K" -o ro 2>&1 </dev/null)
check "mount-kubeadm: apiserver-etcd-client certificate ($out)" test $? -eq 0
check "mount-kubeadm: the keyspace is there" test -f "$K/registry/pods/default/nginx"
{ echo x >"$K/registry/x"; } 2>/dev/null
check "mount-kubeadm: extra options reach etcdfs (-o ro)" test ! -e "$K/registry/x"
umount_etcdfs "$K"
cp "$ETCD_CERT" "$PKI/etcd/healthcheck-client.crt"
cp "$ETCD_KEY" "$PKI/etcd/healthcheck-client.key"
rm "$PKI/apiserver-etcd-client.key"
out=$(env -u ETCD_CACERT -u ETCD_CERT -u ETCD_KEY KUBE_PKI=$PKI ETCD_ENDPOINTS=$ETCD_ENDPOINTS ETCDFS=$ETCDFS "$EX/mount-kubeadm.sh" "$K" 2>&1 </dev/null)
check "mount-kubeadm: healthcheck-client certificate preferred ($out)" test $? -eq 0
check "mount-kubeadm: mounted" is_mounted "$K"
umount_etcdfs "$K"
out=$(env -u ETCD_CACERT -u ETCD_CERT -u ETCD_KEY KUBE_PKI=$TEST_TMP/nopki ETCDFS=$ETCDFS "$EX/mount-kubeadm.sh" "$K" 2>&1 </dev/null)
check "mount-kubeadm: missing certificates: a clear error" grep -q "cannot read .*nopki/etcd/ca.crt" <<<"$out"

# ---- etcdfs.service: ExecStartPre/ExecStart/ExecStop as written, paths swapped for ours
S=$TEST_TMP/svc
at_exit umount_etcdfs "$S"
tap_guard fusermount3 -uz -- "$S"
unit_cmd() {
    sed -n "s|^$1=||p" "$EX/etcdfs.service" |
        sed -e "s|/etc/kubernetes/pki|$PKI|g" -e "s|https://127.0.0.1:2379|$ETCD_ENDPOINTS|g" \
            -e "s|/mnt/etcd|$S|g" -e "s|/usr/local/bin/etcdfs|$ETCDFS|g"
}
check "service: Type=forking (etcdfs forks once ready)" grep -qx 'Type=forking' "$EX/etcdfs.service"
if command -v systemd-analyze >/dev/null && [ -d /run/systemd/system ]; then
    check "service: systemd-analyze verify" systemd-analyze verify "$EX/etcdfs.service"
fi
bash -c "$(unit_cmd ExecStartPre)" && bash -c "$(unit_cmd ExecStart)" </dev/null >"$TEST_TMP/svc.log" 2>&1
check "service: ExecStart mounts and returns" is_mounted "$S"
check "service: the keyspace is there" test -f "$S/registry/pods/default/nginx"
bash -c "$(unit_cmd ExecStop)"
check "service: ExecStop unmounts" wait_until 5 _tap_unmounted "$S"

done_testing
