//! What this kernel offers for impairments, each mechanism tried for real in a throwaway
//! network namespace (a helper thread that `unshare`s one and exits with it), since a config
//! option, a module or a sysctl can each take a feature away.

use std::fmt;
use std::sync::OnceLock;

use berth_netlink::{Handle, Netlink, TcClock};
use serde::Serialize;

use crate::delay_line::{MARK, open_packet, open_tap};
use crate::netem;
use crate::nft::{EgressRules, Tables};
use crate::shape;

/// Whether a mechanism works here, and if not why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state", content = "why")]
pub enum Availability {
    Yes,
    No(String),
}

impl Availability {
    pub fn is_yes(&self) -> bool {
        *self == Availability::Yes
    }

    fn from<E: std::error::Error + 'static>(r: Result<(), E>) -> Availability {
        match r {
            Ok(()) => Availability::Yes,
            Err(e) => Availability::No(berth_netlink::error_chain(&e)),
        }
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Availability::Yes => f.write_str("yes"),
            Availability::No(why) => write!(f, "no: {why}"),
        }
    }
}

/// The mechanisms, each with the kernel feature it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// `sch_netem` (CONFIG_NET_SCH_NETEM): every impairment in one qdisc.
    pub netem: Availability,
    /// `sch_tbf` (CONFIG_NET_SCH_TBF): rate.
    pub tbf: Availability,
    /// An nftables netdev egress chain with `numgen` and `fwd` (CONFIG_NETFILTER_EGRESS,
    /// CONFIG_NFT_NUMGEN, CONFIG_NFT_FWD_NETDEV): loss, and the way to the delay line.
    pub nft_egress: Availability,
    /// TAP devices (CONFIG_TUN, /dev/net/tun): the delay line's input.
    pub tap: Availability,
    /// AF_PACKET sockets (CONFIG_PACKET): the delay line's output.
    pub packet: Availability,
}

impl Capabilities {
    /// The delay line needs all three of its parts.
    pub fn delay_line(&self) -> Availability {
        for (what, a) in [
            ("nftables netdev egress with fwd", &self.nft_egress),
            ("TAP devices", &self.tap),
            ("AF_PACKET sockets", &self.packet),
        ] {
            if let Availability::No(why) = a {
                return Availability::No(format!("{what}: {why}"));
            }
        }
        Availability::Yes
    }
}

/// The kernel's answer, probed once per process.
pub fn probe() -> Capabilities {
    static CAPS: OnceLock<Capabilities> = OnceLock::new();
    CAPS.get_or_init(probe_now).clone()
}

#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("unshare a throwaway network namespace")]
    Unshare(#[source] std::io::Error),
    #[error("open rtnetlink")]
    Netlink(#[source] berth_netlink::OpenError),
    #[error("no loopback interface in a fresh namespace")]
    NoLoopback,
    #[error(transparent)]
    Link(#[from] berth_netlink::LinkError),
    #[error(transparent)]
    Tc(#[from] berth_netlink::TcError),
    #[error(transparent)]
    Netem(#[from] netem::NetemError),
    #[error(transparent)]
    Nft(#[from] crate::nft::NftError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the probe thread panicked")]
    Panicked,
}

fn probe_now() -> Capabilities {
    let result = std::thread::spawn(|| -> Result<Capabilities, ProbeError> {
        // SAFETY: unshare(2) with CLONE_NEWNET affects only this thread, which exits after
        // the probe and takes the namespace with it.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
            return Err(ProbeError::Unshare(std::io::Error::last_os_error()));
        }
        let nl = Netlink::open_current().map_err(ProbeError::Netlink)?;
        let lo = nl.link_by_name("lo")?.ok_or(ProbeError::NoLoopback)?;
        nl.set_up(lo.index)?;
        Ok(Capabilities {
            netem: Availability::from(netem::probe(lo.index)),
            tbf: Availability::from(probe_tbf(&nl, lo.index)),
            nft_egress: Availability::from(probe_nft(lo.index)),
            tap: Availability::from(open_tap("berth-probe0").map(drop).map_err(ProbeError::Io)),
            packet: Availability::from(
                open_packet(lo.index, MARK)
                    .map(drop)
                    .map_err(ProbeError::Io),
            ),
        })
    })
    .join()
    .map_err(|_| ProbeError::Panicked)
    .and_then(|r| r);
    match result {
        Ok(caps) => caps,
        Err(e) => {
            let why = Availability::No(format!("probe failed: {}", berth_netlink::error_chain(&e)));
            Capabilities {
                netem: why.clone(),
                tbf: why.clone(),
                nft_egress: why.clone(),
                tap: why.clone(),
                packet: why,
            }
        }
    }
}

fn probe_tbf(nl: &Netlink, index: u32) -> Result<(), ProbeError> {
    let clock = TcClock::read()?;
    nl.add_tbf(
        index,
        shape::HANDLE,
        Handle::ROOT,
        &shape::tbf(1_000_000, 1500, &clock),
    )?;
    nl.del_qdisc(index, Handle::ROOT, shape::HANDLE)?;
    Ok(())
}

fn probe_nft(index: u32) -> Result<(), ProbeError> {
    let mut tables = Tables::open()?;
    let rules = EgressRules {
        loss_ppm: Some(1),
        delay_line: Some((index, MARK)),
    };
    tables.replace("berth-probe", "lo", &rules)?;
    tables.delete("berth-probe")?;
    Ok(())
}
