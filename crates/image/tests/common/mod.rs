//! Test images as OCI layouts made on the spot, and a source that wraps one to count, cut,
//! slow down and corrupt what it serves.

#![allow(dead_code)] // each test binary uses its own subset
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_image::fetch::{BlobStream, Fetch, FetchError, Fetched, OciLayout};
use berth_image::oci::{Compression, media};
use berth_image::{Digest, Reference};
use serde_json::{Value, json};

mod layer_tar;
pub use layer_tar::{E, tar};

pub fn compress(tar: &[u8], how: Compression) -> Vec<u8> {
    match how {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).unwrap();
            gz.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

fn media_type(how: Compression) -> &'static str {
    match how {
        Compression::None => media::OCI_LAYER,
        Compression::Gzip => media::OCI_LAYER_GZIP,
        Compression::Zstd => media::OCI_LAYER_ZSTD,
    }
}

/// An OCI layout directory being filled.
pub struct Layout {
    pub dir: PathBuf,
    index: Vec<Value>,
}

/// What one image of a layout is made of.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Digest,
    pub manifest_size: u64,
    pub config: Digest,
    pub layers: Vec<Digest>,
    pub diff_ids: Vec<Digest>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
            index: Vec::new(),
        }
    }

    pub fn blob(&self, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        fs::write(self.dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        d
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    /// An image of `layers` (tar, compression) for `arch`, with `run` as its config's
    /// `config`; not yet in the index.
    pub fn image(&self, layers: &[(Vec<u8>, Compression)], arch: &str, run: Value) -> Built {
        let mut descs = Vec::new();
        let mut digests = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, how) in layers {
            let blob = compress(tar, *how);
            let d = self.blob(&blob);
            descs.push(
                json!({"mediaType": media_type(*how), "digest": d.to_string(), "size": blob.len()}),
            );
            digests.push(d);
            diff_ids.push(Digest::sha256_of(tar));
        }
        let config = json!({
            "created": "2026-01-02T03:04:05Z",
            "architecture": arch, "os": "linux",
            "config": run,
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>()},
        });
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_d = self.blob(&config_bytes);
        let manifest = json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": config_d.to_string(), "size": config_bytes.len()},
            "layers": descs,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        let manifest_d = self.blob(&manifest_bytes);
        Built {
            manifest: manifest_d,
            manifest_size: manifest_bytes.len() as u64,
            config: config_d,
            layers: digests,
            diff_ids,
        }
    }

    /// Lists `built` in index.json under `tag`.
    pub fn tag(&mut self, tag: &str, built: &Built) {
        self.index.push(json!({
            "mediaType": media::OCI_MANIFEST, "digest": built.manifest.to_string(),
            "size": built.manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.write_index();
    }

    /// Lists an index of `images` (platform, image) under `tag`.
    pub fn tag_index(&mut self, tag: &str, images: &[(&str, &Built)]) -> Digest {
        let manifests: Vec<Value> = images
            .iter()
            .map(|(platform, b)| {
                let mut parts = platform.split('/');
                let (os, arch) = (parts.next().unwrap(), parts.next().unwrap());
                let mut p = json!({"os": os, "architecture": arch});
                if let Some(v) = parts.next() {
                    p["variant"] = json!(v);
                }
                json!({"mediaType": media::OCI_MANIFEST, "digest": b.manifest.to_string(),
                       "size": b.manifest_size, "platform": p})
            })
            .chain(std::iter::once(json!({
                // An attestation, as buildkit adds: never chosen.
                "mediaType": media::OCI_MANIFEST, "digest": images[0].1.manifest.to_string(),
                "size": images[0].1.manifest_size,
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"}
            })))
            .collect();
        let index =
            json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests});
        let bytes = serde_json::to_vec(&index).unwrap();
        let d = self.blob(&bytes);
        self.index.push(json!({
            "mediaType": media::OCI_INDEX, "digest": d.to_string(), "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.write_index();
        d
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.index});
        fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }
}

/// One request a [`Spy`] served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub digest: Digest,
    pub offset: u64,
}

/// A layout source that records, cuts and slows.
pub struct Spy {
    pub inner: OciLayout,
    pub requests: Mutex<Vec<Request>>,
    /// Blob → bytes after which its next stream fails (once per entry, then removed).
    pub cut: Mutex<BTreeMap<Digest, Vec<u64>>>,
    /// Every blob stream fails at once (a registry that is down).
    pub down: bool,
    /// The source ignores offsets (a registry that answers Range with the whole blob).
    pub ignore_range: bool,
    /// Pause per 64 KiB read.
    pub slow: Option<Duration>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// Blobs in the order their first stream started.
    pub started: Mutex<Vec<Digest>>,
}

impl Spy {
    pub fn new(dir: &Path) -> Spy {
        Spy {
            inner: OciLayout::new(dir),
            requests: Mutex::new(Vec::new()),
            cut: Mutex::new(BTreeMap::new()),
            down: false,
            ignore_range: false,
            slow: None,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            started: Mutex::new(Vec::new()),
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The blobs requested (each once, in order).
    pub fn blobs_fetched(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = Vec::new();
        for r in self.requests() {
            if !out.contains(&r.digest) {
                out.push(r.digest);
            }
        }
        out
    }
}

struct SpyReader<'a> {
    inner: Box<dyn Read + Send>,
    spy: &'a Spy,
    left_before_cut: Option<u64>,
}

impl Read for SpyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(d) = self.spy.slow {
            std::thread::sleep(d);
        }
        let mut max = buf.len().min(64 * 1024);
        if let Some(left) = self.left_before_cut {
            if left == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "connection reset (test)",
                ));
            }
            max = max.min(usize::try_from(left).unwrap());
        }
        let n = self.inner.read(&mut buf[..max])?;
        if let Some(left) = &mut self.left_before_cut {
            *left -= n as u64;
        }
        Ok(n)
    }
}

impl Drop for SpyReader<'_> {
    fn drop(&mut self) {
        self.spy.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

// SAFETY-free: the reader only borrows the spy, which outlives the pull; the trait wants
// 'static readers, so the spy is leaked in tests that use it (see `leak`).
pub fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}

impl Fetch for &'static Spy {
    fn manifest(&self, reference: &Reference) -> Result<Fetched, FetchError> {
        self.inner.manifest(reference)
    }

    fn blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream, FetchError> {
        self.requests.lock().unwrap().push(Request {
            digest: digest.clone(),
            offset,
        });
        if self.down {
            return Err(FetchError::transient(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "registry down (test)",
            )));
        }
        {
            let mut started = self.started.lock().unwrap();
            if !started.contains(digest) {
                started.push(digest.clone());
            }
        }
        let asked = if self.ignore_range { 0 } else { offset };
        let stream = self.inner.blob(reference, digest, asked)?;
        let cut = self.cut.lock().unwrap().get_mut(digest).and_then(|v| {
            if v.is_empty() {
                None
            } else {
                Some(v.remove(0))
            }
        });
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let spy: &'static Spy = self;
        Ok(BlobStream {
            reader: Box::new(SpyReader {
                inner: stream.reader,
                spy,
                left_before_cut: cut,
            }),
            start: stream.start,
        })
    }
}

/// Every file under `dir`, relative, sorted (to see what a failed pull left).
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(base).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            } else {
                out.push(rel);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}
