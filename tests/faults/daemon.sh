#!/bin/bash
# daemon.sh — the daemon's own faults: SIGTERM while writes are in flight (each finishes or fails
# visibly before the daemon exits), SIGKILL while writes are in flight (every value in etcd is
# whole: one Put each), and fusermount3 -u while a file is open for writing (no hang; the
# daemon exits once the file is closed and the unmount succeeds).
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ -e /dev/fuse ] || skip_all "no /dev/fuse"
faults_start 3 || { not_ok "cluster and proxies start"; done_testing; }

MNT=$TEST_TMP/mnt
head -c 200000 /dev/urandom | base64 -w 0 >"$TEST_TMP/big"
BIG=$(cat "$TEST_TMP/big")
for i in 0 1 2; do proxy_set "$i" "delay 300"; done   # writes stay in flight a while

# writers N DIR: N concurrent cp of the big value; exit codes in $TEST_TMP/rc.K
writers() {
    local k
    WPIDS=()
    for ((k = 0; k < $1; k++)); do
        ( timeout 60 cp "$TEST_TMP/big" "$MNT/$2/w$k" 2>/dev/null; echo $? >"$TEST_TMP/rc.$k" ) &
        WPIDS+=($!)
    done
}
# whole DIR N: every key present in etcd holds the whole value; prints "present acked".
whole() {
    local k v bad=0 present=0 acked=0
    for ((k = 0; k < $2; k++)); do
        v=$(ectl get --print-value-only "/$1/w$k")
        [ "$(cat "$TEST_TMP/rc.$k")" = 0 ] && acked=$((acked + 1))
        if [ -n "$v" ]; then
            present=$((present + 1))
            [ "$v" == "$BIG" ] || bad=$((bad + 1))
        elif [ "$(cat "$TEST_TMP/rc.$k")" = 0 ]; then
            bad=$((bad + 1))     # acknowledged but not in etcd: lost
        fi
    done
    echo "$present $acked"
    return $bad
}

# ---- SIGTERM
mount_faults "$MNT" || { not_ok "mount"; done_testing; }
mkdir -p "$MNT/t"
pid=$(etcdfs_pid "$MNT")
writers 8 t
wait_until 5 bash -c "ls '$MNT/t' | grep -q w" 
kill -TERM "$pid"
t0=$(now_ms)
wait "${WPIDS[@]}"
check "SIGTERM: the daemon exits" wait_until 30 bash -c "! kill -0 $pid 2>/dev/null"
diag "SIGTERM: daemon gone $(($(now_ms) - t0)) ms after the signal"
hung=$(grep -l '^124$' "$TEST_TMP"/rc.* 2>/dev/null | wc -l)
check_eq "SIGTERM: no writer hung" 0 "$hung"
if r=$(whole t 8); then ok "SIGTERM: every acknowledged write is whole in etcd, nothing partial (present/acked: $r)"
else not_ok "SIGTERM: acknowledged writes whole in etcd (present/acked: $r)"; fi
umount_etcdfs "$MNT"

# ---- SIGKILL
rm -f "$TEST_TMP"/rc.*
mount_faults "$MNT" || { not_ok "remount"; done_testing; }
mkdir -p "$MNT/k"
pid=$(etcdfs_pid "$MNT")
writers 8 k
wait_until 5 bash -c "ls '$MNT/k' | grep -q w"
kill -KILL "$pid"
wait "${WPIDS[@]}"
fusermount3 -uz "$MNT" 2>/dev/null
if r=$(whole k 8); then ok "SIGKILL: every value in etcd is whole (present/acked: $r)"
else not_ok "SIGKILL: every value in etcd is whole (present/acked: $r)"; fi

# ---- fusermount3 -u with a file open for writing
for i in 0 1 2; do proxy_set "$i" pass; done
mount_faults "$MNT" || { not_ok "remount"; done_testing; }
pid=$(etcdfs_pid "$MNT")
exec 3>"$MNT/open"
printf 'written before the unmount' >&3
timeout 10 fusermount3 -u "$MNT" 2>"$TEST_TMP/um.err"
rc=$?
check "fusermount3 -u with a file open returns (no hang)" test "$rc" -ne 124
exec 3>&-
[ "$rc" -ne 0 ] && timeout 10 fusermount3 -u "$MNT" 2>>"$TEST_TMP/um.err"
check "the mount is gone" wait_until 10 bash -c "! grep -q ' $MNT ' /proc/mounts"
check "the daemon exits" wait_until 15 bash -c "! kill -0 $pid 2>/dev/null"
v=$(ectl get --print-value-only /open)
check "the open file's value is whole or absent (got ${#v} bytes)" \
    test -z "$v" -o "$v" == 'written before the unmount'
done_testing
