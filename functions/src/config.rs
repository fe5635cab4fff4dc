//! Configuration, read once at start from the environment into one struct.

use std::fmt;

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Turns one local gateway runs at once unless configured: each may be an
/// agent process and a provider stream.
pub const MAX_TURNS: usize = 32;

/// Connections one local gateway holds open at once unless configured: well
/// under a usual limit of open files, with room for the store and agents.
pub const MAX_CONNECTIONS: usize = 4096;

/// The shortest HS256 secret accepted: as long as the hash.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthConfig {
    None,
    /// HS256 tokens; `iss` and `aud` must be these when set.
    JwtHs256 {
        secret: Secret,
        issuer: Option<String>,
        audience: Option<String>,
    },
    /// An OpenID Connect provider's RS256/ES256 tokens.
    Oidc(OidcConfig),
}

/// `CONFAB_AUTH=oidc`: the provider, what its tokens must say, and what the
/// web app signs in with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcConfig {
    /// `CONFAB_OIDC_ISSUER`: the issuer URL, exactly as in the tokens.
    pub issuer: String,
    /// `CONFAB_OIDC_AUDIENCE`: the `aud` access tokens carry. Unset, the
    /// tokens' `client_id` must be the web app's (Cognito).
    pub audience: Option<String>,
    /// `CONFAB_OIDC_CLIENT_ID`: the web app's public client.
    pub client_id: String,
    /// `CONFAB_OIDC_SCOPES`: what the web app asks for.
    pub scopes: String,
    /// `CONFAB_OIDC_KEY_REFETCH_SECS`: the least time between two fetches
    /// of the key set caused by a token with an unknown key id.
    pub key_refetch_secs: u64,
    /// `CONFAB_OIDC_CLOCK_SKEW_SECS`: how far the provider's clock may be
    /// from this one when `exp` and `nbf` are checked.
    pub clock_skew_secs: u64,
}

/// The scopes the web app asks for unless configured.
pub const OIDC_SCOPES: &str = "openid profile email";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentKind {
    Demo,
    OpenAi,
    Anthropic,
    ClaudeCode,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    pub kind: AgentKind,
    pub model: Option<String>,
    pub base_url: Option<String>,
    /// Pause between the demo agent's chunks.
    pub demo_delay_ms: u64,
    /// `OPENAI_API_KEY`; optional for local servers such as Ollama.
    pub openai_api_key: Option<Secret>,
    /// `ANTHROPIC_API_KEY`; required for `anthropic`.
    pub anthropic_api_key: Option<Secret>,
    /// Sent to HTTP providers ahead of the conversation; never stored.
    pub system_prompt: Option<String>,
    /// The most tokens a reply may use (Anthropic requires a value).
    pub max_tokens: u32,
    /// Where `claude-code` runs: a projectId maps to a folder here.
    pub projects_root: Option<std::path::PathBuf>,
    /// The Claude Code executable.
    pub claude_bin: std::path::PathBuf,
    /// Variables the Claude Code child may see beyond its own
    /// (`CONFAB_CLAUDE_ENV`, names separated by commas).
    pub claude_env: Vec<String>,
}

impl AgentConfig {
    /// The demo agent with the given pause between chunks.
    pub fn demo(demo_delay_ms: u64) -> AgentConfig {
        AgentConfig {
            kind: AgentKind::Demo,
            model: None,
            base_url: None,
            demo_delay_ms,
            openai_api_key: None,
            anthropic_api_key: None,
            system_prompt: None,
            max_tokens: 4096,
            projects_root: None,
            claude_bin: "claude".into(),
            claude_env: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub auth: AuthConfig,
    pub agent: AgentConfig,
    /// Sockets one owner may hold at once (`CONFAB_MAX_SOCKETS_PER_OWNER`).
    pub max_sockets_per_owner: usize,
    /// Turns that may run at once in one local gateway (`CONFAB_MAX_TURNS`).
    pub max_turns: usize,
    /// A local socket that sends nothing for this long is closed
    /// (`CONFAB_SOCKET_IDLE_SECS`, default 600, as API Gateway's).
    pub socket_idle_secs: u64,
    /// A request to the person (a tool to approve, a question) nobody
    /// answers is denied after this long (`CONFAB_REQUEST_TIMEOUT_SECS`,
    /// default 1,800: 30 minutes).
    pub request_timeout_secs: u64,
    /// The most a session's permission mode may allow
    /// (`CONFAB_MAX_PERMISSION_MODE`, default `default`).
    pub max_permission_mode: confab_protocol::model::PermissionMode,
    /// What one owner may use: creations and sends per minute, turns at
    /// once, tokens per day.
    pub limits: crate::ports::Limits,
    /// A local request's headers must arrive within this long
    /// (`CONFAB_HEADER_TIMEOUT_SECS`).
    pub header_read_secs: u64,
    /// Connections one local gateway holds open at once, sockets included
    /// (`CONFAB_MAX_CONNECTIONS`).
    pub max_connections: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name}={value:?} is not valid: {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{name} must be set when {because}")]
    Missing {
        name: &'static str,
        because: &'static str,
    },
}

impl Config {
    /// Reads `CONFAB_*` from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get`, so it can be tested without
    /// touching the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let auth = match get("CONFAB_AUTH").as_deref() {
            None | Some("none") => AuthConfig::None,
            Some("jwt") => {
                let secret = get("CONFAB_JWT_SECRET").ok_or(ConfigError::Missing {
                    name: "CONFAB_JWT_SECRET",
                    because: "CONFAB_AUTH=jwt",
                })?;
                // HS256 with a key shorter than its 256-bit hash can be
                // guessed offline from any one token.
                if secret.len() < MIN_JWT_SECRET_BYTES {
                    return Err(ConfigError::Invalid {
                        name: "CONFAB_JWT_SECRET",
                        value: "<redacted>".into(),
                        expected: "at least 32 bytes",
                    });
                }
                AuthConfig::JwtHs256 {
                    secret: Secret(secret),
                    issuer: get("CONFAB_JWT_ISSUER"),
                    audience: get("CONFAB_JWT_AUDIENCE"),
                }
            }
            Some("oidc") => {
                let because = "CONFAB_AUTH=oidc";
                let issuer = get("CONFAB_OIDC_ISSUER").ok_or(ConfigError::Missing {
                    name: "CONFAB_OIDC_ISSUER",
                    because,
                })?;
                // Tokens and keys come from the issuer: never over plain
                // HTTP but on this machine.
                let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                    .iter()
                    .any(|p| issuer.starts_with(p));
                if !(issuer.starts_with("https://") || local) {
                    return Err(ConfigError::Invalid {
                        name: "CONFAB_OIDC_ISSUER",
                        value: issuer,
                        expected: "an https:// URL (http:// only on this machine)",
                    });
                }
                AuthConfig::Oidc(OidcConfig {
                    issuer,
                    audience: get("CONFAB_OIDC_AUDIENCE"),
                    client_id: get("CONFAB_OIDC_CLIENT_ID").ok_or(ConfigError::Missing {
                        name: "CONFAB_OIDC_CLIENT_ID",
                        because,
                    })?,
                    scopes: get("CONFAB_OIDC_SCOPES").unwrap_or_else(|| OIDC_SCOPES.into()),
                    key_refetch_secs: number(
                        get("CONFAB_OIDC_KEY_REFETCH_SECS"),
                        "CONFAB_OIDC_KEY_REFETCH_SECS",
                        30,
                        1,
                        86_400,
                    )?,
                    clock_skew_secs: number(
                        get("CONFAB_OIDC_CLOCK_SKEW_SECS"),
                        "CONFAB_OIDC_CLOCK_SKEW_SECS",
                        30,
                        0,
                        300,
                    )?,
                })
            }
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "CONFAB_AUTH",
                    value: other.into(),
                    expected: "none, jwt or oidc",
                });
            }
        };
        let kind = match get("CONFAB_AGENT").as_deref() {
            None | Some("demo") => AgentKind::Demo,
            Some("openai") => AgentKind::OpenAi,
            Some("anthropic") => AgentKind::Anthropic,
            Some("claude-code") => AgentKind::ClaudeCode,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "CONFAB_AGENT",
                    value: other.into(),
                    expected: "demo, openai, anthropic or claude-code",
                });
            }
        };
        let demo_delay_ms = number(
            get("CONFAB_DEMO_DELAY_MS"),
            "CONFAB_DEMO_DELAY_MS",
            30,
            0,
            60_000,
        )?;
        let max_tokens = number(
            get("CONFAB_AGENT_MAX_TOKENS"),
            "CONFAB_AGENT_MAX_TOKENS",
            4096,
            1,
            1_000_000,
        )? as u32;
        let anthropic_api_key = get("ANTHROPIC_API_KEY").map(Secret);
        if kind == AgentKind::Anthropic && anthropic_api_key.is_none() {
            return Err(ConfigError::Missing {
                name: "ANTHROPIC_API_KEY",
                because: "CONFAB_AGENT=anthropic",
            });
        }
        let projects_root = get("CONFAB_PROJECTS_ROOT").map(std::path::PathBuf::from);
        if kind == AgentKind::ClaudeCode && projects_root.is_none() {
            return Err(ConfigError::Missing {
                name: "CONFAB_PROJECTS_ROOT",
                because: "CONFAB_AGENT=claude-code",
            });
        }
        if kind == AgentKind::ClaudeCode && !matches!(auth, AuthConfig::None) {
            return Err(ConfigError::Invalid {
                name: "CONFAB_AGENT",
                value: "claude-code".into(),
                expected: "an agent other than claude-code when auth is on: Claude Code runs as this machine's one user, in folders all sessions share",
            });
        }
        let limits = crate::ports::Limits {
            creates_per_minute: number(
                get("CONFAB_CREATE_RATE"),
                "CONFAB_CREATE_RATE",
                20,
                1,
                1_000_000,
            )? as u32,
            sends_per_minute: number(
                get("CONFAB_SEND_RATE"),
                "CONFAB_SEND_RATE",
                30,
                1,
                1_000_000,
            )? as u32,
            turns_per_owner: number(
                get("CONFAB_MAX_TURNS_PER_OWNER"),
                "CONFAB_MAX_TURNS_PER_OWNER",
                8,
                1,
                100_000,
            )? as u32,
            daily_tokens: match get("CONFAB_DAILY_TOKENS") {
                None => None,
                Some(v) => Some(number(Some(v), "CONFAB_DAILY_TOKENS", 0, 1, u64::MAX / 2)?),
            },
        };
        let max_permission_mode = match get("CONFAB_MAX_PERMISSION_MODE") {
            None => confab_protocol::model::PermissionMode::Default,
            Some(v) => confab_protocol::model::PermissionMode::ALL
                .into_iter()
                .find(|m| m.as_str() == v)
                .ok_or(ConfigError::Invalid {
                    name: "CONFAB_MAX_PERMISSION_MODE",
                    value: v.clone(),
                    expected: "plan, default, acceptEdits or bypassPermissions",
                })?,
        };
        let max_sockets_per_owner = number(
            get("CONFAB_MAX_SOCKETS_PER_OWNER"),
            "CONFAB_MAX_SOCKETS_PER_OWNER",
            crate::api::socket::MAX_SOCKETS_PER_OWNER as u64,
            1,
            100_000,
        )? as usize;
        let max_turns = number(
            get("CONFAB_MAX_TURNS"),
            "CONFAB_MAX_TURNS",
            MAX_TURNS as u64,
            1,
            100_000,
        )? as usize;
        let socket_idle_secs = number(
            get("CONFAB_SOCKET_IDLE_SECS"),
            "CONFAB_SOCKET_IDLE_SECS",
            600,
            1,
            86_400,
        )?;
        let request_timeout_secs = number(
            get("CONFAB_REQUEST_TIMEOUT_SECS"),
            "CONFAB_REQUEST_TIMEOUT_SECS",
            1_800,
            1,
            7 * 86_400,
        )?;
        let header_read_secs = number(
            get("CONFAB_HEADER_TIMEOUT_SECS"),
            "CONFAB_HEADER_TIMEOUT_SECS",
            10,
            1,
            3_600,
        )?;
        let max_connections = number(
            get("CONFAB_MAX_CONNECTIONS"),
            "CONFAB_MAX_CONNECTIONS",
            MAX_CONNECTIONS as u64,
            1,
            1_000_000,
        )? as usize;
        Ok(Config {
            auth,
            header_read_secs,
            max_connections,
            max_permission_mode,
            max_sockets_per_owner,
            max_turns,
            socket_idle_secs,
            request_timeout_secs,
            agent: AgentConfig {
                kind,
                model: get("CONFAB_AGENT_MODEL"),
                base_url: get("CONFAB_AGENT_BASE_URL"),
                demo_delay_ms,
                openai_api_key: get("OPENAI_API_KEY").map(Secret),
                anthropic_api_key,
                system_prompt: get("CONFAB_AGENT_SYSTEM_PROMPT"),
                max_tokens,
                projects_root,
                claude_bin: get("CONFAB_CLAUDE_BIN").map_or_else(|| "claude".into(), Into::into),
                claude_env: get("CONFAB_CLAUDE_ENV")
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|n| !n.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            limits,
        })
    }
}

fn number(
    v: Option<String>,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::Invalid {
            name,
            value: v,
            expected: "a whole number in range",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_are_local_demo() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.auth, AuthConfig::None);
        assert_eq!(c.agent.kind, AgentKind::Demo);
        assert_eq!(c.agent.demo_delay_ms, 30);
        assert_eq!(c.limits.creates_per_minute, 20);
        assert_eq!(c.limits.sends_per_minute, 30);
        assert_eq!(c.limits.turns_per_owner, 8);
        assert_eq!(c.limits.daily_tokens, None);
    }

    #[test]
    fn oidc_needs_an_issuer_over_https_and_a_client() {
        assert_eq!(
            cfg(&[("CONFAB_AUTH", "oidc")]).unwrap_err(),
            ConfigError::Missing {
                name: "CONFAB_OIDC_ISSUER",
                because: "CONFAB_AUTH=oidc"
            }
        );
        assert_eq!(
            cfg(&[
                ("CONFAB_AUTH", "oidc"),
                ("CONFAB_OIDC_ISSUER", "https://id.example.com")
            ])
            .unwrap_err(),
            ConfigError::Missing {
                name: "CONFAB_OIDC_CLIENT_ID",
                because: "CONFAB_AUTH=oidc"
            }
        );
        // Keys fetched over plain HTTP from another machine could be
        // anyone's.
        assert!(matches!(
            cfg(&[
                ("CONFAB_AUTH", "oidc"),
                ("CONFAB_OIDC_ISSUER", "http://id.example.com"),
                ("CONFAB_OIDC_CLIENT_ID", "web"),
            ]),
            Err(ConfigError::Invalid {
                name: "CONFAB_OIDC_ISSUER",
                ..
            })
        ));
        let c = cfg(&[
            ("CONFAB_AUTH", "oidc"),
            ("CONFAB_OIDC_ISSUER", "https://id.example.com"),
            ("CONFAB_OIDC_CLIENT_ID", "web"),
        ])
        .unwrap();
        assert_eq!(
            c.auth,
            AuthConfig::Oidc(OidcConfig {
                issuer: "https://id.example.com".into(),
                audience: None,
                client_id: "web".into(),
                scopes: OIDC_SCOPES.into(),
                key_refetch_secs: 30,
                clock_skew_secs: 30,
            })
        );
        // Claude Code runs as this machine's one user: never behind sign-in.
        assert!(
            cfg(&[
                ("CONFAB_AUTH", "oidc"),
                ("CONFAB_OIDC_ISSUER", "https://id.example.com"),
                ("CONFAB_OIDC_CLIENT_ID", "web"),
                ("CONFAB_AGENT", "claude-code"),
                ("CONFAB_PROJECTS_ROOT", "/tmp"),
            ])
            .is_err()
        );
    }

    #[test]
    fn jwt_needs_a_secret_and_hides_it() {
        assert_eq!(
            cfg(&[("CONFAB_AUTH", "jwt")]).unwrap_err(),
            ConfigError::Missing {
                name: "CONFAB_JWT_SECRET",
                because: "CONFAB_AUTH=jwt"
            }
        );
        let c = cfg(&[
            ("CONFAB_AUTH", "jwt"),
            ("CONFAB_JWT_SECRET", "a-long-enough-secret-of-32-bytes!"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("a-long-enough-secret"));
        // 31 bytes are refused: an HS256 key as short as that can be
        // guessed from one token.
        assert!(matches!(
            cfg(&[
                ("CONFAB_AUTH", "jwt"),
                ("CONFAB_JWT_SECRET", "0123456789012345678901234567890"),
            ]),
            Err(ConfigError::Invalid {
                name: "CONFAB_JWT_SECRET",
                ..
            })
        ));
        let c = cfg(&[
            ("CONFAB_AUTH", "jwt"),
            ("CONFAB_JWT_SECRET", "a-long-enough-secret-of-32-bytes!"),
            ("CONFAB_JWT_ISSUER", "https://id.example.com"),
            ("CONFAB_JWT_AUDIENCE", "confab"),
        ])
        .unwrap();
        assert!(matches!(
            c.auth,
            AuthConfig::JwtHs256 { issuer: Some(ref i), audience: Some(ref a), .. }
                if i == "https://id.example.com" && a == "confab"
        ));
    }

    #[test]
    fn providers_need_what_they_need_and_keys_stay_hidden() {
        assert_eq!(
            cfg(&[("CONFAB_AGENT", "anthropic")]).unwrap_err(),
            ConfigError::Missing {
                name: "ANTHROPIC_API_KEY",
                because: "CONFAB_AGENT=anthropic"
            }
        );
        assert!(cfg(&[("CONFAB_AGENT", "claude-code")]).is_err());
        let jwt_claude = cfg(&[
            ("CONFAB_AGENT", "claude-code"),
            ("CONFAB_PROJECTS_ROOT", "/tmp"),
            ("CONFAB_AUTH", "jwt"),
            ("CONFAB_JWT_SECRET", "a-long-enough-secret-of-32-bytes!"),
        ]);
        assert!(jwt_claude.unwrap_err().to_string().contains("claude-code"));
        let c = cfg(&[
            ("CONFAB_AGENT", "openai"),
            ("OPENAI_API_KEY", "sk-very-secret"),
        ])
        .unwrap();
        assert_eq!(c.agent.kind, AgentKind::OpenAi);
        assert!(!format!("{c:?}").contains("sk-very-secret"));
        let c = cfg(&[
            ("CONFAB_AGENT", "anthropic"),
            ("ANTHROPIC_API_KEY", "sk-ant-secret"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("sk-ant-secret"));
    }

    #[test]
    fn bad_values_are_named() {
        let e = cfg(&[("CONFAB_DEMO_DELAY_MS", "soon")]).unwrap_err();
        assert!(e.to_string().contains("CONFAB_DEMO_DELAY_MS"));
        assert!(cfg(&[("CONFAB_AGENT", "gpt")]).is_err());
        assert!(cfg(&[("CONFAB_AUTH", "maybe")]).is_err());
    }
}
