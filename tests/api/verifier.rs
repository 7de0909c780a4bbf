//! latchkey-verify against a live issuer: the negative suite, the JWKS cache (rotation through
//! the unknown-kid path, single-flight bursts, issuer outages), discovery, and the actix
//! extractors of the example resource server.

use std::time::{Duration, Instant, SystemTime};

use actix_web::{App, test as actix_test};
use jsonwebtoken::{Algorithm, EncodingKey};
use latchkey::keys::files;
use latchkey_verify::{ErrorKind, Verifier};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, PASSWORD, TestApp, at_header, claims_of, free_port, sign_raw_with_issuer_key,
    sign_with_issuer_key, spawn_app, spawn_app_with, text,
};

#[allow(dead_code)]
#[path = "../../examples/resource_server.rs"]
pub(crate) mod resource_server;

fn verifier_for(app: &TestApp) -> Verifier {
    Verifier::from_jwks_url(
        &app.url("/.well-known/jwks.json"),
        "http://127.0.0.1",
        "api",
    )
    .unknown_kid_cooldown(Duration::from_secs(30))
    .build()
    .unwrap()
}

async fn logged_in(app: &TestApp) -> String {
    app.add_user("alice", PASSWORD).await;
    text(&app.login_ok("alice").await, "access_token")
}

fn now_secs() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_token_from_the_issuer_verifies_with_typed_claims() {
    let app = spawn_app().await;
    let access = logged_in(&app).await;
    let verifier = verifier_for(&app);

    let claims = verifier.verify(&access).await.unwrap();

    assert_eq!(claims.iss, "http://127.0.0.1");
    assert_eq!(claims.aud, vec!["api"]);
    assert_eq!(claims.client_id.as_deref(), Some("latchkey"));
    assert!(claims.sid.is_some());
    assert_eq!(verifier.jwks_fetches(), 1);
}

#[tokio::test]
async fn expiry_and_not_before_are_judged_at_the_given_instant() {
    let app = spawn_app().await;
    let access = logged_in(&app).await;
    let verifier = verifier_for(&app);
    let claims = claims_of(&access);
    let at = |secs: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap());
    let (nbf, exp) = (
        claims["nbf"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );

    // The 30 s leeway either side, and nothing more: no sleeping, no wall clock.
    verifier.verify_at(&access, at(nbf - 30)).await.unwrap();
    verifier.verify_at(&access, at(exp + 29)).await.unwrap();
    let early = verifier.verify_at(&access, at(nbf - 31)).await.unwrap_err();
    assert_eq!(early.kind(), ErrorKind::NotYetValid);
    let late = verifier.verify_at(&access, at(exp + 30)).await.unwrap_err();
    assert_eq!(late.kind(), ErrorKind::Expired);
}

#[tokio::test]
async fn the_negative_suite_is_rejected_with_the_right_kind() {
    let app = spawn_app().await;
    let access = logged_in(&app).await;
    let verifier = verifier_for(&app);
    let claims = claims_of(&access);
    let es = at_header(Algorithm::ES256, "test-es");
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let jwks = app
        .get("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap();
    let rsa = files::generate(latchkey::config::Alg::RS256, 2048).unwrap();
    let parts: Vec<&str> = access.split('.').collect();
    let mut typ_jwt = es.clone();
    typ_jwt.typ = Some("JWT".into());

    let cases: Vec<(&str, String, ErrorKind)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"at+jwt","kid":"test-es"}"#),
                parts[1]
            ),
            ErrorKind::UnsupportedAlgorithm,
        ),
        (
            "HS256 keyed with the public JWKS",
            jsonwebtoken::encode(
                &at_header(Algorithm::HS256, "test-es"),
                &claims,
                &EncodingKey::from_secret(jwks.as_bytes()),
            )
            .unwrap(),
            ErrorKind::UnsupportedAlgorithm,
        ),
        (
            "unknown kid",
            sign_with_issuer_key(&app, &at_header(Algorithm::ES256, "nope"), &claims),
            ErrorKind::UnknownKey,
        ),
        (
            "wrong iss",
            sign_with_issuer_key(&app, &es, &with("iss", json!("http://evil"))),
            ErrorKind::WrongIssuer,
        ),
        (
            "wrong aud",
            sign_with_issuer_key(&app, &es, &with("aud", json!(["other"]))),
            ErrorKind::WrongAudience,
        ),
        (
            "wrong typ",
            sign_with_issuer_key(&app, &typ_jwt, &claims),
            ErrorKind::WrongType,
        ),
        (
            "expired",
            sign_with_issuer_key(&app, &es, &with("exp", json!(now_secs() - 120))),
            ErrorKind::Expired,
        ),
        (
            "not yet valid",
            sign_with_issuer_key(&app, &es, &with("nbf", json!(now_secs() + 120))),
            ErrorKind::NotYetValid,
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&with("sub", json!("mallory")).to_string()),
                parts[2]
            ),
            ErrorKind::InvalidSignature,
        ),
        (
            "tampered signature",
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                b64("not the signature, not at all, 64 bytes long....................")
            ),
            ErrorKind::InvalidSignature,
        ),
        (
            "header alg disagrees with the JWK",
            jsonwebtoken::encode(
                &at_header(Algorithm::RS256, "test-es"),
                &claims,
                &EncodingKey::from_rsa_der(&pkcs1_of(&rsa)),
            )
            .unwrap(),
            ErrorKind::AlgorithmMismatch,
        ),
        (
            "missing exp",
            sign_with_issuer_key(&app, &es, &{
                let mut c = claims.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
            ErrorKind::MissingClaim,
        ),
        (
            "an unknown critical header extension",
            {
                // RFC 7515 §4.1.11: a crit extension the verifier does not understand.
                let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "test-es",
                    "crit": ["exp-by-deed"], "exp-by-deed": true});
                sign_raw_with_issuer_key(&app, &header, &claims)
            },
            ErrorKind::CriticalHeader,
        ),
        ("garbage", "not.a.token".to_string(), ErrorKind::Malformed),
    ];

    for (what, token, kind) in cases {
        let err = verifier.verify(&token).await.expect_err(what);
        assert_eq!(err.kind(), kind, "{what}: {err}");
        assert!(err.is_token_error(), "{what}");
    }
    // And the real token still verifies: each rejection above is for its own reason.
    verifier.verify(&access).await.unwrap();
}

/// The PKCS#1 RSAPrivateKey inside a PKCS#8 PrivateKeyInfo (jsonwebtoken wants PKCS#1 for RSA).
fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
    // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, OCTET STRING privateKey }
    let mut i = 0;
    let mut read = |expect: u8, descend: bool| -> (usize, usize) {
        assert_eq!(pkcs8[i], expect);
        let (len, header) = match pkcs8[i + 1] {
            l if l < 0x80 => (usize::from(l), 2),
            0x81 => (usize::from(pkcs8[i + 2]), 3),
            0x82 => (
                (usize::from(pkcs8[i + 2]) << 8) | usize::from(pkcs8[i + 3]),
                4,
            ),
            _ => panic!("unexpected length"),
        };
        let start = i + header;
        i = if descend { start } else { start + len };
        (start, len)
    };
    read(0x30, true);
    read(0x02, false);
    read(0x30, false);
    let (start, len) = read(0x04, true);
    pkcs8[start..start + len].to_vec()
}

#[tokio::test]
async fn rotation_is_picked_up_through_the_unknown_kid_path_with_one_fetch_per_burst() {
    let app = spawn_app().await;
    let before = logged_in(&app).await;
    let verifier = verifier_for(&app);
    verifier.verify(&before).await.unwrap();
    assert_eq!(verifier.jwks_fetches(), 1);

    // The issuer switches to a new key now (an emergency rotation: no time to pre-publish).
    let mut config = crate::helpers::TestConfig {
        text: app.config_text.clone(),
        dir: app.dir.path().to_owned(),
    };
    config.add_key(
        "next-es",
        "ES256",
        "2021-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "",
    );
    std::fs::write(&app.config_path, &config.text).unwrap();
    app.reload().await.unwrap();
    let after = text(&app.login_ok("alice").await, "access_token");
    assert_eq!(
        jsonwebtoken::decode_header(&after).unwrap().kid.as_deref(),
        Some("next-es"),
        "the issuer did not switch keys"
    );

    // A burst of 50 verifications of the new kid: one fetch, and every one succeeds.
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (verifier, token) = (verifier.clone(), after.clone());
        burst.spawn(async move { verifier.verify(&token).await.map(|c| c.sub) });
    }
    for result in burst.join_all().await {
        result.unwrap();
    }
    assert_eq!(verifier.jwks_fetches(), 2);

    // Forged tokens with a kid nobody has, within the cooldown that fetch started: no fetch.
    let forged = sign_with_issuer_key(
        &app,
        &at_header(Algorithm::ES256, "ghost"),
        &claims_of(&after),
    );
    for _ in 0..20 {
        assert_eq!(
            verifier.verify(&forged).await.unwrap_err().kind(),
            ErrorKind::UnknownKey
        );
    }
    assert_eq!(verifier.jwks_fetches(), 2);

    // A warm verifier hit by a burst of 50 unknown kids fetches once, then the cooldown answers.
    let fresh = verifier_for(&app);
    fresh.verify(&after).await.unwrap();
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (verifier, token) = (fresh.clone(), forged.clone());
        burst.spawn(async move { verifier.verify(&token).await.map_err(|e| e.kind()) });
    }
    for result in burst.join_all().await {
        assert_eq!(result.unwrap_err(), ErrorKind::UnknownKey);
    }
    assert_eq!(fresh.jwks_fetches(), 2);
    for _ in 0..20 {
        assert_eq!(
            fresh.verify(&forged).await.unwrap_err().kind(),
            ErrorKind::UnknownKey
        );
    }
    assert_eq!(fresh.jwks_fetches(), 2);
}

#[tokio::test]
async fn cached_keys_keep_verifying_while_the_issuer_is_down() {
    let app = spawn_app_with(Backend::Embedded, |c| c.set("jwks", "max_age = \"1s\"")).await;
    let access = logged_in(&app).await;
    let verifier = verifier_for(&app);
    verifier.verify(&access).await.unwrap();
    let ghost = sign_with_issuer_key(
        &app,
        &at_header(Algorithm::ES256, "ghost"),
        &claims_of(&access),
    );

    let _stopped = app.stop().await;
    // Two seconds on, past the 1 s max-age: judged on an injected clock, no sleeping.
    let later = SystemTime::now() + Duration::from_secs(2);

    // Past max-age, the issuer unreachable: stale-if-error (1 day) keeps the cached key usable.
    let started = Instant::now();
    verifier.verify_at(&access, later).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a stale hit must not wait on a refetch"
    );
    // An unknown kid cannot be resolved while the issuer is down, and fails fast.
    let started = Instant::now();
    assert_eq!(
        verifier.verify_at(&ghost, later).await.unwrap_err().kind(),
        ErrorKind::UnknownKey
    );
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn without_any_cached_keys_an_unreachable_issuer_is_not_a_token_error() {
    let port = free_port();
    let verifier = Verifier::from_issuer(&format!("http://127.0.0.1:{port}"), "api")
        .http_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let token = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsiLCJ0eXAiOiJhdCtqd3QifQ.e30.sig";
    let err = verifier.verify(token).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::JwksUnavailable);
    assert!(!err.is_token_error());
}

#[tokio::test]
async fn discovery_finds_the_jwks_and_checks_the_issuer() {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.text = c
            .text
            .replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            )
            .replace(
                "issuer = \"http://127.0.0.1\"",
                &format!("issuer = \"{issuer}\""),
            );
    })
    .await;
    let access = logged_in(&app).await;

    let verifier = Verifier::from_issuer(&issuer, "api").build().unwrap();
    assert_eq!(verifier.verify(&access).await.unwrap().iss, issuer);
    assert_eq!(verifier.jwks_fetches(), 1);

    // Metadata that names another issuer is not trusted (RFC 8414 §3.3).
    let impostor = Verifier::from_issuer(&format!("http://localhost:{port}"), "api")
        .build()
        .unwrap();
    assert_eq!(
        impostor.verify(&access).await.unwrap_err().kind(),
        ErrorKind::Configuration
    );
}

fn request(method: actix_test::TestRequest, token: Option<&str>) -> actix_test::TestRequest {
    match token {
        Some(t) => method.insert_header(("authorization", format!("Bearer {t}"))),
        None => method,
    }
}

fn challenge(response: &actix_web::dev::ServiceResponse) -> String {
    response
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_example_resource_server_answers_401_403_and_200() {
    let issuer = spawn_app().await;
    let access = logged_in(&issuer).await;
    // A real token of a user who holds users:admin.
    issuer.add_user_with_scopes("root", &["users:admin"]).await;
    let admin = text(&issuer.login_ok("root").await, "access_token");
    assert_eq!(claims_of(&admin)["scope"], "users:admin account");
    let service = actix_test::init_service(
        App::new()
            .app_data(actix_web::web::Data::new(verifier_for(&issuer)))
            .configure(resource_server::routes),
    )
    .await;
    let get = || actix_test::TestRequest::get().uri("/users");
    let delete = || actix_test::TestRequest::delete().uri("/users/1");

    let ok = actix_test::call_service(&service, request(get(), Some(&access)).to_request()).await;
    assert_eq!(ok.status(), 200);
    let body: Value = actix_test::read_body_json(ok).await;
    assert_eq!(body["users"].as_array().unwrap().len(), 2);

    let missing = actix_test::call_service(&service, request(get(), None).to_request()).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(challenge(&missing), "Bearer");

    let bad = actix_test::call_service(&service, request(get(), Some("x.y.z")).to_request()).await;
    assert_eq!(bad.status(), 401);
    let bad_challenge = challenge(&bad);
    assert!(
        bad_challenge.starts_with("Bearer error=\"invalid_token\""),
        "{bad_challenge}"
    );
    let body: Value = actix_test::read_body_json(bad).await;
    assert_eq!(body["error"], "invalid_token");

    let forbidden =
        actix_test::call_service(&service, request(delete(), Some(&access)).to_request()).await;
    assert_eq!(forbidden.status(), 403);
    assert_eq!(
        challenge(&forbidden),
        "Bearer error=\"insufficient_scope\", scope=\"users:admin\""
    );
    let body: Value = actix_test::read_body_json(forbidden).await;
    assert_eq!(body["error"], "insufficient_scope");

    let allowed =
        actix_test::call_service(&service, request(delete(), Some(&admin)).to_request()).await;
    assert_eq!(allowed.status(), 204);
}

/// A JWKS endpoint that answers the first request (max-age=1) and leaves every later one
/// hanging, as an overloaded or half-dead issuer would.
async fn jwks_that_hangs_after_one_answer(jwks: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        for served in 0..20 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            if served == 0 {
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                    jwks.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            } else {
                held.push(socket);
            }
        }
    });
    url
}

#[tokio::test]
async fn a_stale_cache_hit_never_waits_on_the_refresh() {
    let app = spawn_app().await;
    let access = logged_in(&app).await;
    let jwks = app
        .get("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap();
    let url = jwks_that_hangs_after_one_answer(jwks).await;
    let verifier = Verifier::from_jwks_url(&url, "http://127.0.0.1", "api")
        .http_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    verifier.verify(&access).await.unwrap();
    // Past the 1 s max-age on an injected clock.
    let later = SystemTime::now() + Duration::from_millis(1500);

    // Stale now: each hit is answered from the cache while one background refresh hangs.
    for _ in 0..10 {
        let started = Instant::now();
        verifier.verify_at(&access, later).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "waited {:?}",
            started.elapsed()
        );
    }
    // The spawned refresh starts (then hangs on the endpoint): wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    while verifier.jwks_fetches() < 2 && Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    verifier.verify_at(&access, later).await.unwrap();
    assert_eq!(
        verifier.jwks_fetches(),
        2,
        "one background refresh, not one per hit"
    );
}

/// Serves `jwks` (changeable through the returned handle) with a 1 s max-age.
async fn jwks_server(jwks: String) -> (String, std::sync::Arc<std::sync::Mutex<String>>) {
    let current = std::sync::Arc::new(std::sync::Mutex::new(jwks));
    let served = std::sync::Arc::clone(&current);
    let router = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let body = served.lock().unwrap().clone();
            async move {
                (
                    [
                        ("content-type", "application/json"),
                        ("cache-control", "max-age=1"),
                    ],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, current)
}

/// The verified-token cache skips the signature of a token seen before, and nothing else: a hit
/// past the token's expiry, or after its key left the JWKS, is refused as without the cache.
#[tokio::test]
async fn the_token_cache_never_extends_a_tokens_life() {
    let app = spawn_app().await;
    let access = logged_in(&app).await;
    let jwks = app
        .get("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap();
    let (url, served) = jwks_server(jwks).await;
    let verifier = Verifier::from_jwks_url(&url, "http://127.0.0.1", "api")
        .token_cache(16)
        .unknown_kid_cooldown(Duration::ZERO)
        .build()
        .unwrap();
    let first = verifier.verify(&access).await.unwrap();
    assert_eq!(verifier.verify(&access).await.unwrap(), first, "a hit");
    let exp = u64::try_from(first.exp).unwrap();
    let past_expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(exp + 31);
    assert_eq!(
        verifier
            .verify_at(&access, past_expiry)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Expired
    );
    // Cached again, then its key is withdrawn from the JWKS.
    verifier.verify(&access).await.unwrap();
    *served.lock().unwrap() = r#"{"keys":[]}"#.to_owned();
    let withdrawn = Instant::now();
    loop {
        match verifier.verify(&access).await {
            Ok(_) => {
                assert!(
                    withdrawn.elapsed() < Duration::from_secs(5),
                    "a cached token outlived its key"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::UnknownKey);
                break;
            }
        }
    }
    // Forged tokens never enter the cache: a tampered signature is checked every time.
    let (signed, _) = access.rsplit_once('.').unwrap();
    let tampered = format!("{signed}.AAAA");
    for _ in 0..3 {
        assert!(verifier.verify(&tampered).await.is_err());
    }
}
