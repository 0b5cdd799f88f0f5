//! Fixtures for Berth's privileged tests: throwaway network namespaces and what goes with them.
//! A dev-dependency only.
//!
//! - [`require_root`]: privileged tests fail loudly without root, never skip.
//! - [`TestNetns`] / [`HostAndContainer`]: fresh named namespaces (one plays the host), removed
//!   on drop, also when the test panics.
//! - [`unique_name`]: `bt…` names, unique across processes and threads, ≤ 15 bytes.
//! - [`test_subnet_v4`] / [`test_subnet_v6`]: subnets from 198.18.0.0/15 and `fd42:b347::/48`.
//! - [`bin`]: find a workspace binary; [`CniCall`]: run a plugin inside a namespace.
//! - [`LeakAudit`]: nothing named `bt…` may survive a test.
//! - [`wire`], [`EchoServer`], [`tcp_get`], [`udp_get`]: real traffic between namespaces.
//!
//! ```no_run
//! use netns_fixtures::{HostAndContainer, require_root};
//!
//! #[test]
//! fn veth_reaches_the_container() -> Result<(), Box<dyn std::error::Error>> {
//!     require_root();
//!     let env = HostAndContainer::new()?;
//!     // ... env.host.netlink(), env.ctr.netlink(), env.host.run(|| ...) ...
//!     Ok(())
//! }
//! ```

mod bin;
pub mod images;
mod leaks;
mod names;
mod netns;
mod plugin;
mod registry;
mod root;
mod subnet;
mod traffic;
mod world;

pub use bin::bin;
pub use leaks::LeakAudit;
pub use names::{MAX_NAME, PREFIX, unique_name};
pub use netns::{RUN_NETNS, TestNetns, TestNetnsError, run_netns_names};
pub use plugin::{CniCall, PluginError, PluginOutput, run_plugin};
pub use registry::{
    FixtureError, TestRegistry, TestRegistryBuilder, Throttle, TokenRequest, TokenServer,
};
pub use root::require_root;
pub use subnet::{test_subnet_v4, test_subnet_v6};
pub use traffic::{EchoServer, TrafficError, tcp_get, udp_get, wire};
pub use world::{HostAndContainer, WorldError};
