#!/usr/bin/env bash
# The demo on the embedded defaults: a throwaway namespace plays the host, two namespaces play
# containers; both are attached through the default Berth conflist (loopback, then bridge with
# host-local IPAM and ipMasq) with our release binaries, ping each other and the gateway, and
# everything is removed again — also when a step fails. The real host network is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "demo: needs root to create network namespaces: sudo -E $0" >&2
  exit 1
fi
command -v ip >/dev/null || { echo "demo: needs iproute2 (apt-get install iproute2)" >&2; exit 1; }
command -v ping >/dev/null || command -v busybox >/dev/null ||
  { echo "demo: needs ping or busybox (apt-get install busybox-static)" >&2; exit 1; }

echo "demo: building the plugins (release)…" >&2
cargo build --release --quiet -p loopback -p bridge -p host-local -p berth-cni --bins
bin=$PWD/target/release

tag=bd$$
host=$tag-host
ctrs=("$tag-c1" "$tag-c2")
work=$(mktemp -d /tmp/berth-demo.XXXXXX)

cleanup() {
  set +e
  for c in "${ctrs[@]}"; do
    [[ -e /run/netns/$c ]] && ip netns exec "$host" env NETCONFPATH="$work/net.d" CNI_PATH="$bin" \
      CNI_CACHE_DIR="$work/cache" "$bin/berth-cnitool" del berth "/run/netns/$c" "$c" 2>/dev/null
    ip netns del "$c" 2>/dev/null
  done
  ip netns del "$host" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$host"
ip -n "$host" link set lo up
for c in "${ctrs[@]}"; do ip netns add "$c"; done

# The default network: a bridge and subnet that collide with neither docker (172.17.0.0/16)
# nor podman (10.88.0.0/16).
mkdir -p "$work/net.d"
cat > "$work/net.d/10-berth.conflist" <<JSON
{
  "cniVersion": "1.1.0",
  "name": "berth",
  "plugins": [
    {"type": "loopback"},
    {"type": "bridge", "bridge": "berth0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "dataDir": "$work/ipam",
              "ranges": [[{"subnet": "10.210.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
  ]
}
JSON

# iputils ping if installed, else busybox's.
if command -v ping >/dev/null; then ping=(ping); else ping=(busybox ping); fi

cni() { ip netns exec "$host" env NETCONFPATH="$work/net.d" CNI_PATH="$bin" CNI_CACHE_DIR="$work/cache" "$bin/berth-cnitool" "$@"; }

declare -A addr
for c in "${ctrs[@]}"; do
  result=$(cni add berth "/run/netns/$c" "$c")
  addr[$c]=$(sed -n 's/.*"address": "\([0-9.]*\)\/.*/\1/p' <<<"$result" | head -n1)
  printf 'demo: %-12s eth0 %s\n' "$c" "${addr[$c]}"
done

echo "demo: ${ctrs[0]} -> ${ctrs[1]} (${addr[${ctrs[1]}]}):"
ip netns exec "${ctrs[0]}" "${ping[@]}" -c 3 -W 1 "${addr[${ctrs[1]}]}"
echo "demo: ${ctrs[1]} -> gateway 10.210.0.1:"
ip netns exec "${ctrs[1]}" "${ping[@]}" -c 1 -W 1 10.210.0.1
cni check berth "/run/netns/${ctrs[0]}" "${ctrs[0]}" && echo "demo: CHECK passed"
echo "demo: done; removing everything" >&2
