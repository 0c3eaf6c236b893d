#!/bin/bash
# editors.sh — real editors and tools save through the mount with exactly one Put of the edited
# key and nothing else in etcd (a watch on the whole keyspace sees one event): vim (ex mode and
# interactive in tmux, backupcopy yes/no/auto, nowritebackup, :w!), nano in tmux, sed -i, cp,
# tee, install, dd conv=notrunc, rsync. Scratch files (swap, backup, 4913, temporaries) work as
# files but never reach etcd; the rule never takes a name Kubernetes could use; concurrent
# changes: vim sees the mtime change, -o conflict=fail refuses the save (EBUSY).
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/../fixture/etcd.sh"

[ -e /dev/fuse ] || skip_all "no /dev/fuse"
command -v fusermount3 >/dev/null || skip_all "no fusermount3"
command -v python3 >/dev/null || skip_all "no python3 (parses etcdctl's JSON watch output)"
missing=()
for p in vim nano rsync tmux sed install dd tee; do
    command -v "$p" >/dev/null || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ] && [ -n "${ETCDFS_SRC:-}" ]; then
    bash "$ETCDFS_SRC/tests/deps.sh" >&2 || true
    missing=()
    for p in vim nano rsync tmux sed install dd tee; do
        command -v "$p" >/dev/null || missing+=("$p")
    done
fi
[ "${#missing[@]}" -eq 0 ] || skip_all "missing and not installable: ${missing[*]}"

etcd_start || { not_ok "etcd starts"; done_testing; }

MNT=$TEST_TMP/mnt
MNT2=$TEST_TMP/mnt-fail
WLOG=$TEST_TMP/watch.json
EVS=$TEST_TMP/evs.py
export HOME=$TEST_TMP/home      # no ~/.vimrc, ~/.nanorc or viminfo of the user's
mkdir -p "$HOME"

# Events in etcdctl's JSON watch output from byte offset $2: "TYPE KEY VALUE" (value as a
# Python literal), one per line.
cat >"$EVS" <<'EOF'
import base64, json, sys
f = open(sys.argv[1], "rb")
f.seek(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
s = f.read().decode("latin1")
dec, i = json.JSONDecoder(), 0
while True:
    while i < len(s) and s[i].isspace():
        i += 1
    if i >= len(s):
        break
    try:
        o, i = dec.raw_decode(s, i)
    except ValueError:
        break
    for e in o.get("Events") or []:
        kv = e["kv"]
        k = base64.b64decode(kv.get("key", "")).decode("latin1")
        v = base64.b64decode(kv.get("value", "")).decode("latin1")
        print("DELETE" if e.get("type") == 1 else "PUT", k, repr(v))
EOF

# The whole keyspace, appended (the file is never truncated under etcdctl).
_etcd_ctl_for all 1
"${_etcd_ctl[@]}" watch --prefix "" -w json >>"$WLOG" 2>&1 &
WATCH_PID=$!
at_exit kill "$WATCH_PID"
_sent=0
_seen() { python3 "$EVS" "$WLOG" | grep -q "^PUT zz-sentinel 's$_sent'\$"; }
# A sentinel put and seen: every earlier event is in the log.
sync_watch() {
    _sent=$((_sent + 1))
    ectl put zz-sentinel "s$_sent" >/dev/null && wait_until "${1:-10}" _seen
}
check "the watch on the whole keyspace is established" wait_until 15 sync_watch 0.5

mount_etcdfs "$MNT" || { not_ok "mount"; done_testing; }
ok "mounted"
D=$MNT/e
ectl put /e/keep "k" >/dev/null
wait_until 10 test -e "$D/keep"

value() { ectl get "$1" --print-value-only | head -c -1; }
_mark=0
# begin KEY VALUE: sets the key, waits until the mount shows it, remembers the log offset.
begin() {
    ectl put "$1" "$2" >/dev/null
    wait_until 10 cmp -s <(printf '%s' "$2") "$MNT$1"
    sync_watch
    _mark=$(stat -c %s "$WLOG")
}
# events: what the watch saw since begin (the sentinel excluded).
events() {
    sync_watch
    python3 "$EVS" "$WLOG" "$_mark" | grep -v '^PUT zz-sentinel '
}
# saved DESC KEY EXPECTED_VALUE: exactly one event, a PUT of KEY with that value; the value in
# etcd; no junk in the directory.
saved() {
    local desc=$1 key=$2 want=$3 ev want_ev
    ev=$(events)
    want_ev="PUT $key $(python3 -c 'import sys; print(repr(sys.argv[1]))' "$want")"
    check_eq "$desc: exactly one event, the Put of $key" "$want_ev" "$ev"
    check_eq "$desc: value in etcd" "${want}x" "$(value "$key"; printf x)"
    check_eq "$desc: no scratch file left" "f keep" "$(cd "$D" && echo $(ls -A))"
}
ORIG=$'alpha\nbeta\n'
EDITED=$'blpha\nbeta\n'

# ---- vim in ex mode: every backupcopy flavour, nowritebackup, :w!
# backupskip= : vim skips backups under /tmp by default, and the mount lives there.
for variant in "backupcopy=yes" "backupcopy=no" "backupcopy=auto" "nowritebackup" "w!"; do
    begin /e/f "$ORIG"
    set_cmd="set $variant" write_cmd=wq
    [ "$variant" = "w!" ] && set_cmd="set backupcopy=auto" write_cmd="w!"
    (cd "$D" && vim -es -u NONE -i NONE -c 'set backupskip=' -c "$set_cmd" -c '%s/^a/b/' \
        -c "$write_cmd" -c 'qa!' f </dev/null >"$TEST_TMP/vim.out" 2>&1)
    check_eq "vim -es ($variant) exits 0" 0 $?
    saved "vim -es ($variant)" /e/f "$EDITED"
    check "vim -es ($variant): the file is a regular file with a sane mode" \
        bash -c '[ -f "$1" ] && [ "$(( 0$(stat -c %a "$1") & 0600 ))" = 384 ]' _ "$D/f"
done

# ---- tmux-driven interactive programs
TMUX_SOCK=$TEST_TMP/tmux.sock
tm() { tmux -S "$TMUX_SOCK" "$@"; }
tm_stop() { tmux -S "$TMUX_SOCK" kill-server 2>/dev/null; return 0; }
at_exit tm_stop
pane() { tm capture-pane -p -t ed 2>/dev/null; }
pane_has() { pane | grep -q -- "$1"; }
session_gone() { ! tm has-session -t ed 2>/dev/null; }
run_tmux() {    # run_tmux CMD...: a fresh session running CMD in $D
    tm kill-session -t ed 2>/dev/null
    tm new-session -d -s ed -x 120 -y 30 -c "$D" "$@"
}

# vim: insert a line, :wq; no "changed" warning on screen.
begin /e/f "$ORIG"
run_tmux env TERM=xterm vim -u NONE -i NONE -N -c 'set backupskip=' f
wait_until 10 pane_has 'alpha'
tm send-keys -t ed 'ggihello ' Escape ':w' Enter
wait_until 10 pane_has 'written'
screen=$(pane)
tm send-keys -t ed ':q' Enter
check "vim in tmux: saved and quit" wait_until 10 session_gone
saved "vim in tmux (:w, :q)" /e/f $'hello alpha\nbeta\n'
if grep -qi 'changed\|E[0-9][0-9]*:' <<<"$screen"; then
    not_ok "vim in tmux: no warning or error"
    diag "$screen"
else
    ok "vim in tmux: no warning or error"
fi

# vim: a second :w in the same session still sees no change (mtime stable after its save).
begin /e/f "$ORIG"
run_tmux env TERM=xterm vim -u NONE -i NONE -N -c 'set backupskip=' f
wait_until 10 pane_has 'alpha'
tm send-keys -t ed 'x' ':w' Enter
wait_until 10 pane_has 'written'
tm send-keys -t ed 'x' ':w' Enter
wait_until 10 pane_has 'written'
sleep 0.3   # let a (wrong) warning prompt reach the screen before we read it
screen=$(pane)
tm send-keys -t ed ':q!' Enter
wait_until 10 session_gone
if grep -qi 'changed since' <<<"$screen"; then
    not_ok "vim in tmux: a second :w sees no 'changed since reading' warning"
    diag "$screen"
else
    ok "vim in tmux: a second :w sees no 'changed since reading' warning"
fi
check_eq "vim in tmux: two saves, two Puts" 2 "$(events | grep -c '^PUT /e/f ')"
check_eq "vim in tmux: nothing else reached etcd" "" "$(events | grep -v '^PUT /e/f ')"

# vim: a remote change after it read the file → its :w warns "changed since reading it".
begin /e/f "$ORIG"
run_tmux env TERM=xterm vim -u NONE -i NONE -N -c 'set backupskip=' f
wait_until 10 pane_has 'alpha'
before=$(stat -c %Y.%y "$D/f")
ectl put /e/f "$(printf 'remote\n')" >/dev/null
check "remote change: the mtime seen through the mount changes" \
    wait_until 10 bash -c '[ "$(stat -c %Y.%y "$1")" != "$2" ]' _ "$D/f" "$before"
tm send-keys -t ed 'x' ':w' Enter
check "vim in tmux: warns 'changed since reading it'" wait_until 10 pane_has 'changed since reading'
tm send-keys -t ed 'n'
tm send-keys -t ed Escape ':q!' Enter
wait_until 10 session_gone
check_eq "vim in tmux: declining the warning keeps the remote value" "remote" "$(value /e/f)"

# nano: ^O Enter ^X
begin /e/f "$ORIG"
run_tmux env TERM=xterm nano --ignorercfiles f
wait_until 10 pane_has 'alpha'
tm send-keys -t ed 'nano '
tm send-keys -t ed C-o
wait_until 10 pane_has 'File Name to Write'
tm send-keys -t ed Enter
wait_until 10 pane_has 'Wrote'
tm send-keys -t ed C-x
check "nano in tmux: saved and quit" wait_until 10 session_gone
saved "nano (^O Enter ^X)" /e/f $'nano alpha\nbeta\n'

# ---- other tools
printf 'new\n' >"$TEST_TMP/src"
begin /e/f "$ORIG"
check "sed -i" sed -i 's/^a/b/' "$D/f"
saved "sed -i" /e/f "$EDITED"

begin /e/f "$ORIG"
check "cp" cp "$TEST_TMP/src" "$D/f"
saved "cp" /e/f $'new\n'

begin /e/f "$ORIG"
check "tee" bash -c 'printf "new\n" | tee "$1" >/dev/null' _ "$D/f"
saved "tee" /e/f $'new\n'

begin /e/f "$ORIG"
check "install" install -m 0644 "$TEST_TMP/src" "$D/f"
saved "install" /e/f $'new\n'

begin /e/f "$ORIG"
check "dd conv=notrunc" bash -c 'printf b | dd of="$1" conv=notrunc status=none' _ "$D/f"
saved "dd conv=notrunc" /e/f "$EDITED"

begin /e/f "$ORIG"
check "rsync" rsync "$TEST_TMP/src" "$D/f"
saved "rsync" /e/f $'new\n'

begin /e/f "$ORIG"
check "rsync --inplace" rsync --inplace -I "$TEST_TMP/src" "$D/f"
saved "rsync --inplace" /e/f $'new\n'

# ---- scratch files are files for their program, in memory only
begin /e/f "$ORIG"
check "scratch: create, write, fsync, read, rename, unlink of a swap-like name" python3 -c '
import os, sys
d = sys.argv[1]
p = os.path.join(d, ".x.swp")
fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
os.write(fd, b"swap data")
os.fsync(fd)
os.close(fd)
assert open(p, "rb").read() == b"swap data"
assert os.stat(p).st_size == 9, os.stat(p)
assert ".x.swp" in os.listdir(d)
os.rename(p, os.path.join(d, ".x.swo"))
assert open(os.path.join(d, ".x.swo"), "rb").read() == b"swap data"
os.unlink(os.path.join(d, ".x.swo"))
assert ".x.swo" not in os.listdir(d)
' "$D"
check_eq "scratch: nothing reached etcd" "" "$(events)"

# An unlink by install that is never followed by a write of the name is still a delete.
begin /e/g "x"
check "install of a missing source fails" bash -c '! install /nonexistent "$1" 2>/dev/null' _ "$D/g"
rm -f "$D/g"
check "rm: the key is deleted" wait_until 10 bash -c '[ -z "$(ectl get /e/g)" ]'

# ---- the rule never takes a name Kubernetes could use
begin /e/f "$ORIG"
(cd "$D" && printf 'n\n' >4913 && printf 's\n' >sedabc123 && cp "$TEST_TMP/src" .f.abcdef)
check_eq "4913, sedabc123, .f.abcdef made by shell/cp are keys" \
    "$(printf "PUT /e/4913 'n\\\\n'\nPUT /e/sedabc123 's\\\\n'\nPUT /e/.f.abcdef 'new\\\\n'")" \
    "$(events)"
rm -f "$D/4913" "$D/sedabc123" "$D/.f.abcdef"

# ---- concurrent changes
# Default (conflict=overwrite): a write through an fd opened before a remote put wins.
CONFLICT_PY='
import os, subprocess, sys
path, key, ctl = sys.argv[1], sys.argv[2], sys.argv[3:]
fd = os.open(path, os.O_RDWR)
os.read(fd, 100)
subprocess.run(ctl + ["put", key, "remote"], check=True, stdout=subprocess.DEVNULL)
os.lseek(fd, 0, 0)
os.ftruncate(fd, 0)
os.write(fd, b"mine")
try:
    os.close(fd)
except OSError as e:
    print(e.errno)
    sys.exit(0)
print(0)
'
begin /e/f "$ORIG"
_etcd_ctl_for all 1
rc=$(python3 -c "$CONFLICT_PY" "$D/f" /e/f "${_etcd_ctl[@]}")
check_eq "default (overwrite): the save succeeds" 0 "$rc"
check_eq "default (overwrite): the save overwrote the remote change" "mine" "$(value /e/f)"

mount_etcdfs "$MNT2" -o conflict=fail || { not_ok "mount with -o conflict=fail"; done_testing; }
begin /e/f "$ORIG"
wait_until 10 cmp -s <(printf '%s' "$ORIG") "$MNT2/e/f"
rc=$(python3 -c "$CONFLICT_PY" "$MNT2/e/f" /e/f "${_etcd_ctl[@]}")
check_eq "conflict=fail: close reports EBUSY" 16 "$rc"
check_eq "conflict=fail: the remote change is kept" "remote" "$(value /e/f)"
check "conflict=fail: a log line says why" grep -q "write of /e/f failed" "$ETCDFS_LOG"

# vim (backupcopy=no: rename to f~, write f anew) read the file, a remote put, then :w!.
for bkc in yes no; do
    begin /e/f "$ORIG"
    wait_until 10 cmp -s <(printf '%s' "$ORIG") "$MNT2/e/f"
    (cd "$MNT2/e" && vim -es -u NONE -i NONE -c 'set backupskip=' -c "set backupcopy=$bkc" \
        -c "silent !${_etcd_ctl[*]} put /e/f remote >/dev/null" -c '%s/^a/b/' -c 'w!' \
        -c 'qa!' f </dev/null >"$TEST_TMP/vim.out" 2>&1)
    check_eq "conflict=fail, vim backupcopy=$bkc: the remote change is kept" "remote" \
        "$(value /e/f)"
    check_eq "conflict=fail, vim backupcopy=$bkc: only the remote Put reached etcd" \
        "PUT /e/f 'remote'" "$(events)"
    check_eq "conflict=fail, vim backupcopy=$bkc: no scratch file left" "f keep" \
        "$(cd "$MNT2/e" && echo $(ls -A))"
done

done_testing
