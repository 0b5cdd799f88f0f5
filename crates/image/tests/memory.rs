//! Memory stays bounded while a large layer is pulled: the layer is streamed from the source to
//! its partial blob, and read back as it grows by the unpacker, never held whole. The pull
//! runs in a child process of its own (this test binary re-executed) so that its peak RSS
//! (`VmHWM`) is its alone. The suite pulls a 64 MB layer; the figures of the issue (a 500 MB
//! layer, gzip) come from the same test with `BERTH_LAYER_MB=500 BERTH_LAYER_GZIP=1` in a
//! release build:
//!
//! ```text
//! BERTH_LAYER_MB=500 BERTH_LAYER_GZIP=1 cargo test --release -p berth-image --test memory -- --nocapture
//! ```
#![allow(clippy::unwrap_used)]

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use berth_image::fetch::OciLayout;
use berth_image::oci::media;
use berth_image::progress::Quiet;
use berth_image::pull::PullOptions;
use berth_image::{Digest, ImageStore, Reference};
use serde_json::json;

const TEST: &str = "peak_memory_stays_bounded_while_pulling_a_large_layer";
const CHILD: &str = "BERTH_MEMORY_CHILD";
/// The goal of the issue.
const LIMIT_KB: u64 = 64 * 1024;

/// Pseudo-random bytes (xorshift): incompressible, like real binaries, and made on the fly.
struct Noise {
    state: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX))
            & !7;
        for chunk in buf[..n].chunks_exact_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes a file while hashing it.
struct HashingWriter<W> {
    inner: W,
    hasher: berth_image::digest::Hasher,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An OCI layout of one image whose one layer holds `mb` MB of noise in 8 files, streamed
/// to disk (never in memory either).
fn big_layout(dir: &Path, mb: u64, gzip: bool) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let tmp = dir.join("layer.tmp");
    let blob = HashingWriter {
        inner: BufWriter::new(File::create(&tmp).unwrap()),
        hasher: berth_image::digest::Hasher::new(berth_image::digest::Algorithm::Sha256),
        count: 0,
    };
    let (blob, diff_id) = {
        let write_tar = |out: &mut dyn Write| -> Digest {
            let mut tar_hash = HashingWriter {
                inner: out,
                hasher: berth_image::digest::Hasher::new(berth_image::digest::Algorithm::Sha256),
                count: 0,
            };
            {
                let mut tar = tar::Builder::new(&mut tar_hash);
                let per_file = mb * 1_000_000 / 8;
                for i in 0..8u64 {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_uid(0);
                    h.set_gid(0);
                    h.set_mtime(0);
                    h.set_size(per_file);
                    let noise = Noise {
                        state: 0x9E37_79B9_7F4A_7C15 ^ i,
                        left: per_file,
                    };
                    tar.append_data(&mut h, format!("data/{i}"), noise).unwrap();
                }
                tar.finish().unwrap();
            }
            tar_hash.hasher.finish()
        };
        let mut blob = blob;
        let diff_id = if gzip {
            let mut gz = flate2::write::GzEncoder::new(&mut blob, flate2::Compression::fast());
            let d = write_tar(&mut gz);
            gz.finish().unwrap();
            d
        } else {
            write_tar(&mut blob)
        };
        blob.flush().unwrap();
        (blob, diff_id)
    };
    let (layer_d, layer_size) = (blob.hasher.finish(), blob.count);
    fs::rename(&tmp, dir.join("blobs/sha256").join(layer_d.hex())).unwrap();
    let put = |bytes: &[u8]| {
        let d = Digest::sha256_of(bytes);
        fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        d
    };
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}
    }))
    .unwrap();
    let config_d = put(&config);
    let layer_type = if gzip {
        media::OCI_LAYER_GZIP
    } else {
        media::OCI_LAYER
    };
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_d.to_string(), "size": config.len()},
        "layers": [{"mediaType": layer_type, "digest": layer_d.to_string(), "size": layer_size}]
    }))
    .unwrap();
    let manifest_d = put(&manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": media::OCI_MANIFEST, "digest": manifest_d.to_string(), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "big"}}]});
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

fn status_kb(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// In the child: build the layout, pull it, print the figures.
fn child() {
    let mb: u64 = std::env::var("BERTH_LAYER_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let gzip = std::env::var_os("BERTH_LAYER_GZIP").is_some();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let built = Instant::now();
    big_layout(&layout, mb, gzip);
    let build_time = built.elapsed();
    let images = tmp.path().join("images");
    fs::create_dir(&images).unwrap();
    let store = ImageStore::new(images);
    let before = status_kb("VmRSS:");
    let source = OciLayout::new(&layout);
    let r = Reference::parse("localhost/big:big").unwrap();
    let started = Instant::now();
    store
        .pull(&source, &r, &PullOptions::default(), &Quiet)
        .unwrap();
    let cold = started.elapsed();
    let started = Instant::now();
    let again = store
        .pull(&source, &r, &PullOptions::default(), &Quiet)
        .unwrap();
    let warm = started.elapsed();
    assert!(again.up_to_date);
    println!(
        "layer {mb} MB ({}) made in {:.2?}; cold pull {:.2?}, again {:.2?}; rss before {before} kB",
        if gzip { "gzip" } else { "uncompressed" },
        build_time,
        cold,
        warm
    );
    println!("peak-rss-kb: {}", status_kb("VmHWM:"));
}

#[test]
fn peak_memory_stays_bounded_while_pulling_a_large_layer() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kb: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no figure in {stdout}"));
    // The line follows the harness's `test … ` on the same line.
    for line in stdout
        .lines()
        .filter_map(|l| l.rfind("layer ").map(|i| &l[i..]))
    {
        println!("{line}; peak rss {peak} kB");
    }
    assert!(
        peak < LIMIT_KB,
        "peak RSS {peak} kB while pulling: over {LIMIT_KB} kB"
    );
}
