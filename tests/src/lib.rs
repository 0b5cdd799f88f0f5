//! End-to-end tests across the workspace live in `tests/`: conflists run through the
//! `berth-cni` invoker against the real plugin binaries (found with `netns_fixtures::bin`,
//! so build them first: `cargo build --workspace --bins`), and comparisons with Debian's
//! reference plugins in `/usr/lib/cni`.
