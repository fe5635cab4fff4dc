//! Sign-in with OpenID Connect, against a real provider (`oidc-provider`)
//! and a real `confab`: whose tokens open the API and the socket, which are
//! refused, key rotation, and a socket carried on with a fresh token.

use confab_functions::api::auth::AuthError;
use confab_functions::api::oidc::{Oidc, OidcSettings};
use confab_protocol::ServerEvent;
use confab_protocol::routes;
use confab_tests::harness::{Gateway, id};
use confab_tests::oidc::{ALICE, BOB, CLIENT_ID, Options, Provider, RESOURCE, now_secs};
use serde_json::{Value, json};
use std::time::Duration;

const BACK: &str = "http://127.0.0.1:9/";

async fn gateway(p: &Provider, extra: &[(&str, &str)]) -> Gateway {
    let env = p.gateway_env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(extra);
    Gateway::start(&all).await
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("a JWT")
        .kid
        .expect("a kid")
}

#[tokio::test]
async fn people_signed_in_at_the_provider_each_see_only_their_own_sessions() {
    let p = Provider::start(Options::default()).await;
    let gw = gateway(&p, &[]).await;
    let alice = p.sign_in(&ALICE, BACK).await;
    let bob = p.sign_in(&BOB, BACK).await;
    assert!(alice.refresh.is_some(), "a refresh token for the web app");

    let (sid, mid) = (id(), id());
    let r = gw
        .api(Some(&alice.access))
        .create(&sid, &mid, "hello")
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let summary = gw
        .api(Some(&alice.access))
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    assert_eq!(summary["session"]["id"], sid.as_str());

    let list = gw.api(Some(&bob.access)).get(routes::SESSIONS).await;
    assert_eq!(list.status, 200);
    assert!(!list.text.contains(&sid), "Bob's list: {}", list.text);
    assert_eq!(gw.api(Some(&bob.access)).session(&sid).await.status, 404);
    assert_eq!(gw.api(None).get(routes::SESSIONS).await.status, 401);

    // The socket, through a ticket: Alice's session is hers alone.
    let mut a = gw.socket(Some(&alice.access)).await;
    a.hello().await;
    a.subscribe(&sid, 0).await;
    a.expect(
        "Alice subscribed",
        |e| matches!(e, ServerEvent::Subscribed { messages, .. } if messages.len() == 2),
    )
    .await;
    let mut b = gw.socket(Some(&bob.access)).await;
    b.hello().await;
    b.subscribe(&sid, 0).await;
    b.expect("Bob refused", |e| {
        matches!(e, ServerEvent::Error { code, .. } if *code == confab_protocol::rest::ErrorCode::NotFound)
    })
    .await;

    // The web app learns where to sign in, and may talk to the provider.
    let r = reqwest::get(format!("{}/config.json", gw.base))
        .await
        .expect("config.json");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let config: Value = r.json().await.expect("JSON");
    assert_eq!(config["auth"]["issuer"], p.issuer.as_str());
    assert_eq!(config["auth"]["clientId"], CLIENT_ID);
    assert!(
        csp.contains(&format!("connect-src 'self' {}", p.issuer)),
        "{csp}"
    );
}

#[tokio::test]
async fn tokens_the_provider_did_not_issue_for_confab_are_refused() {
    let p = Provider::start(Options::default()).await;
    let other = Provider::start(Options::default()).await;
    let gw = gateway(&p, &[]).await;
    let rsa = |p: &Provider| {
        p.keys()
            .into_iter()
            .find(|k| k.alg == "RS256")
            .expect("an RSA key")
    };
    let key = rsa(&p);
    let calls = |token: String| {
        let api = gw.api(Some(&token));
        async move { api.get(routes::SESSIONS).await }
    };
    // Made with the provider's key and its claims: taken, so that each
    // refusal below is for the one thing changed.
    let good = calls(Provider::sign(&key, &p.claims(&ALICE, 300))).await;
    assert_eq!(good.status, 200, "{}", good.text);

    let now = now_secs();
    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = p.claims(&ALICE, 300);
        f(&mut c);
        Provider::sign(&key, &c)
    };
    cases.push((
        "another issuer",
        with(&|c| c["iss"] = json!(other.issuer)),
        "unauthorized",
    ));
    cases.push((
        "another audience",
        with(&|c| c["aud"] = json!("urn:another:api")),
        "unauthorized",
    ));
    cases.push((
        "no audience",
        with(&|c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
        "unauthorized",
    ));
    cases.push((
        "expired",
        with(&|c| {
            c["exp"] = json!(now - 120);
            c["iat"] = json!(now - 420);
        }),
        "token_expired",
    ));
    cases.push((
        "not yet valid",
        with(&|c| c["nbf"] = json!(now + 600)),
        "unauthorized",
    ));
    cases.push((
        "the local owner",
        with(&|c| c["sub"] = json!("local")),
        "unauthorized",
    ));
    cases.push((
        "an unknown key",
        Provider::sign(&rsa(&other), &p.claims(&ALICE, 300)),
        "unauthorized",
    ));
    let mut forged_kid = rsa(&other);
    forged_kid.kid = key.kid.clone();
    cases.push((
        "the provider's key id on another key",
        Provider::sign(&forged_kid, &p.claims(&ALICE, 300)),
        "unauthorized",
    ));
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(key.kid.clone());
    cases.push((
        "HS256 under the provider's key id",
        jsonwebtoken::encode(
            &hs,
            &p.claims(&ALICE, 300),
            &jsonwebtoken::EncodingKey::from_secret(key.kid.as_bytes()),
        )
        .unwrap(),
        "unauthorized",
    ));
    let unsigned = {
        use base64::Engine as _;
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": key.kid})),
            b64(&p.claims(&ALICE, 300))
        )
    };
    cases.push(("alg none", unsigned, "unauthorized"));
    for (what, token, code) in cases {
        let r = calls(token).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text);
        assert_eq!(r.body["error"]["code"], code, "{what}: {}", r.text);
        assert!(
            !r.text.contains(&p.issuer),
            "{what}: no detail given: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn a_key_rotation_at_the_provider_is_picked_up() {
    let p = Provider::start(Options {
        alg: "ES256",
        ..Options::default()
    })
    .await;
    let gw = gateway(&p, &[]).await;
    let before = p.sign_in(&ALICE, BACK).await;
    assert_eq!(
        jsonwebtoken::decode_header(&before.access).unwrap().alg,
        jsonwebtoken::Algorithm::ES256
    );
    let r = gw.api(Some(&before.access)).get(routes::SESSIONS).await;
    assert_eq!(r.status, 200, "{}", r.text);

    let new_kid = p.rotate().await;
    let after = p.refresh(before.refresh.as_deref().expect("refresh")).await;
    assert_eq!(kid(&after.access), new_kid, "signed with the new key");
    assert_ne!(kid(&after.access), kid(&before.access));
    let r = gw.api(Some(&after.access)).get(routes::SESSIONS).await;
    assert_eq!(r.status, 200, "the new key is fetched: {}", r.text);
    // The old key is still published, so its tokens still hold.
    let r = gw.api(Some(&before.access)).get(routes::SESSIONS).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn unknown_key_ids_cause_one_fetch_of_the_keys_per_interval() {
    let p = Provider::start(Options::default()).await;
    let other = Provider::start(Options::default()).await;
    let oidc = Oidc::new(OidcSettings {
        issuer: p.issuer.clone(),
        audience: Some(RESOURCE.into()),
        client_id: CLIENT_ID.into(),
        refetch_every: Duration::from_secs(60),
        leeway_secs: 30,
    });
    let alice = p.sign_in(&ALICE, BACK).await;
    assert_eq!(
        oidc.principal(&alice.access).await.unwrap().owner,
        ALICE.sub
    );
    assert_eq!(oidc.key_fetches(), 1);
    let stranger = other.sign_in(&BOB, BACK).await;
    for _ in 0..50 {
        assert_eq!(
            oidc.principal(&stranger.access).await.unwrap_err(),
            AuthError::Invalid
        );
    }
    assert_eq!(oidc.key_fetches(), 2, "one fetch for fifty unknown key ids");
    // Known keys are not fetched again.
    for _ in 0..10 {
        oidc.principal(&alice.access).await.unwrap();
    }
    assert_eq!(oidc.key_fetches(), 2);
}

#[tokio::test]
async fn a_socket_carries_on_with_a_fresh_token_and_never_changes_hands() {
    let p = Provider::start(Options {
        access_ttl: 4,
        ..Options::default()
    })
    .await;
    let gw = gateway(&p, &[("CONFAB_OIDC_CLOCK_SKEW_SECS", "0")]).await;
    let first = p.sign_in(&ALICE, BACK).await;
    let mut s = gw.socket(Some(&first.access)).await;
    s.hello().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fresh = p.refresh(first.refresh.as_deref().unwrap()).await;
    let exp = |t: &str| -> i64 {
        use base64::Engine as _;
        let payload = t.split('.').nth(1).unwrap();
        let v: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        v["exp"].as_i64().unwrap()
    };
    assert!(exp(&fresh.access) > exp(&first.access));

    // Bob's ticket cannot take Alice's socket.
    let bob = p.sign_in(&BOB, BACK).await;
    let bobs = ticket(&gw, &bob.access).await;
    s.send(&json!({"action": "renew", "ticket": bobs})).await;
    s.expect("Bob's ticket refused", |e| {
        matches!(e, ServerEvent::Error { code, .. } if *code == confab_protocol::rest::ErrorCode::Unauthorized)
    })
    .await;

    let t = ticket(&gw, &fresh.access).await;
    s.send(&json!({"action": "renew", "ticket": t})).await;
    let (renewed, _) = s
        .expect("renewed", |e| matches!(e, ServerEvent::Renewed { .. }))
        .await;
    let ServerEvent::Renewed {
        auth_expires_at: Some(until),
    } = renewed
    else {
        unreachable!()
    };
    assert_eq!(until.millis(), exp(&fresh.access) * 1000);
    // A ticket is used once.
    s.send(&json!({"action": "renew", "ticket": t})).await;
    s.expect("a used ticket refused", |e| {
        matches!(e, ServerEvent::Error { code, .. } if *code == confab_protocol::rest::ErrorCode::Unauthorized)
    })
    .await;

    // Past the first token's expiry the socket still answers...
    let wait = (exp(&first.access) - now_secs() + 1).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait)).await;
    s.send(&json!({"action": "ping"})).await;
    s.expect("a pong past the first token", |e| {
        matches!(e, ServerEvent::Pong)
    })
    .await;
    // ...and ends with the fresh one.
    let (_, _) = s
        .expect_within("expired with the fresh token", Duration::from_secs(10), |e| {
            matches!(e, ServerEvent::Error { code, .. } if *code == confab_protocol::rest::ErrorCode::TokenExpired)
        })
        .await;
    assert!(now_secs() >= exp(&fresh.access));
}

async fn ticket(gw: &Gateway, token: &str) -> String {
    let r = gw
        .api(Some(token))
        .call("POST", routes::SOCKET_TICKET, None)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["ticket"].as_str().unwrap().to_string()
}
