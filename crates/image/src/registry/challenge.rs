//! `WWW-Authenticate` challenges (RFC 7235) as registries send them: `Basic realm="…"` or
//! `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:x:pull"`,
//! and the scopes a bearer token is asked for.

use std::collections::BTreeMap;
use std::fmt;

/// How a registry wants to be authenticated, from its `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Send the credentials with every request.
    Basic { realm: Option<String> },
    /// Trade the credentials at `realm` for a token per scope (the docker token flow).
    Bearer {
        realm: String,
        service: Option<String>,
        /// The scope the failed request needed (`error="insufficient_scope"` answers carry it).
        scope: Option<String>,
        /// `invalid_token`, `insufficient_scope`, … when the registry says why.
        error: Option<String>,
    },
}

impl Challenge {
    /// The challenge Berth acts on among those of one or more `WWW-Authenticate` values:
    /// Bearer before Basic (a registry offering both prefers tokens); `None` when no value
    /// holds a challenge of either scheme with what it needs (a Bearer realm).
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
        let mut basic = None;
        for value in values {
            for (scheme, params) in split_challenges(value) {
                if scheme.eq_ignore_ascii_case("bearer") {
                    if let Some(realm) = params.get("realm") {
                        return Some(Challenge::Bearer {
                            realm: realm.clone(),
                            service: params.get("service").cloned(),
                            scope: params.get("scope").cloned(),
                            error: params.get("error").cloned(),
                        });
                    }
                } else if scheme.eq_ignore_ascii_case("basic") && basic.is_none() {
                    basic = Some(Challenge::Basic {
                        realm: params.get("realm").cloned(),
                    });
                }
            }
        }
        basic
    }
}

/// Splits a header value into `(scheme, params)` challenges. A new challenge starts at a token
/// that is not followed by `=`: `Basic realm="a", Bearer realm="b",service="c"`.
fn split_challenges(value: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut lx = Lexer {
        s: value.as_bytes(),
        i: 0,
    };
    loop {
        lx.skip_ws_and_commas();
        let Some(token) = lx.token() else { break };
        lx.skip_ws();
        if lx.peek() == Some(b'=') {
            // A parameter of the current challenge (or junk before any scheme).
            lx.i += 1;
            lx.skip_ws();
            let value = if lx.peek() == Some(b'"') {
                lx.quoted()
            } else {
                lx.token().unwrap_or_default()
            };
            if let Some((_, params)) = out.last_mut() {
                params.insert(token.to_ascii_lowercase(), value);
            }
        } else {
            out.push((token, BTreeMap::new()));
        }
    }
    out
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    /// An RFC 7230 token (also token68 characters: `/`, `+`, trailing `=` are not included,
    /// which no registry parameter needs).
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&b) {
                self.i += 1;
            } else {
                break;
            }
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A quoted string, the opening quote at `self.i`; backslash escapes one character.
    fn quoted(&mut self) -> String {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// What a token is asked for: `repository:<name>:pull` or `repository:<name>:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub repository: String,
    pub push: bool,
}

impl Scope {
    pub fn pull(repository: &str) -> Scope {
        Scope {
            repository: repository.to_owned(),
            push: false,
        }
    }

    pub fn push(repository: &str) -> Scope {
        Scope {
            repository: repository.to_owned(),
            push: true,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actions = if self.push { "pull,push" } else { "pull" };
        write!(f, "repository:{}:{actions}", self.repository)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_what_registries_send() {
        let hub = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#;
        assert_eq!(
            Challenge::parse_all([hub]),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
                error: None,
            })
        );
        assert_eq!(
            Challenge::parse_all([r#"Basic realm="Registry Realm""#]),
            Some(Challenge::Basic {
                realm: Some("Registry Realm".into())
            })
        );
        // Both in one value, Basic first: Bearer wins. Unquoted values, odd spacing, escapes.
        let both =
            r#"Basic realm=x , bearer  realm = "http://t/tok\"en" ,error=insufficient_scope"#;
        assert_eq!(
            Challenge::parse_all([both]),
            Some(Challenge::Bearer {
                realm: "http://t/tok\"en".into(),
                service: None,
                scope: None,
                error: Some("insufficient_scope".into()),
            })
        );
        // Several headers; a Bearer without realm is useless and skipped.
        assert_eq!(
            Challenge::parse_all(["Bearer service=x", "Basic"]),
            Some(Challenge::Basic { realm: None })
        );
        assert_eq!(Challenge::parse_all(["Negotiate abc", ""]), None);
    }

    #[test]
    fn scopes_read_as_docker_writes_them() {
        assert_eq!(Scope::pull("ns/app").to_string(), "repository:ns/app:pull");
        assert_eq!(
            Scope::push("library/busybox").to_string(),
            "repository:library/busybox:pull,push"
        );
    }
}
