//! Registry credentials, found where docker and podman keep them.
//!
//! Lookup ([`Credentials::lookup`]), first match wins:
//! 1. `--creds USER:PASS` ([`Credentials::with_creds`]);
//! 2. `--authfile FILE` or `$REGISTRY_AUTH_FILE`: only that file;
//! 3. otherwise podman's and docker's files in podman's order:
//!    `$XDG_RUNTIME_DIR/containers/auth.json` (root without it: `/run/containers/0/auth.json`),
//!    `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/…`), then
//!    `$DOCKER_CONFIG/config.json` (`~/.docker/config.json`).
//!
//! In each file, as docker reads it: `credHelpers[<host>]` names a helper for that registry,
//! else `credsStore` a helper for all, else `auths` holds `base64(user:pass)` (or an
//! `identitytoken`). Helpers are `docker-credential-<name> get`, found on the `PATH` of the
//! environment the credentials were built from. `auths` keys may be `host[:port]`,
//! `host/namespace/repo` (the most specific wins), `https://host/v1/` (docker's form for Docker
//! Hub: `https://index.docker.io/v1/`).
//!
//! `berth login` / `logout` ([`AuthFile`]) write podman's way: to the file `--authfile` or
//! `$REGISTRY_AUTH_FILE` names, else to `$XDG_RUNTIME_DIR/containers/auth.json` (a tmpfs: a
//! login lasts until reboot, as with podman); docker's `config.json` is only read.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::reference::DOCKER_HUB;

/// Docker Hub's key in docker's files and what its helpers are asked for.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";
/// What `docker-credential-*` helpers print when they hold nothing for a server.
const HELPER_NOT_FOUND: &str = "credentials not found";

/// Errors of the `credentials` module.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("--creds {0:?}: expected USER:PASS or USER")]
    BadCreds(String),
    #[error("read auth file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse auth file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("auth file {path}: the entry for {key:?} is not base64 of USER:PASS")]
    BadAuth { path: PathBuf, key: String },
    #[error("credential helper docker-credential-{helper} (for {registry}) is not on PATH")]
    HelperNotFound { helper: String, registry: String },
    #[error("run credential helper {program} for {registry}")]
    HelperSpawn {
        program: PathBuf,
        registry: String,
        #[source]
        source: io::Error,
    },
    #[error("credential helper {program} for {registry} failed: {message}")]
    HelperFailed {
        program: PathBuf,
        registry: String,
        message: String,
    },
    #[error("credential helper {program} for {registry} printed no credentials JSON")]
    HelperOutput {
        program: PathBuf,
        registry: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("auth file {path} is not a JSON object")]
    NotAnObject { path: PathBuf },
    #[error("write auth file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A secret for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthEntry {
    /// A user name and password (or a personal access token as the password).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (docker's `identitytoken`), traded at the token server.
    IdentityToken(String),
}

impl std::fmt::Debug for AuthEntry {
    // Never print secrets, also not in a test's assertion message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthEntry::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            AuthEntry::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

/// Where credentials come from (see the module documentation for the order).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    creds: Option<AuthEntry>,
    files: Vec<PathBuf>,
    /// `PATH` of the environment, for credential helpers.
    path: Option<OsString>,
}

impl Credentials {
    /// No credentials at all: every registry is asked anonymously.
    pub fn anonymous() -> Credentials {
        Credentials::default()
    }

    /// The files docker and podman read, from the environment `env` (e.g. `|k|
    /// std::env::var_os(k)`); tests pass their own map.
    pub fn from_env(env: impl Fn(&str) -> Option<OsString>) -> Credentials {
        let files = match env("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
            Some(file) => vec![PathBuf::from(file)],
            None => {
                let home = env("HOME").map(PathBuf::from);
                let mut files = vec![runtime_auth_file(&env)];
                let config_home = env("XDG_CONFIG_HOME")
                    .map(PathBuf::from)
                    .or_else(|| home.as_ref().map(|h| h.join(".config")));
                if let Some(dir) = config_home {
                    files.push(dir.join("containers/auth.json"));
                }
                let docker = env("DOCKER_CONFIG")
                    .map(PathBuf::from)
                    .or_else(|| home.as_ref().map(|h| h.join(".docker")));
                if let Some(dir) = docker {
                    files.push(dir.join("config.json"));
                }
                files
            }
        };
        Credentials {
            creds: None,
            files,
            path: env("PATH"),
        }
    }

    /// `--authfile FILE`: that file only.
    pub fn with_authfile(mut self, file: impl Into<PathBuf>) -> Credentials {
        self.files = vec![file.into()];
        self
    }

    /// `--creds USER:PASS` (podman also takes `USER` alone with an empty password).
    pub fn with_creds(mut self, creds: &str) -> Result<Credentials, CredentialsError> {
        let (user, pass) = creds.split_once(':').unwrap_or((creds, ""));
        if user.is_empty() {
            return Err(CredentialsError::BadCreds(creds.to_owned()));
        }
        self.creds = Some(AuthEntry::Basic {
            username: user.to_owned(),
            password: pass.to_owned(),
        });
        Ok(self)
    }

    /// The `PATH` credential helpers are looked up in (by default the environment's).
    pub fn with_helper_path(mut self, path: impl Into<OsString>) -> Credentials {
        self.path = Some(path.into());
        self
    }

    /// The files searched, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The credentials for `repository` on `registry` (`host[:port]`, `docker.io` for Docker
    /// Hub), or `None`: ask anonymously.
    pub fn lookup(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<Option<AuthEntry>, CredentialsError> {
        if let Some(creds) = &self.creds {
            return Ok(Some(creds.clone()));
        }
        for file in &self.files {
            let Some(config) = AuthConfig::read(file)? else {
                continue;
            };
            let helper = config
                .cred_helpers
                .get(registry)
                .or_else(|| {
                    // docker keys Docker Hub's helper as its v1 URL.
                    (registry == DOCKER_HUB)
                        .then(|| config.cred_helpers.get(DOCKER_HUB_AUTH_KEY))
                        .flatten()
                })
                .filter(|h| !h.is_empty());
            if let Some(helper) = helper {
                if let Some(found) = self.run_helper(helper, registry)? {
                    return Ok(Some(found));
                }
                continue;
            }
            // docker writes `"credsStore": ""` for none.
            if let Some(store) = config.creds_store.as_ref().filter(|s| !s.is_empty()) {
                if let Some(found) = self.run_helper(store, registry)? {
                    return Ok(Some(found));
                }
            }
            if let Some(found) = config.find(registry, repository, file)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// `docker-credential-<helper> get` with the server on stdin; its "not found" is `None`.
    fn run_helper(
        &self,
        helper: &str,
        registry: &str,
    ) -> Result<Option<AuthEntry>, CredentialsError> {
        let program = find_on_path(&format!("docker-credential-{helper}"), self.path.as_ref())
            .ok_or_else(|| CredentialsError::HelperNotFound {
                helper: helper.to_owned(),
                registry: registry.to_owned(),
            })?;
        let server = if registry == DOCKER_HUB {
            DOCKER_HUB_AUTH_KEY
        } else {
            registry
        };
        let spawn_err = |source| CredentialsError::HelperSpawn {
            program: program.clone(),
            registry: registry.to_owned(),
            source,
        };
        let mut child = Command::new(&program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading closes the pipe: its status tells the rest.
            let _ = stdin.write_all(server.as_bytes());
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            if stdout.contains(HELPER_NOT_FOUND) {
                return Ok(None);
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            let message = format!("{} {}", stdout.trim(), stderr.trim());
            return Err(CredentialsError::HelperFailed {
                program,
                registry: registry.to_owned(),
                message: format!("{} ({})", message.trim(), out.status),
            });
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct HelperAnswer {
            username: String,
            secret: String,
        }
        let answer: HelperAnswer = serde_json::from_slice(&out.stdout).map_err(|source| {
            CredentialsError::HelperOutput {
                program: program.clone(),
                registry: registry.to_owned(),
                source,
            }
        })?;
        // docker's convention: the user `<token>` marks an identity token.
        Ok(Some(if answer.username == "<token>" {
            AuthEntry::IdentityToken(answer.secret)
        } else {
            AuthEntry::Basic {
                username: answer.username,
                password: answer.secret,
            }
        }))
    }
}

/// podman's login file: `$XDG_RUNTIME_DIR/containers/auth.json`, for root without
/// `XDG_RUNTIME_DIR` `/run/containers/0/auth.json`.
fn runtime_auth_file(env: &impl Fn(&str) -> Option<OsString>) -> PathBuf {
    match env("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("containers/auth.json"),
        None => PathBuf::from(format!(
            "/run/containers/{}/auth.json",
            nix::unistd::geteuid()
        )),
    }
}

fn find_on_path(program: &str, path: Option<&OsString>) -> Option<PathBuf> {
    let path = path?;
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The parts of a docker `config.json` / podman `auth.json` that hold credentials.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthConfig {
    #[serde(default)]
    auths: HashMap<String, AuthsEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthsEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl AuthConfig {
    /// `None` when the file does not exist; an empty file counts as empty too.
    fn read(path: &Path) -> Result<Option<AuthConfig>, CredentialsError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CredentialsError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some(AuthConfig::default()));
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| CredentialsError::Parse {
                path: path.to_owned(),
                source,
            })
    }

    /// The `auths` entry for `registry/repository`: the longest key that is the registry or a
    /// namespace of the repository in it (podman), with docker's URL forms normalized.
    fn find(
        &self,
        registry: &str,
        repository: &str,
        path: &Path,
    ) -> Result<Option<AuthEntry>, CredentialsError> {
        let full = format!("{registry}/{repository}");
        let mut best: Option<(usize, &String, &AuthsEntry)> = None;
        for (key, entry) in &self.auths {
            let normalized = normalize_key(key);
            let matches = normalized == registry
                || (full.starts_with(&normalized)
                    && full.as_bytes().get(normalized.len()) == Some(&b'/'));
            if matches && best.is_none_or(|(len, _, _)| normalized.len() > len) {
                best = Some((normalized.len(), key, entry));
            }
        }
        let Some((_, key, entry)) = best else {
            return Ok(None);
        };
        if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(AuthEntry::IdentityToken(token.clone())));
        }
        let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        let bad = || CredentialsError::BadAuth {
            path: path.to_owned(),
            key: key.clone(),
        };
        let decoded = BASE64.decode(auth.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, password) = text.split_once(':').ok_or_else(bad)?;
        Ok(Some(AuthEntry::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }))
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/` → `host:5000`;
/// `host/ns/repo` stays.
fn normalize_key(key: &str) -> String {
    let stripped = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"));
    let key = match stripped {
        // A URL: only its host counts (docker writes `https://host/v1/`).
        Some(rest) => rest.split('/').next().unwrap_or(rest),
        None => key.trim_end_matches('/'),
    };
    match key {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
        _ => match key.split_once('/') {
            Some(("index.docker.io" | "registry-1.docker.io", rest)) => {
                format!("{DOCKER_HUB}/{rest}")
            }
            _ => key.to_owned(),
        },
    }
}

/// The file `berth login` writes and `berth logout` edits (podman's `auth.json` format: the
/// `auths` map of docker's `config.json`; other keys are kept as they are).
#[derive(Debug, Clone)]
pub struct AuthFile {
    path: PathBuf,
}

impl AuthFile {
    pub fn new(path: impl Into<PathBuf>) -> AuthFile {
        AuthFile { path: path.into() }
    }

    /// podman's choice: `$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`
    /// (`/run/containers/<uid>/auth.json`). `--authfile` overrides it: use [`AuthFile::new`].
    pub fn from_env(env: impl Fn(&str) -> Option<OsString>) -> AuthFile {
        match env("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
            Some(file) => AuthFile::new(file),
            None => AuthFile::new(runtime_auth_file(&env)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `username:password` for `key` (`host[:port]`, or `host/ns/repo` for one
    /// repository), replacing what was there.
    pub fn login(&self, key: &str, username: &str, password: &str) -> Result<(), CredentialsError> {
        let mut doc = self.read_doc()?;
        let auths = doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Value::Object(auths) = auths {
            // docker's own key for Docker Hub goes too, so the new entry is the one read.
            if key == DOCKER_HUB {
                auths.remove(DOCKER_HUB_AUTH_KEY);
            }
            let mut entry = Map::new();
            entry.insert(
                "auth".into(),
                Value::String(BASE64.encode(format!("{username}:{password}"))),
            );
            auths.insert(key.to_owned(), Value::Object(entry));
        }
        self.write_doc(&doc)
    }

    /// Removes the entry for `key` (and its docker URL forms); `false` when there was none
    /// ("not logged in").
    pub fn logout(&self, key: &str) -> Result<bool, CredentialsError> {
        let mut doc = self.read_doc()?;
        let removed = match doc.get_mut("auths") {
            Some(Value::Object(auths)) => {
                let before = auths.len();
                auths.retain(|k, _| normalize_key(k) != key);
                auths.len() != before
            }
            _ => false,
        };
        if removed {
            self.write_doc(&doc)?;
        }
        Ok(removed)
    }

    /// `logout --all`: every entry goes; `false` when there were none.
    pub fn logout_all(&self) -> Result<bool, CredentialsError> {
        let mut doc = self.read_doc()?;
        let had = matches!(doc.get("auths"), Some(Value::Object(a)) if !a.is_empty());
        if had {
            doc.insert("auths".into(), Value::Object(Map::new()));
            self.write_doc(&doc)?;
        }
        Ok(had)
    }

    fn read_doc(&self) -> Result<Map<String, Value>, CredentialsError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(source) => {
                return Err(CredentialsError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(CredentialsError::NotAnObject {
                path: self.path.clone(),
            }),
            Err(source) => Err(CredentialsError::Parse {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Secrets: the directory is made 0700 and the file 0600, written to a temporary beside
    /// it and renamed, so a reader never sees half a file.
    fn write_doc(&self, doc: &Map<String, Value>) -> Result<(), CredentialsError> {
        let err = |source| CredentialsError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
        let mut text = serde_json::to_vec_pretty(doc).map_err(|e| err(io::Error::other(e)))?;
        text.push(b'\n');
        let tmp = self
            .path
            .with_extension(format!("tmp.{}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            err(e)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn basic(u: &str, p: &str) -> Option<AuthEntry> {
        Some(AuthEntry::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn files_in_podmans_order() {
        let c = Credentials::from_env(env(&[
            ("HOME", "/home/u"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
            ("DOCKER_CONFIG", "/d"),
        ]));
        assert_eq!(
            c.files(),
            [
                PathBuf::from("/run/user/1/containers/auth.json"),
                PathBuf::from("/home/u/.config/containers/auth.json"),
                PathBuf::from("/d/config.json"),
            ]
        );
        let c = Credentials::from_env(env(&[("REGISTRY_AUTH_FILE", "/a.json"), ("HOME", "/h")]));
        assert_eq!(c.files(), [PathBuf::from("/a.json")]);
        assert_eq!(
            c.with_authfile("/b.json").files(),
            [PathBuf::from("/b.json")]
        );
    }

    #[test]
    fn reads_docker_auths_most_specific_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let enc = |s: &str| BASE64.encode(s);
        fs::write(
            &file,
            serde_json::json!({
                "auths": {
                    "https://index.docker.io/v1/": {"auth": enc("hub:pw")},
                    "127.0.0.1:5000": {"auth": enc("u:p:with:colons")},
                    "127.0.0.1:5000/team": {"auth": enc("team:tp")},
                    "http://10.0.0.1:80/": {"auth": enc("ten:tp")},
                    "quay.io": {"identitytoken": "refresh"},
                    "bad.io": {"auth": "!!"},
                },
                "HttpHeaders": {"X": "y"},
            })
            .to_string(),
        )
        .unwrap();
        let c = Credentials::anonymous().with_authfile(&file);
        assert_eq!(
            c.lookup("docker.io", "library/busybox").unwrap(),
            basic("hub", "pw")
        );
        assert_eq!(
            c.lookup("127.0.0.1:5000", "x").unwrap(),
            basic("u", "p:with:colons")
        );
        assert_eq!(
            c.lookup("127.0.0.1:5000", "team/app").unwrap(),
            basic("team", "tp")
        );
        assert_eq!(
            c.lookup("127.0.0.1:5000", "teamx/app").unwrap(),
            basic("u", "p:with:colons")
        );
        assert_eq!(c.lookup("10.0.0.1:80", "a").unwrap(), basic("ten", "tp"));
        assert_eq!(
            c.lookup("quay.io", "a").unwrap(),
            Some(AuthEntry::IdentityToken("refresh".into()))
        );
        assert_eq!(c.lookup("ghcr.io", "a").unwrap(), None);
        let err = c.lookup("bad.io", "a").unwrap_err();
        assert!(err.to_string().contains("bad.io"), "{err}");
        // --creds wins over everything.
        let c = c.with_creds("me:secret").unwrap();
        assert_eq!(c.lookup("docker.io", "x").unwrap(), basic("me", "secret"));
        assert!(Credentials::anonymous().with_creds(":x").is_err());
        // Missing files are no credentials, not an error.
        let none = Credentials::anonymous().with_authfile(dir.path().join("none.json"));
        assert_eq!(none.lookup("docker.io", "x").unwrap(), None);
    }

    #[test]
    fn login_and_logout_keep_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/auth.json");
        let file = AuthFile::new(&path);
        file.login("127.0.0.1:5000", "u", "p").unwrap();
        file.login("docker.io", "hub", "pw").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let c = Credentials::anonymous().with_authfile(&path);
        assert_eq!(c.lookup("127.0.0.1:5000", "a").unwrap(), basic("u", "p"));
        assert_eq!(c.lookup("docker.io", "a").unwrap(), basic("hub", "pw"));
        assert!(file.logout("127.0.0.1:5000").unwrap());
        assert!(!file.logout("127.0.0.1:5000").unwrap());
        assert_eq!(c.lookup("127.0.0.1:5000", "a").unwrap(), None);
        assert!(file.logout_all().unwrap());
        assert_eq!(c.lookup("docker.io", "a").unwrap(), None);

        // A docker config with its other keys survives a login.
        fs::write(&path, r#"{"credsStore":"","psFormat":"x","auths":{}}"#).unwrap();
        file.login("h:1", "a", "b").unwrap();
        let doc: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["psFormat"], "x");
        assert_eq!(
            AuthFile::from_env(env(&[("XDG_RUNTIME_DIR", "/r")])).path(),
            Path::new("/r/containers/auth.json")
        );
    }

    #[test]
    fn normalizes_docker_url_keys() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("registry-1.docker.io"), "docker.io");
        assert_eq!(normalize_key("http://h:5000/v2/"), "h:5000");
        assert_eq!(normalize_key("h:5000/ns/"), "h:5000/ns");
        assert_eq!(
            normalize_key("index.docker.io/library"),
            "docker.io/library"
        );
    }
}
