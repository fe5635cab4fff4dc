//! Signing in with an OpenID Connect provider, when `/config.json` names
//! one: the authorization code flow with PKCE, as a public client.
//!
//! The access token lives in this module's memory only. The refresh token
//! (rotated by the provider at every use) is kept in this tab's
//! `sessionStorage`, so a reload signs in again without a round trip to the
//! provider; no other origin can read it, and it goes when the tab does.
//! Tokens are refreshed before they expire; a refresh the provider refuses
//! sends the person to sign in again, back to the page they were on (what
//! they were typing is kept by the message box).

use serde_json::Value;
use std::cell::{Cell, RefCell};

/// How to sign in, from `/config.json`'s `auth`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthSettings {
    pub issuer: String,
    pub client_id: String,
    pub scopes: String,
    /// A sign-out page for providers whose discovery document has no
    /// `end_session_endpoint` (Cognito's `/logout`).
    pub logout_url: String,
}

/// The provider's endpoints, from its discovery document.
#[derive(Default)]
struct Provider {
    authorize: String,
    token: String,
    end_session: String,
    revocation: String,
}

struct Tokens {
    access: String,
    /// When the access token expires (ms since the epoch, this clock).
    expires_at: f64,
    /// Its lifetime when issued, in ms.
    lifetime: f64,
}

thread_local! {
    static SETTINGS: RefCell<Option<AuthSettings>> = const { RefCell::new(None) };
    static PROVIDER: RefCell<Provider> = RefCell::new(Provider::default());
    static TOKENS: RefCell<Option<Tokens>> = const { RefCell::new(None) };
    static REFRESHING: Cell<bool> = const { Cell::new(false) };
}

const REFRESH_KEY: &str = "confab.refresh";
const USER_KEY: &str = "confab.user";
const PENDING_KEY: &str = "confab.signin";

/// Where the app stands once sign-in has been looked at.
#[derive(Clone, Debug, PartialEq)]
pub enum Start {
    /// No sign-in configured.
    Off,
    /// Signed in as this person (a name or an email).
    SignedIn(String),
    /// Show the sign-in page, with why when a sign-in failed.
    SignIn(Option<String>),
}

/// Whether this app signs people in.
pub fn enabled() -> bool {
    SETTINGS.with(|s| s.borrow().is_some())
}

/// The access token, while signed in.
pub fn access_token() -> Option<String> {
    TOKENS.with(|t| t.borrow().as_ref().map(|t| t.access.clone()))
}

use crate::state::{tab_get as get, tab_set as set};

fn remove(key: &str) {
    set(key, "");
}

fn location() -> Option<web_sys::Location> {
    web_sys::window().map(|w| w.location())
}

/// This app's address, which the provider sends the person back to.
fn redirect_uri() -> String {
    let origin = location().and_then(|l| l.origin().ok()).unwrap_or_default();
    format!("{origin}/")
}

fn encode(s: &str) -> String {
    js_sys::encode_uri_component(s).into()
}

/// Looks at sign-in: finishes one coming back from the provider, or signs
/// in again with the refresh token this tab holds.
pub async fn start(settings: Option<AuthSettings>) -> Start {
    let Some(settings) = settings.filter(|s| !s.issuer.is_empty()) else {
        return Start::Off;
    };
    SETTINGS.with(|s| *s.borrow_mut() = Some(settings.clone()));
    if discover(&settings).await.is_none() {
        return Start::SignIn(Some(
            "The sign-in service cannot be reached. Try again in a moment.".into(),
        ));
    }
    let params = location()
        .and_then(|l| l.search().ok())
        .map(|s| web_sys::UrlSearchParams::new_with_str(&s).ok())
        .unwrap_or_default();
    let param = |k: &str| params.as_ref().and_then(|p| p.get(k));
    if param("state").is_some() && (param("code").is_some() || param("error").is_some()) {
        let pending = get(PENDING_KEY).unwrap_or_default();
        remove(PENDING_KEY);
        let mut parts = pending.split(' ');
        let (state, verifier, back) = (parts.next(), parts.next(), parts.next());
        // The code leaves the address bar at once.
        if let Some(h) = web_sys::window().and_then(|w| w.history().ok()) {
            let _ = h.replace_state_with_url(
                &wasm_bindgen::JsValue::NULL,
                "",
                Some(back.filter(|b| b.starts_with('/')).unwrap_or("/")),
            );
        }
        if let Some(error) = param("error") {
            let why = param("error_description").unwrap_or(error);
            return Start::SignIn(Some(format!("Sign-in did not finish: {why}")));
        }
        let (Some(state), Some(verifier)) = (state, verifier) else {
            return Start::SignIn(Some(
                "That sign-in was not started in this tab. Sign in again.".into(),
            ));
        };
        if param("state").as_deref() != Some(state) {
            return Start::SignIn(Some(
                "That sign-in was not started in this tab. Sign in again.".into(),
            ));
        }
        let form = format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&client_id={}&code_verifier={}",
            encode(&param("code").unwrap_or_default()),
            encode(&redirect_uri()),
            encode(&settings.client_id),
            encode(verifier),
        );
        return match token_request(form).await {
            Ok(()) => Start::SignedIn(user()),
            Err(_) => Start::SignIn(Some("Sign-in did not finish. Sign in again.".into())),
        };
    }
    if get(REFRESH_KEY).is_some() && refresh().await == Ok(()) {
        return Start::SignedIn(user());
    }
    Start::SignIn(None)
}

/// The signed-in person's name or email.
pub fn user() -> String {
    get(USER_KEY).unwrap_or_else(|| "Signed in".into())
}

async fn discover(settings: &AuthSettings) -> Option<()> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        settings.issuer.trim_end_matches('/')
    );
    let doc = fetch_json(gloo_net::http::Request::get(&url).build().ok()?)
        .await
        .ok()?;
    let field = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let provider = Provider {
        authorize: field("authorization_endpoint"),
        token: field("token_endpoint"),
        end_session: field("end_session_endpoint"),
        revocation: field("revocation_endpoint"),
    };
    if provider.authorize.is_empty() || provider.token.is_empty() {
        return None;
    }
    PROVIDER.with(|p| *p.borrow_mut() = provider);
    Some(())
}

/// Why a token request failed.
#[derive(Debug, PartialEq)]
enum Failed {
    /// The provider refused the grant: sign in again.
    Refused,
    /// The provider could not be reached or answered oddly: try again.
    Unreachable,
}

async fn fetch_json(request: gloo_net::http::Request) -> Result<Value, Failed> {
    let response = request.send().await.map_err(|_| Failed::Unreachable)?;
    let status = response.status();
    let text = response.text().await.map_err(|_| Failed::Unreachable)?;
    match status {
        200..=299 => serde_json::from_str(&text).map_err(|_| Failed::Unreachable),
        400 | 401 => Err(Failed::Refused),
        _ => Err(Failed::Unreachable),
    }
}

/// A request to the token endpoint; keeps what it answers.
async fn token_request(form: String) -> Result<(), Failed> {
    let url = PROVIDER.with(|p| p.borrow().token.clone());
    let request = gloo_net::http::Request::post(&url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .map_err(|_| Failed::Unreachable)?;
    let answer = fetch_json(request).await?;
    let text = |k: &str| answer.get(k).and_then(Value::as_str);
    let access = text("access_token").ok_or(Failed::Unreachable)?;
    let lifetime = answer
        .get("expires_in")
        .and_then(Value::as_f64)
        .unwrap_or(300.0)
        * 1000.0;
    if let Some(r) = text("refresh_token") {
        set(REFRESH_KEY, r);
    }
    if let Some(name) = text("id_token").and_then(person) {
        set(USER_KEY, &name);
    }
    TOKENS.with(|t| {
        *t.borrow_mut() = Some(Tokens {
            access: access.to_string(),
            expires_at: js_sys::Date::now() + lifetime,
            lifetime,
        })
    });
    Ok(())
}

/// The name (or email, or username) an ID token gives for its person. The
/// token came straight from the provider's token endpoint over its own
/// connection, so it is read, not verified again.
fn person(id_token: &str) -> Option<String> {
    let payload = id_token.split('.').nth(1)?;
    let text = String::from_utf8(base64url_decode(payload)?).ok()?;
    let claims: Value = serde_json::from_str(&text).ok()?;
    ["name", "email", "preferred_username", "sub"]
        .iter()
        .find_map(|k| claims.get(*k).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(80).collect())
}

/// Exchanges the refresh token for fresh tokens (one at a time: callers
/// that come while one runs wait for it).
async fn refresh() -> Result<(), Failed> {
    if REFRESHING.with(|r| r.replace(true)) {
        while REFRESHING.with(Cell::get) {
            gloo_timers::future::TimeoutFuture::new(50).await;
        }
        return if access_token().is_some() {
            Ok(())
        } else {
            Err(Failed::Refused)
        };
    }
    let result = match get(REFRESH_KEY) {
        None => Err(Failed::Refused),
        Some(rt) => {
            let client = SETTINGS.with(|s| s.borrow().as_ref().map(|s| s.client_id.clone()));
            let form = format!(
                "grant_type=refresh_token&refresh_token={}&client_id={}",
                encode(&rt),
                encode(&client.unwrap_or_default()),
            );
            token_request(form).await
        }
    };
    if result == Err(Failed::Refused) {
        remove(REFRESH_KEY);
        TOKENS.with(|t| *t.borrow_mut() = None);
    }
    REFRESHING.with(|r| r.set(false));
    result
}

/// After a 401: a fresh token if one can be had; else the person is sent
/// to sign in again. True when the request is worth sending again.
pub async fn renew_after_refusal() -> bool {
    if !enabled() {
        return false;
    }
    match refresh().await {
        Ok(()) => true,
        Err(Failed::Refused) => {
            sign_in();
            false
        }
        Err(Failed::Unreachable) => false,
    }
}

/// Keeps the access token fresh for as long as the app runs: refreshed when
/// three quarters of its life (or all but a minute) has passed, whichever
/// comes first; `renewed` is called after each refresh.
pub async fn keep_fresh(renewed: impl Fn()) {
    loop {
        let Some((expires_at, lifetime)) =
            TOKENS.with(|t| t.borrow().as_ref().map(|t| (t.expires_at, t.lifetime)))
        else {
            return;
        };
        let margin = (lifetime * 0.25).min(60_000.0);
        let wait = (expires_at - margin - js_sys::Date::now()).max(1_000.0);
        gloo_timers::future::TimeoutFuture::new(wait.min(f64::from(i32::MAX)) as u32).await;
        match refresh().await {
            Ok(()) => renewed(),
            Err(Failed::Refused) => {
                sign_in();
                return;
            }
            // Unreachable: try again shortly, while the token lasts.
            Err(Failed::Unreachable) => gloo_timers::future::TimeoutFuture::new(5_000).await,
        }
    }
}

fn random_string(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if let Some(c) = web_sys::window().and_then(|w| w.crypto().ok()) {
        let _ = c.get_random_values_with_u8_array(&mut buf);
    }
    base64url_encode(&buf)
}

async fn sha256(input: &str) -> Option<Vec<u8>> {
    let subtle = web_sys::window()?.crypto().ok()?.subtle();
    let promise = subtle
        .digest_with_str_and_u8_array("SHA-256", input.as_bytes())
        .ok()?;
    let digest = wasm_bindgen_futures::JsFuture::from(promise).await.ok()?;
    Some(js_sys::Uint8Array::new(&digest).to_vec())
}

/// Goes to the provider to sign in, to come back to this page.
pub fn sign_in() {
    wasm_bindgen_futures::spawn_local(go_sign_in());
}

async fn go_sign_in() {
    let Some(settings) = SETTINGS.with(|s| s.borrow().clone()) else {
        return;
    };
    let verifier = random_string(32);
    let state = random_string(16);
    let Some(challenge) = sha256(&verifier).await.map(|d| base64url_encode(&d)) else {
        return;
    };
    let back = location()
        .and_then(|l| l.pathname().ok())
        .filter(|p| p.starts_with('/') && !p.contains(' '))
        .unwrap_or_else(|| "/".into());
    set(PENDING_KEY, &format!("{state} {verifier} {back}"));
    let url = format!(
        "{}?response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&code_challenge={}&code_challenge_method=S256",
        PROVIDER.with(|p| p.borrow().authorize.clone()),
        encode(&settings.client_id),
        encode(&redirect_uri()),
        encode(&settings.scopes),
        state,
        challenge,
    );
    if let Some(l) = location() {
        let _ = l.assign(&url);
    }
}

/// Signs out here and at the provider: the refresh token is revoked where
/// the provider can, forgotten, and the provider's sign-out page ends its
/// session and sends the person back to the sign-in page.
pub async fn sign_out() {
    let Some(settings) = SETTINGS.with(|s| s.borrow().clone()) else {
        return;
    };
    let (revocation, end_session) = PROVIDER.with(|p| {
        let p = p.borrow();
        (p.revocation.clone(), p.end_session.clone())
    });
    if let (Some(rt), false) = (get(REFRESH_KEY), revocation.is_empty()) {
        let form = format!(
            "token={}&token_type_hint=refresh_token&client_id={}",
            encode(&rt),
            encode(&settings.client_id)
        );
        if let Ok(r) = gloo_net::http::Request::post(&revocation)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form)
        {
            let _ = r.send().await;
        }
    }
    remove(REFRESH_KEY);
    remove(USER_KEY);
    TOKENS.with(|t| *t.borrow_mut() = None);
    let back = encode(&redirect_uri());
    let client = encode(&settings.client_id);
    // No token in the address: `client_id` names the app instead of an
    // `id_token_hint`.
    let url = if !end_session.is_empty() {
        format!("{end_session}?client_id={client}&post_logout_redirect_uri={back}")
    } else if !settings.logout_url.is_empty() {
        format!(
            "{}?client_id={client}&logout_uri={back}",
            settings.logout_url
        )
    } else {
        "/".into()
    };
    if let Some(l) = location() {
        let _ = l.assign(&url);
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding.
pub fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// base64url, padded or not; None when it is not.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_and_matches_the_rfc() {
        // RFC 7636, appendix B: the verifier's challenge.
        let digest = [
            19u8, 211, 30, 150, 26, 26, 216, 236, 47, 22, 177, 12, 76, 152, 46, 8, 118, 168, 120,
            173, 109, 241, 68, 86, 110, 225, 137, 74, 203, 112, 249, 195,
        ];
        assert_eq!(
            base64url_encode(&digest),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            assert_eq!(base64url_decode(&base64url_encode(&bytes)), Some(bytes));
        }
        assert_eq!(base64url_decode("not base64!"), None);
    }

    #[test]
    fn an_id_token_names_its_person() {
        let claims = base64url_encode(br#"{"sub":"u1","email":"a@example.com","name":"Alice"}"#);
        assert_eq!(person(&format!("x.{claims}.y")), Some("Alice".into()));
        let claims = base64url_encode(br#"{"sub":"u1","email":"a@example.com"}"#);
        assert_eq!(
            person(&format!("x.{claims}.y")),
            Some("a@example.com".into())
        );
        assert_eq!(person("garbage"), None);
    }
}
