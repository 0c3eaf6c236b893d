#!/bin/bash
# restore.sh — etcd replaced by a restore from a snapshot on the same ports: the revision goes
# back and the cluster ID changes. The mount notices (watch re-created on another cluster / at an
# older revision), resyncs, and shows exactly the restored state — not a mixture.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ -e /dev/fuse ] || skip_all "no /dev/fuse"
etcd_start --members 1 || { not_ok "etcd starts"; done_testing; }

MNT=$TEST_TMP/mnt
ectl put /s/a 1 >/dev/null
ectl put /s/b 1 >/dev/null
check "snapshot saved" ectl snapshot save "$TEST_TMP/snap.db"
mount_etcdfs "$MNT" || { not_ok "mount"; done_testing; }
ectl put /s/a 2 >/dev/null
ectl del /s/b >/dev/null
ectl put /s/c new >/dev/null
check "the mount follows changes after the snapshot" wait_until 5 has "$MNT/s/c" new

# Restore into a new data dir and start the member on it, same ports (fixture internals).
peer=${_etcd_peer_urls[0]}
check "snapshot restored into a new data dir" env ETCDCTL_API=3 etcdctl snapshot restore \
    "$TEST_TMP/snap.db" --name m0 --data-dir "$ETCD_DIR/restored.etcd" \
    --initial-cluster "m0=$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster-token "restored-$$"
etcd_kill 0
_etcd_data_dirs[0]="$ETCD_DIR/restored.etcd"
check "the restored member starts on the same ports" etcd_restart 0
check_eq "etcd holds the snapshot's state" "1 1" "$(ectl get --print-value-only /s/a) $(ectl get --print-value-only /s/b)"

restored() { has "$MNT/s/a" 1 && has "$MNT/s/b" 1 && [ ! -e "$MNT/s/c" ]; }
t0=$(now_ms)
if wait_until 20 restored; then
    ok "the mount shows the restored state ($(($(now_ms) - t0)) ms)"
else
    not_ok "the mount shows the restored state"
    diag "a=$(content "$MNT/s/a" 2>&1) b=$(content "$MNT/s/b" 2>&1) c exists: $([ -e "$MNT/s/c" ] && echo yes || echo no)"
    diag "$(tail -n 10 "$ETCDFS_LOG")"
fi
check "the change was detected" grep -Eq 'etcd changed under the watch|behind the cache' "$ETCDFS_LOG"
ectl put /s/d after >/dev/null
check "changes after the restore show" wait_until 5 has "$MNT/s/d" after
check "writes work on the restored cluster" bash -c "printf w >'$MNT/s/w'"
check_eq "... and reach it" w "$(ectl get --print-value-only /s/w)"
done_testing
