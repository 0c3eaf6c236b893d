#!/bin/bash
# cluster.sh — MNT/.cluster/ against etcdctl on the same cluster: members, status, health,
# revision, leader moves (and refusals), snapshot copy/restore/cancel, NOSPACE alarm cleared
# through compact/defrag/alarms, and EROFS on a read-only mount. TAP output.
# shellcheck shell=bash

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../fixture/etcd.sh
source "$here/../fixture/etcd.sh"

[ -x "$ETCDFS" ] || skip_all "etcdfs binary not built ($ETCDFS)"
[ -e /dev/fuse ] || skip_all "no /dev/fuse"
command -v fusermount3 >/dev/null || skip_all "no fusermount3"
command -v jq >/dev/null || skip_all "no jq"

# ---------------------------------------------------------------- helpers

# Cells of a tablewriter table (etcdctl -w table or our files), trimmed, '|'-separated, one
# line per row, header and borders dropped. Optional awk field list picks columns.
table_rows() {
    awk -F'|' -v cols="${2:-}" '
        /^\+/ { next }
        { if (!hdr) { hdr = 1; next }
          n = split(cols, want, ",")
          line = ""
          if (n == 0) for (i = 2; i < NF; i++) want[++n] = i - 1
          for (k = 1; k <= n; k++) { c = $(want[k] + 1); gsub(/^ +| +$/, "", c)
                                     line = line (k > 1 ? "|" : "") c }
          print line }' "$1"
}

# write_to FILE TEXT: echo TEXT > FILE in a child shell; prints the shell's error message.
write_to() {
    bash -c 'echo "$2" > "$1"' _ "$1" "$2" 2>&1
}

# free_ports N: N free ports (not listening, not in any TCP state) in 20000-32000.
free_ports() {
    local n=$1 p used out=()
    used=" $(awk 'NR > 1 { split($2, a, ":"); printf "%d ", strtonum("0x" a[2]) }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null) "
    while [ "${#out[@]}" -lt "$n" ]; do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        case "$used" in *" $p "*) continue ;; esac
        used+="$p "
        out+=("$p")
    done
    echo "${out[@]}"
}

leader_hex() { cut -d' ' -f1 "$C/leader"; }

# The leader's hex ID according to etcdctl (from its table: jq would round 64-bit IDs).
ectl_leader() {
    local t
    t=$(ectl endpoint status -w table --cluster 2>/dev/null) || return 1
    table_rows /dev/stdin 2,5 <<<"$t" | awk -F'|' '$2 == "true" { print $1; found = 1; exit }
                                                   END { exit !found }'
}

leader_is() { [ "$(leader_hex)" = "$1" ] && [ "$(ectl_leader)" = "$1" ]; }

# ================================================================ phase 1: three members

etcd_start --members 3 || { not_ok "3-member etcd started"; done_testing; }
MNT=$TEST_TMP/mnt
C=$MNT/.cluster
mount_etcdfs "$MNT" || { not_ok "etcdfs mounted"; done_testing; }
LOG=$ETCDFS_LOG

check "ls .cluster lists the files" bash -c \
    'ls "$1" | tr "\n" " " | grep -qx "alarms compact defrag events health leader members members.json revision snapshot status status.json "' \
    _ "$C"
mode=$(stat -c '%a %s' "$C/members" "$C/leader" | tr '\n' ' ')
check_eq "modes: read-only files 0400, writable 0600, size 0" "400 0 600 0 " "$mode"

# -- members
ectl member list -w table >"$TEST_TMP/members.ectl"
cat "$C/members" >"$TEST_TMP/members.fs"
check "members equals etcdctl member list -w table" diff "$TEST_TMP/members.ectl" \
    "$TEST_TMP/members.fs"
check_eq "members has 3 rows" 3 "$(table_rows "$TEST_TMP/members.fs" | wc -l)"
# members.json: same members (the header names whichever member answered); compared as text
# since jq would round 64-bit IDs
ectl member list -w json | sed 's/^.*"members"://' >"$TEST_TMP/mj.ectl"
sed 's/^.*"members"://' "$C/members.json" >"$TEST_TMP/mj.fs"
check "members.json members equal etcdctl's" diff "$TEST_TMP/mj.ectl" "$TEST_TMP/mj.fs"
check "members.json is valid JSON" jq -e .members "$C/members.json"
check_eq "members.json header has the cluster_id" \
    "$(ectl member list -w json | grep -o '"cluster_id":[0-9]*')" \
    "$(grep -o '"cluster_id":[0-9]*' "$C/members.json")"

# -- status: rows for every member, same IDs/versions/leader flag/term as etcdctl
ectl endpoint status -w table --cluster >"$TEST_TMP/status.ectl"
cat "$C/status" >"$TEST_TMP/status.fs"
check_eq "status has a row per member" 3 "$(table_rows "$TEST_TMP/status.fs" | wc -l)"
check "status rows (endpoint, ID, version, leader, learner, term) equal etcdctl's" diff \
    <(table_rows "$TEST_TMP/status.ectl" 1,2,3,5,6,7 | sort) \
    <(table_rows "$TEST_TMP/status.fs" 1,2,3,5,6,7 | sort)
check_eq "exactly one status row is leader" 1 \
    "$(table_rows "$TEST_TMP/status.fs" 5 | grep -c '^true$')"
check_eq "status DB SIZE in etcdctl's units" 3 \
    "$(table_rows "$TEST_TMP/status.fs" 4 | grep -Ec '^[0-9.]+ (B|kB|MB|GB)$')"
check_eq "status.json is JSON listing 3 endpoints" 3 "$(jq length "$C/status.json")"
check_eq "status.json endpoints equal status's" \
    "$(table_rows "$TEST_TMP/status.fs" 1 | sort | tr '\n' ' ')" \
    "$(jq -r '.[].Endpoint' "$C/status.json" | sort | tr '\n' ' ')"

# -- revision: the header revision of a quorum read
ectl put /rev-probe x >/dev/null
check_eq "revision equals etcdctl's header revision" \
    "$(ectl get /rev-probe -w json | jq .header.revision)" "$(cat "$C/revision")"

# -- health
cat "$C/health" >"$TEST_TMP/health.fs"
check_eq "health: 3 endpoints healthy" 3 \
    "$(grep -Ec '^https?://127\.0\.0\.1:[0-9]+ is healthy: successfully committed proposal: took = [0-9.]+(ns|µs|ms|s)$' \
        "$TEST_TMP/health.fs")"

# -- leader: read, move by hex ID and by name, refusals
lead0=$(ectl_leader)
check_eq "leader names etcdctl's leader" "$lead0" "$(leader_hex)"
name0=$(cut -d' ' -f2 "$C/leader")
check_eq "leader line is '<hex> <name>'" \
    "$(ectl member list | awk -F', ' -v id="$lead0" '$1 == id { print $1 " " $3 }')" \
    "$(cat "$C/leader")"
other=$(ectl member list | awk -F', ' -v id="$lead0" '$1 != id { print $1; exit }')
out=$(write_to "$C/leader" "$other")
check_eq "echo ID > leader succeeds" "" "$out"
check "leadership moved to $other (file and etcdctl agree)" wait_until 5 leader_is "$other"
out=$(write_to "$C/leader" "$name0")
check_eq "echo NAME > leader succeeds" "" "$out"
check "leadership back on $name0" wait_until 5 leader_is "$lead0"
out=$(write_to "$C/leader" "$lead0")
check_eq "writing the current leader is a no-op success" "" "$out"
out=$(write_to "$C/leader" "garbage!")
check "garbage refused with EINVAL" grep -q 'Invalid argument' <<<"$out"
out=$(write_to "$C/leader" "ffffffffffffffff")
check "unknown member ID refused with EINVAL" grep -q 'Invalid argument' <<<"$out"
check "the refusal is logged" grep -q 'etcdfs: .cluster/leader: .*ffffffffffffffff' "$LOG"
check_eq "leader unchanged after refusals" "$lead0" "$(leader_hex)"

# -- snapshot: cp, status, restore into a fresh member, compare every key
for i in $(seq 1 40); do ectl put "/snap/k$i" "value-$i" >/dev/null; done
head -c 65536 /dev/urandom | base64 -w0 >"$TEST_TMP/big"
for i in $(seq 1 30); do ectl put "/snap/big$i" <"$TEST_TMP/big" >/dev/null; done
check "cp .cluster/snapshot" cp "$C/snapshot" "$TEST_TMP/backup.db"
check "etcdctl snapshot status accepts the copy" \
    env ETCDCTL_API=3 etcdctl snapshot status "$TEST_TMP/backup.db"
read -r rc_port rp_port <<<"$(free_ports 2)"
rdir=$TEST_TMP/restored.etcd
check "etcdctl snapshot restore" env ETCDCTL_API=3 etcdctl snapshot restore \
    "$TEST_TMP/backup.db" --data-dir "$rdir" --name r0 \
    --initial-cluster "r0=http://127.0.0.1:$rp_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$rp_port" --initial-cluster-token restored
setpriv --pdeathsig KILL -- etcd --name r0 --data-dir "$rdir" \
    --listen-client-urls "http://127.0.0.1:$rc_port" \
    --advertise-client-urls "http://127.0.0.1:$rc_port" \
    --listen-peer-urls "http://127.0.0.1:$rp_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$rp_port" \
    --initial-cluster "r0=http://127.0.0.1:$rp_port" \
    --log-outputs="$TEST_TMP/restored.log" --logger=zap </dev/null >/dev/null 2>&1 &
rpid=$!
at_exit bash -c 'kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null; true' _ "$rpid"
rctl() { ETCDCTL_API=3 etcdctl --endpoints="http://127.0.0.1:$rc_port" "$@"; }
check "restored member starts" wait_until 20 bash -c \
    'ETCDCTL_API=3 etcdctl --endpoints="$1" endpoint health 2>&1 | grep -q "is healthy"' \
    _ "http://127.0.0.1:$rc_port"
ectl get "" --from-key >"$TEST_TMP/keys.orig"
rctl get "" --from-key >"$TEST_TMP/keys.restored" 2>&1
check "restored member holds every key and value" cmp "$TEST_TMP/keys.orig" \
    "$TEST_TMP/keys.restored"
check_eq "restored member has as many keys" \
    "$(ectl get "" --from-key --keys-only -w json | jq .count)" \
    "$(rctl get "" --from-key --keys-only -w json | jq .count)"
{ kill -9 "$rpid"; wait "$rpid"; } 2>/dev/null

# two readers at once: each gets a whole snapshot
cp "$C/snapshot" "$TEST_TMP/s1.db" &
p1=$!
cp "$C/snapshot" "$TEST_TMP/s2.db" &
p2=$!
wait "$p1"
r1=$?
wait "$p2"
r2=$?
check_eq "two concurrent cp of snapshot succeed" "0 0" "$r1 $r2"
check "first concurrent copy is a valid snapshot" \
    env ETCDCTL_API=3 etcdctl snapshot status "$TEST_TMP/s1.db"
check "second concurrent copy is a valid snapshot" \
    env ETCDCTL_API=3 etcdctl snapshot status "$TEST_TMP/s2.db"

# a reader stopping early cancels its stream (head returns at once, mount still fine)
t0=$(date +%s%N)
n=$(timeout 10 head -c 1000 "$C/snapshot" | wc -c)
t1=$(date +%s%N)
check_eq "head -c 1000 snapshot gives 1000 bytes" 1000 "$n"
check "head -c 1000 snapshot returns quickly (< 3 s)" test $(((t1 - t0) / 1000000)) -lt 3000
check "a whole snapshot still copies after cancelled ones" bash -c \
    'cp "$1" "$2" && ETCDCTL_API=3 etcdctl snapshot status "$2"' _ "$C/snapshot" \
    "$TEST_TMP/s3.db"

# -- a learner cannot lead
read -r lp_port <<<"$(free_ports 1)"
# etcd refuses reconfiguration for a while after leadership changes ("unhealthy cluster")
add_learner() {
    ectl member add learner0 --learner --peer-urls="http://127.0.0.1:$lp_port" \
        >"$TEST_TMP/learner.out" 2>&1
}
lid=""
wait_until 15 add_learner && lid=$(awk '/^Member/ { print $2; exit }' "$TEST_TMP/learner.out")
if [ -n "$lid" ]; then
    out=$(write_to "$C/leader" "$lid")
    check "a learner refused with EINVAL" grep -q 'Invalid argument' <<<"$out"
    check "members shows the learner unstarted" grep -Eq "^\| +$lid \| unstarted \|.*\| +true \|$" \
        "$C/members"
    check "members.json marks the learner" bash -c \
        '[ "$(jq --arg h "$2" "[.members[] | select(.isLearner == true)] | length" "$1")" = 1 ]' \
        _ "$C/members.json" "$lid"
    ectl member remove "$lid" >/dev/null
else
    not_ok "etcdctl member add --learner"
    diag "$(cat "$TEST_TMP/learner.out")"
fi

# -- an unreachable member is listed with its error, not hidden
down=$(( ($(etcd_leader) + 1) % 3 ))
down_url=$(etcd_endpoint "$down")
etcd_kill "$down"
cat "$C/status" >"$TEST_TMP/status.down"
check_eq "status still has 3 rows with a member down" 3 \
    "$(table_rows "$TEST_TMP/status.down" | wc -l)"
check "the down member's row carries an error" bash -c \
    'grep -F "| $2 |" "$1" | awk -F"|" "{ gsub(/ /, \"\", \$11); exit (\$11 == \"\") }"' \
    _ "$TEST_TMP/status.down" "$down_url"
check "health says the down member is unhealthy" grep -q "^$down_url is unhealthy" "$C/health"
check "member back" etcd_restart "$down"

# -- read-only mount: writes refused with EROFS
MNT_RO=$TEST_TMP/mnt-ro
if mount_etcdfs "$MNT_RO" -o ro; then
    out=$(write_to "$MNT_RO/.cluster/leader" "$lead0")
    check "write to leader on a ro mount: EROFS" grep -q 'Read-only file system' <<<"$out"
    check "reading leader on a ro mount works" grep -q "^$lead0 " "$MNT_RO/.cluster/leader"
    umount_etcdfs "$MNT_RO"
else
    not_ok "ro mount"
fi

# -- a real key named .cluster stays reachable through the escape
ectl put /.cluster/real "a real key" >/dev/null
check "a key /.cluster/real reads through %2Ecluster" \
    wait_until 5 grep -qx 'a real key' "$MNT/%2Ecluster/real"
check ".cluster is still the cluster directory" test -f "$C/members" -a ! -e "$C/real"

umount_etcdfs "$MNT"
etcd_stop

# ================================================================ phase 2: NOSPACE

etcd_start --members 1 --quota 2000000 || { not_ok "etcd with a small quota"; done_testing; }
MNT2=$TEST_TMP/mnt2
C2=$MNT2/.cluster
mount_etcdfs "$MNT2" || { not_ok "etcdfs mounted on the small-quota etcd"; done_testing; }

head -c 150000 /dev/urandom | base64 -w0 >"$TEST_TMP/fill"
full=0
for i in $(seq 1 60); do
    if ! out=$(ectl put /fill <"$TEST_TMP/fill" 2>&1); then
        grep -q 'database space exceeded' <<<"$out" && full=1
        break
    fi
done
check_eq "puts fill the quota (database space exceeded)" 1 "$full"
check "alarms shows NOSPACE" wait_until 5 grep -Eq '^memberID:[0-9]+ alarm:NOSPACE' "$C2/alarms"
check_eq "alarms equals etcdctl alarm list" "$(ectl alarm list)" "$(cat "$C2/alarms")"
rev=$(cat "$C2/revision")
check "revision is a number" grep -Eq '^[0-9]+$' <<<"$rev"
out=$(write_to "$C2/compact" "garbage")
check "compact refuses garbage" grep -q 'Invalid argument' <<<"$out"
out=$(write_to "$C2/compact" "$rev")
check_eq "echo REV > compact" "" "$out"
out=$(write_to "$C2/defrag" "nowhere")
check "defrag refuses an unknown endpoint" grep -q 'Invalid argument' <<<"$out"
out=$(write_to "$C2/defrag" "all")
check_eq "echo all > defrag" "" "$out"
out=$(write_to "$C2/alarms" "arm")
check "alarms refuses anything but disarm" grep -q 'Invalid argument' <<<"$out"
out=$(write_to "$C2/alarms" "disarm")
check_eq "echo disarm > alarms" "" "$out"
check_eq "alarms is empty after disarm" "" "$(cat "$C2/alarms")"
check_eq "etcdctl sees no alarm" "" "$(ectl alarm list)"
check "a put succeeds again" ectl put /after-disarm ok

umount_etcdfs "$MNT2"
done_testing
