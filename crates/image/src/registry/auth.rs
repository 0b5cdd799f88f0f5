//! The `Authorization` header of a request: none, Basic, or a bearer token from the token
//! server the registry's challenge names (docker's token flow), cached per host and scopes
//! until it expires.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::time::Instant;

use serde::Deserialize;
use ureq::SendBody;
use ureq::http;

use super::challenge::Challenge;
use super::credentials::AuthEntry;
use super::error::{Op, RegistryError};
use super::tokens::{Token, expiry};
use super::transport::{Endpoint, Host, Transport, error_detail};

/// Token answers are small.
const TOKEN_BODY_LIMIT: u64 = 1024 * 1024;
/// How Berth names itself to token servers (`client_id`).
const CLIENT_ID: &str = "berth";

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Transport {
    /// The `Authorization` value for a request to `ep` needing `scopes` under `challenge`.
    pub(crate) fn authorization(
        &self,
        ep: &Endpoint,
        host: &Host,
        challenge: Option<&Challenge>,
        scopes: &[String],
        op: &Op,
    ) -> Result<Option<String>, RegistryError> {
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic { .. }) => match self.credentials_for(ep)? {
                Some(AuthEntry::Basic { username, password }) => Ok(Some(format!(
                    "Basic {}",
                    BASE64.encode(format!("{username}:{password}"))
                ))),
                // An identity token is for token servers; without a user and password the
                // request goes anonymously and the 401 says so.
                Some(AuthEntry::IdentityToken(_)) | None => Ok(None),
            },
            Some(Challenge::Bearer { realm, service, .. }) => {
                if let Some(t) = self.tokens.get(&ep.host, scopes, Instant::now()) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let token = self.fetch_token(ep, host, realm, service.as_deref(), scopes, op)?;
                let value = format!("Bearer {}", token.value);
                self.tokens.put(&ep.host, scopes, token);
                Ok(Some(value))
            }
        }
    }

    /// Asks the token server for a token for `scopes`: `GET realm?service=…&scope=…` with
    /// Basic credentials when there are some, or with an identity (refresh) token the OAuth2
    /// `POST` form.
    fn fetch_token(
        &self,
        ep: &Endpoint,
        host: &Host,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        op: &Op,
    ) -> Result<Token, RegistryError> {
        let creds = self.credentials_for(ep)?;
        let now = Instant::now();
        let result = match &creds {
            Some(AuthEntry::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", refresh.clone()),
                    ("client_id", CLIENT_ID.to_owned()),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_owned()));
                }
                if !scopes.is_empty() {
                    form.push(("scope", scopes.join(" ")));
                }
                let body = form
                    .iter()
                    .map(|(k, v)| format!("{k}={}", form_encode(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                http::Request::post(realm)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.into_bytes())
                    .map_err(ureq::Error::Http)
                    .and_then(|req| host.agent.run(req))
            }
            _ => {
                let mut url = String::from(realm);
                let mut sep = if realm.contains('?') { '&' } else { '?' };
                let mut param = |k: &str, v: &str| {
                    url.push(sep);
                    url.push_str(k);
                    url.push('=');
                    url.push_str(&form_encode(v));
                    sep = '&';
                };
                if let Some(s) = service {
                    param("service", s);
                }
                for s in scopes {
                    param("scope", s);
                }
                // docker sends the user as `account` too; some token servers want it.
                if let Some(AuthEntry::Basic { username, .. }) = &creds {
                    param("account", username);
                }
                let mut builder = http::Request::get(url.as_str());
                if let Some(AuthEntry::Basic { username, password }) = &creds {
                    builder = builder.header(
                        "Authorization",
                        format!("Basic {}", BASE64.encode(format!("{username}:{password}"))),
                    );
                }
                builder
                    .body(SendBody::none())
                    .map_err(ureq::Error::Http)
                    .and_then(|req| host.agent.run(req))
            }
        };
        let mut resp = result.map_err(|e| self.transport_err(ep, op, realm, e))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(match creds {
                Some(_) => RegistryError::AuthenticationFailed {
                    registry: ep.key.clone(),
                    detail: error_detail(resp),
                },
                None => RegistryError::AuthenticationRequired {
                    registry: ep.key.clone(),
                    repository: ep.repository.clone(),
                    op: op.clone(),
                },
            });
        }
        if !(200..300).contains(&status) {
            return Err(RegistryError::Token {
                registry: ep.key.clone(),
                realm: realm.to_owned(),
                detail: error_detail(resp),
            });
        }
        let token_err = |detail: String| RegistryError::Token {
            registry: ep.key.clone(),
            realm: realm.to_owned(),
            detail,
        };
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(TOKEN_BODY_LIMIT)
            .read_to_vec()
            .map_err(|e| token_err(format!("reading the answer: {e}")))?;
        let answer: TokenAnswer = serde_json::from_slice(&bytes)
            .map_err(|e| token_err(format!("not a token answer: {e}")))?;
        let value = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_err("no token in the answer".to_owned()))?;
        Ok(Token {
            value,
            expires: expiry(now, answer.expires_in),
        })
    }
}

/// `application/x-www-form-urlencoded` / query encoding: unreserved characters stay.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_scopes_for_the_query() {
        assert_eq!(
            form_encode("repository:ns/app:pull,push"),
            "repository%3Ans%2Fapp%3Apull%2Cpush"
        );
    }
}
