#!/bin/bash
# model.sh — reference-model test: MODEL_OPS (2000) seeded (MODEL_SEED) random operations through
# the mount (write, append, truncate, read, rm, mkdir, mkdir -p, rmdir, mv of files and
# directories) interleaved with etcdctl puts and deletes, each also applied to an in-memory model
# (tests/fuse/model.c, compiled here with cc); errnos must agree with the model, and the mount's
# tree, etcd's keys and the model must be identical after every operation (mount) and every 200
# operations (all three).
# shellcheck shell=bash
_src=${ETCDFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
source "$_src/tests/fixture/lib.sh"
source "$_src/tests/fixture/etcd.sh"

[ -e /dev/fuse ] || skip_all "no /dev/fuse"
: "${MODEL_SEED:=1}" "${MODEL_OPS:=2000}"
export MODEL_SEED MODEL_OPS
diag "MODEL_SEED=$MODEL_SEED MODEL_OPS=$MODEL_OPS (set both to replay this run)"

CC=${CC:-cc}
check "the model driver compiles" \
    "$CC" -std=gnu11 -O2 -Wall -Wextra -o "$TEST_TMP/model" "$_src/tests/fuse/model.c" ||
    done_testing
etcd_start || { not_ok "etcd starts"; done_testing; }

MNT=$TEST_TMP/mnt
# Something for the initial load to find: the driver starts its model from etcd's keys.
ectl put /a/f "loaded before the mount" >/dev/null
ectl put /a/b/g $'two\nlines' >/dev/null
ectl put /h "" >/dev/null
mount_etcdfs "$MNT" || { not_ok "mount"; done_testing; }
ok "mounted"

status=none drv_failed=0
# The driver prints "ok - …", "not ok - …" and "# …" lines; they become this script's TAP.
while IFS= read -r line; do
    case "$line" in
    "ok - "*) ok "${line#ok - }" ;;
    "not ok - "*) not_ok "${line#not ok - }"; drv_failed=1 ;;
    "driver exit "*) status=${line#driver exit } ;;
    "# "*) diag "${line#\# }" ;;
    *) diag "$line" ;;
    esac
done < <("$TEST_TMP/model" "$MNT" "$ETCD_ENDPOINTS" "$TEST_TMP" 2>&1; echo "driver exit $?")
if [ "$status" != 0 ]; then
    [ "$drv_failed" = 1 ] || not_ok "the model driver finished cleanly (exit status $status)"
    diag "etcdfs log tail:"
    diag "$(tail -n 30 "$ETCDFS_LOG" 2>/dev/null)"
    diag "replay with MODEL_SEED=$MODEL_SEED MODEL_OPS=$MODEL_OPS"
fi

umount_etcdfs "$MNT"
check "unmounted" _tap_unmounted "$MNT"
done_testing
