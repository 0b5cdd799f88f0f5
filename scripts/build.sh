#!/usr/bin/env bash
# Builds the release binaries — `berth`, `berth-cnitool` and every CNI plugin — statically
# linked into target/dist (see build_dist in scripts/lib/setup.sh). Point a runtime's CNI
# plugin directory (CNI_PATH, podman's cni_plugin_dirs, containerd's bin_dir) at target/dist.
#   ./scripts/build.sh [-p PACKAGE ...]     (default: the whole workspace)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh
setup_init build
require_rust
ensure_packages "${BUILD_PACKAGES[@]}"
if (($#)); then build_dist "$@"; else build_dist --workspace --bins; fi
say "static binaries in $DIST_DIR: $(find "$DIST_DIR" -maxdepth 1 -type f -perm -u+x -printf '%f\n' | sort | tr '\n' ' ')"
