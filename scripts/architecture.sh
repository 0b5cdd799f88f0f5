#!/usr/bin/env bash
# Redraws docs/architecture.svg and docs/architecture.png, the picture of docs/ARCHITECTURE.md:
# the workspace's crates and their arrows. The source, docs/architecture.dot, is generated from
# `cargo metadata` by tests/tests/architecture.rs (which also fails the test command when the
# checked-in source no longer matches the crates); Graphviz (Debian's `graphviz`) renders it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/setup.sh
setup_init architecture
require_rust
ensure_packages "${BUILD_PACKAGES[@]}" dot=graphviz
BERTH_WRITE_ARCHITECTURE=1 cargo test -q -p berth-e2e --test architecture -- \
  --exact the_picture_shows_the_crates_as_they_are >/dev/null
dot -Tsvg docs/architecture.dot -o docs/architecture.svg
dot -Tpng -Gdpi=110 docs/architecture.dot -o docs/architecture.png
say "wrote docs/architecture.dot, .svg and .png"
