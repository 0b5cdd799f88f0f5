//! A container's CNI attachments: one per network of `--network`, as `eth0`, `eth1`, … in
//! order, with the capability arguments (`-p`, `--mac-address`, `--ip`) on the first.
//!
//! The record names them before ADD runs and forgets each only after its DEL succeeded, so
//! whoever releases the container (its supervisor, or `rm -f` after a crash) knows exactly
//! what to undo, even when ADD was interrupted; whatever the CNI cache holds beyond that for
//! the container (a damaged record, a remnant) is DEL'ed from the cache.

use std::collections::BTreeSet;
use std::path::Path;

use berth_cni::Dns;
use serde_json::{Map, Value};

use crate::names::ContainerId;
use crate::network::hosts::{self, HostsError};
use crate::network::{AttachRequest, NetworkError, Networks};
use crate::state::{AttachmentState, ContainerConfig, ContainerRecord, StateError, Store};
use crate::timing;

/// Errors of the `attachments` module.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("container {id}")]
    Network {
        id: String,
        #[source]
        source: Box<NetworkError>,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Hosts(#[from] HostsError),
}

impl AttachmentError {
    fn network(id: &ContainerId) -> impl FnOnce(NetworkError) -> AttachmentError + '_ {
        move |source| AttachmentError::Network {
            id: id.short().to_owned(),
            source: Box::new(source),
        }
    }
}

/// The interface name of the `index`-th network.
pub fn ifname(index: usize) -> String {
    format!("eth{index}")
}

/// The capability arguments of the first network: `portMappings`, `mac`, `ips`.
pub fn capability_args(config: &ContainerConfig, ifname: &str) -> Map<String, Value> {
    let mut args = Map::new();
    if ifname != self::ifname(0) {
        return args;
    }
    if !config.ports.is_empty() {
        args.insert(
            "portMappings".into(),
            Value::Array(config.ports.iter().map(|p| p.to_cni()).collect()),
        );
    }
    if let Some(mac) = &config.mac {
        args.insert("mac".into(), mac.clone().into());
    }
    if let Some(ip) = config.ip {
        args.insert("ips".into(), Value::Array(vec![ip.to_string().into()]));
    }
    args
}

/// CNI ADD of every network, in order. The attachments are written to the record first (see
/// the module doc). Returns the DNS of the first result that has one.
pub fn attach_all(
    store: &Store,
    networks: &Networks,
    record: &ContainerRecord,
    netns: &Path,
) -> Result<Option<Dns>, AttachmentError> {
    let id = &record.id;
    let names = record.config.network.networks();
    if names.is_empty() {
        return Ok(None);
    }
    store.update_state(id, |s| {
        s.attachments = names
            .iter()
            .enumerate()
            .map(|(i, n)| AttachmentState {
                network: n.to_string(),
                ifname: ifname(i),
                ips: Vec::new(),
                mac: None,
            })
            .collect();
    })?;
    let mut dns = None;
    for (i, name) in names.iter().enumerate() {
        let ifname = ifname(i);
        let mut network = networks
            .load(store, name.as_str())
            .map_err(AttachmentError::network(id))?;
        if i > 0 {
            network = network
                .without_default_routes()
                .map_err(AttachmentError::network(id))?;
        }
        let request = AttachRequest {
            id,
            netns,
            ifname: &ifname,
            capability_args: capability_args(&record.config, &ifname),
        };
        let result = networks
            .attach(&network, &request)
            .map_err(AttachmentError::network(id))?;
        // The container's interface: the result entry with a sandbox and our name.
        let iface = result
            .interfaces
            .iter()
            .position(|i| i.name == ifname && i.sandbox.is_some());
        let ips: Vec<_> = result
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none() || ip.interface == iface)
            .map(|ip| ip.address)
            .collect();
        let mac = iface.and_then(|i| result.interfaces[i].mac.clone());
        store.update_state(id, |s| {
            if let Some(a) = s.attachments.iter_mut().find(|a| a.ifname == ifname) {
                a.ips = ips;
                a.mac = mac;
            }
        })?;
        if dns.is_none() && !result.dns.nameservers.is_empty() {
            dns = Some(result.dns);
        }
    }
    Ok(dns)
}

/// CNI DEL of the attachments `record` names, in reverse order; the record keeps those whose
/// DEL failed, and the peers' hosts files follow. Keeps going; returns every failure.
pub fn detach_all(
    store: &Store,
    networks: &Networks,
    record: &ContainerRecord,
) -> Vec<AttachmentError> {
    let id = &record.id;
    let attachments = &record.state.attachments;
    if attachments.is_empty() {
        return Vec::new();
    }
    let netns = store.netns_path(id);
    let mut errors = Vec::new();
    let mut left = Vec::new();
    for a in attachments.iter().rev() {
        let request = AttachRequest {
            id,
            netns: &netns,
            ifname: &a.ifname,
            capability_args: capability_args(&record.config, &a.ifname),
        };
        if let Err(source) =
            timing::step("cni del", || networks.detach(store, &a.network, &request))
        {
            errors.push(AttachmentError::network(id)(source));
            left.insert(0, a.clone());
        }
    }
    let names: Vec<String> = attachments.iter().map(|a| a.network.clone()).collect();
    let updated = store
        .lock()
        .map_err(AttachmentError::from)
        .and_then(|lock| {
            store.update_state_locked(&lock, id, |s| s.attachments = left)?;
            hosts::refresh(store, &lock, &names)?;
            Ok(())
        });
    if let Err(e) = updated {
        errors.push(e);
    }
    errors
}

/// CNI DEL of what the CNI cache holds for container `id` beyond the attachments its record
/// names ([`Networks::release_cached`]; for a remnant, without a record, everything). Returns
/// the networks concerned (for their hosts files) and the failures.
pub fn release_cached(
    store: &Store,
    networks: &Networks,
    id: &ContainerId,
) -> (BTreeSet<String>, Vec<AttachmentError>) {
    let recorded: Vec<(String, String)> = store
        .load_if_exists(id)
        .ok()
        .flatten()
        .map(|r| {
            r.state
                .attachments
                .iter()
                .map(|a| (a.network.clone(), a.ifname.clone()))
                .collect()
        })
        .unwrap_or_default();
    let (touched, errors) = networks.release_cached(id, &recorded);
    let errors = errors
        .into_iter()
        .map(|e| AttachmentError::network(id)(e))
        .collect();
    (touched, errors)
}
