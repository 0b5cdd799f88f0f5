//! The runtime side, equivalent to libcni: load configuration lists, run them through plugin
//! binaries, and keep the result cache that DEL, CHECK and GC rely on after a restart.
//!
//! Semantics follow libcni so that state and behaviour carry over between runtimes: plugins
//! run in order for ADD/CHECK/GC/STATUS and in reverse for DEL; `name`, `cniVersion`,
//! `runtimeConfig` (from declared capabilities) and `prevResult` are injected into each
//! plugin's configuration; results are cached in `<cacheDir>/results/<net>-<id>-<ifname>`.
//! As in libcni, a failed ADD is not undone here: the caller runs DEL, which every plugin
//! must tolerate for partially created attachments.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::gojson;

use crate::args::{CniArgs, Command};
use crate::conf::{Attachment, NetConfList, VALID_ATTACHMENTS_KEY};
use crate::error::CniError;
use crate::exec::{CniEnv, exec_plugin, find_plugin};
use crate::names::{ContainerId, IfName, NetworkName};
use crate::result::CniResult;
use crate::version::CniVersion;

/// libcni's default cache location.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";
const CACHE_KIND: &str = "cniCacheV1";

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("plugin {plugin} failed ({verb}) in network {network}")]
    Plugin {
        verb: Command,
        plugin: String,
        network: NetworkName,
        #[source]
        source: CniError,
    },
    #[error("network {network} (CNI {version}) does not allow {verb}")]
    NotAllowed {
        verb: Command,
        network: NetworkName,
        version: CniVersion,
    },
    #[error("no cached result for {network}/{container_id}/{ifname}: was ADD run?")]
    NoCachedResult {
        network: NetworkName,
        container_id: ContainerId,
        ifname: IfName,
    },
    #[error("read configuration directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("load network configuration {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: CniError,
    },
    #[error("no network named {name} in {dir}")]
    NoSuchNetwork { name: String, dir: PathBuf },
    #[error("write result cache {path}")]
    CacheWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read result cache {path}")]
    CacheRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("decode result cache {path}")]
    CacheDecode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("build configuration of plugin {index} of network {network}")]
    BuildConf {
        index: usize,
        network: NetworkName,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}", join_errors(.0))]
    Several(Vec<InvokeError>),
}

fn join_errors(errors: &[InvokeError]) -> String {
    errors
        .iter()
        .map(error_chain)
        .collect::<Vec<_>>()
        .join("; ")
}

/// `err: cause: cause`, as the CLI prints it.
pub fn error_chain(err: &InvokeError) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// What a runtime knows about one attachment (libcni's `RuntimeConf`).
#[derive(Debug, Clone)]
pub struct RuntimeConf {
    pub container_id: ContainerId,
    pub netns: Option<PathBuf>,
    pub ifname: IfName,
    pub args: CniArgs,
    /// Values for plugin capabilities, e.g. `portMappings`, `mac`, `ips`.
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    pub fn new(container_id: ContainerId, netns: Option<PathBuf>, ifname: IfName) -> RuntimeConf {
        RuntimeConf {
            container_id,
            netns,
            ifname,
            args: CniArgs::default(),
            capability_args: Map::new(),
        }
    }
}

/// The libcni cache entry, field for field, so caches written by either can be read by both.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedAttachment {
    pub kind: String,
    pub container_id: ContainerId,
    /// The configuration list bytes, base64 as Go encodes `[]byte`.
    #[serde(with = "base64_bytes")]
    pub config: Vec<u8>,
    pub if_name: IfName,
    pub network_name: NetworkName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<[String; 2]>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub capability_args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

mod base64_bytes {
    use super::*;
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        BASE64.decode(s).map_err(serde::de::Error::custom)
    }
}

impl CachedAttachment {
    pub fn runtime_conf(&self) -> RuntimeConf {
        RuntimeConf {
            container_id: self.container_id.clone(),
            netns: self.netns.clone(),
            ifname: self.if_name.clone(),
            args: CniArgs::from_pairs(
                self.cni_args
                    .iter()
                    .map(|[k, v]| (k.clone(), v.clone()))
                    .collect(),
            ),
            capability_args: self.capability_args.clone(),
        }
    }
}

/// Loads every configuration in `dir` (`*.conflist`, `*.conf`, `*.json`), sorted by file name
/// as libcni does. A file that does not parse is an error naming the file.
pub fn load_conf_lists(dir: &Path) -> Result<Vec<(PathBuf, NetConfList)>, InvokeError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(InvokeError::ReadDir {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            ) && p.is_file()
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| load_conf_file(&path).map(|list| (path, list)))
        .collect()
}

pub fn load_conf_file(path: &Path) -> Result<NetConfList, InvokeError> {
    let bytes = berth_fs::read_regular(path, MAX_FILE).map_err(|source| InvokeError::ReadDir {
        path: path.to_owned(),
        source,
    })?;
    let parsed = if path.extension().is_some_and(|e| e == "conflist") {
        NetConfList::from_bytes(&bytes)
    } else {
        NetConfList::from_single_conf(&bytes)
    };
    parsed.map_err(|source| InvokeError::Load {
        path: path.to_owned(),
        source,
    })
}

/// The first list in `dir` whose `name` is `name` (libcni's `LoadConfList`).
pub fn load_conf_list(dir: &Path, name: &str) -> Result<NetConfList, InvokeError> {
    load_conf_lists(dir)?
        .into_iter()
        .map(|(_, list)| list)
        .find(|l| l.name.as_str() == name)
        .ok_or_else(|| InvokeError::NoSuchNetwork {
            name: name.to_owned(),
            dir: dir.to_owned(),
        })
}

/// One plugin execution, as reported to the observer of [`CniConfig::with_observer`].
#[derive(Debug, Clone, Copy)]
pub struct ExecEvent<'a> {
    /// The plugin's `type`.
    pub plugin: &'a str,
    pub verb: Command,
    /// Wall time from spawning the plugin to its exit (stdin written, stdout read).
    pub duration: Duration,
    pub success: bool,
}

/// Called after every plugin execution, from the thread that ran it: a timing hook (the
/// benchmarks time each plugin of a chain with it). It must be cheap and must not panic.
pub type ExecObserver = Arc<dyn Fn(&ExecEvent<'_>) + Send + Sync>;

/// Runs configuration lists through plugins found on `path`, caching results in `cache_dir`.
#[derive(Clone)]
pub struct CniConfig {
    pub path: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    observer: Option<ExecObserver>,
}

impl fmt::Debug for CniConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CniConfig")
            .field("path", &self.path)
            .field("cache_dir", &self.cache_dir)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl CniConfig {
    pub fn new(path: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> CniConfig {
        CniConfig {
            path,
            cache_dir: cache_dir.into(),
            observer: None,
        }
    }

    /// Reports every plugin execution (type, verb, duration, success) to `observer`.
    pub fn with_observer(mut self, observer: ExecObserver) -> CniConfig {
        self.observer = Some(observer);
        self
    }

    pub fn add_network_list(
        &self,
        list: &NetConfList,
        rt: &RuntimeConf,
    ) -> Result<CniResult, InvokeError> {
        let mut prev: Option<CniResult> = None;
        for (index, plugin) in list.plugins.iter().enumerate() {
            let conf = build_conf(list, index, plugin, prev.as_ref(), rt)?;
            let out = self.exec(list, plugin, Command::Add, Some(rt), &conf)?;
            let result = parse_result(&out)
                .map_err(|source| plugin_error(list, plugin, Command::Add, source))?;
            prev = Some(result);
        }
        let result = prev.unwrap_or_default();
        self.cache_write(list, rt, &result)?;
        Ok(result)
    }

    /// DEL in reverse order. The cached result is each plugin's `prevResult` (from 0.4.0 on).
    /// The cache entry is removed once every plugin succeeded.
    pub fn del_network_list(
        &self,
        list: &NetConfList,
        rt: &RuntimeConf,
    ) -> Result<(), InvokeError> {
        let cached = if list.cni_version >= CniVersion::V0_4_0 {
            // An unreadable entry must not block DEL: the plugins tolerate a missing prevResult.
            self.cached_result(&list.name, &rt.container_id, &rt.ifname)
                .ok()
                .flatten()
        } else {
            None
        };
        for (index, plugin) in list.plugins.iter().enumerate().rev() {
            let conf = build_conf(list, index, plugin, cached.as_ref(), rt)?;
            self.exec(list, plugin, Command::Del, Some(rt), &conf)?;
        }
        self.cache_remove(&list.name, &rt.container_id, &rt.ifname)
    }

    pub fn check_network_list(
        &self,
        list: &NetConfList,
        rt: &RuntimeConf,
    ) -> Result<(), InvokeError> {
        if !list.cni_version.allows_check() {
            return Err(InvokeError::NotAllowed {
                verb: Command::Check,
                network: list.name.clone(),
                version: list.cni_version,
            });
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = self
            .cached_result(&list.name, &rt.container_id, &rt.ifname)?
            .ok_or_else(|| InvokeError::NoCachedResult {
                network: list.name.clone(),
                container_id: rt.container_id.clone(),
                ifname: rt.ifname.clone(),
            })?;
        for (index, plugin) in list.plugins.iter().enumerate() {
            let conf = build_conf(list, index, plugin, Some(&cached), rt)?;
            self.exec(list, plugin, Command::Check, Some(rt), &conf)?;
        }
        Ok(())
    }

    /// STATUS of every plugin in order; a list older than 1.1.0 has no STATUS and is fine.
    pub fn status_network_list(&self, list: &NetConfList) -> Result<(), InvokeError> {
        if !list.cni_version.allows_status_and_gc() {
            return Ok(());
        }
        for (index, plugin) in list.plugins.iter().enumerate() {
            let conf = inject(list, index, plugin, &[])?;
            self.exec(list, plugin, Command::Status, None, &conf)?;
        }
        Ok(())
    }

    /// GC: DEL for every cached attachment of this network that is not in `valid`, then (1.1.0
    /// and later) the GC verb on every plugin with the valid list. Keeps going on failure and
    /// reports every error at the end.
    pub fn gc_network_list(
        &self,
        list: &NetConfList,
        valid: &[Attachment],
    ) -> Result<(), InvokeError> {
        if list.disable_gc {
            return Ok(());
        }
        let keep: HashSet<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let mut errors = Vec::new();
        for cached in self.cached_attachments(Some(&list.name))? {
            if keep.contains(&(cached.container_id.as_str(), cached.if_name.as_str())) {
                continue;
            }
            if let Err(e) = self.del_network_list(list, &cached.runtime_conf()) {
                errors.push(e);
            }
        }
        if list.cni_version.allows_status_and_gc() {
            let valid_json =
                serde_json::to_value(valid).map_err(|source| InvokeError::BuildConf {
                    index: 0,
                    network: list.name.clone(),
                    source,
                })?;
            for (index, plugin) in list.plugins.iter().enumerate() {
                let result = inject(
                    list,
                    index,
                    plugin,
                    &[(VALID_ATTACHMENTS_KEY, valid_json.clone())],
                )
                .and_then(|conf| self.exec(list, plugin, Command::Gc, None, &conf));
                if let Err(e) = result {
                    errors.push(e);
                }
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(InvokeError::Several(errors)),
        }
    }

    fn exec(
        &self,
        list: &NetConfList,
        plugin: &Map<String, Value>,
        verb: Command,
        rt: Option<&RuntimeConf>,
        conf: &[u8],
    ) -> Result<Vec<u8>, InvokeError> {
        let kind = plugin_type(plugin);
        let bin = find_plugin(kind, &self.path).map_err(|e| plugin_error(list, plugin, verb, e))?;
        let no_args = CniArgs::default();
        let env = CniEnv {
            command: verb,
            container_id: rt.map(|r| &r.container_id),
            netns: rt.and_then(|r| r.netns.as_deref()),
            ifname: rt.map(|r| &r.ifname),
            args: rt.map_or(&no_args, |r| &r.args),
            path: &self.path,
        };
        let start = Instant::now();
        let out = exec_plugin(&bin, &env, conf);
        if let Some(observe) = &self.observer {
            observe(&ExecEvent {
                plugin: kind,
                verb,
                duration: start.elapsed(),
                success: out.is_ok(),
            });
        }
        out.map_err(|e| plugin_error(list, plugin, verb, e))
    }

    fn cache_path(&self, network: &NetworkName, id: &ContainerId, ifname: &IfName) -> PathBuf {
        // Every component is validated (no '/'), so the key cannot escape the results dir.
        self.cache_dir
            .join("results")
            .join(format!("{network}-{id}-{ifname}"))
    }

    /// The cached result of ADD, or `None` if there is none.
    pub fn cached_result(
        &self,
        network: &NetworkName,
        id: &ContainerId,
        ifname: &IfName,
    ) -> Result<Option<CniResult>, InvokeError> {
        let path = self.cache_path(network, id, ifname);
        let Some(entry) = read_cache_entry(&path)? else {
            return Ok(None);
        };
        match entry.result {
            Some(v) => CniResult::from_value(&v)
                .map(Some)
                .map_err(|e| InvokeError::Load { path, source: e }),
            None => Ok(None),
        }
    }

    /// Every cache entry, optionally only those of one network (libcni `GetCachedAttachments`).
    pub fn cached_attachments(
        &self,
        network: Option<&NetworkName>,
    ) -> Result<Vec<CachedAttachment>, InvokeError> {
        let dir = self.cache_dir.join("results");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(InvokeError::ReadDir { path: dir, source }),
        };
        let mut out = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                continue;
            }
            // Entries of other runtimes or versions may not parse; they are not ours to judge.
            let Ok(Some(cached)) = read_cache_entry(&path) else {
                continue;
            };
            if network.is_none_or(|n| *n == cached.network_name) {
                out.push(cached);
            }
        }
        out.sort_by(|a, b| (&a.container_id, &a.if_name).cmp(&(&b.container_id, &b.if_name)));
        Ok(out)
    }

    fn cache_write(
        &self,
        list: &NetConfList,
        rt: &RuntimeConf,
        result: &CniResult,
    ) -> Result<(), InvokeError> {
        let entry = CachedAttachment {
            kind: CACHE_KIND.into(),
            container_id: rt.container_id.clone(),
            config: list.bytes.clone(),
            if_name: rt.ifname.clone(),
            network_name: list.name.clone(),
            netns: rt.netns.clone(),
            cni_args: rt
                .args
                .pairs()
                .iter()
                .map(|(k, v)| [k.clone(), v.clone()])
                .collect(),
            capability_args: rt.capability_args.clone(),
            result: Some(result.to_value(list.cni_version)),
        };
        let path = self.cache_path(&list.name, &rt.container_id, &rt.ifname);
        let io_err = |source| InvokeError::CacheWrite {
            path: path.clone(),
            source,
        };
        let dir = self.cache_dir.join("results");
        std::fs::create_dir_all(&dir).map_err(io_err)?;
        self.sweep_cache();
        // INVARIANT: CachedAttachment holds only JSON-representable values.
        let bytes = serde_json::to_vec(&entry).map_err(|e| io_err(std::io::Error::other(e)))?;
        berth_fs::write_atomic(&path, &bytes, berth_fs::WriteOptions::default()).map_err(io_err)
    }

    /// Removes what an invoker killed between writing a result and renaming it left in the
    /// cache. Best effort: a sweep that fails costs a stray file, never the verb.
    fn sweep_cache(&self) {
        let dir = self.cache_dir.join("results");
        if let Err(e) = berth_fs::sweep_temporaries(&dir) {
            eprintln!(
                "cni cache: sweep stale temporaries in {}: {e}",
                dir.display()
            );
        }
    }

    fn cache_remove(
        &self,
        network: &NetworkName,
        id: &ContainerId,
        ifname: &IfName,
    ) -> Result<(), InvokeError> {
        let path = self.cache_path(network, id, ifname);
        self.sweep_cache();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(InvokeError::CacheWrite { path, source }),
        }
    }
}

/// Cache entries and configuration files are small; anything larger is not one.
const MAX_FILE: u64 = 16 << 20;

fn read_cache_entry(path: &Path) -> Result<Option<CachedAttachment>, InvokeError> {
    let bytes = match berth_fs::read_regular(path, MAX_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(InvokeError::CacheRead {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| InvokeError::CacheDecode {
            path: path.to_owned(),
            source,
        })
}

fn plugin_type(plugin: &Map<String, Value>) -> &str {
    gojson::get(plugin, "type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn plugin_error(
    list: &NetConfList,
    plugin: &Map<String, Value>,
    verb: Command,
    source: CniError,
) -> InvokeError {
    InvokeError::Plugin {
        verb,
        plugin: plugin_type(plugin).to_owned(),
        network: list.name.clone(),
        source,
    }
}

fn parse_result(out: &[u8]) -> Result<CniResult, CniError> {
    let value: Value = serde_json::from_slice(out)?;
    CniResult::from_value(&value)
}

/// The plugin's configuration with the list's `name` and `cniVersion` and `extra` keys set.
fn inject(
    list: &NetConfList,
    index: usize,
    plugin: &Map<String, Value>,
    extra: &[(&str, Value)],
) -> Result<Vec<u8>, InvokeError> {
    let mut conf = plugin.clone();
    conf.insert("name".into(), list.name.as_str().into());
    conf.insert("cniVersion".into(), list.cni_version.as_str().into());
    for (k, v) in extra {
        conf.insert((*k).into(), v.clone());
    }
    serde_json::to_vec(&Value::Object(conf)).map_err(|source| InvokeError::BuildConf {
        index,
        network: list.name.clone(),
        source,
    })
}

/// libcni's `buildOneConfig`: `runtimeConfig` holds exactly the capability arguments the
/// plugin declared, and `prevResult` is written in the list's version.
fn build_conf(
    list: &NetConfList,
    index: usize,
    plugin: &Map<String, Value>,
    prev: Option<&CniResult>,
    rt: &RuntimeConf,
) -> Result<Vec<u8>, InvokeError> {
    let mut extra = Vec::new();
    // libcni reads the entry into a Go struct, so `Capabilities` counts; the capability names
    // are map keys and stay exact.
    if let Some(Value::Object(caps)) = gojson::get(plugin, "capabilities") {
        let runtime_config: Map<String, Value> = caps
            .iter()
            .filter(|(_, enabled)| enabled.as_bool() == Some(true))
            .filter_map(|(cap, _)| {
                rt.capability_args
                    .get(cap)
                    .map(|v| (cap.clone(), v.clone()))
            })
            .collect();
        if !runtime_config.is_empty() {
            extra.push(("runtimeConfig", Value::Object(runtime_config)));
        }
    }
    if let Some(prev) = prev {
        extra.push(("prevResult", prev.to_value(list.cni_version)));
    }
    inject(list, index, plugin, &extra)
}

impl fmt::Display for CachedAttachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.network_name, self.container_id, self.if_name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in plugin for exercising the invoker's ordering and injection: it logs its verb
    /// and stdin, and answers ADD by echoing `prevResult` plus one interface named after it.
    fn recorder(dir: &Path, name: &str) {
        let script = format!(
            r#"#!/bin/sh
input=$(cat)
printf '%s %s %s\n' "$CNI_COMMAND" "{name}" "$input" >> "{log}"
if [ "$CNI_COMMAND" = ADD ]; then
  printf '{{"cniVersion":"1.1.0","interfaces":[{{"name":"{name}"}}]}}'
fi
"#,
            log = dir.join("log").display()
        );
        let path = dir.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn log_lines(dir: &Path) -> Vec<(String, String, Value)> {
        std::fs::read_to_string(dir.join("log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut parts = l.splitn(3, ' ');
                let verb = parts.next().unwrap().to_string();
                let name = parts.next().unwrap().to_string();
                let conf = serde_json::from_str(parts.next().unwrap()).unwrap();
                (verb, name, conf)
            })
            .collect()
    }

    fn setup(version: &str) -> (tempfile::TempDir, CniConfig, NetConfList, RuntimeConf) {
        let dir = tempfile::tempdir().unwrap();
        recorder(dir.path(), "first");
        recorder(dir.path(), "second");
        let list = NetConfList::from_bytes(
            format!(
                r#"{{"cniVersion":"{version}","name":"net1","plugins":[
                {{"type":"first","capabilities":{{"portMappings":true,"mac":false}},"keep":"me"}},
                {{"type":"second"}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let cfg = CniConfig::new(vec![dir.path().to_owned()], dir.path().join("cache"));
        let mut rt = RuntimeConf::new(
            ContainerId::try_from("ctr1").unwrap(),
            Some("/run/netns/none".into()),
            IfName::try_from("eth0").unwrap(),
        );
        rt.capability_args.insert(
            "portMappings".into(),
            serde_json::json!([{"hostPort": 8080}]),
        );
        rt.capability_args
            .insert("mac".into(), "00:11:22:33:44:55".into());
        (dir, cfg, list, rt)
    }

    #[test]
    fn add_injects_and_chains_then_caches() {
        let (dir, cfg, list, rt) = setup("1.1.0");
        let result = cfg.add_network_list(&list, &rt).unwrap();
        assert_eq!(result.interfaces[0].name, "second");
        let log = log_lines(dir.path());
        assert_eq!(log.len(), 2);
        let (_, _, first) = &log[0];
        assert_eq!(first["name"], "net1");
        assert_eq!(first["cniVersion"], "1.1.0");
        assert_eq!(first["keep"], "me");
        assert_eq!(
            first["runtimeConfig"],
            serde_json::json!({"portMappings": [{"hostPort": 8080}]})
        );
        assert!(first.get("prevResult").is_none());
        let (_, _, second) = &log[1];
        assert_eq!(second["prevResult"]["interfaces"][0]["name"], "first");
        let cached = cfg.cached_attachments(Some(&list.name)).unwrap();
        assert_eq!(cached.len(), 1);
        assert_eq!(cached[0].config, list.bytes);
        assert!(dir.path().join("cache/results/net1-ctr1-eth0").exists());
    }

    #[test]
    fn del_runs_in_reverse_with_cached_result_and_clears_cache() {
        let (dir, cfg, list, rt) = setup("1.0.0");
        cfg.add_network_list(&list, &rt).unwrap();
        cfg.check_network_list(&list, &rt).unwrap();
        cfg.del_network_list(&list, &rt).unwrap();
        let log = log_lines(dir.path());
        let order: Vec<_> = log.iter().map(|(v, n, _)| format!("{v} {n}")).collect();
        assert_eq!(
            order,
            [
                "ADD first",
                "ADD second",
                "CHECK first",
                "CHECK second",
                "DEL second",
                "DEL first"
            ]
        );
        assert_eq!(log[4].2["prevResult"]["interfaces"][0]["name"], "second");
        assert!(
            cfg.cached_result(&list.name, &rt.container_id, &rt.ifname)
                .unwrap()
                .is_none()
        );
        // DEL again: idempotent, and now without prevResult.
        cfg.del_network_list(&list, &rt).unwrap();
    }

    #[test]
    fn check_needs_cache_and_version() {
        let (_dir, cfg, list, rt) = setup("1.0.0");
        assert!(matches!(
            cfg.check_network_list(&list, &rt),
            Err(InvokeError::NoCachedResult { .. })
        ));
        let (_dir, cfg, list, rt) = setup("0.3.1");
        assert!(matches!(
            cfg.check_network_list(&list, &rt),
            Err(InvokeError::NotAllowed { .. })
        ));
    }

    #[test]
    fn gc_deletes_stale_then_calls_gc_with_valid_list() {
        let (dir, cfg, list, rt) = setup("1.1.0");
        cfg.add_network_list(&list, &rt).unwrap();
        let mut other = rt.clone();
        other.container_id = ContainerId::try_from("ctr2").unwrap();
        cfg.add_network_list(&list, &other).unwrap();
        let valid = [Attachment {
            container_id: other.container_id.clone(),
            ifname: other.ifname.clone(),
        }];
        cfg.gc_network_list(&list, &valid).unwrap();
        let log = log_lines(dir.path());
        let tail: Vec<_> = log[4..]
            .iter()
            .map(|(v, n, _)| format!("{v} {n}"))
            .collect();
        assert_eq!(tail, ["DEL second", "DEL first", "GC first", "GC second"]);
        assert_eq!(
            log[6].2[VALID_ATTACHMENTS_KEY],
            serde_json::json!([{"containerID": "ctr2", "ifname": "eth0"}])
        );
        let left: Vec<_> = cfg
            .cached_attachments(None)
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(left, ["net1/ctr2/eth0"]);
    }

    #[test]
    fn observer_sees_every_execution_in_order() {
        let (_dir, cfg, list, rt) = setup("1.0.0");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let cfg = cfg.with_observer(Arc::new(move |e: &ExecEvent<'_>| {
            sink.lock()
                .unwrap()
                .push(format!("{} {} {}", e.verb, e.plugin, e.success));
        }));
        cfg.add_network_list(&list, &rt).unwrap();
        cfg.del_network_list(&list, &rt).unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "ADD first true",
                "ADD second true",
                "DEL second true",
                "DEL first true"
            ]
        );
        let mut missing = cfg.clone();
        missing.path = vec![PathBuf::from("/nonexistent")];
        // A plugin that is not found never ran: nothing to report.
        missing.add_network_list(&list, &rt).unwrap_err();
        assert_eq!(seen.lock().unwrap().len(), 4);
    }

    #[test]
    fn status_is_gated_on_version() {
        let (dir, cfg, list, _) = setup("1.0.0");
        cfg.status_network_list(&list).unwrap();
        assert!(log_lines(dir.path()).is_empty());
        let (dir, cfg, list, _) = setup("1.1.0");
        cfg.status_network_list(&list).unwrap();
        assert_eq!(log_lines(dir.path()).len(), 2);
    }

    #[test]
    fn plugin_failure_names_plugin_and_keeps_code() {
        let (_dir, mut cfg, list, rt) = setup("1.0.0");
        cfg.path = vec![PathBuf::from("/nonexistent")];
        let err = cfg.add_network_list(&list, &rt).unwrap_err();
        let InvokeError::Plugin { plugin, source, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(plugin, "first");
        assert_eq!(source.code, crate::error::ErrorCode::NotFound);
    }

    #[test]
    fn loads_dir_sorted_and_wraps_single_confs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("20-b.conf"),
            r#"{"cniVersion":"0.4.0","name":"b","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("10-a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"loopback"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("README"), "ignored").unwrap();
        let names: Vec<_> = load_conf_lists(dir.path())
            .unwrap()
            .into_iter()
            .map(|(_, l)| l.name.to_string())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            load_conf_list(dir.path(), "b").unwrap().plugins[0]["type"],
            "bridge"
        );
        assert!(matches!(
            load_conf_list(dir.path(), "zzz"),
            Err(InvokeError::NoSuchNetwork { .. })
        ));
    }
}
