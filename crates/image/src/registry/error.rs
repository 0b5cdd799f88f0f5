//! [`RegistryError`]: what went wrong talking to a registry, naming the registry, the
//! repository and the operation ([`Op`]).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::digest::Digest;

use super::credentials::CredentialsError;

/// The operation a request was part of, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Ping,
    Login,
    /// By tag or digest.
    Manifest(String),
    /// `HEAD` of a manifest (its digest).
    ManifestDigest(String),
    Blob(Digest),
    BlobExists(Digest),
    PushBlob(Digest),
    PushManifest(String),
    Tags,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Ping => f.write_str("ping"),
            Op::Login => f.write_str("log in"),
            Op::Manifest(r) => write!(f, "fetch manifest {r}"),
            Op::ManifestDigest(r) => write!(f, "check manifest {r}"),
            Op::Blob(d) => write!(f, "fetch blob {d}"),
            Op::BlobExists(d) => write!(f, "check blob {d}"),
            Op::PushBlob(d) => write!(f, "push blob {d}"),
            Op::PushManifest(r) => write!(f, "push manifest {r}"),
            Op::Tags => f.write_str("list tags"),
        }
    }
}

/// `registry/repository`, or the registry alone when no repository is concerned.
fn at(registry: &str, repository: &str) -> String {
    if repository.is_empty() {
        registry.to_owned()
    } else {
        format!("{registry}/{repository}")
    }
}

fn when(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("retry in {} s", d.as_secs().max(1)),
        None => "retry later".to_owned(),
    }
}

/// Errors of the registry client. `registry` is the registry or mirror as configured
/// (`docker.io`, `127.0.0.1:5000`), `repository` the repository on it (empty for a ping).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{op} in {registry}: cannot reach {url}")]
    Transport {
        registry: String,
        op: Op,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error(
        "{op} in {registry}: the TLS certificate of {url} is not trusted (put its CA in \
         certs.d/{registry}/ca.crt or a --cert-dir; --tls-verify=false skips the check)"
    )]
    Certificate {
        registry: String,
        op: Op,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{op} in {}: reading the answer", at(registry, repository))]
    Read {
        registry: String,
        repository: String,
        op: Op,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{registry} does not answer as a registry (GET {url} gave HTTP {status})")]
    NotARegistry {
        registry: String,
        url: String,
        status: u16,
    },
    #[error("authentication failed for {registry}: {detail}")]
    AuthenticationFailed { registry: String, detail: String },
    #[error(
        "{op} in {}: authentication required (berth login {registry}, or --creds)",
        at(registry, repository)
    )]
    AuthenticationRequired {
        registry: String,
        repository: String,
        op: Op,
    },
    #[error("{op} in {}: access denied: {detail}", at(registry, repository))]
    Denied {
        registry: String,
        repository: String,
        op: Op,
        detail: String,
    },
    #[error(
        "{op} in {}: registry {registry} is limiting requests (HTTP {status}): {}",
        at(registry, repository),
        when(retry_after)
    )]
    Throttled {
        registry: String,
        repository: String,
        op: Op,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("{op} in {}: manifest unknown", at(registry, repository))]
    ManifestNotFound {
        registry: String,
        repository: String,
        op: Op,
    },
    #[error("{op} in {}: blob unknown", at(registry, repository))]
    BlobNotFound {
        registry: String,
        repository: String,
        op: Op,
    },
    #[error("{op} in {}: HTTP {status}: {detail}", at(registry, repository))]
    Status {
        registry: String,
        repository: String,
        op: Op,
        status: u16,
        detail: String,
    },
    #[error(
        "{op} in {}: the manifest has digest {actual}, expected {expected}",
        at(registry, repository)
    )]
    ManifestDigest {
        registry: String,
        repository: String,
        op: Op,
        // Boxed: they would make every registry error larger.
        expected: Box<Digest>,
        actual: Box<Digest>,
    },
    #[error(
        "{op} in {}: the manifest is larger than {limit} bytes",
        at(registry, repository)
    )]
    ManifestTooLarge {
        registry: String,
        repository: String,
        op: Op,
        limit: u64,
    },
    #[error("{op} in {}: {what}", at(registry, repository))]
    Protocol {
        registry: String,
        repository: String,
        op: Op,
        what: &'static str,
    },
    #[error("{op} in {}: read the blob to send", at(registry, repository))]
    Source {
        registry: String,
        repository: String,
        op: Op,
        #[source]
        source: io::Error,
    },
    #[error("{op} in {}: verify the blob", at(registry, repository))]
    Verify {
        registry: String,
        repository: String,
        op: Op,
        #[source]
        source: io::Error,
    },
    #[error("token server {realm} for {registry} answered: {detail}")]
    Token {
        registry: String,
        realm: String,
        detail: String,
    },
    #[error("credentials for {registry}")]
    Credentials {
        registry: String,
        #[source]
        source: CredentialsError,
    },
    #[error("TLS certificates for {registry}: read {path}")]
    Certs {
        registry: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("TLS certificates for {registry}: {path} holds no usable PEM {what}")]
    BadPem {
        registry: String,
        path: PathBuf,
        what: &'static str,
    },
}

impl RegistryError {
    /// Transient failures a retry may cure: connection trouble, 5xx, 429.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { source, .. } | RegistryError::Read { source, .. } => {
                transient_transport(source)
            }
            RegistryError::Throttled { .. } => true,
            RegistryError::Status { status, .. } => transient_status(*status),
            _ => false,
        }
    }

    /// The error says the registry or mirror could not be reached at all.
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(
            self,
            RegistryError::Transport { .. } | RegistryError::Certificate { .. }
        )
    }
}

pub(crate) fn transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

pub(crate) fn transient_transport(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
    )
}
