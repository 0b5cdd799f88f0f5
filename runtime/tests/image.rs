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

/// The hex digits of the sha256 digest of `bytes` (a blob's name in an OCI layout).
fn sha256_hex(bytes: &[u8]) -> String {
    berth_image::Digest::sha256_of(bytes).hex().to_owned()
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
    assert_eq!(list[0]["repository"], "busybox");
    assert_eq!(list[0]["tag"], "latest");
    assert!(list[0]["source"].as_str().unwrap().starts_with("host:"));
    // One layer, in overlay format, shared by every container of the image.
    let rootfs = env.only_layer();
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
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "mini:latest\n"),
        "{out:?}"
    );
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
    let layer_d = sha256_hex(&layer);
    let config = json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["cat", "/oci"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_d}")]}})
    .to_string();
    let config_d = sha256_hex(config.as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_d}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_d}"), "size": layer.len()}]
    })
    .to_string();
    let manifest_d = sha256_hex(manifest.as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_d}"),
            "size": manifest.len(),
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
        config.as_bytes(),
        0o644,
    );
    file(
        &mut tar,
        &format!("blobs/sha256/{manifest_d}"),
        manifest.as_bytes(),
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
    // No layer, blob, record, partial download or staging directory survives.
    assert_eq!(stored(&env.root.join("images")), Vec::<String>::new());
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
    assert_eq!(
        out.stdout.lines().next(),
        Some("Untagged: busybox:latest"),
        "{out:?}"
    );
    // Its layer, blobs and record are gone with it.
    assert_eq!(stored(&env.root.join("images")), ["references.json"]);
    let out = env.berth(&["image", "rm", "busybox"]);
    assert_one_line_error(&out);
    env.assert_clean();
}

/// The files of an image store, but its lock files (`.lock`, `.gc.lock`), relative.
fn stored(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(base).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                walk(base, &e.path(), out);
            } else if !rel.ends_with(".lock") {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn staging_left_by_a_killed_pull_or_import_is_swept() {
    let env = Env::new();
    assert_eq!(env.berth(&["image", "ls"]).code, 0);
    let images = env.root.join("images");
    // What `berth` killed while unpacking a layer, removing one, or importing an archive
    // leaves (pid 999999999 is nobody's).
    let stale = [
        "layers/.tmp-0123456789ab-999999999-0123456789ab",
        "layers/.tmp-rm-0123456789ab-999999999-0123456789ab",
        ".tmp-import-999999999-0123456789ab",
    ];
    for dir in stale {
        fs::create_dir_all(images.join(dir).join("diff/bin")).unwrap();
        fs::write(images.join(dir).join("diff/bin/x"), b"x").unwrap();
    }
    // The next pull or import deletes them.
    let tarball = env.tmp.path().join("saved.tar");
    let mut tar = tar::Builder::new(File::create(&tarball).unwrap());
    let layer = {
        let mut tar = tar::Builder::new(Vec::new());
        busybox_rootfs(&mut tar);
        tar.into_inner().unwrap()
    };
    file(
        &mut tar,
        "manifest.json",
        json!([{"Config": "c.json", "Layers": ["l.tar"]}])
            .to_string()
            .as_bytes(),
        0o644,
    );
    file(
        &mut tar,
        "c.json",
        br#"{"config": {"Cmd": ["true"]}}"#,
        0o644,
    );
    file(&mut tar, "l.tar", &layer, 0o644);
    tar.finish().unwrap();
    drop(tar);
    let out = env.berth(&["image", "import", tarball.to_str().unwrap(), "mini"]);
    assert_eq!(out.code, 0, "{out:?}");
    for dir in stale {
        assert!(!images.join(dir).exists(), "{dir}");
    }
    env.assert_clean();
}
