//! Secrets on AWS: read from Secrets Manager at cold start, by the one
//! function that uses each, never placed in an environment.
//!
//! - The JWT secret (`CONFAB_JWT_SECRET_ARN`) is read by `http_api`, the
//!   only function that verifies tokens. The socket functions take one-use
//!   tickets the API issued, and the worker is invoked by the API.
//! - The provider's API key (`CONFAB_AGENT_API_KEY_SECRET_ARN`) is read by
//!   `turn_worker`, the only function that calls the provider.
//!
//! A function that does not use a secret gets a stand-in that is good for
//! nothing: a random key no token was signed with, and a marker in place of
//! the provider key. The template grants `secretsmanager:GetSecretValue` on
//! each secret to its one function.

use aws_types::SdkConfig;
use base64::Engine as _;
use std::collections::HashMap;

/// Which Lambda function is starting: what it reads decides which secrets
/// it may fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `http_api`: verifies tokens.
    Api,
    /// `ws_connect`, `ws_disconnect`, `ws_route`: tickets and frames only.
    Socket,
    /// `turn_worker`: calls the agent's provider.
    Worker,
}

/// What the provider key stands in as where it is not read.
const NOT_HERE: &str = "not-read-by-this-function";

/// A secret that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{0} must name the Secrets Manager secret to read")]
    Missing(&'static str),
    #[error("reading the secret named by {var} failed")]
    Read {
        var: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the secret named by {0} holds no string")]
    Empty(&'static str),
}

/// The variables a function's configuration takes from Secrets Manager (or
/// stand-ins), by role; read with the environment behind them.
pub async fn resolve(
    sdk: &SdkConfig,
    role: Role,
    get: impl Fn(&str) -> Option<String>,
) -> Result<HashMap<String, String>, SecretError> {
    let set = |k: &str| get(k).filter(|v| !v.trim().is_empty());
    let mut out = HashMap::new();
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    if set("CONFAB_AUTH").as_deref() == Some("jwt") && set("CONFAB_JWT_SECRET").is_none() {
        let value = if role == Role::Api {
            let var = "CONFAB_JWT_SECRET_ARN";
            let arn = set(var).ok_or(SecretError::Missing(var))?;
            read(&client, var, &arn).await?
        } else {
            let bytes: [u8; 32] = rand::random();
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        };
        out.insert("CONFAB_JWT_SECRET".to_string(), value);
    }
    let key_var = match set("CONFAB_AGENT").as_deref() {
        Some("openai") => Some("OPENAI_API_KEY"),
        Some("anthropic") => Some("ANTHROPIC_API_KEY"),
        _ => None,
    };
    if let Some(key_var) = key_var
        && set(key_var).is_none()
    {
        let arn_var = "CONFAB_AGENT_API_KEY_SECRET_ARN";
        match (role, set(arn_var)) {
            (Role::Worker, Some(arn)) => {
                out.insert(key_var.to_string(), read(&client, arn_var, &arn).await?);
            }
            // No key to read: a provider that needs none (a local server).
            (Role::Worker, None) => {}
            // Only the worker calls the provider.
            _ => {
                out.insert(key_var.to_string(), NOT_HERE.to_string());
            }
        }
    }
    Ok(out)
}

async fn read(
    client: &aws_sdk_secretsmanager::Client,
    var: &'static str,
    arn: &str,
) -> Result<String, SecretError> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| SecretError::Read {
            var,
            source: Box::new(e),
        })?;
    out.secret_string()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or(SecretError::Empty(var))
}
