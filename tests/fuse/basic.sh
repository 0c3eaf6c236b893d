#!/bin/bash
# basic.sh — everyday shell use of a mount: ls/cat/stat, cp in and out, binary values, echo >
# and >>, truncate, touch, rm, mkdir/rmdir, mv of files and directories, O_EXCL, grep/find,
# xattrs and df, each checked against what etcd holds (etcdctl).
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/../fixture/etcd.sh"

[ -e /dev/fuse ] || skip_all "no /dev/fuse"
command -v fusermount3 >/dev/null || skip_all "no fusermount3"
etcd_start || { not_ok "etcd starts"; done_testing; }

MNT=$TEST_TMP/mnt
# value KEY: the value as etcd has it (etcdctl adds one newline, removed here).
value() { ectl get "$1" --print-value-only | head -c -1; }
exists() { [ -n "$(ectl get "$1" --keys-only)" ]; }
absent() { ! exists "$1"; }
revision_of() { ectl get "$1" -w json | grep -o '"mod_revision":[0-9]*' | cut -d: -f2; }

ectl put /app/config '{"replicas":3}' >/dev/null
ectl put /app/db/host db1.example >/dev/null
ectl put /app/db/port 5432 >/dev/null
ectl put /top 'top level' >/dev/null

mount_etcdfs "$MNT" || { not_ok "mount"; done_testing; }
ok "mounted"

# ---- reading
check_eq "ls of the root" "app top" "$(ls "$MNT" | tr '\n' ' ' | sed 's/ $//')"
check_eq "ls of a directory" "config db" "$(ls "$MNT/app" | tr '\n' ' ' | sed 's/ $//')"
check_eq "ls -R finds every key" 4 "$(ls -R "$MNT" | grep -c -E '^(config|host|port|top)$')"
check_eq "cat a value" "db1.example" "$(cat "$MNT/app/db/host")"
check_eq "st_size is the value length" 14 "$(stat -c %s "$MNT/app/config")"
check_eq "files are 0600" 600 "$(stat -c %a "$MNT/app/config")"
check_eq "directories are 0700" 700 "$(stat -c %a "$MNT/app/db")"
check_eq "owned by the mounting user" "$(id -u):$(id -g)" "$(stat -c %u:%g "$MNT/app/config")"
check_eq "a file has one link" 1 "$(stat -c %h "$MNT/top")"
check "st_ino is stable" test "$(stat -c %i "$MNT/top")" = "$(stat -c %i "$MNT/top")"

# ---- cp in and out, binary
cp /etc/os-release "$MNT/app/os-release"
check "cp in: etcd has the file's bytes" cmp <(value /app/os-release) /etc/os-release
cp "$MNT/app/db/host" "$TEST_TMP/host.out"
check_eq "cp out" "db1.example" "$(cat "$TEST_TMP/host.out")"
head -c 307200 /dev/urandom >"$TEST_TMP/blob"
mkdir -p "$MNT/bin"
cp "$TEST_TMP/blob" "$MNT/bin/blob"
check "300 KB binary value reads back through the mount" cmp "$TEST_TMP/blob" "$MNT/bin/blob"
check "300 KB binary value is whole in etcd" \
    cmp <(ectl get /bin/blob --print-value-only | head -c 307200) "$TEST_TMP/blob"
check_eq "binary value size" 307200 "$(stat -c %s "$MNT/bin/blob")"

# ---- echo >, >>, truncate, touch, rm
echo one >"$MNT/notes"
check_eq "echo > creates a key" "one" "$(value /notes)"
echo two >>"$MNT/notes"
check_eq "echo >> appends" "$(printf 'one\ntwo')" "$(value /notes)"
check_eq "cat after append" "$(printf 'one\ntwo')" "$(cat "$MNT/notes")"
check_eq "size after append" 8 "$(stat -c %s "$MNT/notes")"
echo three >"$MNT/notes"
check_eq "echo > replaces" "three" "$(value /notes)"
truncate -s 2 "$MNT/notes"
check_eq "truncate shortens the value" "th" "$(value /notes)"
check_eq "size after truncate" 2 "$(stat -c %s "$MNT/notes")"
truncate -s 0 "$MNT/notes"
check_eq "truncate to 0 empties the value" "" "$(value /notes)"
check "the key still exists after truncate to 0" exists /notes
touch "$MNT/empty"
check "touch creates an empty key" exists /empty
check_eq "touched key is empty" "" "$(value /empty)"
touch "$MNT/top"
check_eq "touch of an existing file keeps its value" "top level" "$(value /top)"
rm "$MNT/empty"
check "rm deletes the key" absent /empty
check_fail "rm'd file is gone from the mount" test -e "$MNT/empty"

# ---- directories
mkdir -p "$MNT/x/y/z"
check "mkdir -p makes directories" test -d "$MNT/x/y/z"
echo deep >"$MNT/x/y/z/f"
check_eq "a file in a new directory is a key" "deep" "$(value /x/y/z/f)"
out=$(rmdir "$MNT/x/y/z" 2>&1)
check "rmdir of a non-empty directory fails" test $? -ne 0
check "... with ENOTEMPTY" grep -q "Directory not empty" <<<"$out"
mkdir "$MNT/x/gone"
check "rmdir of an empty directory" rmdir "$MNT/x/gone"
check_fail "mkdir of an existing directory fails" mkdir "$MNT/x"

# ---- rename
echo moving >"$MNT/src"
mv "$MNT/src" "$MNT/dst"
check "mv file: new key" test "$(value /dst)" = moving
check "mv file: old key gone" absent /src
mv "$MNT/app/db" "$MNT/app/database"
check "mv directory moves every key" test "$(value /app/database/host)" = db1.example -a \
    "$(value /app/database/port)" = 5432
check "mv directory: old keys gone" absent /app/db/host
check_eq "mv directory: mount shows the new name" "config database os-release" \
    "$(ls "$MNT/app" | tr '\n' ' ' | sed 's/ $//')"
echo a >"$MNT/ra"
echo b >"$MNT/rb"
mv -f "$MNT/ra" "$MNT/rb"
check_eq "mv over an existing file replaces it" "a" "$(value /rb)"

# ---- O_EXCL
out=$(dd if=/dev/null of="$MNT/top" conv=excl 2>&1)
check "O_CREAT|O_EXCL on an existing file fails" test $? -ne 0
check "... with EEXIST" grep -q "File exists" <<<"$out"
check "dd conv=excl creates a new file" dd if=/dev/null of="$MNT/fresh" conv=excl status=none
check "the O_EXCL-created file is a key" exists /fresh

# ---- grep, find
check_eq "grep -r finds a value" "$MNT/app/database/host" "$(grep -rl --exclude-dir=.cluster db1.example "$MNT")"
check_eq "find lists files" "$(printf '%s\n' /app/config /app/database/host /app/database/port |
    sed "s|^|$MNT|")" "$(find "$MNT/app" -type f -name '[chp]*' | sort)"

# ---- xattrs
rev=$(revision_of /top)
check_eq "user.etcd.mod_revision" "$rev" \
    "$(getfattr --absolute-names --only-values -n user.etcd.mod_revision "$MNT/top" 2>&1)"
check_eq "user.etcd.version" "1" "$(getfattr --absolute-names --only-values -n user.etcd.version "$MNT/top")"
check_eq "user.etcd.lease is 0 without a lease" "0" \
    "$(getfattr --absolute-names --only-values -n user.etcd.lease "$MNT/top")"
check "listxattr lists the four" test "$(getfattr --absolute-names -d -m - "$MNT/top" | grep -c '^user\.etcd\.')" = 4
check_fail "setxattr is refused" setfattr -n user.x -v 1 "$MNT/top"
check_fail "unknown xattr: no data" getfattr --absolute-names -n user.other "$MNT/top"

# ---- df
check_eq "statfs: 4096-byte blocks, 2 GiB quota" "4096 524288" "$(stat -f -c '%S %b' "$MNT")"
check "statfs: free blocks below total" test "$(stat -f -c %f "$MNT")" -lt 524288
check "df works" df "$MNT"
check_eq "statfs: name max 255" 255 "$(stat -f -c %l "$MNT")"

# ---- .cluster is reserved
check_fail "a file named .cluster at the root cannot be made" \
    sh -c 'echo x >"$1"' _ "$MNT/.cluster"
check_fail "mkdir .cluster at the root fails" mkdir "$MNT/.cluster"
check "no key named .cluster was made" test -z "$(ectl get /.cluster --prefix --keys-only)"

umount_etcdfs "$MNT"
check "unmounted" _tap_unmounted "$MNT"
done_testing
