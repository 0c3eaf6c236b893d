#!/bin/bash
# install.sh — etcdfs as an installed tool: `meson install --destdir` puts bin/etcdfs and
# share/man/man1/etcdfs.1 in place (the page renders without warnings); mount(8) and fstab
# through mount.fuse3 (`mount -t fuse.etcdfs ENDPOINTS MNT -o cacert=,cert=,key=,_netdev`,
# `mount -T FSTAB MNT`); the password prompt on a terminal (script(1)); logs to syslog once
# daemonized, to stderr in the foreground.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/../fixture/etcd.sh"

[ -e /dev/fuse ] || skip_all "no /dev/fuse"
command -v fusermount3 >/dev/null || skip_all "no fusermount3"

# ---- meson install
DEST=$TEST_TMP/dest
out=$(meson install -C "$ETCDFS_BUILD" --no-rebuild --destdir "$DEST" 2>&1)
check "meson install --destdir exits 0" test $? -eq 0 || diag "$(tail -n 5 <<<"$out")"
BIN=$(find "$DEST" -path '*/bin/etcdfs' -type f | head -n1)
MAN=$(find "$DEST" -path '*/share/man/man1/etcdfs.1' -type f | head -n1)
check "installs bin/etcdfs" test -x "$BIN"
check "installs share/man/man1/etcdfs.1" test -f "$MAN"
check "the installed etcdfs runs (--version)" "$BIN" --version
if command -v man >/dev/null; then
    warn=$(MANWIDTH=80 man --warnings -l "$MAN" 2>&1 >/dev/null)
    check_eq "man -l renders without warnings" "" "$warn"
    page=$(MANWIDTH=80 man -l "$MAN" 2>/dev/null)
    for s in SYNOPSIS OPTIONS "KEYS AND PATHS" "THE .cluster DIRECTORY" ERRORS EXAMPLES; do
        check "man page has $s" grep -q "^$s" <<<"$page"
    done
    for w in EFBIG ENOSPC EACCES EROFS EIO EXDEV healthcheck-client.crt fuse.etcdfs %2Ecluster; do
        check "man page mentions $w" grep -q -- "$w" <<<"$page"
    done
else
    ok "# SKIP man not installed"
fi

etcd_start --client-cert-auth --auth || { not_ok "etcd (client-cert TLS + auth) starts"; done_testing; }
ok "etcd with client-cert TLS and auth started"
ectl put /registry/pods/default/a pod-a >/dev/null
EP1=${ETCD_ENDPOINTS%%,*}

# ---- mount(8) / fstab through mount.fuse3: etcdfs must be in mount.fuse3's PATH; mount(8)
# gives its helpers a clean environment, so the shell's default PATH (/usr/local/sbin, ...).
LINK=/usr/local/sbin/etcdfs
if [ "$(id -u)" != 0 ] || ! command -v mount.fuse3 >/dev/null; then
    ok "# SKIP mount(8) tests need root and mount.fuse3"
elif [ -e "$LINK" ] || [ -L "$LINK" ]; then
    ok "# SKIP $LINK exists already (not ours to replace)"
elif ! ln -s "$BIN" "$LINK" 2>/dev/null; then
    ok "# SKIP cannot create $LINK"
else
    at_exit rm -f -- "$LINK"
    tap_guard rm -f -- "$LINK"
    M=$TEST_TMP/mt
    mkdir -p "$M"
    at_exit umount_etcdfs "$M"
    tap_guard fusermount3 -uz -- "$M"
    opts="cacert=$ETCD_CACERT,cert=$ETCD_CERT,key=$ETCD_KEY,_netdev,nofail,x-systemd.automount"
    out=$(timeout 30 mount -t fuse.etcdfs "$EP1" "$M" -o "$opts" 2>&1 </dev/null)
    check "mount -t fuse.etcdfs ENDPOINT MNT -o cacert=,cert=,key=,_netdev ($out)" test $? -eq 0
    check_eq "mount -t: the keyspace is there" pod-a "$(cat "$M/registry/pods/default/a" 2>&1)"
    check "mount -t: /proc/mounts says fuse.etcdfs" \
        awk -v m="$M" '$2 == m && $3 == "fuse.etcdfs" { f = 1 } END { exit !f }' /proc/mounts
    out=$(umount "$M" 2>&1)
    check "umount MNT ($out)" wait_until 5 _tap_unmounted "$M"

    FSTAB=$TEST_TMP/fstab
    printf '# a test fstab\n%s %s fuse.etcdfs %s,prefix=/registry,ro,noauto 0 0\n' \
        "$EP1" "$M" "cacert=$ETCD_CACERT,cert=$ETCD_CERT,key=$ETCD_KEY,_netdev,nofail" >"$FSTAB"
    out=$(timeout 30 mount -T "$FSTAB" "$M" 2>&1 </dev/null)
    check "fstab line: mount -T FSTAB MNT ($out)" test $? -eq 0
    check_eq "fstab: prefix= applies" pod-a "$(cat "$M/pods/default/a" 2>&1)"
    echo x 2>/dev/null >"$M/pods/default/a"
    check_eq "fstab: ro applies" pod-a "$(ectl get --print-value-only /registry/pods/default/a)"
    umount "$M" 2>/dev/null
    check "fstab: umount" wait_until 5 _tap_unmounted "$M"

    printf '%s %s fuse.etcdfs %s 0 0\n' "$EP1" "$M" "cacert=$ETCD_CACERT,bogus_option" >"$FSTAB"
    out=$(timeout 30 mount -T "$FSTAB" "$M" 2>&1 </dev/null)
    rc=$?
    check "fstab: an unknown option fails the mount (rc $rc)" test "$rc" -ne 0 -a "$rc" -ne 124
    check "fstab: and names it" grep -q "unknown mount option 'bogus_option'" <<<"$out"
    check "fstab: nothing left mounted" _tap_unmounted "$M"
fi

# ---- the password prompt, on a real terminal (script(1) gives etcdfs a pty)
if command -v script >/dev/null; then
    P=$TEST_TMP/mp
    mkdir -p "$P"
    at_exit umount_etcdfs "$P"
    tap_guard fusermount3 -uz -- "$P"
    prompt_mount() {   # prompt_mount PASSWORD: runs etcdfs --user=root on a pty, types PASSWORD
        local pw=$1 fifo=$TEST_TMP/tty-in.$RANDOM log=$TEST_TMP/tty-out.$RANDOM
        mkfifo "$fifo"
        script -qfec "$(printf '%q ' "$BIN" --endpoints="$EP1" --cacert="$ETCD_CACERT" \
            --cert="$ETCD_CERT" --key="$ETCD_KEY" --user=root "$P")" /dev/null \
            <"$fifo" >"$log" 2>&1 &
        local spid=$!
        exec 9>"$fifo"
        # Type only once the prompt is there: the prompt flushes earlier input, as a terminal's
        # password prompt should.
        if wait_until 15 grep -q "Password for root" "$log"; then
            printf '%s\n' "$pw" >&9
        fi
        exec 9>&-
        wait_until 20 bash -c "! kill -0 $spid" ; wait "$spid"
        PROMPT_RC=$?
        PROMPT_OUT=$(tr -d '\r' <"$log")
        rm -f "$fifo" "$log"
    }
    prompt_mount rootpw
    check "prompt: asks for the password on a terminal" grep -q "^Password for root: " <<<"$PROMPT_OUT"
    check "prompt: the typed password is not echoed" bash -c '! grep -q rootpw <<<"$1"' _ "$PROMPT_OUT"
    check "prompt: mounts with the typed password (rc $PROMPT_RC)" test "$PROMPT_RC" -eq 0
    check_eq "prompt: the keyspace is there" pod-a "$(cat "$P/registry/pods/default/a" 2>&1)"
    umount_etcdfs "$P"
    prompt_mount wrongpw
    check "prompt: a wrong password fails (rc $PROMPT_RC)" test "$PROMPT_RC" -ne 0
    check "prompt: and says why" grep -qi "auth\|password" <<<"$PROMPT_OUT"
    check "prompt: nothing mounted" _tap_unmounted "$P"
else
    ok "# SKIP no script(1)"
fi

# ---- logs: stderr in the foreground; syslog once daemonized
F=$TEST_TMP/mf
mkdir -p "$F"
at_exit umount_etcdfs "$F"
tap_guard fusermount3 -uz -- "$F"
"$BIN" -f --endpoints="$EP1" --cacert="$ETCD_CACERT" --cert="$ETCD_CERT" --key="$ETCD_KEY" \
    --user=root:rootpw "$F" </dev/null 2>"$TEST_TMP/fg.err" &
fgpid=$!
check "foreground: mounted" wait_until 15 is_mounted "$F"
check "foreground: logs 'mounted' on stderr" wait_until 5 grep -q "^etcdfs: mounted" "$TEST_TMP/fg.err"
umount_etcdfs "$F"
check "foreground: exits after the unmount" wait_until 10 bash -c "! kill -0 $fgpid"
wait "$fgpid" 2>/dev/null

if [ ! -e /dev/log ] && [ "$(id -u)" = 0 ] && command -v python3 >/dev/null; then
    # No syslog daemon here: stand one in at /dev/log for the test's duration.
    SL=$TEST_TMP/syslog.txt
    python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
print("ready", flush=True)
with open(sys.argv[1], "ab", buffering=0) as f:
    while True:
        f.write(s.recv(65536) + b"\n")
' "$SL" >"$TEST_TMP/syslogd.out" 2>&1 &
    slpid=$!
    at_exit rm -f /dev/log
    at_exit kill "$slpid"
    tap_guard rm -f /dev/log
    wait_until 5 grep -q ready "$TEST_TMP/syslogd.out"
    # stderr a pipe (not a regular file): the daemon must switch to syslog.
    out=$("$BIN" --endpoints="$EP1" --cacert="$ETCD_CACERT" --cert="$ETCD_CERT" \
        --key="$ETCD_KEY" --user=root:rootpw "$F" 2>&1 </dev/null | cat)
    check "daemonized: mounted, nothing on the caller's stderr ($out)" is_mounted "$F"
    check "daemonized: 'mounted' went to syslog as etcdfs[PID]" \
        wait_until 5 grep -q "etcdfs\[[0-9]*\]: mounted" "$SL"
    umount_etcdfs "$F"
    check "daemonized: 'unmounting' went to syslog" wait_until 5 grep -q "etcdfs\[[0-9]*\]: unmounting" "$SL"
else
    ok "# SKIP syslog check (a syslog daemon owns /dev/log, or not root)"
fi

done_testing
