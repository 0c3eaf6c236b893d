#!/usr/bin/env bash
# backup-snapshot.sh — a consistent etcd backup through an etcdfs mount: copies
# MNT/.cluster/snapshot to DIR/etcd-YYYYmmdd-HHMMSS.db, checks it with `etcdctl snapshot status`
# when etcdctl is installed, and keeps only the KEEP newest backups (default 7).
#   backup-snapshot.sh MNT DIR [KEEP]        (cron: 0 * * * * backup-snapshot.sh /mnt/etcd /var/backups/etcd 24)
set -euo pipefail

[ $# -ge 2 ] && [ $# -le 3 ] || { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
MNT=${1%/} DIR=${2%/} KEEP=${3:-7}
case "$KEEP" in ''|*[!0-9]*|0) echo "backup-snapshot: KEEP must be a number >= 1" >&2; exit 2 ;; esac
[ -r "$MNT/.cluster/snapshot" ] || { echo "backup-snapshot: no $MNT/.cluster/snapshot (is etcdfs mounted there?)" >&2; exit 1; }
mkdir -p "$DIR"

name="etcd-$(date +%Y%m%d-%H%M%S).db"
part="$DIR/.$name.part"
trap 'rm -f "$part"' EXIT
# Reading the file streams a fresh snapshot from etcd; a failed stream fails cp (EIO).
cp "$MNT/.cluster/snapshot" "$part"
if command -v etcdctl >/dev/null; then
    if ! status=$(ETCDCTL_API=3 etcdctl snapshot status -w table "$part" 2>&1); then
        echo "backup-snapshot: etcdctl rejects the snapshot: $status" >&2
        exit 1
    fi
    echo "$status"
fi
mv "$part" "$DIR/$name"
echo "backup-snapshot: $DIR/$name ($(stat -c %s "$DIR/$name") bytes)"

# Rotation: names sort by time; drop all but the KEEP newest.
mapfile -t all < <(find "$DIR" -maxdepth 1 -name 'etcd-????????-??????.db' -printf '%f\n' | sort)
for ((i = 0; i + KEEP < ${#all[@]}; i++)); do
    rm -f "$DIR/${all[$i]}"
    echo "backup-snapshot: removed old ${all[$i]}"
done
