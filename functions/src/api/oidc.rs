//! Tokens from an OpenID Connect provider (`CONFAB_AUTH=oidc`): RS256 or
//! ES256 access tokens, checked against the provider's published keys.
//!
//! The discovery document names the key set; both are fetched on first use
//! and kept. A token whose key id is not in the set makes one fetch of the
//! set again (the provider rotated its keys), at most once per
//! `refetch_every`, so that tokens with made-up key ids cannot make this
//! process fetch on their behalf. The set is also fetched again when it is
//! older than `MAX_KEYS_AGE`.

use super::auth::{AuthError, LOCAL_OWNER};
use crate::domain::records::Principal;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

/// The key set is fetched again when it is this old, whatever the tokens.
pub const MAX_KEYS_AGE: Duration = Duration::from_secs(3600);
/// A discovery document or key set larger than this is refused.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Keys kept from one set; the rest are ignored.
pub const MAX_KEYS: usize = 32;
/// How long a fetch from the provider may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the verifier needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcSettings {
    /// The provider's issuer URL, exactly as its tokens' `iss`.
    pub issuer: String,
    /// The `aud` the tokens must carry; without it, tokens must carry
    /// `client_id` equal to `client_id` (Cognito's access tokens).
    pub audience: Option<String>,
    /// The web app's client id.
    pub client_id: String,
    /// The least time between two fetches of the key set caused by an
    /// unknown key id.
    pub refetch_every: Duration,
    /// Clock leeway for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

/// Checks tokens of one provider.
pub struct Oidc {
    settings: OidcSettings,
    http: reqwest::Client,
    keys: RwLock<KeySet>,
    /// Held while fetching, so that many requests with a new key id make one
    /// fetch between them.
    fetching: Mutex<Fetches>,
    fetch_count: AtomicU64,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    fetched: Option<Instant>,
}

#[derive(Default)]
struct Fetches {
    jwks_uri: Option<String>,
    /// When an unknown key id last caused a fetch.
    last_unknown: Option<Instant>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    token_use: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Why the provider's keys could not be had (logged, never returned).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("fetching {what} failed")]
    Http {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what} answered {status}")]
    Status {
        what: &'static str,
        status: reqwest::StatusCode,
    },
    #[error("{what} is over {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { what: &'static str },
    #[error("{what} is not valid")]
    Invalid {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the discovery document names issuer {found:?}, not {expected:?}")]
    WrongIssuer { expected: String, found: String },
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Oidc {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        Oidc {
            settings,
            http,
            keys: RwLock::new(KeySet::default()),
            fetching: Mutex::new(Fetches::default()),
            fetch_count: AtomicU64::new(0),
        }
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Where the provider's discovery document is.
    fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        )
    }

    /// How many times the key set has been fetched.
    pub fn key_fetches(&self) -> u64 {
        self.fetch_count.load(Ordering::Relaxed)
    }

    /// Who a token stands for, and until when.
    pub async fn principal(&self, token: &str) -> Result<Principal, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::Invalid)?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Invalid);
        }
        let kid = header.kid.ok_or(AuthError::Invalid)?;
        if kid.len() > 256 {
            return Err(AuthError::Invalid);
        }
        let (alg, key) = self.key(&kid).await?;
        // The key's own algorithm, not the token's word for it.
        if alg != header.alg {
            return Err(AuthError::Invalid);
        }
        let mut validation = Validation::new(alg);
        validation.leeway = self.settings.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        let mut required = vec!["exp", "sub", "iss"];
        match &self.settings.audience {
            Some(a) => {
                validation.set_audience(&[a]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let data = decode::<Claims>(token, &key, &validation).map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            }
        })?;
        let claims = data.claims;
        if self.settings.audience.is_none() {
            // Cognito: access tokens name their app client in `client_id`
            // and say `token_use: access`.
            if claims.client_id.as_deref() != Some(self.settings.client_id.as_str())
                || claims.token_use.as_deref().is_some_and(|u| u != "access")
            {
                return Err(AuthError::Invalid);
            }
        }
        if claims.sub.is_empty() || claims.sub.len() > 256 || claims.sub == LOCAL_OWNER {
            return Err(AuthError::Invalid);
        }
        Ok(Principal {
            owner: claims.sub,
            auth_expires_ms: Some(
                claims
                    .exp
                    .saturating_add(self.settings.leeway_secs as i64)
                    .saturating_mul(1000),
            ),
        })
    }

    /// The key with this id: from the set held, or from the set fetched
    /// again when it is old or the id is new to it.
    async fn key(&self, kid: &str) -> Result<(Algorithm, DecodingKey), AuthError> {
        {
            let set = self.keys.read().await;
            let fresh = set.fetched.is_some_and(|t| t.elapsed() < MAX_KEYS_AGE);
            if fresh && let Some(k) = set.keys.get(kid) {
                return Ok(k.clone());
            }
        }
        let mut fetches = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        {
            let set = self.keys.read().await;
            let fresh = set.fetched.is_some_and(|t| t.elapsed() < MAX_KEYS_AGE);
            if let Some(k) = set.keys.get(kid) {
                if fresh {
                    return Ok(k.clone());
                }
            } else if fresh {
                // A key id the current set lacks: one fetch per interval.
                if fetches
                    .last_unknown
                    .is_some_and(|t| t.elapsed() < self.settings.refetch_every)
                {
                    return Err(AuthError::Invalid);
                }
                fetches.last_unknown = Some(Instant::now());
            }
        }
        match self.fetch(&mut fetches).await {
            Ok(set) => {
                let found = set.keys.get(kid).cloned();
                *self.keys.write().await = set;
                found.ok_or(AuthError::Invalid)
            }
            Err(e) => {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    issuer = %self.settings.issuer,
                    "the identity provider's keys could not be fetched"
                );
                // Keys already held still serve until the provider answers.
                let set = self.keys.read().await;
                set.keys.get(kid).cloned().ok_or(AuthError::Unavailable)
            }
        }
    }

    async fn fetch(&self, fetches: &mut Fetches) -> Result<KeySet, FetchError> {
        let jwks_uri = match &fetches.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let url = self.discovery_url();
                let body = self.get(&url, "the discovery document").await?;
                let doc: Discovery =
                    serde_json::from_slice(&body).map_err(|source| FetchError::Invalid {
                        what: "the discovery document",
                        source,
                    })?;
                if doc.issuer != self.settings.issuer {
                    return Err(FetchError::WrongIssuer {
                        expected: self.settings.issuer.clone(),
                        found: doc.issuer,
                    });
                }
                fetches.jwks_uri = Some(doc.jwks_uri.clone());
                doc.jwks_uri
            }
        };
        let body = self.get(&jwks_uri, "the key set").await?;
        self.fetch_count.fetch_add(1, Ordering::Relaxed);
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let set: Set = serde_json::from_slice(&body).map_err(|source| FetchError::Invalid {
            what: "the key set",
            source,
        })?;
        let keys = set
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
            .filter_map(|jwk| usable(&jwk))
            .take(MAX_KEYS)
            .collect();
        Ok(KeySet {
            keys,
            fetched: Some(Instant::now()),
        })
    }

    /// The origins the web app talks to when it signs in (discovery, token
    /// and revocation endpoints), for the page's `connect-src`: the
    /// issuer's alone when the provider cannot be asked.
    pub async fn browser_origins(&self) -> Vec<String> {
        let mut origins = vec![origin(&self.settings.issuer)];
        let url = self.discovery_url();
        match self.get(&url, "the discovery document").await {
            Ok(body) => {
                let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                for key in ["token_endpoint", "revocation_endpoint"] {
                    if let Some(u) = doc.get(key).and_then(|v| v.as_str()) {
                        origins.push(origin(u));
                    }
                }
            }
            Err(e) => tracing::warn!(
                error = &e as &dyn std::error::Error,
                "the identity provider's discovery document could not be read: the web app may reach only its issuer"
            ),
        }
        origins.sort();
        origins.dedup();
        origins.retain(|o| !o.is_empty());
        origins
    }

    async fn get(&self, url: &str, what: &'static str) -> Result<Vec<u8>, FetchError> {
        let mut res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|source| FetchError::Http { what, source })?;
        if !res.status().is_success() {
            return Err(FetchError::Status {
                what,
                status: res.status(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|source| FetchError::Http { what, source })?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge { what });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A signing key of a kind Confab takes (RSA for RS256, P-256 for ES256),
/// with its id.
fn usable(jwk: &Jwk) -> Option<(String, (Algorithm, DecodingKey))> {
    let kid = jwk.common.key_id.clone()?;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
            if p.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, (alg, key)))
}

/// `scheme://host[:port]` of a URL; empty when it has none.
fn origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
    {
        return String::new();
    }
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origins_are_scheme_and_host() {
        assert_eq!(
            origin("https://id.example.com/realms/x/.well-known"),
            "https://id.example.com"
        );
        assert_eq!(
            origin("http://127.0.0.1:4000/token?x=1"),
            "http://127.0.0.1:4000"
        );
        assert_eq!(origin("https://evil.example.com; script-src *"), "");
        assert_eq!(origin("no scheme"), "");
    }
}
