#!/bin/bash
# cli.sh — the etcdfs command itself: --help/--version, usage errors, one clear line and no
# mount left on failure (unreachable etcd, bad mount point, bad password), exit 0 only once the
# mount answers, SIGTERM / fusermount3 -u unmount cleanly, passwords never in
# /proc/PID/cmdline, ETCDCTL_* environment, -o endpoints=... (fstab form), --prefix.
# Runs against an etcd with auth enabled (user root/rootpw).
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/../fixture/etcd.sh"

[ -e /dev/fuse ] || skip_all "no /dev/fuse"
command -v fusermount3 >/dev/null || skip_all "no fusermount3"

# ---- no etcd needed
out=$("$ETCDFS" --help 2>&1)
check "--help exits 0" test $? -eq 0
check "--help shows the usage and the etcdctl-named flags" \
    grep -q -- "--endpoints" <<<"$out"
check "--help documents conflict=" grep -q "conflict=" <<<"$out"
out=$("$ETCDFS" --version 2>&1)
check "--version exits 0" test $? -eq 0
for lib in etcdfs libfuse nghttp2 OpenSSL protobuf-c; do
    check "--version names $lib" grep -q "^$lib" <<<"$out"
done

mkdir -p "$TEST_TMP/m0"
out=$("$ETCDFS" --bogus "$TEST_TMP/m0" 2>&1)
check "unknown option: non-zero exit" test $? -ne 0
check_eq "unknown option: first line names it" "etcdfs: unknown option '--bogus'" \
    "$(head -n1 <<<"$out")"
check "unknown option: prints the usage" grep -q "^Usage: etcdfs" <<<"$out"
out=$("$ETCDFS" -o nonsense "$TEST_TMP/m0" 2>&1)
check "unknown -o option: usage too" grep -q "^Usage: etcdfs" <<<"$out"
out=$("$ETCDFS" 2>&1)
check "no mount point: non-zero exit and usage" grep -q "^Usage: etcdfs" <<<"$out"

# one_line_failure DESC PATTERN ARGS...: fails within 15 s, one stderr line matching
# PATTERN, nothing mounted on $TEST_TMP/m0.
one_line_failure() {
    local desc=$1 pat=$2 t0 rc out elapsed
    shift 2
    t0=$(date +%s)
    out=$(timeout 30 "$ETCDFS" "$@" 2>&1 </dev/null)
    rc=$?
    elapsed=$(($(date +%s) - t0))
    check "$desc: non-zero exit" test "$rc" -ne 0 -a "$rc" -ne 124
    check "$desc: within 15 s (${elapsed}s)" test "$elapsed" -le 15
    check_eq "$desc: exactly one line on stderr" 1 "$(grep -c . <<<"$out")"
    check "$desc: the line says why ($out)" grep -q -- "$pat" <<<"$out"
    check "$desc: no mount left" _tap_unmounted "$TEST_TMP/m0"
}
one_line_failure "unreachable endpoint" \
    "^etcdfs: cannot connect to \(http://\)\?127.0.0.1:1: connection refused" \
    --endpoints=127.0.0.1:1 "$TEST_TMP/m0"
one_line_failure "missing mount point" "^etcdfs: bad mount point .*No such file" \
    --endpoints=127.0.0.1:1 "$TEST_TMP/nope"
touch "$TEST_TMP/afile"
one_line_failure "mount point is a file" "^etcdfs: bad mount point .*Not a directory" \
    --endpoints=127.0.0.1:1 "$TEST_TMP/afile"

# ---- against etcd with auth
etcd_start --auth || { not_ok "etcd starts"; done_testing; }
ok "etcd with auth started"
etcd_client_args
ectl put /registry/pods/a pod-a >/dev/null
ectl put /registry/services/s svc >/dev/null
ectl put /other outside >/dev/null

# daemon_pid MNT: the etcdfs process serving MNT.
daemon_pid() {
    local p mnt
    mnt=$(realpath -m -- "$1")
    for p in /proc/[0-9]*; do
        tr '\0' '\n' 2>/dev/null <"$p/cmdline" | grep -qx -- "$mnt" || continue
        tr '\0' '\n' 2>/dev/null <"$p/cmdline" | head -n1 | grep -q etcdfs || continue
        echo "${p#/proc/}"
        return 0
    done
    return 1
}
pid_gone() { ! kill -0 "$1" 2>/dev/null; }
kill_quiet() { kill -KILL "$1" 2>/dev/null || true; }

one_line_failure "wrong password" "^etcdfs: cannot connect to .*" \
    --endpoints="$ETCD_ENDPOINTS" --user=root:wrong "$TEST_TMP/m0"
one_line_failure "user without a password and no terminal" "password" \
    --endpoints="$ETCD_ENDPOINTS" --user=root "$TEST_TMP/m0"

# Ready on exit: the mount answers the moment etcdfs returns 0.
M1=$TEST_TMP/m1
mkdir -p "$M1"
at_exit umount_etcdfs "$M1"
tap_guard fusermount3 -uz -- "$M1"
"$ETCDFS" --endpoints="$ETCD_ENDPOINTS" --user=root --password=rootpw "$M1" </dev/null
rc=$?
check_eq "daemonized mount exits 0" 0 "$rc"
check "mounted as soon as etcdfs returned" is_mounted "$M1"
check_eq "and answering at once" "outside" "$(cat "$M1/other" 2>&1)"
pid=$(daemon_pid "$M1")
check "the daemon is running" test -n "$pid"
check "the password is not in /proc/PID/cmdline" \
    eval "! tr '\\0' ' ' </proc/$pid/cmdline | grep -q rootpw"
check "the daemon has no controlling terminal stdio" \
    test "$(readlink /proc/"$pid"/fd/1)" = /dev/null
kill -TERM "$pid"
check "SIGTERM unmounts" wait_until 10 _tap_unmounted "$M1"
check "SIGTERM ends the daemon" wait_until 10 pid_gone "$pid"

# fusermount3 -u; credentials from the environment; ETCDCTL_ENDPOINTS
ETCDCTL_ENDPOINTS=$ETCD_ENDPOINTS ETCDCTL_USER=root ETCDCTL_PASSWORD=rootpw \
    "$ETCDFS" "$M1" </dev/null
check_eq "ETCDCTL_ENDPOINTS/USER/PASSWORD from the environment" "pod-a" \
    "$(cat "$M1/registry/pods/a" 2>&1)"
pid=$(daemon_pid "$M1")
check "fusermount3 -u" fusermount3 -u "$M1"
check "fusermount3 -u ends the daemon" wait_until 10 pid_gone "$pid"

# fstab form: everything in -o
"$ETCDFS" -o "endpoints=$ETCD_ENDPOINTS,user=root:rootpw,noatime" "$M1" </dev/null
check_eq "-o endpoints=...,user=... (fstab form)" "svc" "$(cat "$M1/registry/services/s" 2>&1)"
pid=$(daemon_pid "$M1")
check "-o password scrubbed from /proc/PID/cmdline" \
    eval "! tr '\\0' ' ' </proc/$pid/cmdline | grep -q rootpw"
umount_etcdfs "$M1"

# --prefix
mount_etcdfs "$M1" "${ETCD_CLIENT_ARGS[@]}" --prefix=/registry || not_ok "prefix mount"
check_eq "--prefix=/registry shows only that subtree" "pods services" \
    "$(ls "$M1" | tr '\n' ' ' | sed 's/ $//')"
check_eq "--prefix: paths are relative to it" "pod-a" "$(cat "$M1/pods/a")"
echo new >"$M1/pods/b"
check_eq "--prefix: writes land under it" "new" \
    "$(ectl get /registry/pods/b --print-value-only | head -c -1)"
umount_etcdfs "$M1"

# -f: stays in the foreground; SIGINT unmounts and exits 0. Job control (set -m) so that the
# background job does not start with SIGINT ignored, as non-interactive shells do.
set -m
"$ETCDFS" -f --endpoints="$ETCD_ENDPOINTS" "${ETCD_CLIENT_ARGS[@]}" "$M1" </dev/null \
    >"$TEST_TMP/fg.log" 2>&1 &
fg=$!
set +m
at_exit kill_quiet "$fg"
check "-f: mounted" wait_until 15 is_mounted "$M1"
check "-f: the process stays" kill -0 "$fg"
kill -INT "$fg"
if wait_until 10 pid_gone "$fg"; then
    wait "$fg"
    check_eq "-f: SIGINT exits 0" 0 "$?"
else
    not_ok "-f: SIGINT ends etcdfs"
    kill -KILL "$fg"
fi
check "-f: SIGINT unmounted" wait_until 5 _tap_unmounted "$M1"

# -d: logs operations and keys, never values
"$ETCDFS" -d --endpoints="$ETCD_ENDPOINTS" "${ETCD_CLIENT_ARGS[@]}" "$M1" </dev/null \
    >"$TEST_TMP/debug.log" 2>&1 &
dbg=$!
at_exit kill_quiet "$dbg"
if wait_until 15 is_mounted "$M1"; then
    echo secret-value-xyz >"$M1/dbgfile"
    cat "$M1/dbgfile" >/dev/null
    check "-d logs operations" grep -q "dbgfile" "$TEST_TMP/debug.log"
    check "-d never logs values" eval "! grep -q secret-value-xyz '$TEST_TMP/debug.log'"
else
    not_ok "-d mount"
fi
kill -TERM "$dbg"
check "SIGTERM ends a -d mount" wait_until 10 pid_gone "$dbg"
check "no mount left" _tap_unmounted "$M1"
done_testing
