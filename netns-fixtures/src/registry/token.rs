//! [`TokenServer`]: the docker token flow's authorization server, enough of it for
//! `docker-registry`'s `auth.token`: `GET /token?service=…&scope=…` with Basic credentials or
//! none, and the OAuth2 `POST /token` form (password and refresh-token grants). It issues JWTs
//! signed RS256 with a key whose certificate travels in the `x5c` header and sits in the
//! registry's `rootcertbundle`.
//!
//! Policy: a known user with the right password gets every action asked for; a wrong password
//! gets a 401; anonymous callers get `pull` when `anonymous_pull` is set, else nothing (the
//! registry then answers 401).

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

use super::FixtureError;
use super::http::{parse_form, read_body, read_head, respond};
use super::pki::{KeyPair, cert_der, sign_rs256};
use crate::netns::TestNetns;

/// What the registry is told to expect in tokens.
pub const SERVICE: &str = "berth-test-registry";
pub const ISSUER: &str = "berth-test-issuer";

/// Who may do what.
#[derive(Debug, Clone, Default)]
pub struct TokenPolicy {
    /// user → password.
    pub users: BTreeMap<String, String>,
    /// refresh token → user (docker's `identitytoken`).
    pub refresh_tokens: BTreeMap<String, String>,
    /// Anonymous callers may pull.
    pub anonymous_pull: bool,
    /// `expires_in` of the tokens issued, seconds.
    pub lifetime: u64,
}

/// One request the server answered, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The authenticated user, if any.
    pub user: Option<String>,
    pub scopes: Vec<String>,
    /// The HTTP status answered (200, 401, 400).
    pub status: u16,
}

struct Shared {
    policy: TokenPolicy,
    signer: KeyPair,
    x5c: String,
    stop: AtomicBool,
    requests: Mutex<Vec<TokenRequest>>,
    /// The next this many tokens are issued already expired (but with a normal `expires_in`),
    /// so the registry refuses them: a client must come back for a new one.
    expired: AtomicUsize,
    serial: AtomicU64,
}

/// A token server on 127.0.0.1 in a namespace; stops on drop.
pub struct TokenServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TokenServer {
    pub(super) fn start(
        ns: &TestNetns,
        policy: TokenPolicy,
        signer: KeyPair,
    ) -> Result<TokenServer, FixtureError> {
        let x5c = STANDARD.encode(cert_der(&signer.cert)?);
        let shared = Arc::new(Shared {
            policy,
            signer,
            x5c,
            stop: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            expired: AtomicUsize::new(0),
            serial: AtomicU64::new(0),
        });
        let (listener, addr) = super::listen(ns)?;
        let state = shared.clone();
        let thread = super::spawn_in(ns, "token-server", move || serve(&listener, &state))?;
        Ok(TokenServer {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/token`: the registry's `auth.token.realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The requests answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Issues the next `n` tokens already expired: the registry refuses them with a 401.
    pub fn issue_expired(&self, n: usize) {
        self.shared.expired.store(n, Ordering::SeqCst);
    }

    pub(super) fn signer_cert(&self) -> PathBuf {
        self.shared.signer.cert.clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &TcpListener, state: &Shared) {
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = handle(stream, state) {
                    eprintln!("netns-fixtures: token server: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                eprintln!("netns-fixtures: token server accept: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn handle(mut stream: TcpStream, state: &Shared) -> Result<(), FixtureError> {
    let io_err = |source| FixtureError::Serve {
        what: "token request",
        source,
    };
    stream.set_nonblocking(false).map_err(io_err)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io_err)?;
    let Some(head) = read_head(&mut stream).map_err(io_err)? else {
        return Ok(());
    };
    if head.path() != "/token" {
        return respond(&mut stream, 404, "Not Found", &[], b"").map_err(io_err);
    }
    let (auth, scopes, service) = if head.method == "POST" {
        let body = read_body(&mut stream, &head).map_err(io_err)?;
        let form = parse_form(&String::from_utf8_lossy(&body));
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let scopes: Vec<String> = get("scope")
            .map(|s| s.split(' ').map(str::to_owned).collect())
            .unwrap_or_default();
        let auth = match get("grant_type").as_deref() {
            Some("refresh_token") => {
                let token = get("refresh_token").unwrap_or_default();
                match state.policy.refresh_tokens.get(&token) {
                    Some(user) => Auth::User(user.clone()),
                    None => Auth::Bad(None),
                }
            }
            Some("password") => check_user(
                &state.policy,
                &get("username").unwrap_or_default(),
                &get("password").unwrap_or_default(),
            ),
            _ => Auth::Bad(None),
        };
        (auth, scopes, get("service"))
    } else {
        let query = head.query();
        let scopes = query
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .collect();
        let service = query
            .iter()
            .find(|(k, _)| k == "service")
            .map(|(_, v)| v.clone());
        let auth = match head
            .header("authorization")
            .and_then(|a| a.strip_prefix("Basic "))
        {
            None => Auth::Anonymous,
            Some(b64) => match STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
            {
                Some(text) => {
                    let (u, p) = text.split_once(':').unwrap_or((&text, ""));
                    check_user(&state.policy, u, p)
                }
                None => Auth::Bad(None),
            },
        };
        (auth, scopes, service)
    };

    let record = |user: Option<String>, status| {
        state
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(TokenRequest {
                user,
                scopes: scopes.clone(),
                status,
            });
    };
    if service.as_deref().is_some_and(|s| s != SERVICE) {
        record(None, 400);
        let body = json!({"errors": [{"code": "UNSUPPORTED", "message": "unknown service"}]});
        return respond(
            &mut stream,
            400,
            "Bad Request",
            &[],
            body.to_string().as_bytes(),
        )
        .map_err(io_err);
    }
    let user = match auth {
        Auth::Bad(user) => {
            record(user, 401);
            let body = json!({"details": "incorrect username or password"});
            return respond(
                &mut stream,
                401,
                "Unauthorized",
                &[("Content-Type", "application/json".into())],
                body.to_string().as_bytes(),
            )
            .map_err(io_err);
        }
        Auth::User(u) => Some(u),
        Auth::Anonymous => None,
    };
    let token = issue(state, user.as_deref(), &scopes)?;
    record(user, 200);
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": state.policy.lifetime,
        "issued_at": "2000-01-01T00:00:00Z",
    });
    respond(
        &mut stream,
        200,
        "OK",
        &[("Content-Type", "application/json".into())],
        body.to_string().as_bytes(),
    )
    .map_err(io_err)
}

enum Auth {
    Anonymous,
    User(String),
    /// Wrong credentials (naming the user claimed, if any).
    Bad(Option<String>),
}

fn check_user(policy: &TokenPolicy, user: &str, password: &str) -> Auth {
    match policy.users.get(user) {
        Some(p) if p == password => Auth::User(user.to_owned()),
        _ => Auth::Bad(Some(user.to_owned())),
    }
}

/// A JWT granting what `scopes` ask for, as far as the policy allows.
fn issue(state: &Shared, user: Option<&str>, scopes: &[String]) -> Result<String, FixtureError> {
    let mut access = Vec::new();
    for scope in scopes {
        // type:name:actions; the name may itself hold a ':' (host:port/…), so split outside in.
        let Some((kind, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| match user {
                Some(_) => true,
                None => state.policy.anonymous_pull && *a == "pull",
            })
            .collect();
        if !granted.is_empty() {
            access.push(json!({"type": kind, "name": name, "actions": granted}));
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let expired = state
        .expired
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    // Expired well past the registry's leeway (distribution allows 60 s of clock skew).
    let (nbf, exp) = if expired {
        (now - 7200, now - 3600)
    } else {
        (now - 10, now + state.policy.lifetime.max(1))
    };
    let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [state.x5c]});
    let claims = json!({
        "iss": ISSUER,
        "sub": user.unwrap_or(""),
        "aud": SERVICE,
        "exp": exp,
        "nbf": nbf,
        "iat": nbf,
        "jti": format!("berth-{}", state.serial.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = sign_rs256(&state.signer.key, signing_input.as_bytes())?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}
