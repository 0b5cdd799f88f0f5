//! Bearer tokens cached per registry host and scope set, until shortly before they expire.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The token spec: a token that names no lifetime lives 60 s, and none is taken to live less.
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A token is renewed this long before it expires, so it does not expire in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: String,
    pub expires: Instant,
}

/// Tokens by (host, scopes).
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    map: Mutex<HashMap<(String, String), Token>>,
}

fn key(host: &str, scopes: &[String]) -> (String, String) {
    let mut s = scopes.to_vec();
    s.sort();
    s.dedup();
    (host.to_owned(), s.join(" "))
}

impl Tokens {
    pub fn get(&self, host: &str, scopes: &[String], now: Instant) -> Option<String> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&key(host, scopes))
            .filter(|t| now < t.expires)
            .map(|t| t.value.clone())
    }

    pub fn put(&self, host: &str, scopes: &[String], token: Token) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(key(host, scopes), token);
    }

    /// Drops the token for these scopes (the registry refused it).
    pub fn forget(&self, host: &str, scopes: &[String]) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(&key(host, scopes));
    }
}

/// When a token issued `now` with `expires_in` seconds must be renewed.
pub(super) fn expiry(now: Instant, expires_in: Option<u64>) -> Instant {
    let lifetime = Duration::from_secs(expires_in.unwrap_or(0)).max(MIN_TOKEN_LIFETIME);
    now + lifetime - EXPIRY_MARGIN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_are_forgotten() {
        let t = Tokens::default();
        let scopes = vec!["repository:a:pull".to_owned()];
        let now = Instant::now();
        t.put(
            "h",
            &scopes,
            Token {
                value: "v".into(),
                expires: expiry(now, Some(300)),
            },
        );
        assert_eq!(t.get("h", &scopes, now).as_deref(), Some("v"));
        assert_eq!(t.get("h", &scopes, now + Duration::from_secs(291)), None);
        assert_eq!(t.get("other", &scopes, now), None);
        // A lifetime under a minute counts as a minute (the token spec's minimum).
        assert_eq!(expiry(now, Some(5)), now + Duration::from_secs(50));
        t.forget("h", &scopes);
        assert_eq!(t.get("h", &scopes, now), None);
    }
}
