//! Network namespaces and a synchronous rtnetlink client for Berth's CNI plugins and runtime.
//!
//! - [`Netns`]: an open network namespace; [`Netns::run`] runs a closure inside it on a
//!   throwaway thread, so no thread is ever left in the wrong namespace.
//! - [`Netlink`]: an rtnetlink handle bound to one namespace (opened inside it, usable from any
//!   thread), with verbs for links, veth pairs, bridges, addresses and routes.
//! - [`sysctl`]: `/proc/sys` access for the calling thread's namespace.
//! - [`Rollback`]: undo steps of a failed ADD in reverse order.
//!
//! Every error type implements [`Errno`], so callers can treat ENOENT/ENODEV/ESRCH as
//! "already gone" ([`Errno::is_not_found`]) and recognise EEXIST ([`Errno::is_exists`]).
//!
//! The socket is synchronous (`netlink-sys` + `netlink-packet-route`), as in netavark: plugins
//! are one-shot processes and need no async runtime.

mod addr;
mod bridge;
mod link;
mod macvlan;
mod name;
mod netlink;
mod netns;
mod owned;
mod relocate;
mod rollback;
mod route;
mod socket;
pub mod sysctl;
mod tc;

pub use addr::{Addr, AddrError, AddrOptions, AddrScope};
pub use bridge::{BridgeError, BridgeSpec, BridgeVlan, VlanTarget};
pub use link::{
    BridgePortInfo, Link, LinkError, LinkKind, Mac, MacvlanMode, MacvlanSpec, VethNames, VethPair,
    format_mac,
};
pub use macvlan::MacvlanState;
pub use name::{IfNameError, MAX_IFNAME_LEN, check_ifname};
pub use netlink::{Netlink, OpenError};
pub use netns::{Netns, NetnsError};
pub use owned::OwnedName;
pub use relocate::RelocateError;
pub use rollback::{Rollback, UndoError, error_chain};
pub use route::{IpFamily, MAIN_TABLE, Route, RouteError, RouteScope};
pub use socket::{Errno, NetlinkError};
pub use sysctl::SysctlError;
pub use tc::{
    ETH_P_ALL, ETH_P_IP, ETH_P_IPV6, Filter, Handle, Htb, HtbClass, PSCHED_PATH, Qdisc, Tbf,
    TcClock, TcError, U32Filter, U32Key,
};

/// The `ipnetwork` version used in this API.
pub use ipnetwork;

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers wrap these errors in their own enums; clippy's `result_large_err` (128 bytes)
    /// must not fire there, so keep some headroom.
    #[test]
    fn errors_stay_small() {
        for (name, size) in [
            ("NetlinkError", size_of::<NetlinkError>()),
            ("LinkError", size_of::<LinkError>()),
            ("BridgeError", size_of::<BridgeError>()),
            ("AddrError", size_of::<AddrError>()),
            ("RouteError", size_of::<RouteError>()),
            ("NetnsError", size_of::<NetnsError>()),
            ("OpenError", size_of::<OpenError>()),
            ("SysctlError", size_of::<SysctlError>()),
        ] {
            eprintln!("{name}: {size} bytes");
            // 80: a caller's variant carrying a String, a &str and one of these stays under
            // clippy's 128 bytes (loopback's SetState does).
            assert!(size <= 80, "{name} is {size} bytes");
        }
    }
}
