//! The steps of ADD, named for its failpoints.

use std::fmt;

/// The steps of ADD, in order, named so a test can make ADD fail right after any of them
/// (`Macvlan { failpoint }`) and check that the rollback leaves nothing behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// IPAM ADD returned addresses (undo: IPAM DEL).
    Ipam,
    /// The macvlan exists in the container, down (undo: delete it).
    CreateLink,
    /// arp_notify, ndisc_notify, IPv6 enabled when needed (die with the link).
    Sysctls,
    Addresses,
    LinkUp,
    Routes,
    /// IPv6 duplicate address detection finished.
    Dad,
}

impl Step {
    /// With `ipam`, in order.
    pub const LAYER3: [Step; 7] = [
        Step::Ipam,
        Step::CreateLink,
        Step::Sysctls,
        Step::Addresses,
        Step::LinkUp,
        Step::Routes,
        Step::Dad,
    ];
    /// Without `ipam`: the link only goes up.
    pub const LAYER2: [Step; 2] = [Step::CreateLink, Step::LinkUp];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Ipam => "ipam",
            Step::CreateLink => "create-link",
            Step::Sysctls => "sysctls",
            Step::Addresses => "addresses",
            Step::LinkUp => "link-up",
            Step::Routes => "routes",
            Step::Dad => "dad",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
