//! The named test images, built from the host's static busybox (Debian's `busybox-static`):
//! every image and benchmark test uses these instead of images from the Internet.
//!
//! | function | tag | what it is |
//! |---|---|---|
//! | [`app`] | `app` | base + 2 layers with a whiteout and an opaque dir; a full config (numeric `User`) |
//! | [`app2`] | `app2` | `app`'s first two layers (same digests) + its own; `User "app"` (a name) |
//! | [`multi`] | `multi` | OCI index: linux/amd64, linux/arm64 and a buildx attestation manifest |
//! | [`docker`] | `docker` | Docker schema 2 media types |
//! | [`docker_list`] | `docker-list` | a Docker manifest list of amd64 and arm64 Docker manifests |
//! | [`zstd`] | `zstd` | a zstd base, a zstd layer and an uncompressed layer |
//! | [`deep`] | `deep` | `n` layers, each adding one file |
//! | [`big`] | `big` | base + one layer of `bytes` pseudo-random bytes, gzip or not |
//! | [`five_layer`] | `five` | base + 4 small layers, runnable |
//!
//! The base layer: `/bin/busybox` with a symlink per applet in [`APPLETS`], `/usr/bin/env`,
//! `/etc/passwd` (root 0, `app` [`APP_UID`]:[`APP_GID`], nobody 65534), `/etc/group` (`app`
//! is also in [`APP_GROUPS`]), `/tmp` (1777), `/root` (0700), `/home/app` (owned by app),
//! empty `/dev`, `/proc`, `/sys`. Builds are deterministic: the same function gives the same
//! digests every time (within one build of the fixtures; another flate2 backend would
//! compress differently).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};

use crate::images::error::ImageError;
use crate::images::layers::{Compression, Format, Layer, LayerBuilder};
use crate::images::layout::{Descriptor, OciLayout, media};

/// Where Debian's `busybox-static` puts the static binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// The base layer's `/bin` symlinks to busybox.
pub const APPLETS: &[&str] = &[
    "[",
    "awk",
    "basename",
    "cat",
    "chmod",
    "chown",
    "cp",
    "cut",
    "date",
    "dd",
    "df",
    "dirname",
    "du",
    "echo",
    "env",
    "expr",
    "false",
    "find",
    "grep",
    "head",
    "hostname",
    "id",
    "ip",
    "kill",
    "ln",
    "ls",
    "mkdir",
    "mount",
    "mv",
    "nc",
    "nproc",
    "printenv",
    "printf",
    "ps",
    "pwd",
    "readlink",
    "realpath",
    "rm",
    "rmdir",
    "sed",
    "seq",
    "sh",
    "sha256sum",
    "sleep",
    "sort",
    "stat",
    "tail",
    "tee",
    "test",
    "timeout",
    "touch",
    "tr",
    "true",
    "uname",
    "uniq",
    "wc",
    "wget",
    "whoami",
    "xargs",
    "yes",
];
/// The `app` user of `/etc/passwd` and its primary group.
pub const APP_UID: u32 = 1000;
pub const APP_GID: u32 = 1000;
/// The supplementary groups `app` is a member of in `/etc/group` (`staff`, `extra`).
pub const APP_GROUPS: [u32; 2] = [50, 2000];
/// `nobody`, the numeric `User` of `app`.
pub const NOBODY: u32 = 65534;
/// The `created` of every config and history entry.
pub const CREATED: &str = "2026-01-01T00:00:00Z";
/// The `PATH` every config sets.
pub const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
    app:x:1000:1000:app:/home/app:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\n\
    daemon:x:1:\n\
    staff:x:50:app\n\
    app:x:1000:\n\
    extra:x:2000:daemon,app\n\
    nogroup:x:65534:\n";

/// One single-platform image written to a layout.
#[derive(Debug, Clone)]
pub struct Image {
    /// The layout directory.
    pub layout: PathBuf,
    /// Its `index.json` tag; `None` for an image only listed in an index.
    pub tag: Option<String>,
    pub format: Format,
    /// `linux/amd64` etc.
    pub platform: String,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Layer>,
}

impl Image {
    /// The layer blob digests, in order.
    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.digest.clone()).collect()
    }

    /// The config's `rootfs.diff_ids`.
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    /// `oci:DIR:TAG` (skopeo's name), if the image is tagged. skopeo's `oci:` transport reads
    /// OCI media types only: for a [`Format::Docker`] image use [`push`](crate::images::push)
    /// and [`inspect_layout`](crate::images::inspect_layout), which handle both.
    pub fn transport_ref(&self) -> Option<String> {
        let tag = self.tag.as_deref()?;
        Some(format!("oci:{}:{tag}", self.layout.display()))
    }
}

/// An index (OCI image index or Docker manifest list) written to a layout.
#[derive(Debug, Clone)]
pub struct IndexImage {
    pub layout: PathBuf,
    pub tag: String,
    pub index: Descriptor,
    /// The platform images, in index order.
    pub images: Vec<Image>,
    /// The attestation manifest the index lists after them, if any.
    pub attestation: Option<Descriptor>,
}

impl IndexImage {
    /// The image for `platform` (`linux/arm64`).
    pub fn image(&self, platform: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.platform == platform)
    }

    /// `oci:DIR:TAG` (an OCI index only; see [`Image::transport_ref`]).
    pub fn transport_ref(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }
}

/// The host's architecture as OCI names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The base layer's entries: busybox, its applets, users and groups, the usual directories.
pub fn base_layer() -> LayerBuilder {
    let mut b = LayerBuilder::new()
        .dir("bin", 0o755)
        .host_file("bin/busybox", 0o755, BUSYBOX)
        .dir("dev", 0o755)
        .dir("etc", 0o755)
        .file("etc/passwd", 0o644, PASSWD)
        .file("etc/group", 0o644, GROUP)
        .dir("home", 0o755)
        .dir("home/app", 0o755)
        .owner("home/app", APP_UID.into(), APP_GID.into())
        .dir("proc", 0o555)
        .dir("root", 0o700)
        .dir("sys", 0o555)
        .dir("tmp", 0o1777)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .symlink("usr/bin/env", "/bin/busybox")
        .dir("var", 0o755);
    for applet in APPLETS {
        b = b.symlink(&format!("bin/{applet}"), "busybox");
    }
    b
}

/// The base layer's blob per compression, kept for the process: busybox is most of a build's
/// time (gzip and sha256 of 2 MB take ~0.7 s in a debug build), and it never changes.
static BASE: Mutex<Vec<(Layer, Arc<[u8]>)>> = Mutex::new(Vec::new());

/// Writes the base layer to `layout`, from the process's cache when it has been built before.
fn write_base(layout: &OciLayout, compression: Compression) -> Result<Layer, ImageError> {
    let cached = BASE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(l, _)| l.compression == compression)
        .cloned();
    if let Some((layer, bytes)) = cached {
        layout.put_known(&layer.digest, &bytes)?;
        return Ok(layer);
    }
    let layer = base_layer().write(layout, compression)?;
    let path = layout.blob_path(&layer.digest);
    let bytes = std::fs::read(&path).map_err(|source| ImageError::Read { path, source })?;
    BASE.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((layer.clone(), bytes.into()));
    Ok(layer)
}

/// `app`'s second layer: files the third one deletes or hides.
fn app_layer_files() -> LayerBuilder {
    LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/gone.txt", 0o644, "deleted by a whiteout in layer 3\n")
        .dir("data", 0o755)
        .file("data/keep", 0o644, "kept\n")
        .dir("data/old", 0o755)
        .file("data/old/a", 0o644, "a\n")
        .file("data/old/b", 0o644, "b\n")
}

/// The first two layers of `app` and `app2` (written once per layout, same digests).
fn app_common(layout: &OciLayout) -> Result<Vec<Layer>, ImageError> {
    Ok(vec![
        write_base(layout, Compression::Gzip)?,
        app_layer_files().write(layout, Compression::Gzip)?,
    ])
}

/// `app` (tag `app`): base; `/etc/gone.txt`, `/data/old/{a,b}`, `/data/keep`; then a whiteout
/// of `/etc/gone.txt`, `/data/old` made opaque with only `new` in it, and `/app/run.sh`.
/// Config: `User "65534"`, `Env [PATH, APP_MODE=test]`, `WorkingDir /app`, `Entrypoint
/// ["/bin/sh","-c"]`, `Cmd [<prints uid, gid, cwd, APP_MODE>]`, `ExposedPorts 8080/tcp`,
/// `StopSignal SIGUSR1`, `Labels {org.berth.test: app}`.
pub fn app(layout: &mut OciLayout) -> Result<Image, ImageError> {
    let mut layers = app_common(layout)?;
    layers.push(
        LayerBuilder::new()
            .dir("etc", 0o755)
            .whiteout("etc/gone.txt")
            .dir("data", 0o755)
            .dir("data/old", 0o755)
            .opaque("data/old")
            .file("data/old/new", 0o644, "new\n")
            .dir("app", 0o755)
            .file(
                "app/run.sh",
                0o755,
                "#!/bin/sh\necho \"run.sh: uid=$(id -u) gid=$(id -g) cwd=$(pwd) mode=$APP_MODE\"\n",
            )
            .write(layout, Compression::Gzip)?,
    );
    let run = json!({
        "User": NOBODY.to_string(),
        "ExposedPorts": {"8080/tcp": {}},
        "Env": [PATH, "APP_MODE=test"],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo \"app: uid=$(id -u) gid=$(id -g) cwd=$(pwd) mode=$APP_MODE\""],
        "WorkingDir": "/app",
        "Labels": {"org.berth.test": "app"},
        "StopSignal": "SIGUSR1",
    });
    let history = [
        "ADD busybox /bin/busybox # base",
        "ADD files /etc/gone.txt /data",
        "RUN rm /etc/gone.txt && rm -r /data/old/* && echo new > /data/old/new # app",
    ];
    let spec = Spec::new(host_arch(), Format::Oci, run, &history);
    write_image(layout, Some("app"), layers, &spec)
}

/// `app2` (tag `app2`): `app`'s first two layers byte for byte, and `/app2/hello.txt`.
/// Config: `User "app"` (resolved through `/etc/passwd`), `WorkingDir /home/app`,
/// `Cmd ["/bin/sh","-c",<prints uid, gid, groups, HOME>]`, `Labels {org.berth.test: app2}`.
pub fn app2(layout: &mut OciLayout) -> Result<Image, ImageError> {
    let mut layers = app_common(layout)?;
    layers.push(
        LayerBuilder::new()
            .dir("app2", 0o755)
            .file("app2/hello.txt", 0o644, "hello from app2\n")
            .write(layout, Compression::Gzip)?,
    );
    let run = json!({
        "User": "app",
        "Env": [PATH],
        "Cmd": ["/bin/sh", "-c", "echo \"app2: uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME cwd=$(pwd)\""],
        "WorkingDir": "/home/app",
        "Labels": {"org.berth.test": "app2"},
    });
    let history = [
        "ADD busybox /bin/busybox # base",
        "ADD files /etc/gone.txt /data",
        "ADD hello.txt /app2/ # app2",
    ];
    let spec = Spec::new(host_arch(), Format::Oci, run, &history);
    write_image(layout, Some("app2"), layers, &spec)
}

/// An untagged image of `arch` for an index: base + `/platform` holding the architecture.
fn platform_image(layout: &mut OciLayout, arch: &str, format: Format) -> Result<Image, ImageError> {
    let layers = vec![
        write_base(layout, Compression::Gzip)?,
        LayerBuilder::new()
            .file("platform", 0o644, format!("{arch}\n"))
            .write(layout, Compression::Gzip)?,
    ];
    let run = json!({
        "Env": [PATH],
        "Cmd": ["/bin/cat", "/platform"],
        "Labels": {"org.berth.test": format!("multi-{arch}")},
    });
    let history = ["ADD busybox /bin/busybox # base", "ADD platform /platform"];
    let mut spec = Spec::new(arch, format, run, &history);
    if arch == "arm64" {
        spec.variant = Some("v8");
    }
    write_image(layout, None, layers, &spec)
}

/// The arm64 image is the amd64 one's busybox with `architecture: arm64`: it never runs here,
/// tests only look at which image was chosen (`/platform`, the config).
const INDEX_ARCHES: [&str; 2] = ["amd64", "arm64"];

/// `multi` (tag `multi`): an OCI index of linux/amd64 and linux/arm64 images (each with
/// `/platform` holding its architecture), then an attestation manifest for the amd64 one
/// (platform unknown/unknown, `vnd.docker.reference.type: attestation-manifest`), as buildx
/// writes them.
pub fn multi(layout: &mut OciLayout) -> Result<IndexImage, ImageError> {
    let mut images = Vec::new();
    for arch in INDEX_ARCHES {
        images.push(platform_image(layout, arch, Format::Oci)?);
    }
    let attestation = attestation_manifest(layout, &images[0])?;
    let mut entries: Vec<Value> = images.iter().map(index_entry).collect();
    let mut att = attestation.to_json();
    att["annotations"] = json!({
        "vnd.docker.reference.digest": images[0].manifest.digest,
        "vnd.docker.reference.type": "attestation-manifest",
    });
    att["platform"] = json!({"architecture": "unknown", "os": "unknown"});
    entries.push(att);
    let index = layout.put_json(
        media::OCI_INDEX,
        &json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": entries}),
    )?;
    layout.tag("multi", &index)?;
    Ok(IndexImage {
        layout: layout.dir().to_path_buf(),
        tag: "multi".into(),
        index,
        images,
        attestation: Some(attestation),
    })
}

/// An in-toto attestation manifest for `of`, shaped like buildkit's (an SPDX statement layer,
/// a config of platform unknown/unknown).
fn attestation_manifest(layout: &OciLayout, of: &Image) -> Result<Descriptor, ImageError> {
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{"name": "berth-test", "digest": {"sha256": of.manifest.hex()}}],
        "predicate": {"spdxVersion": "SPDX-2.3", "name": "berth-test", "packages": []},
    });
    let layer = layout.put_json(media::IN_TOTO, &statement)?;
    let config = layout.put_json(
        media::OCI_CONFIG,
        &json!({
            "architecture": "unknown", "os": "unknown", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        }),
    )?;
    let mut layer_json = layer.to_json();
    layer_json["annotations"] = json!({"in-toto.io/predicate-type": "https://spdx.dev/Document"});
    layout.put_json(
        media::OCI_MANIFEST,
        &json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": config.to_json(), "layers": [layer_json],
        }),
    )
}

fn index_entry(image: &Image) -> Value {
    let mut entry = image.manifest.to_json();
    let (os, rest) = image.platform.split_once('/').unwrap_or(("linux", ""));
    let mut platform = json!({"architecture": rest.split('/').next().unwrap_or(rest), "os": os});
    if let Some((_, variant)) = rest.split_once('/') {
        platform["variant"] = json!(variant);
    }
    entry["platform"] = platform;
    entry
}

/// `docker` (tag `docker`): base + `/docker.txt` with Docker schema 2 media types
/// (manifest, config, gzip layers).
pub fn docker(layout: &mut OciLayout) -> Result<Image, ImageError> {
    let layers = vec![
        write_base(layout, Compression::Gzip)?,
        LayerBuilder::new()
            .file("docker.txt", 0o644, "docker media types\n")
            .write(layout, Compression::Gzip)?,
    ];
    let run = json!({
        "Env": [PATH],
        "Cmd": ["/bin/cat", "/docker.txt"],
        "WorkingDir": "/",
        "Labels": {"org.berth.test": "docker"},
    });
    let history = ["ADD busybox /bin/busybox # base", "ADD docker.txt /"];
    let spec = Spec::new(host_arch(), Format::Docker, run, &history);
    write_image(layout, Some("docker"), layers, &spec)
}

/// `docker-list` (tag `docker-list`): a Docker manifest list of linux/amd64 and linux/arm64
/// Docker manifests (`/platform` holds the architecture).
pub fn docker_list(layout: &mut OciLayout) -> Result<IndexImage, ImageError> {
    let mut images = Vec::new();
    for arch in INDEX_ARCHES {
        images.push(platform_image(layout, arch, Format::Docker)?);
    }
    let entries: Vec<Value> = images.iter().map(index_entry).collect();
    let index = layout.put_json(
        media::DOCKER_LIST,
        &json!({"schemaVersion": 2, "mediaType": media::DOCKER_LIST, "manifests": entries}),
    )?;
    layout.tag("docker-list", &index)?;
    Ok(IndexImage {
        layout: layout.dir().to_path_buf(),
        tag: "docker-list".into(),
        index,
        images,
        attestation: None,
    })
}

/// `zstd` (tag `zstd`): the base layer zstd-compressed, `/zstd.txt` in a zstd layer and
/// `/plain.txt` in an uncompressed one (`…layer.v1.tar`).
pub fn zstd(layout: &mut OciLayout) -> Result<Image, ImageError> {
    let layers = vec![
        write_base(layout, Compression::Zstd)?,
        LayerBuilder::new()
            .file("zstd.txt", 0o644, "zstd layer\n")
            .write(layout, Compression::Zstd)?,
        LayerBuilder::new()
            .file("plain.txt", 0o644, "uncompressed layer\n")
            .write(layout, Compression::None)?,
    ];
    let run = json!({
        "Env": [PATH],
        "Cmd": ["/bin/cat", "/zstd.txt", "/plain.txt"],
        "Labels": {"org.berth.test": "zstd"},
    });
    let history = [
        "ADD busybox /bin/busybox # base (zstd)",
        "ADD zstd.txt / (zstd)",
        "ADD plain.txt / (uncompressed)",
    ];
    let spec = Spec::new(host_arch(), Format::Oci, run, &history);
    write_image(layout, Some("zstd"), layers, &spec)
}

/// `deep` (tag `deep`): `n` layers (at least 1): the base, then `/deep/NNNN` one per layer.
pub fn deep(layout: &mut OciLayout, n: usize) -> Result<Image, ImageError> {
    let mut layers = vec![write_base(layout, Compression::Gzip)?];
    let mut history = vec!["ADD busybox /bin/busybox # base".to_owned()];
    for i in 1..n {
        let name = format!("deep/{i:04}");
        layers.push(
            LayerBuilder::new()
                .dir("deep", 0o755)
                .file(&name, 0o644, format!("{i}\n"))
                .write(layout, Compression::Gzip)?,
        );
        history.push(format!("ADD {i} /{name}"));
    }
    let run = json!({
        "Env": [PATH],
        "Cmd": ["/bin/sh", "-c", "ls /deep | wc -l"],
        "Labels": {"org.berth.test": "deep"},
    });
    let history: Vec<&str> = history.iter().map(String::as_str).collect();
    let spec = Spec::new(host_arch(), Format::Oci, run, &history);
    write_image(layout, Some("deep"), layers, &spec)
}

/// `big` (tag `big`): the base and one layer holding `/big.bin`, `bytes` of pseudo-random
/// (incompressible) data, gzip-compressed or not. Written streaming: the layer is never in
/// memory, whatever its size.
pub fn big(layout: &mut OciLayout, bytes: u64, compressed: bool) -> Result<Image, ImageError> {
    let compression = if compressed {
        Compression::Gzip
    } else {
        Compression::None
    };
    let layers = vec![
        write_base(layout, Compression::Gzip)?,
        LayerBuilder::new()
            .random_file("big.bin", 0o644, bytes, bytes)
            .write(layout, compression)?,
    ];
    let run = json!({
        "Env": [PATH],
        "Cmd": ["/bin/sh", "-c", "stat -c %s /big.bin"],
        "Labels": {"org.berth.test": "big"},
    });
    let history = ["ADD busybox /bin/busybox # base", "ADD big.bin /"];
    let spec = Spec::new(host_arch(), Format::Oci, run, &history);
    write_image(layout, Some("big"), layers, &spec)
}

/// `five` (tag `five`): the base and 4 small layers (`/five/1` … `/five/4`); `Cmd
/// ["/bin/sh","-c","true"]` — for the run-start benchmark.
pub fn five_layer(layout: &mut OciLayout) -> Result<Image, ImageError> {
    let mut layers = vec![write_base(layout, Compression::Gzip)?];
    for i in 1..=4 {
        layers.push(
            LayerBuilder::new()
                .dir("five", 0o755)
                .file(&format!("five/{i}"), 0o644, format!("layer {i}\n"))
                .write(layout, Compression::Gzip)?,
        );
    }
    let run = json!({
        "Env": [PATH],
        "Cmd": ["/bin/sh", "-c", "true"],
        "Labels": {"org.berth.test": "five"},
    });
    let history = [
        "ADD busybox /bin/busybox # base",
        "ADD 1 /five/1",
        "ADD 2 /five/2",
        "ADD 3 /five/3",
        "ADD 4 /five/4",
    ];
    let spec = Spec::new(host_arch(), Format::Oci, run, &history);
    write_image(layout, Some("five"), layers, &spec)
}

/// What goes into an image's config besides its layers.
struct Spec<'a> {
    arch: &'a str,
    variant: Option<&'a str>,
    format: Format,
    /// The config's `config` (docker's field names).
    run: Value,
    /// `created_by` of each layer, in order.
    history: &'a [&'a str],
}

impl<'a> Spec<'a> {
    fn new(arch: &'a str, format: Format, run: Value, history: &'a [&'a str]) -> Spec<'a> {
        Spec {
            arch,
            variant: None,
            format,
            run,
            history,
        }
    }
}

/// Writes the config and manifest of `layers` and tags the manifest if asked.
fn write_image(
    layout: &mut OciLayout,
    tag: Option<&str>,
    layers: Vec<Layer>,
    spec: &Spec<'_>,
) -> Result<Image, ImageError> {
    let mut history: Vec<Value> = spec
        .history
        .iter()
        .map(|by| json!({"created": CREATED, "created_by": by}))
        .collect();
    // Docker records instructions that add no layer too; consumers must skip them when they
    // pair history with layers.
    history.push(json!({
        "created": CREATED,
        "created_by": "CMD (metadata only)",
        "empty_layer": true,
    }));
    let mut config = json!({
        "created": CREATED,
        "architecture": spec.arch,
        "os": "linux",
    });
    if let Some(v) = spec.variant {
        config["variant"] = json!(v);
    }
    config["config"] = spec.run.clone();
    config["rootfs"] = json!({
        "type": "layers",
        "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
    });
    config["history"] = Value::Array(history);
    let (manifest_type, config_type) = match spec.format {
        Format::Oci => (media::OCI_MANIFEST, media::OCI_CONFIG),
        Format::Docker => (media::DOCKER_MANIFEST, media::DOCKER_CONFIG),
    };
    let config = layout.put_json(config_type, &config)?;
    let manifest = layout.put_json(
        manifest_type,
        &json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config.to_json(),
            "layers": layers.iter().map(|l| l.descriptor(spec.format).to_json()).collect::<Vec<_>>(),
        }),
    )?;
    if let Some(tag) = tag {
        layout.tag(tag, &manifest)?;
    }
    let mut platform = format!("linux/{}", spec.arch);
    if let Some(v) = spec.variant {
        platform = format!("{platform}/{v}");
    }
    Ok(Image {
        layout: layout.dir().to_path_buf(),
        tag: tag.map(str::to_owned),
        format: spec.format,
        platform,
        manifest,
        config,
        layers,
    })
}
