//! [`RegistryClient`]: the operations of the distribution API that pulling and pushing images
//! need, over [`Transport`](super::transport).

use std::io::{self, Read};
use std::sync::Arc;

use ureq::http::{Method, Response};

use crate::digest::{Digest, Hasher};
use crate::oci::{DocError, ManifestDoc, media};
use crate::reference::Reference;

use super::challenge::{Challenge, Scope};
use super::config::{ClientOptions, RegistriesConfig};
use super::credentials::Credentials;
use super::error::{Op, RegistryError};
use super::transport::{Call, Endpoint, Payload, Transport, expect_success, header};
use super::verify::VerifyingReader;

/// Manifests larger than this are refused (containers/image's limit): a manifest is read
/// whole into memory.
pub const MANIFEST_LIMIT: u64 = 4 * 1024 * 1024;
/// Blobs up to this size are uploaded in one `PUT`; larger ones are streamed in a `PATCH`.
const MONOLITHIC_LIMIT: u64 = 1024 * 1024;

/// A manifest (or index) as the registry sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The exact bytes: the digest is computed over them, so they are stored as they are.
    pub bytes: Vec<u8>,
    /// The `Content-Type` without parameters, if the registry sent one.
    pub media_type: Option<String>,
    /// The digest of `bytes`: checked against the reference's digest when pulled by digest,
    /// and against `Docker-Content-Digest` when the registry sent one.
    pub digest: Digest,
    /// The registry or mirror that served it.
    pub source: String,
}

impl Fetched {
    /// The document: index or manifest.
    pub fn doc(&self) -> Result<ManifestDoc, DocError> {
        ManifestDoc::parse(&self.bytes, self.media_type.as_deref())
    }
}

/// What [`RegistryClient::push_blob`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The repository had it: nothing sent.
    Existed,
    /// Mounted from another repository of the registry: nothing sent.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// A client for the registries of one command: one configuration, one set of credentials,
/// a connection pool and token cache per host. Cheap to clone; clones share everything, so
/// parallel downloads share tokens and connections.
///
/// Requests are made from the calling thread, so in its network namespace.
#[derive(Clone)]
pub struct RegistryClient {
    transport: Arc<Transport>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("options", &self.transport.options)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    pub fn new(
        config: RegistriesConfig,
        credentials: Credentials,
        options: ClientOptions,
    ) -> RegistryClient {
        RegistryClient {
            transport: Arc::new(Transport::new(config, credentials, options)),
        }
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Contacts `registry` (`host[:port]`, `docker.io`): does it answer the v2 API?
    pub fn ping(&self, registry: &str) -> Result<(), RegistryError> {
        let t = &self.transport;
        let ep = t.registry_endpoint(registry);
        let host = t.host(&ep)?;
        t.probe(&ep, &host, &Op::Ping).map(|_| ())
    }

    /// `berth login`: checks the credentials this client has for `registry` (a token with no
    /// scope, or `GET /v2/` with Basic) before they are stored.
    pub fn check_login(&self, registry: &str) -> Result<(), RegistryError> {
        let t = &self.transport;
        let ep = t.registry_endpoint(registry);
        let host = t.host(&ep)?;
        let probe = t.probe(&ep, &host, &Op::Login)?;
        if t.credentials_for(&ep)?.is_none() {
            return Err(RegistryError::AuthenticationRequired {
                registry: ep.key.clone(),
                repository: String::new(),
                op: Op::Login,
            });
        }
        match &probe.challenge {
            // Nothing asked: any credentials do (docker says "Login Succeeded" too).
            None => Ok(()),
            Some(Challenge::Bearer { .. }) => t
                .authorization(&ep, &host, probe.challenge.as_ref(), &[], &Op::Login)
                .map(|_| ()),
            Some(Challenge::Basic { .. }) => {
                let resp = t.send(&ep, &Op::Login, &[], Call::new(Method::GET, "/v2/"))?;
                expect_success(t, &ep, &Op::Login, resp).map(|_| ())
            }
        }
    }

    /// Fetches the manifest or index `reference` names (its digest if it has one, else its
    /// tag), trying the registry's mirrors first.
    pub fn manifest(&self, reference: &Reference) -> Result<Fetched, RegistryError> {
        let name = reference.manifest_ref();
        let op = Op::Manifest(name.clone());
        self.pull(reference, |ep| {
            let t = &self.transport;
            let call = Call::new(
                Method::GET,
                format!("/v2/{}/manifests/{name}", ep.repository),
            )
            .header("Accept", media::MANIFEST_ACCEPT.join(", "));
            let resp = t.send(ep, &op, &[Scope::pull(&ep.repository).to_string()], call)?;
            let mut resp = expect_success(t, ep, &op, resp)?;
            let media_type = header(&resp, "content-type")
                .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
                .filter(|v| !v.is_empty());
            let announced = header(&resp, "docker-content-digest")
                .and_then(|v| Digest::try_from(v.trim()).ok());
            let bytes = resp
                .body_mut()
                .with_config()
                .limit(MANIFEST_LIMIT)
                .read_to_vec()
                .map_err(|e| match e {
                    ureq::Error::BodyExceedsLimit(_) => RegistryError::ManifestTooLarge {
                        registry: ep.key.clone(),
                        repository: ep.repository.clone(),
                        op: op.clone(),
                        limit: MANIFEST_LIMIT,
                    },
                    e => RegistryError::Read {
                        registry: ep.key.clone(),
                        repository: ep.repository.clone(),
                        op: op.clone(),
                        source: Box::new(e),
                    },
                })?;
            // What the bytes must hash to: the digest asked for, else the one announced.
            let expected = reference.digest().cloned().or(announced);
            let digest = match &expected {
                Some(d) => digest_of(&bytes, d.verifier()),
                None => Digest::sha256_of(&bytes),
            };
            if let Some(expected) = expected {
                if digest != expected {
                    return Err(RegistryError::ManifestDigest {
                        registry: ep.key.clone(),
                        repository: ep.repository.clone(),
                        op: op.clone(),
                        expected: Box::new(expected),
                        actual: Box::new(digest),
                    });
                }
            }
            Ok(Fetched {
                bytes,
                media_type,
                digest,
                source: ep.key.clone(),
            })
        })
    }

    /// The digest of the manifest `reference` names, by `HEAD` (no body); `None` when the
    /// registry does not know it or sends no `Docker-Content-Digest`.
    pub fn manifest_digest(&self, reference: &Reference) -> Result<Option<Digest>, RegistryError> {
        let name = reference.manifest_ref();
        let op = Op::ManifestDigest(name.clone());
        self.pull(reference, |ep| {
            let t = &self.transport;
            let call = Call::new(
                Method::HEAD,
                format!("/v2/{}/manifests/{name}", ep.repository),
            )
            .header("Accept", media::MANIFEST_ACCEPT.join(", "));
            let resp = t.send(ep, &op, &[Scope::pull(&ep.repository).to_string()], call)?;
            if resp.status().as_u16() == 404 {
                return Ok(None);
            }
            let resp = expect_success(t, ep, &op, resp)?;
            Ok(
                header(&resp, "docker-content-digest")
                    .and_then(|v| Digest::try_from(v.trim()).ok()),
            )
        })
    }

    /// Whether the repository of `reference` has the blob `digest` (`HEAD`), and its size.
    /// Asks the registry itself, never a mirror: this is the question a push asks.
    pub fn blob_exists(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let t = &self.transport;
        let ep = t.push_endpoint(reference);
        self.head_blob(&ep, digest, &[Scope::pull(&ep.repository).to_string()])
    }

    fn head_blob(
        &self,
        ep: &Endpoint,
        digest: &Digest,
        scopes: &[String],
    ) -> Result<Option<u64>, RegistryError> {
        let t = &self.transport;
        let op = Op::BlobExists(digest.clone());
        let call = Call::new(
            Method::HEAD,
            format!("/v2/{}/blobs/{digest}", ep.repository),
        );
        let resp = t.send(ep, &op, scopes, call)?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let resp = expect_success(t, ep, &op, resp)?;
        Ok(Some(
            header(&resp, "content-length")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
        ))
    }

    /// A whole small blob (a config), verified against `digest` and at most `limit` bytes.
    pub fn blob_bytes(
        &self,
        reference: &Reference,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let stream = self.blob(reference, digest, 0)?;
        let ep = stream.endpoint().clone();
        let op = Op::Blob(digest.clone());
        if stream.size().is_some_and(|s| s > limit) {
            return Err(RegistryError::Protocol {
                registry: ep.key,
                repository: ep.repository,
                op,
                what: "the blob is larger than a config may be",
            });
        }
        let mut out = Vec::new();
        VerifyingReader::new(stream.take(limit + 1), digest.clone())
            .read_to_end(&mut out)
            .map_err(|source| RegistryError::Verify {
                registry: ep.key,
                repository: ep.repository,
                op,
                source,
            })?;
        Ok(out)
    }

    /// Pushes the blob `digest` of `size` bytes read from `body` to `reference`'s repository,
    /// unless it is there already. With `mount_from` (another repository of the same registry
    /// known to hold it) the registry is asked to mount it instead of receiving it again.
    /// The registry verifies the digest of what it receives.
    pub fn push_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        body: &mut dyn Read,
        mount_from: Option<&Reference>,
    ) -> Result<Pushed, RegistryError> {
        let t = &self.transport;
        let ep = t.push_endpoint(reference);
        let op = Op::PushBlob(digest.clone());
        let mut scopes = vec![Scope::push(&ep.repository).to_string()];
        let mount_from = mount_from
            .filter(|m| m.registry() == reference.registry() && m.repository() != ep.repository);
        if let Some(from) = mount_from {
            scopes.push(Scope::pull(from.repository()).to_string());
        }
        if self.head_blob(&ep, digest, &scopes)?.is_some() {
            return Ok(Pushed::Existed);
        }
        let uploads = format!("/v2/{}/blobs/uploads/", ep.repository);
        let start = match mount_from {
            Some(from) => format!("{uploads}?mount={digest}&from={}", from.repository()),
            None => uploads,
        };
        let resp = t.send(&ep, &op, &scopes, Call::new(Method::POST, start))?;
        if mount_from.is_some() && resp.status().as_u16() == 201 {
            return Ok(Pushed::Mounted);
        }
        // 202 Accepted: an upload session at Location (also when a mount was declined).
        let resp = expect_success(t, &ep, &op, resp)?;
        let mut location = self.location(&ep, &op, &resp)?;

        let put_url = |location: &str| {
            let sep = if location.contains('?') { '&' } else { '?' };
            format!("{location}{sep}digest={digest}")
        };
        let source_err = |source| RegistryError::Source {
            registry: ep.key.clone(),
            repository: ep.repository.clone(),
            op: op.clone(),
            source,
        };
        let resp = if size <= MONOLITHIC_LIMIT {
            // Small: read it and send it in the closing PUT (which can then be retried).
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            body.take(size)
                .read_to_end(&mut bytes)
                .map_err(source_err)?;
            if (bytes.len() as u64) < size {
                return Err(source_err(io::Error::from(io::ErrorKind::UnexpectedEof)));
            }
            let call = Call::new(Method::PUT, put_url(&location))
                .header("Content-Type", "application/octet-stream")
                .payload(Payload::Bytes(&bytes));
            t.send(&ep, &op, &scopes, call)?
        } else {
            let mut limited = body.take(size);
            let call = Call::new(Method::PATCH, location.clone())
                .header("Content-Type", "application/octet-stream")
                .payload(Payload::Stream(&mut limited, size));
            let resp = t.send(&ep, &op, &scopes, call)?;
            let resp = expect_success(t, &ep, &op, resp)?;
            location = self.location(&ep, &op, &resp)?;
            t.send(
                &ep,
                &op,
                &scopes,
                Call::new(Method::PUT, put_url(&location)),
            )?
        };
        expect_success(t, &ep, &op, resp)?;
        Ok(Pushed::Uploaded)
    }

    /// An upload's `Location`, made absolute.
    fn location(
        &self,
        ep: &Endpoint,
        op: &Op,
        resp: &Response<ureq::Body>,
    ) -> Result<String, RegistryError> {
        let loc = header(resp, "location").ok_or_else(|| RegistryError::Protocol {
            registry: ep.key.clone(),
            repository: ep.repository.clone(),
            op: op.clone(),
            what: "the upload answer has no Location",
        })?;
        if loc.starts_with("http://") || loc.starts_with("https://") || loc.starts_with('/') {
            Ok(loc.to_owned())
        } else {
            Ok(format!("/{loc}"))
        }
    }

    /// Pushes a manifest (or index) under `reference`'s tag (or digest); returns its digest.
    /// Its blobs (and, for an index, its manifests) must be there first.
    pub fn put_manifest(
        &self,
        reference: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let t = &self.transport;
        let ep = t.push_endpoint(reference);
        let name = reference.manifest_ref();
        let op = Op::PushManifest(name.clone());
        let call = Call::new(
            Method::PUT,
            format!("/v2/{}/manifests/{name}", ep.repository),
        )
        .header("Content-Type", media_type)
        .payload(Payload::Bytes(bytes));
        let resp = t.send(&ep, &op, &[Scope::push(&ep.repository).to_string()], call)?;
        let resp = expect_success(t, &ep, &op, resp)?;
        let digest = Digest::sha256_of(bytes);
        if let Some(announced) =
            header(&resp, "docker-content-digest").and_then(|v| Digest::try_from(v.trim()).ok())
        {
            let ours = digest_of(bytes, announced.verifier());
            if ours != announced {
                return Err(RegistryError::ManifestDigest {
                    registry: ep.key.clone(),
                    repository: ep.repository.clone(),
                    op,
                    expected: Box::new(ours),
                    actual: Box::new(announced),
                });
            }
        }
        Ok(digest)
    }

    /// The tags of `reference`'s repository, all pages of them.
    pub fn tags(&self, reference: &Reference) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let op = Op::Tags;
        self.pull(reference, |ep| {
            let t = &self.transport;
            let scopes = [Scope::pull(&ep.repository).to_string()];
            let mut out = Vec::new();
            let mut next = Some(format!("/v2/{}/tags/list", ep.repository));
            while let Some(target) = next.take() {
                let resp = t.send(ep, &op, &scopes, Call::new(Method::GET, target))?;
                let mut resp = expect_success(t, ep, &op, resp)?;
                // `Link: </v2/x/tags/list?last=a&n=100>; rel="next"`
                next = header(&resp, "link").and_then(|l| {
                    let (url, rel) = l.split_once(';')?;
                    rel.contains("next").then(|| {
                        url.trim()
                            .trim_start_matches('<')
                            .trim_end_matches('>')
                            .to_owned()
                    })
                });
                let read_err = |source| RegistryError::Read {
                    registry: ep.key.clone(),
                    repository: ep.repository.clone(),
                    op: op.clone(),
                    source: Box::new(source),
                };
                let bytes = resp
                    .body_mut()
                    .with_config()
                    .limit(MANIFEST_LIMIT)
                    .read_to_vec()
                    .map_err(read_err)?;
                let list: TagList =
                    serde_json::from_slice(&bytes).map_err(|_| RegistryError::Protocol {
                        registry: ep.key.clone(),
                        repository: ep.repository.clone(),
                        op: op.clone(),
                        what: "the tag list is not JSON",
                    })?;
                out.extend(list.tags.unwrap_or_default());
            }
            Ok(out)
        })
    }

    /// Runs `f` against the mirrors of `reference`'s registry in order, then the registry: the
    /// first success wins. A mirror that cannot be reached is not tried again by this client.
    /// When all fail, the registry's own error is returned.
    pub(super) fn pull<T>(
        &self,
        reference: &Reference,
        f: impl Fn(&Endpoint) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let t = &self.transport;
        let endpoints = t.pull_endpoints(reference);
        let mut last = None;
        for ep in &endpoints {
            if ep.mirror && t.is_down(ep) {
                continue;
            }
            match f(ep) {
                Ok(v) => return Ok(v),
                Err(e) if ep.mirror => {
                    if e.is_unreachable() {
                        t.mark_down(ep);
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        // Only mirrors were tried: pull_endpoints always ends with the registry, so this is
        // reached only if that list were empty.
        Err(last.unwrap_or_else(|| RegistryError::Protocol {
            registry: reference.registry().to_owned(),
            repository: reference.repository().to_owned(),
            op: Op::Manifest(reference.manifest_ref()),
            what: "no endpoint to try",
        }))
    }
}

fn digest_of(bytes: &[u8], mut hasher: Hasher) -> Digest {
    hasher.update(bytes);
    hasher.finish()
}
