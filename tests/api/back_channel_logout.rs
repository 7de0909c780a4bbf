//! OpenID Connect Back-Channel Logout 1.0, as the OIDF `oidcc-backchannel-rp-initiated-logout`
//! module checks it and beyond: each ended session of a client with a `backchannel_logout_uri`
//! is POSTed a logout token that an independent JWT library verifies against the JWKS, retried
//! when the client answers 5xx, not when it answers 4xx.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::Value;

use crate::authorize::{browser, redirect_params};
use crate::helpers::{Backend, PASSWORD, TestApp, claims_of, text};
use crate::oidc::{CALLBACK, SIGNED_OUT, logout_url, sign_in, spawn_op_with};

/// A relying party's back-channel logout endpoint: records each POSTed body and answers with the
/// next scripted status (200 once the script is used up).
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

async fn receiver(script: &[u16]) -> Receiver {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
    let (kept, next) = (Arc::clone(&bodies), Arc::clone(&statuses));
    let app = axum::Router::new().route(
        "/backchannel",
        axum::routing::post(move |body: String| {
            let (kept, next) = (Arc::clone(&kept), Arc::clone(&next));
            async move {
                kept.lock().unwrap().push(body);
                let status = next.lock().unwrap().pop_front().unwrap_or(200);
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/backchannel",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, bodies }
}

impl Receiver {
    /// The bodies received, once there are `count` (waiting at most 15 s).
    async fn wait_for(&self, count: usize) -> Vec<String> {
        for _ in 0..150 {
            let bodies = self.bodies.lock().unwrap().clone();
            if bodies.len() >= count {
                return bodies;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{count} back-channel logouts expected, {} arrived",
            self.bodies.lock().unwrap().len()
        );
    }
}

/// The claims of the logout token in `body`, verified by jsonwebtoken against the issuer's JWKS
/// with the issuer and the audience `rp` required; its header is checked as §2.4 asks.
async fn verified_logout_token(app: &TestApp, issuer: &str, body: &str) -> Value {
    let token = body
        .strip_prefix("logout_token=")
        .unwrap_or_else(|| panic!("a form with only logout_token: {body}"));
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
    let jwks: JwkSet = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&["rp"]);
    // The test clock need not be the wall clock; the lifetime is checked below.
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["iss", "aud", "exp"]);
    let claims: Value =
        jsonwebtoken::decode(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .expect("a logout token that verifies")
            .claims;
    assert_eq!(
        claims["events"],
        serde_json::json!({"http://schemas.openid.net/event/backchannel-logout": {}})
    );
    assert!(claims.get("nonce").is_none(), "§2.4: no nonce");
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(exp > iat && exp - iat <= 120, "a short life: {claims}");
    claims
}

/// `oidcc-backchannel-rp-initiated-logout`: an RP-initiated logout sends a logout token for each
/// session the sign-on started, with the `sid` and `sub` of its ID tokens, the `offline_access`
/// one included (it keeps its refresh token, not the login). The first delivery is answered 503
/// and retried.
async fn oidcc_backchannel_rp_initiated_logout(backend: Backend) {
    let rp = receiver(&[503]).await;
    let (app, issuer) =
        spawn_op_with(backend, &format!("backchannel_logout_uri = \"{}\"", rp.url)).await;
    let browser = browser();
    let online = sign_in(&app, &browser, "openid").await;
    let offline = sign_in(&app, &browser, "openid offline_access").await;
    let response = browser
        .get(logout_url(
            &app,
            &[
                ("id_token_hint", &text(&online, "id_token")),
                ("post_logout_redirect_uri", SIGNED_OUT),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect_params(&response).0, SIGNED_OUT);

    let bodies = rp.wait_for(3).await;
    let mut sids = BTreeSet::new();
    let mut jtis = BTreeSet::new();
    for body in bodies.iter().collect::<BTreeSet<_>>() {
        let claims = verified_logout_token(&app, &issuer, body).await;
        assert_eq!(claims["sub"], claims_of(&text(&online, "id_token"))["sub"]);
        sids.insert(claims["sid"].as_str().unwrap().to_owned());
        jtis.insert(claims["jti"].as_str().unwrap().to_owned());
    }
    let expected: BTreeSet<String> = [&online, &offline]
        .iter()
        .map(|t| {
            claims_of(&text(t, "id_token"))["sid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(sids, expected, "one logout token per session, by its sid");
    assert_eq!(jtis.len(), 2, "each token has its own jti");
    let scraped = crate::metrics::scrape(&app).await;
    assert_eq!(
        crate::metrics::sample(
            &scraped,
            "latchkey_backchannel_logouts_total{outcome=\"delivered\"}"
        ),
        2.0,
        "the 503 was retried"
    );
}

on_every_backend!(oidcc_backchannel_rp_initiated_logout);

/// The sessions of a user ended from the account API (one session, every session, a password
/// change) and a session revoked for a reused code are told to their clients too. A client
/// answering 400 is not asked again; a first-party session (no `openid`) is not a client's
/// login and is not told.
#[tokio::test]
async fn every_end_of_a_clients_session_is_told_to_it() {
    let rp = receiver(&[400]).await;
    let (app, issuer) = spawn_op_with(
        Backend::Embedded,
        &format!("backchannel_logout_uri = \"{}\"", rp.url),
    )
    .await;
    let browser = browser();
    let sid_of = |tokens: &Value| {
        claims_of(&text(tokens, "id_token"))["sid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let sids_in = |bodies: Vec<String>| {
        let app = &app;
        let issuer = &issuer;
        async move {
            let mut sids = BTreeSet::new();
            for body in &bodies {
                let claims = verified_logout_token(app, issuer, body).await;
                sids.insert(claims["sid"].as_str().unwrap().to_owned());
            }
            sids
        }
    };

    // One session, ended by its user (answered 400: not retried).
    let first = sign_in(&app, &browser, "openid").await;
    let account = text(&app.login_ok("alice").await, "access_token");
    let ended = app
        .client
        .delete(app.url(&format!("/auth/sessions/{}", sid_of(&first))))
        .bearer_auth(&account)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        sids_in(rp.wait_for(1).await).await,
        BTreeSet::from([sid_of(&first)])
    );

    // A code presented twice: the session the first exchange started ends.
    let params = [
        ("response_type", "code"),
        ("client_id", "rp"),
        ("redirect_uri", CALLBACK),
        ("code_challenge", crate::authorize::CHALLENGE),
        ("code_challenge_method", "S256"),
        ("scope", "openid"),
        ("prompt", "none"),
    ];
    let url = reqwest::Url::parse_with_params(&app.url("/oauth/authorize"), &params).unwrap();
    let (_, query) = redirect_params(&browser.get(url).send().await.unwrap());
    let exchange = || crate::oidc::exchange_request(&app, &query["code"]).send();
    let tokens: Value = exchange().await.unwrap().json().await.unwrap();
    assert_eq!(
        exchange().await.unwrap().status(),
        StatusCode::BAD_REQUEST,
        "the second use"
    );
    let told = rp.wait_for(2).await;
    assert_eq!(
        sids_in(told[1..].to_vec()).await,
        BTreeSet::from([sid_of(&tokens)])
    );

    // Every session: the two of the client are told, the first-party one is not.
    let second = sign_in(&app, &browser, "openid").await;
    let third = sign_in(&app, &browser, "openid profile").await;
    let everywhere = app
        .client
        .post(app.url("/auth/logout-all"))
        .bearer_auth(&account)
        .send()
        .await
        .unwrap();
    assert_eq!(everywhere.status(), StatusCode::NO_CONTENT);
    let told = rp.wait_for(4).await;
    assert_eq!(
        sids_in(told[2..4].to_vec()).await,
        BTreeSet::from([sid_of(&second), sid_of(&third)])
    );

    // A password change.
    let fourth = sign_in(&app, &browser, "openid").await;
    let account = text(&app.login_ok("alice").await, "access_token");
    let changed = app
        .client
        .post(app.url("/auth/password"))
        .bearer_auth(&account)
        .json(&serde_json::json!({"current_password": PASSWORD, "new_password": "a new one, long enough"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let told = rp.wait_for(5).await;
    assert_eq!(
        sids_in(told[4..].to_vec()).await,
        BTreeSet::from([sid_of(&fourth)])
    );

    // Past the first retry's time, nothing more came: the 400 was final.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rp.bodies.lock().unwrap().len(), 5);
    let scraped = crate::metrics::scrape(&app).await;
    let outcome = |o: &str| {
        crate::metrics::sample(
            &scraped,
            &format!("latchkey_backchannel_logouts_total{{outcome=\"{o}\"}}"),
        )
    };
    assert_eq!((outcome("refused"), outcome("delivered")), (1.0, 4.0));
}

/// A `backchannel_logout_uri` the issuer could not POST to safely is refused at start.
#[tokio::test]
async fn an_unsafe_backchannel_logout_uri_is_refused() {
    let (app, _) = spawn_op_with(Backend::Embedded, "").await;
    for (uri, why) in [
        ("com.example.app:/logout", "an https URI"),
        ("http://rp.example/logout", "http only on loopback"),
        ("https://rp.example/logout#x", "no fragment"),
    ] {
        // The client `rp` is the config's last table: the line joins it.
        let text = format!("{}\nbackchannel_logout_uri = \"{uri}\"\n", app.config_text);
        let path = app.dir.path().join("unsafe-backchannel.toml");
        std::fs::write(&path, text).unwrap();
        let output = crate::helpers::run_with_stdin(
            crate::helpers::latchkey(&["config", "check"], &path),
            "",
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{uri}");
        assert!(
            stderr.contains("].backchannel_logout_uri") && stderr.contains(why),
            "{uri}: {stderr}"
        );
    }
}

/// Sessions ended from the command line, apart from any server, are told to their clients too:
/// the CLI signs the logout tokens with the configured keys and waits for their delivery.
#[tokio::test]
async fn sessions_ended_from_the_cli_are_told_to_their_clients() {
    let rp = receiver(&[]).await;
    let (app, issuer) = spawn_op_with(
        Backend::Embedded,
        &format!("backchannel_logout_uri = \"{}\"", rp.url),
    )
    .await;
    let browser = browser();
    let mut told = 0;
    for command in ["logout", "disable"] {
        let tokens = sign_in(&app, &browser, "openid").await;
        // Off the test's runtime, which serves the receiver meanwhile.
        let cli = crate::helpers::latchkey(&["users", command, "alice"], &app.config_path);
        let output = tokio::task::spawn_blocking(move || crate::helpers::run_with_stdin(cli, ""))
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout)
                .contains("back-channel logout: told 1 client session"),
            "{command}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        told += 1;
        let bodies = rp.wait_for(told).await;
        let claims = verified_logout_token(&app, &issuer, &bodies[told - 1]).await;
        assert_eq!(
            claims["sid"],
            claims_of(&text(&tokens, "id_token"))["sid"],
            "{command}"
        );
    }
}
