//! The request of `berth run`, in two stages (STYLE §4): [`RunRequest`] holds the flags as
//! typed (the CLI parses into it); [`RunRequest::validate`] turns them into a [`RunSpec`] of
//! validated types, refusing bad input before anything is created. Creation
//! ([`crate::lifecycle::create`]) combines it with the image's defaults into the stored
//! [`ContainerConfig`](crate::state::ContainerConfig).

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use berth_cni::NetworkName;
use berth_image::Reference;

use crate::lifecycle::signal;
use crate::names::{ContainerName, NameError};
use crate::network::DEFAULT_NETWORK;
use crate::network::definition::{DefinitionError, parse_network_name};
use crate::network::ports::{self, PortError, PortMapping};
use crate::sandbox::caps::{CapSet, CapsError};
use crate::sandbox::cgroups::{CpuQuota, Resources};
use crate::sandbox::rootfs::Volume;
use crate::sandbox::user::{UserError, UserSpec};
use crate::sandbox::userns::{UsernsError, UsernsRequest};
use crate::state::NetworkMode;

/// Errors of the `request` module: each names the flag and echoes the input.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Reference(#[from] berth_image::ReferenceError),
    #[error("--cap-add/--cap-drop")]
    Caps(#[from] CapsError),
    #[error(
        "invalid --memory {input:?}: expected a number of bytes with an optional unit b, k, m or g (e.g. 64m, 1g)"
    )]
    Memory { input: String },
    #[error("invalid --memory {input:?}: the minimum is 6m")]
    MemoryTooSmall { input: String },
    #[error("invalid --cpus {input:?}: expected a decimal number of CPUs such as 0.5")]
    Cpus { input: String },
    #[error("invalid --cpus {input:?}: the range is 0.01 to {available}.00 (CPUs available)")]
    CpusRange { input: String, available: usize },
    #[error("invalid --pids-limit {input}: use a positive number, or 0 or -1 for no limit")]
    PidsLimit { input: i64 },
    #[error("invalid -v {input:?}: expected HOST-DIR:CONTAINER-DIR[:ro|rw]")]
    VolumeSyntax { input: String },
    #[error("invalid -v {input:?}: {which} path {path:?} must be absolute and free of `..`")]
    VolumePath {
        input: String,
        which: &'static str,
        path: String,
    },
    #[error("invalid -v {input:?}: unknown option {option:?} (ro or rw)")]
    VolumeOption { input: String, option: String },
    #[error("invalid -v {input:?}: cannot mount over the container's /")]
    VolumeOverRoot { input: String },
    #[error("invalid -v {input:?}: host path {path} does not exist")]
    VolumeSource {
        input: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid -e {input:?}: expected KEY=VALUE or KEY (with a non-empty KEY)")]
    Env { input: String },
    #[error("invalid -w {input:?}: must be an absolute path free of `..`")]
    Workdir { input: String },
    #[error(
        "invalid --hostname {input:?}: use letters, digits, '-' and '.', at most 64 characters"
    )]
    Hostname { input: String },
    #[error("invalid --cgroup-parent {input:?}: use a relative path of [a-zA-Z0-9_.-] components")]
    CgroupParent { input: String },
    #[error("--network {mode} cannot be combined with other networks")]
    NetworkAlone { mode: &'static str },
    #[error("--network {name} is given twice")]
    NetworkTwice { name: String },
    #[error("invalid --network {input:?}: invalid container format container:<name|id>")]
    NetworkContainer { input: String },
    /// docker's refusals for `--network container:X`, in docker's words (its runconfig
    /// `validateNetContainerMode`): the joined namespace, its addresses and its name files
    /// are the other container's.
    #[error("conflicting options: {what} and the network mode")]
    ContainerNetworkConflict { what: &'static str },
    #[error(
        "--network container: joins another container's network namespace, which a user namespace (--userns, --uidmap) of its own cannot own"
    )]
    UsernsContainerNetwork,
    #[error("--network")]
    NetworkName(#[source] DefinitionError),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error("{flag} needs a CNI network: it does not work with --network {mode}")]
    NeedsCniNetwork {
        flag: &'static str,
        mode: &'static str,
    },
    #[error("invalid --ip {input:?}: not an IP address")]
    Ip { input: String },
    #[error(
        "invalid --mac-address {input:?}: expected six hex pairs such as 02:42:ac:11:00:02 (unicast)"
    )]
    Mac { input: String },
    #[error("no command given and image {image} has no default command")]
    NoCommand { image: Reference },
    #[error(transparent)]
    Userns(#[from] UsernsError),
    #[error(
        "a user namespace (--userns, --uidmap) needs a network namespace of its own: it does not work with --network host"
    )]
    UsernsHostNetwork,
    #[error("-u")]
    User(#[source] UserError),
    // Without the image's name (the command line has it): a Reference would make every
    // Result of this error too large to pass around by value.
    #[error("the image's User {user:?}")]
    ImageUser {
        user: String,
        #[source]
        source: UserError,
    },
    #[error("invalid --stop-signal {input:?}: use a name such as TERM or SIGQUIT, or a number")]
    StopSignal { input: String },
    #[error("the image's StopSignal {input:?} names no signal")]
    ImageStopSignal { input: String },
    #[error("invalid --label {input:?}: expected KEY=VALUE or KEY (with a non-empty KEY)")]
    Label { input: String },
    #[error(
        "--privileged cannot be combined with a user namespace (--userns, --uidmap): its root would not be the host's"
    )]
    PrivilegedUserns,
}

/// The flags of `berth run`, as typed (the wire stage). The `berth` binary parses its
/// command line straight into this (clap): the help texts below are the CLI's.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunRequest {
    /// Remove the container when it exits.
    #[arg(long = "rm")]
    pub auto_remove: bool,
    /// Run in the background under a monitor; print the container id.
    #[arg(short, long)]
    pub detach: bool,
    /// Container name (default: generated).
    #[arg(long)]
    pub name: Option<String>,
    /// Hostname (default: the short container id).
    #[arg(long, short = 'h')]
    pub hostname: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the caller's value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// Bind-mount a host directory: HOST:CONTAINER[:ro|rw].
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub volumes: Vec<String>,
    /// Network: a name (repeatable: eth0, eth1, ...), `none`, `host`, or
    /// `container:NAME|ID` (another container's network namespace) (default: berth).
    #[arg(
        long = "network",
        alias = "net",
        value_name = "NAME|none|host|container:CTR"
    )]
    pub networks: Vec<String>,
    /// Publish ports: [IP:]HOST:CONTAINER[/tcp|udp], ranges as 8080-8081:80-81.
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CTR[/PROTO]")]
    pub publish: Vec<String>,
    /// IP address on the first network.
    #[arg(long)]
    pub ip: Option<String>,
    /// MAC address on the first network.
    #[arg(long = "mac-address", value_name = "MAC_ADDRESS")]
    pub mac: Option<String>,
    /// Memory limit (e.g. 64m, 1g); no swap on top.
    #[arg(long, short = 'm')]
    pub memory: Option<String>,
    /// CPU limit in CPUs (e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Maximum number of processes (0 or -1: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Add a capability (NET_ADMIN, CAP_NET_ADMIN or ALL).
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability (or ALL).
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Cgroup parent, relative to each hierarchy's root (default: berth).
    #[arg(long, value_name = "PATH")]
    pub cgroup_parent: Option<String>,
    /// Keep stdin open (pass it to the container).
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// User namespace: host (default: the container's root is host root) or auto (a free
    /// range of 65536 host ids from $BERTH_USERNS_BASE, default 100000).
    #[arg(long, value_name = "host|auto")]
    pub userns: Option<String>,
    /// Map container uids to host uids in a user namespace (repeatable; must map 0).
    #[arg(long, value_name = "CONTAINER:HOST:COUNT")]
    pub uidmap: Vec<String>,
    /// Map container gids to host gids (repeatable; default: like --uidmap).
    #[arg(long, value_name = "CONTAINER:HOST:COUNT")]
    pub gidmap: Vec<String>,
    /// Run as this user (name or uid, optionally :group or :gid; default: the image's User).
    #[arg(short = 'u', long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Replace the image's entrypoint ("" clears it); the image's command is then not used.
    #[arg(long, value_name = "COMMAND")]
    pub entrypoint: Option<String>,
    /// Publish every port the image exposes on a free host port.
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// The signal `stop` sends first (default: the image's StopSignal, else SIGTERM).
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Set a label (KEY=VALUE, or KEY for an empty value); wins over the image's.
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Every capability, no seccomp filter, /proc and /sys writable and unmasked (what
    /// containerlab gives its nodes: sysctls, routes, raw sockets).
    #[arg(long)]
    pub privileged: bool,
    /// The image, then the command and its arguments (default: the image's command).
    // One list, as on the command line: every word after the image is the command's, even
    // one that looks like a flag (`berth run busybox ls -l`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        num_args = 1..,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    pub image_and_command: Vec<String>,
}

/// Validated `berth run` flags, before the image's defaults are applied.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub image: Reference,
    pub command: Vec<String>,
    pub name: Option<ContainerName>,
    pub hostname: Option<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<PathBuf>,
    pub volumes: Vec<Volume>,
    pub network: NetworkMode,
    /// `-p`, one entry per port (ranges expanded); published on the first network.
    pub ports: Vec<PortMapping>,
    /// `--ip` and `--mac-address`: for the first network.
    pub ip: Option<IpAddr>,
    pub mac: Option<String>,
    pub resources: Resources,
    pub read_only: bool,
    pub capabilities: CapSet,
    pub cgroup_parent: String,
    pub interactive: bool,
    pub tty: bool,
    pub auto_remove: bool,
    pub detach: bool,
    pub userns: UsernsRequest,
    /// `-u` (checked for syntax; resolved in the container).
    pub user: Option<String>,
    /// `--entrypoint`: `Some("")` clears the image's.
    pub entrypoint: Option<String>,
    pub publish_all: bool,
    /// `--stop-signal`, by name (`SIGQUIT`).
    pub stop_signal: Option<String>,
    /// `--label`, in order.
    pub labels: Vec<(String, String)>,
    /// `--privileged`: `capabilities` is then every capability.
    pub privileged: bool,
}

/// The cgroup parent when `--cgroup-parent` is not given.
pub const DEFAULT_CGROUP_PARENT: &str = "berth";

impl RunRequest {
    /// Validates every flag. `host_env` answers `-e KEY` (without a value), as docker takes
    /// the value from the caller's environment; `cpus_available` bounds `--cpus`.
    pub fn validate(
        self,
        host_env: impl Fn(&str) -> Option<String>,
        cpus_available: usize,
    ) -> Result<RunSpec, RequestError> {
        let mut words = self.image_and_command.into_iter();
        let image = Reference::parse(words.next().unwrap_or_default().as_str())?;
        let command: Vec<String> = words.collect();
        let name = self
            .name
            .as_deref()
            .map(ContainerName::try_from)
            .transpose()?;
        let hostname = self.hostname.map(parse_hostname).transpose()?;
        let env = self
            .env
            .iter()
            .filter_map(|e| parse_env(e, &host_env).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        let workdir = self
            .workdir
            .map(|w| {
                let path = PathBuf::from(&w);
                if is_clean_absolute(&path) {
                    Ok(path)
                } else {
                    Err(RequestError::Workdir { input: w })
                }
            })
            .transpose()?;
        let volumes = self
            .volumes
            .iter()
            .map(|v| parse_volume(v))
            .collect::<Result<Vec<_>, _>>()?;
        let network = parse_networks(&self.networks)?;
        let ports = ports::parse_all(&self.publish)?;
        let ip = self
            .ip
            .map(|input| {
                input
                    .parse::<IpAddr>()
                    .map_err(|_| RequestError::Ip { input })
            })
            .transpose()?;
        let mac = self.mac.map(parse_mac).transpose()?;
        if matches!(network, NetworkMode::Container(_)) {
            // docker's order of checks and words; `--ip` is refused with the mac-address's
            // wording since docker's own (`user specified IP address is supported on user
            // defined networks only`) names no flag.
            let what = if hostname.is_some() {
                Some("hostname")
            } else if !ports.is_empty() || self.publish_all {
                Some("port publishing")
            } else if mac.is_some() {
                Some("mac-address")
            } else if ip.is_some() {
                Some("ip address")
            } else {
                None
            };
            if let Some(what) = what {
                return Err(RequestError::ContainerNetworkConflict { what });
            }
        } else if !matches!(network, NetworkMode::Cni(_)) {
            let flag = if !ports.is_empty() {
                Some("-p")
            } else if self.publish_all {
                Some("-P")
            } else if ip.is_some() {
                Some("--ip")
            } else if mac.is_some() {
                Some("--mac-address")
            } else {
                None
            };
            if let Some(flag) = flag {
                return Err(RequestError::NeedsCniNetwork {
                    flag,
                    mode: network.name(),
                });
            }
        }
        let resources = Resources {
            memory_bytes: self.memory.as_deref().map(parse_memory).transpose()?,
            cpu: self
                .cpus
                .as_deref()
                .map(|c| parse_cpus(c, cpus_available))
                .transpose()?,
            pids_max: self.pids_limit.map(parse_pids_limit).transpose()?.flatten(),
        };
        let userns = UsernsRequest::parse(self.userns.as_deref(), &self.uidmap, &self.gidmap)?;
        if userns.is_private() && network == NetworkMode::Host {
            return Err(RequestError::UsernsHostNetwork);
        }
        if userns.is_private() && matches!(network, NetworkMode::Container(_)) {
            return Err(RequestError::UsernsContainerNetwork);
        }
        // Docker's rule: a privileged container gets every capability, whatever the
        // --cap-add/--cap-drop flags say.
        let capabilities = if self.privileged {
            if userns.is_private() {
                return Err(RequestError::PrivilegedUserns);
            }
            CapSet::privileged()
        } else {
            CapSet::from_flags(&self.cap_add, &self.cap_drop)?
        };
        let cgroup_parent = match self.cgroup_parent {
            None => DEFAULT_CGROUP_PARENT.to_owned(),
            Some(p) => parse_cgroup_parent(&p)?,
        };
        if let Some(user) = &self.user {
            UserSpec::parse(user).map_err(RequestError::User)?;
        }
        let stop_signal = self
            .stop_signal
            .map(|input| {
                signal::parse_signal(&input)
                    .and_then(signal::signal_name)
                    .map(str::to_owned)
                    .ok_or(RequestError::StopSignal { input })
            })
            .transpose()?;
        let labels = self
            .labels
            .iter()
            .map(|input| match input.split_once('=') {
                Some(("", _)) => Err(RequestError::Label {
                    input: input.clone(),
                }),
                Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
                None if input.is_empty() => Err(RequestError::Label {
                    input: input.clone(),
                }),
                None => Ok((input.clone(), String::new())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RunSpec {
            image,
            command,
            name,
            hostname,
            env,
            workdir,
            volumes,
            network,
            ports,
            ip,
            mac,
            resources,
            read_only: self.read_only,
            capabilities,
            cgroup_parent,
            interactive: self.interactive,
            tty: self.tty,
            auto_remove: self.auto_remove,
            detach: self.detach,
            userns,
            user: self.user,
            entrypoint: self.entrypoint,
            publish_all: self.publish_all,
            stop_signal,
            labels,
            privileged: self.privileged,
        })
    }
}

/// `--network` values: none → the default network; `none`, `host` or `container:X`
/// alone; otherwise distinct network names (`default` names the default network).
fn parse_networks(inputs: &[String]) -> Result<NetworkMode, RequestError> {
    let default = || parse_network_name(DEFAULT_NETWORK).map_err(RequestError::NetworkName);
    if inputs.is_empty() {
        return Ok(NetworkMode::Cni(vec![default()?]));
    }
    if let Some(input) = inputs.iter().find(|n| n.starts_with("container:")) {
        if inputs.len() > 1 {
            return Err(RequestError::NetworkAlone { mode: "container:" });
        }
        return match input.split_once(':') {
            Some((_, target)) if !target.is_empty() && !target.contains(':') => {
                Ok(NetworkMode::Container(target.to_owned()))
            }
            _ => Err(RequestError::NetworkContainer {
                input: input.clone(),
            }),
        };
    }
    for (mode, value) in [("none", NetworkMode::None), ("host", NetworkMode::Host)] {
        if inputs.iter().any(|n| n == mode) {
            if inputs.len() > 1 {
                return Err(RequestError::NetworkAlone { mode });
            }
            return Ok(value);
        }
    }
    let mut names: Vec<NetworkName> = Vec::new();
    for input in inputs {
        let name = if input == "default" {
            default()?
        } else {
            parse_network_name(input).map_err(RequestError::NetworkName)?
        };
        if names.contains(&name) {
            return Err(RequestError::NetworkTwice {
                name: name.to_string(),
            });
        }
        names.push(name);
    }
    Ok(NetworkMode::Cni(names))
}

/// `02:42:ac:11:00:02`: six hex pairs, a unicast address, normalized to lowercase.
fn parse_mac(input: String) -> Result<String, RequestError> {
    let bytes: Vec<u8> = input
        .split(':')
        .filter(|p| p.len() == 2)
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    let valid =
        bytes.len() == 6 && input.len() == 17 && bytes[0] & 1 == 0 && bytes.iter().any(|b| *b != 0);
    if valid {
        Ok(input.to_ascii_lowercase())
    } else {
        Err(RequestError::Mac { input })
    }
}

pub(crate) fn set_env(env: &mut Vec<(String, String)>, key: String, value: String) {
    match env.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key, value)),
    }
}

/// An absolute path with no `..` (and no `.`) components: safe to join under a root.
pub fn is_clean_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path.as_os_str().as_encoded_bytes().contains(&0)
}

/// `64m`, `1g`, `1.5g`, `512k`, `1048576` (binary units, case-insensitive, optional `b`/`ib`
/// suffix as docker's `RAMInBytes`).
pub fn parse_memory(input: &str) -> Result<u64, RequestError> {
    let bad = || RequestError::Memory {
        input: input.to_owned(),
    };
    let lower = input.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let shift = match unit {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * 2f64.powi(shift);
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    // Truncation intended: fractions of a byte are meaningless.
    let bytes = bytes as u64;
    if bytes < 6 << 20 {
        return Err(RequestError::MemoryTooSmall {
            input: input.to_owned(),
        });
    }
    Ok(bytes)
}

/// `--cpus 0.5` → 50000 µs every 100000 µs (docker's period).
pub fn parse_cpus(input: &str, available: usize) -> Result<CpuQuota, RequestError> {
    const PERIOD_US: u64 = 100_000;
    let cpus: f64 = input.trim().parse().map_err(|_| RequestError::Cpus {
        input: input.to_owned(),
    })?;
    let range = || RequestError::CpusRange {
        input: input.to_owned(),
        available,
    };
    if !cpus.is_finite() || cpus < 0.01 || cpus > available as f64 {
        return Err(range());
    }
    // Rounding intended: at most 1 µs off, and the range check above bounds the value.
    let quota_us = (cpus * PERIOD_US as f64).round() as u64;
    Ok(CpuQuota {
        quota_us,
        period_us: PERIOD_US,
    })
}

/// Docker's convention: a positive limit, or 0 / -1 for none.
fn parse_pids_limit(limit: i64) -> Result<Option<u64>, RequestError> {
    match limit {
        0 | -1 => Ok(None),
        n if n > 0 => Ok(u64::try_from(n).ok()),
        n => Err(RequestError::PidsLimit { input: n }),
    }
}

/// `HOST:CONTAINER[:ro|rw]`: both absolute and free of `..`, the host path existing. The
/// container path is resolved inside the rootfs later (symlinks cannot leave it).
pub fn parse_volume(input: &str) -> Result<Volume, RequestError> {
    let parts: Vec<&str> = input.split(':').collect();
    let (host, ctr, option) = match parts.as_slice() {
        [h, c] => (*h, *c, None),
        [h, c, o] => (*h, *c, Some(*o)),
        _ => {
            return Err(RequestError::VolumeSyntax {
                input: input.to_owned(),
            });
        }
    };
    let read_only = match option {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => {
            return Err(RequestError::VolumeOption {
                input: input.to_owned(),
                option: other.to_owned(),
            });
        }
    };
    for (which, path) in [("host", host), ("container", ctr)] {
        if !is_clean_absolute(Path::new(path)) {
            return Err(RequestError::VolumePath {
                input: input.to_owned(),
                which,
                path: path.to_owned(),
            });
        }
    }
    let destination = PathBuf::from(ctr);
    if destination.components().count() == 1 {
        return Err(RequestError::VolumeOverRoot {
            input: input.to_owned(),
        });
    }
    let source = PathBuf::from(host);
    std::fs::metadata(&source).map_err(|e| RequestError::VolumeSource {
        input: input.to_owned(),
        path: source.clone(),
        source: e,
    })?;
    Ok(Volume {
        source,
        destination,
        read_only,
    })
}

/// `KEY=VALUE`, or `KEY` alone to pass the caller's value (skipped when unset).
pub(crate) fn parse_env(
    input: &str,
    host_env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<(String, String)>, RequestError> {
    let bad = || RequestError::Env {
        input: input.to_owned(),
    };
    match input.split_once('=') {
        Some(("", _)) => Err(bad()),
        Some((key, value)) => Ok(Some((key.to_owned(), value.to_owned()))),
        None if input.is_empty() => Err(bad()),
        None => Ok(host_env(input).map(|v| (input.to_owned(), v))),
    }
}

/// RFC 1123-ish: letters, digits, `-` and `.`, 1 to 64 bytes (the kernel's limit).
fn parse_hostname(input: String) -> Result<String, RequestError> {
    let valid = !input.is_empty()
        && input.len() <= 64
        && !input.starts_with(['-', '.'])
        && input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(input)
    } else {
        Err(RequestError::Hostname { input })
    }
}

/// A relative cgroup path such as `berth` or `tests/berth-1` (a leading `/` is accepted).
fn parse_cgroup_parent(input: &str) -> Result<String, RequestError> {
    let trimmed = input.trim_start_matches('/');
    let valid = !trimmed.is_empty()
        && trimmed.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        });
    if valid {
        Ok(trimmed.to_owned())
    } else {
        Err(RequestError::CgroupParent {
            input: input.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_memory("8192k").unwrap(), 8 << 20);
        assert_eq!(parse_memory("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_memory("67108864").unwrap(), 64 << 20);
        for bad in [
            "",
            "m",
            "64x",
            "-1m",
            "1e3",
            "6.4.1m",
            "99999999999999999999g",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_memory("1m"),
            Err(RequestError::MemoryTooSmall { .. })
        ));
    }

    #[test]
    fn cpus_to_cfs_quota() {
        assert_eq!(
            parse_cpus("0.5", 2).unwrap(),
            CpuQuota {
                quota_us: 50_000,
                period_us: 100_000
            }
        );
        assert_eq!(parse_cpus("2", 2).unwrap().quota_us, 200_000);
        assert_eq!(parse_cpus("0.01", 1).unwrap().quota_us, 1_000);
        for bad in ["0", "3", "-1", "abc", "NaN", "inf", "0.001"] {
            assert!(parse_cpus(bad, 2).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes() {
        let v = parse_volume("/tmp:/data:ro").unwrap();
        assert_eq!(v.source, Path::new("/tmp"));
        assert_eq!(v.destination, Path::new("/data"));
        assert!(v.read_only);
        assert!(!parse_volume("/tmp:/data").unwrap().read_only);
        for bad in [
            "/tmp",
            "tmp:/data",
            "/tmp:data",
            "/tmp:/data/../etc",
            "/tmp/../etc:/data",
            "/tmp:/data:rx",
            "/tmp:/:ro",
            "/tmp:/a:ro:x",
            "/no/such/dir/berth:/data",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_forms() {
        let host = |k: &str| (k == "FROM_HOST").then(|| "yes".to_owned());
        assert_eq!(
            parse_env("A=b=c", &host).unwrap(),
            Some(("A".into(), "b=c".into()))
        );
        assert_eq!(
            parse_env("A=", &host).unwrap(),
            Some(("A".into(), "".into()))
        );
        assert_eq!(
            parse_env("FROM_HOST", &host).unwrap(),
            Some(("FROM_HOST".into(), "yes".into()))
        );
        assert_eq!(parse_env("UNSET", &host).unwrap(), None);
        assert!(parse_env("=v", &host).is_err());
        assert!(parse_env("", &host).is_err());
    }

    fn networks(list: &[&str]) -> Result<NetworkMode, RequestError> {
        parse_networks(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn network_modes() {
        let names = |m: NetworkMode| {
            m.networks()
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(networks(&[]).unwrap()), [DEFAULT_NETWORK]);
        assert_eq!(
            names(networks(&["default", "lab"]).unwrap()),
            [DEFAULT_NETWORK, "lab"]
        );
        assert_eq!(networks(&["none"]).unwrap(), NetworkMode::None);
        assert_eq!(networks(&["host"]).unwrap(), NetworkMode::Host);
        assert_eq!(
            networks(&["container:web"]).unwrap(),
            NetworkMode::Container("web".into())
        );
        for bad in [
            &["container:"][..],
            &["container:a:b"],
            &["container:web", "lab"],
            &["none", "container:web"],
        ] {
            assert!(networks(bad).is_err(), "{bad:?}");
        }
        for bad in [
            &["none", "lab"][..],
            &["lab", "host"],
            &["lab", "lab"],
            &["bad/name"],
            &[""],
        ] {
            assert!(networks(bad).is_err(), "{bad:?}");
        }
        let req = |network: &str, publish: &[&str], ip: Option<&str>| RunRequest {
            image_and_command: vec!["busybox".into()],
            networks: vec![network.into()],
            publish: publish.iter().map(|s| s.to_string()).collect(),
            ip: ip.map(Into::into),
            ..RunRequest::default()
        };
        let err = req("none", &["80:80"], None)
            .validate(no_env, 2)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "-p needs a CNI network: it does not work with --network none"
        );
        assert!(
            req("host", &[], Some("10.0.0.1"))
                .validate(no_env, 2)
                .is_err()
        );
        assert!(req("lab", &["80"], None).validate(no_env, 2).is_err());
        assert!(req("lab", &[], Some("10.0.0")).validate(no_env, 2).is_err());
        let spec = req("lab", &["8080-8081:80-81"], Some("10.0.0.9"))
            .validate(no_env, 2)
            .unwrap();
        assert_eq!(spec.ports.len(), 2);
    }

    #[test]
    fn container_network_conflicts_in_dockers_words() {
        type Tweak = fn(&mut RunRequest);
        let req = |extra: Tweak| {
            let mut r = RunRequest {
                image_and_command: vec!["busybox".into()],
                networks: vec!["container:web".into()],
                ..RunRequest::default()
            };
            extra(&mut r);
            r.validate(no_env, 2).map(|s| s.network)
        };
        assert_eq!(req(|_| {}).unwrap(), NetworkMode::Container("web".into()));
        let cases: [(Tweak, &str); 6] = [
            (|r| r.hostname = Some("x".into()), "hostname"),
            (|r| r.publish = vec!["80:80".into()], "port publishing"),
            (|r| r.publish_all = true, "port publishing"),
            (|r| r.mac = Some("02:42:ac:11:00:02".into()), "mac-address"),
            (|r| r.ip = Some("10.0.0.2".into()), "ip address"),
            (|r| r.userns = Some("auto".into()), "user namespace"),
        ];
        for (extra, what) in cases {
            let err = req(extra).unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
        let err = req(|r| r.hostname = Some("x".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "conflicting options: hostname and the network mode"
        );
    }

    #[test]
    fn mac_addresses() {
        assert_eq!(
            parse_mac("02:42:AC:11:00:02".into()).unwrap(),
            "02:42:ac:11:00:02"
        );
        for bad in [
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "02:42:ac:11:00",
            "0242ac110002",
            "02:42:ac:11:00:2",
            "zz:42:ac:11:00:02",
        ] {
            assert!(parse_mac(bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames_and_cgroup_parents() {
        assert!(parse_hostname("web-1.local".into()).is_ok());
        assert!(parse_hostname("-x".into()).is_err());
        assert!(parse_hostname("a_b".into()).is_err());
        assert!(parse_hostname("x".repeat(65)).is_err());
        assert_eq!(parse_cgroup_parent("/berth-t1").unwrap(), "berth-t1");
        assert_eq!(parse_cgroup_parent("a/b").unwrap(), "a/b");
        for bad in ["", "/", "a/../b", "a//b", "a b"] {
            assert!(parse_cgroup_parent(bad).is_err(), "{bad}");
        }
    }
}
