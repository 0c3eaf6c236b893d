#!/bin/bash
# outcome.sh — unknown outcome: the connection in use forwards requests but holds back every
# answer (proxy "oneway"), so a Put reaches etcd and its answer is lost. The writer gets EIO
# (never success), and once the mount is connected again it shows what etcd really holds.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ -e /dev/fuse ] || skip_all "no /dev/fuse"
faults_start 3 || { not_ok "cluster and proxies start"; done_testing; }

MNT=$TEST_TMP/mnt
ectl put /o/x before >/dev/null
mount_faults "$MNT" || { not_ok "mount"; done_testing; }
check_eq "mounted" before "$(content "$MNT/o/x")"
wait_until 5 in_use
u=$(in_use) || u=0
proxy_set "$u" oneway
printf 'sent but unanswered' >"$TEST_TMP/v"
t0=$(now_ms)
timeout 30 cp "$TEST_TMP/v" "$MNT/o/x" 2>"$TEST_TMP/cp.err"
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q 'Input/output error' "$TEST_TMP/cp.err"; then
    ok "the write whose answer was lost fails with EIO ($(($(now_ms) - t0)) ms)"
else
    not_ok "the write whose answer was lost fails with EIO (exit $rc)"
    diag "$(cat "$TEST_TMP/cp.err")"
fi
check_eq "etcd did apply it" "sent but unanswered" "$(ectl get --print-value-only /o/x)"
proxy_set "$u" pass
check "the mount learns the true value from the watch" \
    wait_until 15 has "$MNT/o/x" "sent but unanswered"
check "writes work again" cp "$TEST_TMP/v" "$MNT/o/y"
check_eq "... and reach etcd" "sent but unanswered" "$(ectl get --print-value-only /o/y)"
done_testing
