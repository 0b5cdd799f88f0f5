//! The image verbs against real registries: `pull` (layers shared between images, platforms,
//! verification, auth, a killed pull resumed), `run --pull`, `push` (read back by skopeo),
//! `save`/`load` in both formats, `login`/`logout`, `images`, `image inspect`, `system df`.
//!
//! Each test starts Debian's `docker-registry` (netns_fixtures::TestRegistry) inside the
//! test's own host netns, where `berth` runs too, and pushes the offline test images
//! (netns_fixtures::images, built from the host's busybox) with skopeo. Needs root and the
//! packages docker-registry, skopeo and openssl.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, Run, assert_one_line_error};
use netns_fixtures::images::{self, OciLayout, Remote};
use netns_fixtures::{TestRegistry, Throttle};
use serde_json::Value;

/// A test's world: the runtime's [`Env`], a registry in its netns, the images' layout, and a
/// registries config and auth file of its own (nothing read from the host's).
struct World {
    env: Env,
    registry: TestRegistry,
    layout: OciLayout,
    config: PathBuf,
    authfile: PathBuf,
}

impl World {
    fn new() -> World {
        World::with(|env| TestRegistry::plain(&env.host).unwrap())
    }

    fn with(start: impl FnOnce(&Env) -> TestRegistry) -> World {
        let env = Env::new();
        let registry = start(&env);
        let layout = OciLayout::temp().unwrap();
        let config = env.tmp.path().join("registries.toml");
        fs::write(&config, "certs_d = []\n").unwrap();
        let authfile = env.tmp.path().join("auth.json");
        World {
            env,
            registry,
            layout,
            config,
            authfile,
        }
    }

    fn host(&self) -> String {
        self.registry.host()
    }

    /// `HOST/<path>`.
    fn image(&self, path: &str) -> String {
        format!("{}/{path}", self.host())
    }

    /// Pushes the layout's `tag` to `reference` with skopeo; the manifest's digest.
    fn push(&self, tag: &str, reference: &str) -> String {
        images::push(
            self.layout.dir(),
            tag,
            &Remote::of(&self.env.host, &self.registry),
            reference,
        )
        .unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut all = vec!["--registries-config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut cmd = self.env.command(&all);
        cmd.env("REGISTRY_AUTH_FILE", &self.authfile)
            .env("DOCKER_CONFIG", self.env.tmp.path().join("docker"))
            .env_remove("XDG_RUNTIME_DIR");
        cmd
    }

    /// `berth <args>` in the test's netns, with this world's config and auth file.
    fn berth(&self, args: &[&str]) -> Run {
        self.env
            .host
            .output(&mut self.command(args))
            .expect("run berth")
            .into()
    }

    fn ok(&self, args: &[&str]) -> Run {
        let out = self.berth(args);
        assert_eq!(out.code, 0, "berth {args:?}: {out:?}");
        out
    }

    /// `image inspect` of one image.
    fn inspect(&self, name: &str) -> Value {
        let out = self.ok(&["image", "inspect", name]);
        let all: Value = serde_json::from_str(&out.stdout).unwrap();
        all[0].clone()
    }

    fn df(&self) -> Value {
        serde_json::from_str(&self.ok(&["system", "df", "--json"]).stdout).unwrap()
    }

    /// Lines of the registry's access log for `method path-prefix`.
    fn requests(&self, method: &str, prefix: &str) -> Vec<String> {
        let needle = format!("\"{method} {prefix}");
        self.registry
            .log()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }
}

/// `skopeo inspect <transport>` on the host (files) or in `ns` (a registry).
fn skopeo_inspect(target: &str) -> Value {
    let out = Command::new(images::SKOPEO_BIN)
        .args(["inspect", "--raw", target])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn digest_of(json: &Value) -> String {
    json.as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_pulled_image_runs_with_its_whiteouts_and_a_second_shares_its_layers() {
    let mut w = World::new();
    let app = images::app(&mut w.layout).unwrap();
    let app2 = images::app2(&mut w.layout).unwrap();
    w.push("app", "ns/app:1");
    w.push("app2", "ns/app2:1");
    let app_ref = w.image("ns/app:1");
    let started = Instant::now();
    let out = w.ok(&["pull", &app_ref]);
    let cold = started.elapsed();
    assert_eq!(out.stdout, format!("{app_ref}\n"), "{out:?}");
    assert!(out.stderr.contains("Pull complete"), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("Digest: {}", app.manifest.digest)),
        "{out:?}"
    );

    // The whiteout's file and the opaque directory's old content are gone; its own are
    // there. The entrypoint is `sh -c`, so the command is a script.
    let out = w.env.run(&[
        "--rm",
        "--network",
        "none",
        &app_ref,
        "test ! -e /etc/gone.txt && ls /data/old && cat /data/keep",
    ]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "new\nkept\n"),
        "{out:?}"
    );

    // The second image fetches its config and its own layer, nothing of the shared two.
    let shared = &app.layers[..2];
    let app2_ref = w.image("ns/app2:1");
    let out = w.ok(&["pull", &app2_ref]);
    assert_eq!(out.stderr.matches("Already exists").count(), 2, "{out:?}");
    let fetched = w.requests("GET", "/v2/ns/app2/blobs/");
    assert_eq!(fetched.len(), 2, "{fetched:#?}");
    for layer in shared {
        assert!(
            !fetched.iter().any(|l| l.contains(&layer.digest)),
            "{fetched:#?}"
        );
    }
    assert!(fetched.iter().any(|l| l.contains(&app2.layers[2].digest)));
    // The store holds the shared layers once: 3 of app, 1 of app2.
    let df = w.df();
    assert_eq!(
        (df["images"].as_u64(), df["layers"].as_u64()),
        (Some(2), Some(4)),
        "{df}"
    );

    // Pulled again: only the manifest, and `-q` prints only the digest.
    let started = Instant::now();
    let out = w.ok(&["pull", "-q", &app_ref]);
    let warm = started.elapsed();
    assert_eq!(out.stdout, format!("{}\n", app.manifest.digest), "{out:?}");
    assert_eq!(out.stderr, "", "{out:?}");
    eprintln!("pull of app: cold {cold:?}, present {warm:?}");

    // docker's inspect shape, from the image's config.
    let doc = w.inspect(&app_ref);
    assert_eq!(doc["Id"], app.config.digest.as_str(), "{doc}");
    assert_eq!(doc["RepoTags"][0], app_ref.as_str(), "{doc}");
    assert_eq!(
        doc["RepoDigests"][0],
        format!("{}@{}", w.image("ns/app"), app.manifest.digest).as_str()
    );
    assert_eq!(doc["Config"]["User"], "65534");
    assert_eq!(doc["Config"]["WorkingDir"], "/app");
    assert_eq!(doc["Config"]["StopSignal"], "SIGUSR1");
    assert!(
        doc["Config"]["ExposedPorts"]["8080/tcp"].is_object(),
        "{doc}"
    );
    assert_eq!(doc["Config"]["Labels"]["org.berth.test"], "app");
    assert_eq!(doc["RootFS"]["Layers"].as_array().unwrap().len(), 3);
    assert_eq!(doc["Architecture"], images::host_arch());
    w.env.assert_clean();
}

#[test]
fn the_platform_is_the_hosts_or_the_one_asked_for() {
    let mut w = World::new();
    let multi = images::multi(&mut w.layout).unwrap();
    w.push("multi", "ns/multi:1");
    let name = w.image("ns/multi:1");
    let host = format!("linux/{}", images::host_arch());
    let other = if images::host_arch() == "arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };

    w.ok(&["pull", &name]);
    let doc = w.inspect(&name);
    assert_eq!(
        doc["Id"],
        multi.image(&host).unwrap().config.digest.as_str()
    );
    // The index's digest is what the reference resolved to.
    assert_eq!(
        doc["RepoDigests"][0],
        format!("{}@{}", w.image("ns/multi"), multi.index.digest).as_str()
    );

    let out = w.ok(&["pull", "--platform", other, &name]);
    assert_eq!(out.stdout, format!("{name}\n"));
    let doc = w.inspect(&name);
    // (The index's arm64 entry carries variant v8.)
    let chosen = multi
        .images
        .iter()
        .find(|i| i.platform.starts_with(other))
        .unwrap();
    assert_eq!(doc["Id"], chosen.config.digest.as_str(), "{doc}");
    assert_eq!(
        format!("linux/{}", doc["Architecture"].as_str().unwrap()),
        other
    );

    // Nothing matches: the platforms there are, not the attestation's.
    let out = w.berth(&["pull", "--platform", "linux/s390x", &name]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    assert!(
        out.stderr.contains("linux/amd64") && out.stderr.contains("linux/arm64"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("unknown/unknown"), "{out:?}");
    // A bad platform is refused before any request.
    let out = w.berth(&["pull", "--platform", "linux", &name]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    w.env.assert_clean();
}

#[test]
fn a_corrupted_blob_is_refused_by_its_digest_and_nothing_is_stored() {
    let mut w = World::new();
    let app = images::app(&mut w.layout).unwrap();
    w.push("app", "ns/app:1");
    let bad = &app.layers[2];
    let data = w.registry.blob_data(&bad.digest);
    let mut bytes = fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&data, bytes).unwrap();

    let out = w.berth(&["pull", "--retry", "0", &w.image("ns/app:1")]);
    assert_eq!(out.code, 125, "{out:?}");
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("berth: pull "), "{out:?}");
    assert!(last.contains(&bad.digest), "{out:?}");
    // No image; no layer; no blob of it (the other layers may stay for the next pull, but
    // nothing unverified does).
    assert_eq!(w.ok(&["images", "-q"]).stdout, "");
    let df = w.df();
    assert_eq!(df["images"], 0, "{df}");
    let blobs = w.env.root.join("images/blobs/sha256");
    let hex = bad.digest.trim_start_matches("sha256:");
    assert!(!blobs.join(hex).exists());
    let out = w
        .env
        .run(&["--rm", "--pull=never", &w.image("ns/app:1"), "true"]);
    assert_eq!(out.code, 125, "{out:?}");
    w.env.assert_clean();
}

#[test]
fn login_logout_and_a_wrong_password() {
    let mut w = World::with(|env| {
        TestRegistry::builder(&env.host)
            .tls()
            .htpasswd()
            .user("alice", "secret")
            .start()
            .unwrap()
    });
    images::app(&mut w.layout).unwrap();
    images::push(
        w.layout.dir(),
        "app",
        &Remote::of(&w.env.host, &w.registry).creds("alice", "secret"),
        "ns/app:1",
    )
    .unwrap();
    let certs = w.registry.cert_dir().unwrap();
    let certs = certs.to_str().unwrap();
    let host = w.host();
    let name = w.image("ns/app:1");

    // No credentials, then wrong ones: both say it is about authentication.
    for args in [
        vec!["pull", "--cert-dir", certs, &name],
        vec!["pull", "--cert-dir", certs, "--creds", "alice:wrong", &name],
        vec![
            "login",
            "--cert-dir",
            certs,
            "-u",
            "alice",
            "-p",
            "wrong",
            &host,
        ],
    ] {
        let out = w.berth(&args);
        assert_eq!(out.code, 125, "{out:?}");
        assert_one_line_error(&out);
        assert!(
            out.stderr.to_lowercase().contains("authenticat")
                || out.stderr.to_lowercase().contains("unauthorized"),
            "{out:?}"
        );
    }
    assert!(!w.authfile.exists());
    // Without verification of its (self-signed) certificate, the registry is not trusted.
    let out = w.berth(&["pull", "--creds", "alice:secret", &name]);
    assert_eq!(out.code, 125, "{out:?}");

    let out = w.ok(&[
        "login",
        "--cert-dir",
        certs,
        "-u",
        "alice",
        "-p",
        "secret",
        &host,
    ]);
    assert_eq!(out.stdout, "Login Succeeded!\n");
    let auth: Value = serde_json::from_slice(&fs::read(&w.authfile).unwrap()).unwrap();
    assert!(auth["auths"][&host]["auth"].is_string(), "{auth}");
    // The stored login is used.
    w.ok(&["pull", "-q", "--cert-dir", certs, &name]);
    // --password-stdin, and --authfile elsewhere.
    let other = w.env.tmp.path().join("other-auth.json");
    let mut cmd = w.command(&[
        "login",
        "--cert-dir",
        certs,
        "--authfile",
        other.to_str().unwrap(),
        "-u",
        "alice",
        "--password-stdin",
        &host,
    ]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = w.env.host.spawn(&mut cmd).unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"secret\n").unwrap();
    }
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(other.exists());

    // Push with the stored login.
    let pushed = w.image("ns/pushed:1");
    w.ok(&["tag", &name, &pushed]);
    w.ok(&["push", "-q", "--cert-dir", certs, &pushed]);

    let out = w.ok(&["logout", &host]);
    assert_eq!(
        out.stdout,
        format!("Removed login credentials for {host}\n")
    );
    let auth: Value = serde_json::from_slice(&fs::read(&w.authfile).unwrap()).unwrap();
    assert!(auth["auths"].get(&host).is_none(), "{auth}");
    let out = w.berth(&["logout", &host]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    assert!(out.stderr.contains("not logged in"), "{out:?}");
    w.env.assert_clean();
}

/// The offset the partial download of `digest` recorded (what a resumed pull starts from;
/// recorded every 4 MiB), if any.
fn partial_offset(root: &Path, digest: &str) -> u64 {
    let name = format!("{}.offset", digest.replace(':', "-"));
    fs::read_to_string(root.join("images/blobs/.partial").join(name))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_killed_pull_resumes_with_a_range_request_and_the_image_runs() {
    let mut w = World::new();
    const SIZE: u64 = 10 << 20;
    let big = images::big(&mut w.layout, SIZE, false).unwrap();
    w.push("big", "ns/big:1");
    let proxy = Throttle::start(&w.env.host, w.registry.addr()).unwrap();
    proxy.set_rate(3 << 20);
    let name = format!("{}/ns/big:1", proxy.host());
    let layer = &big.layers[1].digest;

    let mut cmd = w.command(&["pull", &name]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = w.env.host.spawn(&mut cmd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while partial_offset(&w.env.root, layer) == 0 {
        assert!(Instant::now() < deadline, "the download never got going");
        assert!(child.try_wait().unwrap().is_none(), "the pull ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let kept = partial_offset(&w.env.root, layer);
    assert!(kept > 0 && kept < SIZE, "{kept}");

    proxy.set_rate(0);
    let out = w.ok(&["pull", &name]);
    assert!(out.stderr.contains("Pull complete"), "{out:?}");
    let log = w.registry.log();
    assert!(
        log.lines()
            .any(|l| l.contains(layer.as_str()) && l.contains("\" 206 ")),
        "no Range request for {layer} in the log:\n{log}"
    );
    let out = w.env.run(&["--rm", "--network", "none", &name]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, format!("{SIZE}\n").as_str()),
        "{out:?}"
    );
    w.env.assert_clean();
}

#[test]
fn save_rmi_load_round_trips_in_both_formats() {
    let mut w = World::new();
    let app = images::app(&mut w.layout).unwrap();
    let app2 = images::app2(&mut w.layout).unwrap();
    w.push("app", "ns/app:1");
    w.push("app2", "ns/app2:1");
    let (one, two) = (w.image("ns/app:1"), w.image("ns/app2:1"));
    w.ok(&["pull", "-q", &one]);
    w.ok(&["pull", "-q", &two]);
    w.ok(&["tag", &one, "local/app:extra"]);

    for format in ["docker-archive", "oci-archive"] {
        let archive = w.env.tmp.path().join(format!("{format}.tar"));
        let archive_s = archive.to_str().unwrap();
        w.ok(&["save", "--format", format, "-o", archive_s, &one, &two]);
        // A tool that is not Berth reads it.
        let target = match format {
            "docker-archive" => format!("docker-archive:{archive_s}:{one}"),
            _ => format!("oci-archive:{archive_s}:{one}"),
        };
        let manifest = skopeo_inspect(&target);
        assert_eq!(manifest["config"]["digest"], app.config.digest.as_str());

        w.ok(&["rmi", &one, &two]);
        assert!(w.df()["images"] == 1, "local/app:extra keeps app");
        w.ok(&["rmi", "local/app:extra"]);
        assert_eq!(w.ok(&["images", "-q"]).stdout, "");
        let out = w.ok(&["load", "-i", archive_s]);
        assert_eq!(
            out.stdout,
            format!("Loaded image: {one}\nLoaded image: {two}\n"),
            "{out:?}"
        );
        // Same ids: the configs went through byte for byte.
        assert_eq!(w.inspect(&one)["Id"], app.config.digest.as_str());
        assert_eq!(w.inspect(&two)["Id"], app2.config.digest.as_str());
        let out = w
            .env
            .run(&["--rm", "--network", "none", &one, "cat /data/old/new"]);
        assert_eq!((out.code, out.stdout.as_str()), (0, "new\n"), "{out:?}");
        // Loading again replaces the names (import would refuse).
        w.ok(&["load", "-q", "-i", archive_s]);
        w.ok(&["tag", &one, "local/app:extra"]);
    }
    // The docker archive has docker's layout: uncompressed layers named by diffID.
    let archive = w.env.tmp.path().join("docker-archive.tar");
    let names = String::from_utf8(
        Command::new("tar")
            .arg("-tf")
            .arg(&archive)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for layer in &app.layers {
        let hex = layer.diff_id.trim_start_matches("sha256:");
        assert!(names.contains(&format!("{hex}/layer.tar")), "{names}");
    }
    assert!(names.contains("manifest.json") && names.contains("repositories"));
    // Archives Berth did not write: netns-fixtures' docker archive (a name) and OCI archives
    // whose ref.name is a tag only (no name: known by id; an index: the host's platform).
    let docker = w.env.tmp.path().join("fixture-docker.tar");
    images::write_docker_archive(&app, "berth.test/app:1", &docker).unwrap();
    let out = w.ok(&["load", "-i", docker.to_str().unwrap()]);
    assert_eq!(out.stdout, "Loaded image: berth.test/app:1\n", "{out:?}");
    assert_eq!(
        w.inspect("berth.test/app:1")["Id"],
        app.config.digest.as_str()
    );
    let multi = images::multi(&mut w.layout).unwrap();
    for (tag, id) in [
        ("app2", app2.config.digest.clone()),
        (
            "multi",
            multi
                .images
                .iter()
                .find(|i| i.platform == format!("linux/{}", images::host_arch()))
                .unwrap()
                .config
                .digest
                .clone(),
        ),
    ] {
        let oci = w.env.tmp.path().join(format!("fixture-{tag}.tar"));
        images::write_oci_archive(w.layout.dir(), tag, &oci).unwrap();
        let out = w.ok(&["load", "-i", oci.to_str().unwrap()]);
        assert_eq!(out.stdout, format!("Loaded image ID: {id}\n"), "{out:?}");
        assert_eq!(w.inspect(&id)["Id"], id.as_str());
    }
    assert!(w.ok(&["images"]).stdout.contains("<none>"));
    // A rootfs tarball is not an image archive.
    let out = w.berth(&["load", "-i", "/dev/null"]);
    assert_eq!(out.code, 125, "{out:?}");
    w.env.assert_clean();
}

#[test]
fn tag_and_push_are_read_back_by_skopeo() {
    let mut w = World::new();
    let app = images::app(&mut w.layout).unwrap();
    w.push("app", "ns/app:1");
    let one = w.image("ns/app:1");
    w.ok(&["pull", "-q", &one]);

    // Another repository of the same registry: its layers are mounted, not sent again.
    let other = w.image("other/app:2");
    w.ok(&["tag", &one, &other]);
    let out = w.ok(&["push", &other]);
    assert_eq!(
        out.stderr.matches("Mounted from ns/app").count(),
        3,
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains(&format!("2: digest: {}", app.manifest.digest)),
        "{out:?}"
    );
    let remote = Remote::of(&w.env.host, &w.registry);
    let seen = images::inspect(&remote, "other/app:2", false).unwrap();
    assert_eq!(seen["Digest"], app.manifest.digest.as_str(), "{seen}");
    // Pushed again: the registry has everything.
    let out = w.ok(&["push", &other]);
    assert_eq!(
        out.stderr.matches("Layer already exists").count(),
        3,
        "{out:?}"
    );

    // The offline busybox image, under a registry name: its layer is sent.
    let bb = w.image("ns/busybox:1");
    w.ok(&["tag", "busybox", &bb]);
    let out = w.ok(&["push", "-q", &bb]);
    let digest = out.stdout.trim().to_owned();
    assert!(
        digest.starts_with("sha256:") && out.stderr.is_empty(),
        "{out:?}"
    );
    let seen = images::inspect(&remote, "ns/busybox:1", false).unwrap();
    assert_eq!(digest_of(&seen["Digest"]), digest, "{seen}");
    let uploads = w.requests("PUT", "/v2/ns/busybox/blobs/uploads/");
    assert_eq!(uploads.len(), 2, "layer and config: {uploads:#?}");
    // And it pulls back as the same image.
    let id = w.inspect("busybox")["Id"].clone();
    w.ok(&["rmi", &bb]);
    w.ok(&["pull", "-q", &bb]);
    assert_eq!(w.inspect(&bb)["Id"], id);

    // A missing image, and a digest as the target.
    let out = w.berth(&["push", &w.image("ns/none:1")]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    w.env.assert_clean();
}

#[test]
fn images_table_run_pull_policies_and_bad_references() {
    let mut w = World::new();
    images::app(&mut w.layout).unwrap();
    w.push("app", "ns/app:1");
    let one = w.image("ns/app:1");

    // --pull=missing (the default) pulls; the offline busybox needs no network.
    let out = w
        .env
        .run(&["--rm", "--network", "none", &one, "cat /data/keep"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "kept\n"), "{out:?}");
    assert!(out.stderr.contains("Pull complete"), "{out:?}");
    // The offline busybox image is local: built from the host, never pulled.
    let out = w.env.run(&[
        "--rm",
        "--network",
        "none",
        "--pull=never",
        "busybox",
        "true",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("Pulling"), "{out:?}");
    // --pull=never of a missing image fails clearly.
    let out = w
        .env
        .run(&["--rm", "--pull=never", &w.image("ns/app:2"), "true"]);
    assert_eq!(out.code, 125, "{out:?}");
    assert!(out.stderr.contains("not found"), "{out:?}");
    // --pull=always asks the registry again (the manifest; the layers are there).
    let before = w.requests("GET", "/v2/ns/app/manifests/").len();
    let out = w
        .env
        .run(&["--rm", "--network", "none", "--pull=always", &one, "true"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(w.requests("GET", "/v2/ns/app/manifests/").len(), before + 1);

    // The table: every column starts where its header does.
    let out = w.ok(&["images", "--digests"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    for header in ["TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"] {
        let at = lines[0].find(header).unwrap();
        for line in &lines[1..] {
            let bytes = line.as_bytes();
            assert!(
                bytes[at - 1] == b' ' && bytes[at] != b' ',
                "{header} misaligned:\n{}",
                out.stdout
            );
        }
    }
    assert!(out.stdout.contains("busybox "), "{out:?}");
    assert!(out.stdout.contains(&w.image("ns/app")), "{out:?}");
    let ids = w.ok(&["images", "-q"]).stdout;
    assert_eq!(ids.lines().count(), 2);
    assert!(ids.lines().all(|l| l.len() == 12));

    // system df: images, layers, blobs, and what a prune frees.
    let out = w.ok(&["system", "df"]);
    for row in ["TYPE", "Images", "Layers", "Blobs"] {
        assert!(out.stdout.contains(row), "{out:?}");
    }
    let df = w.df();
    assert_eq!(df["images"], 2);
    assert_eq!(df["layers"], 4, "{df}");
    assert!(df["reclaimable"].as_u64().unwrap() > 0, "{df}");

    // Bad references: one line, 125, before anything else.
    for bad in ["UPPER/case", "a::b", "x@sha256:zzz"] {
        for args in [vec!["pull", bad], vec!["run", bad], vec!["rmi", bad]] {
            let out = w.berth(&args);
            assert_eq!(out.code, 125, "{args:?}: {out:?}");
            assert_one_line_error(&out);
        }
    }
    w.env.assert_clean();
}

#[test]
fn the_registries_config_gives_mirrors_and_insecure_registries() {
    let mut w = World::with(|env| TestRegistry::builder(&env.host).tls().start().unwrap());
    let app = images::app(&mut w.layout).unwrap();
    w.push("app", "ns/app:1");
    let name = w.image("ns/app:1");

    // A self-signed registry is refused, then reached with --tls-verify=false, or as an
    // insecure registry of the config file.
    let out = w.berth(&["pull", "-q", &name]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    w.ok(&["pull", "-q", "--tls-verify=false", &name]);
    w.ok(&["rmi", &name]);
    fs::write(
        &w.config,
        format!(
            "certs_d = []\n[[registry]]\nname = \"{}\"\ninsecure = true\n",
            w.host()
        ),
    )
    .unwrap();
    w.ok(&["pull", "-q", &name]);
    w.ok(&["rmi", &name]);

    // A mirror is asked first: a pull-through mirror of a plain registry holding the image.
    let upstream = TestRegistry::plain(&w.env.host).unwrap();
    images::push(
        w.layout.dir(),
        "app",
        &Remote::of(&w.env.host, &upstream),
        "ns/app:1",
    )
    .unwrap();
    let mirror = TestRegistry::builder(&w.env.host)
        .mirror_of(&upstream)
        .start()
        .unwrap();
    fs::write(
        &w.config,
        format!(
            "certs_d = []\n[[registry]]\nname = \"{}\"\nmirrors = [\"{}\"]\n",
            upstream.host(),
            mirror.host()
        ),
    )
    .unwrap();
    let name = format!("{}/ns/app:1", upstream.host());
    let out = w.ok(&["pull", "-q", &name]);
    assert_eq!(out.stdout, format!("{}\n", app.manifest.digest));
    assert!(
        mirror.log().contains("\"GET /v2/ns/app/manifests/1 "),
        "the mirror was not asked:\n{}",
        mirror.log()
    );
    // A bad config file is one clear line.
    fs::write(&w.config, "[[registry]]\nname = \"Bad Host\"\n").unwrap();
    let out = w.berth(&["pull", "-q", &name]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    assert!(out.stderr.contains("registries config"), "{out:?}");
    w.env.assert_clean();
}

#[test]
fn bearer_tokens_through_login_pull_and_push() {
    let mut w = World::with(|env| {
        TestRegistry::builder(&env.host)
            .token_auth()
            .user("bob", "builder")
            .start()
            .unwrap()
    });
    let app = images::app(&mut w.layout).unwrap();
    images::push(
        w.layout.dir(),
        "app",
        &Remote::of(&w.env.host, &w.registry).creds("bob", "builder"),
        "ns/app:1",
    )
    .unwrap();
    let host = w.host();
    let name = w.image("ns/app:1");
    let out = w.berth(&["pull", &name]);
    assert_eq!(out.code, 125, "anonymous: {out:?}");
    assert_one_line_error(&out);
    let out = w.berth(&["login", "-u", "bob", "-p", "nope", &host]);
    assert_eq!(out.code, 125, "{out:?}");
    assert!(out.stderr.to_lowercase().contains("authenticat"), "{out:?}");
    w.ok(&["login", "-u", "bob", "-p", "builder", &host]);
    let out = w.ok(&["pull", "-q", &name]);
    assert_eq!(out.stdout, format!("{}\n", app.manifest.digest));
    let copy = w.image("ns/copy:1");
    w.ok(&["tag", &name, &copy]);
    w.ok(&["push", &copy]);
    // The token server saw bob ask for push rights on the new repository.
    let tokens = w.registry.token_server().unwrap().requests();
    assert!(
        tokens.iter().any(|t| t.user.as_deref() == Some("bob")
            && t.status == 200
            && t.scopes
                .iter()
                .any(|s| s.contains("ns/copy") && s.contains("push"))),
        "{tokens:#?}"
    );
    w.env.assert_clean();
}
