//! Layer tarballs: a [`LayerBuilder`] lists entries (files, directories, symlinks, hardlinks,
//! whiteouts, opaque markers) and writes them as one tar stream, uncompressed, gzip or zstd,
//! straight into a layout's blob store while hashing both the tar (the diffID) and the
//! compressed blob (the digest).
//!
//! Everything is deterministic, so two builds give the same digests: entries are written in
//! path order (hardlinks last, after their targets), with mtime 0, root ownership unless set
//! otherwise, no user or group names, and compressors without timestamps (flate2 writes
//! mtime 0 in the gzip header; zstd runs single-threaded at a fixed level).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::images::error::ImageError;
use crate::images::layout::{BlobWriter, Descriptor, OciLayout, digest_string, media};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Whose media types a manifest uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Oci,
    /// Docker's schema 2 (only gzip layers have a Docker media type).
    Docker,
}

/// A layer written to a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The compressed blob's digest (what manifests list).
    pub digest: String,
    pub size: u64,
    /// sha256 of the uncompressed tar (what the config's `rootfs.diff_ids` lists).
    pub diff_id: String,
    pub compression: Compression,
}

impl Layer {
    /// The media type of this layer in a manifest of `format`.
    pub fn media_type(&self, format: Format) -> &'static str {
        match (format, self.compression) {
            (Format::Docker, _) => media::DOCKER_LAYER_GZIP,
            (Format::Oci, Compression::None) => media::OCI_LAYER,
            (Format::Oci, Compression::Gzip) => media::OCI_LAYER_GZIP,
            (Format::Oci, Compression::Zstd) => media::OCI_LAYER_ZSTD,
        }
    }

    /// The descriptor a manifest of `format` lists.
    pub fn descriptor(&self, format: Format) -> Descriptor {
        Descriptor {
            media_type: self.media_type(format).to_owned(),
            digest: self.digest.clone(),
            size: self.size,
        }
    }
}

#[derive(Debug, Clone)]
enum Content {
    Bytes(Vec<u8>),
    /// A host file, streamed (busybox).
    HostFile(PathBuf),
    /// `len` pseudo-random (incompressible) bytes from `seed`, generated while written.
    Random {
        len: u64,
        seed: u64,
    },
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Content),
    Symlink(String),
    Hardlink(String),
}

#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
}

/// The entries of one layer. Paths are relative to the image root (a leading `/` is
/// dropped); adding a path twice keeps the last.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct LayerBuilder {
    entries: BTreeMap<String, Entry>,
    missing_owner: Vec<String>,
}

fn clean(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder::default()
    }

    fn add(mut self, path: &str, kind: Kind, mode: u32) -> Self {
        let entry = Entry {
            kind,
            mode,
            uid: 0,
            gid: 0,
        };
        self.entries.insert(clean(path), entry);
        self
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.add(path, Kind::Dir, mode)
    }

    pub fn file(self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        self.add(path, Kind::File(Content::Bytes(data.into())), mode)
    }

    /// A file with the content of `host` (read when the layer is written).
    pub fn host_file(self, path: &str, mode: u32, host: impl Into<PathBuf>) -> Self {
        self.add(path, Kind::File(Content::HostFile(host.into())), mode)
    }

    /// A file of `len` pseudo-random bytes from `seed`, never held in memory.
    pub fn random_file(self, path: &str, mode: u32, len: u64, seed: u64) -> Self {
        self.add(path, Kind::File(Content::Random { len, seed }), mode)
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.add(path, Kind::Symlink(target.to_owned()), 0o777)
    }

    /// A hardlink to `target` (an image path, written earlier in the same layer).
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.add(path, Kind::Hardlink(clean(target)), 0o644)
    }

    /// Deletes `path` of the layers below: the empty file `DIR/.wh.NAME`.
    pub fn whiteout(self, path: &str) -> Self {
        let path = clean(path);
        let wh = match path.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/.wh.{name}"),
            None => format!(".wh.{path}"),
        };
        self.file(&wh, 0o644, Vec::new())
    }

    /// Hides what the layers below have in directory `dir`: `DIR/.wh..wh..opq`.
    pub fn opaque(self, dir: &str) -> Self {
        let marker = format!("{}/.wh..wh..opq", clean(dir));
        self.file(&marker, 0o644, Vec::new())
    }

    /// Sets the owner of an entry added before.
    pub fn owner(mut self, path: &str, uid: u64, gid: u64) -> Self {
        let path = clean(path);
        match self.entries.get_mut(&path) {
            Some(e) => {
                e.uid = uid;
                e.gid = gid;
            }
            None => self.missing_owner.push(path),
        }
        self
    }

    /// Writes the layer as a blob of `layout`.
    pub fn write(&self, layout: &OciLayout, compression: Compression) -> Result<Layer, ImageError> {
        if let Some(entry) = self.missing_owner.first() {
            return Err(ImageError::NoEntry {
                entry: entry.clone(),
            });
        }
        let blob = layout.blob_writer()?;
        let encoder = match compression {
            Compression::None => Encoder::Plain(blob),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                blob,
                flate2::Compression::fast(),
            )),
            Compression::Zstd => Encoder::Zstd(
                zstd::stream::write::Encoder::new(blob, 3).map_err(ImageError::Compress)?,
            ),
        };
        // Uncompressed, the blob is the tar: its digest is the diffID, hashed once (sha256
        // dominates the time of a big layer in a debug build).
        let hasher = (compression != Compression::None).then(Sha256::new);
        let mut tar = tar::Builder::new(DiffIdWriter {
            inner: encoder,
            hasher,
        });
        // Hardlinks after everything else: their targets must come first in the stream.
        let (links, others): (Vec<_>, Vec<_>) = self
            .entries
            .iter()
            .partition(|(_, e)| matches!(e.kind, Kind::Hardlink(_)));
        for (path, entry) in others.into_iter().chain(links) {
            append(&mut tar, path, entry).map_err(|source| ImageError::Tar {
                entry: path.clone(),
                source,
            })?;
        }
        let diff = tar.into_inner().map_err(|source| ImageError::Tar {
            entry: "the end of the archive".into(),
            source,
        })?;
        let blob = diff.inner.finish().map_err(ImageError::Compress)?;
        let (digest, size) = blob.finish()?;
        let diff_id = diff.hasher.map_or_else(|| digest.clone(), digest_string);
        Ok(Layer {
            digest,
            size,
            diff_id,
            compression,
        })
    }
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, e: &Entry) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mtime(0);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_mode(e.mode);
    h.set_size(0);
    match &e.kind {
        Kind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut h, format!("{path}/"), io::empty())
        }
        Kind::File(content) => {
            h.set_entry_type(tar::EntryType::Regular);
            match content {
                Content::Bytes(b) => {
                    h.set_size(b.len() as u64);
                    tar.append_data(&mut h, path, b.as_slice())
                }
                Content::HostFile(host) => {
                    let file = File::open(host)?;
                    h.set_size(file.metadata()?.len());
                    tar.append_data(&mut h, path, file)
                }
                Content::Random { len, seed } => {
                    h.set_size(*len);
                    tar.append_data(&mut h, path, Random::new(*len, *seed))
                }
            }
        }
        Kind::Symlink(target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut h, path, target)
        }
        Kind::Hardlink(target) => {
            h.set_entry_type(tar::EntryType::Link);
            tar.append_link(&mut h, path, target)
        }
    }
}

/// Hashes the tar stream (the diffID) on its way into the compressor, unless it is the blob.
struct DiffIdWriter {
    inner: Encoder,
    hasher: Option<Sha256>,
}

impl Write for DiffIdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder {
    Plain(BlobWriter),
    Gzip(flate2::write::GzEncoder<BlobWriter>),
    Zstd(zstd::stream::write::Encoder<'static, BlobWriter>),
}

impl Encoder {
    fn finish(self) -> io::Result<BlobWriter> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(w) => w.finish(),
            Encoder::Zstd(w) => w.finish(),
        }
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

/// `len` bytes of splitmix64 output over a counter: cheap, deterministic whatever the read
/// sizes, and incompressible (gzip and zstd cannot shrink it).
struct Random {
    pos: u64,
    len: u64,
    seed: u64,
}

impl Random {
    fn new(len: u64, seed: u64) -> Random {
        Random { pos: 0, len, seed }
    }

    fn word(&self, index: u64) -> [u8; 8] {
        let mut z = self
            .seed
            .wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).to_le_bytes()
    }
}

impl Read for Random {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.len - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let mut i = 0;
        while i < n {
            let word = self.word(self.pos / 8);
            let at = (self.pos % 8) as usize;
            let take = (8 - at).min(n - i);
            buf[i..i + take].copy_from_slice(&word[at..at + take]);
            i += take;
            self.pos += take as u64;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn random_is_deterministic_and_sized() {
        let mut a = Vec::new();
        Random::new(1001, 7).read_to_end(&mut a).unwrap();
        let mut b = Vec::new();
        Random::new(1001, 7).read_to_end(&mut b).unwrap();
        assert_eq!(a.len(), 1001);
        assert_eq!(a, b);
        let mut c = Vec::new();
        Random::new(1001, 8).read_to_end(&mut c).unwrap();
        assert_ne!(a, c);
        // Odd read sizes give the same stream.
        let mut r = Random::new(1001, 7);
        let mut d = Vec::new();
        let mut buf = [0u8; 13];
        loop {
            let n = r.read(&mut buf[..5]).unwrap();
            if n == 0 {
                break;
            }
            d.extend_from_slice(&buf[..n]);
        }
        assert_eq!(a, d);
    }

    #[test]
    fn whiteout_and_opaque_names() {
        let b = LayerBuilder::new()
            .whiteout("/etc/gone.txt")
            .whiteout("top")
            .opaque("/data/old/");
        let names: Vec<&String> = b.entries.keys().collect();
        assert_eq!(
            names,
            [".wh.top", "data/old/.wh..wh..opq", "etc/.wh.gone.txt"]
        );
    }
}
