#!/usr/bin/env bash
# demo.sh — the first command for a newcomer: installs what is missing, builds etcdfs, starts a
# local etcd (state in ./.demo/), loads a Kubernetes-shaped /registry and mounts it at ./mnt.
# `examples/demo.sh stop` unmounts and stops everything it started; `clean` also drops ./.demo.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${DEMO_BUILD:-build}                 # build dir, relative to the source tree
STATE=$ROOT/.demo
MNT=$ROOT/mnt
KEYS=${DEMO_KEYS:-2000}
DEFAULT_PORT=23790

if [ -t 1 ]; then B=$'\033[1m' R=$'\033[31m' N=$'\033[0m'; else B="" R="" N=""; fi
say()  { printf '%s==>%s %s\n' "$B" "$N" "$*"; }
warn() { printf 'demo: %s\n' "$*" >&2; }
die()  { printf '%sdemo: %s%s\n' "$R" "$*" "$N" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root for: $* (install sudo or run as root)"; fi
}

# ---- dependencies ---------------------------------------------------------------------------

missing_deps() {
    local m=() c
    for c in meson ninja cc pkg-config protoc-c etcd etcdctl fusermount3; do
        command -v "$c" >/dev/null || m+=("$c")
    done
    if command -v pkg-config >/dev/null; then
        for c in fuse3 libnghttp2 openssl libprotobuf-c; do
            pkg-config --exists "$c" || m+=("$c(dev)")
        done
    fi
    echo "${m[*]}"
}

install_deps() {
    local m
    m=$(missing_deps)
    [ -z "$m" ] && return 0
    say "installing missing tools: $m"
    if [ -x "$ROOT/tests/deps.sh" ] || [ -f "$ROOT/tests/deps.sh" ]; then
        as_root bash "$ROOT/tests/deps.sh" || die "tests/deps.sh failed"
    else
        command -v apt-get >/dev/null || die "no apt-get: install by hand: $m"
        as_root apt-get update -q || die "apt-get update failed"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q build-essential \
            meson ninja-build pkg-config libfuse3-dev fuse3 libnghttp2-dev libssl-dev \
            libprotobuf-c-dev protobuf-c-compiler etcd-server etcd-client inotify-tools \
            || die "apt-get install failed"
    fi
    m=$(missing_deps)
    [ -z "$m" ] || die "still missing after install: $m"
}

# ---- build ----------------------------------------------------------------------------------

build() {
    cd "$ROOT" || die "cannot cd to $ROOT"
    if [ ! -f "$BUILD/build.ninja" ]; then
        say "configuring ($BUILD/)"
        meson setup "$BUILD" >"$STATE/meson.log" 2>&1 || { tail -20 "$STATE/meson.log"; die "meson setup failed (log: .demo/meson.log)"; }
    fi
    say "building"
    ninja -C "$BUILD" >"$STATE/build.log" 2>&1 || { tail -30 "$STATE/build.log"; die "build failed (log: .demo/build.log)"; }
    [ -x "$BUILD/fs/etcdfs" ] || die "build did not produce $BUILD/fs/etcdfs"
    [ -x "$BUILD/tools/gen-registry" ] || die "build did not produce $BUILD/tools/gen-registry"
}

# ---- etcd -----------------------------------------------------------------------------------

port_busy() {   # something listens on 127.0.0.1:$1
    if command -v ss >/dev/null; then
        [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

pid_is() {      # pid $1 is alive and its command line mentions $2
    [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$2"
}

etcd_pid() { local p; p=$(cat "$STATE/etcd.pid" 2>/dev/null); pid_is "$p" "$STATE/etcd" && echo "$p"; }
etcd_url() { echo "http://127.0.0.1:$(cat "$STATE/port")"; }
ctl() { ETCDCTL_API=3 etcdctl --endpoints="$(etcd_url)" "$@"; }

etcd_healthy() { ctl --command-timeout=2s endpoint health >/dev/null 2>&1; }

start_etcd() {
    if [ -n "$(etcd_pid)" ] && etcd_healthy; then
        say "etcd already running at $(etcd_url) (pid $(etcd_pid))"
        return 0
    fi
    [ -n "$(etcd_pid)" ] && kill "$(etcd_pid)" 2>/dev/null
    local port old
    old=$(cat "$STATE/port" 2>/dev/null)
    for port in $old $DEFAULT_PORT $(seq 23800 2 23898); do
        port_busy "$port" || port_busy $((port + 1)) || break
    done
    port_busy "$port" && die "no free port for etcd near $DEFAULT_PORT"
    # etcd remembers its peer URL in the data dir: a different port needs a fresh one.
    [ "$port" != "$old" ] && rm -rf "$STATE/etcd"
    echo "$port" >"$STATE/port"
    say "starting etcd at http://127.0.0.1:$port (data in .demo/etcd, log .demo/etcd.log)"
    local peer="http://127.0.0.1:$((port + 1))"
    nohup etcd --name demo --data-dir "$STATE/etcd" \
        --listen-client-urls "http://127.0.0.1:$port" \
        --advertise-client-urls "http://127.0.0.1:$port" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "demo=$peer" >"$STATE/etcd.log" 2>&1 </dev/null &
    echo $! >"$STATE/etcd.pid"
    for _ in $(seq 100); do
        etcd_healthy && return 0
        pid_is "$(cat "$STATE/etcd.pid")" etcd || { tail -5 "$STATE/etcd.log"; die "etcd exited (log: .demo/etcd.log)"; }
        sleep 0.2
    done
    die "etcd did not become healthy in 20 s (log: .demo/etcd.log)"
}

load_registry() {
    local n
    # etcdctl 3.4 has no --count-only; a Range's count covers every match even with a limit.
    n=$(ctl get --prefix /registry/ --limit=1 -w json 2>/dev/null | grep -o '"count":[0-9]*' | cut -d: -f2)
    if [ "${n:-0}" -ge "$KEYS" ]; then
        say "/registry already holds $n keys"
        return 0
    fi
    say "loading a Kubernetes-shaped /registry ($KEYS keys)"
    "$ROOT/$BUILD/tools/gen-registry" --endpoints="$(etcd_url)" --keys "$KEYS" \
        || die "gen-registry failed"
}

# ---- mount ----------------------------------------------------------------------------------

is_mounted() { grep -qs " $MNT fuse" /proc/mounts; }

etcdfs_pid() {  # the daemon serving $MNT
    local p
    for p in $(pgrep -x etcdfs 2>/dev/null); do
        pid_is "$p" "$MNT" && { echo "$p"; return 0; }
    done
    return 1
}

unmount() {
    is_mounted || return 0
    fusermount3 -u "$MNT" 2>/dev/null || as_root umount "$MNT" 2>/dev/null || {
        warn "$MNT is busy (a shell or program is inside it?); detaching it lazily"
        fusermount3 -uz "$MNT" 2>/dev/null || as_root umount -l "$MNT"
    }
}

check_fuse() {
    [ -e /dev/fuse ] || die "/dev/fuse is missing: load the fuse module (modprobe fuse) or run the container with --device /dev/fuse"
    [ -r /dev/fuse ] && [ -w /dev/fuse ] || die "/dev/fuse is not open to $(id -un) ($(stat -c %A /dev/fuse)); Debian makes it crw-rw-rw-: 'sudo chmod 666 /dev/fuse', or run the demo as root"
}

mount_fs() {
    if is_mounted; then
        if timeout 5 ls "$MNT/registry" >/dev/null 2>&1; then
            say "etcdfs already mounted at mnt/ (pid $(etcdfs_pid || echo '?')): remounting"
        else
            say "stale mount at mnt/: remounting"
        fi
        unmount
    fi
    mkdir -p "$MNT"
    say "mounting $(etcd_url) at mnt/"
    local t0 t1
    t0=$(date +%s%N)
    "$ROOT/$BUILD/fs/etcdfs" --endpoints="$(etcd_url)" "$MNT" 2>"$STATE/etcdfs.log" \
        || { cat "$STATE/etcdfs.log" >&2; die "etcdfs failed to mount (log: .demo/etcdfs.log)"; }
    t1=$(date +%s%N)
    is_mounted || die "etcdfs returned but nothing is mounted at mnt/"
    say "mounted in $(( (t1 - t0) / 1000000 )) ms"
}

# ---- commands -------------------------------------------------------------------------------

guide() {
    local url
    url=$(etcd_url)
    cat <<EOF

etcdfs is mounted: every key under $url is a file in mnt/.

  cd $ROOT
  export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=$url

  ls mnt/registry                                  # resource types, as kube-apiserver stores them
  ls mnt/registry/pods/default | head
  cat mnt/registry/namespaces/kube-system          # the value of /registry/namespaces/kube-system
  grep -rl '"app":"nginx"' mnt/registry/pods | head  # grep the whole cluster state
  find mnt/registry -type f | wc -l                # one file per key
  ls mnt/.cluster && cat mnt/.cluster/status       # the cluster itself, as files

  echo hello > mnt/registry/configmaps/default/greeting   # a Put
  etcdctl get /registry/configmaps/default/greeting
  etcdctl put /registry/configmaps/default/greeting bonjour  # a remote change...
  cat mnt/registry/configmaps/default/greeting               # ...is visible at once
  rm mnt/registry/configmaps/default/greeting              # a Delete

  inotifywait -m -r mnt/registry/configmaps &      # remote changes raise inotify events
  etcdctl put /registry/configmaps/default/x y

When done:  examples/demo.sh stop     (unmounts mnt/, stops the demo etcd)
            examples/demo.sh clean    (also deletes .demo/ and mnt/)
EOF
}

cmd_start() {
    mkdir -p "$STATE" || die "cannot create $STATE"
    install_deps
    check_fuse
    build
    start_etcd
    load_registry
    mount_fs
    guide
}

cmd_stop() {
    local p
    if is_mounted; then
        p=$(etcdfs_pid)
        say "unmounting mnt/"
        unmount
        # The daemon exits once the kernel drops the mount; give it a moment to flush.
        for _ in $(seq 50); do pid_is "$p" etcdfs || break; sleep 0.1; done
        pid_is "$p" etcdfs && kill "$p"
    fi
    p=$(etcd_pid)
    if [ -n "$p" ]; then
        say "stopping etcd (pid $p)"
        kill "$p"
        for _ in $(seq 100); do pid_is "$p" etcd || break; sleep 0.1; done
        pid_is "$p" etcd && kill -9 "$p"
    fi
    rm -f "$STATE/etcd.pid"
    say "stopped; nothing of the demo is running (data kept in .demo/, 'clean' removes it)"
}

cmd_status() {
    if [ -n "$(etcd_pid)" ]; then echo "etcd: running at $(etcd_url) (pid $(etcd_pid))"
    else echo "etcd: stopped"; fi
    if is_mounted; then echo "mount: $MNT (pid $(etcdfs_pid || echo '?'))"
    else echo "mount: none"; fi
}

case "${1:-start}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    clean) cmd_stop; rm -rf "$STATE"; rmdir "$MNT" 2>/dev/null; say "removed .demo/ and mnt/" ;;
    -h|--help|help) echo "usage: examples/demo.sh [start|stop|status|clean]" ;;
    *) die "unknown command '$1' (start, stop, status, clean)" ;;
esac
