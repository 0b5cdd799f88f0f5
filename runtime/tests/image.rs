//! `berth image`: the offline busybox image, rootfs tarball / docker-save / OCI layout
//! import (with whiteouts), path-traversal refusal, `ls`, `rm`.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use common::{Env, assert_one_line_error};
use serde_json::{Value, json};

/// Appends a regular file.
fn file<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8], mode: u32) {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    tar.append_data(&mut header, path, data).unwrap();
}

fn dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o755);
    tar.append_data(&mut header, path, &[][..]).unwrap();
}

fn symlink<W: Write>(tar: &mut tar::Builder<W>, path: &str, target: &str) {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    tar.append_link(&mut header, path, target).unwrap();
}

/// A minimal busybox rootfs as a tar stream: /bin/busybox, /bin/sh and /bin/cat.
fn busybox_rootfs<W: Write>(tar: &mut tar::Builder<W>) {
    dir(tar, "bin/");
    file(
        tar,
        "bin/busybox",
        &fs::read("/bin/busybox").unwrap(),
        0o755,
    );
    for applet in ["sh", "cat", "ls", "env"] {
        symlink(tar, &format!("bin/{applet}"), "busybox");
    }
}

fn sha256_name(n: usize) -> String {
    // Digests are only names here; any 64 hex digits do.
    format!("{n:064x}")
}

#[test]
fn busybox_image_is_built_offline() {
    let env = Env::new();
    let out = env.berth(&["image", "ls", "--json"]);
    assert_eq!(out.stdout.trim(), "[]", "{out:?}");
    let out = env.run(&["--rm", "busybox", "true"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = env.berth(&["image", "ls", "--json"]);
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "busybox");
    assert_eq!(list[0]["cmd"], json!(["sh"]));
    let rootfs = env.root.join("images/busybox/rootfs");
    let meta = fs::metadata(rootfs.join("tmp")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::read_link(rootfs.join("bin/ls")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert!(rootfs.join("sbin/ifconfig").exists() || rootfs.join("sbin/ifconfig").is_symlink());
    env.assert_clean();
}

#[test]
fn rootfs_tarball_import_gzip() {
    let env = Env::new();
    let tarball = env.tmp.path().join("rootfs.tar.gz");
    let gz =
        flate2::write::GzEncoder::new(File::create(&tarball).unwrap(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    busybox_rootfs(&mut tar);
    file(&mut tar, "hello", b"imported\n", 0o644);
    tar.into_inner().unwrap().finish().unwrap();

    let out = env.berth(&["image", "import", tarball.to_str().unwrap(), "mini"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "mini\n"), "{out:?}");
    let out = env.run(&["--rm", "mini", "cat", "/hello"]);
    assert_eq!(out.stdout, "imported\n", "{out:?}");
    // Importing the same name again is refused.
    let out = env.berth(&["image", "import", tarball.to_str().unwrap(), "mini"]);
    assert_one_line_error(&out);
    env.assert_clean();
}

#[test]
fn docker_save_archive_with_whiteouts() {
    let env = Env::new();
    let work = env.tmp.path().join("archive");
    fs::create_dir(&work).unwrap();

    // Layer 1: busybox and some files; layer 2 deletes one, empties a directory.
    let l1 = {
        let mut tar = tar::Builder::new(Vec::new());
        busybox_rootfs(&mut tar);
        dir(&mut tar, "etc/");
        file(&mut tar, "etc/keep", b"kept\n", 0o644);
        file(&mut tar, "etc/gone", b"gone\n", 0o644);
        dir(&mut tar, "cache/");
        file(&mut tar, "cache/old", b"old\n", 0o644);
        tar.into_inner().unwrap()
    };
    let l2 = {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        file(&mut tar, "etc/.wh.gone", b"", 0o644);
        dir(&mut tar, "cache/");
        file(&mut tar, "cache/.wh..wh..opq", b"", 0o644);
        file(&mut tar, "cache/new", b"new\n", 0o644);
        tar.into_inner().unwrap().finish().unwrap()
    };
    let config = json!({
        "config": {
            "Cmd": ["sh", "-c", "cat /etc/keep; ls /cache; test -e /etc/gone || echo no-gone; echo $FROM_IMAGE"],
            "Env": ["PATH=/bin", "FROM_IMAGE=yes"],
            "WorkingDir": "/etc"
        }
    });
    let manifest = json!([{
        "Config": "config.json",
        "RepoTags": ["test:latest"],
        "Layers": ["l1/layer.tar", "l2/layer.tar.gz"]
    }]);

    let tarball = env.tmp.path().join("saved.tar");
    let mut tar = tar::Builder::new(File::create(&tarball).unwrap());
    file(
        &mut tar,
        "manifest.json",
        manifest.to_string().as_bytes(),
        0o644,
    );
    file(
        &mut tar,
        "config.json",
        config.to_string().as_bytes(),
        0o644,
    );
    file(&mut tar, "l1/layer.tar", &l1, 0o644);
    file(&mut tar, "l2/layer.tar.gz", &l2, 0o644);
    tar.finish().unwrap();
    drop(tar);

    let out = env.berth(&["image", "import", tarball.to_str().unwrap(), "saved"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = env.run(&["--rm", "saved"]);
    assert_eq!(out.stdout, "kept\nnew\nno-gone\nyes\n", "{out:?}");
    let out = env.run(&["--rm", "saved", "pwd"]);
    assert_eq!(out.code, 127, "pwd is not in this image: {out:?}");
    env.assert_clean();
}

#[test]
fn oci_layout_import() {
    let env = Env::new();
    let layer = {
        let mut tar = tar::Builder::new(Vec::new());
        busybox_rootfs(&mut tar);
        file(&mut tar, "oci", b"from oci\n", 0o644);
        tar.into_inner().unwrap()
    };
    let config = json!({"config": {"Cmd": ["cat", "/oci"]}});
    let (layer_d, config_d, manifest_d) = (sha256_name(1), sha256_name(2), sha256_name(3));
    let manifest = json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_d}")},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_d}")}]
    });
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_d}"),
            "platform": {"architecture": "amd64", "os": "linux"}
        }]
    });
    let tarball = env.tmp.path().join("oci.tar");
    let mut tar = tar::Builder::new(File::create(&tarball).unwrap());
    file(
        &mut tar,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    );
    file(&mut tar, "index.json", index.to_string().as_bytes(), 0o644);
    file(&mut tar, &format!("blobs/sha256/{layer_d}"), &layer, 0o644);
    file(
        &mut tar,
        &format!("blobs/sha256/{config_d}"),
        config.to_string().as_bytes(),
        0o644,
    );
    file(
        &mut tar,
        &format!("blobs/sha256/{manifest_d}"),
        manifest.to_string().as_bytes(),
        0o644,
    );
    tar.finish().unwrap();
    drop(tar);

    let out = env.berth(&["image", "import", tarball.to_str().unwrap(), "ocitest"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = env.run(&["--rm", "ocitest"]);
    assert_eq!(out.stdout, "from oci\n", "{out:?}");
    env.assert_clean();
}

#[test]
fn path_traversal_is_refused() {
    let env = Env::new();
    let tarball = env.tmp.path().join("evil.tar");
    let mut tar = tar::Builder::new(File::create(&tarball).unwrap());
    // The builder refuses `..`, so the name goes into the header by hand.
    let mut header = tar::Header::new_old();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    let name = b"../../evil-escaped";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append(&header, &b"evil"[..]).unwrap();
    tar.finish().unwrap();
    drop(tar);

    let out = env.berth(&["image", "import", tarball.to_str().unwrap(), "evil"]);
    assert_one_line_error(&out);
    assert!(out.stderr.contains("outside"), "{out:?}");
    assert!(!env.tmp.path().join("evil-escaped").exists());
    assert!(!env.root.join("evil-escaped").exists());
    let out = env.berth(&["image", "ls", "--json"]);
    assert_eq!(out.stdout.trim(), "[]", "{out:?}");
    // No staging directory survives.
    let left: Vec<_> = fs::read_dir(env.root.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".lock")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    env.assert_clean();
}

#[test]
fn image_rm_refuses_images_in_use() {
    let env = Env::new();
    let out = env.run(&["--name", "user", "busybox", "true"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = env.berth(&["image", "rm", "busybox"]);
    assert_one_line_error(&out);
    assert!(out.stderr.contains("in use by container user"), "{out:?}");
    assert_eq!(env.berth(&["rm", "user"]).code, 0);
    let out = env.berth(&["image", "rm", "busybox"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!env.root.join("images/busybox").exists());
    let out = env.berth(&["image", "rm", "busybox"]);
    assert_one_line_error(&out);
    env.assert_clean();
}

#[test]
fn staging_left_by_a_killed_build_or_removal_is_swept() {
    let env = Env::new();
    assert_eq!(env.berth(&["image", "ls"]).code, 0);
    let images = env.root.join("images");
    // What `berth` killed while importing, or while deleting a removed image, leaves.
    for stale in [".tmp-mini-0123456789ab", ".tmp-rm-old-ba9876543210"] {
        fs::create_dir_all(images.join(stale).join("rootfs/bin")).unwrap();
        fs::write(images.join(stale).join("rootfs/bin/x"), b"x").unwrap();
    }
    // The next command that takes the image lock deletes it.
    let tarball = env.tmp.path().join("rootfs.tar");
    let mut tar = tar::Builder::new(File::create(&tarball).unwrap());
    busybox_rootfs(&mut tar);
    tar.finish().unwrap();
    drop(tar);
    let out = env.berth(&["image", "import", tarball.to_str().unwrap(), "mini"]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut left: Vec<String> = fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".lock", "mini"]);
    env.assert_clean();
}
