//! The name files of a container: `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.
//!
//! They live in the container's directory and are bind-mounted over the image's files, as
//! docker does. `/etc/hosts` lists, besides localhost and the container itself, every other
//! active container sharing one of its networks, under its name (and hostname): that is how
//! containers on a network reach each other by name, without a DNS server. When a container
//! joins or leaves, the hosts files of its peers are rewritten **in place** (truncate + write,
//! never rename): a bind mount pins the inode, so a renamed replacement would not be seen.
//! Every rewrite happens under the store lock, from the records, so the files converge.
//!
//! `resolv.conf` comes from the CNI result's `dns` when it names servers; otherwise it is the
//! host's `/etc/resolv.conf` (read, never written) without localhost nameservers, which
//! cannot work from another network namespace; if none is left, docker's fallback (Google's
//! public resolvers).

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use berth_cni::Dns;

use crate::names::ContainerId;
use crate::state::NetworkMode;
use crate::state::{ContainerRecord, StateError, Store, StoreLock};

/// The host file `resolv.conf` is derived from.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The host file copied for `--network host`.
pub const HOST_HOSTS: &str = "/etc/hosts";
/// docker's fallback when the host has only local resolvers.
const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Where a container's name files are, and where they go inside it.
pub fn files(dir: &Path) -> [(PathBuf, &'static str); 3] {
    [
        (dir.join("hosts"), "/etc/hosts"),
        (dir.join("hostname"), "/etc/hostname"),
        (dir.join("resolv.conf"), "/etc/resolv.conf"),
    ]
}

/// `/etc/hosts` of `me`, listing the peers among `records` (every active container sharing a
/// network with it).
pub fn render_hosts(me: &ContainerRecord, records: &[ContainerRecord], host_hosts: &str) -> String {
    if me.config.network == NetworkMode::Host {
        return host_hosts.to_owned();
    }
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for a in &me.state.attachments {
        for ip in &a.ips {
            out.push_str(&format!(
                "{}\t{}\n",
                ip.ip(),
                host_names(&me.config.hostname, me.name.as_str())
            ));
        }
    }
    let mine: BTreeSet<&str> = me
        .state
        .attachments
        .iter()
        .map(|a| a.network.as_str())
        .collect();
    for peer in records {
        if peer.id == me.id || !peer.is_active() {
            continue;
        }
        let shared: Vec<IpAddr> = peer
            .state
            .attachments
            .iter()
            .filter(|a| mine.contains(a.network.as_str()))
            .flat_map(|a| a.ips.iter().map(|ip| ip.ip()))
            .collect();
        for ip in shared {
            out.push_str(&format!(
                "{ip}\t{}\n",
                host_names(peer.name.as_str(), &peer.config.hostname)
            ));
        }
    }
    out
}

/// `first second`, or just `first` when they are the same.
fn host_names(first: &str, second: &str) -> String {
    if first == second {
        first.to_owned()
    } else {
        format!("{first} {second}")
    }
}

/// `resolv.conf`: the CNI result's DNS if it names servers, else the host's without
/// localhost servers (kept with `--network host`, where they work), else the fallback.
pub fn render_resolv(dns: Option<&Dns>, host: &str, host_network: bool) -> String {
    if let Some(dns) = dns.filter(|d| !d.nameservers.is_empty()) {
        let mut out = String::new();
        for ns in &dns.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        let search: Vec<&str> = dns
            .domain
            .iter()
            .chain(dns.search.iter())
            .map(String::as_str)
            .collect();
        if !search.is_empty() {
            out.push_str(&format!("search {}\n", search.join(" ")));
        }
        if !dns.options.is_empty() {
            out.push_str(&format!("options {}\n", dns.options.join(" ")));
        }
        return out;
    }
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let Some(ip) = words.next() else { continue };
                let local = ip
                    .split('%')
                    .next()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    .is_some_and(|a| a.is_loopback());
                if local && !host_network {
                    continue;
                }
                servers += 1;
                out.push_str(&format!("nameserver {ip}\n"));
            }
            Some("search" | "domain" | "options") => {
                out.push_str(line.trim());
                out.push('\n');
            }
            _ => {}
        }
    }
    if servers == 0 {
        let mut fallback: String = FALLBACK_NAMESERVERS
            .iter()
            .map(|ns| format!("nameserver {ns}\n"))
            .collect();
        fallback.push_str(&out);
        return fallback;
    }
    out
}

/// Replaces the content of `path` keeping its inode (see the module doc). Creates it if
/// missing.
pub fn write_in_place(path: &Path, content: &str) -> Result<(), HostsError> {
    let err = |source| HostsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .map_err(err)?;
    file.write_all(content.as_bytes()).map_err(err)
}

/// Rewrites the hosts file of every container that has one and shares a network in
/// `networks` (the joining or leaving container included, if it still has a directory).
/// Call with the store lock held, after the records changed.
pub fn refresh(store: &Store, _lock: &StoreLock, networks: &[String]) -> Result<(), HostsError> {
    if networks.is_empty() {
        return Ok(());
    }
    let records = store.records()?;
    let host_hosts = fs::read_to_string(HOST_HOSTS).unwrap_or_default();
    let mut errors = None;
    for record in &records {
        let path = store.container_dir(&record.id).join("hosts");
        let on_network = record
            .state
            .attachments
            .iter()
            .any(|a| networks.contains(&a.network));
        if !on_network || !path.exists() {
            continue;
        }
        if let Err(e) = write_in_place(&path, &render_hosts(record, &records, &host_hosts)) {
            errors.get_or_insert(e);
        }
    }
    errors.map_or(Ok(()), Err)
}

/// Writes the three name files of a container that is about to start.
pub fn write_all(
    store: &Store,
    lock: &StoreLock,
    id: &ContainerId,
    dns: Option<&Dns>,
) -> Result<(), HostsError> {
    let records = store.records()?;
    let Some(me) = records.iter().find(|r| &r.id == id) else {
        return Ok(());
    };
    write_files(store, me, &records, dns)?;
    let networks: Vec<String> = me
        .state
        .attachments
        .iter()
        .map(|a| a.network.clone())
        .collect();
    refresh(store, lock, &networks)
}

/// [`write_all`] for a container attached to no network (`none`, `host`): no other
/// container's record bears on its files and no other container rewrites them, so neither
/// the store lock nor the other records are needed (a lab starts many such at once).
pub fn write_unattached(
    store: &Store,
    me: &ContainerRecord,
    dns: Option<&Dns>,
) -> Result<(), HostsError> {
    write_files(store, me, &[], dns)
}

fn write_files(
    store: &Store,
    me: &ContainerRecord,
    records: &[ContainerRecord],
    dns: Option<&Dns>,
) -> Result<(), HostsError> {
    let host_network = me.config.network == NetworkMode::Host;
    let [(hosts, _), (hostname, _), (resolv, _)] = files(&store.container_dir(&me.id));
    let host_hosts = fs::read_to_string(HOST_HOSTS).unwrap_or_default();
    write_in_place(&hosts, &render_hosts(me, records, &host_hosts))?;
    write_in_place(&hostname, &format!("{}\n", me.config.hostname))?;
    let host_resolv = fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default();
    write_in_place(&resolv, &render_resolv(dns, &host_resolv, host_network))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_from_cni_dns() {
        let dns = Dns {
            nameservers: vec!["10.0.0.53".into()],
            domain: Some("corp".into()),
            search: vec!["a.corp".into()],
            options: vec!["ndots:2".into()],
        };
        assert_eq!(
            render_resolv(Some(&dns), "nameserver 1.1.1.1\n", false),
            "nameserver 10.0.0.53\nsearch corp a.corp\noptions ndots:2\n"
        );
    }

    #[test]
    fn resolv_from_host_drops_localhost() {
        let host =
            "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch lan\noptions edns0\n";
        assert_eq!(
            render_resolv(Some(&Dns::default()), host, false),
            "nameserver 192.0.2.1\nsearch lan\noptions edns0\n"
        );
        assert_eq!(
            render_resolv(None, "nameserver 127.0.0.53\nsearch lan\n", false),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch lan\n"
        );
        assert_eq!(
            render_resolv(None, "nameserver 127.0.0.53\n", true),
            "nameserver 127.0.0.53\n"
        );
        assert!(render_resolv(None, "nameserver ::1\n", false).starts_with("nameserver 8.8.8.8"));
    }

    #[test]
    fn in_place_keeps_the_inode() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("hosts");
        write_in_place(&path, "a long first version\n").unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        write_in_place(&path, "short\n").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(fs::read_to_string(&path).unwrap(), "short\n");
    }
}
