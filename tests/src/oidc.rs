//! A real OpenID Connect provider for the tests: the certified npm package
//! `oidc-provider` (which `cargo xtask test` installs under `target/tools`),
//! run by `tests/oidc/provider.mjs` on a free port with two users, a public
//! client for the web app, JWT access tokens for Confab's API, and a
//! test-only `POST /__test/rotate` that rotates its signing key.
//!
//! `sign_in` goes through the provider's own login page over HTTP as a
//! browser would (authorization code with PKCE); `sign` makes tokens with
//! the provider's own keys, for the claims a provider would never issue.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// The audience of the provider's access tokens: Confab's API.
pub const RESOURCE: &str = "urn:confab:api";
/// The web app's public client.
pub const CLIENT_ID: &str = "confab-web";
/// What the web app asks for.
pub const SCOPES: &str = "openid profile email";

/// A person the provider knows.
#[derive(Clone, Copy, Debug)]
pub struct User {
    pub sub: &'static str,
    pub login: &'static str,
    pub password: &'static str,
    pub name: &'static str,
    pub email: &'static str,
}

pub const ALICE: User = User {
    sub: "alice-0001",
    login: "alice",
    password: "correct horse alice",
    name: "Alice Example",
    email: "alice@example.com",
};

pub const BOB: User = User {
    sub: "bob-0002",
    login: "bob",
    password: "correct horse bob",
    name: "Bob Example",
    email: "bob@example.com",
};

/// How to run the provider.
pub struct Options<'a> {
    /// `RS256` or `ES256`, for access tokens.
    pub alg: &'a str,
    /// Access token lifetime, seconds.
    pub access_ttl: u64,
    /// Where the web app may be sent back to (its origin plus `/`).
    pub redirect_uris: Vec<String>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            alg: "RS256",
            access_ttl: 300,
            redirect_uris: vec!["http://127.0.0.1:9/".into()],
        }
    }
}

/// A running provider.
pub struct Provider {
    _child: Child,
    /// Held open: the provider exits when it closes.
    _stdin: ChildStdin,
    pub issuer: String,
    keys_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// One of the provider's signing keys.
#[derive(Clone, Debug)]
pub struct Key {
    pub kid: String,
    pub alg: String,
    /// PKCS#1 (RSA) or PKCS#8 (EC) DER.
    pub private_der: Vec<u8>,
}

/// What the token endpoint answers.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub access: String,
    pub refresh: Option<String>,
    pub id: Option<String>,
}

fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/node_modules")
}

impl Provider {
    pub async fn start(opts: Options<'_>) -> Provider {
        let module = tools().join("oidc-provider");
        assert!(
            module.join("lib/index.js").is_file(),
            "oidc-provider is not installed in {}: `cargo xtask test` installs it",
            module.display()
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let issuer = format!("http://127.0.0.1:{port}");
        let dir = tempfile::tempdir().expect("temp dir");
        let keys_file = dir.path().join("keys.json");
        let users: Vec<Value> = [ALICE, BOB]
            .iter()
            .map(|u| {
                json!({"sub": u.sub, "login": u.login, "password": u.password,
                       "name": u.name, "email": u.email})
            })
            .collect();
        let config = json!({
            "port": port,
            "issuer": issuer,
            "keysFile": keys_file,
            "resource": RESOURCE,
            "accessTokenAlg": opts.alg,
            "accessTokenTtl": opts.access_ttl,
            "idTokenTtl": 3600,
            "clients": [{
                "client_id": CLIENT_ID,
                "redirect_uris": opts.redirect_uris,
                "post_logout_redirect_uris": opts.redirect_uris,
            }],
            "users": users,
        });
        let config_file = dir.path().join("config.json");
        std::fs::write(&config_file, config.to_string()).expect("provider config");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc/provider.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .arg(&config_file)
            .env("OIDC_PROVIDER_MODULE", &module)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting node (the tests need node)");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the provider did not start in time")
            .expect("reading the provider's output")
            .expect("the provider exited before it was ready");
        assert_eq!(line.trim(), format!("oidc-provider ready {issuer}"));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Provider {
            _child: child,
            _stdin: stdin,
            issuer,
            keys_file,
            _dir: dir,
        }
    }

    /// The signing keys, newest first.
    pub fn keys(&self) -> Vec<Key> {
        let v: Value = serde_json::from_slice(&std::fs::read(&self.keys_file).expect("keys file"))
            .expect("keys JSON");
        v["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| Key {
                kid: k["kid"].as_str().expect("kid").into(),
                alg: k["alg"].as_str().expect("alg").into(),
                private_der: base64::engine::general_purpose::STANDARD
                    .decode(k["privateDer"].as_str().expect("DER"))
                    .expect("base64"),
            })
            .collect()
    }

    /// A new signing key for access tokens; the old ones stay published.
    /// Returns its id.
    pub async fn rotate(&self) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/__test/rotate", self.issuer))
            .send()
            .await
            .expect("rotating");
        assert!(r.status().is_success());
        let v: Value = r.json().await.expect("rotation JSON");
        v["kid"].as_str().expect("kid").to_string()
    }

    /// A token with these claims signed with `key`.
    pub fn sign(key: &Key, claims: &Value) -> String {
        let (alg, encoding) = match key.alg.as_str() {
            "RS256" => (
                Algorithm::RS256,
                EncodingKey::from_rsa_der(&key.private_der),
            ),
            "ES256" => (Algorithm::ES256, EncodingKey::from_ec_der(&key.private_der)),
            other => panic!("unexpected key type {other}"),
        };
        let mut header = Header::new(alg);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &encoding).expect("signing")
    }

    /// Claims as the provider's access tokens carry them, for `user`,
    /// valid from now for `ttl` seconds.
    pub fn claims(&self, user: &User, ttl: i64) -> Value {
        let now = now_secs();
        json!({
            "sub": user.sub, "iss": self.issuer, "aud": RESOURCE, "client_id": CLIENT_ID,
            "iat": now, "exp": now + ttl, "scope": SCOPES, "jti": uuid::Uuid::now_v7().to_string(),
        })
    }

    /// Signs in as `user` through the provider's login page, as a browser
    /// would, and exchanges the code (with PKCE) for tokens.
    pub async fn sign_in(&self, user: &User, redirect_uri: &str) -> Tokens {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(uuid::Uuid::now_v7().as_bytes().repeat(2));
        let challenge = {
            use sha2::Digest;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(verifier.as_bytes()))
        };
        let mut url = reqwest::Url::parse_with_params(
            &format!("{}/auth", self.issuer),
            [
                ("response_type", "code"),
                ("client_id", CLIENT_ID),
                ("redirect_uri", redirect_uri),
                ("scope", SCOPES),
                ("state", "test-state"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .expect("authorization URL")
        .to_string();
        let mut cookies: HashMap<String, String> = HashMap::new();
        let mut form: Option<Vec<(&str, &str)>> = None;
        let code = 'flow: {
            for _ in 0..12 {
                let cookie = cookies
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                let request = match form.take() {
                    Some(f) => http.post(&url).form(&f),
                    None => http.get(&url),
                };
                let r = request
                    .header("Cookie", cookie)
                    .send()
                    .await
                    .expect("the provider answers");
                for c in r.headers().get_all("set-cookie") {
                    let c = c.to_str().unwrap_or_default();
                    if let Some((k, rest)) = c.split_once('=') {
                        let v = rest.split(';').next().unwrap_or_default();
                        cookies.insert(k.trim().to_string(), v.to_string());
                    }
                }
                if r.status().is_redirection() {
                    let to = r.headers()["location"].to_str().expect("location");
                    let to = reqwest::Url::parse(&url)
                        .and_then(|base| base.join(to))
                        .expect("redirect URL");
                    if to.as_str().starts_with(redirect_uri) {
                        let params: HashMap<_, _> = to.query_pairs().into_owned().collect();
                        assert_eq!(params.get("state").map(String::as_str), Some("test-state"));
                        break 'flow params.get("code").expect("a code").clone();
                    }
                    url = to.to_string();
                    continue;
                }
                let body = r.text().await.unwrap_or_default();
                let action = body
                    .split("action=\"")
                    .nth(1)
                    .and_then(|a| a.split('"').next())
                    .unwrap_or_else(|| panic!("expected the login form: {body}"));
                url = format!("{}{}", self.issuer, action.replace("&amp;", "&"));
                form = Some(vec![("login", user.login), ("password", user.password)]);
            }
            panic!("signing in took too many steps");
        };
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("client_id", CLIENT_ID),
            ("code_verifier", &verifier),
        ])
        .await
    }

    /// A request to the token endpoint, and what it answers.
    async fn token_request(&self, form: &[(&str, &str)]) -> Tokens {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .form(form)
            .send()
            .await
            .expect("token endpoint")
            .json()
            .await
            .expect("token JSON");
        Tokens {
            access: answer["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("an access token: {answer}"))
                .into(),
            refresh: answer["refresh_token"].as_str().map(str::to_string),
            id: answer["id_token"].as_str().map(str::to_string),
        }
    }

    /// Fresh tokens for a refresh token (which the provider rotates).
    pub async fn refresh(&self, refresh_token: &str) -> Tokens {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
        ])
        .await
    }

    /// The environment that points a gateway at this provider.
    pub fn gateway_env(&self) -> Vec<(String, String)> {
        vec![
            ("CONFAB_AUTH".into(), "oidc".into()),
            ("CONFAB_OIDC_ISSUER".into(), self.issuer.clone()),
            ("CONFAB_OIDC_AUDIENCE".into(), RESOURCE.into()),
            ("CONFAB_OIDC_CLIENT_ID".into(), CLIENT_ID.into()),
            ("CONFAB_OIDC_SCOPES".into(), SCOPES.into()),
        ]
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}
