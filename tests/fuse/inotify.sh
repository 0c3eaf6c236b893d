#!/bin/bash
# inotify.sh — changes made by any etcd client reach `inotifywait -m -r` on a mount (the echo
# thread replays them: IN_MODIFY/IN_CLOSE_WRITE, IN_CREATE [IN_ISDIR], IN_DELETE [IN_ISDIR]),
# local writes raise their events once and the echo never writes to etcd; a burst does not
# stall the mount; MNT/.cluster/events streams one line per change to every reader, with a
# per-reader OVERFLOW, and a killed reader leaves nothing behind.
# shellcheck shell=bash
_src=${ETCDFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
source "$_src/tests/fixture/lib.sh"
source "$_src/tests/fixture/etcd.sh"

[ -e /dev/fuse ] || skip_all "no /dev/fuse"
command -v inotifywait >/dev/null || skip_all "no inotifywait (inotify-tools)"
etcd_start || { not_ok "etcd starts"; done_testing; }

MNT=$TEST_TMP/mnt
EV=$TEST_TMP/inotify.log
T=5          # seconds an event may take to show (generous: the target is milliseconds)

ectl put /w/a old >/dev/null
ectl put /w/keep k >/dev/null
mount_etcdfs "$MNT" || { not_ok "mount"; done_testing; }
ok "mounted"

# ---- the watcher
start_watch() {
    : >"$EV"
    inotifywait -m -r -q --format '%e %w%f' -o "$EV" "$MNT/w" 2>"$TEST_TMP/inotifywait.err" &
    WATCH_PID=$!
    at_exit quiet_kill "$WATCH_PID"
    wait_until 5 probe_watch      # reading a file raises IN_OPEN once the watch is in place
}
probe_watch() {
    cat "$MNT/w/keep" >/dev/null
    grep -q " $MNT/w/keep\$" "$EV"
}
# seen EVENTS PATH: the log has a line "EVENTS MNT/PATH" (EVENTS exactly as inotifywait prints).
seen() { grep -qxF -- "$1 $MNT/$2" "$EV"; }
count() { grep -cxF -- "$1 $MNT/$2" "$EV"; }
count_is() { [ "$(count "$1" "$2")" -eq "$3" ]; }
events_of() { grep -F -- " $MNT/$1" "$EV" | awk '{print $1}' | tr '\n' ' '; }
rev() { ectl get /w/keep -w json | sed -n 's/.*"revision":\([0-9]*\).*/\1/p'; }
quiet_kill() { kill "$@" 2>/dev/null; wait "$@" 2>/dev/null; true; }
# blocked_in_read PID: the process sleeps in read(2) (x86-64: syscall 0; elsewhere: any sleep).
blocked_in_read() {
    local sc
    read -r sc _ <"/proc/$1/syscall" 2>/dev/null || return 1
    [ "$(uname -m)" != x86_64 ] && [ "$sc" != running ] && return 0
    [ "$sc" = 0 ]
}

start_watch || { not_ok "inotifywait watches the mount"; done_testing; }
ok "inotifywait watches the mount"
: >"$EV"

# ---- remote put of an existing key
ectl put /w/a "new value" >/dev/null
check "remote put: IN_MODIFY on the file" wait_until $T seen MODIFY w/a
check "remote put: IN_CLOSE_WRITE on the file" wait_until $T seen CLOSE_WRITE,CLOSE w/a
check_eq "... and the mount reads the new value" "new value" "$(cat "$MNT/w/a")"

# ---- remote put of a new key
ectl put /w/b fresh >/dev/null
check "new key: IN_CREATE in its directory" wait_until $T seen CREATE w/b
check "new key: then IN_CLOSE_WRITE" wait_until $T seen CLOSE_WRITE,CLOSE w/b
check_eq "... CREATE comes before CLOSE_WRITE" "CREATE" "$(events_of w/b | awk '{print $1}')"
check_eq "... and reads back" fresh "$(cat "$MNT/w/b")"

# ---- a new prefix three levels deep, then a file in it
ectl put /w/p/q/r/f deep >/dev/null
check "new prefix: IN_CREATE|IN_ISDIR for level 1" wait_until $T seen CREATE,ISDIR w/p
check "... level 2" wait_until $T seen CREATE,ISDIR w/p/q
check "... level 3" wait_until $T seen CREATE,ISDIR w/p/q/r
check "... inotifywait -r followed in: IN_CREATE of the file" wait_until $T seen CREATE w/p/q/r/f
check "... and its IN_CLOSE_WRITE" wait_until $T seen CLOSE_WRITE,CLOSE w/p/q/r/f
check_eq "... the value" deep "$(cat "$MNT/w/p/q/r/f")"

# ---- deletes
ectl del /w/b >/dev/null
check "remote delete: IN_DELETE in its directory" wait_until $T seen DELETE w/b
check "... and the file is gone" wait_until $T test ! -e "$MNT/w/b"
ectl del /w/p/q/r/f >/dev/null
check "delete emptying a prefix: IN_DELETE of the file" wait_until $T seen DELETE w/p/q/r/f
check "... IN_DELETE|IN_ISDIR for each emptied level" \
    wait_until $T eval 'seen DELETE,ISDIR w/p/q/r && seen DELETE,ISDIR w/p/q && seen DELETE,ISDIR w/p'
check "... and they are gone" wait_until $T test ! -e "$MNT/w/p"

# ---- DeleteRange of 50 keys: one IN_DELETE each
for i in $(seq 1 50); do printf 'put /w/m/k%02d v%d\n' "$i" "$i"; done >"$TEST_TMP/txn1"
txn_file() { { echo; cat "$1"; echo; echo; } | ectl txn >/dev/null; }
head -n 25 "$TEST_TMP/txn1" >"$TEST_TMP/t1"; tail -n 25 "$TEST_TMP/txn1" >"$TEST_TMP/t2"
# The directory first: a watcher can only follow into it once it has read its IN_CREATE, and
# this case is about the 50 files, not about racing inotifywait -r (covered above).
ectl put /w/m/seed v0 >/dev/null
check "the directory of the 50 keys is watched" wait_until $T seen CREATE,ISDIR w/m
txn_file "$TEST_TMP/t1"; txn_file "$TEST_TMP/t2"
all_created() { [ "$(grep -c "^CREATE $MNT/w/m/k" "$EV")" -eq 50 ]; }
check "50 new keys: 50 IN_CREATE" wait_until $T all_created
ectl del --prefix /w/m/ >/dev/null
all_deleted() { [ "$(grep -c "^DELETE $MNT/w/m/k" "$EV")" -eq 50 ]; }
check "del --prefix of 50 keys: 50 IN_DELETE" wait_until $T all_deleted
check "... and IN_DELETE|IN_ISDIR of their directory" wait_until $T seen DELETE,ISDIR w/m

# ---- a local write: its own events once, no echo, one Put
# From the next revision on: etcdctl watch has no "ready" signal, --rev makes it lose nothing.
from=$(($(rev) + 1))      # expanded here: a background command expands its words later
_etcd_ctl_for all 1
"${_etcd_ctl[@]}" watch --prefix /w/l --rev=$from >"$TEST_TMP/watch.log" 2>&1 &
WPID=$!
at_exit quiet_kill "$WPID"
ectl put /w/l/x 1 >/dev/null      # an existing file to write to
check "local test file appears" wait_until $T seen CLOSE_WRITE,CLOSE w/l/x
: >"$EV"
echo local >"$MNT/w/l/x"
# A barrier: a remote put after the local one; once its echo is seen, any echo of the local
# write (the watch delivers in revision order) would have been seen too.
ectl put /w/barrier 1 >/dev/null
check "barrier event seen" wait_until $T seen CLOSE_WRITE,CLOSE w/barrier
check_eq "local echo > f: exactly one IN_CLOSE_WRITE" 1 "$(count CLOSE_WRITE,CLOSE w/l/x)"
m=$(count MODIFY w/l/x)
if [ "$m" -ge 1 ] && [ "$m" -le 2 ]; then ok "... IN_MODIFY from the write itself ($m, as on tmpfs: truncate + write)"
else not_ok "... IN_MODIFY count $m"; diag "$(cat "$EV")"; fi
puts_of_x() { grep -c '^PUT$' "$TEST_TMP/watch.log"; }
check "the watch saw the Puts" wait_until $T eval '[ "$(puts_of_x)" -ge 2 ]'
check_eq "... exactly one Put for the local write (2 with the setup Put)" 2 "$(puts_of_x)" || diag "$(cat "$TEST_TMP/watch.log")"

# ---- the echo never writes to etcd
r0=$(rev)
ectl put /w/a again >/dev/null
ectl put /w/new2 n >/dev/null
ectl del /w/new2 >/dev/null
check "echoes done" wait_until $T seen DELETE w/new2
check_eq "revision moved by exactly the 3 remote changes (echo wrote nothing)" $((r0 + 3)) "$(rev)"

# ---- a burst of 2,000 remote puts does not stall the mount
for t in $(seq 0 15); do
    for i in $(seq 1 125); do printf 'put /w/burst/k%d-%d v\n' "$t" "$i"; done >"$TEST_TMP/b$t"
done
( for t in $(seq 0 15); do txn_file "$TEST_TMP/b$t"; done ) &
BPID=$!
worst=0
while kill -0 "$BPID" 2>/dev/null; do
    s=${EPOCHREALTIME/[.,]/}
    timeout 5 ls "$MNT/w" >/dev/null
    e=$(( (${EPOCHREALTIME/[.,]/} - s) / 1000 ))
    [ "$e" -gt "$worst" ] && worst=$e
    sleep 0.05
done
wait "$BPID"
diag "slowest ls during the burst: ${worst} ms"
if [ "$worst" -lt 1000 ]; then ok "ls answers within 1 s during a 2,000-put burst"; else not_ok "ls took ${worst} ms"; fi
burst_done() { [ "$(grep -c "^CREATE $MNT/w/burst/k" "$EV")" -eq 2000 ]; }
check "all 2,000 IN_CREATE arrive" wait_until 30 burst_done

# ---- open reader during a remote change: old or new value, whole
ectl put /w/big "$(head -c 100000 /dev/zero | tr '\0' a)" >/dev/null
check "big value visible" wait_until $T eval '[ "$(stat -c %s "$MNT/w/big")" = 100000 ]'
exec {rfd}<"$MNT/w/big"
head -c 1000 <&$rfd >/dev/null
ectl put /w/big "$(head -c 60000 /dev/zero | tr '\0' b)" >/dev/null
wait_until $T seen CLOSE_WRITE,CLOSE w/big
rest=$(cat <&$rfd | tr -d a | wc -c)
exec {rfd}<&-
check_eq "a reader opened before the change reads the old value whole" 0 "$rest"

# ---- .cluster/events
if [ -e "$MNT/.cluster/events" ]; then
    exec {e1}<"$MNT/.cluster/events"
    exec {e2}<"$MNT/.cluster/events"
    exec {e3}<"$MNT/.cluster/events"       # never read: must overflow alone
    cat <&$e1 >"$TEST_TMP/ev1" &
    C1=$!
    cat <&$e2 >"$TEST_TMP/ev2" &
    C2=$!
    at_exit quiet_kill "$C1" "$C2"
    ectl put /w/s/one 1 >/dev/null
    ectl put /w/s/one 2 >/dev/null
    ectl del /w/s/one >/dev/null
    echo loc >"$MNT/w/s2"
    three() { [ "$(wc -l <"$1")" -ge 4 ]; }
    check "events: reader 1 gets the lines" wait_until $T three "$TEST_TMP/ev1"
    check "events: reader 2 gets them" wait_until $T three "$TEST_TMP/ev2"
    check_eq "... the same lines" "$(cat "$TEST_TMP/ev1")" "$(cat "$TEST_TMP/ev2")"
    r=$(ectl get /w/s2 -w json | sed -n 's/.*"mod_revision":\([0-9]*\).*/\1/p')
    check "... PUT /w/s/one REV, twice" eval '[ "$(grep -c "^PUT /w/s/one [0-9]*$" "$TEST_TMP/ev1")" = 2 ]'
    check "... DELETE /w/s/one REV" grep -q "^DELETE /w/s/one [0-9]*$" "$TEST_TMP/ev1"
    check "... the local write too: PUT /w/s2 $r" grep -qx "PUT /w/s2 $r" "$TEST_TMP/ev1"
    # overflow: 70,000 lines for the reader that never reads
    for t in $(seq 0 63); do
        for i in $(seq 1 125); do printf 'put /w/o/k%d-%d v\n' "$t" "$i"; done >"$TEST_TMP/o$t"
    done
    for r in 1 2 3 4 5 6 7 8 9; do for t in $(seq 0 63); do txn_file "$TEST_TMP/o$t"; done; done
    want=$((9 * 64 * 125 + 4))
    check "events: the reading readers get all $want lines" \
        wait_until 60 eval '[ "$(wc -l <"$TEST_TMP/ev1")" -ge $want ] && [ "$(wc -l <"$TEST_TMP/ev2")" -ge $want ]'
    check "... no OVERFLOW for them" eval '! grep -q OVERFLOW "$TEST_TMP/ev1" "$TEST_TMP/ev2"'
    timeout 5 head -c 5000000 <&$e3 >"$TEST_TMP/ev3" 2>/dev/null
    check "the reader that never read gets OVERFLOW" grep -qx OVERFLOW "$TEST_TMP/ev3"
    exec {e3}<&-
    quiet_kill "$C1" "$C2"
    exec {e1}<&- {e2}<&-
    # a killed reader: nothing hangs, the mount stays
    cat "$MNT/.cluster/events" >/dev/null &
    K=$!
    check "a reader blocks in read(2) on .cluster/events" wait_until $T blocked_in_read "$K"
    kill -9 "$K"
    check "a killed blocked reader goes away" wait_until $T eval '! kill -0 '"$K"' 2>/dev/null'
    check "... and the mount still answers" timeout 5 ls "$MNT/w"
    # 16 readers is the limit; closed ones give their slot back
    for i in $(seq 1 5); do timeout 0.3 cat "$MNT/.cluster/events" >/dev/null; done
    check "released readers free their slots" timeout 2 bash -c "exec 9<'$MNT/.cluster/events'"
else
    not_ok "MNT/.cluster/events exists"
fi

umount_etcdfs "$MNT"
check "unmounts cleanly" _tap_unmounted "$MNT"
done_testing
