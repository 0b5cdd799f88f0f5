//! Keys and certificates made with the `openssl` CLI, fresh for every registry: a CA and a
//! server certificate for 127.0.0.1 (TLS registries), an RSA key with a self-signed
//! certificate for signing tokens, and RS256 signatures (JWT) with that key.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::FixtureError;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Runs `openssl args…` with `stdin`, returning stdout; a failure carries stderr.
pub(super) fn openssl(args: &[&str], stdin: &[u8]) -> Result<Vec<u8>, FixtureError> {
    let command = format!("openssl {}", args.join(" "));
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| FixtureError::Spawn {
            program: "openssl".into(),
            source,
        })?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin)
            .map_err(|source| FixtureError::Spawn {
                program: "openssl".into(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| FixtureError::Spawn {
            program: "openssl".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(FixtureError::Openssl {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// A CA (P-256, valid two days) in `dir`: `ca.crt`, `ca.key`.
pub(super) fn make_ca(dir: &Path) -> Result<KeyPair, FixtureError> {
    let pair = KeyPair {
        cert: dir.join("ca.crt"),
        key: dir.join("ca.key"),
    };
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=berth test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            s(&pair.key),
            "-out",
            s(&pair.cert),
        ],
        b"",
    )?;
    Ok(pair)
}

/// A server certificate for 127.0.0.1 and localhost signed by `ca`: `server.crt`, `server.key`.
pub(super) fn make_server_cert(dir: &Path, ca: &KeyPair) -> Result<KeyPair, FixtureError> {
    let pair = KeyPair {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    let csr = dir.join("server.csr");
    openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            s(&pair.key),
            "-out",
            s(&csr),
        ],
        b"",
    )?;
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .map_err(|source| FixtureError::Write {
        path: ext.clone(),
        source,
    })?;
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&ca.cert),
            "-CAkey",
            s(&ca.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            s(&ext),
            "-out",
            s(&pair.cert),
        ],
        b"",
    )?;
    Ok(pair)
}

/// The token signer: an RSA key and a self-signed certificate the registry's
/// `rootcertbundle` trusts (`token.crt`, `token.key`).
pub(super) fn make_token_signer(dir: &Path) -> Result<KeyPair, FixtureError> {
    let pair = KeyPair {
        cert: dir.join("token.crt"),
        key: dir.join("token.key"),
    };
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=berth test token issuer",
            "-keyout",
            s(&pair.key),
            "-out",
            s(&pair.cert),
        ],
        b"",
    )?;
    Ok(pair)
}

/// The DER bytes of a PEM certificate (for a JWT's `x5c`).
pub(super) fn cert_der(cert: &Path) -> Result<Vec<u8>, FixtureError> {
    openssl(&["x509", "-in", s(cert), "-outform", "DER"], b"")
}

/// RS256: an RSASSA-PKCS1-v1_5 signature over SHA-256 of `data`.
pub(super) fn sign_rs256(key: &Path, data: &[u8]) -> Result<Vec<u8>, FixtureError> {
    openssl(&["dgst", "-sha256", "-sign", s(key)], data)
}
