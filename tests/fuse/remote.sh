#!/bin/bash
# remote.sh — changes made by another etcd client show through a mount within 1 s: puts of
# existing and new keys, new deep prefixes, deletes (files and emptied directories vanish),
# DeleteRange, a Txn over several keys, a value changing under an open reader (whole old or whole
# new value, never a mix), and the put → visible latency over 50 puts (p50, p90, max).
# shellcheck shell=bash
_src=${ETCDFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
source "$_src/tests/fixture/lib.sh"
source "$_src/tests/fixture/etcd.sh"

[ -e /dev/fuse ] || skip_all "no /dev/fuse"
etcd_start || { not_ok "etcd starts"; done_testing; }

MNT=$TEST_TMP/mnt
VISIBLE=1    # seconds a remote change may take to show (times ETCDFS_TIMEOUT_MULT)
VISIBLE_US=$(awk -v m="${ETCDFS_TIMEOUT_MULT:-1}" -v t=$VISIBLE 'BEGIN { printf "%.0f", t * m * 1000000 }')

# content PATH: the whole file, read by bash itself (no fork; trailing newlines kept).
content() { local v; IFS= read -r -d '' v <"$1"; printf '%s' "$v"; }
has() { [ "$(content "$1")" == "$2" ]; }
size_is() { [ "$(stat -c %s -- "$1")" == "$2" ]; }
# shellcheck disable=SC2010 # readdir is what is tested
listed() { ls -a -- "$1" | grep -qxF -- "$2"; }
gone() { [ ! -e "$1" ] && [ ! -L "$1" ]; }
not_listed() { ! listed "$1" "$2"; }
count_is() { [ "$(find "$1" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" = "$2" ]; }
# txn LINES...: one etcdctl txn with these success operations.
txn() { printf '\n%s\n\n\n' "$(printf '%s\n' "$@")" | ectl txn >/dev/null; }

ectl put /r/x old >/dev/null
ectl put /r/keep k >/dev/null
mount_etcdfs "$MNT" || { not_ok "mount"; done_testing; }
ok "mounted"
check_eq "initial value" old "$(content "$MNT/r/x")"

# ---- puts
ectl put /r/x "a new, longer value" >/dev/null
check "remote put of an existing key: cat shows it" wait_until $VISIBLE has "$MNT/r/x" "a new, longer value"
check "... and st_size follows" wait_until $VISIBLE size_is "$MNT/r/x" 19
ectl put /r/x "short" >/dev/null
check "a shorter value: cat" wait_until $VISIBLE has "$MNT/r/x" short
check "a shorter value: st_size" wait_until $VISIBLE size_is "$MNT/r/x" 5
ectl put /r/y "new key" >/dev/null
check "new key in an existing directory: readdir lists it" wait_until $VISIBLE listed "$MNT/r" y
check_eq "... and cat reads it" "new key" "$(content "$MNT/r/y")"
ectl put /r/p/q/s/t deep >/dev/null
check "new prefix 4 levels deep: ls shows the new directory" wait_until $VISIBLE listed "$MNT/r" p
check "... every level is a directory" test -d "$MNT/r/p" -a -d "$MNT/r/p/q" -a -d "$MNT/r/p/q/s"
check_eq "... ls of each level" "q s t" "$(ls "$MNT/r/p") $(ls "$MNT/r/p/q") $(ls "$MNT/r/p/q/s")"
check_eq "... the value" deep "$(content "$MNT/r/p/q/s/t")"
ectl put /r/p/q/s2 beside >/dev/null
check "a second key in the new prefix" wait_until $VISIBLE has "$MNT/r/p/q/s2" beside

# ---- deletes
ectl del /r/y >/dev/null
check "remote delete: the file disappears" wait_until $VISIBLE gone "$MNT/r/y"
check "... and readdir no longer lists it" not_listed "$MNT/r" y
ectl del /r/p/q/s/t >/dev/null
check "delete of the last key of a prefix: its directory disappears" \
    wait_until $VISIBLE gone "$MNT/r/p/q/s"
check "... the parent with another key stays" test -f "$MNT/r/p/q/s2"
ectl del /r/p/q/s2 >/dev/null
check "delete of the last key under several levels: all of them go" wait_until $VISIBLE gone "$MNT/r/p"
check "... readdir agrees" not_listed "$MNT/r" p

# ---- DeleteRange of many keys
ops=()
for i in $(seq -w 1 100); do ops+=("put /r/many/k$i v$i"); done
txn "${ops[@]}"
check "100 keys made by one txn are listed" \
    wait_until $VISIBLE count_is "$MNT/r/many" 100
check_eq "... one of them reads back" v042 "$(content "$MNT/r/many/k042")"
ectl del --prefix /r/many/ >/dev/null
check "del --prefix of 100 keys: the directory disappears" wait_until $VISIBLE gone "$MNT/r/many"
check "... other keys stay" test -f "$MNT/r/keep" -a -f "$MNT/r/x"

# ---- txn over several keys
ectl put /r/t3 doomed >/dev/null
wait_until $VISIBLE test -f "$MNT/r/t3"
txn "put /r/t1 one" "put /r/t2 two" "del /r/t3" "put /r/x from-txn"
check "txn: new key t1" wait_until $VISIBLE has "$MNT/r/t1" one
check "txn: new key t2" wait_until $VISIBLE has "$MNT/r/t2" two
check "txn: deleted key t3 is gone" wait_until $VISIBLE gone "$MNT/r/t3"
check "txn: modified key x" wait_until $VISIBLE has "$MNT/r/x" from-txn

# ---- a value changing under an open reader
old=$(head -c 100000 /dev/zero | tr '\0' a)
new=$(head -c 60000 /dev/zero | tr '\0' b)
ectl put /r/big "$old" >/dev/null
wait_until $VISIBLE size_is "$MNT/r/big" 100000
exec 3<"$MNT/r/big"
check_eq "an open reader reads the first 4 KB" "$(head -c 4096 <<<"$old")" \
    "$(dd bs=4096 count=1 status=none <&3)"
ectl put /r/big "$new" >/dev/null
check "the new value shows through a fresh open" wait_until $VISIBLE has "$MNT/r/big" "$new"
# perl shares fd 3's open file description: rewind it and read the whole file again.
got=$(perl -e 'sysseek(STDIN, 0, 0) or die "lseek: $!"; local $/; print scalar <STDIN>' <&3)
exec 3<&-
if [ "$got" == "$old" ]; then
    ok "the open reader rereads one whole value (the old one)"
elif [ "$got" == "$new" ]; then
    ok "the open reader rereads one whole value (the new one)"
else
    not_ok "the open reader rereads one whole value, old or new"
    diag "got ${#got} bytes: $(tr -s 'ab' <<<"$got" | head -c 40) (old: 100000 a, new: 60000 b)"
fi

# ---- latency of remote put → visible, over 50 puts
lat=() slow=0
for i in $(seq 1 50); do
    ectl put /r/lat "value $i" >/dev/null
    t0=${EPOCHREALTIME/[.,]/}
    limit=$((t0 + VISIBLE_US))
    until [ "$(content "$MNT/r/lat" 2>/dev/null)" == "value $i" ]; do
        [ "${EPOCHREALTIME/[.,]/}" -gt "$limit" ] && break
    done
    t1=${EPOCHREALTIME/[.,]/}
    if [ "$(content "$MNT/r/lat" 2>/dev/null)" != "value $i" ]; then
        slow=$((slow + 1)) t1=$limit
        diag "put $i not visible after ${VISIBLE} s: cat gives '$(content "$MNT/r/lat" 2>&1)'," \
            "st_size $(stat -c %s "$MNT/r/lat" 2>&1);" \
            "$(wait_until 5 has "$MNT/r/lat" "value $i" && echo "shown within 5 s more" ||
                echo "still not shown 5 s later")"
        diag "  etcd has '$(ectl get /r/lat --print-value-only)' at mod_revision" \
            "$(ectl get /r/lat -w json | grep -o '"mod_revision":[0-9]*' | cut -d: -f2);" \
            "the mount's user.etcd.mod_revision: $(getfattr --absolute-names --only-values \
                -n user.etcd.mod_revision "$MNT/r/lat" 2>&1);" \
            "O_DIRECT read: '$(dd if="$MNT/r/lat" iflag=direct bs=4096 status=none 2>&1)'"
    fi
    lat+=($((t1 - t0)))
done
sorted=$(printf '%s\n' "${lat[@]}" | sort -n)
p50=$(sed -n 25p <<<"$sorted") p90=$(sed -n 45p <<<"$sorted") max=$(tail -n 1 <<<"$sorted")
diag "remote put → visible (after etcdctl returned), 50 puts: p50 $((p50 / 1000)) ms," \
    "p90 $((p90 / 1000)) ms, max $((max / 1000)) ms"
check_eq "every one of 50 remote puts visible within ${VISIBLE} s" 0 "$slow"

umount_etcdfs "$MNT"
check "unmounted" _tap_unmounted "$MNT"
done_testing
