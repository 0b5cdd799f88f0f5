//! [`HostAndContainer`]: the two-namespace world of a plugin test.

use std::fs;
use std::io;
use std::path::PathBuf;

use tempfile::TempDir;

use crate::netns::{TestNetns, TestNetnsError};

/// Errors of the `world` module.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("create the host namespace")]
    Host(#[source] TestNetnsError),
    #[error("create the container namespace")]
    Container(#[source] TestNetnsError),
    #[error("create the test's temporary directory")]
    TempDir(#[source] io::Error),
}

/// Two fresh namespaces, one playing the host (`host`, where a plugin runs) and one the
/// container (`ctr`, its CNI_NETNS), plus a temporary directory for `dataDir`, lock files and
/// the result cache. Everything is removed on drop.
#[derive(Debug)]
pub struct HostAndContainer {
    pub host: TestNetns,
    pub ctr: TestNetns,
    pub tmp: TempDir,
}

impl HostAndContainer {
    /// # Panics
    /// Without root.
    pub fn new() -> Result<HostAndContainer, WorldError> {
        let host = TestNetns::with_tag("h").map_err(WorldError::Host)?;
        let ctr = TestNetns::with_tag("c").map_err(WorldError::Container)?;
        let tmp = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .map_err(WorldError::TempDir)?;
        for dir in ["data", "cache"] {
            fs::create_dir(tmp.path().join(dir)).map_err(WorldError::TempDir)?;
        }
        Ok(HostAndContainer { host, ctr, tmp })
    }

    /// An empty directory for IPAM state (`dataDir`).
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// An empty directory for the runtime's result cache.
    pub fn cache_dir(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }
}
