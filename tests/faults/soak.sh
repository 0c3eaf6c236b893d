#!/bin/bash
# soak.sh — SOAK_SECONDS (60 in CI; `SOAK_SECONDS=300 tests/faults/soak.sh` is the full run) of
# mixed reads and writes through the mount and through etcdctl while faults are injected
# (proxy cut/delay/blackhole, member kill+restart, pause+resume; never two members at once).
# Afterwards: zero acknowledged writes lost (etcd holds, for each key, its last acknowledged
# value or a later attempted one), no key that was never written, and the mount equals etcd.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ -e /dev/fuse ] || skip_all "no /dev/fuse"
SOAK=${SOAK_SECONDS:-60}
faults_start 3 || { not_ok "cluster and proxies start"; done_testing; }
MNT=$TEST_TMP/mnt
mount_faults "$MNT" --command-timeout=4s || { not_ok "mount"; done_testing; }
ok "mounted; soaking for $SOAK s"
mkdir -p "$MNT/soak/m"
END=$(($(now_ms) + SOAK * 1000))
STOPF=$TEST_TMP/stop

# Writers log "tried KEY I" before and "acked KEY I" after a success; values are "v-I".
mount_writer() {
    local i=0 k
    while [ ! -e "$STOPF" ]; do
        i=$((i + 1)) k=$((i % 40))
        echo "tried m/$k $i" >>"$TEST_TMP/m.log"
        printf 'v-%d' "$i" >"$TEST_TMP/mv"
        timeout 20 cp "$TEST_TMP/mv" "$MNT/soak/m/$k" 2>/dev/null && echo "acked m/$k $i" >>"$TEST_TMP/m.log"
    done
}
ectl_writer() {
    local i=0 k
    while [ ! -e "$STOPF" ]; do
        i=$((i + 1)) k=$((i % 40))
        echo "tried e/$k $i" >>"$TEST_TMP/e.log"
        ectl put "/soak/e/$k" "v-$i" >/dev/null 2>&1 && echo "acked e/$k $i" >>"$TEST_TMP/e.log"
    done
}
reader() {
    while [ ! -e "$STOPF" ]; do
        timeout 10 cat "$MNT"/soak/m/* "$MNT"/soak/e/* >/dev/null 2>&1
        echo r >>"$TEST_TMP/r.log"
        sleep 0.05
    done
}
mount_writer & W1=$!
ectl_writer & W2=$!
reader & W3=$!
at_exit bash -c "touch '$STOPF'; kill $W1 $W2 $W3 2>/dev/null"

n=0
while [ "$(now_ms)" -lt "$END" ]; do
    m=$((RANDOM % 3)) n=$((n + 1))
    case $((n % 5)) in
    0) proxy_set "$m" cut; f="cut proxy $m" ;;
    1) proxy_set "$m" "delay 200"; wait_until 3 false; proxy_set "$m" pass; f="delay 200 ms on proxy $m" ;;
    2) u=$(in_use) || u=$m; proxy_set "$u" blackhole; wait_until 10 not_in_use "$u"; proxy_set "$u" pass; f="blackhole proxy $u" ;;
    3) etcd_kill "$m"; wait_until 2 false; etcd_restart "$m"; f="kill+restart member $m" ;;
    4) etcd_pause "$m"; wait_until 3 false; etcd_resume "$m"; f="pause member $m 3 s" ;;
    esac
    echo "$f" >>"$TEST_TMP/faults.log"
    wait_until 2 false
done
touch "$STOPF"
wait "$W1" "$W2" "$W3"
for i in 0 1 2; do proxy_set "$i" pass; done
diag "faults injected: $(wc -l <"$TEST_TMP/faults.log") ($(sort "$TEST_TMP/faults.log" | sed 's/ [0-9]*$//' | uniq -c | tr -s ' ' | tr '\n' ';'))"

# verify LOG PREFIX: lost acknowledged writes and unknown keys.
lost=0 unknown=0
for w in m e; do
    declare -A acked=() tried=()
    while read -r what key i; do
        [ "$what" = acked ] && acked[$key]=$i
        [ "$what" = tried ] && tried[$key]=$i
    done <"$TEST_TMP/$w.log"
    while IFS=$'\t' read -r key val; do
        key=${key#/soak/}
        [ -n "${tried[$key]:-}" ] || { unknown=$((unknown + 1)); diag "unknown key $key"; continue; }
        i=${val#v-}
        [ "$i" -ge "${acked[$key]:-0}" ] || { lost=$((lost + 1)); diag "lost: $key holds $i, acked ${acked[$key]}"; }
        unset "acked[$key]"
    done < <(ectl get --prefix "/soak/$w/" | paste - -)
    for key in "${!acked[@]}"; do lost=$((lost + 1)); diag "lost: $key missing"; done
    tr_=$(grep -c '^tried' "$TEST_TMP/$w.log"); ac_=$(grep -c '^acked' "$TEST_TMP/$w.log")
    diag "writes via $([ $w = m ] && echo mount || echo etcdctl): tried $tr_, acknowledged $ac_"
    unset acked tried
done
diag "reads through the mount: $(wc -l <"$TEST_TMP/r.log") rounds"
check_eq "zero acknowledged writes lost" 0 "$lost"
check_eq "no key that was never written" 0 "$unknown"
mount_state() { (cd "$MNT/soak" && find . -type f | while read -r f; do printf '%s=%s\n' "${f#./}" "$(content "$f")"; done) | LC_ALL=C sort; }
etcd_state() { ectl get --prefix /soak/ | paste - - | sed 's|^/soak/||; s|\t|=|' | LC_ALL=C sort; }
same() { [ "$(mount_state)" == "$(etcd_state)" ]; }
t0=$(now_ms)
if wait_until 20 same; then ok "the mount equals etcd (caught up in $(($(now_ms) - t0)) ms)"
else not_ok "the mount equals etcd"; diff <(mount_state) <(etcd_state) | head | while read -r l; do diag "$l"; done; fi
done_testing
