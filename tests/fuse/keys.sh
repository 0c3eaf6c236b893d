#!/bin/bash
# keys.sh — awkward keys through a mount: each key put with etcdctl appears at the path that
# docs/KEYPATH.md gives, reads back its exact bytes, and a write through that path changes that
# key and no other; files created through escaped names become the right keys; names that are not
# canonical are refused with EINVAL and leave etcd untouched.
# shellcheck shell=bash
_src=${ETCDFS_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
source "$_src/tests/fixture/lib.sh"
source "$_src/tests/fixture/etcd.sh"

[ -e /dev/fuse ] || skip_all "no /dev/fuse"
etcd_start || { not_ok "etcd starts"; done_testing; }

MNT=$TEST_TMP/mnt

# hex STRING: the bytes of STRING as etcdctl --hex writes them (\x2f\x61...).
hex() { printf '%s' "$1" | od -An -tx1 -v | tr -d '\n' | sed 's/ /\\x/g'; }
# filehex PATH: the bytes of a file, same form (exact: no shell variable holds them).
filehex() { od -An -tx1 -v <"$1" | tr -d '\n' | sed 's/ /\\x/g'; }
# dump: every key and value in etcd, "hexkey<TAB>hexvalue" per line, sorted by key.
dump() { ectl get "" --prefix --hex | paste -d '\t' - -; }
# dump_with HEXKEY HEXVALUE: the dump expected after setting that key (added when absent).
dump_with() {
    K=$1 V=$2 awk -F '\t' -v OFS='\t' '
        $1 == ENVIRON["K"] { $2 = ENVIRON["V"]; seen = 1 } { print }
        END { if (!seen) print ENVIRON["K"], ENVIRON["V"] }' <<<"$3" | LC_ALL=C sort
}
sorted() { LC_ALL=C sort <<<"$1"; }
rep() { local s; printf -v s '%*s' "$2" ''; printf '%s' "${s// /$1}"; }
# short TEXT: TEXT cut for a test name.
short() { if [ ${#1} -gt 48 ]; then printf "%s…(%d long)" "${1:0:24}" ${#1}; else printf "%s" "$1"; fi; }
# shellcheck disable=SC2010 # readdir is what is tested
listed() { ls -a -- "$(dirname -- "$1")" | grep -qxF -- "$(basename -- "$1")"; }

# roundtrip DESC KEY PATH: KEY (bytes) put by etcdctl is the file PATH (relative to the mount):
# listed, its bytes read back, and a write through it changes exactly that key.
roundtrip() {
    local desc=$1 key=$2 path=$MNT/$3 v1 v2 before after
    v1="v1 of $desc"
    v2=$(printf 'second\nvalue %s \001\002' "$RANDOM")
    ectl put "$key" "$v1" >/dev/null || { not_ok "$desc: etcdctl put"; return; }
    if ! wait_until 5 test -f "$path"; then
        not_ok "$desc: key $(short "$(hex "$key")") appears as $(short "$3")"
        diag "$(ls -laR "$MNT" 2>&1 | head -n 40)"
        return
    fi
    ok "$desc: key appears as $(short "$3")"
    check "$desc: readdir lists the name" listed "$path"
    check_eq "$desc: cat gives the value's bytes" "$(hex "$v1")" "$(filehex "$path")"
    check_eq "$desc: st_size" "${#v1}" "$(stat -c %s -- "$path")"
    before=$(dump)
    printf '%s' "$v2" >"$path"
    after=$(dump)
    check_eq "$desc: a write through the path changes exactly that key" \
        "$(dump_with "$(hex "$key")" "$(hex "$v2")" "$before")" "$(sorted "$after")"
}

# created DESC PATH KEY: writing a new file PATH through the mount creates exactly KEY.
created() { created_hex "$1" "$2" "$(hex "$3")"; }
# created_hex DESC PATH HEXKEY: the same, the key given in hex (for NUL bytes).
created_hex() {
    local desc=$1 path=$MNT/$2 hkey=$3 before after
    before=$(dump)
    if ! printf 'made %s' "$desc" >"$path"; then
        not_ok "$desc: create $2"
        return
    fi
    after=$(dump)
    check_eq "$desc: creating $(short "$2") makes exactly the key $(short "$hkey")" \
        "$(dump_with "$hkey" "$(hex "made $desc")" "$before")" "$(sorted "$after")"
    check_eq "$desc: reads back" "$(hex "made $desc")" "$(filehex "$path")"
}

# refused DESC PATH: creating PATH fails with EINVAL and etcd is unchanged.
refused() {
    local desc=$1 path=$MNT/$2 before after out
    before=$(dump)
    out=$( (printf x >"$path") 2>&1)
    check "$desc: creating $(short "$2") fails with EINVAL" grep -q "Invalid argument" <<<"$out" ||
        diag "got: ${out:-success}"
    after=$(dump)
    check_eq "$desc: etcd untouched" "$before" "$after"
    check_fail "$desc: nothing appears at $(short "$2")" test -e "$path"
}

ectl put /k/plain plain >/dev/null
mount_etcdfs "$MNT" || { not_ok "mount"; done_testing; }
ok "mounted"

# ---- keys put by another client, read and written through their paths
roundtrip "empty component" "/k/a//b" "k/a/%/b"
roundtrip "trailing slash" "/k/trail/" "k/trail/%"
roundtrip "dot component" "/k/./x" "k/%2E/x"
roundtrip "dot-dot component" "/k/../y" "k/%2E%2E/y"
roundtrip "dot as the last component" "/k/dots/." "k/dots/%2E"
roundtrip "300-byte component" "/k/$(rep a 300)" "k/$(rep a 253)%-/$(rep a 47)"
roundtrip "600-byte component" "/k/$(rep b 600)" "k/$(rep b 253)%-/$(rep b 253)%-/$(rep b 94)"
roundtrip "long UTF-8 component (cut between characters)" "/k/$(rep é 150)" \
    "k/$(rep é 126)%-/$(rep é 24)"
roundtrip "long escaped component" "/k/$(rep $'\001' 100)" "k/$(rep %01 84)%-/$(rep %01 16)"
roundtrip "invalid UTF-8 bytes" $'/k/bin\xff\xfe' "k/bin%FF%FE"
roundtrip "overlong UTF-8" $'/k/\xc0\x80' "k/%C0%80"
roundtrip "UTF-16 surrogate" $'/k/\xed\xa0\x80' "k/%ED%A0%80"
roundtrip "control bytes" $'/k/ctl\x01\x7f' "k/ctl%01%7F"
roundtrip "newline in a key" $'/k/nl\nx' "k/nl%0Ax"
roundtrip "tab in a key" $'/k/tab\there' "k/tab%09here"
roundtrip "percent sign" "/k/100%" "k/100%25"
roundtrip "valid UTF-8 stays natural" "/k/héllo日本" "k/héllo日本"
roundtrip "key without a leading slash" "compact_rev_key" "%^compact_rev_key"
roundtrip "key '.' without a slash" "." "%^."
roundtrip "the key '/'" "/" "%"
roundtrip "the key '/.'" "/." "%2E"
roundtrip "name beginning with a dot" "/k/.hidden" "k/.hidden"
roundtrip "three dots" "/k/..." "k/..."
roundtrip ".cluster below the root is ordinary" "/k/a/.cluster" "k/a/.cluster"
roundtrip "real key /.cluster" "/.cluster" "%2Ecluster"
ectl put /tw/b child >/dev/null
roundtrip "key that is also a prefix (/tw with /tw/b)" "/tw" "tw%="
check_eq "twin: the child /tw/b is still reachable" "$(hex child)" "$(filehex "$MNT/tw/b")"
check "twin: tw is a directory" test -d "$MNT/tw"
ectl put /tw2 first >/dev/null
wait_until 2 test -f "$MNT/tw2"
ectl put /tw2/c child >/dev/null
check "twin made after the file: tw2 becomes a directory" wait_until 2 test -d "$MNT/tw2"
check_eq "... and the value moves to tw2%=" "$(hex first)" "$(filehex "$MNT/tw2%=" 2>&1)"
ectl del /tw2/c >/dev/null
check "twin undone: tw2 is a file again" wait_until 2 test -f "$MNT/tw2"
check_eq "... with its value" "$(hex first)" "$(filehex "$MNT/tw2" 2>&1)"
ok "# SKIP NUL in a key put by etcdctl: argv cannot carry NUL (created through the mount below)"

# ---- keys created through escaped names
mkdir -p "$MNT/k/new"
created "empty last component" "k/new/%" "/k/new/"
created "escaped 0xFF" "k/%FF" $'/k/\xff'
created_hex "NUL byte" "k/nul%00x" "$(hex /k/nul)\\x00$(hex x)"
created "escaped newline" "k/%0Aline" $'/k/\nline'
created "escaped percent" "k/sp ace%25" "/k/sp ace%"
created "dot-dot name" "k/new/%2E%2E" "/k/new/.."
created "key without a leading slash" "%^newfoo" "newfoo"
mkdir "$MNT/k/$(rep c 253)%-"
created "long component through a continuation directory" "k/$(rep c 253)%-/ccc" "/k/$(rep c 256)"
mkdir "$MNT/k/tdir"
created "twin created beside a directory" "k/tdir%=" "/k/tdir"
check "... the directory stays" test -d "$MNT/k/tdir"

# ---- names that are not canonical
refused "needless escape" "k/%41"
refused "bad escape" "k/%zz"
refused "lowercase hex" "k/%ff"
refused "lowercase dot escape" "k/%2e"
refused "escaped dot followed by text" "k/%2Ea"
refused "escaped valid UTF-8" "k/%C3%A9"
refused "escaped dot then text at the root" "%2Ecluster2"
refused "lone percent inside a name" "k/a%b"
refused "%^ below the root" "k/%^x"
refused "%2Ecluster below the root" "k/%2Ecluster"
refused "twin suffix without a directory" "k/nodir%="
refused "continuation chunk shorter than needed" "k/$(rep c 253)%-/cc"
out=$(mkdir "$MNT/k/%41" 2>&1)
check "mkdir of a non-canonical name fails with EINVAL" grep -q "Invalid argument" <<<"$out"

umount_etcdfs "$MNT"
check "unmounted" _tap_unmounted "$MNT"
done_testing
