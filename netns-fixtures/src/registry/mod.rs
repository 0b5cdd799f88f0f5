//! Real registries for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1
//! inside a [`TestNetns`], with its storage, config, certificates and log in a temporary
//! directory, in the variants the image tests need:
//!
//! - plain http: `TestRegistry::builder(&ns).start()`;
//! - TLS with a CA made for the run (`.tls()`; [`TestRegistry::ca_cert`], [`cert_dir`],
//!   [`certs_d`]);
//! - users: htpasswd (`.htpasswd()`, bcrypt hashes made with the `bcrypt` crate) or bearer
//!   tokens from a [`TokenServer`] the fixture runs (`.token_auth()`), with `.user(name, pw)`;
//! - a pull-through mirror of another fixture registry (`.mirror_of(&upstream)`).
//!
//! [`Throttle`] sits in front of any of them for slow, cut or throttled (429) connections,
//! and [`TestRegistry::log`] shows what the registry served (a `206` is a `Range` request).
//!
//! The registry process is started from a supervisor thread inside the namespace with
//! `PR_SET_PDEATHSIG`, so it dies with the test process even when that is killed; on drop
//! (also on panic) it is killed and waited for, and the directory removed.
//!
//! Clients must run inside the namespace too (`ns.run(|| …)`): 127.0.0.1 there is not the
//! host's.
//!
//! [`cert_dir`]: TestRegistry::cert_dir
//! [`certs_d`]: TestRegistry::certs_d

mod http;
mod pki;
mod throttle;
mod token;

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::netns::TestNetns;
use crate::root::require_root;

pub use throttle::Throttle;
pub use token::{ISSUER, SERVICE, TokenPolicy, TokenRequest, TokenServer};

/// Debian's package `docker-registry` installs it here.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// How long a registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Errors of the registry fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{REGISTRY_BIN} is missing: install Debian's docker-registry package")]
    NoRegistry,
    #[error("create the registry's temporary directory")]
    TempDir(#[source] io::Error),
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Openssl { command: String, stderr: String },
    #[error("hash the password of {user}")]
    Bcrypt {
        user: String,
        #[source]
        source: bcrypt::BcryptError,
    },
    #[error("enter netns {ns}")]
    Enter {
        ns: String,
        #[source]
        source: berth_netlink::NetnsError,
    },
    #[error("listen on 127.0.0.1 in netns {ns}")]
    Listen {
        ns: String,
        #[source]
        source: io::Error,
    },
    #[error("the registry exited ({status}) before listening on {addr}; its log:\n{log}")]
    Exited {
        addr: SocketAddr,
        status: ExitStatus,
        log: String,
    },
    #[error("the registry did not listen on {addr} within {START_TIMEOUT:?}; its log:\n{log}")]
    Timeout { addr: SocketAddr, log: String },
    #[error("serve a {what}")]
    Serve {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthKind {
    None,
    Htpasswd,
    Token,
}

/// How to start a [`TestRegistry`].
#[must_use]
pub struct TestRegistryBuilder<'a> {
    ns: &'a TestNetns,
    tls: bool,
    auth: AuthKind,
    policy: TokenPolicy,
    upstream: Option<(String, Option<PathBuf>)>,
}

impl TestRegistryBuilder<'_> {
    /// Serve https with a certificate for 127.0.0.1 from a CA made for this registry.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Basic auth from an htpasswd file of the [`user`](Self::user)s.
    pub fn htpasswd(mut self) -> Self {
        self.auth = AuthKind::Htpasswd;
        self
    }

    /// Bearer tokens from a [`TokenServer`] the fixture runs.
    pub fn token_auth(mut self) -> Self {
        self.auth = AuthKind::Token;
        self
    }

    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.policy.users.insert(name.into(), password.into());
        self
    }

    /// Token auth: anonymous callers may pull.
    pub fn anonymous_pull(mut self) -> Self {
        self.policy.anonymous_pull = true;
        self
    }

    /// Token auth: `token` is an OAuth2 refresh token (docker's `identitytoken`) of `user`.
    pub fn refresh_token(mut self, token: &str, user: &str) -> Self {
        self.policy.refresh_tokens.insert(token.into(), user.into());
        self
    }

    /// Token auth: the `expires_in` of tokens (default 300 s).
    pub fn token_lifetime(mut self, secs: u64) -> Self {
        self.policy.lifetime = secs;
        self
    }

    /// A pull-through cache (`proxy.remoteurl`) of `upstream`, which must be unauthenticated.
    pub fn mirror_of(mut self, upstream: &TestRegistry) -> Self {
        self.upstream = Some((upstream.url(), upstream.ca_cert().map(Path::to_path_buf)));
        self
    }

    pub fn start(self) -> Result<TestRegistry, FixtureError> {
        require_root();
        if !Path::new(REGISTRY_BIN).exists() {
            return Err(FixtureError::NoRegistry);
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .map_err(FixtureError::TempDir)?;
        let root = dir.path();
        let write = |name: &str, text: &str| -> Result<PathBuf, FixtureError> {
            let path = root.join(name);
            fs::write(&path, text).map_err(|source| FixtureError::Write {
                path: path.clone(),
                source,
            })?;
            Ok(path)
        };
        let (listener, addr) = listen(self.ns)?;
        // The registry binds the port itself: free it. Only this test's processes live in
        // the namespace, so nothing else can take it meanwhile.
        drop(listener);
        let host = addr.to_string();

        let mut yaml = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {host}\n  secret: berth-test-secret\n",
            storage = root.join("storage").display(),
        );

        let mut ca = None;
        if self.tls {
            let certs = root.join("pki");
            fs::create_dir_all(&certs).map_err(|source| FixtureError::Write {
                path: certs.clone(),
                source,
            })?;
            let authority = pki::make_ca(&certs)?;
            let server = pki::make_server_cert(&certs, &authority)?;
            yaml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                server.cert.display(),
                server.key.display()
            ));
            // `--cert-dir` wants a directory of CAs; certs.d wants <root>/<host:port>/.
            let cert_dir = root.join("cert-dir");
            let host_dir = root.join("certs.d").join(&host);
            for d in [&cert_dir, &host_dir] {
                fs::create_dir_all(d).map_err(|source| FixtureError::Write {
                    path: d.clone(),
                    source,
                })?;
                fs::copy(&authority.cert, d.join("ca.crt")).map_err(|source| {
                    FixtureError::Write {
                        path: d.join("ca.crt"),
                        source,
                    }
                })?;
            }
            ca = Some(authority.cert);
        }

        let mut token_server = None;
        match self.auth {
            AuthKind::None => {}
            AuthKind::Htpasswd => {
                let mut lines = String::new();
                for (user, password) in &self.policy.users {
                    // Cost 4, bcrypt's least: the registry checks it on every request.
                    let hash =
                        bcrypt::hash(password, 4).map_err(|source| FixtureError::Bcrypt {
                            user: user.clone(),
                            source,
                        })?;
                    lines.push_str(&format!("{user}:{hash}\n"));
                }
                let path = write("htpasswd", &lines)?;
                yaml.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    path.display()
                ));
            }
            AuthKind::Token => {
                let signer = pki::make_token_signer(root)?;
                let mut policy = self.policy.clone();
                if policy.lifetime == 0 {
                    policy.lifetime = 300;
                }
                let server = TokenServer::start(self.ns, policy, signer)?;
                yaml.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    server.realm(),
                    server.signer_cert().display()
                ));
                token_server = Some(server);
            }
        }

        let mut env_ca = None;
        if let Some((url, upstream_ca)) = &self.upstream {
            yaml.push_str(&format!("proxy:\n  remoteurl: {url}\n"));
            env_ca.clone_from(upstream_ca);
        }

        let config = write("config.yml", &yaml)?;
        let log_path = root.join("registry.log");
        let log = fs::File::create(&log_path).map_err(|source| FixtureError::Write {
            path: log_path.clone(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| FixtureError::Write {
            path: log_path.clone(),
            source,
        })?;
        let mut cmd = Command::new(REGISTRY_BIN);
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        if let Some(ca) = env_ca {
            // Go reads the CAs to trust from SSL_CERT_FILE.
            cmd.env("SSL_CERT_FILE", ca);
        }
        let process = Supervised::spawn(self.ns, cmd)?;

        let registry = TestRegistry {
            process,
            addr,
            tls: self.tls,
            ca,
            token_server,
            log: log_path,
            dir,
        };
        registry.wait_listening(self.ns)?;
        Ok(registry)
    }
}

/// A running `docker-registry`; killed and its directory removed on drop.
pub struct TestRegistry {
    // Field order is drop order: the process first, then its token server, then the files.
    process: Supervised,
    addr: SocketAddr,
    tls: bool,
    ca: Option<PathBuf>,
    token_server: Option<TokenServer>,
    log: PathBuf,
    dir: TempDir,
}

impl std::fmt::Debug for TestRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRegistry")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TestRegistry {
    pub fn builder(ns: &TestNetns) -> TestRegistryBuilder<'_> {
        TestRegistryBuilder {
            ns,
            tls: false,
            auth: AuthKind::None,
            policy: TokenPolicy::default(),
            upstream: None,
        }
    }

    /// A plain http registry without auth.
    pub fn plain(ns: &TestNetns) -> Result<TestRegistry, FixtureError> {
        TestRegistry::builder(ns).start()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`: the registry part of references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT` or `https://…`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA that signed a TLS registry's certificate (PEM).
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// A directory holding only `ca.crt`: what `--cert-dir` takes.
    pub fn cert_dir(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join("cert-dir"))
    }

    /// A certs.d root with `<host:port>/ca.crt` (docker's and podman's layout).
    pub fn certs_d(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join("certs.d"))
    }

    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token_server.as_ref()
    }

    /// The registry's storage root (`rootdirectory`).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the bytes of blob `sha256:<hex>`: corrupt it to test
    /// verification.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let prefix = hex.get(..2).unwrap_or(hex);
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(prefix)
            .join(hex)
            .join("data")
    }

    /// The registry's log so far: its own lines and an access log line per request, e.g.
    /// `"GET /v2/ns/app/blobs/sha256:… HTTP/1.1" 206 …` for a `Range` request.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    fn wait_listening(&self, ns: &TestNetns) -> Result<(), FixtureError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let addr = self.addr;
            let up = ns
                .run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
                .map_err(|source| FixtureError::Enter {
                    ns: ns.name().to_owned(),
                    source,
                })?;
            if up {
                return Ok(());
            }
            if let Some(status) = self.process.status() {
                return Err(FixtureError::Exited {
                    addr,
                    status,
                    log: self.log(),
                });
            }
            if Instant::now() > deadline {
                return Err(FixtureError::Timeout {
                    addr,
                    log: self.log(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A child process owned by a thread that lives in the namespace for as long as the child
/// does. `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, which is why
/// the child is not forked from a short-lived `Netns::run` helper: this thread stays until the
/// fixture is dropped (or the test process dies, taking the child with it).
struct Supervised {
    pid: u32,
    commands: Option<mpsc::Sender<mpsc::Sender<Option<ExitStatus>>>>,
    thread: Option<JoinHandle<()>>,
}

impl Supervised {
    fn spawn(ns: &TestNetns, mut cmd: Command) -> Result<Supervised, FixtureError> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let (spawned_tx, spawned_rx) = mpsc::channel::<io::Result<u32>>();
        let (commands, requests) = mpsc::channel::<mpsc::Sender<Option<ExitStatus>>>();
        let thread = spawn_in(ns, "registry", move || {
            // SAFETY: the closure runs between fork and exec and only makes the prctl
            // syscall, which is async-signal-safe; it allocates nothing.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
                });
            }
            let mut child: Child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = spawned_tx.send(Err(e));
                    return;
                }
            };
            let _ = spawned_tx.send(Ok(child.id()));
            // Answer status queries until the fixture lets go of the sender.
            for reply in requests {
                let _ = reply.send(child.try_wait().ok().flatten());
            }
            let _ = child.kill();
            let _ = child.wait();
        })?;
        let pid = match spawned_rx.recv() {
            Ok(Ok(pid)) => pid,
            Ok(Err(source)) => {
                let _ = thread.join();
                return Err(FixtureError::Spawn { program, source });
            }
            Err(_) => {
                let _ = thread.join();
                return Err(FixtureError::Spawn {
                    program,
                    source: io::Error::other("the supervisor thread died"),
                });
            }
        };
        Ok(Supervised {
            pid,
            commands: Some(commands),
            thread: Some(thread),
        })
    }

    /// The exit status if the child has exited.
    fn status(&self) -> Option<ExitStatus> {
        let (tx, rx) = mpsc::channel();
        self.commands.as_ref()?.send(tx).ok()?;
        rx.recv().ok().flatten()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Closing the channel ends the supervisor's loop: it kills and reaps the child.
        drop(self.commands.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listener on 127.0.0.1:<free port> inside `ns`, non-blocking (the serving loops poll a
/// stop flag between accepts).
fn listen(ns: &TestNetns) -> Result<(TcpListener, SocketAddr), FixtureError> {
    let err = |source| FixtureError::Listen {
        ns: ns.name().to_owned(),
        source,
    };
    let listener = ns
        .run(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .map_err(|source| FixtureError::Enter {
            ns: ns.name().to_owned(),
            source,
        })?
        .map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    Ok((listener, addr))
}

/// Spawns a long-lived thread inside `ns`: a thread inherits the namespace of the thread that
/// creates it, so it is created from within `ns.run`, whose own helper thread then exits.
fn spawn_in(
    ns: &TestNetns,
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, FixtureError> {
    ns.run(|| thread::Builder::new().name(name.to_owned()).spawn(f))
        .map_err(|source| FixtureError::Enter {
            ns: ns.name().to_owned(),
            source,
        })?
        .map_err(|source| FixtureError::Spawn {
            program: format!("thread {name}"),
            source,
        })
}
