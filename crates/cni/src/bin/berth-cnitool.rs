//! `berth-cnitool`: run a network configuration list against a namespace, like the reference
//! `cnitool`, through `berth_cni::invoke`.
//!
//! ```text
//! berth-cnitool add|check|del <network> <netns-path> [container-id]
//! berth-cnitool gc|status <network>
//! ```
//! Environment, as cnitool: `NETCONFPATH` (default /etc/cni/net.d), `CNI_PATH`, `CNI_IFNAME`
//! (default eth0), `CNI_ARGS`, `CAP_ARGS` (JSON object of capability arguments), and
//! `CNI_CACHE_DIR` (default /var/lib/cni). `add` prints the result in the list's version.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_cni::args::split_path;
use berth_cni::invoke::{self, CniConfig, InvokeError, RuntimeConf};
use berth_cni::{CniArgs, CniError, ContainerId, IfName};

const USAGE: &str = "usage: berth-cnitool add|check|del <network> <netns-path> [container-id]\n       berth-cnitool gc|status <network>";

#[derive(Debug, thiserror::Error)]
enum ToolError {
    #[error("{USAGE}")]
    Usage,
    #[error("{0}")]
    Cni(#[from] CniError),
    #[error("{}", invoke::error_chain(.0))]
    Invoke(#[from] InvokeError),
    #[error("CAP_ARGS is not a JSON object: {0}")]
    CapArgs(serde_json::Error),
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// cnitool's default container id: derived from the netns path so add and del agree.
fn container_id_for(netns: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in netns.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("cnitool-{hash:016x}")
}

fn run(argv: &[String]) -> Result<(), ToolError> {
    let (verb, network) = match argv {
        [verb, network, ..] => (verb.as_str(), network.as_str()),
        _ => return Err(ToolError::Usage),
    };
    let confdir = PathBuf::from(env_or("NETCONFPATH", "/etc/cni/net.d"));
    let list = invoke::load_conf_list(&confdir, network)?;
    let cni = CniConfig::new(
        split_path(&env_or("CNI_PATH", "")),
        env_or("CNI_CACHE_DIR", invoke::DEFAULT_CACHE_DIR),
    );
    match verb {
        "gc" => return Ok(cni.gc_network_list(&list, &[])?),
        "status" => return Ok(cni.status_network_list(&list)?),
        "add" | "check" | "del" => {}
        _ => return Err(ToolError::Usage),
    }
    let netns = argv.get(2).ok_or(ToolError::Usage)?;
    let id = argv
        .get(3)
        .cloned()
        .unwrap_or_else(|| container_id_for(netns));
    let mut rt = RuntimeConf::new(
        ContainerId::try_from(id.as_str()).map_err(CniError::from)?,
        Some(PathBuf::from(netns)),
        IfName::try_from(env_or("CNI_IFNAME", "eth0").as_str()).map_err(CniError::from)?,
    );
    rt.args = CniArgs::parse(&env_or("CNI_ARGS", ""))?;
    if let Ok(caps) = std::env::var("CAP_ARGS") {
        rt.capability_args = serde_json::from_str(&caps).map_err(ToolError::CapArgs)?;
    }
    match verb {
        "add" => {
            let result = cni.add_network_list(&list, &rt)?;
            let text = serde_json::to_string_pretty(&result.to_value(list.cni_version))
                .map_err(|e| ToolError::Cni(e.into()))?;
            println!("{text}");
            Ok(())
        }
        "check" => Ok(cni.check_network_list(&list, &rt)?),
        _ => Ok(cni.del_network_list(&list, &rt)?),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(&argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-cnitool: {e}");
            ExitCode::FAILURE
        }
    }
}
