//! `save` and `load` without a registry: images pulled from local OCI layouts (gzip, zstd and
//! uncompressed layers, whiteouts) written as docker-archive and OCI archives, loaded into a
//! fresh store with the same ids, names and layers; a layer whose bytes no longer match its
//! diffID is refused by `save`; `inspect` in docker's shape. Needs root (whiteouts are device
//! nodes in the unpacked layers).
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;

use berth_image::oci::Compression;
use berth_image::progress::Quiet;
use berth_image::pull::PullOptions;
use berth_image::save::{self, SaveError, SaveFormat, SaveItem};
use berth_image::{ImageStore, Reference};
use common::{E, Layout};
use serde_json::json;

fn store(dir: &Path) -> ImageStore {
    fs::create_dir_all(dir).unwrap();
    ImageStore::new(dir.to_path_buf())
}

fn reference(text: &str) -> Reference {
    Reference::parse(text).unwrap()
}

/// A store holding `one` (three layers: gzip, zstd with a whiteout, uncompressed) and `two`
/// (sharing the first layer).
fn filled(tmp: &Path) -> ImageStore {
    let mut layout = Layout::new(&tmp.join("layout"));
    let base = common::tar(&[
        E::Dir("etc/"),
        E::File("etc/a", b"a\n"),
        E::File("etc/b", b"b\n"),
    ]);
    let wh = common::tar(&[E::Dir("etc/"), E::File("etc/.wh.b", b"")]);
    let plain = common::tar(&[E::File("c", b"c\n")]);
    let run = json!({"User": "65534", "Cmd": ["sh"], "ExposedPorts": {"80/tcp": {}}});
    let one = layout.image(
        &[
            (base.clone(), Compression::Gzip),
            (wh, Compression::Zstd),
            (plain, Compression::None),
        ],
        "amd64",
        run.clone(),
    );
    layout.tag("one", &one);
    let two = layout.image(
        &[
            (base, Compression::Gzip),
            (common::tar(&[E::File("d", b"d\n")]), Compression::Gzip),
        ],
        "amd64",
        run,
    );
    layout.tag("two", &two);
    let images = store(&tmp.join("images"));
    let source = berth_image::fetch::OciLayout::new(&layout.dir);
    let options = PullOptions {
        platform: Some(berth_image::Platform::parse("linux/amd64").unwrap()),
        source: "test".into(),
        ..PullOptions::default()
    };
    images
        .pull(
            &source,
            &reference("example.test/app:one"),
            &options,
            &Quiet,
        )
        .unwrap();
    images
        .pull(
            &source,
            &reference("example.test/app:two"),
            &options,
            &Quiet,
        )
        .unwrap();
    images
}

fn items(images: &ImageStore) -> Vec<SaveItem> {
    ["example.test/app:one", "example.test/app:two"]
        .iter()
        .map(|n| {
            let r = reference(n);
            SaveItem {
                image: images.get(&r).unwrap().unwrap(),
                names: vec![r],
            }
        })
        .collect()
}

#[test]
fn both_formats_load_back_with_the_same_ids_names_and_layers() {
    netns_fixtures::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let images = filled(tmp.path());
    let items = items(&images);
    for (format, name) in [
        (SaveFormat::DockerArchive, "docker.tar"),
        (SaveFormat::OciArchive, "oci.tar"),
    ] {
        let archive = tmp.path().join(name);
        save::save_to_file(&images, &items, format, &archive).unwrap();
        let fresh = store(&tmp.path().join(format!("fresh-{name}")));
        let loaded = fresh.load(&archive).unwrap();
        assert_eq!(loaded.len(), 2, "{format:?}");
        for (item, loaded) in items.iter().zip(&loaded) {
            assert_eq!(loaded.id, item.image.id, "{format:?}");
            assert_eq!(loaded.references, item.names, "{format:?}");
            let back = fresh.get(&item.names[0]).unwrap().unwrap();
            let chains = |i: &berth_image::Image| -> Vec<_> {
                i.record.layers.iter().map(|l| l.chain_id.clone()).collect()
            };
            assert_eq!(chains(&back), chains(&item.image));
            // Nothing of a registry is claimed for a loaded image.
            assert!(back.record.repo_digests.is_empty(), "{:?}", back.record);
        }
        // The shared layer is unpacked once: 3 + 1 layers.
        assert_eq!(fresh.layers().list().unwrap().len(), 4, "{format:?}");
        // The OCI archive keeps the blobs as stored: the manifests' digests stay.
        if format == SaveFormat::OciArchive {
            let back = fresh.get(&items[0].names[0]).unwrap().unwrap();
            assert_eq!(
                back.record.manifest.digest,
                items[0].image.record.manifest.digest
            );
        }
    }
}

#[test]
fn a_layer_that_no_longer_matches_its_diff_id_is_not_saved() {
    netns_fixtures::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let images = filled(tmp.path());
    let items = items(&images);
    // The uncompressed layer's blob, changed behind the store's back.
    let layer = items[0].image.record.layers[2].clone();
    let path = images.blobs().path(&layer.blob.digest);
    let mut bytes = fs::read(&path).unwrap();
    bytes[600] ^= 1;
    fs::write(&path, bytes).unwrap();
    let archive = tmp.path().join("docker.tar");
    let err = save::save_to_file(&images, &items, SaveFormat::DockerArchive, &archive).unwrap_err();
    assert!(
        matches!(&err, SaveError::DiffId { digest, .. } if *digest == layer.blob.digest),
        "{err}"
    );
    assert!(
        err.to_string().contains(&layer.diff_id.to_string()),
        "{err}"
    );
    // Nothing is left under the name, nor beside it.
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("docker.tar"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn inspect_has_dockers_shape() {
    netns_fixtures::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let images = filled(tmp.path());
    let image = images
        .get(&reference("example.test/app:one"))
        .unwrap()
        .unwrap();
    let doc = serde_json::to_value(berth_image::inspect::inspect(&image)).unwrap();
    assert_eq!(doc["Id"], image.id.to_string());
    assert_eq!(doc["RepoTags"], json!(["example.test/app:one"]));
    assert_eq!(
        doc["RepoDigests"],
        json!([format!("example.test/app@{}", image.record.manifest.digest)])
    );
    assert_eq!(doc["Architecture"], "amd64");
    assert_eq!(doc["Os"], "linux");
    assert_eq!(doc["Config"]["User"], "65534");
    assert!(doc["Config"]["ExposedPorts"]["80/tcp"].is_object());
    assert_eq!(doc["RootFS"]["Type"], "layers");
    assert_eq!(doc["RootFS"]["Layers"].as_array().unwrap().len(), 3);
    assert!(doc["Size"].as_u64().unwrap() > 0);
}
