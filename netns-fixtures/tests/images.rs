//! The catalog of test images: each builds, builds the same twice, is a layout skopeo reads,
//! and goes to a real registry and back with the digests the catalog reports.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use netns_fixtures::images::{
    self, Compression, Image, LayerBuilder, OciLayout, Remote, inspect, inspect_layout, media, push,
};
use netns_fixtures::{TestNetns, TestRegistry, require_root};
use serde_json::Value;

/// The tar entries (path, type, size, link target) of a layer blob.
fn entries(image: &Image, layer: usize) -> Vec<(String, char, u64, String)> {
    let l = &image.layers[layer];
    let file = File::open(image.layout.join("blobs/sha256").join(&l.digest[7..])).unwrap();
    let reader: Box<dyn Read> = match l.compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file).unwrap()),
    };
    let mut tar = tar::Archive::new(reader);
    tar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            let link = e
                .link_name()
                .unwrap()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (
                e.path().unwrap().display().to_string(),
                h.entry_type().as_byte() as char,
                h.size().unwrap(),
                link,
            )
        })
        .collect()
}

fn names(image: &Image, layer: usize) -> Vec<String> {
    entries(image, layer).into_iter().map(|e| e.0).collect()
}

fn config(image: &Image) -> Value {
    let bytes = std::fs::read(image.layout.join("blobs/sha256").join(image.config.hex())).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    eprintln!("{what}: {:?}", t.elapsed());
    out
}

#[test]
fn app_has_its_layers_config_and_runs_through_skopeo() {
    let mut layout = OciLayout::temp().unwrap();
    let app = timed("build app", || images::app(&mut layout).unwrap());
    assert_eq!(app.layers.len(), 3);

    let base = entries(&app, 0);
    let busybox = base.iter().find(|e| e.0 == "bin/busybox").unwrap();
    assert_eq!(busybox.2, std::fs::metadata(images::BUSYBOX).unwrap().len());
    let sh = base.iter().find(|e| e.0 == "bin/sh").unwrap();
    assert_eq!((sh.1, sh.3.as_str()), ('2', "busybox"));
    assert!(base.iter().any(|e| e.0 == "tmp/"));
    let all = names(&app, 0);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "entries are written in path order");

    assert!(names(&app, 1).contains(&"etc/gone.txt".to_owned()));
    let top = names(&app, 2);
    for want in [
        "etc/.wh.gone.txt",
        "data/old/.wh..wh..opq",
        "data/old/new",
        "app/run.sh",
    ] {
        assert!(top.contains(&want.to_owned()), "{want} in {top:?}");
    }

    let c = config(&app);
    assert_eq!(c["config"]["User"], "65534");
    assert_eq!(c["config"]["WorkingDir"], "/app");
    assert_eq!(c["config"]["StopSignal"], "SIGUSR1");
    assert_eq!(c["config"]["Labels"]["org.berth.test"], "app");
    assert!(c["config"]["ExposedPorts"]["8080/tcp"].is_object());
    assert_eq!(c["architecture"], images::host_arch());
    let diff_ids: Vec<String> = c["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(diff_ids, app.diff_ids());

    // skopeo reads the layout and agrees on every digest.
    let summary = inspect_layout(layout.dir(), "app", false).unwrap();
    assert_eq!(summary["Digest"], app.manifest.digest.as_str());
    let layers: Vec<&str> = summary["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(layers, app.layer_digests());
    assert_eq!(summary["Env"][1], "APP_MODE=test");
}

#[test]
fn builds_are_deterministic() {
    let (mut a, mut b) = (OciLayout::temp().unwrap(), OciLayout::temp().unwrap());
    // The catalog caches the base layer within a process: build it twice for real.
    for how in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let first = images::base_layer().write(&a, how).unwrap();
        let second = images::base_layer().write(&b, how).unwrap();
        assert_eq!(first, second);
    }
    let first = images::app(&mut a).unwrap();
    let second = images::app(&mut b).unwrap();
    assert_eq!(first.manifest, second.manifest);
    assert_eq!(first.layers, second.layers);
    let first = images::zstd(&mut a).unwrap();
    let second = images::zstd(&mut b).unwrap();
    assert_eq!(first.manifest, second.manifest);
    let first = images::multi(&mut a).unwrap();
    let second = images::multi(&mut b).unwrap();
    assert_eq!(first.index, second.index);
    let index_a = std::fs::read(a.dir().join("index.json")).unwrap();
    let index_b = std::fs::read(b.dir().join("index.json")).unwrap();
    assert_eq!(index_a, index_b);
}

#[test]
fn app2_shares_apps_first_layers_and_names_its_user() {
    let mut layout = OciLayout::temp().unwrap();
    let app = images::app(&mut layout).unwrap();
    let app2 = timed("build app2", || images::app2(&mut layout).unwrap());
    assert_eq!(app.layers[..2], app2.layers[..2]);
    assert_ne!(app.layers[2], app2.layers[2]);
    assert_eq!(config(&app2)["config"]["User"], "app");
    // Both tags live in one layout.
    inspect_layout(layout.dir(), "app", true).unwrap();
    inspect_layout(layout.dir(), "app2", true).unwrap();
}

#[test]
fn multi_lists_two_platforms_and_an_attestation() {
    let mut layout = OciLayout::temp().unwrap();
    let multi = timed("build multi", || images::multi(&mut layout).unwrap());
    let raw = inspect_layout(layout.dir(), "multi", true).unwrap();
    let listed = raw["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(raw["mediaType"], media::OCI_INDEX);
    let platforms: Vec<String> = listed
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["platform"]["os"].as_str().unwrap(),
                e["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64", "unknown/unknown"]);
    assert_eq!(
        listed[2]["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        listed[2]["annotations"]["vnd.docker.reference.digest"],
        multi.images[0].manifest.digest.as_str()
    );
    for (image, arch) in multi.images.iter().zip(["amd64", "arm64"]) {
        let platform = entries(image, 1);
        assert_eq!(platform[0].0, "platform");
        assert_eq!(config(image)["architecture"], arch);
    }
    assert_eq!(
        multi.image("linux/arm64/v8").unwrap().platform,
        "linux/arm64/v8"
    );
}

#[test]
fn docker_media_types_and_the_manifest_list() {
    let mut layout = OciLayout::temp().unwrap();
    let docker = timed("build docker", || images::docker(&mut layout).unwrap());
    let raw = inspect_layout(layout.dir(), "docker", true).unwrap();
    assert_eq!(raw["mediaType"], media::DOCKER_MANIFEST);
    assert_eq!(raw["config"]["mediaType"], media::DOCKER_CONFIG);
    assert_eq!(raw["layers"][0]["mediaType"], media::DOCKER_LAYER_GZIP);
    assert_eq!(docker.manifest.media_type, media::DOCKER_MANIFEST);

    let list = images::docker_list(&mut layout).unwrap();
    let raw = inspect_layout(layout.dir(), "docker-list", true).unwrap();
    assert_eq!(raw["mediaType"], media::DOCKER_LIST);
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(
        raw["manifests"][0]["digest"],
        list.images[0].manifest.digest.as_str()
    );
}

#[test]
fn zstd_deep_five_and_big() {
    let mut layout = OciLayout::temp().unwrap();
    let zstd = timed("build zstd", || images::zstd(&mut layout).unwrap());
    let kinds: Vec<&str> = zstd
        .layers
        .iter()
        .map(|l| l.media_type(zstd.format))
        .collect();
    assert_eq!(
        kinds,
        [
            media::OCI_LAYER_ZSTD,
            media::OCI_LAYER_ZSTD,
            media::OCI_LAYER
        ]
    );
    assert_eq!(names(&zstd, 1), ["zstd.txt"]);
    inspect_layout(layout.dir(), "zstd", false).unwrap();

    let deep = timed("build deep(210)", || {
        images::deep(&mut layout, 210).unwrap()
    });
    assert_eq!(deep.layers.len(), 210);
    let distinct: BTreeSet<&str> = deep.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(distinct.len(), 210);
    let summary = inspect_layout(layout.dir(), "deep", false).unwrap();
    assert_eq!(summary["Layers"].as_array().unwrap().len(), 210);

    let five = timed("build five", || images::five_layer(&mut layout).unwrap());
    assert_eq!(five.layers.len(), 5);
    assert_eq!(config(&five)["config"]["Cmd"][2], "true");

    for compressed in [false, true] {
        let mb = 8 << 20;
        let big = timed(&format!("build big(8 MiB, gzip {compressed})"), || {
            images::big(&mut layout, mb, compressed).unwrap()
        });
        let layer = &big.layers[1];
        // Incompressible: gzip cannot shrink it; the tar is the file plus headers.
        assert!(layer.size > mb, "{} ≤ {mb}", layer.size);
        let big_file = entries(&big, 1);
        assert_eq!((big_file[0].0.as_str(), big_file[0].2), ("big.bin", mb));
    }
}

#[test]
fn layer_builder_hardlinks_follow_their_targets_and_owners_apply() {
    let layout = OciLayout::temp().unwrap();
    let layer = LayerBuilder::new()
        .hardlink("a-link", "z/target")
        .dir("z", 0o755)
        .file("z/target", 0o600, "x")
        .owner("z/target", 1000, 1001)
        .write(&layout, Compression::None)
        .unwrap();
    let image = Image {
        layout: layout.dir().to_path_buf(),
        tag: None,
        format: images::Format::Oci,
        platform: "linux/amd64".into(),
        manifest: images::Descriptor {
            media_type: String::new(),
            digest: String::new(),
            size: 0,
        },
        config: images::Descriptor {
            media_type: String::new(),
            digest: images::sha256_of(b""),
            size: 0,
        },
        layers: vec![layer.clone()],
    };
    let e = entries(&image, 0);
    let order: Vec<(&str, char)> = e.iter().map(|e| (e.0.as_str(), e.1)).collect();
    assert_eq!(order, [("z/", '5'), ("z/target", '0'), ("a-link", '1')]);
    // Uncompressed: the blob is the tar itself.
    assert_eq!(layer.digest, layer.diff_id);

    let missing = LayerBuilder::new()
        .owner("nope", 1, 1)
        .write(&layout, Compression::Gzip)
        .unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");
}

#[test]
fn archives_hold_one_tag() {
    let mut layout = OciLayout::temp().unwrap();
    let app = images::app(&mut layout).unwrap();
    images::app2(&mut layout).unwrap();
    let out = tempfile::tempdir().unwrap();
    let oci = out.path().join("app-oci.tar");
    images::write_oci_archive(layout.dir(), "app", &oci).unwrap();
    let listed = tar_names(&oci);
    // The manifest, the config, 3 layers; nothing of app2's own layer.
    let blobs: Vec<&String> = listed
        .iter()
        .filter(|n| n.starts_with("blobs/sha256/") && n.len() > 14)
        .collect();
    assert_eq!(blobs.len(), 5, "{listed:?}");
    assert!(listed.contains(&"index.json".to_owned()));
    assert!(listed.contains(&"oci-layout".to_owned()));

    let docker = out.path().join("app-docker.tar");
    images::write_docker_archive(&app, "berth.test/app:1", &docker).unwrap();
    let listed = tar_names(&docker);
    assert!(listed.contains(&"manifest.json".to_owned()));
    assert!(listed.contains(&format!("{}.json", app.config.hex())));
    assert!(listed.contains(&format!("{}/layer.tar", &app.layers[0].diff_id[7..])));

    // skopeo reads both.
    let summary = skopeo_json(&["inspect", &format!("oci-archive:{}", oci.display())]);
    assert_eq!(summary["Digest"], app.manifest.digest.as_str());
    let summary = skopeo_json(&["inspect", &format!("docker-archive:{}", docker.display())]);
    let layers: Vec<&str> = summary["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        app.diff_ids(),
        "docker-archive layers are the diffIDs"
    );
}

fn tar_names(path: &Path) -> Vec<String> {
    let mut tar = tar::Archive::new(File::open(path).unwrap());
    tar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

fn skopeo_json(args: &[&str]) -> Value {
    let out = std::process::Command::new(images::SKOPEO_BIN)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn push_to_a_registry_keeps_every_digest() {
    require_root();
    let ns = TestNetns::new().unwrap();
    let registry = TestRegistry::plain(&ns).unwrap();
    let remote = Remote::of(&ns, &registry);
    let mut layout = OciLayout::temp().unwrap();
    let app = images::app(&mut layout).unwrap();
    let app2 = images::app2(&mut layout).unwrap();
    let multi = images::multi(&mut layout).unwrap();
    let docker = images::docker(&mut layout).unwrap();
    let list = images::docker_list(&mut layout).unwrap();

    let pushed = timed("push app", || {
        push(layout.dir(), "app", &remote, "ns/app:1").unwrap()
    });
    assert_eq!(pushed, app.manifest.digest);
    let summary = inspect(&remote, "ns/app:1", false).unwrap();
    assert_eq!(summary["Digest"], app.manifest.digest.as_str());
    let raw = inspect(&remote, "ns/app:1", true).unwrap();
    assert_eq!(raw["config"]["digest"], app.config.digest.as_str());

    // app2 goes to another repository: its shared layers are mounted or pushed again, and
    // keep their digests.
    push(layout.dir(), "app2", &remote, "ns/app2:1").unwrap();
    let raw2 = inspect(&remote, "ns/app2:1", true).unwrap();
    assert_eq!(raw2["config"]["digest"], app2.config.digest.as_str());
    assert_eq!(raw2["layers"][0]["digest"], raw["layers"][0]["digest"]);
    assert_eq!(raw2["layers"][1]["digest"], raw["layers"][1]["digest"]);

    let pushed = timed("push multi", || {
        push(layout.dir(), "multi", &remote, "ns/multi:1").unwrap()
    });
    assert_eq!(pushed, multi.index.digest);
    let raw = inspect(&remote, "ns/multi:1", true).unwrap();
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 3);
    // Every platform image is there by digest.
    for image in &multi.images {
        let by_digest = format!("ns/multi@{}", image.manifest.digest);
        let raw = inspect(&remote, &by_digest, true).unwrap();
        assert_eq!(raw["config"]["digest"], image.config.digest.as_str());
    }

    let pushed = push(layout.dir(), "docker", &remote, "ns/docker:1").unwrap();
    assert_eq!(pushed, docker.manifest.digest);
    assert_eq!(
        inspect(&remote, "ns/docker:1", true).unwrap()["mediaType"],
        media::DOCKER_MANIFEST
    );
    let zstd = images::zstd(&mut layout).unwrap();
    let pushed = push(layout.dir(), "zstd", &remote, "ns/zstd:1").unwrap();
    assert_eq!(pushed, zstd.manifest.digest);
    let raw = inspect(&remote, "ns/zstd:1", true).unwrap();
    assert_eq!(raw["layers"][0]["mediaType"], media::OCI_LAYER_ZSTD);
    assert_eq!(raw["layers"][2]["mediaType"], media::OCI_LAYER);

    let deep = images::deep(&mut layout, 12).unwrap();
    let pushed = timed("push deep(12)", || {
        push(layout.dir(), "deep", &remote, "ns/deep:1").unwrap()
    });
    assert_eq!(pushed, deep.manifest.digest);

    let pushed = push(layout.dir(), "docker-list", &remote, "ns/docker-list:1").unwrap();
    assert_eq!(pushed, list.index.digest);
    assert_eq!(
        inspect(&remote, "ns/docker-list:1", true).unwrap()["mediaType"],
        media::DOCKER_LIST
    );
}

/// A seeded registry serves the image as a pushed one would: skopeo copies it back whole.
#[test]
fn seed_writes_straight_into_the_registry_storage() {
    require_root();
    let ns = TestNetns::new().unwrap();
    let registry = TestRegistry::plain(&ns).unwrap();
    let remote = Remote::of(&ns, &registry);
    let mut layout = OciLayout::temp().unwrap();
    let deep = images::deep(&mut layout, 210).unwrap();
    let multi = images::multi(&mut layout).unwrap();
    let seeded = timed("seed deep(210)", || {
        images::seed(layout.dir(), "deep", &registry, "ns/deep:1").unwrap()
    });
    assert_eq!(seeded, deep.manifest.digest);
    images::seed(layout.dir(), "multi", &registry, "ns/multi:1").unwrap();

    let back = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:deep", back.path().display());
    let out = timed("skopeo copy deep(210) back", || {
        ns.output(std::process::Command::new(images::SKOPEO_BIN).args([
            "--insecure-policy",
            "copy",
            "--src-tls-verify=false",
            &remote.docker_ref("ns/deep:1"),
            &dest,
        ]))
        .unwrap()
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied = inspect_layout(back.path(), "deep", true).unwrap();
    assert_eq!(copied["layers"].as_array().unwrap().len(), 210);
    assert_eq!(copied["config"]["digest"], deep.config.digest.as_str());

    let raw = inspect(&remote, "ns/multi:1", true).unwrap();
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 3);
    let arm = multi.image("linux/arm64/v8").unwrap();
    let summary = inspect(&remote, &format!("ns/multi@{}", arm.manifest.digest), false).unwrap();
    assert_eq!(summary["Architecture"], "arm64");
}

#[test]
fn push_with_a_token_server() {
    require_root();
    let ns = TestNetns::new().unwrap();
    let registry = TestRegistry::builder(&ns)
        .token_auth()
        .user("bob", "pw")
        .start()
        .unwrap();
    let mut layout = OciLayout::temp().unwrap();
    let app = images::app(&mut layout).unwrap();
    let bob = Remote::of(&ns, &registry).creds("bob", "pw");
    let pushed = push(layout.dir(), "app", &bob, "bob/app:1").unwrap();
    assert_eq!(pushed, app.manifest.digest);
    let wrong = Remote::of(&ns, &registry).creds("bob", "nope");
    assert!(inspect(&wrong, "bob/app:1", true).is_err());
}

#[test]
fn push_with_tls_and_credentials() {
    require_root();
    let ns = TestNetns::new().unwrap();
    let registry = TestRegistry::builder(&ns)
        .tls()
        .htpasswd()
        .user("alice", "secret")
        .start()
        .unwrap();
    let mut layout = OciLayout::temp().unwrap();
    let app = images::app(&mut layout).unwrap();
    let anonymous = Remote::of(&ns, &registry);
    let err = push(layout.dir(), "app", &anonymous, "ns/app:1").unwrap_err();
    assert!(err.to_string().contains("failed"), "{err}");
    let alice = Remote::of(&ns, &registry).creds("alice", "secret");
    let pushed = push(layout.dir(), "app", &alice, "ns/app:1").unwrap();
    assert_eq!(pushed, app.manifest.digest);
    assert_eq!(
        inspect(&alice, "ns/app:1", false).unwrap()["Digest"],
        app.manifest.digest.as_str()
    );
}

const BIG_TEST: &str = "big_layers_are_written_streaming";
const BIG_CHILD: &str = "BERTH_IMAGES_BIG_CHILD";

/// `big` never holds its layer in memory: a child process (this test re-executed, so the peak
/// RSS is its own) writes a layer larger than the limit and reports `VmHWM`. The suite writes
/// 48 MiB uncompressed; the figure (500 MB, gzip) comes from
/// `BERTH_IMAGES_BIG_MB=500 BERTH_IMAGES_BIG_GZIP=1 cargo test --release -p netns-fixtures
/// --test images big_layers -- --nocapture`.
#[test]
fn big_layers_are_written_streaming() {
    let mb: u64 = std::env::var("BERTH_IMAGES_BIG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let gzip = std::env::var("BERTH_IMAGES_BIG_GZIP").is_ok_and(|v| v == "1");
    if std::env::var_os(BIG_CHILD).is_some() {
        let mut layout = OciLayout::temp().unwrap();
        let t = Instant::now();
        let big = images::big(&mut layout, mb << 20, gzip).unwrap();
        let elapsed = t.elapsed();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .to_owned();
        println!(
            "BIG {mb} MiB gzip={gzip}: {elapsed:?}, blob {} bytes, VmHWM {hwm} kB",
            big.layers[1].size
        );
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", BIG_TEST, "--nocapture", "--test-threads", "1"])
        .env(BIG_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The harness prints "test … ... " before the child's line.
    let line = stdout
        .lines()
        .find_map(|l| l.find("BIG ").map(|at| &l[at..]))
        .unwrap();
    eprintln!("{line}");
    let hwm_kb: u64 = line
        .rsplit("VmHWM ")
        .next()
        .unwrap()
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    let limit_kb = 32 * 1024;
    assert!(
        hwm_kb < limit_kb && hwm_kb < mb * 1024,
        "peak RSS {hwm_kb} kB writing a {mb} MiB layer (limit {limit_kb} kB)"
    );
}
