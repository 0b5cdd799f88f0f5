//! The root check every privileged test starts with.

/// Panics unless the process runs as root (effective uid 0).
///
/// Privileged tests must fail loudly without root, never pass by skipping: a green run that
/// tested nothing is worse than a red one.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "needs root: run ./scripts/test.sh, or the test binaries through sudo -E (see netns-fixtures/README.md)"
        );
    }
}
