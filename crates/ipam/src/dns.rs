//! `resolvConf`: DNS settings read from a resolv.conf-style file, as the reference does.
//!
//! Lines are trimmed; empty lines and lines starting with `#` or `;` are skipped, as are lines
//! with fewer than two fields. `nameserver` appends one server, `domain` sets the domain
//! (last one wins), `search` and `options` append all their fields. Other keys are ignored.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ErrorKind;

/// The DNS part of a CNI result (field names as in the spec).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("read resolvConf {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DnsError {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Io
    }
}

impl Dns {
    /// Read and parse `path`, a regular file of at most 1 MiB: the path comes from the
    /// configuration, and a FIFO there must not block the plugin forever.
    pub fn from_resolv_conf(path: &Path) -> Result<Dns, DnsError> {
        let text = berth_fs::read_regular(path, 1 << 20).map_err(|source| DnsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Dns::parse(&String::from_utf8_lossy(&text)))
    }

    /// Parse resolv.conf text.
    pub fn parse(text: &str) -> Dns {
        let mut dns = Dns::default();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [key, first, ..] = fields[..] else {
                continue;
            };
            let rest = fields[1..].iter().map(|s| (*s).to_owned());
            match key {
                "nameserver" => dns.nameservers.push(first.to_owned()),
                "domain" => dns.domain = Some(first.to_owned()),
                "search" => dns.search.extend(rest),
                "options" => dns.options.extend(rest),
                _ => {}
            }
        }
        dns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_like_reference() {
        let dns = Dns::parse(
            "# comment\n; other comment\n\n  nameserver 198.18.0.53  \nnameserver 2001:db8::53 extra\n\
             domain a.example\ndomain b.example\nsearch x.example y.example\nsearch z.example\n\
             options ndots:2 rotate\nsortlist 1.2.3.4\nnameserver\n",
        );
        assert_eq!(dns.nameservers, ["198.18.0.53", "2001:db8::53"]);
        assert_eq!(dns.domain.as_deref(), Some("b.example"));
        assert_eq!(dns.search, ["x.example", "y.example", "z.example"]);
        assert_eq!(dns.options, ["ndots:2", "rotate"]);
    }

    #[test]
    fn missing_file_names_path() {
        let err = Dns::from_resolv_conf(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert_eq!(err.to_string(), "read resolvConf /nonexistent/resolv.conf");
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), "nameserver 198.18.0.53\n").unwrap();
        let dns = Dns::from_resolv_conf(tmp.path()).unwrap();
        assert_eq!(dns.nameservers, ["198.18.0.53"]);
        assert_eq!(
            serde_json::to_string(&dns).unwrap(),
            r#"{"nameservers":["198.18.0.53"]}"#
        );
    }
}
