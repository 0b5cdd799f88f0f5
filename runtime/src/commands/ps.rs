//! Reading containers: `berth ps` ([`list`]) and `berth inspect` ([`inspect`]). Both only
//! read records; the status comes from [`ContainerRecord::live_status`], so a container whose
//! `berth` was killed shows as exited at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_image::ImageStore;
use serde::Serialize;

use crate::names::ContainerId;
use crate::sandbox::cgroups::{CgroupError, Layout};
use crate::state::clock;
use crate::state::{ContainerRecord, StateError, Status, Store};

/// Errors of `berth ps` and `berth inspect`.
#[derive(Debug, thiserror::Error)]
pub enum PsError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("detect the cgroup layout")]
    CgroupLayout(#[source] CgroupError),
    #[error("invalid --filter {input:?}: berth filters on label=KEY or label=KEY=VALUE")]
    Filter { input: String },
}

/// A `ps --filter`: docker's `label=KEY` (the label is set) and `label=KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Label { key: String, value: Option<String> },
}

impl Filter {
    pub fn parse(input: &str) -> Result<Filter, PsError> {
        let bad = || PsError::Filter {
            input: input.to_owned(),
        };
        let label = input.strip_prefix("label=").ok_or_else(bad)?;
        let (key, value) = match label.split_once('=') {
            Some((key, value)) => (key, Some(value.to_owned())),
            None => (label, None),
        };
        if key.is_empty() {
            return Err(bad());
        }
        Ok(Filter::Label {
            key: key.to_owned(),
            value,
        })
    }

    /// Whether a container with these labels passes.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Filter::Label { key, value } => match (labels.get(key), value) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            },
        }
    }
}

/// A line of `berth ps`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSummary {
    pub id: ContainerId,
    /// Empty for a remnant (a directory without its record).
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub created: String,
    pub status: Status,
    /// "Up 5 seconds", "Exited (0) 2 minutes ago", "Created".
    pub status_text: String,
    pub exit_code: Option<i32>,
    pub pid: Option<i32>,
    /// `0.0.0.0:8080->80/tcp`, …
    pub ports: Vec<String>,
    /// network name → addresses, while attached.
    pub networks: BTreeMap<String, Vec<String>>,
    /// `none`, `host`, `cni`, or `container:<id>` for a container sharing another's
    /// network namespace (docker's `HostConfig.NetworkMode` form).
    pub network_mode: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl ContainerSummary {
    fn of(record: &ContainerRecord) -> ContainerSummary {
        let status = record.live_status();
        let status_text = match status {
            Status::Created => "Created".to_owned(),
            Status::Running => format!(
                "Up {}",
                record
                    .state
                    .started_at
                    .as_deref()
                    .and_then(clock::parse_rfc3339)
                    .map_or_else(String::new, |t| clock::humanize(clock::unix_now() - t))
            ),
            Status::Exited => match (record.state.exit_code, &record.state.finished_at) {
                (Some(code), Some(at)) => format!("Exited ({code}) {}", clock::ago(at)),
                _ => "Exited".to_owned(),
            },
            Status::Removing if record.is_supervised() => "Removing".to_owned(),
            Status::Removing => "Removing (interrupted: rm -f finishes it)".to_owned(),
        };
        let mut networks: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in &record.state.attachments {
            networks
                .entry(a.network.clone())
                .or_default()
                .extend(a.ips.iter().map(|ip| ip.ip().to_string()));
        }
        ContainerSummary {
            id: record.id.clone(),
            name: record.name.to_string(),
            image: record.config.image.familiar(),
            command: record.config.args.clone(),
            created: record.created.clone(),
            status,
            status_text,
            exit_code: record.state.exit_code,
            pid: (status == Status::Running)
                .then_some(record.state.pid)
                .flatten(),
            ports: if status == Status::Running {
                record
                    .config
                    .ports
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            } else {
                Vec::new()
            },
            networks,
            network_mode: match record.config.network.container() {
                Some(target) => format!("container:{target}"),
                None => record.config.network.name().to_owned(),
            },
            labels: record.config.labels.clone(),
        }
    }
}

impl ContainerSummary {
    /// A container directory without a readable record: all that is known is its id and
    /// when the directory was last changed.
    fn remnant(store: &Store, id: &ContainerId) -> ContainerSummary {
        let created = std::fs::metadata(store.container_dir(id))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .map_or_else(String::new, clock::format_rfc3339);
        ContainerSummary {
            id: id.clone(),
            name: String::new(),
            image: String::new(),
            command: Vec::new(),
            created,
            status: Status::Removing,
            status_text: "Removing (no record left: rm -f or system prune removes it)".to_owned(),
            exit_code: None,
            pid: None,
            ports: Vec::new(),
            networks: BTreeMap::new(),
            network_mode: String::new(),
            labels: BTreeMap::new(),
        }
    }
}

/// `berth ps [-a] [--filter …]`: running containers, or all of them, remnants included (see
/// [`crate::state`]); those that pass every filter.
pub fn list(
    store: &Store,
    all: bool,
    filters: &[Filter],
) -> Result<Vec<ContainerSummary>, PsError> {
    let scan = store.scan()?;
    let records = scan.records.iter().map(ContainerSummary::of);
    let remnants = scan
        .remnants
        .iter()
        .map(|id| ContainerSummary::remnant(store, id));
    Ok(records
        .chain(remnants)
        .filter(|s| all || s.status == Status::Running)
        .filter(|s| filters.iter().all(|f| f.matches(&s.labels)))
        .collect())
}

/// `berth inspect`: the record plus what it implies on the host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    #[serde(flatten)]
    pub record: ContainerRecord,
    pub status: Status,
    pub paths: InspectPaths,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectPaths {
    pub directory: PathBuf,
    /// The image's layers, top first (empty if the image is gone).
    pub rootfs_lowers: Vec<PathBuf>,
    pub rootfs_upper: PathBuf,
    pub netns: PathBuf,
    pub cgroups: Vec<PathBuf>,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub log: PathBuf,
}

pub fn inspect(store: &Store, query: &str) -> Result<Inspection, PsError> {
    let record = store.find(query)?;
    let layout = Layout::detect().map_err(PsError::CgroupLayout)?;
    let cgroup = layout.manager(&record.config.cgroup_parent, &record.id);
    let images = ImageStore::new(store.images_dir());
    let dir = store.container_dir(&record.id);
    Ok(Inspection {
        status: record.live_status(),
        paths: InspectPaths {
            rootfs_lowers: match &record.config.image_id {
                Some(id) => images.lower_dirs(id).unwrap_or_default(),
                None => Vec::new(),
            },
            rootfs_upper: dir.join("upper"),
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            log: store.log_path(&record.id),
            directory: dir,
            netns: store.netns_of(&record),
            cgroups: cgroup.paths(),
        },
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_filters() {
        let labels: BTreeMap<String, String> = [
            ("tier".to_owned(), "web".to_owned()),
            ("x".to_owned(), String::new()),
        ]
        .into();
        let pass = |f: &str| Filter::parse(f).unwrap().matches(&labels);
        assert!(pass("label=tier"));
        assert!(pass("label=tier=web"));
        assert!(pass("label=x="));
        assert!(!pass("label=tier=db"));
        assert!(!pass("label=other"));
        for bad in ["tier=web", "label=", "label==v", "status=running"] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }
}
