//! The steps of ADD, in order, named so a test can make ADD fail right after any of them
//! (`Veth { failpoint: Some(step) }`) and check that the rollback leaves nothing behind.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// IPAM ADD returned addresses (undo: IPAM DEL).
    Ipam,
    /// Host mode: `ip_forward` enabled (not undone: host-wide, other networks rely on it).
    Forwarding,
    /// The veth pair exists, both ends named (undo: delete it, which removes everything the
    /// later link steps put on either end).
    CreatePair,
    LinksUp,
    ContainerAddrs,
    ContainerRoutes,
    /// Host mode: the gateway addresses on the host end.
    HostAddrs,
    /// Host mode: the routes to the container addresses via the host end.
    HostRoutes,
    /// Container-to-container mode: the peer end's addresses.
    PeerAddrs,
    /// Host mode with `ipMasq` (undo: delete the rules).
    Masquerade,
}

impl Step {
    /// Host mode's steps, in order.
    pub const HOST: [Step; 9] = [
        Step::Ipam,
        Step::Forwarding,
        Step::CreatePair,
        Step::LinksUp,
        Step::ContainerAddrs,
        Step::ContainerRoutes,
        Step::HostAddrs,
        Step::HostRoutes,
        Step::Masquerade,
    ];

    /// Container-to-container mode's steps, in order.
    pub const PEER: [Step; 6] = [
        Step::Ipam,
        Step::CreatePair,
        Step::LinksUp,
        Step::ContainerAddrs,
        Step::PeerAddrs,
        Step::ContainerRoutes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Ipam => "ipam",
            Step::Forwarding => "forwarding",
            Step::CreatePair => "create-pair",
            Step::LinksUp => "links-up",
            Step::ContainerAddrs => "container-addrs",
            Step::ContainerRoutes => "container-routes",
            Step::HostAddrs => "host-addrs",
            Step::HostRoutes => "host-routes",
            Step::PeerAddrs => "peer-addrs",
            Step::Masquerade => "masquerade",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
