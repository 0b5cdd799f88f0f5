//! Talking HTTP to registries: which hosts serve a reference (mirrors, then the registry),
//! how each is reached (https, or http where allowed; its CAs), the first contact that learns
//! the scheme and the auth challenge, and one request with its retries and re-authentication.
//!
//! Sockets are opened by the calling thread, so in the calling thread's network namespace.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use ureq::http::{self, Method, Response};
use ureq::tls::{Certificate, ClientCert, PemItem, RootCerts, TlsConfig};
use ureq::{Agent, SendBody};

use crate::reference::Reference;

use super::challenge::Challenge;
use super::config::{ClientOptions, RegistriesConfig, split_location};
use super::credentials::{AuthEntry, Credentials};
use super::error::{Op, RegistryError, transient_status, transient_transport};
use super::retry::{backoff, parse_retry_after};
use super::tokens::Tokens;

/// Where the system's CA bundle is on Debian and its derivatives; custom CAs are added to it.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Error bodies are read up to this size for their message.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// One place a repository can be read from: a mirror or the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// The name used for settings, credentials and messages: `docker.io`, `127.0.0.1:5001`.
    pub key: String,
    /// Where to connect: `registry-1.docker.io` for Docker Hub, else the key.
    pub host: String,
    /// The repository on this endpoint (a mirror's path prefix applied).
    pub repository: String,
    pub mirror: bool,
}

/// A request body. A stream can be sent once only, so a request carrying one is not retried.
pub(crate) enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
    Stream(&'a mut dyn Read, u64),
}

/// A request to send: a path under the endpoint's base (`/v2/…`) or an absolute URL (an
/// upload `Location`).
pub(crate) struct Call<'a> {
    pub method: Method,
    pub target: String,
    pub headers: Vec<(&'static str, String)>,
    pub payload: Payload<'a>,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, target: impl Into<String>) -> Call<'a> {
        Call {
            method,
            target: target.into(),
            headers: Vec::new(),
            payload: Payload::None,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Call<'a> {
        self.headers.push((name, value.into()));
        self
    }

    pub fn payload(mut self, payload: Payload<'a>) -> Call<'a> {
        self.payload = payload;
        self
    }
}

/// What the first contact with a host learned.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// `https://host` or `http://host`.
    pub base: String,
    pub challenge: Option<Challenge>,
}

#[derive(Debug, Default)]
struct HostState {
    probe: Option<Probe>,
    /// A mirror that could not be reached is not tried again by this client.
    down: bool,
}

/// A host and how to reach it. One agent per host: its connection pool and its TLS settings.
pub(crate) struct Host {
    pub agent: Agent,
    allow_http: bool,
    state: Mutex<HostState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere leaves plain data behind: keep using it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything a client shares between threads.
pub(crate) struct Transport {
    pub config: RegistriesConfig,
    pub credentials: Credentials,
    pub options: ClientOptions,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    creds: Mutex<HashMap<(String, String), Option<AuthEntry>>>,
    pub tokens: Tokens,
}

impl Transport {
    pub fn new(
        config: RegistriesConfig,
        credentials: Credentials,
        options: ClientOptions,
    ) -> Transport {
        Transport {
            config,
            credentials,
            options,
            hosts: Mutex::new(HashMap::new()),
            creds: Mutex::new(HashMap::new()),
            tokens: Tokens::default(),
        }
    }

    /// Where to pull `reference` from: its registry's mirrors in order, then the registry.
    pub fn pull_endpoints(&self, reference: &Reference) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if let Some(entry) = self.config.entry(reference.registry()) {
            for mirror in &entry.mirrors {
                // INVARIANT-free: validated when the config was parsed; skip if not.
                let Some((host, prefix)) = split_location(mirror) else {
                    continue;
                };
                let repository = match prefix {
                    Some(p) => format!("{p}/{}", reference.repository()),
                    None => reference.repository().to_owned(),
                };
                out.push(Endpoint {
                    key: host.clone(),
                    host,
                    repository,
                    mirror: true,
                });
            }
        }
        out.push(self.push_endpoint(reference));
        out
    }

    /// Where to push `reference`: the registry itself.
    pub fn push_endpoint(&self, reference: &Reference) -> Endpoint {
        Endpoint {
            key: reference.registry().to_owned(),
            host: reference.api_host().to_owned(),
            repository: reference.repository().to_owned(),
            mirror: false,
        }
    }

    /// An endpoint for the registry `registry` itself, with no repository (ping, login).
    pub fn registry_endpoint(&self, registry: &str) -> Endpoint {
        let host = if registry == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        Endpoint {
            key: registry.to_owned(),
            host: host.to_owned(),
            repository: String::new(),
            mirror: false,
        }
    }

    pub fn is_down(&self, ep: &Endpoint) -> bool {
        // Not under the hosts lock: the state lock may be held through a slow first contact.
        let host = lock(&self.hosts).get(&ep.host).cloned();
        host.is_some_and(|h| lock(&h.state).down)
    }

    pub fn mark_down(&self, ep: &Endpoint) {
        let host = lock(&self.hosts).get(&ep.host).cloned();
        if let Some(h) = host {
            lock(&h.state).down = true;
        }
    }

    /// The credentials for `ep`, looked up once per client (helpers are processes).
    pub fn credentials_for(&self, ep: &Endpoint) -> Result<Option<AuthEntry>, RegistryError> {
        let key = (ep.key.clone(), ep.repository.clone());
        if let Some(found) = lock(&self.creds).get(&key) {
            return Ok(found.clone());
        }
        let found = self
            .credentials
            .lookup(&ep.key, &ep.repository)
            .map_err(|source| RegistryError::Credentials {
                registry: ep.key.clone(),
                source,
            })?;
        lock(&self.creds).insert(key, found.clone());
        Ok(found)
    }

    /// The host of `ep`, built on first use.
    pub fn host(&self, ep: &Endpoint) -> Result<Arc<Host>, RegistryError> {
        if let Some(h) = lock(&self.hosts).get(&ep.host) {
            return Ok(h.clone());
        }
        let host = Arc::new(self.build_host(ep)?);
        Ok(lock(&self.hosts)
            .entry(ep.host.clone())
            .or_insert(host)
            .clone())
    }

    fn build_host(&self, ep: &Endpoint) -> Result<Host, RegistryError> {
        let entry = self.config.entry(&ep.key);
        let insecure = entry.is_some_and(|e| e.insecure);
        let verify = self.options.tls_verify && !insecure;
        // docker's rule: a registry on the loopback may be plain http; others only when
        // marked insecure or with --tls-verify=false.
        let allow_http = !verify || is_loopback(&ep.host);

        let mut dirs: Vec<PathBuf> = Vec::new();
        match &self.options.cert_dir {
            Some(dir) => dirs.push(dir.clone()),
            None => {
                for root in &self.config.certs_d {
                    dirs.push(root.join(&ep.host));
                    if ep.key != ep.host {
                        dirs.push(root.join(&ep.key));
                    }
                }
                if let Some(e) = entry {
                    dirs.extend(e.ca_dirs.iter().cloned());
                }
            }
        }
        let material = CertMaterial::load(&dirs, &ep.key)?;
        let mut tls = TlsConfig::builder().disable_verification(!verify);
        if !material.cas.is_empty() {
            // Custom CAs come on top of the system's, as with docker's certs.d.
            let mut roots = system_roots();
            roots.extend(material.cas);
            tls = tls.root_certs(RootCerts::from(roots));
        }
        if let Some(client) = material.client {
            tls = tls.client_cert(Some(client));
        }
        let opts = &self.options;
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(opts.user_agent.as_str())
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_per_read(Some(opts.read_timeout))
            .timeout_per_write(Some(opts.read_timeout))
            .max_redirects(10)
            .tls_config(tls.build())
            .build()
            .into();
        Ok(Host {
            agent,
            allow_http,
            state: Mutex::new(HostState::default()),
        })
    }

    /// The first contact with a host, once per client: `GET /v2/` over https, then over http
    /// where allowed. It tells which scheme works and how the registry wants to be
    /// authenticated (a 401 and its challenge).
    pub fn probe(&self, ep: &Endpoint, host: &Host, op: &Op) -> Result<Probe, RegistryError> {
        let mut state = lock(&host.state);
        if let Some(p) = &state.probe {
            return Ok(p.clone());
        }
        let https = format!("https://{}", ep.host);
        let first = self.ping(ep, host, &https, op);
        let result = match first {
            Err(e) if e.is_unreachable() && host.allow_http => {
                let http = format!("http://{}", ep.host);
                match self.ping(ep, host, &http, op) {
                    Ok(p) => Ok(p),
                    // A registry on http asking to slow down: that is the news.
                    Err(http_err @ RegistryError::Throttled { .. }) => Err(http_err),
                    // Otherwise the https error says more: a TLS registry answers plain http
                    // with a 400, and its certificate is the problem.
                    Err(_) => Err(e),
                }
            }
            other => other,
        };
        let probe = result?;
        state.probe = Some(probe.clone());
        Ok(probe)
    }

    fn ping(
        &self,
        ep: &Endpoint,
        host: &Host,
        base: &str,
        op: &Op,
    ) -> Result<Probe, RegistryError> {
        let url = format!("{base}/v2/");
        // Reaching a mirror is not retried: the next endpoint is the better bet. Neither is
        // https where plain http is allowed: a plain registry answers a TLS hello with an
        // http 400 (no retry changes that), and http is tried next, with retries.
        let https_before_http = host.allow_http && base.starts_with("https://");
        let tries = if ep.mirror || https_before_http {
            0
        } else {
            self.options.retries
        };
        let mut attempt = 0;
        loop {
            let req = http::Request::get(&url)
                .body(SendBody::none())
                .map_err(|e| self.transport_err(ep, op, &url, ureq::Error::Http(e)))?;
            let resp = match host.agent.run(req) {
                Ok(r) => r,
                Err(e) if attempt < tries && transient_transport(&e) => {
                    std::thread::sleep(backoff(self.options.retry_delay, attempt));
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(self.transport_err(ep, op, &url, e)),
            };
            let status = resp.status().as_u16();
            match status {
                200..=299 => {
                    return Ok(Probe {
                        base: base.to_owned(),
                        challenge: None,
                    });
                }
                401 => {
                    return Ok(Probe {
                        base: base.to_owned(),
                        challenge: challenge_of(&resp),
                    });
                }
                s if transient_status(s) && attempt < tries && !self.too_long(&resp) => {
                    std::thread::sleep(self.delay(&resp, attempt));
                    attempt += 1;
                }
                429 | 503 => return Err(self.throttled(ep, op, &resp)),
                _ => {
                    return Err(RegistryError::NotARegistry {
                        registry: ep.key.clone(),
                        url,
                        status,
                    });
                }
            }
        }
    }

    /// The registry asks for a longer wait than the client waits out by itself.
    fn too_long(&self, resp: &Response<ureq::Body>) -> bool {
        retry_after(resp).is_some_and(|d| d > self.options.max_retry_after)
    }

    /// How long to wait before retry `attempt`: what the registry asked for, else backoff.
    fn delay(&self, resp: &Response<ureq::Body>, attempt: u32) -> std::time::Duration {
        retry_after(resp).unwrap_or_else(|| backoff(self.options.retry_delay, attempt))
    }

    pub fn transport_err(
        &self,
        ep: &Endpoint,
        op: &Op,
        url: &str,
        e: ureq::Error,
    ) -> RegistryError {
        // rustls's verdict reaches here wrapped in an io::Error; its text is what is left to
        // tell an untrusted certificate from other connection failures.
        if e.to_string().contains("certificate") {
            return RegistryError::Certificate {
                registry: ep.key.clone(),
                op: op.clone(),
                url: url.to_owned(),
                source: Box::new(e),
            };
        }
        RegistryError::Transport {
            registry: ep.key.clone(),
            op: op.clone(),
            url: url.to_owned(),
            source: Box::new(e),
        }
    }

    pub fn throttled(&self, ep: &Endpoint, op: &Op, resp: &Response<ureq::Body>) -> RegistryError {
        RegistryError::Throttled {
            registry: ep.key.clone(),
            repository: ep.repository.clone(),
            op: op.clone(),
            status: resp.status().as_u16(),
            retry_after: retry_after(resp),
        }
    }

    /// Sends `call` to `ep` with the authorization `scopes` need, and answers what a client
    /// must: a 401 re-authenticates once (a new challenge, an expired or revoked token); a
    /// connection error, 5xx or 429 is retried `options.retries` times (not for mirrors),
    /// after `Retry-After` when the registry names a delay up to `options.max_retry_after`.
    ///
    /// The answer's status is the caller's to judge, except 401 (an auth error) and 429/503
    /// once retries are spent ([`RegistryError::Throttled`]).
    pub fn send(
        &self,
        ep: &Endpoint,
        op: &Op,
        scopes: &[String],
        mut call: Call<'_>,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let host = self.host(ep)?;
        let probe = self.probe(ep, &host, op)?;
        let url = if call.target.starts_with('/') {
            format!("{}{}", probe.base, call.target)
        } else {
            call.target.clone()
        };
        let tries = if ep.mirror { 0 } else { self.options.retries };
        let mut attempt = 0;
        let mut reauthenticated = false;
        let mut challenge = probe.challenge.clone();
        let mut extra_scope: Option<String> = None;
        loop {
            let mut all_scopes = scopes.to_vec();
            if let Some(s) = &extra_scope {
                if !all_scopes.contains(s) {
                    all_scopes.push(s.clone());
                }
            }
            let auth = self.authorization(ep, &host, challenge.as_ref(), &all_scopes, op)?;
            let replayable = !matches!(call.payload, Payload::Stream(..));
            let resp = match self.dispatch(&host, &url, &mut call, auth.as_deref()) {
                Ok(r) => r,
                Err(e) if replayable && attempt < tries && transient_transport(&e) => {
                    std::thread::sleep(backoff(self.options.retry_delay, attempt));
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(self.transport_err(ep, op, &url, e)),
            };
            let status = resp.status().as_u16();
            if status == 401 {
                let fresh = challenge_of(&resp);
                if reauthenticated || !replayable {
                    return Err(self.unauthorized(ep, op, challenge.as_ref(), resp));
                }
                reauthenticated = true;
                // The token (if any) did not do: forget it and ask again, for what the
                // registry now says it needs.
                if let Some(Challenge::Bearer { scope, .. }) = &fresh {
                    extra_scope.clone_from(scope);
                }
                if let Some(c) = fresh {
                    // A registry whose /v2/ is open may still guard its repositories: keep
                    // what this 401 taught for the host's next requests.
                    if let Some(p) = lock(&host.state).probe.as_mut() {
                        if p.challenge.is_none() {
                            p.challenge = Some(c.clone());
                        }
                    }
                    challenge = Some(c);
                }
                self.tokens.forget(&ep.host, &all_scopes);
                continue;
            }
            if transient_status(status) {
                if replayable && attempt < tries && !self.too_long(&resp) {
                    std::thread::sleep(self.delay(&resp, attempt));
                    attempt += 1;
                    continue;
                }
                if matches!(status, 429 | 503) {
                    return Err(self.throttled(ep, op, &resp));
                }
            }
            return Ok(resp);
        }
    }

    fn dispatch(
        &self,
        host: &Host,
        url: &str,
        call: &mut Call<'_>,
        auth: Option<&str>,
    ) -> Result<Response<ureq::Body>, ureq::Error> {
        let mut builder = http::Request::builder()
            .method(call.method.clone())
            .uri(url);
        for (k, v) in &call.headers {
            builder = builder.header(*k, v.as_str());
        }
        if let Some(a) = auth {
            builder = builder.header("Authorization", a);
        }
        // Each body type is its own request type: ureq knows a slice's length, and a stream's
        // comes from the Content-Length header set here.
        match &mut call.payload {
            Payload::None if matches!(call.method, Method::POST | Method::PUT | Method::PATCH) => {
                host.agent.run(builder.body(&[][..])?)
            }
            Payload::None => host.agent.run(builder.body(SendBody::none())?),
            Payload::Bytes(b) => host.agent.run(builder.body(*b)?),
            Payload::Stream(r, len) => {
                builder = builder.header("Content-Length", len.to_string());
                host.agent.run(builder.body(SendBody::from_reader(*r))?)
            }
        }
    }

    /// The error for a 401 that re-authenticating did not cure.
    fn unauthorized(
        &self,
        ep: &Endpoint,
        op: &Op,
        challenge: Option<&Challenge>,
        resp: Response<ureq::Body>,
    ) -> RegistryError {
        let has_creds = matches!(self.credentials_for(ep), Ok(Some(_)));
        let detail = error_detail(resp);
        match challenge {
            Some(Challenge::Basic { .. }) | None if has_creds => {
                RegistryError::AuthenticationFailed {
                    registry: ep.key.clone(),
                    detail,
                }
            }
            Some(Challenge::Bearer { .. }) if has_creds => RegistryError::Denied {
                registry: ep.key.clone(),
                repository: ep.repository.clone(),
                op: op.clone(),
                detail,
            },
            _ => RegistryError::AuthenticationRequired {
                registry: ep.key.clone(),
                repository: ep.repository.clone(),
                op: op.clone(),
            },
        }
    }

    /// Reads an error answer into [`RegistryError::Status`] (or the not-found variants).
    pub fn status_err(&self, ep: &Endpoint, op: &Op, resp: Response<ureq::Body>) -> RegistryError {
        let status = resp.status().as_u16();
        let (registry, repository, op) = (ep.key.clone(), ep.repository.clone(), op.clone());
        match status {
            403 => RegistryError::Denied {
                registry,
                repository,
                op,
                detail: error_detail(resp),
            },
            404 if matches!(op, Op::Manifest(_) | Op::ManifestDigest(_)) => {
                RegistryError::ManifestNotFound {
                    registry,
                    repository,
                    op,
                }
            }
            404 if matches!(op, Op::Blob(_) | Op::BlobExists(_)) => RegistryError::BlobNotFound {
                registry,
                repository,
                op,
            },
            _ => RegistryError::Status {
                registry,
                repository,
                op,
                status,
                detail: error_detail(resp),
            },
        }
    }
}

/// The challenge of a 401 answer, if it carries one Berth understands.
pub(crate) fn challenge_of(resp: &Response<ureq::Body>) -> Option<Challenge> {
    Challenge::parse_all(
        resp.headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

pub(crate) fn header<'r>(resp: &'r Response<ureq::Body>, name: &str) -> Option<&'r str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

fn retry_after(resp: &Response<ureq::Body>) -> Option<std::time::Duration> {
    header(resp, "retry-after").and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// The message of a registry's error body: distribution's
/// `{"errors":[{"code":"…","message":"…"}]}`, a token server's `{"details":"…"}`, else the
/// status line.
pub(crate) fn error_detail(mut resp: Response<ureq::Body>) -> String {
    let status = resp.status();
    let text = resp
        .body_mut()
        .with_config()
        .limit(ERROR_BODY_LIMIT)
        .read_to_string()
        .unwrap_or_default();
    let fallback = || {
        format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        )
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        let trimmed = text.trim();
        return if trimmed.is_empty() || trimmed.len() > 200 {
            fallback()
        } else {
            trimmed.to_owned()
        };
    };
    if let Some(first) = json["errors"].as_array().and_then(|a| a.first()) {
        let code = first["code"].as_str().unwrap_or_default();
        let message = first["message"].as_str().unwrap_or_default();
        return match (code.is_empty(), message.is_empty()) {
            (false, false) => format!("{code}: {message}"),
            (false, true) => code.to_owned(),
            (true, false) => message.to_owned(),
            (true, true) => fallback(),
        };
    }
    for key in ["details", "detail", "message", "error"] {
        if let Some(s) = json[key].as_str() {
            return s.to_owned();
        }
    }
    fallback()
}

/// `localhost`, `127.0.0.0/8` and `::1`, with or without a port.
fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The CAs and client certificate found for a host.
struct CertMaterial {
    cas: Vec<Certificate<'static>>,
    client: Option<ClientCert>,
}

impl CertMaterial {
    /// docker's certs.d layout: `*.crt` are CAs; `x.cert` with `x.key` a client certificate.
    /// Missing directories are fine (most hosts have none).
    fn load(dirs: &[PathBuf], registry: &str) -> Result<CertMaterial, RegistryError> {
        let mut out = CertMaterial {
            cas: Vec::new(),
            client: None,
        };
        for dir in dirs {
            let entries = match fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(RegistryError::Certs {
                        registry: registry.to_owned(),
                        path: dir.clone(),
                        source,
                    });
                }
            };
            let mut names: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            names.sort();
            for path in names {
                match path.extension().and_then(|e| e.to_str()) {
                    Some("crt") => {
                        let certs = read_pem_certs(&path, registry)?;
                        if certs.is_empty() {
                            return Err(RegistryError::BadPem {
                                registry: registry.to_owned(),
                                path,
                                what: "certificate",
                            });
                        }
                        out.cas.extend(certs);
                    }
                    Some("cert") if out.client.is_none() => {
                        let key = path.with_extension("key");
                        let chain = read_pem_certs(&path, registry)?;
                        let key_pem = read(&key, registry)?;
                        let key = ureq::tls::PrivateKey::from_pem(&key_pem).map_err(|_| {
                            RegistryError::BadPem {
                                registry: registry.to_owned(),
                                path: key.clone(),
                                what: "private key",
                            }
                        })?;
                        out.client = Some(ClientCert::new_with_certs(&chain, key));
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}

fn read(path: &Path, registry: &str) -> Result<Vec<u8>, RegistryError> {
    fs::read(path).map_err(|source| RegistryError::Certs {
        registry: registry.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn read_pem_certs(path: &Path, registry: &str) -> Result<Vec<Certificate<'static>>, RegistryError> {
    let pem = read(path, registry)?;
    Ok(ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect())
}

/// The system's CAs, so that adding a registry's own CA does not drop the others.
fn system_roots() -> Vec<Certificate<'static>> {
    fs::read(SYSTEM_CA_BUNDLE)
        .map(|pem| {
            ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A 2xx answer passes; anything else becomes its error.
pub(crate) fn expect_success(
    t: &Transport,
    ep: &Endpoint,
    op: &Op,
    resp: Response<ureq::Body>,
) -> Result<Response<ureq::Body>, RegistryError> {
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(t.status_err(ep, op, resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for (h, want) in [
            ("localhost:5000", true),
            ("127.0.0.1:5000", true),
            ("127.8.0.1", true),
            ("[::1]:5000", true),
            ("10.0.0.1:5000", false),
            ("docker.io", false),
            ("localhost.example", false),
        ] {
            assert_eq!(is_loopback(h), want, "{h}");
        }
    }
}
