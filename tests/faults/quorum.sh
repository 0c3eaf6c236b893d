#!/bin/bash
# quorum.sh — two of three members killed: reads are served from the cache, a write fails with
# EIO within the command timeout (nothing half-written), and when the members come back the
# mount catches up by itself (a change made after recovery shows; figure: catch-up time).
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ -e /dev/fuse ] || skip_all "no /dev/fuse"
faults_start 3 || { not_ok "cluster and proxies start"; done_testing; }

MNT=$TEST_TMP/mnt
ectl put /q/a old >/dev/null
ectl put /q/b keep >/dev/null
mount_faults "$MNT" --command-timeout=4s || { not_ok "mount"; done_testing; }
check_eq "mounted, value read" old "$(content "$MNT/q/a")"
wait_until 5 in_use
u=$(in_use) || u=0
o=$(((u + 1) % 3)) s=$(((u + 2) % 3))
etcd_kill "$u"
etcd_kill "$o"
DOWN="$u $o"
diag "killed members $u (in use) and $o; $s survives without quorum"

check_eq "cached read during quorum loss" old "$(timeout 3 cat "$MNT/q/a")"
check_eq "ls during quorum loss" "a b" "$(timeout 3 ls "$MNT/q" | tr '\n' ' ' | sed 's/ $//')"
printf 'a whole new value\n' >"$TEST_TMP/new"
t0=$(now_ms)
timeout 30 cp "$TEST_TMP/new" "$MNT/q/a" 2>"$TEST_TMP/cp.err"
rc=$?
t1=$(now_ms)
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q 'Input/output error' "$TEST_TMP/cp.err"; then
    ok "a write fails with EIO ($((t1 - t0)) ms)"
else
    not_ok "a write fails with EIO (exit $rc after $((t1 - t0)) ms)"
    diag "$(cat "$TEST_TMP/cp.err")"
fi
check "... within a bounded wait (< 15 s)" test $((t1 - t0)) -lt 15000
check_eq "the mount still shows the old value" old "$(content "$MNT/q/a")"

t0=$(now_ms)
etcd_restart "$u" && etcd_restart "$o"
DOWN=""
ectl put /q/c after-recovery >/dev/null
if wait_until 20 has "$MNT/q/c" after-recovery; then
    ok "quorum back: a change made after recovery shows ($(($(now_ms) - t0)) ms after restart)"
else
    not_ok "quorum back: a change made after recovery shows"
    diag "$(tail -n 10 "$ETCDFS_LOG")"
fi
v=$(ectl get --print-value-only /q/a)
check "nothing half-written: etcd holds the old or the whole new value" \
    test "$v" == old -o "$v" == "a whole new value"
check "the mount agrees with etcd on /q/a" wait_until 5 has "$MNT/q/a" "$v"
check "writes work again" cp "$TEST_TMP/new" "$MNT/q/a"
check_eq "... and reach etcd" "a whole new value" "$(ectl get --print-value-only /q/a)"
done_testing
