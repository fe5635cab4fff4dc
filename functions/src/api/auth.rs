//! Who is calling: `CONFAB_AUTH=none` (everyone is `local`) or `jwt`
//! (HS256; the owner is the token's `sub`).

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use std::fmt;

/// The owner of everything when auth is off.
pub const LOCAL_OWNER: &str = "local";

pub enum Auth {
    None,
    Jwt(Box<JwtKey>),
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
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("a bearer token is required")]
    Missing,
    #[error("the token is not valid")]
    Invalid,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Auth {
    /// The auth the configuration asks for.
    pub fn from_config(config: &crate::config::AuthConfig) -> Auth {
        match config {
            crate::config::AuthConfig::None => Auth::None,
            crate::config::AuthConfig::JwtHs256 { secret } => {
                Auth::hs256(secret.expose().as_bytes())
            }
        }
    }

    pub fn hs256(secret: &[u8]) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        Auth::Jwt(Box::new(JwtKey {
            key: DecodingKey::from_secret(secret),
            validation,
        }))
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Jwt(_) => "jwt",
        }
    }

    /// The owner a token stands for.
    pub fn owner(&self, token: Option<&str>) -> Result<String, AuthError> {
        match self {
            Auth::None => Ok(LOCAL_OWNER.to_string()),
            Auth::Jwt(k) => {
                let (key, validation) = (&k.key, &k.validation);
                let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
                let data = decode::<Claims>(token, key, validation).map_err(|e| {
                    tracing::debug!(error = %e, "token refused");
                    AuthError::Invalid
                })?;
                let sub = data.claims.sub;
                if sub.is_empty() || sub.len() > 256 {
                    return Err(AuthError::Invalid);
                }
                Ok(sub)
            }
        }
    }

    /// The owner named by an `Authorization: Bearer …` header value.
    pub fn owner_from_header(&self, header: Option<&str>) -> Result<String, AuthError> {
        let token = header.and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
        });
        self.owner(token)
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

    #[test]
    fn none_mode_is_local() {
        assert_eq!(Auth::None.owner(None).unwrap(), "local");
    }

    #[test]
    fn jwt_mode_takes_sub_and_refuses_the_rest() {
        let a = Auth::hs256(b"s3cret");
        assert_eq!(
            a.owner(Some(&token(b"s3cret", "alice", 600))).unwrap(),
            "alice"
        );
        assert_eq!(
            a.owner_from_header(Some(&format!("Bearer {}", token(b"s3cret", "bob", 600))))
                .unwrap(),
            "bob"
        );
        assert_eq!(a.owner(None), Err(AuthError::Missing));
        assert_eq!(
            a.owner(Some(&token(b"other", "alice", 600))),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            a.owner(Some(&token(b"s3cret", "alice", -600))),
            Err(AuthError::Invalid)
        );
        assert_eq!(a.owner(Some("garbage")), Err(AuthError::Invalid));
        assert_eq!(
            a.owner_from_header(Some("Basic abc")),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn debug_hides_the_key() {
        assert!(!format!("{:?}", Auth::hs256(b"s3cret")).contains("s3cret"));
    }
}
