#!/usr/bin/env bash
# mount-kubeadm.sh — mounts the etcd of a kubeadm control plane with the certificates kubeadm
# made. Run as root on a control-plane node:
#   mount-kubeadm.sh [MNT] [etcdfs options...]      (default MNT: /mnt/etcd; e.g. -o ro)
# Environment (each optional):
#   ETCD_ENDPOINTS  default https://127.0.0.1:2379 (kubeadm's etcd listens there)
#   KUBE_PKI        default /etc/kubernetes/pki
#   ETCD_CACERT     default $KUBE_PKI/etcd/ca.crt
#   ETCD_CERT/ETCD_KEY  default $KUBE_PKI/etcd/healthcheck-client.{crt,key}, else
#                   $KUBE_PKI/apiserver-etcd-client.{crt,key} (both are etcd client certs)
#   ETCDFS          the etcdfs binary (default: etcdfs in PATH, else build/fs/etcdfs here)
# Unmount with: fusermount3 -u MNT
set -euo pipefail

case "${1:-}" in -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
MNT=/mnt/etcd
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then MNT=$1; shift; fi

PKI=${KUBE_PKI:-/etc/kubernetes/pki}
ENDPOINTS=${ETCD_ENDPOINTS:-https://127.0.0.1:2379}
CACERT=${ETCD_CACERT:-$PKI/etcd/ca.crt}
if [ -z "${ETCD_CERT:-}" ]; then
    if [ -r "$PKI/etcd/healthcheck-client.crt" ]; then
        ETCD_CERT=$PKI/etcd/healthcheck-client.crt ETCD_KEY=$PKI/etcd/healthcheck-client.key
    else
        ETCD_CERT=$PKI/apiserver-etcd-client.crt ETCD_KEY=$PKI/apiserver-etcd-client.key
    fi
fi
ETCD_KEY=${ETCD_KEY:-${ETCD_CERT%.crt}.key}

for f in "$CACERT" "$ETCD_CERT" "$ETCD_KEY"; do
    [ -r "$f" ] || { echo "mount-kubeadm: cannot read $f (run as root on a kubeadm control-plane node, or set KUBE_PKI)" >&2; exit 1; }
done

if [ -z "${ETCDFS:-}" ]; then
    if command -v etcdfs >/dev/null; then ETCDFS=etcdfs
    else ETCDFS=$(cd "$(dirname "$0")/.." && pwd)/build/fs/etcdfs; fi
fi

mkdir -p "$MNT"
if awk -v m="$(realpath "$MNT")" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; then
    echo "mount-kubeadm: $MNT is already mounted" >&2
    exit 1
fi
"$ETCDFS" --endpoints="$ENDPOINTS" --cacert="$CACERT" --cert="$ETCD_CERT" --key="$ETCD_KEY" \
    "$@" "$MNT"
echo "mount-kubeadm: $ENDPOINTS mounted at $MNT (fusermount3 -u $MNT to unmount)"
