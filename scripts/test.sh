#!/usr/bin/env bash
# The test command (README, .ci/run): installs the system packages the tests need when it can,
# then checks formatting and lints and runs every test. Network tests need root; they run in
# throwaway network namespaces and never touch the host's own network.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package that provides it
declare -A packages=(
  [ip]=iproute2
  [iptables]=iptables
  [nft]=nftables
  [conntrack]=conntrack
  [busybox]=busybox-static
  [/usr/lib/cni/host-local]=containernetworking-plugins
)
missing=()
for cmd in "${!packages[@]}"; do
  if [[ $cmd == /* ]]; then [[ -x $cmd ]] || missing+=("${packages[$cmd]}")
  else command -v "$cmd" >/dev/null 2>&1 || missing+=("${packages[$cmd]}"); fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "test: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "test: missing packages: ${missing[*]} (run as root to install them, or install them yourself)" >&2
    exit 1
  fi
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "test: the network tests need root: run with sudo -E (see README)" >&2
  exit 1
fi

# Test namespaces are named bt<pid>…; remember any that exist already (another run on this
# machine, a killed benchmark) so the audit below only blames this run.
test_netns() { ip netns list 2>/dev/null | awk '$1 ~ /^bt/ {print $1}' | sort; }
before=$(test_netns)

cargo fmt --all -- --check
# Tests exec the plugin binaries, so build them first (debug profile, like the tests).
cargo build --workspace --bins --quiet
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --no-fail-fast

# Leak audit: no namespace created by this run may survive it.
leaks=$(comm -13 <(echo "$before") <(test_netns) | tr '\n' ' ')
if [[ -n $leaks ]]; then
  echo "test: network namespaces leaked by tests: $leaks" >&2
  exit 1
fi
