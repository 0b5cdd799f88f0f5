//! The pull pipeline against local OCI layouts: layers shared between images, platforms,
//! verification failures that leave nothing, resumes (after a dropped connection and after a
//! killed process), parallel downloads, garbage collection, and the overlay of a pulled
//! image. Needs root (whiteouts are device nodes, opaque directories a trusted xattr, and the
//! overlay a mount in a throwaway mount namespace).
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use berth_image::oci::Compression;
use berth_image::overlay::{Lower, Overlay};
use berth_image::progress::{Event, LayerStatus, Recorder};
use berth_image::pull::PullOptions;
use berth_image::{Digest, ImageError, ImageStore, Platform, PullResult, Reference};
use common::{Built, E, Layout, Spy, leak, tree};
use serde_json::json;

fn reference(text: &str) -> Reference {
    Reference::parse(text).unwrap()
}

fn options() -> PullOptions {
    PullOptions {
        retry_delay: Duration::from_millis(10),
        source: "test".into(),
        ..PullOptions::default()
    }
}

/// A store in a fresh temporary directory.
fn store(tmp: &Path) -> ImageStore {
    let dir = tmp.join("images");
    fs::create_dir_all(&dir).unwrap();
    ImageStore::new(dir)
}

/// A fresh temporary directory and an empty OCI layout in it.
fn layout() -> (tempfile::TempDir, Layout) {
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(&tmp.path().join("layout"));
    (tmp, layout)
}

/// Pulls `text` from `spy` with the test options and no one watching the progress.
fn pull(store: &ImageStore, spy: &&'static Spy, text: &str) -> Result<PullResult, ImageError> {
    store.pull(spy, &reference(text), &options(), &Recorder::default())
}

/// The offsets `spy` was asked for `digest` from, in order.
fn offsets(spy: &Spy, digest: &Digest) -> Vec<u64> {
    spy.requests()
        .iter()
        .filter(|r| r.digest == *digest)
        .map(|r| r.offset)
        .collect()
}

/// Images `a` and `b` (tagged so) of the base layer and one layer of their own each.
fn two_images_sharing_a_base(layout: &mut Layout) -> (Built, Built) {
    let base = (base_layer(), Compression::Gzip);
    let a = layout.image(
        &[
            base.clone(),
            (common::tar(&[E::File("a", b"a")]), Compression::Gzip),
        ],
        "amd64",
        json!({}),
    );
    let b = layout.image(
        &[
            base,
            (common::tar(&[E::File("b", b"b")]), Compression::Gzip),
        ],
        "amd64",
        json!({}),
    );
    layout.tag("a", &a);
    layout.tag("b", &b);
    (a, b)
}

fn base_layer() -> Vec<u8> {
    common::tar(&[
        E::Dir("etc/"),
        E::File("etc/keep", b"kept\n"),
        E::File("etc/gone", b"gone\n"),
        E::Dir("cache/"),
        E::File("cache/old", b"old\n"),
        E::Link("bin", "usr/bin"),
    ])
}

fn whiteout_layer() -> Vec<u8> {
    common::tar(&[
        E::Dir("etc/"),
        E::File("etc/.wh.gone", b""),
        E::Dir("cache/"),
        E::File("cache/.wh..wh..opq", b""),
        E::File("cache/new", b"new\n"),
    ])
}

/// Runs `f` on a thread of its own in a new mount namespace whose mounts are private.
fn in_mount_namespace<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn a_pulled_image_mounts_with_its_whiteouts_and_opaque_directories() {
    let (tmp, mut layout) = layout();
    let built = layout.image(
        &[
            (base_layer(), Compression::Gzip),
            (whiteout_layer(), Compression::Zstd),
            (common::tar(&[E::File("top", b"3")]), Compression::None),
        ],
        "amd64",
        json!({"Cmd": ["sh"], "User": "65534", "WorkingDir": "/srv"}),
    );
    layout.tag("v1", &built);
    let store = store(tmp.path());
    let spy = leak(Spy::new(&layout.dir));
    let progress = Recorder::default();
    let r = reference("127.0.0.1:5000/ns/app:v1");
    let pulled = store.pull(&spy, &r, &options(), &progress).unwrap();
    assert_eq!(pulled.id, built.config);
    assert_eq!(pulled.digest, built.manifest);
    assert_eq!(pulled.fetched_layers, 3);
    assert!(!pulled.up_to_date);

    let image = store.get(&r).unwrap().unwrap();
    assert_eq!(image.run_config().user.as_deref(), Some("65534"));
    assert_eq!(image.workdir(), Some("/srv"));
    assert_eq!(image.references, std::slice::from_ref(&r));
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].repository.as_str(), list[0].tag.as_str()),
        ("127.0.0.1:5000/ns/app", "v1")
    );
    assert_eq!(list[0].created.as_deref(), Some("2026-01-02T03:04:05Z"));
    assert_eq!(list[0].size, 5 + 5 + 4 + 4 + 1);

    // Each layer said where it was, and ended complete.
    let events = progress.events();
    for layer in &built.layers {
        let statuses: Vec<&LayerStatus> = events
            .iter()
            .filter_map(|e| match e {
                Event::Layer { digest, status } if digest == layer => Some(status),
                _ => None,
            })
            .collect();
        assert_eq!(
            statuses.first(),
            Some(&&LayerStatus::Waiting),
            "{statuses:?}"
        );
        assert!(
            statuses
                .iter()
                .any(|s| matches!(s, LayerStatus::Downloading { .. }))
        );
        assert_eq!(
            statuses.last(),
            Some(&&LayerStatus::Complete),
            "{statuses:?}"
        );
    }
    assert!(matches!(
        events.last(),
        Some(Event::Done {
            up_to_date: false,
            ..
        })
    ));

    // The container's root: the overlay of the three layers.
    let lowers = store.lower_dirs(&image.id).unwrap();
    assert_eq!(lowers.len(), 3);
    let (upper, work, merged) = (
        tmp.path().join("upper"),
        tmp.path().join("work"),
        tmp.path().join("merged"),
    );
    for d in [&upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    let overlay = Overlay {
        lowers: lowers.into_iter().map(Lower::Path).collect(),
        upper: Some((upper, work)),
    };
    let seen = in_mount_namespace(|| {
        overlay.mount(&merged).unwrap();
        let mut cache: Vec<String> = fs::read_dir(merged.join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        cache.sort();
        (
            fs::read_to_string(merged.join("etc/keep")).unwrap(),
            merged.join("etc/gone").exists(),
            cache,
            fs::read_to_string(merged.join("top")).unwrap(),
        )
    });
    assert_eq!(
        seen,
        ("kept\n".into(), false, vec!["new".to_owned()], "3".into())
    );

    // Pulled again: nothing but the manifest (the config is in the store).
    let again = store
        .pull(&spy, &r, &options(), &Recorder::default())
        .unwrap();
    assert!(again.up_to_date);
    assert_eq!(again.fetched_layers, 0);
    assert_eq!(spy.requests().len(), 4, "{:?}", spy.requests());
}

#[test]
fn a_second_image_downloads_only_its_own_layers() {
    let (tmp, mut layout) = layout();
    let (_, b) = two_images_sharing_a_base(&mut layout);
    let store = store(tmp.path());
    let spy = leak(Spy::new(&layout.dir));
    pull(&store, &spy, "localhost/app:a").unwrap();
    spy.requests.lock().unwrap().clear();
    let progress = Recorder::default();
    let pulled = store
        .pull(&spy, &reference("localhost/app:b"), &options(), &progress)
        .unwrap();
    assert_eq!(pulled.fetched_layers, 1);
    assert_eq!(spy.blobs_fetched(), [b.config.clone(), b.layers[1].clone()]);
    assert!(progress.events().contains(&Event::Layer {
        digest: b.layers[0].clone(),
        status: LayerStatus::AlreadyExists
    }));
    // The shared layer is stored once: 3 layers for 2 images of 2.
    assert_eq!(fs::read_dir(store.dir().join("layers")).unwrap().count(), 3);
    let df = store.df(&|_| false).unwrap();
    assert_eq!((df.images, df.layers, df.unreferenced_layers), (2, 3, 0));
}

#[test]
fn the_platform_is_the_hosts_or_the_one_asked_for() {
    let (tmp, mut layout) = layout();
    let amd = layout.image(
        &[(common::tar(&[E::File("arch", b"amd64")]), Compression::Gzip)],
        "amd64",
        json!({}),
    );
    let arm = layout.image(
        &[(common::tar(&[E::File("arch", b"arm64")]), Compression::Gzip)],
        "arm64",
        json!({}),
    );
    let index = layout.tag_index("multi", &[("linux/amd64", &amd), ("linux/arm64/v8", &arm)]);
    let store = store(tmp.path());
    let spy = leak(Spy::new(&layout.dir));
    let r = reference("localhost/multi:multi");
    let host = store
        .pull(&spy, &r, &options(), &Recorder::default())
        .unwrap();
    assert_eq!(
        Platform::host().architecture,
        "amd64",
        "this test assumes an amd64 host"
    );
    assert_eq!(
        (host.id.clone(), host.digest.clone()),
        (amd.config.clone(), index.clone())
    );

    let arm_options = PullOptions {
        platform: Some(Platform::parse("linux/arm64").unwrap()),
        ..options()
    };
    let r_arm = reference("localhost/multi-arm:multi");
    let pulled = store
        .pull(&spy, &r_arm, &arm_options, &Recorder::default())
        .unwrap();
    assert_eq!(pulled.id, arm.config);
    let image = store.get(&r_arm).unwrap().unwrap();
    assert_eq!(image.record.platform.architecture, "arm64");
    assert_eq!(image.record.index.as_ref(), Some(&index));

    let s390 = PullOptions {
        platform: Some(Platform::parse("linux/s390x").unwrap()),
        ..options()
    };
    let err = store
        .pull(
            &spy,
            &reference("localhost/x:multi"),
            &s390,
            &Recorder::default(),
        )
        .unwrap_err();
    let text = berth_image::error_chain(&err);
    assert!(
        text.contains("no image for linux/s390x in the index; it has: linux/amd64, linux/arm64/v8"),
        "{text}"
    );
}

/// What a store holds besides its lock files and empty directories.
fn stored(store: &ImageStore) -> Vec<String> {
    tree(store.dir())
        .into_iter()
        .filter(|p| !p.starts_with('.'))
        .collect()
}

#[test]
fn a_corrupted_blob_is_refused_by_digest_and_nothing_stays() {
    let (tmp, mut layout) = layout();
    let built = layout.image(
        &[
            (base_layer(), Compression::Gzip),
            (
                common::tar(&[E::File("x", &[7u8; 300_000])]),
                Compression::None,
            ),
        ],
        "amd64",
        json!({}),
    );
    layout.tag("v1", &built);
    // Damage the second layer in the source's storage (same size, other bytes).
    let path = layout.blob_path(&built.layers[1]);
    let mut bytes = fs::read(&path).unwrap();
    bytes[200_000] ^= 0xff;
    fs::write(&path, &bytes).unwrap();

    let store = store(tmp.path());
    let spy = leak(Spy::new(&layout.dir));
    let err = pull(&store, &spy, "localhost/bad:v1").unwrap_err();
    let text = berth_image::error_chain(&err);
    assert!(
        text.contains(&format!("blob {} failed verification", built.layers[1])),
        "{text}"
    );
    // The good layer may be stored (it is verified); the bad one, its partial download and
    // its staging directory are not, and no image record or reference exists.
    let left = stored(&store);
    assert!(
        left.iter()
            .all(|p| !p.contains(built.layers[1].hex()) && !p.starts_with("records/")),
        "{left:?}"
    );
    assert!(
        !left
            .iter()
            .any(|p| p.contains(".partial") || p.contains(".tmp")),
        "{left:?}"
    );
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn a_wrong_diff_id_or_manifest_digest_is_refused() {
    let (tmp, mut layout) = layout();
    let built = layout.image(&[(base_layer(), Compression::Gzip)], "amd64", json!({}));
    layout.tag("v1", &built);
    // A config whose diffID is not the layer's.
    let config = json!({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256_of(b"other").to_string()]}});
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_d = layout.blob(&config_bytes);
    let manifest = json!({"schemaVersion": 2, "mediaType": berth_image::oci::media::OCI_MANIFEST,
        "config": {"mediaType": berth_image::oci::media::OCI_CONFIG, "digest": config_d.to_string(), "size": config_bytes.len()},
        "layers": [{"mediaType": berth_image::oci::media::OCI_LAYER_GZIP, "digest": built.layers[0].to_string(),
                    "size": fs::metadata(layout.blob_path(&built.layers[0])).unwrap().len()}]});
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let bad = layout.blob(&manifest_bytes);
    let store = store(tmp.path());
    let spy = leak(Spy::new(&layout.dir));
    let by_digest = reference(&format!("localhost/bad@{bad}"));
    let err = store
        .pull(&spy, &by_digest, &options(), &Recorder::default())
        .unwrap_err();
    let text = berth_image::error_chain(&err);
    assert!(
        text.contains(&format!("layer {} failed verification", built.layers[0]))
            && text.contains("diffID"),
        "{text}"
    );
    assert!(
        stored(&store)
            .iter()
            .all(|p| p.starts_with("blobs/sha256/")),
        "{:?}",
        stored(&store)
    );
    assert!(store.list().unwrap().is_empty());

    // A digest reference whose document is something else.
    let wrong = reference(&format!("localhost/bad@{}", Digest::sha256_of(b"x")));
    let fake = leak(Spy::new(&layout.dir));
    fs::copy(
        layout.blob_path(&built.manifest),
        layout.blob_path(&Digest::sha256_of(b"x")),
    )
    .unwrap();
    let err = store
        .pull(&fake, &wrong, &options(), &Recorder::default())
        .unwrap_err();
    assert!(
        berth_image::error_chain(&err).contains(&format!(
            "blob {} failed verification",
            Digest::sha256_of(b"x")
        )),
        "{err}"
    );
}

/// An image of one big-ish layer (so a download can be cut in the middle).
fn big_image(layout: &mut Layout) -> Built {
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let built = layout.image(
        &[(common::tar(&[E::File("big", &data)]), Compression::Gzip)],
        "amd64",
        json!({}),
    );
    layout.tag("big", &built);
    built
}

#[test]
fn a_dropped_connection_resumes_with_a_range_request() {
    let (tmp, mut layout) = layout();
    let built = big_image(&mut layout);
    let size = fs::metadata(layout.blob_path(&built.layers[0]))
        .unwrap()
        .len();
    let store = store(tmp.path());
    let spy = leak(Spy::new(&layout.dir));
    spy.cut
        .lock()
        .unwrap()
        .insert(built.layers[0].clone(), vec![size / 3, size / 3]);
    let progress = Recorder::default();
    store
        .pull(&spy, &reference("localhost/big:big"), &options(), &progress)
        .unwrap();
    assert_eq!(
        offsets(spy, &built.layers[0]),
        [0, size / 3, 2 * (size / 3)]
    );
    assert!(progress.events().iter().any(|e| matches!(
        e,
        Event::Layer {
            status: LayerStatus::Retrying { attempt: 2, .. },
            ..
        }
    )));

    // A source that ignores the range still gives the right blob.
    let tmp2 = tempfile::tempdir().unwrap();
    let store2 = self::store(tmp2.path());
    let mut whole = Spy::new(&layout.dir);
    whole.ignore_range = true;
    let whole = leak(whole);
    whole
        .cut
        .lock()
        .unwrap()
        .insert(built.layers[0].clone(), vec![size / 2]);
    pull(&store2, &whole, "localhost/big:big").unwrap();
}

#[test]
fn retries_run_out_and_the_partial_download_stays_for_the_next_pull() {
    let (tmp, mut layout) = layout();
    let built = big_image(&mut layout);
    let size = fs::metadata(layout.blob_path(&built.layers[0]))
        .unwrap()
        .len();
    let store = store(tmp.path());
    let spy = leak(Spy::new(&layout.dir));
    let cut = size / 4;
    spy.cut
        .lock()
        .unwrap()
        .insert(built.layers[0].clone(), vec![cut, 0]);
    let retry1 = PullOptions {
        retries: 1,
        ..options()
    };
    let err = store
        .pull(
            &spy,
            &reference("localhost/big:big"),
            &retry1,
            &Recorder::default(),
        )
        .unwrap_err();
    assert!(
        berth_image::error_chain(&err).contains(&format!("fetch blob {}", built.layers[0])),
        "{err}"
    );
    assert!(store.list().unwrap().is_empty());
    let partial = store
        .dir()
        .join(format!("blobs/.partial/sha256-{}", built.layers[0].hex()));
    assert_eq!(fs::metadata(&partial).unwrap().len(), cut);
    // The next pull asks only for the rest.
    spy.requests.lock().unwrap().clear();
    store
        .pull(
            &spy,
            &reference("localhost/big:big"),
            &retry1,
            &Recorder::default(),
        )
        .unwrap();
    assert_eq!(offsets(spy, &built.layers[0]), [cut]);
    assert!(!partial.exists());
}

#[test]
fn a_killed_pull_resumes_from_its_partial_blob_and_offset() {
    let (tmp, mut layout) = layout();
    let built = big_image(&mut layout);
    let blob = fs::read(layout.blob_path(&built.layers[0])).unwrap();
    let store = store(tmp.path());
    // What a `berth` killed mid-download leaves: the bytes it wrote, the offset it last
    // recorded (less than what it wrote: the tail past it is cut), and a staging directory.
    let partial_dir = store.dir().join("blobs/.partial");
    fs::create_dir_all(&partial_dir).unwrap();
    let name = format!("sha256-{}", built.layers[0].hex());
    let half = blob.len() as u64 / 2;
    let mut written = blob[..half as usize + 1000].to_vec();
    written.extend_from_slice(b"garbage past the recorded offset");
    fs::write(partial_dir.join(&name), &written).unwrap();
    fs::write(partial_dir.join(format!("{name}.offset")), half.to_string()).unwrap();
    let stale = store.dir().join(format!(
        "layers/.tmp-{}-999999999-0123456789ab",
        built.layers[0].short()
    ));
    fs::create_dir_all(stale.join("diff/half")).unwrap();

    let spy = leak(Spy::new(&layout.dir));
    pull(&store, &spy, "localhost/big:big").unwrap();
    assert_eq!(offsets(spy, &built.layers[0]), [half]);
    assert!(!stale.exists());
    assert!(!partial_dir.join(&name).exists());
    assert_eq!(
        fs::read(store.dir().join("blobs/sha256").join(built.layers[0].hex())).unwrap(),
        blob
    );

    // A partial blob whose bytes are not the blob's: found out at the end, and discarded.
    let tmp2 = tempfile::tempdir().unwrap();
    let store2 = self::store(tmp2.path());
    let partial_dir = store2.dir().join("blobs/.partial");
    fs::create_dir_all(&partial_dir).unwrap();
    let mut wrong = blob[..half as usize].to_vec();
    wrong[10] ^= 1;
    fs::write(partial_dir.join(&name), &wrong).unwrap();
    fs::write(partial_dir.join(format!("{name}.offset")), half.to_string()).unwrap();
    let err = pull(&store2, &spy, "localhost/big:big").unwrap_err();
    assert!(
        berth_image::error_chain(&err).contains(&built.layers[0].to_string()),
        "{err}"
    );
    assert!(!partial_dir.join(&name).exists());
    // ... so the next pull starts over and succeeds.
    pull(&store2, &spy, "localhost/big:big").unwrap();
}

#[test]
fn layers_download_three_at_a_time_in_manifest_order() {
    let (tmp, mut layout) = layout();
    // Uncompressed and 5 reads long each: every download lasts a while.
    let layers: Vec<(Vec<u8>, Compression)> = (0..7)
        .map(|i| {
            let data = vec![i as u8; 300_000];
            (
                common::tar(&[E::File(&format!("f{i}"), &data)]),
                Compression::None,
            )
        })
        .collect();
    let built = layout.image(&layers, "amd64", json!({}));
    layout.tag("seven", &built);
    let store = store(tmp.path());
    let mut spy = Spy::new(&layout.dir);
    spy.slow = Some(Duration::from_millis(20));
    let spy = leak(spy);
    pull(&store, &spy, "localhost/seven:seven").unwrap();
    assert_eq!(
        spy.max_in_flight.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    let started = spy.started.lock().unwrap().clone();
    // The config first, then the layers as the manifest lists them: the first three start
    // together (in any order among themselves, as threads go), the others as they end.
    let sorted = |v: &[Digest]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    assert_eq!(started[0], built.config);
    assert_eq!(sorted(&started[1..4]), sorted(&built.layers[..3]));
    assert_eq!(sorted(&started[4..]), sorted(&built.layers[3..]));

    // One at a time when asked.
    let tmp2 = tempfile::tempdir().unwrap();
    let store2 = self::store(tmp2.path());
    let serial = leak(Spy::new(&layout.dir));
    let one = PullOptions {
        parallel: 1,
        ..options()
    };
    store2
        .pull(
            &serial,
            &reference("localhost/seven:seven"),
            &one,
            &Recorder::default(),
        )
        .unwrap();
    assert_eq!(
        serial
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(serial.started.lock().unwrap()[1..], built.layers[..]);
}

#[test]
fn rmi_and_prune_collect_what_no_image_needs() {
    let (tmp, mut layout) = layout();
    let (a, b) = two_images_sharing_a_base(&mut layout);
    let store = store(tmp.path());
    let spy = leak(Spy::new(&layout.dir));
    let (ra, rb) = (reference("localhost/app:a"), reference("localhost/app:b"));
    store
        .pull(&spy, &ra, &options(), &Recorder::default())
        .unwrap();
    store
        .pull(&spy, &rb, &options(), &Recorder::default())
        .unwrap();
    let also_a = reference("localhost/other:latest");
    store.tag("localhost/app:a", &also_a).unwrap();

    // A second name only untags.
    let removed = store.remove("localhost/other", false, &|_| None).unwrap();
    assert_eq!((removed.untagged, removed.deleted.len()), (vec![also_a], 0));
    // An image a container uses stays.
    let err = store
        .remove("localhost/app:a", false, &|id| {
            (*id == a.config).then(|| "web".to_owned())
        })
        .unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "image localhost/app:a is in use by container web"
    );
    let df = store.df(&|id| *id == a.config).unwrap();
    assert_eq!(
        (df.images, df.active_images, df.unreferenced_layers),
        (2, 1, 0)
    );
    assert!(df.reclaimable > 0);

    // rmi a: its own layer and blobs go, the shared base stays for b.
    let removed = store.remove("localhost/app:a", false, &|_| None).unwrap();
    assert_eq!(removed.deleted, std::slice::from_ref(&a.config));
    assert_eq!(removed.collected.layers.len(), 1);
    // Its layer blob, config and manifest.
    assert_eq!(removed.collected.blobs.len(), 3);
    assert!(removed.collected.freed > 0);
    assert!(store.lower_dirs(&b.config).is_ok());

    // An untagged image is dangling: prune takes it; with `all` the rest too.
    let mut refs_only = store
        .tag(&b.config.to_string(), &reference("localhost/keep:1"))
        .unwrap();
    refs_only.references.sort();
    store.remove("localhost/app:b", false, &|_| None).unwrap();
    store.remove("localhost/keep:1", false, &|_| None).unwrap();
    assert!(store.list().unwrap().is_empty());
    // Everything is gone: layers, blobs, records.
    assert!(
        stored(&store).iter().all(|p| p == "references.json"),
        "{:?}",
        stored(&store)
    );

    store
        .pull(&spy, &ra, &options(), &Recorder::default())
        .unwrap();
    let pruned = store.prune(false, &|_| false).unwrap();
    assert!(pruned.deleted.is_empty());
    let pruned = store.prune(true, &|_| false).unwrap();
    assert_eq!(pruned.deleted, std::slice::from_ref(&a.config));
    assert!(
        stored(&store).iter().all(|p| p == "references.json"),
        "{:?}",
        stored(&store)
    );
}

#[test]
fn an_image_id_prefix_finds_it_and_an_ambiguous_one_says_so() {
    let (tmp, mut layout) = layout();
    let a = layout.image(&[(base_layer(), Compression::None)], "amd64", json!({}));
    layout.tag("a", &a);
    let store = store(tmp.path());
    let spy = leak(Spy::new(&layout.dir));
    pull(&store, &spy, "localhost/app:a").unwrap();
    let found = store.lookup(&a.config.hex()[..12]).unwrap().unwrap();
    assert_eq!(found.id, a.config);
    assert!(store.lookup("localhost/none").unwrap().is_none());
}
