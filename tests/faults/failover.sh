#!/bin/bash
# failover.sh — three members behind proxies, the mount uses all three: the member in use is
# blackholed, then SIGSTOPped, then killed; each time the mount moves to another member (figure:
# failover time), keys put meanwhile straight to the members all show, each exactly once
# (inotify: one IN_CREATE per key), and writes through the mount work on the new member.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ -e /dev/fuse ] || skip_all "no /dev/fuse"
faults_start 3 || { not_ok "cluster and proxies start"; done_testing; }

MNT=$TEST_TMP/mnt
LIMIT=12   # s: keepalive (5.5 s idle + 2.5 s PING timeout) + dial timeout + margin
ectl put /f/seed 0 >/dev/null
mount_faults "$MNT" || { not_ok "mount through proxies"; done_testing; }
ok "mounted through three proxies"
wait_until 5 in_use || diag "no connection found"
diag "in use: proxy $(in_use)"

inotifywait -m -r -e create -e moved_to --format '%w%f' "$MNT/f" >"$TEST_TMP/inotify.log" \
    2>"$TEST_TMP/inotify.err" &
INW=$!
at_exit kill "$INW"
wait_until 5 grep -q 'Watches established' "$TEST_TMP/inotify.err"

round=0
# fault NAME CMD_TO_BREAK CMD_TO_REPAIR: break the member in use, put keys straight to the
# others while the mount moves, check all are seen, write through the mount, repair.
fault() {
    local name=$1 brk=$2 fix=$3 u t0 t1 i k last
    round=$((round + 1))
    u=$(in_use) || { not_ok "$name: a member is in use"; return; }
    DOWN="$u"
    t0=$(now_ms)
    $brk "$u"
    for ((i = 1; i <= 20; i++)); do   # keys changed while the mount is cut off
        # The fault may cost the cluster its leader for a moment: retry until etcd has it.
        wait_until 10 ectl_up put "/f/r$round-$i" "v$i" || diag "put r$round-$i failed"
        sleep 0.05
    done
    last="$MNT/f/r$round-20"
    if wait_until $LIMIT has "$last" v20; then
        t1=$(now_ms)
        ok "$name: the watch resumed on another member ($((t1 - t0)) ms after the fault)"
        echo "$name $((t1 - t0))" >>"$TEST_TMP/figures"
    else
        not_ok "$name: the watch resumed within $LIMIT s"
        diag "$(tail -n 5 "$ETCDFS_LOG")"
    fi
    local missing=0
    for ((i = 1; i <= 20; i++)); do has "$MNT/f/r$round-$i" "v$i" || missing=$((missing + 1)); done
    check_eq "$name: all 20 keys put meanwhile are there" 0 "$missing"
    check "$name: now connected to another member" wait_until 2 not_in_use "$u"
    check "$name: a write through the mount succeeds" \
        bash -c "printf w$round >'$MNT/f/w$round'"
    check_eq "$name: ... and is in etcd" "w$round" "$(ectl_up get --print-value-only "/f/w$round")"
    $fix "$u"
    DOWN=""
}

bh() { proxy_set "$1" blackhole; }
unbh() { proxy_set "$1" pass; }
fault "blackholed member" bh unbh
fault "SIGSTOPped member" etcd_pause etcd_resume
fault "killed member" etcd_kill etcd_restart
# After the restart all three answer again: the mount keeps working.
ectl put /f/after 1 >/dev/null
check "after the faults a remote put still shows" wait_until 5 has "$MNT/f/after" 1

kill "$INW" 2>/dev/null; wait "$INW" 2>/dev/null
dups=$(sort "$TEST_TMP/inotify.log" | uniq -d | head -n 5)
check_eq "no key created twice (inotify saw each IN_CREATE once)" "" "$dups"
seen=$(grep -c '/f/r[0-9]' "$TEST_TMP/inotify.log")
check_eq "inotify saw every remote key once" 60 "$seen"
diag "failover times (ms): $(tr '\n' ';' <"$TEST_TMP/figures")"
done_testing
