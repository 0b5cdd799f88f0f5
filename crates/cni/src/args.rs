//! The `CNI_*` environment of a plugin call, parsed and validated before anything is touched.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{CniError, ErrorCode};
use crate::names::{ContainerId, IfName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnv,
                    format!("unknown CNI_COMMAND {other:?}"),
                ));
            }
        })
    }

    /// The variables the reference skel requires for each verb.
    fn required(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Status | Command::Gc => &["CNI_PATH"],
            Command::Version => &[],
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CNI_ARGS`: `K1=V1;K2=V2`, kept in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(Vec<(String, String)>);

impl CniArgs {
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut pairs = Vec::new();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                CniError::new(
                    ErrorCode::InvalidEnv,
                    format!("CNI_ARGS: invalid pair {pair:?} (expected KEY=VALUE)"),
                )
            })?;
            pairs.push((k.to_owned(), v.to_owned()));
        }
        Ok(CniArgs(pairs))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    pub fn from_pairs(pairs: Vec<(String, String)>) -> CniArgs {
        CniArgs(pairs)
    }

    pub fn to_env_string(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Arguments of ADD, CHECK and DEL. The container id and interface name are validated; the
/// netns is required for ADD and CHECK (checked at parse time), optional for DEL.
#[derive(Debug, Clone)]
pub struct CmdArgs {
    pub command: Command,
    pub container_id: ContainerId,
    netns: Option<PathBuf>,
    pub ifname: IfName,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
    /// The configuration bytes as received, passed unchanged to delegated plugins.
    pub stdin: Vec<u8>,
}

impl CmdArgs {
    pub fn new(
        command: Command,
        container_id: ContainerId,
        netns: Option<PathBuf>,
        ifname: IfName,
        path: Vec<PathBuf>,
    ) -> CmdArgs {
        CmdArgs {
            command,
            container_id,
            netns,
            ifname,
            args: CniArgs::default(),
            path,
            stdin: Vec::new(),
        }
    }

    /// The container's netns. ADD and CHECK always have one (validated by `from_env`).
    pub fn netns(&self) -> Result<&Path, CniError> {
        self.netns.as_deref().ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidEnv,
                "required env variables [CNI_NETNS] missing",
            )
        })
    }

    pub fn netns_opt(&self) -> Option<&Path> {
        self.netns.as_deref()
    }
}

/// Arguments of STATUS and GC, which concern a network rather than one container.
#[derive(Debug, Clone)]
pub struct NetworkArgs {
    pub path: Vec<PathBuf>,
    pub stdin: Vec<u8>,
}

/// What `CmdArgs::from_env` finds for each verb.
#[derive(Debug, Clone)]
pub enum Invocation {
    Attachment(CmdArgs),
    Network(Command, NetworkArgs),
    Version,
}

/// Reads `CNI_PATH` as a colon-separated list, skipping empty entries.
pub fn split_path(s: &str) -> Vec<PathBuf> {
    std::env::split_paths(&OsString::from(s))
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

impl CmdArgs {
    /// Parses the environment through `env` (tests pass a map; `run` passes `std::env::var`).
    /// Missing variables are reported together, with code 4, before anything else happens.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        let command = Command::parse(&get("CNI_COMMAND").ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidEnv,
                "required env variables [CNI_COMMAND] missing",
            )
        })?)?;
        let missing: Vec<&str> = command
            .required()
            .iter()
            .copied()
            .filter(|k| get(k).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                ErrorCode::InvalidEnv,
                format!("required env variables [{}] missing", missing.join(" ")),
            ));
        }
        let path = get("CNI_PATH").map(|p| split_path(&p)).unwrap_or_default();
        match command {
            Command::Version => Ok(Invocation::Version),
            Command::Status | Command::Gc => Ok(Invocation::Network(
                command,
                NetworkArgs {
                    path,
                    stdin: Vec::new(),
                },
            )),
            Command::Add | Command::Del | Command::Check => {
                let container_id =
                    ContainerId::try_from(get("CNI_CONTAINERID").unwrap_or_default().as_str())?;
                let ifname = IfName::try_from(get("CNI_IFNAME").unwrap_or_default().as_str())?;
                let args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?;
                let mut cmd = CmdArgs::new(
                    command,
                    container_id,
                    get("CNI_NETNS").map(PathBuf::from),
                    ifname,
                    path,
                );
                cmd.args = args;
                Ok(Invocation::Attachment(cmd))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn add_needs_everything() {
        let e = CmdArgs::from_env(env(&[("CNI_COMMAND", "ADD"), ("CNI_PATH", "/x")])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEnv);
        assert!(
            e.msg.contains("CNI_CONTAINERID CNI_NETNS CNI_IFNAME"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn del_without_netns_is_fine() {
        let inv = CmdArgs::from_env(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/a::/b"),
            ("CNI_ARGS", "IgnoreUnknown=1;IP=10.0.0.5"),
        ]))
        .unwrap();
        let Invocation::Attachment(args) = inv else {
            panic!("expected attachment")
        };
        assert!(args.netns_opt().is_none());
        assert!(args.netns().is_err());
        assert_eq!(args.path, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(args.args.get("IP"), Some("10.0.0.5"));
    }

    #[test]
    fn rejects_path_tricks_and_bad_names() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_PATH", "/x"),
        ];
        for (id, ifname) in [
            ("../etc", "eth0"),
            ("c1", "a234567890123456"),
            ("c1", "a/b"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push(("CNI_CONTAINERID", id));
            pairs.push(("CNI_IFNAME", ifname));
            let e = CmdArgs::from_env(env(&pairs)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidEnv, "{id} {ifname}");
        }
    }

    #[test]
    fn missing_and_unknown_command() {
        assert_eq!(
            CmdArgs::from_env(env(&[])).unwrap_err().code,
            ErrorCode::InvalidEnv
        );
        assert_eq!(
            CmdArgs::from_env(env(&[("CNI_COMMAND", "FOO")]))
                .unwrap_err()
                .code,
            ErrorCode::InvalidEnv
        );
        assert!(matches!(
            CmdArgs::from_env(env(&[("CNI_COMMAND", "VERSION")])),
            Ok(Invocation::Version)
        ));
    }

    #[test]
    fn cni_args_bad_pair() {
        assert!(CniArgs::parse("A=1;B").is_err());
        assert_eq!(CniArgs::parse("").unwrap().pairs().len(), 0);
        assert_eq!(CniArgs::parse("A=1;B=x=y").unwrap().get("B"), Some("x=y"));
    }
}
