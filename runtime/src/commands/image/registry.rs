//! What the image verbs that talk to registries share: podman's flags (`--creds`,
//! `--authfile`, `--cert-dir`, `--tls-verify`), the registries config file, and the client
//! built from them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use berth_image::registry::{
    ClientOptions, ConfigError, Credentials, CredentialsError, DEFAULT_CONFIG_PATH,
    RegistriesConfig, RegistryClient,
};

/// Errors of setting up a registry client.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

/// podman's registry flags of `pull`, `push` and `login`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryFlags {
    /// Credentials for the registry, USER[:PASS] (instead of the auth files).
    #[arg(long, value_name = "USER[:PASS]")]
    pub creds: Option<String>,
    /// The auth file to read (and `login` to write) instead of podman's and docker's
    /// (default: $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json, and
    /// docker's ~/.docker/config.json for reading).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// CAs (*.crt) and client certificates (*.cert, *.key) for the registry, instead of
    /// certs.d.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Verify the registry's TLS certificate; `--tls-verify=false` also allows plain http.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        // Go's boolean flags: `--tls-verify` alone is true, a value needs `=`, so the word
        // after the flag stays an argument (`push --tls-verify IMAGE`).
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub tls_verify: bool,
}

/// The registries config: `--registries-config FILE`, else `$BERTH_REGISTRIES_CONFIG`, else
/// [`DEFAULT_CONFIG_PATH`] (a missing default file is an empty config).
pub fn registries_config(flag: Option<&Path>) -> Result<RegistriesConfig, SetupError> {
    let path = match flag {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("BERTH_REGISTRIES_CONFIG")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH), PathBuf::from),
    };
    Ok(RegistriesConfig::load(&path)?)
}

fn env(key: &str) -> Option<OsString> {
    std::env::var_os(key)
}

impl RegistryFlags {
    /// The credentials these flags and the environment give.
    pub fn credentials(&self) -> Result<Credentials, SetupError> {
        let mut creds = Credentials::from_env(env);
        if let Some(file) = &self.authfile {
            creds = creds.with_authfile(file);
        }
        if let Some(c) = &self.creds {
            creds = creds.with_creds(c)?;
        }
        Ok(creds)
    }

    /// The client options these flags give; `retries` is `--retry` where the verb has it.
    pub fn options(&self, retries: Option<u32>) -> ClientOptions {
        let mut options = ClientOptions {
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            ..ClientOptions::default()
        };
        if let Some(r) = retries {
            options.retries = r;
        }
        options
    }

    /// A client for one command.
    pub fn client(
        &self,
        config: RegistriesConfig,
        retries: Option<u32>,
    ) -> Result<RegistryClient, SetupError> {
        Ok(RegistryClient::new(
            config,
            self.credentials()?,
            self.options(retries),
        ))
    }
}
