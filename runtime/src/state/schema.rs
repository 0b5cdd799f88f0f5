//! The stored schema of a container: `<root>/containers/<id>/container.json` is a
//! [`ContainerRecord`], its configuration (what `berth run` asked for, with the image's
//! defaults applied) and the state of its current or last run. `berth inspect` shows it as it
//! is; changing a field's name or meaning is a change of the on-disk format.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use berth_cni::NetworkName;
use berth_image::{Digest, Reference};
use serde::{Deserialize, Serialize};

use crate::names::{ContainerId, ContainerName};
use crate::network::ports::{ExposedPort, PortMapping};
use crate::sandbox::caps::CapSet;
use crate::sandbox::cgroups::Resources;
use crate::sandbox::pid::{self, ProcessRef};
use crate::sandbox::rootfs::Volume;
use crate::sandbox::userns::UserNamespace;

/// One network attachment of a container (its `eth<n>` on a network).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentState {
    pub network: String,
    pub ifname: String,
    /// Addresses from the CNI result (empty until ADD succeeded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<ipnetwork::IpNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// One container: `<root>/containers/<id>/container.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    pub id: ContainerId,
    pub name: ContainerName,
    pub created: String,
    pub config: ContainerConfig,
    pub state: ContainerState,
}

impl ContainerRecord {
    /// The status, checked against the kernel: a "running" record whose process is gone
    /// (its `berth run` was killed) counts as exited.
    pub fn live_status(&self) -> Status {
        match self.state.status {
            Some(Status::Running) => match (self.state.pid, self.state.pid_start_time) {
                (Some(pid), Some(start)) if pid::live_start_time(pid) == Some(start) => {
                    Status::Running
                }
                _ => Status::Exited,
            },
            Some(status) => status,
            None => Status::Created,
        }
    }

    /// Its supervisor is alive: the container is starting, running, or being released, and
    /// nobody else may release or remove it.
    pub fn is_supervised(&self) -> bool {
        self.state.supervisor.is_some_and(|s| s.is_alive())
    }

    /// Holds (or is about to hold) network resources: running, or supervised.
    pub fn is_active(&self) -> bool {
        self.live_status() == Status::Running || self.is_supervised()
    }
}

/// The complete configuration of a container: stored in its record, shown by `inspect`, and
/// (with paths added) handed to its init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfig {
    /// The image as `run` named it (`docker.io/library/busybox:latest`).
    pub image: Reference,
    /// The image's id when the container was created: its layers are the container's, even
    /// if the reference names another image since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<Digest>,
    /// argv of PID 1 (entrypoint + command).
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub workdir: PathBuf,
    pub hostname: String,
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
    /// The container's user namespace (`None`: the host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<UserNamespace>,
    /// `USER[:GROUP]` of PID 1 (and the default of `exec`): `-u`, else the image's `User`,
    /// resolved in the container's root at each start; `None`: root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The ports the image exposes (`ExposedPorts`, tcp and udp); with `-P` each is also in
    /// `ports`, on a free host port chosen at creation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<ExposedPort>,
    /// `-P`: every exposed port is published.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish_all: bool,
    /// What `stop` sends first (`SIGQUIT`): `--stop-signal`, else the image's `StopSignal`;
    /// `None`: SIGTERM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// The image's labels, then `--label` (which wins).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `--privileged`: no seccomp filter, /proc and /sys writable and unmasked (the
    /// capabilities, all of them, are in `capabilities`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "networks")]
pub enum NetworkMode {
    /// A network namespace with only `lo`, up.
    None,
    /// The runtime's own network namespace (no isolation of the network).
    Host,
    /// A network namespace attached through CNI to these networks: eth0, eth1, … in order.
    Cni(Vec<NetworkName>),
    /// `--network container:NAME|ID`: the network namespace of another container, and its
    /// name files (docker's mode). `run` asks for it by name, id or prefix; the record holds
    /// the full id, found at creation. Records written before this mode existed never hold
    /// it, so they load as they are.
    Container(String),
}

impl NetworkMode {
    /// The CNI networks, in attachment order (none for `none` and `host`).
    pub fn networks(&self) -> &[NetworkName] {
        match self {
            NetworkMode::Cni(list) => list,
            _ => &[],
        }
    }

    /// `none`, `host`, `cni` or `container`.
    pub fn name(&self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
            NetworkMode::Cni(_) => "cni",
            NetworkMode::Container(_) => "container",
        }
    }

    /// The container whose network namespace this one shares (`--network container:X`).
    pub fn container(&self) -> Option<&str> {
        match self {
            NetworkMode::Container(target) => Some(target),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Recorded, not started (or its start failed).
    Created,
    /// PID 1 was exec'ed and, as far as the record knows, runs.
    Running,
    Exited,
    /// Being removed: what it held on the host is being released, then its directory goes.
    /// A removal that was interrupted (`berth` killed) leaves it so; `rm -f` and
    /// `system prune` finish it.
    Removing,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub status: Option<Status>,
    /// PID 1 of the container, as the host sees it.
    pub pid: Option<i32>,
    /// Its start time (`/proc/<pid>/stat` field 22), telling it apart from a reused pid.
    pub pid_start_time: Option<u64>,
    pub exit_code: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The process that records the exit and releases the container (see [`crate::state`]);
    /// cleared once it has done so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<ProcessRef>,
    /// CNI attachments made or being made: written before ADD, removed after DEL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentState>,
}

impl ContainerState {
    /// The state of a new run of an existing container, about to be started by
    /// `supervisor`: what the record knew of the previous run (pid, exit code, times) is
    /// forgotten. The previous run released its attachments; the new ones are recorded as
    /// they are made.
    pub fn begin_run(&mut self, supervisor: Option<ProcessRef>) {
        *self = ContainerState {
            status: Some(Status::Created),
            supervisor,
            ..ContainerState::default()
        };
    }
}
