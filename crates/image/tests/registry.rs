//! The registry client against real registries: Debian's `docker-registry` (distribution
//! 2.8) in throwaway namespaces, plain, TLS with users, with bearer tokens, as a mirror, and
//! behind a proxy that throttles, cuts and answers 429. Root; packages docker-registry,
//! openssl and skopeo.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_image::oci::media;
use berth_image::registry::{
    ClientOptions, Credentials, Pushed, RegistriesConfig, RegistryClient, RegistryEntry,
    RegistryError, VerifyError, VerifyingReader,
};
use berth_image::{Digest, Reference};
use netns_fixtures::{TestNetns, TestRegistry, Throttle, require_root};

fn options() -> ClientOptions {
    ClientOptions {
        retries: 0,
        retry_delay: Duration::from_millis(100),
        ..ClientOptions::default()
    }
}

fn anonymous(config: RegistriesConfig) -> RegistryClient {
    RegistryClient::new(config, Credentials::anonymous(), options())
}

fn with_creds(config: RegistriesConfig, creds: &str) -> RegistryClient {
    let creds = Credentials::anonymous().with_creds(creds).unwrap();
    RegistryClient::new(config, creds, options())
}

fn certs_d(registry: &TestRegistry) -> RegistriesConfig {
    RegistriesConfig {
        certs_d: vec![registry.certs_d().unwrap()],
        ..RegistriesConfig::empty()
    }
}

fn reference(host: &str, path: &str) -> Reference {
    Reference::parse(&format!("{host}/{path}")).unwrap()
}

/// Deterministic bytes that do not compress (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A small but valid image: one gzip layer holding `/hello`, its config, an OCI manifest.
struct TestImage {
    layer: Vec<u8>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

impl TestImage {
    fn new(text: &str) -> TestImage {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "hello", text.as_bytes())
            .unwrap();
        let tar = tar.into_inner().unwrap();
        let diff_id = Digest::sha256_of(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let layer = gz.finish().unwrap();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {
                "mediaType": media::OCI_CONFIG,
                "digest": Digest::sha256_of(&config).to_string(),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": media::OCI_LAYER_GZIP,
                "digest": Digest::sha256_of(&layer).to_string(),
                "size": layer.len(),
            }],
        }))
        .unwrap();
        TestImage {
            layer,
            config,
            manifest,
        }
    }

    fn push(&self, client: &RegistryClient, r: &Reference) -> Result<Digest, RegistryError> {
        for blob in [&self.layer, &self.config] {
            client.push_blob(
                r,
                &Digest::sha256_of(blob),
                blob.len() as u64,
                &mut &blob[..],
                None,
            )?;
        }
        client.put_manifest(r, &self.manifest, media::OCI_MANIFEST)
    }
}

fn read_all(mut r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn push_and_pull_against_a_plain_registry() {
    require_root();
    let ns = TestNetns::with_tag("rg").unwrap();
    let registry = TestRegistry::plain(&ns).unwrap();
    let host = registry.host();
    let client = anonymous(RegistriesConfig::empty());
    let app = reference(&host, "ns/app:1");
    let image = TestImage::new("hello from the registry\n");
    let big = noise(3 * 1024 * 1024 + 17, 7);
    let big_digest = Digest::sha256_of(&big);

    ns.run(|| {
        // Loopback registries may be plain http (docker's rule): no configuration needed.
        client.ping(&host).unwrap();
        let digest = image.push(&client, &app).unwrap();
        assert_eq!(digest, Digest::sha256_of(&image.manifest));
        // Large blobs go as a streamed PATCH.
        assert_eq!(
            client
                .push_blob(&app, &big_digest, big.len() as u64, &mut &big[..], None)
                .unwrap(),
            Pushed::Uploaded
        );
        // Pushing again sends nothing; another repository mounts it.
        let layer_digest = Digest::sha256_of(&image.layer);
        assert_eq!(
            client
                .push_blob(
                    &app,
                    &layer_digest,
                    image.layer.len() as u64,
                    &mut &image.layer[..],
                    None
                )
                .unwrap(),
            Pushed::Existed
        );
        let other = reference(&host, "other/app:1");
        assert_eq!(
            client
                .push_blob(&other, &layer_digest, 0, &mut std::io::empty(), Some(&app))
                .unwrap(),
            Pushed::Mounted
        );
        assert_eq!(
            client.blob_exists(&other, &layer_digest).unwrap(),
            Some(image.layer.len() as u64)
        );
        assert_eq!(client.blob_exists(&other, &big_digest).unwrap(), None);

        // The manifest by tag and by digest: same bytes, digest verified.
        let by_tag = client.manifest(&app).unwrap();
        assert_eq!(by_tag.bytes, image.manifest);
        assert_eq!(by_tag.media_type.as_deref(), Some(media::OCI_MANIFEST));
        assert_eq!(by_tag.digest, digest);
        assert_eq!(by_tag.source, host);
        let by_digest = client.manifest(&app.with_digest(digest.clone())).unwrap();
        assert_eq!(by_digest.bytes, image.manifest);
        assert!(matches!(
            by_digest.doc().unwrap(),
            berth_image::oci::ManifestDoc::Manifest(_)
        ));
        assert_eq!(client.manifest_digest(&app).unwrap(), Some(digest.clone()));
        let missing = client
            .manifest(&reference(&host, "ns/app:nope"))
            .unwrap_err();
        assert!(
            matches!(missing, RegistryError::ManifestNotFound { .. }),
            "{missing}"
        );
        assert!(
            missing.to_string().contains(&format!("{host}/ns/app")),
            "{missing}"
        );
        assert_eq!(client.tags(&app).unwrap(), ["1"]);

        // The config, whole and verified.
        let config_digest = Digest::sha256_of(&image.config);
        assert_eq!(
            client.blob_bytes(&app, &config_digest, 1 << 20).unwrap(),
            image.config
        );

        // A blob streamed whole, then from an offset: 206, and the same bytes.
        let whole = client.blob(&app, &big_digest, 0).unwrap();
        assert_eq!((whole.start(), whole.size()), (0, Some(big.len() as u64)));
        let bytes = read_all(VerifyingReader::new(whole, big_digest.clone())).unwrap();
        assert_eq!(bytes, big);
        let offset = 1_000_003;
        let rest = client.blob(&app, &big_digest, offset).unwrap();
        assert_eq!(
            (rest.start(), rest.size()),
            (offset, Some(big.len() as u64))
        );
        let tail = read_all(rest).unwrap();
        assert_eq!(tail, &big[offset as usize..]);
        // Resuming verification from a hashed prefix.
        let mut hasher = big_digest.verifier();
        hasher.update(&big[..offset as usize]);
        let rest = client.blob(&app, &big_digest, offset).unwrap();
        read_all(VerifyingReader::continuing(
            rest,
            big_digest.clone(),
            hasher,
            offset,
        ))
        .unwrap();
        let unknown = client
            .blob(&app, &Digest::sha256_of(b"nope"), 0)
            .unwrap_err();
        assert!(
            matches!(unknown, RegistryError::BlobNotFound { .. }),
            "{unknown}"
        );
    })
    .unwrap();
    assert!(
        registry.log().contains("\" 206 "),
        "no Range answer in the log"
    );

    // skopeo reads what Berth pushed.
    let out = ns
        .output(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{host}/ns/app:1"),
        ]))
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        inspected["Digest"],
        Digest::sha256_of(&image.manifest).to_string()
    );
}

#[test]
fn a_corrupted_blob_is_refused_naming_its_digest() {
    require_root();
    let ns = TestNetns::with_tag("rg").unwrap();
    let registry = TestRegistry::plain(&ns).unwrap();
    let client = anonymous(RegistriesConfig::empty());
    let app = reference(&registry.host(), "ns/app:1");
    let image = TestImage::new("soon corrupted\n");
    ns.run(|| image.push(&client, &app).unwrap()).unwrap();

    // Flip bytes of the layer and the config in the registry's storage (same length).
    for blob in [&image.layer, &image.config] {
        let digest = Digest::sha256_of(blob);
        let path = registry.blob_data(&digest.to_string());
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&path, bytes).unwrap();
    }
    let layer = Digest::sha256_of(&image.layer);
    ns.run(|| {
        let stream = client.blob(&app, &layer, 0).unwrap();
        let err = read_all(VerifyingReader::new(stream, layer.clone())).unwrap_err();
        assert!(
            matches!(VerifyError::of(&err), Some(VerifyError::Mismatch { expected, .. }) if *expected == layer),
            "{err}"
        );
        assert!(err.to_string().contains(&layer.to_string()), "{err}");
        let config = Digest::sha256_of(&image.config);
        let err = client.blob_bytes(&app, &config, 1 << 20).unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains(&config.to_string()), "{chain}");
    })
    .unwrap();
}

#[test]
fn tls_and_basic_auth() {
    require_root();
    let ns = TestNetns::with_tag("rg").unwrap();
    let registry = TestRegistry::builder(&ns)
        .tls()
        .htpasswd()
        .user("alice", "wonderland")
        .start()
        .unwrap();
    let host = registry.host();
    let app = reference(&host, "ns/app:1");
    let image = TestImage::new("over TLS\n");
    ns.run(|| {
        // The CA from certs.d/<host:port>/ca.crt.
        let alice = with_creds(certs_d(&registry), "alice:wonderland");
        alice.check_login(&host).unwrap();
        image.push(&alice, &app).unwrap();
        assert_eq!(alice.manifest(&app).unwrap().bytes, image.manifest);

        // The wrong password.
        let mallory = with_creds(certs_d(&registry), "alice:guess");
        let err = mallory.check_login(&host).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("authentication failed for {host}")),
            "{err}"
        );
        let err = mallory.manifest(&app).unwrap_err();
        assert!(
            matches!(err, RegistryError::AuthenticationFailed { .. }),
            "{err}"
        );
        // No credentials at all.
        let err = anonymous(certs_d(&registry)).manifest(&app).unwrap_err();
        assert!(
            matches!(err, RegistryError::AuthenticationRequired { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("berth login"), "{err}");

        // Without the CA the certificate is refused...
        let creds = Credentials::anonymous()
            .with_creds("alice:wonderland")
            .unwrap();
        let unknown_ca = RegistryClient::new(RegistriesConfig::empty(), creds.clone(), options());
        let err = unknown_ca.ping(&host).unwrap_err();
        assert!(matches!(err, RegistryError::Certificate { .. }), "{err}");
        assert!(err.to_string().contains("--tls-verify=false"), "{err}");
        // ...unless --tls-verify=false,
        let unverified = RegistryClient::new(
            RegistriesConfig::empty(),
            creds.clone(),
            ClientOptions {
                tls_verify: false,
                ..options()
            },
        );
        assert_eq!(unverified.manifest(&app).unwrap().bytes, image.manifest);
        // or --cert-dir names a directory with the CA.
        let cert_dir = RegistryClient::new(
            RegistriesConfig::empty(),
            creds.clone(),
            ClientOptions {
                cert_dir: registry.cert_dir(),
                ..options()
            },
        );
        assert_eq!(cert_dir.manifest(&app).unwrap().bytes, image.manifest);
        // or registries.toml names a CA directory for it.
        let config = RegistriesConfig {
            registries: vec![RegistryEntry {
                name: host.clone(),
                mirrors: Vec::new(),
                insecure: false,
                ca_dirs: vec![registry.cert_dir().unwrap()],
            }],
            ..RegistriesConfig::empty()
        };
        let ca_dirs = RegistryClient::new(config, creds, options());
        assert_eq!(ca_dirs.manifest(&app).unwrap().bytes, image.manifest);
    })
    .unwrap();
}

#[test]
fn bearer_tokens() {
    require_root();
    let ns = TestNetns::with_tag("rg").unwrap();
    let registry = TestRegistry::builder(&ns)
        .token_auth()
        .user("bob", "builder")
        .refresh_token("bobs-refresh-token", "bob")
        .start()
        .unwrap();
    let tokens = registry.token_server().unwrap();
    let host = registry.host();
    let app = reference(&host, "ns/app:1");
    let image = TestImage::new("behind tokens\n");
    ns.run(|| {
        let bob = with_creds(RegistriesConfig::empty(), "bob:builder");
        bob.check_login(&host).unwrap();
        image.push(&bob, &app).unwrap();
        let pushes = tokens.requests();
        assert!(
            pushes
                .iter()
                .any(|r| r.status == 200 && r.scopes == ["repository:ns/app:pull,push"]),
            "{pushes:?}"
        );
        // Pulls reuse one pull token per scope: several requests, one token.
        let before = tokens.requests().len();
        for _ in 0..3 {
            assert_eq!(bob.manifest(&app).unwrap().bytes, image.manifest);
        }
        let layer = Digest::sha256_of(&image.layer);
        read_all(VerifyingReader::new(
            bob.blob(&app, &layer, 0).unwrap(),
            layer.clone(),
        ))
        .unwrap();
        let after = tokens.requests();
        assert_eq!(after.len(), before + 1, "{after:?}");
        assert_eq!(after[before].scopes, ["repository:ns/app:pull"]);
        assert_eq!(after[before].user.as_deref(), Some("bob"));

        // A token the registry refuses midway (expired): one 401, a new token, success.
        tokens.issue_expired(1);
        let fresh = with_creds(RegistriesConfig::empty(), "bob:builder");
        assert_eq!(fresh.manifest(&app).unwrap().bytes, image.manifest);
        let refreshed = tokens.requests();
        assert_eq!(refreshed.len(), after.len() + 2, "{refreshed:?}");

        // The wrong password: the token server's 401 becomes an authentication error.
        let err = with_creds(RegistriesConfig::empty(), "bob:wrong")
            .manifest(&app)
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::AuthenticationFailed { .. }),
            "{err}"
        );
        assert!(
            err.to_string().starts_with(&format!(
                "authentication failed for {host}: incorrect username or password"
            )),
            "{err}"
        );
        // Anonymous: the token grants nothing, the registry says authentication required.
        let err = anonymous(RegistriesConfig::empty())
            .manifest(&app)
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::AuthenticationRequired { .. }),
            "{err}"
        );
    })
    .unwrap();

    // An identity token (OAuth2 refresh token) from an auth file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.json");
    fs::write(
        &file,
        serde_json::json!({"auths": {host.as_str(): {"identitytoken": "bobs-refresh-token"}}})
            .to_string(),
    )
    .unwrap();
    let client = RegistryClient::new(
        RegistriesConfig::empty(),
        Credentials::anonymous().with_authfile(&file),
        options(),
    );
    ns.run(|| assert_eq!(client.manifest(&app).unwrap().bytes, image.manifest))
        .unwrap();
}

#[test]
fn credentials_from_docker_config_and_a_helper() {
    require_root();
    let ns = TestNetns::with_tag("rg").unwrap();
    let registry = TestRegistry::builder(&ns)
        .tls()
        .htpasswd()
        .user("carol", "secret")
        .start()
        .unwrap();
    let host = registry.host();
    let app = reference(&host, "ns/app:1");
    let image = TestImage::new("credentials\n");
    ns.run(|| {
        image
            .push(&with_creds(certs_d(&registry), "carol:secret"), &app)
            .unwrap()
    })
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    // $DOCKER_CONFIG/config.json with `auths`.
    let docker = dir.path().join("docker");
    fs::create_dir(&docker).unwrap();
    let auth = base64_encode("carol:secret");
    fs::write(
        docker.join("config.json"),
        serde_json::json!({"auths": {format!("https://{host}/v1/"): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let env = |extra: &[(&str, &Path)]| {
        let vars: Vec<(String, std::ffi::OsString)> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_os_str().to_owned()))
            .chain([
                ("HOME".to_owned(), dir.path().join("home").into_os_string()),
                (
                    "XDG_RUNTIME_DIR".to_owned(),
                    dir.path().join("run").into_os_string(),
                ),
            ])
            .collect();
        move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    };
    let from_config = Credentials::from_env(env(&[("DOCKER_CONFIG", &docker)]));
    let client = RegistryClient::new(certs_d(&registry), from_config, options());
    ns.run(|| assert_eq!(client.manifest(&app).unwrap().bytes, image.manifest))
        .unwrap();

    // A credential helper on PATH, named by credHelpers.
    let helper_dir = dir.path().join("bin");
    fs::create_dir(&helper_dir).unwrap();
    let helper = helper_dir.join("docker-credential-test");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n\
             if [ \"$server\" = \"{host}\" ]; then\n\
             echo '{{\"ServerURL\":\"{host}\",\"Username\":\"carol\",\"Secret\":\"secret\"}}'\n\
             else echo 'credentials not found in native keychain'; exit 1; fi\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    let helped = dir.path().join("helped");
    fs::create_dir(&helped).unwrap();
    fs::write(
        helped.join("config.json"),
        serde_json::json!({"credHelpers": {host.as_str(): "test"}}).to_string(),
    )
    .unwrap();
    let from_helper =
        Credentials::from_env(env(&[("DOCKER_CONFIG", &helped), ("PATH", &helper_dir)]));
    let client = RegistryClient::new(certs_d(&registry), from_helper, options());
    ns.run(|| assert_eq!(client.manifest(&app).unwrap().bytes, image.manifest))
        .unwrap();
    // credsStore: the same helper for every registry; its "not found" for another registry
    // is no credentials, not an error.
    let store = dir.path().join("store");
    fs::create_dir(&store).unwrap();
    fs::write(
        store.join("config.json"),
        serde_json::json!({"credsStore": "test"}).to_string(),
    )
    .unwrap();
    let from_store =
        Credentials::from_env(env(&[("DOCKER_CONFIG", &store), ("PATH", &helper_dir)]));
    assert_eq!(from_store.lookup("other.example", "x").unwrap(), None);
    let client = RegistryClient::new(certs_d(&registry), from_store, options());
    ns.run(|| assert_eq!(client.manifest(&app).unwrap().bytes, image.manifest))
        .unwrap();
    // A helper that is not on PATH is an error naming it.
    let missing = Credentials::from_env(env(&[("DOCKER_CONFIG", &store)]));
    let err = missing.lookup(&host, "ns/app").unwrap_err();
    assert!(err.to_string().contains("docker-credential-test"), "{err}");
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn mirrors_first_then_the_registry() {
    require_root();
    let ns = TestNetns::with_tag("rg").unwrap();
    let upstream = TestRegistry::plain(&ns).unwrap();
    let mirror = TestRegistry::builder(&ns)
        .mirror_of(&upstream)
        .start()
        .unwrap();
    let app = reference(&upstream.host(), "ns/app:1");
    let image = TestImage::new("mirrored\n");
    ns.run(|| {
        image
            .push(&anonymous(RegistriesConfig::empty()), &app)
            .unwrap()
    })
    .unwrap();

    let mirrored = |mirrors: Vec<String>| RegistriesConfig {
        registries: vec![RegistryEntry {
            name: upstream.host(),
            mirrors,
            insecure: false,
            ca_dirs: Vec::new(),
        }],
        ..RegistriesConfig::empty()
    };
    // A port nobody listens on: a mirror that is down.
    let dead = {
        let l = ns
            .run(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .unwrap();
        l.local_addr().unwrap().to_string()
    };
    ns.run(|| {
        let client = anonymous(mirrored(vec![mirror.host()]));
        let fetched = client.manifest(&app).unwrap();
        assert_eq!(
            (fetched.bytes.as_slice(), fetched.source.as_str()),
            (image.manifest.as_slice(), mirror.host().as_str())
        );
        let layer = Digest::sha256_of(&image.layer);
        let stream = client.blob(&app, &layer, 0).unwrap();
        assert_eq!(stream.source(), mirror.host());
        read_all(VerifyingReader::new(stream, layer)).unwrap();

        // Mirror down (and one unknown to the mirror list's order): the registry serves.
        let client = anonymous(mirrored(vec![dead.clone(), mirror.host()]));
        assert_eq!(client.manifest(&app).unwrap().source, mirror.host());
        let client = anonymous(mirrored(vec![dead.clone()]));
        let t = Instant::now();
        assert_eq!(client.manifest(&app).unwrap().source, upstream.host());
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    })
    .unwrap();
    assert!(mirror.log().contains("/v2/ns/app/manifests/1"));
}

#[test]
fn throttled_registries_say_when_to_retry() {
    require_root();
    let ns = TestNetns::with_tag("rg").unwrap();
    let registry = TestRegistry::plain(&ns).unwrap();
    let proxy = Throttle::start(&ns, registry.addr()).unwrap();
    let host = proxy.host();
    let app = reference(&host, "ns/app:1");
    let image = TestImage::new("throttled\n");
    ns.run(|| {
        image
            .push(&anonymous(RegistriesConfig::empty()), &app)
            .unwrap()
    })
    .unwrap();

    ns.run(|| {
        // No retries: the error names the registry and when to retry.
        proxy.answer_429(1, Some(2));
        let err = anonymous(RegistriesConfig::empty()).manifest(&app).unwrap_err();
        assert!(
            matches!(err, RegistryError::Throttled { status: 429, retry_after: Some(d), .. } if d == Duration::from_secs(2)),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(&host) && text.contains("retry in 2 s"), "{text}");

        // With --retry the client waits as asked and succeeds.
        proxy.answer_429(1, Some(1));
        let patient = RegistryClient::new(
            RegistriesConfig::empty(),
            Credentials::anonymous(),
            ClientOptions {
                retries: 2,
                ..options()
            },
        );
        let t = Instant::now();
        assert_eq!(patient.manifest(&app).unwrap().bytes, image.manifest);
        assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());

        // A Retry-After longer than the client waits for: an error at once.
        proxy.answer_429(1, Some(3600));
        let t = Instant::now();
        let fresh = RegistryClient::new(
            RegistriesConfig::empty(),
            Credentials::anonymous(),
            ClientOptions {
                retries: 2,
                ..options()
            },
        );
        let err = fresh.manifest(&app).unwrap_err();
        assert!(err.to_string().contains("retry in 3600 s"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
    })
    .unwrap();
    assert_eq!(proxy.answered_429(), 3);
}

#[test]
fn a_cut_download_resumes_with_a_range_request() {
    require_root();
    let ns = TestNetns::with_tag("rg").unwrap();
    let registry = TestRegistry::plain(&ns).unwrap();
    let proxy = Throttle::start(&ns, registry.addr()).unwrap();
    let app = reference(&proxy.host(), "ns/big:1");
    let blob = noise(2 * 1024 * 1024, 3);
    let digest = Digest::sha256_of(&blob);
    let client = RegistryClient::new(
        RegistriesConfig::empty(),
        Credentials::anonymous(),
        ClientOptions {
            retries: 2,
            ..options()
        },
    );
    ns.run(|| {
        client
            .push_blob(&app, &digest, blob.len() as u64, &mut &blob[..], None)
            .unwrap();
        // Slow enough to read part of it, then the connection is cut.
        proxy.set_rate(4 * 1024 * 1024);
        let stream = client.blob(&app, &digest, 0).unwrap();
        proxy.cut_after(700 * 1024);
        let mut reader = VerifyingReader::new(stream, digest.clone());
        let bytes = read_all(&mut reader).unwrap();
        assert_eq!(bytes, blob);
        assert_eq!(reader.into_inner().reopened(), 1);
    })
    .unwrap();
    let log = registry.log();
    assert!(
        log.contains("\" 206 "),
        "no Range request in the log:\n{log}"
    );
}
