//! Debian's `skopeo` as the reference client: it pushes the catalog's layouts to a
//! [`TestRegistry`] and inspects what a registry or a layout holds, so Berth's own client is
//! checked against a tool that is not Berth.
//!
//! skopeo runs inside the registry's namespace (127.0.0.1 there is the registry), with
//! `--insecure-policy` (no signature policy is wanted for test images) and an empty auth file
//! (nothing from the host's `auth.json` leaks in). Pushes use `--all --preserve-digests`, so
//! an index goes with all its images and every digest is the layout's.
//!
//! [`TestRegistry`]: crate::TestRegistry

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

use crate::images::layout::{REF_NAME, media};
use crate::netns::{TestNetns, TestNetnsError};
use crate::registry::TestRegistry;

/// Debian's package `skopeo` installs it here.
pub const SKOPEO_BIN: &str = "/usr/bin/skopeo";

/// Errors of running skopeo.
#[derive(Debug, thiserror::Error)]
pub enum SkopeoError {
    #[error("{SKOPEO_BIN} is missing: install Debian's skopeo package")]
    NoSkopeo,
    #[error("run skopeo {args}")]
    Spawn {
        args: String,
        #[source]
        source: io::Error,
    },
    #[error("run skopeo {args} in netns")]
    Netns {
        args: String,
        #[source]
        source: Box<TestNetnsError>,
    },
    #[error("skopeo {args} failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("skopeo {args} printed no JSON")]
    Json {
        args: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("create a scratch directory for skopeo")]
    Scratch {
        #[source]
        source: io::Error,
    },
    #[error("read tag {tag} of the layout {layout}")]
    Layout {
        layout: PathBuf,
        tag: String,
        #[source]
        source: io::Error,
    },
    #[error("the layout {layout} has no tag {tag}")]
    NoTag { layout: PathBuf, tag: String },
    #[error("read the digest skopeo {args} wrote to {path}")]
    Digest {
        args: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A registry as skopeo reaches it: the namespace to run in, the host, TLS and credentials.
#[derive(Debug, Clone)]
pub struct Remote<'a> {
    ns: &'a TestNetns,
    host: String,
    cert_dir: Option<PathBuf>,
    creds: Option<String>,
}

impl<'a> Remote<'a> {
    /// `registry`, running in `ns`: plain http (no TLS checks), or TLS verified against its CA.
    pub fn of(ns: &'a TestNetns, registry: &TestRegistry) -> Remote<'a> {
        Remote {
            ns,
            host: registry.host(),
            cert_dir: registry.cert_dir(),
            creds: None,
        }
    }

    /// Any `host:port` reachable from `ns` (e.g. a [`Throttle`](crate::Throttle)), plain http.
    pub fn host(ns: &'a TestNetns, host: &str) -> Remote<'a> {
        Remote {
            ns,
            host: host.to_owned(),
            cert_dir: None,
            creds: None,
        }
    }

    /// Basic or token-server credentials.
    #[must_use]
    pub fn creds(mut self, user: &str, password: &str) -> Remote<'a> {
        self.creds = Some(format!("{user}:{password}"));
        self
    }

    /// `docker://HOST/<reference>`.
    pub fn docker_ref(&self, reference: &str) -> String {
        format!("docker://{}/{reference}", self.host)
    }

    /// The TLS and credential flags of `which` side (`dest` for copy, none for inspect).
    fn flags(&self, side: &str) -> Vec<String> {
        let flag = |name: &str| {
            if side.is_empty() {
                format!("--{name}")
            } else {
                format!("--{side}-{name}")
            }
        };
        let mut out = Vec::new();
        match &self.cert_dir {
            Some(dir) => {
                out.push(format!("{}=true", flag("tls-verify")));
                out.push(flag("cert-dir"));
                out.push(dir.display().to_string());
            }
            None => out.push(format!("{}=false", flag("tls-verify"))),
        }
        if let Some(creds) = &self.creds {
            out.push(flag("creds"));
            out.push(creds.clone());
        }
        out
    }
}

/// `skopeo copy --all --preserve-digests oci:DIR:TAG docker://HOST/<reference>` inside the
/// registry's namespace: pushes the image or index tagged `tag` in the layout at `layout`
/// (e.g. `layout.dir()`, `"app"`). Returns the pushed manifest's (or index's) digest, as
/// skopeo reports it.
///
/// skopeo's `oci:` transport takes only OCI media types from `index.json`; an image with
/// Docker media types is pushed from a `dir:` copy of it instead (hardlinks to the blobs).
pub fn push(
    layout: &Path,
    tag: &str,
    to: &Remote<'_>,
    reference: &str,
) -> Result<String, SkopeoError> {
    let source = Source::of(layout, tag)?;
    let digest_file = source.scratch.path().join("digest");
    let mut args: Vec<String> = ["copy", "--all", "--preserve-digests", "--quiet"]
        .map(String::from)
        .into();
    args.push("--digestfile".into());
    args.push(digest_file.display().to_string());
    args.extend(to.flags("dest"));
    args.push(source.name.clone());
    args.push(to.docker_ref(reference));
    run(Some(to.ns), &args)?;
    std::fs::read_to_string(&digest_file)
        .map(|d| d.trim().to_owned())
        .map_err(|source| SkopeoError::Digest {
            args: args.join(" "),
            path: digest_file,
            source,
        })
}

/// skopeo's name of a tagged image of a layout, and a scratch directory (which holds the
/// `dir:` copy of a Docker-typed image).
struct Source {
    name: String,
    scratch: TempDir,
}

impl Source {
    fn of(layout: &Path, tag: &str) -> Result<Source, SkopeoError> {
        let layout_err = |source| SkopeoError::Layout {
            layout: layout.to_path_buf(),
            tag: tag.to_owned(),
            source,
        };
        let scratch = tempfile::Builder::new()
            .prefix("berth-skopeo-")
            .tempdir()
            .map_err(|source| SkopeoError::Scratch { source })?;
        let index = layout.join("index.json");
        let entry = read_json(&index)
            .map_err(layout_err)?
            .get("manifests")
            .and_then(Value::as_array)
            .and_then(|m| {
                m.iter()
                    .find(|e| e["annotations"][REF_NAME] == tag)
                    .cloned()
            })
            .ok_or_else(|| SkopeoError::NoTag {
                layout: layout.to_path_buf(),
                tag: tag.to_owned(),
            })?;
        let media_type = entry["mediaType"].as_str().unwrap_or_default();
        if media_type != media::DOCKER_MANIFEST && media_type != media::DOCKER_LIST {
            return Ok(Source {
                name: format!("oci:{}:{tag}", layout.display()),
                scratch,
            });
        }
        let digest = entry["digest"].as_str().unwrap_or_default();
        let dir = scratch.path().join("dir");
        write_dir_copy(layout, digest, &dir).map_err(layout_err)?;
        Ok(Source {
            name: format!("dir:{}", dir.display()),
            scratch,
        })
    }
}

/// skopeo's `dir:` transport: `version`, `manifest.json` (the top manifest or list), each
/// list entry as `<hex>.manifest.json`, and every other blob as `<hex>`.
fn write_dir_copy(layout: &Path, top: &str, dir: &Path) -> io::Result<()> {
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap_or(digest))
    };
    let hex = |digest: &str| digest.strip_prefix("sha256:").unwrap_or(digest).to_owned();
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n")?;
    let link = |from: PathBuf, to: PathBuf| -> io::Result<()> {
        match std::fs::hard_link(&from, &to) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            // Another filesystem: copy.
            Err(_) => std::fs::copy(&from, &to).map(drop),
        }
    };
    link(blob(top), dir.join("manifest.json"))?;
    let top_doc = read_json(&blob(top))?;
    let mut manifests = Vec::new();
    match top_doc.get("manifests").and_then(Value::as_array) {
        Some(list) => {
            for d in list.iter().filter_map(|e| e["digest"].as_str()) {
                link(blob(d), dir.join(format!("{}.manifest.json", hex(d))))?;
                manifests.push(d.to_owned());
            }
        }
        None => manifests.push(top.to_owned()),
    }
    for m in manifests {
        let doc = read_json(&blob(&m))?;
        let layers = doc["layers"].as_array().cloned().unwrap_or_default();
        for d in std::iter::once(&doc["config"])
            .chain(layers.iter())
            .filter_map(|d| d["digest"].as_str())
        {
            link(blob(d), dir.join(hex(d)))?;
        }
    }
    Ok(())
}

fn read_json(path: &Path) -> io::Result<Value> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(io::Error::other)
}

/// `skopeo inspect [--raw] docker://HOST/<reference>` inside the registry's namespace: the
/// raw manifest (or index), or skopeo's summary (`Digest`, `Layers`, `Architecture`, …).
pub fn inspect(from: &Remote<'_>, reference: &str, raw: bool) -> Result<Value, SkopeoError> {
    let mut args = vec!["inspect".to_owned()];
    if raw {
        args.push("--raw".into());
    }
    args.extend(from.flags(""));
    args.push(from.docker_ref(reference));
    let out = run(Some(from.ns), &args)?;
    parse(&args, &out.stdout)
}

/// `skopeo inspect [--raw]` of the image tagged `tag` in the layout at `layout`: checks a
/// layout without any registry.
pub fn inspect_layout(layout: &Path, tag: &str, raw: bool) -> Result<Value, SkopeoError> {
    let source = Source::of(layout, tag)?;
    let mut args = vec!["inspect".to_owned()];
    if raw {
        args.push("--raw".into());
    }
    args.push(source.name.clone());
    let out = run(None, &args)?;
    parse(&args, &out.stdout)
}

fn parse(args: &[String], stdout: &[u8]) -> Result<Value, SkopeoError> {
    serde_json::from_slice(stdout).map_err(|source| SkopeoError::Json {
        args: args.join(" "),
        source,
    })
}

/// Runs skopeo (in `ns` if given) and fails on a non-zero exit, with its stderr.
fn run(ns: Option<&TestNetns>, args: &[String]) -> Result<Output, SkopeoError> {
    if !Path::new(SKOPEO_BIN).exists() {
        return Err(SkopeoError::NoSkopeo);
    }
    // An auth file that does not exist: skopeo reads it as empty, never the host's.
    let auth_dir = tempfile::tempdir().map_err(|source| SkopeoError::Spawn {
        args: args.join(" "),
        source,
    })?;
    let mut cmd = Command::new(SKOPEO_BIN);
    cmd.arg("--insecure-policy")
        .args(args)
        .env("REGISTRY_AUTH_FILE", auth_dir.path().join("auth.json"));
    let out = match ns {
        Some(ns) => ns.output(&mut cmd).map_err(|source| SkopeoError::Netns {
            args: args.join(" "),
            source: Box::new(source),
        })?,
        None => cmd.output().map_err(|source| SkopeoError::Spawn {
            args: args.join(" "),
            source,
        })?,
    };
    if !out.status.success() {
        return Err(SkopeoError::Failed {
            args: args.join(" "),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}
