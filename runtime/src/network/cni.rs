//! The CNI operations on attachments, libcni's way (`berth_cni::invoke`): ADD (undone by DEL
//! when it fails), DEL from the result cache, GC, and DEL of whatever the cache holds for a
//! container.

use std::collections::{BTreeMap, BTreeSet};

use berth_cni::invoke::{self, CachedAttachment, InvokeError, RuntimeConf};
use berth_cni::{
    Attachment, CniResult, ContainerId as CniContainerId, IfName, NetConfList, NetworkName,
};

use crate::names::ContainerId;
use crate::state::Store;

use super::{AttachRequest, Network, NetworkError, Networks};

impl Networks {
    fn runtime_conf(&self, req: &AttachRequest<'_>) -> Result<RuntimeConf, NetworkError> {
        let id = CniContainerId::try_from(req.id.as_str()).map_err(|_| NetworkError::CniName {
            what: "container id",
            value: req.id.to_string(),
        })?;
        let ifname = IfName::try_from(req.ifname).map_err(|_| NetworkError::CniName {
            what: "interface name",
            value: req.ifname.to_owned(),
        })?;
        let mut rt = RuntimeConf::new(id, Some(req.netns.to_path_buf()), ifname);
        rt.capability_args = req.capability_args.clone();
        Ok(rt)
    }

    /// CNI ADD of `network`. On failure, DEL of the same list (libcni leaves that to the
    /// caller), so a failed attach leaves nothing behind.
    pub fn attach(
        &self,
        network: &Network,
        req: &AttachRequest<'_>,
    ) -> Result<CniResult, NetworkError> {
        let rt = self.runtime_conf(req)?;
        match self.cni.add_network_list(&network.list, &rt) {
            Ok(result) => Ok(result),
            Err(add) => match self.cni.del_network_list(&network.list, &rt) {
                Ok(()) => Err(NetworkError::Add {
                    network: network.summary.name.clone(),
                    ifname: req.ifname.to_owned(),
                    source: Box::new(add),
                }),
                Err(del) => Err(NetworkError::AddAndDel {
                    network: network.summary.name.clone(),
                    ifname: req.ifname.to_owned(),
                    add: invoke::error_chain(&add),
                    del: invoke::error_chain(&del),
                }),
            },
        }
    }

    /// CNI DEL of the attachment `(network, id, ifname)`. The list comes from the result cache
    /// when there is one (what ADD actually ran), else from the current definition; with
    /// neither (a network removed by hand), there is nothing left to undo.
    pub fn detach(
        &self,
        store: &Store,
        network: &str,
        req: &AttachRequest<'_>,
    ) -> Result<(), NetworkError> {
        let rt = self.runtime_conf(req)?;
        let cached = NetworkName::try_from(network).ok().and_then(|name| {
            self.cni
                .cached_attachments(Some(&name))
                .ok()?
                .into_iter()
                .find(|c| c.container_id == rt.container_id && c.if_name == rt.ifname)
                .and_then(|c| NetConfList::from_bytes(&c.config).ok())
        });
        let list = match cached {
            Some(list) => list,
            None => match self.load(store, network) {
                Ok(n) => n.list,
                Err(NetworkError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        self.cni
            .del_network_list(&list, &rt)
            .map_err(|source| NetworkError::Del {
                network: network.to_owned(),
                ifname: req.ifname.to_owned(),
                source: Box::new(source),
            })
    }

    /// The cache entry of the attachment `(network, id, ifname)`: what its ADD ran and
    /// returned (`None` if there is none).
    pub fn cached_attachment(
        &self,
        network: &str,
        id: &ContainerId,
        ifname: &str,
    ) -> Result<Option<CachedAttachment>, NetworkError> {
        let Ok(name) = NetworkName::try_from(network) else {
            return Ok(None);
        };
        Ok(self
            .cni
            .cached_attachments(Some(&name))?
            .into_iter()
            .find(|c| c.container_id.as_str() == id.as_str() && c.if_name.as_str() == ifname))
    }

    /// CNI GC of every network: DEL of each cached attachment not in `valid`, then the GC verb
    /// with the valid list (host-local releases stale reservations, bridge stale masquerade
    /// rules). Attachments cached for a network whose definition is gone are DEL'ed with their
    /// cached list. Keeps going; returns every failure.
    pub fn gc(
        &self,
        store: &Store,
        valid: &BTreeMap<String, Vec<Attachment>>,
    ) -> Vec<NetworkError> {
        let mut errors = Vec::new();
        let networks = match self.list_all(store) {
            Ok(n) => n,
            Err(e) => return vec![e],
        };
        let none = Vec::new();
        for network in &networks {
            let keep = valid.get(network.summary.name.as_str()).unwrap_or(&none);
            if let Err(source) = self.cni.gc_network_list(&network.list, keep) {
                errors.push(NetworkError::Gc {
                    network: network.summary.name.clone(),
                    source: Box::new(source),
                });
            }
        }
        // Orphans: cache entries of networks that no longer exist.
        let known: Vec<&str> = networks.iter().map(|n| n.summary.name.as_str()).collect();
        match self.cni.cached_attachments(None) {
            Ok(cached) => {
                for c in cached
                    .iter()
                    .filter(|c| !known.contains(&c.network_name.as_str()))
                {
                    let still_valid = valid.get(c.network_name.as_str()).is_some_and(|v| {
                        v.iter()
                            .any(|a| a.container_id == c.container_id && a.ifname == c.if_name)
                    });
                    if still_valid {
                        continue;
                    }
                    let result = NetConfList::from_bytes(&c.config)
                        .map_err(|source| InvokeError::Load {
                            path: self.cni.cache_dir.clone(),
                            source,
                        })
                        .and_then(|list| self.cni.del_network_list(&list, &c.runtime_conf()));
                    if let Err(source) = result {
                        errors.push(NetworkError::Gc {
                            network: c.network_name.to_string(),
                            source: Box::new(source),
                        });
                    }
                }
            }
            Err(e) => errors.push(e.into()),
        }
        errors
    }

    /// CNI DEL of every attachment the CNI cache holds for container `id` but `recorded`
    /// (its record's `(network, ifname)` pairs: normally all of them, since attachments are
    /// recorded before ADD; for a remnant, none). The cached configuration list and runtime
    /// arguments are what ADD ran with, as libcni's DEL from cache. Returns the networks
    /// concerned (for their hosts files) and the failures.
    pub fn release_cached(
        &self,
        id: &ContainerId,
        recorded: &[(String, String)],
    ) -> (BTreeSet<String>, Vec<NetworkError>) {
        let mut touched = BTreeSet::new();
        let cached = match self.cni.cached_attachments(None) {
            Ok(cached) => cached,
            Err(e) => return (touched, vec![NetworkError::from(e)]),
        };
        let mut errors = Vec::new();
        for c in cached
            .iter()
            .filter(|c| c.container_id.as_str() == id.as_str())
        {
            let key = (c.network_name.to_string(), c.if_name.to_string());
            if recorded.contains(&key) {
                continue;
            }
            touched.insert(key.0.clone());
            let deleted = NetConfList::from_bytes(&c.config)
                .map_err(|source| NetworkError::CniName {
                    what: "cached configuration list",
                    value: format!("{}: {source}", key.0),
                })
                .and_then(|list| {
                    self.cni
                        .del_network_list(&list, &c.runtime_conf())
                        .map_err(|source| NetworkError::Del {
                            network: key.0.clone(),
                            ifname: key.1.clone(),
                            source: Box::new(source),
                        })
                });
            if let Err(e) = deleted {
                errors.push(e);
            }
        }
        (touched, errors)
    }
}
