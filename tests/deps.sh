#!/bin/bash
# deps.sh — installs the Debian 12 packages that the build and the tests need, and only when
# some are missing (dpkg-query), so a prepared machine never touches apt. apt output goes to
# a log file whose tail is shown on failure. Needs root or passwordless sudo to install.
# Usage: tests/deps.sh [--check]   (--check: only report what is missing; exit 1 if anything)
#        tests/deps.sh --optional PKG...   (only these packages; used for the fuzzers' clang)

pkgs=(build-essential meson ninja-build pkg-config libfuse3-dev fuse3 libnghttp2-dev libssl-dev
    libprotobuf-c-dev protobuf-c-compiler etcd-server etcd-client openssl inotify-tools attr vim
    nano rsync procps psmisc tmux jq python3 iproute2 man-db)
# --optional PKG...: install exactly these instead (the caller decides what a failure means).
if [ "${1:-}" = --optional ]; then
    shift
    pkgs=("$@")
    set --
fi
log=${ETCDFS_DEPS_LOG:-${TMPDIR:-/tmp}/etcdfs-deps.log}

say() { printf 'deps: %s\n' "$*"; }

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    say "all ${#pkgs[@]} packages present"
    exit 0
fi
say "missing: ${missing[*]}"
[ "${1:-}" = --check ] && exit 1

if ! command -v apt-get >/dev/null; then
    say "apt-get not found: this script targets Debian 12"
    exit 1
fi
sudo=(env)
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n env)
    else
        say "not root and no passwordless sudo: install the packages above by hand"
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh machine may still run unattended-upgrades: wait for the dpkg lock, do not fail.
apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
: >"$log"
for attempt in 1 2 3; do
    say "apt-get update + install, attempt $attempt (log: $log)"
    if "${sudo[@]}" DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update \
            >>"$log" 2>&1 &&
        "${sudo[@]}" DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" \
            "${missing[@]}" >>"$log" 2>&1; then
        still=()
        for p in "${missing[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
                still+=("$p")
        done
        if [ "${#still[@]}" -eq 0 ]; then
            say "installed ${#missing[@]} packages"
            exit 0
        fi
        say "still missing after install: ${still[*]}"
    fi
    sleep $((attempt * 5))
done
say "apt-get failed 3 times; last lines of $log:"
tail -n 40 "$log" | sed 's/^/deps:   /'
exit 1
