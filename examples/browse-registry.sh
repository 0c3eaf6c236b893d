#!/usr/bin/env bash
# browse-registry.sh — a quick look at a Kubernetes /registry through an etcdfs mount:
#   browse-registry.sh MNT                      resource types and how many objects each
#   browse-registry.sh MNT pods                 namespaces (or names) of one resource, with counts
#   browse-registry.sh MNT pods default         the objects of one namespace, with sizes
#   browse-registry.sh MNT pods default nginx   one object (JSON pretty-printed when it is JSON)
set -euo pipefail

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 4 ] || usage
case "$1" in -h|--help) usage ;; esac
REG=${1%/}/registry
[ -d "$REG" ] || { echo "browse-registry: no $REG (is etcdfs mounted at $1?)" >&2; exit 1; }

count() { find "$1" -type f | wc -l; }

if [ $# -eq 1 ]; then
    printf '%-40s %8s\n' RESOURCE OBJECTS
    for d in "$REG"/*/; do
        d=${d%/}
        printf '%-40s %8d\n' "${d##*/}" "$(count "$d")"
    done
    printf '%-40s %8d\n' TOTAL "$(count "$REG")"
    exit 0
fi

P=$REG/$2${3:+/$3}${4:+/$4}
if [ -f "$P" ]; then
    # Kubernetes stores built-in objects as protobuf ("k8s\0" header), CRDs and some
    # objects as JSON: pretty-print JSON, show the readable strings of anything else.
    if head -c1 "$P" | grep -q '{' && command -v python3 >/dev/null; then
        python3 -m json.tool "$P" 2>/dev/null || cat "$P"
    elif LC_ALL=C grep -q '[^[:print:][:space:]]' "$P"; then
        strings -n 3 "$P" 2>/dev/null || cat -v "$P"
    else
        cat "$P"; echo
    fi
elif [ -d "$P" ]; then
    printf '%-50s %10s\n' NAME "OBJECTS/SIZE"
    for e in "$P"/*; do
        [ -e "$e" ] || continue
        if [ -d "$e" ]; then printf '%-50s %10d\n' "${e##*/}/" "$(count "$e")"
        else printf '%-50s %10s\n' "${e##*/}" "$(stat -c %s "$e")"; fi
    done
else
    echo "browse-registry: no ${P#"$1"/} in the mount" >&2
    exit 1
fi
