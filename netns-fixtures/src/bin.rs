//! Locating the workspace's binaries (plugins, `berth`) from tests.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The path of workspace binary `name`: `$BERTH_BIN_DIR/<name>` if that variable is set, else
/// next to the running test binary's target directory (`target/<profile>/`; test binaries live
/// in `target/<profile>/deps/`).
///
/// # Panics
/// If the binary does not exist, with the command that builds it.
pub fn bin(name: &str) -> PathBuf {
    let exe = env::current_exe().unwrap_or_else(|e| panic!("locate the test binary: {e}"));
    let path = bin_path(name, env::var_os("BERTH_BIN_DIR").as_deref(), &exe);
    if !path.is_file() {
        panic!(
            "binary {name} not found at {}: build it with `cargo build --workspace --bins`",
            path.display()
        );
    }
    path
}

fn bin_path(name: &str, bin_dir: Option<&OsStr>, exe: &Path) -> PathBuf {
    if let Some(dir) = bin_dir {
        return Path::new(dir).join(name);
    }
    let mut dir = exe.parent().unwrap_or(Path::new("."));
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir = dir.parent().unwrap_or(dir);
    }
    dir.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_binaries_look_one_level_up_from_deps() {
        let exe = Path::new("/w/target/debug/deps/bridge-0123abcd");
        assert_eq!(
            bin_path("bridge", None, exe),
            Path::new("/w/target/debug/bridge")
        );
    }

    #[test]
    fn other_binaries_look_next_to_themselves() {
        let exe = Path::new("/w/target/release/berth");
        assert_eq!(
            bin_path("veth", None, exe),
            Path::new("/w/target/release/veth")
        );
    }

    #[test]
    fn bin_dir_overrides() {
        let exe = Path::new("/w/target/debug/deps/x");
        assert_eq!(
            bin_path("bridge", Some(OsStr::new("/opt/cni/bin")), exe),
            Path::new("/opt/cni/bin/bridge")
        );
    }

    #[test]
    #[should_panic(expected = "build it with `cargo build --workspace --bins`")]
    fn missing_binary_panics_with_the_fix() {
        bin("berth-no-such-binary");
    }
}
