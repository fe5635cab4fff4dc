//! Who is calling: `CONFAB_AUTH=none` (everyone is `local`), `jwt` (HS256,
//! for tests and scripts) or `oidc` (an OpenID Connect provider's tokens).
//! The owner is the token's `sub`.

use super::oidc::{Oidc, OidcSettings};
use crate::domain::records::Principal;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use std::fmt;

/// The owner of everything when auth is off.
pub const LOCAL_OWNER: &str = "local";

pub enum Auth {
    None,
    Jwt(Box<JwtKey>),
    Oidc(Box<Oidc>),
}

pub struct JwtKey {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::Jwt(_) => f.write_str("Auth::Jwt { key: <redacted> }"),
            Auth::Oidc(o) => o.fmt(f),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("a bearer token is required")]
    Missing,
    #[error("the token is not valid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    /// The identity provider's keys could not be fetched.
    #[error("the identity provider cannot be reached")]
    Unavailable,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
}

impl Auth {
    /// The auth the configuration asks for.
    pub fn from_config(config: &crate::config::AuthConfig) -> Auth {
        match config {
            crate::config::AuthConfig::None => Auth::None,
            crate::config::AuthConfig::JwtHs256 {
                secret,
                issuer,
                audience,
            } => Auth::hs256_for(
                secret.expose().as_bytes(),
                issuer.as_deref(),
                audience.as_deref(),
            ),
            crate::config::AuthConfig::Oidc(o) => Auth::Oidc(Box::new(Oidc::new(OidcSettings {
                issuer: o.issuer.clone(),
                audience: o.audience.clone(),
                client_id: o.client_id.clone(),
                refetch_every: std::time::Duration::from_secs(o.key_refetch_secs),
                leeway_secs: o.clock_skew_secs,
            }))),
        }
    }

    /// HS256 tokens signed with `secret`, from any issuer, for any audience.
    pub fn hs256(secret: &[u8]) -> Auth {
        Auth::hs256_for(secret, None, None)
    }

    /// HS256 tokens signed with `secret`: `exp` and `sub` required, `nbf`
    /// checked when present, `iss` and `aud` required to be these when
    /// given (each with 30 s of leeway for clocks).
    pub fn hs256_for(secret: &[u8], issuer: Option<&str>, audience: Option<&str>) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        validation.validate_nbf = true;
        validation.leeway = 30;
        match issuer {
            Some(i) => {
                validation.set_issuer(&[i]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match audience {
            Some(a) => {
                validation.set_audience(&[a]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Auth::Jwt(Box::new(JwtKey {
            key: DecodingKey::from_secret(secret),
            validation,
        }))
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Jwt(_) => "jwt",
            Auth::Oidc(_) => "oidc",
        }
    }

    /// Whether callers must show a token (and sockets a ticket).
    pub fn required(&self) -> bool {
        !matches!(self, Auth::None)
    }

    /// The owner a token stands for.
    pub async fn owner(&self, token: Option<&str>) -> Result<String, AuthError> {
        self.principal(token).await.map(|p| p.owner)
    }

    /// Who a token stands for, and until when: its `exp` with the leeway
    /// it is checked with.
    pub async fn principal(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        match self {
            Auth::None => Ok(Principal {
                owner: LOCAL_OWNER.to_string(),
                auth_expires_ms: None,
            }),
            Auth::Oidc(o) => {
                let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
                o.principal(token).await
            }
            Auth::Jwt(k) => {
                let (key, validation) = (&k.key, &k.validation);
                let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
                let data = decode::<Claims>(token, key, validation).map_err(|e| {
                    tracing::debug!(error = %e, "token refused");
                    match e.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                        _ => AuthError::Invalid,
                    }
                })?;
                let sub = data.claims.sub;
                // `local` is the owner of everything when auth is off: a
                // token must not reach those sessions.
                if sub.is_empty() || sub.len() > 256 || sub == LOCAL_OWNER {
                    return Err(AuthError::Invalid);
                }
                let until = data
                    .claims
                    .exp
                    .saturating_add(validation.leeway as i64)
                    .saturating_mul(1000);
                Ok(Principal {
                    owner: sub,
                    auth_expires_ms: Some(until),
                })
            }
        }
    }

    /// The owner named by an `Authorization: Bearer …` header value.
    pub async fn owner_from_header(&self, header: Option<&str>) -> Result<String, AuthError> {
        self.principal_from_header(header).await.map(|p| p.owner)
    }

    /// Who an `Authorization: Bearer …` header value stands for.
    pub async fn principal_from_header(
        &self,
        header: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let token = header.and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
        });
        self.principal(token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn token(secret: &[u8], sub: &str, exp_offset: i64) -> String {
        let exp = crate::clock::now_ms() / 1000 + exp_offset;
        encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": sub, "exp": exp}),
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn none_mode_is_local() {
        assert_eq!(Auth::None.owner(None).await.unwrap(), "local");
    }

    #[tokio::test]
    async fn jwt_mode_takes_sub_and_refuses_the_rest() {
        let a = Auth::hs256(b"s3cret");
        assert_eq!(
            a.owner(Some(&token(b"s3cret", "alice", 600)))
                .await
                .unwrap(),
            "alice"
        );
        assert_eq!(
            a.owner_from_header(Some(&format!("Bearer {}", token(b"s3cret", "bob", 600))))
                .await
                .unwrap(),
            "bob"
        );
        assert_eq!(a.owner(None).await, Err(AuthError::Missing));
        assert_eq!(
            a.owner(Some(&token(b"other", "alice", 600))).await,
            Err(AuthError::Invalid)
        );
        assert_eq!(
            a.owner(Some(&token(b"s3cret", "alice", -600))).await,
            Err(AuthError::Expired)
        );
        assert_eq!(a.owner(Some("garbage")).await, Err(AuthError::Invalid));
        assert_eq!(
            a.owner_from_header(Some("Basic abc")).await,
            Err(AuthError::Missing)
        );
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn signed(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(KEY),
        )
        .unwrap()
    }

    fn jwt(issuer: Option<&str>, audience: Option<&str>) -> Auth {
        Auth::from_config(&crate::config::AuthConfig::JwtHs256 {
            secret: crate::config::Secret::new(std::str::from_utf8(KEY).unwrap()),
            issuer: issuer.map(str::to_string),
            audience: audience.map(str::to_string),
        })
    }

    #[tokio::test]
    async fn a_token_not_valid_yet_is_refused() {
        let now = crate::clock::now_ms() / 1000;
        let a = jwt(None, None);
        let later =
            signed(serde_json::json!({"sub": "alice", "exp": now + 3600, "nbf": now + 600}));
        assert_eq!(a.owner(Some(&later)).await, Err(AuthError::Invalid));
        let now_valid =
            signed(serde_json::json!({"sub": "alice", "exp": now + 3600, "nbf": now - 5}));
        assert_eq!(a.owner(Some(&now_valid)).await.unwrap(), "alice");
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let now = crate::clock::now_ms() / 1000;
        let claims = |iss: &str, aud: &str| {
            signed(serde_json::json!({"sub": "alice", "exp": now + 600, "iss": iss, "aud": aud}))
        };
        let a = jwt(Some("https://id.example.com"), Some("confab"));
        assert_eq!(
            a.owner(Some(&claims("https://id.example.com", "confab")))
                .await
                .unwrap(),
            "alice"
        );
        assert_eq!(
            a.owner(Some(&claims("https://evil.example.com", "confab")))
                .await,
            Err(AuthError::Invalid)
        );
        assert_eq!(
            a.owner(Some(&claims("https://id.example.com", "another-app")))
                .await,
            Err(AuthError::Invalid)
        );
        let bare = signed(serde_json::json!({"sub": "alice", "exp": now + 600}));
        assert_eq!(a.owner(Some(&bare)).await, Err(AuthError::Invalid));
        // Unconfigured, a token that names an audience is taken, as a
        // standard identity provider's tokens all do.
        let open = jwt(None, None);
        assert_eq!(
            open.owner(Some(&claims("https://id.example.com", "confab")))
                .await
                .unwrap(),
            "alice"
        );
    }

    #[tokio::test]
    async fn the_local_owner_cannot_be_claimed_with_a_token() {
        let now = crate::clock::now_ms() / 1000;
        let a = jwt(None, None);
        let t = signed(serde_json::json!({"sub": LOCAL_OWNER, "exp": now + 600}));
        assert_eq!(a.owner(Some(&t)).await, Err(AuthError::Invalid));
    }

    #[tokio::test]
    async fn debug_hides_the_key() {
        assert!(!format!("{:?}", Auth::hs256(b"s3cret")).contains("s3cret"));
    }
}
