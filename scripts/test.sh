#!/usr/bin/env bash
# The test command (README, .ci/run): `./scripts/test.sh`, as root or as a user with sudo.
# Checks the Rust toolchain, installs the system packages the build and the tests need when they
# are missing, then checks formatting and lints and runs every test. Builds run as the caller;
# test binaries run as root (through `sudo -E` when the caller is not root), because the network
# tests build throwaway network namespaces. They never touch the host's own network.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh
setup_init test

require_rust
# command (or file) = Debian package that provides it
ensure_packages "${BUILD_PACKAGES[@]}" \
  ip=iproute2 iptables=iptables nft=nftables conntrack=conntrack busybox=busybox-static \
  nsenter=util-linux iperf3=iperf3 /usr/lib/cni/host-local=containernetworking-plugins \
  podman=podman docker-registry=docker-registry skopeo=skopeo openssl=openssl dot=graphviz

# Test namespaces are named bt<pid>…; remember any that exist already (another run on this
# machine, a killed benchmark) so the audit below only blames this run.
test_netns() { ip netns list 2>/dev/null | awk '$1 ~ /^bt/ {print $1}' | sort; }
before=$(test_netns)

cargo fmt --all -- --check
# Tests exec the plugin binaries, so build them first (debug profile, like the tests). Cargo's
# progress shows: a first build takes a few minutes.
cargo build --workspace --bins
cargo clippy --workspace --all-targets --quiet -- -D warnings
sudo_test_runner
cargo test --workspace --no-fail-fast

# A real client: podman 4.3's CNI backend (libcni) on our debug plugins, with hand-written and
# `podman network create` conflists (bridge, portmap, firewall, tuning).
as_root env BERTH_CNI_BIN="$PWD/target/debug" BERTH_PODMAN_RUNS=0 scripts/podman-interop.sh

# Leak audit: no namespace created by this run may survive it.
leaks=$(comm -13 <(echo "$before") <(test_netns) | tr '\n' ' ')
if [[ -n $leaks ]]; then
  die "network namespaces leaked by tests: $leaks"
fi
say "all checks passed"
