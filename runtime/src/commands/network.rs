//! `berth network create|ls|inspect` (`rm` and `reload` are [`Networks::remove`] and
//! [`crate::network::reload`] as they are).

use serde_json::Value;

use crate::network::definition::{NetworkRequest, NetworkSummary};
use crate::network::{Network, NetworkError, Networks};
use crate::state::{StateError, Store};

/// Errors of `berth network inspect`.
#[derive(Debug, thiserror::Error)]
pub enum NetworkInspectError {
    #[error("inspect network {name}")]
    Load {
        name: String,
        #[source]
        source: NetworkError,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("serialize network")]
    Serialize(#[source] serde_json::Error),
}

/// `berth network create`: the flags validated, then the conflist written.
pub fn create(
    store: &Store,
    networks: &Networks,
    request: NetworkRequest,
) -> Result<Network, NetworkError> {
    let spec = request.validate()?;
    networks.create(store, spec)
}

/// `berth network ls`: every network's summary.
pub fn list(store: &Store, networks: &Networks) -> Result<Vec<NetworkSummary>, NetworkError> {
    Ok(networks
        .list_all(store)?
        .into_iter()
        .map(|n| n.summary)
        .collect())
}

/// `berth network inspect`: the summary, the conflist, and the containers attached (name,
/// id, interface, addresses, MAC), as one JSON document.
pub fn inspect(
    store: &Store,
    networks: &Networks,
    name: &str,
) -> Result<Value, NetworkInspectError> {
    let network = networks
        .load(store, name)
        .map_err(|source| NetworkInspectError::Load {
            name: name.to_owned(),
            source,
        })?;
    let containers: Vec<_> = store
        .records()?
        .into_iter()
        .filter_map(|r| {
            let a = r.state.attachments.iter().find(|a| a.network == name)?;
            Some(serde_json::json!({
                "name": r.name.as_str(),
                "id": r.id.as_str(),
                "ifname": a.ifname,
                "ips": a.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "mac": a.mac,
            }))
        })
        .collect();
    let conflist: Value = serde_json::from_slice(&network.list.bytes).unwrap_or_default();
    let mut doc = serde_json::to_value(&network.summary).map_err(NetworkInspectError::Serialize)?;
    if let Some(map) = doc.as_object_mut() {
        map.insert("containers".into(), containers.into());
        map.insert("conflist".into(), conflist);
    }
    Ok(doc)
}
