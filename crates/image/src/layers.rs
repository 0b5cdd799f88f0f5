//! Unpacked layers by chain id: `<images>/layers/<chain hex>/{diff/, layer.json}`. `diff` is
//! the layer in overlay format (see [`crate::unpack`]), one lower directory of the overlay of
//! every container whose image has this chain; `layer.json` says what it was made from.
//!
//! A layer is unpacked in `layers/.tmp-<chain hex>-<pid>-<rand>` and renamed into place once
//! its diffID is verified: a layer directory never exists half-made. Two pulls racing to
//! unpack one chain both succeed, the second rename finding the first's in place. Removal
//! renames to `.tmp-rm-…` first, so a layer disappears atomically; what killed processes left
//! of either is swept once its process is gone.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use berth_fs::WriteOptions;
use berth_fs::mounts::{self, MountsError};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Errors of the `layers` module.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {chain_id} is not in the store (the image is incomplete: pull it again)")]
    Missing { chain_id: Digest },
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("remove layer {chain_id}")]
    Remove {
        chain_id: Digest,
        #[source]
        source: MountsError,
    },
    #[error("read random bytes from /dev/urandom")]
    Random(#[source] io::Error),
}

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LayerError {
    let path = path.to_path_buf();
    move |source| LayerError::Io { step, path, source }
}

/// `layer.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    pub chain_id: Digest,
    pub diff_id: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
    /// The compressed blob it was unpacked from.
    pub blob: Digest,
    /// Bytes of regular files in it.
    pub size: u64,
    pub created: String,
}

/// The layer directory of a store.
#[derive(Debug, Clone)]
pub struct Layers {
    dir: PathBuf,
}

/// A layer being unpacked: removed on drop unless committed.
#[derive(Debug)]
pub struct StagedLayer {
    dir: PathBuf,
    committed: bool,
}

impl StagedLayer {
    /// Where the layer's files go.
    pub fn diff(&self) -> PathBuf {
        self.dir.join("diff")
    }
}

impl Drop for StagedLayer {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = mounts::delete_tree(&self.dir) {
                eprintln!("berth: {}", crate::error_chain(&e));
            }
        }
    }
}

impl Layers {
    pub fn new(dir: PathBuf) -> Layers {
        Layers { dir }
    }

    pub fn create_dirs(&self) -> Result<(), LayerError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err("create", &self.dir))
    }

    fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.dir.join(chain_id.hex())
    }

    /// The layer's files: a lower directory of an overlay.
    pub fn diff_dir(&self, chain_id: &Digest) -> PathBuf {
        self.layer_dir(chain_id).join("diff")
    }

    pub fn exists(&self, chain_id: &Digest) -> bool {
        self.layer_dir(chain_id).join("layer.json").is_file()
    }

    pub fn get(&self, chain_id: &Digest) -> Result<Option<LayerRecord>, LayerError> {
        let path = self.layer_dir(chain_id).join("layer.json");
        match berth_fs::read_regular(&path, 1 << 20) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| LayerError::Parse { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LayerError::Io {
                step: "read",
                path,
                source,
            }),
        }
    }

    /// A fresh staging directory for `chain_id`, with an empty `diff` in it.
    pub fn stage(&self, chain_id: &Digest) -> Result<StagedLayer, LayerError> {
        let dir = self.dir.join(format!(
            ".tmp-{}-{}-{}",
            chain_id.short(),
            std::process::id(),
            random_suffix()?
        ));
        let staged = StagedLayer {
            dir,
            committed: false,
        };
        for (path, mode) in [(staged.dir.clone(), 0o700), (staged.diff(), 0o755)] {
            fs::DirBuilder::new()
                .mode(mode)
                .create(&path)
                .map_err(io_err("create", &path))?;
        }
        Ok(staged)
    }

    /// Writes `layer.json` into `staged` and renames it into place. If another process put
    /// the same chain in place meanwhile, that one stays and `staged` is deleted.
    pub fn commit(&self, mut staged: StagedLayer, record: &LayerRecord) -> Result<(), LayerError> {
        let meta = staged.dir.join("layer.json");
        let json = serde_json::to_vec_pretty(record).map_err(|source| LayerError::Parse {
            path: meta.clone(),
            source,
        })?;
        berth_fs::write_atomic(
            &meta,
            &json,
            WriteOptions {
                mode: 0o644,
                durable: false,
            },
        )
        .map_err(io_err("write", &meta))?;
        let target = self.layer_dir(&record.chain_id);
        match fs::rename(&staged.dir, &target) {
            Ok(()) => {
                staged.committed = true;
                Ok(())
            }
            // Someone else's is in place (a rename onto a non-empty directory fails).
            Err(_) if self.exists(&record.chain_id) => Ok(()),
            Err(e) => Err(io_err("rename into place", &target)(e)),
        }
    }

    /// Every layer in the store.
    pub fn list(&self) -> Result<Vec<LayerRecord>, LayerError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(io_err("list", &self.dir)(source)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let name = format!("sha256:{}", entry.file_name().to_string_lossy());
            let Ok(chain_id) = Digest::try_from(name.as_str()) else {
                continue; // .tmp-*
            };
            if let Some(record) = self.get(&chain_id)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Deletes a layer (gone already is fine). The caller checked nobody uses it.
    pub fn remove(&self, chain_id: &Digest) -> Result<(), LayerError> {
        let target = self.layer_dir(chain_id);
        let doomed = self.dir.join(format!(
            ".tmp-rm-{}-{}-{}",
            chain_id.short(),
            std::process::id(),
            random_suffix()?
        ));
        match fs::rename(&target, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("remove", &target)(e)),
        }
        mounts::delete_tree(&doomed).map_err(|source| LayerError::Remove {
            chain_id: chain_id.clone(),
            source,
        })
    }

    /// Deletes the staging directories whose process is gone (all of them with `all`: the
    /// caller holds the store exclusively, so none is anyone's).
    pub fn sweep(&self, all: bool) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(".tmp-") else {
                continue;
            };
            let pid = rest
                .trim_start_matches("rm-")
                .split('-')
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok());
            let live = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if all || !live {
                if let Err(e) = mounts::delete_tree(&entry.path()) {
                    eprintln!("berth: {}", crate::error_chain(&e));
                }
            }
        }
    }

    /// Bytes used by a layer's files (from its record).
    pub fn size(&self, chain_id: &Digest) -> u64 {
        self.get(chain_id).ok().flatten().map_or(0, |r| r.size)
    }
}

/// 12 random hex digits: staging directories of concurrent unpacks never collide.
pub(crate) fn random_suffix() -> Result<String, LayerError> {
    let mut buf = [0u8; 6];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(LayerError::Random)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record(chain: &Digest) -> LayerRecord {
        LayerRecord {
            chain_id: chain.clone(),
            diff_id: chain.clone(),
            parent: None,
            blob: chain.clone(),
            size: 1,
            created: String::new(),
        }
    }

    #[test]
    fn staged_layers_appear_whole_or_not_at_all() {
        let tmp = tempfile::tempdir().unwrap();
        let layers = Layers::new(tmp.path().join("layers"));
        layers.create_dirs().unwrap();
        let chain = Digest::sha256_of(b"c");
        {
            let staged = layers.stage(&chain).unwrap();
            fs::write(staged.diff().join("f"), b"x").unwrap();
            // Dropped without commit: nothing stays.
        }
        assert!(!layers.exists(&chain));
        assert_eq!(fs::read_dir(tmp.path().join("layers")).unwrap().count(), 0);

        let staged = layers.stage(&chain).unwrap();
        fs::write(staged.diff().join("f"), b"x").unwrap();
        let racer = layers.stage(&chain).unwrap();
        layers.commit(staged, &record(&chain)).unwrap();
        // The loser of a race commits fine and leaves nothing.
        layers.commit(racer, &record(&chain)).unwrap();
        assert!(layers.exists(&chain));
        assert_eq!(fs::read(layers.diff_dir(&chain).join("f")).unwrap(), b"x");
        assert_eq!(layers.list().unwrap().len(), 1);
        assert_eq!(fs::read_dir(tmp.path().join("layers")).unwrap().count(), 1);

        // A killed process's staging directory is swept; a live one's is not.
        let dead = tmp
            .path()
            .join(format!("layers/.tmp-{}-999999999-aa", chain.short()));
        let live = tmp.path().join(format!(
            "layers/.tmp-{}-{}-bb",
            chain.short(),
            std::process::id()
        ));
        fs::create_dir_all(dead.join("diff")).unwrap();
        fs::create_dir_all(live.join("diff")).unwrap();
        layers.sweep(false);
        assert!(!dead.exists());
        assert!(live.exists());
        layers.sweep(true);
        assert!(!live.exists());

        layers.remove(&chain).unwrap();
        assert!(!layers.exists(&chain));
        layers.remove(&chain).unwrap();
    }
}
