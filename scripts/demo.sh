#!/usr/bin/env bash
# The main demo, on the embedded defaults: the `berth` runtime starts networked containers on
# its default network (bridge berth0, 10.210.0.0/16, loopback + bridge + host-local + portmap)
# with the default busybox image built offline from the host's static busybox. A throwaway
# network namespace plays the host and temporary --root/--runroot hold all state, so the real
# host network is never touched; everything is removed at the end, also when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh
setup_init demo

# As a user, everything up to the build runs as the caller (your Rust, your target dir); the
# script then runs itself again through sudo for the part that needs root.
if [[ ${1:-} != --built ]]; then
  require_rust
  ensure_packages "${BUILD_PACKAGES[@]}" ip=iproute2 busybox=busybox-static nsenter=util-linux \
    iptables=iptables nft=nftables
  say "building berth and the plugins (release; a first build takes a few minutes)…"
  build_dist -p berth-runtime -p loopback -p bridge -p host-local -p portmap -p firewall
  if ! is_root; then
    command -v sudo >/dev/null 2>&1 || die "needs root (namespaces, cgroups, mounts): run as root, or install sudo"
    exec sudo "$0" --built
  fi
fi
bin=$PWD/$DIST_DIR

host=bd$$-host
work=$(mktemp -d /tmp/berth-demo.XXXXXX)
# nsenter joins only the network namespace (ip netns exec would also remount /sys and hide
# the cgroup filesystems the runtime needs).
berth() { nsenter --net="/run/netns/$host" "$bin/berth" --root "$work/root" --runroot "$work/run" "$@"; }

cleanup() {
  set +e
  berth rm -f web client >/dev/null 2>&1
  berth system prune >/dev/null 2>&1
  ip netns del "$host" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$host"
ip -n "$host" link set lo up

step() { printf '\n\033[1mdemo: %s\033[0m\n' "$*" >&2; }

step "berth run -d --name web -p 8080:80 busybox httpd -f -p 80 -h /srv"
berth run -d --name web -p 8080:80 -v "$PWD/docs:/srv:ro" busybox httpd -f -p 80 -h /srv
step "berth run -d --name client busybox sleep 300"
berth run -d --name client busybox sleep 300
berth ps

step "client pings web by name over the default bridge"
berth exec client ping -c 2 -W 1 web

step "the published port answers on the host's localhost:8080"
reply=$(printf 'HEAD /ARCHITECTURE.md HTTP/1.0\r\n\r\n' |
  nsenter --net="/run/netns/$host" busybox nc -w 2 127.0.0.1 8080)
echo "${reply%%$'\r'*}"

step "a foreground container's exit code passes through"
set +e; berth run --rm busybox sh -c 'exit 7'; echo "exit code: $?"; set -e

step "berth rm -f web client"
berth rm -f web client
berth ps -a
echo "demo: done; removing the throwaway host namespace and state" >&2
