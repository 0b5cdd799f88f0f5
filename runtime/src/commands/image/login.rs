//! `berth login` and `berth logout`: credentials checked against the registry, then written
//! to (or removed from) the auth file podman uses.

use std::io::{self, BufRead, IsTerminal, Write};

use berth_image::registry::{AuthFile, Credentials, RegistriesConfig, RegistryClient};

use super::{ImageCommandError, RegistryFlags};

/// Errors of `login`/`logout` themselves (the registry's are [`ImageCommandError`]'s).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0:?} is not a registry: expected host[:port], e.g. quay.io or 127.0.0.1:5000")]
    BadRegistry(String),
    #[error("no user name: give -u USER")]
    NoUser,
    #[error("no password: give -p PASS or --password-stdin")]
    NoPassword,
    #[error("-p and --password-stdin exclude each other")]
    TwoPasswords,
    #[error("read the password from stdin")]
    ReadPassword(#[source] io::Error),
    #[error("not logged in to {registry} (in {file})")]
    NotLoggedIn { registry: String, file: String },
}

/// The key a registry argument is stored under: `host[:port]`, as references name
/// registries (`docker.io` for Docker Hub). A scheme and a trailing `/` or `/v1/` are
/// dropped, as docker does.
pub fn registry_key(arg: &str) -> Result<String, LoginError> {
    let bare = arg
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let bare = bare.strip_suffix("/v1").unwrap_or(bare);
    let bare = bare.strip_suffix("/v2").unwrap_or(bare);
    let key = match bare {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io",
        other => other,
    };
    // A host the reference grammar takes (with a path of its own: `host/ns/repo` keys are
    // valid auth entries too).
    let probe = if key.contains('/') {
        key.to_owned()
    } else {
        format!("{key}/x")
    };
    match berth_image::Reference::parse(&probe) {
        Ok(r) if key.starts_with(r.registry()) => Ok(key.to_owned()),
        _ => Err(LoginError::BadRegistry(arg.to_owned())),
    }
}

/// The auth file login writes: `--authfile`, else podman's.
fn auth_file(flags: &RegistryFlags) -> AuthFile {
    match &flags.authfile {
        Some(f) => AuthFile::new(f),
        None => AuthFile::from_env(|k| std::env::var_os(k)),
    }
}

/// `berth login [-u USER] [-p PASS | --password-stdin] REGISTRY`: checks the credentials
/// with the registry, then stores them. Returns the file written.
pub fn login(
    registry: &str,
    username: Option<&str>,
    password: Option<&str>,
    password_stdin: bool,
    flags: &RegistryFlags,
    config: RegistriesConfig,
) -> Result<String, ImageCommandError> {
    let key = registry_key(registry)?;
    let host = key.split('/').next().unwrap_or(&key).to_owned();
    let username = match username {
        Some(u) => u.to_owned(),
        None if !password_stdin && io::stdin().is_terminal() => read_line(Some("Username: "))?,
        None => return Err(LoginError::NoUser.into()),
    };
    let password = match (password, password_stdin) {
        (Some(_), true) => return Err(LoginError::TwoPasswords.into()),
        (Some(p), false) => p.to_owned(),
        (None, true) => read_line(None)?,
        (None, false) if io::stdin().is_terminal() => read_line(Some("Password: "))?,
        (None, false) => return Err(LoginError::NoPassword.into()),
    };
    if username.is_empty() {
        return Err(LoginError::NoUser.into());
    }
    let creds = Credentials::from_env(|k| std::env::var_os(k))
        .with_creds(&format!("{username}:{password}"))?;
    let client = RegistryClient::new(config, creds, flags.options(None));
    client.check_login(&host)?;
    let file = auth_file(flags);
    file.login(&key, &username, &password)?;
    Ok(file.path().display().to_string())
}

/// `berth logout [--all] REGISTRY`: removes the stored credentials.
pub fn logout(
    registry: Option<&str>,
    all: bool,
    flags: &RegistryFlags,
) -> Result<String, ImageCommandError> {
    let file = auth_file(flags);
    let path = file.path().display().to_string();
    if all {
        file.logout_all()?;
        return Ok(path);
    }
    let key = registry_key(registry.unwrap_or("docker.io"))?;
    if file.logout(&key)? {
        Ok(key)
    } else {
        Err(LoginError::NotLoggedIn {
            registry: key,
            file: path,
        }
        .into())
    }
}

/// One line of stdin without its newline; with `prompt` (a terminal), shown on stderr and, for
/// the password, read without echo.
fn read_line(prompt: Option<&str>) -> Result<String, LoginError> {
    let secret = prompt == Some("Password: ");
    if let Some(p) = prompt {
        eprint!("{p}");
        let _ = io::stderr().flush();
    }
    let stdin = io::stdin();
    let saved = if secret { echo_off(&stdin) } else { None };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = saved {
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &saved);
        eprintln!();
    }
    read.map_err(LoginError::ReadPassword)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Turns the terminal's echo off; the settings to put back.
fn echo_off(stdin: &io::Stdin) -> Option<nix::sys::termios::Termios> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let saved = tcgetattr(stdin).ok()?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(stdin, SetArg::TCSANOW, &quiet).ok()?;
    Some(saved)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn registry_arguments_become_keys() {
        assert_eq!(registry_key("127.0.0.1:5000").unwrap(), "127.0.0.1:5000");
        assert_eq!(
            registry_key("https://index.docker.io/v1/").unwrap(),
            "docker.io"
        );
        assert_eq!(registry_key("quay.io/").unwrap(), "quay.io");
        assert_eq!(registry_key("quay.io/ns/repo").unwrap(), "quay.io/ns/repo");
        assert!(registry_key("Bad Host").is_err());
    }
}
