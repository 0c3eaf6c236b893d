#!/usr/bin/env bash
# on-change.sh — runs a command each time a key under a path of an etcdfs mount changes, made by
# any client of the cluster (etcdctl, kube-apiserver, this mount). The command gets the change in
# $EVENT (PUT or DELETE) and $FILE (the file's path in the mount).
#   on-change.sh MNT/registry/configmaps -- sh -c 'echo "$EVENT $FILE"'
#   on-change.sh --events MNT/registry/configmaps -- CMD...   (reads MNT/.cluster/events instead
#                                                              of inotify; the default when
#                                                              inotifywait is not installed)
set -uo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
mode=inotify
[ "${1:-}" = --events ] && { mode=events; shift; }
[ $# -ge 3 ] && [ "$2" = -- ] || usage
WATCH=$(realpath -- "$1") || exit 1
shift 2
[ -d "$WATCH" ] || { echo "on-change: $WATCH is not a directory" >&2; exit 1; }
command -v inotifywait >/dev/null || mode=events

run() { EVENT=$1 FILE=$2 "${@:3}" || echo "on-change: command failed ($?) for $1 $2" >&2; }

if [ "$mode" = inotify ]; then
    # CLOSE_WRITE: a Put is complete (a remote Put raises MODIFY then CLOSE_WRITE);
    # MOVED_TO: a rename's new name; DELETE / MOVED_FROM: a key gone.
    inotifywait -q -m -r -e close_write,moved_to,delete,moved_from --format '%e %w%f' "$WATCH" |
    while read -r ev path; do
        case "$ev" in *ISDIR*) continue ;; esac
        case "$ev" in
        *CLOSE_WRITE* | *MOVED_TO*) run PUT "$path" "$@" ;;
        *DELETE* | *MOVED_FROM*) run DELETE "$path" "$@" ;;
        esac
    done
    exit 0
fi

# The event stream lives at the root of the mount: find it above WATCH.
root=$WATCH
while [ ! -e "$root/.cluster/events" ]; do
    [ "$root" = / ] && { echo "on-change: $WATCH is not inside an etcdfs mount" >&2; exit 1; }
    root=$(dirname "$root")
done
rel=${WATCH#"$root"}
rel=${rel#/}
# Lines: "PUT /<path> <revision>" / "DELETE /<path> <revision>", paths from the mount's root.
while read -r ev path _rev; do
    path=${path#/}
    case "$ev" in PUT | DELETE) ;; OVERFLOW) echo "on-change: events lost (too slow)" >&2; continue ;; *) continue ;; esac
    case "$path" in "$rel"/* | "$rel") ;; *) [ -n "$rel" ] && continue ;; esac
    run "$ev" "$root/$path" "$@"
done <"$root/.cluster/events"
