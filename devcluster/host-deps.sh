#!/usr/bin/env bash
# Installs what the dev cluster's real nodes need on the host, only when missing
# (idempotent; no apt traffic when everything is there). Debian/Ubuntu only.
#
#   containerd + runc           the container runtime each kubelet talks to (CRI)
#   containernetworking-plugins bridge, host-local, portmap, loopback (in /usr/lib/cni)
#   iptables, conntrack         kube-proxy's iptables mode and its conntrack clean-up
#   busybox-static              the tiny test image (kiln.local/busybox) is made from it
set -euo pipefail

# command or file that proves each package is installed
declare -A PROVES=(
  [containerd]=containerd
  [runc]=runc
  [containernetworking-plugins]=/usr/lib/cni/bridge
  [iptables]=iptables
  [conntrack]=conntrack
  [busybox-static]=/bin/busybox
)

missing=()
for pkg in "${!PROVES[@]}"; do
  probe="${PROVES[$pkg]}"
  if [[ "$probe" == /* ]]; then [ -e "$probe" ] || missing+=("$pkg")
  else command -v "$probe" >/dev/null || missing+=("$pkg"); fi
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi

if [ "$(id -u)" != 0 ]; then
  echo "host-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "host-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt run (a second helper, unattended upgrades) holds the lock: wait for it.
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
apt_get update -qq
apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged containerd as a system service; the dev cluster runs its own
# instances (own root, state and socket), so the system one is not needed.
if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
  systemctl disable --now containerd >/dev/null 2>&1 || true
fi
