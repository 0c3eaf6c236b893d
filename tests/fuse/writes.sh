#!/bin/bash
# writes.sh — what reaches etcd, watched with `etcdctl watch`: exactly one Put per save, none for
# cat or an unwritten open, no empty value before an O_TRUNC rewrite, the lease kept on edit;
# remote puts/deletes/new prefixes visible through the mount within 1 s; read-your-writes.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/../fixture/etcd.sh"

[ -e /dev/fuse ] || skip_all "no /dev/fuse"
command -v fusermount3 >/dev/null || skip_all "no fusermount3"
etcd_start || { not_ok "etcd starts"; done_testing; }

MNT=$TEST_TMP/mnt
WLOG=$TEST_TMP/watch.log
value() { ectl get "$1" --print-value-only | head -c -1; }

# Every event as "TYPE KEY VALUE" on one line (values here are single-line).
# Run etcdctl itself in the background (not the ectl function in a subshell), so that $! is
# etcdctl's pid and the cleanup ends it.
_etcd_ctl_for all 1
"${_etcd_ctl[@]}" watch --prefix / >"$WLOG" 2>&1 &
WATCH_PID=$!
at_exit kill "$WATCH_PID"
_sentinel=0
# sync_watch [TIMEOUT]: put a sentinel and wait until the watch shows it, so every earlier
# event is in the log (events arrive in revision order).
sync_watch() {
    _sentinel=$((_sentinel + 1))
    ectl put /zz-sentinel "s$_sentinel" >/dev/null
    wait_until "${1:-10}" grep -qx "s$_sentinel" "$WLOG"
}
# puts KEY: number of PUT events of KEY so far.
puts() {
    sync_watch
    awk -v k="$1" 'prev2 == "PUT" && prev1 == k { n++ } { prev2 = prev1; prev1 = $0 }
        END { print n + 0 }' "$WLOG"
}
# put_values KEY: the values put to KEY, one per line, in order ("<empty>" for "").
put_values() {
    sync_watch
    awk -v k="$1" 'p2 == "PUT" && p1 == k { print ($0 == "" ? "<empty>" : $0) }
        { p2 = p1; p1 = $0 }' "$WLOG"
}

# The watch starts from "now": sentinels put before it is established are never seen.
check "the watch is established" wait_until 15 sync_watch 0.5
mount_etcdfs "$MNT" || { not_ok "mount"; done_testing; }
ok "mounted"

# ---- one Put per save
echo hello >"$MNT/f"
check_eq "new file: one Put" 1 "$(puts /f)"
check_eq "new file: value" "hello" "$(value /f)"
echo world >"$MNT/f"
check_eq "rewrite (O_TRUNC + write): one more Put" 2 "$(puts /f)"
check_eq "O_TRUNC + write never puts an empty value first" "$(printf 'hello\nworld')" \
    "$(put_values /f)"
cat "$MNT/f" >/dev/null
cat "$MNT/f" >/dev/null
check_eq "cat never puts" 2 "$(puts /f)"
: >>"$MNT/f"
check_eq "an append-open that writes nothing never puts" 2 "$(puts /f)"
exec 3<>"$MNT/f"
exec 3>&-
check_eq "a read-write open that writes nothing never puts" 2 "$(puts /f)"
printf 'a\n' >>"$MNT/f"
check_eq "append: one Put" 3 "$(puts /f)"
check_eq "append: value" "$(printf 'world\na')" "$(value /f)"
seq 1 20000 >"$TEST_TMP/big"
cp "$TEST_TMP/big" "$MNT/f"
check_eq "cp over an existing file (many write calls): one Put" 4 "$(puts /f)"
check "cp: etcd has every byte" cmp <(value /f) "$TEST_TMP/big"
touch "$MNT/t"
check_eq "touch of a new file: one Put" 1 "$(puts /t)"
check_eq "touch puts an empty value" "<empty>" "$(put_values /t)"
touch "$MNT/t"
check_eq "touch of an existing file: no Put" 1 "$(puts /t)"
echo x >"$MNT/g"
: >"$MNT/g"
check_eq "': > f' on a non-empty file puts the empty value once" "$(printf 'x\n<empty>')" \
    "$(put_values /g)"
truncate -s 0 "$MNT/g"
check_eq "truncate to the same size: no Put" 2 "$(puts /g)"
{ echo part1; echo part2; } >"$MNT/h"
check_eq "several writes on one fd: one Put" 1 "$(puts /h)"
sh -c 'exec 4>"$1"; echo one >&4; echo two >&4; exec 4>&-' _ "$MNT/h"
check_eq "explicit open/write/write/close: one Put" 2 "$(puts /h)"

# ---- leases survive edits
lease_hex=$(ectl lease grant 600 | awk '{print $2}')
lease_dec=$((16#$lease_hex))
ectl put --lease="$lease_hex" /leased before >/dev/null
# A remote put reaches the mount through the watch: wait for it (bounded) before reading.
wait_until 5 test -e "$MNT/leased"
check_eq "the mount shows the lease" "$lease_dec" \
    "$(getfattr --absolute-names --only-values -n user.etcd.lease "$MNT/leased" 2>&1)"
echo after >"$MNT/leased"
check_eq "edited value stored" "after" "$(value /leased)"
check "the key keeps its lease after an edit" \
    grep -q "\"lease\":$lease_dec" <<<"$(ectl get /leased -w json)"

# ---- read-your-writes
for i in 1 2 3 4 5; do
    echo "v$i" >"$MNT/ryw"
    [ "$(cat "$MNT/ryw")" = "v$i" ] && [ "$(value /ryw)" = "v$i" ] || break
done
check_eq "read-your-writes through the mount and in etcd" "v5" "$(cat "$MNT/ryw")"

# ---- remote changes within 1 s
content_is() { [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }
gone() { ! test -e "$1"; }
listed() { ls "$(dirname "$1")" 2>/dev/null | grep -qx "$(basename "$1")"; }
check_eq "a cached value" "world" "$(echo world >"$MNT/r" && cat "$MNT/r")"
ectl put /r remote-value >/dev/null
check "a remote put is seen within 1 s (cached file)" wait_until 1 content_is "$MNT/r" remote-value
check_eq "... with its new size" 12 "$(stat -c %s "$MNT/r")"
check_fail "a name that does not exist yet" test -e "$MNT/later"
ectl put /later born >/dev/null
check "a remote new key is seen within 1 s (after a negative lookup)" \
    wait_until 1 content_is "$MNT/later" born
ls "$MNT" >/dev/null
ectl put /newprefix/deep/k v >/dev/null
check "a remote new prefix is listed within 1 s" wait_until 1 listed "$MNT/newprefix"
check "... and its key readable" wait_until 1 content_is "$MNT/newprefix/deep/k" v
ectl del /later >/dev/null
check "a remote delete is seen within 1 s" wait_until 1 gone "$MNT/later"
check "... and it leaves the listing" wait_until 1 eval '! ls "$MNT" | grep -qx later'
exec 5<"$MNT/r"
ectl put /r changed-again >/dev/null
check "a remote change while a file is open is seen by a new open" \
    wait_until 1 content_is "$MNT/r" changed-again
exec 5<&-

# ---- a save over a remote change: overwrite (default) or EBUSY with -o conflict=fail
# save_over_remote FILE KEY: opens FILE for append, lets etcdctl put KEY meanwhile, writes,
# closes; prints "closed" or the close error.
save_over_remote() {
    _etcd_ctl_for all 1
    perl -e 'open(my $f, ">>", shift) or die "open: $!\n"; system(@ARGV) == 0 or die "put\n";
             print $f "mine\n"; close($f) or die "close: $!\n"; print "closed\n"' \
        "$1" "${_etcd_ctl[@]}" put "$2" remote 2>&1
}
echo base >"$MNT/c"
check "default conflict=overwrite: the save wins" grep -q closed <<<"$(save_over_remote "$MNT/c" /c)"
check_eq "... with the buffer read at open" "$(printf 'base\nmine')" "$(value /c)"
MNT2=$TEST_TMP/mnt2
if mount_etcdfs "$MNT2" -o conflict=fail; then
    echo base >"$MNT2/c"
    out=$(save_over_remote "$MNT2/c" /c)
    check "conflict=fail: a save over a remote change fails with EBUSY" \
        grep -q "close: Device or resource busy" <<<"$out"
    check_eq "... and the remote value stays" "remote" "$(value /c)"
    echo again >"$MNT2/c"
    check_eq "conflict=fail: a save without a conflict works" "again" "$(value /c)"
    umount_etcdfs "$MNT2"
else
    not_ok "mount with -o conflict=fail"
fi

umount_etcdfs "$MNT"
check "unmounted" _tap_unmounted "$MNT"
done_testing
