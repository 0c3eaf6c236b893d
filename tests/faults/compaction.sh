#!/bin/bash
# compaction.sh — while the mount cannot reach etcd (all proxies blackholed) keys are put,
# changed and deleted and the history is compacted; on reconnect the watch is cancelled as
# compacted, the mount resyncs, and its tree equals etcd (deletes included).
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ -e /dev/fuse ] || skip_all "no /dev/fuse"
faults_start 3 || { not_ok "cluster and proxies start"; done_testing; }

MNT=$TEST_TMP/mnt
for i in $(seq 1 20); do ectl put "/c/k$i" "v$i" >/dev/null; done
mount_faults "$MNT" || { not_ok "mount"; done_testing; }
check_eq "mounted, 20 keys" 20 "$(ls "$MNT/c" | wc -l)"

conns() { ss -Htnp state established | grep '"etcdfs"' | awk '{print $3}' | sort; }
before=$(conns)
for i in 0 1 2; do proxy_set "$i" blackhole; done
for i in $(seq 1 5); do ectl put "/c/k$i" "changed$i" >/dev/null; done
for i in $(seq 6 10); do ectl del "/c/k$i" >/dev/null; done
for i in $(seq 1 5); do ectl put "/c/new/n$i" "n$i" >/dev/null; done
ectl put /c/gone x >/dev/null && ectl del /c/gone >/dev/null
rev=$(ectl get /c/k1 -w json | grep -o '"revision":[0-9]*' | head -n1 | cut -d: -f2)
check "compacted at $rev while the mount is cut off" ectl compact "$rev" --physical
# The watch stream must really have been lost: wait until the mount dropped its connections.
# The watch must really have broken before the proxies pass again: its keepalive (PING every
# 5.5 s, 2.5 s to answer) gives up within 8 s; the log then says the stream was lost.
old_gone() { [ -z "$(comm -12 <(printf '%s\n' "$before") <(conns))" ]; }
wait_until 12 old_gone || diag "connections from before the blackhole still open: $(conns | tr '\n' ' ')"
for i in 0 1 2; do proxy_set "$i" pass; done

# state LISTER: "name=value" for every file under /c, sorted.
mount_state() { (cd "$MNT/c" && find . -type f | while read -r f; do printf '%s=%s\n' "${f#./}" "$(content "$f")"; done) | LC_ALL=C sort; }
etcd_state() { ectl get --prefix /c/ | paste - - | sed 's|^/c/||; s|\t|=|' | LC_ALL=C sort; }
same() { [ "$(mount_state)" == "$(etcd_state)" ]; }
t0=$(now_ms)
if wait_until 30 same; then
    ok "after reconnect the tree equals etcd ($(($(now_ms) - t0)) ms)"
else
    not_ok "after reconnect the tree equals etcd"
    diff <(mount_state) <(etcd_state) | head -n 20 | while read -r l; do diag "$l"; done
    diag "$(tail -n 10 "$ETCDFS_LOG")"
fi
check "deleted keys are gone" test ! -e "$MNT/c/k6" -a ! -e "$MNT/c/k10" -a ! -e "$MNT/c/gone"
check "the resync was driven by the compaction" grep -q 'compacted' "$ETCDFS_LOG"
ectl put /c/later 1 >/dev/null
check "the new watch delivers later changes" wait_until 5 has "$MNT/c/later" 1
done_testing
