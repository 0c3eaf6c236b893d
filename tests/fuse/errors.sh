#!/bin/bash
# errors.sh — how failures reach programs: EPERM for links and special files (etcd untouched),
# EROFS on -o ro, EFBIG for a value over etcd's request limit (old value kept), ENOSPC once the
# space quota alarm is raised, EIO within the deadline once etcd is gone.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/../fixture/etcd.sh"

[ -e /dev/fuse ] || skip_all "no /dev/fuse"
command -v fusermount3 >/dev/null || skip_all "no fusermount3"
etcd_start --quota $((8 * 1024 * 1024)) || { not_ok "etcd starts"; done_testing; }

MNT=$TEST_TMP/mnt
RO=$TEST_TMP/ro
value() { ectl get "$1" --print-value-only | head -c -1; }
absent() { [ -z "$(ectl get "$1" --keys-only)" ]; }
store_rev() { ectl get /keep -w json | grep -o '"revision":[0-9]*' | head -n1 | cut -d: -f2; }
# fails_with MSG CMD...: CMD fails and its stderr says MSG.
fails_with() {
    local msg=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "succeeded: $*"
        return 1
    fi
    grep -q -- "$msg" <<<"$out" || { echo "wrong error: $out"; return 1; }
}

ectl put /keep kept >/dev/null
mount_etcdfs "$MNT" --command-timeout=2s || { not_ok "mount"; done_testing; }
MNT_LOG=$ETCDFS_LOG
mount_etcdfs "$RO" -o ro || { not_ok "read-only mount"; done_testing; }
ok "mounted rw and ro"

# ---- EPERM: nothing etcd could store
rev0=$(store_rev)
check "mkfifo: EPERM" fails_with "Operation not permitted" mkfifo "$MNT/fifo"
check "ln -s: EPERM" fails_with "Operation not permitted" ln -s keep "$MNT/link"
check "ln (hard link): EPERM" fails_with "Operation not permitted" ln "$MNT/keep" "$MNT/hard"
if [ "$(id -u)" = 0 ]; then
    check "mknod of a device: EPERM" fails_with "Operation not permitted" \
        mknod "$MNT/dev" c 1 3
fi
check "no special file left behind" test ! -e "$MNT/fifo" -a ! -e "$MNT/link"
check_eq "etcd untouched by refused operations" "$rev0" "$(store_rev)"

# ---- EROFS
check "ro: the mount is read-only in the kernel" \
    awk -v m="$(realpath "$RO")" '$2 == m && $4 ~ /(^|,)ro(,|$)/ { f = 1 } END { exit !f }' \
    /proc/self/mounts
check_eq "ro: reads work" "kept" "$(cat "$RO/keep")"
check "ro: touch → EROFS" fails_with "Read-only file system" touch "$RO/new"
check "ro: echo > → EROFS" fails_with "Read-only file system" sh -c 'echo x >"$1"' _ "$RO/keep"
check "ro: cp → EROFS" fails_with "Read-only file system" cp /etc/hostname "$RO/keep"
check "ro: rm → EROFS" fails_with "Read-only file system" rm "$RO/keep"
check "ro: mkdir → EROFS" fails_with "Read-only file system" mkdir "$RO/d"
check "ro: mv → EROFS" fails_with "Read-only file system" mv "$RO/keep" "$RO/moved"
check "ro: setfattr refused" fails_with "" setfattr -n user.x -v 1 "$RO/keep"
check_eq "etcd untouched by the read-only mount" "$rev0" "$(store_rev)"

# ---- EFBIG: over etcd's 1.5 MiB request limit
head -c 1700000 /dev/zero | tr '\0' a >"$TEST_TMP/big"
check "a 1.6 MiB value fails with EFBIG" fails_with "File too large" cp "$TEST_TMP/big" "$MNT/big"
check "... and no key is created" absent /big
echo old >"$MNT/v"
check "a 1.6 MiB rewrite fails with EFBIG" fails_with "File too large" cp "$TEST_TMP/big" "$MNT/v"
check_eq "... and etcd keeps the old value" "old" "$(value /v)"
check_eq "... and so does the mount" "old" "$(cat "$MNT/v")"
check_eq "... and its size" 4 "$(stat -c %s "$MNT/v")"
check "the failed write is logged with its key" grep -q "write of /v failed: File too large" \
    "$MNT_LOG"
check "values never appear in the log" eval "! grep -q aaaaaaaaaaaaaaaa '$MNT_LOG'"

# ---- ENOSPC: fill the 8 MiB quota
mkdir -p "$MNT/fill"
head -c 1000000 /dev/urandom >"$TEST_TMP/chunk"
nospace=0
for i in $(seq 1 40); do
    if ! out=$(cp "$TEST_TMP/chunk" "$MNT/fill/$i" 2>&1); then
        grep -q "No space left on device" <<<"$out" && nospace=1
        diag "write $i failed: $out"
        break
    fi
done
check_eq "writes fail with ENOSPC once the quota is full" 1 "$nospace"
check "etcd raised the NOSPACE alarm" grep -q NOSPACE <<<"$(ectl alarm list)"
# cp, unlike a shell redirection, reports errors of close(2), where the value is saved.
echo new >"$TEST_TMP/new"
check "an edit of an existing file also fails with ENOSPC" \
    fails_with "No space left on device" cp "$TEST_TMP/new" "$MNT/v"
check_eq "... and the old value stays" "old" "$(value /v)"

# ---- EIO: etcd gone
etcd_kill 0
t0=$(date +%s)
check "a write with etcd down fails with EIO" \
    fails_with "Input/output error" cp "$TEST_TMP/new" "$MNT/after-kill"
elapsed=$(($(date +%s) - t0))
check "... within 15 s (took ${elapsed}s with --command-timeout=2s)" test "$elapsed" -le 15
check_eq "cached values stay readable" "kept" "$(cat "$MNT/keep")"

umount_etcdfs "$MNT"
umount_etcdfs "$RO"
check "unmounted" _tap_unmounted "$MNT"
done_testing
