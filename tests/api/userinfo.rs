//! `/auth/userinfo` accepts only tokens this issuer signed, unaltered, in date, for its audience.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey};
use latchkey::keys::files;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    PASSWORD, TestApp, assert_error, at_header, claims_of, sign_raw_with_issuer_key,
    sign_with_issuer_key, spawn_app, text,
};

async fn logged_in() -> (TestApp, String) {
    let app = spawn_app().await;
    app.add_user("alice", PASSWORD).await;
    let access = text(&app.login_ok("alice").await, "access_token");
    (app, access)
}

async fn assert_rejected(app: &TestApp, token: &str) {
    let response = app.userinfo(token).await;
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn issued_token_carries_rfc9068_claims() {
    let (app, access) = logged_in().await;
    let header = jsonwebtoken::decode_header(&access).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some("test-es"));
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let claims = claims_of(&access);
    for claim in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "client_id",
        "sid",
    ] {
        assert!(claims.get(claim).is_some(), "{claim} missing: {claims}");
    }
    assert_eq!(claims["iss"], "http://127.0.0.1");
    assert_eq!(claims["aud"], "api");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    assert_eq!(claims["scope"], "account");
    assert_eq!(app.userinfo(&access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn tampered_payload_or_signature_is_rejected() {
    let (app, access) = logged_in().await;
    let parts: Vec<&str> = access.split('.').collect();
    let mut claims = claims_of(&access);
    claims["sub"] = json!("someone-else");
    let forged_payload = B64.encode(claims.to_string());
    assert_rejected(&app, &format!("{}.{forged_payload}.{}", parts[0], parts[2])).await;

    let mut sig = B64.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    assert_rejected(
        &app,
        &format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig)),
    )
    .await;
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let (app, access) = logged_in().await;
    app.clock.advance(std::time::Duration::from_secs(900 + 31));
    assert_rejected(&app, &access).await;
}

#[tokio::test]
async fn token_signed_by_another_key_under_our_kid_is_rejected() {
    let (app, access) = logged_in().await;
    let other = files::generate(latchkey::config::Alg::ES256, 0).unwrap();
    let forged = jsonwebtoken::encode(
        &at_header(Algorithm::ES256, "test-es"),
        &claims_of(&access),
        &EncodingKey::from_ec_der(&other),
    )
    .unwrap();
    assert_rejected(&app, &forged).await;
}

#[tokio::test]
async fn alg_none_hs256_and_unknown_kid_are_rejected() {
    let (app, access) = logged_in().await;
    let claims = claims_of(&access);

    let none_header = B64.encode(r#"{"alg":"none","typ":"at+jwt","kid":"test-es"}"#);
    assert_rejected(
        &app,
        &format!("{none_header}.{}.", B64.encode(claims.to_string())),
    )
    .await;

    // HS256 keyed with the public JWK: the classic algorithm-confusion attack.
    let jwks = app
        .get("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap();
    let hs = jsonwebtoken::encode(
        &at_header(Algorithm::HS256, "test-es"),
        &claims,
        &EncodingKey::from_secret(jwks.as_bytes()),
    )
    .unwrap();
    assert_rejected(&app, &hs).await;

    let unknown = sign_with_issuer_key(&app, &at_header(Algorithm::ES256, "no-such-kid"), &claims);
    assert_rejected(&app, &unknown).await;
}

#[tokio::test]
async fn wrong_typ_issuer_or_audience_is_rejected() {
    let (app, access) = logged_in().await;
    let claims = claims_of(&access);

    let mut jwt_typ = at_header(Algorithm::ES256, "test-es");
    jwt_typ.typ = Some("JWT".into());
    assert_rejected(&app, &sign_with_issuer_key(&app, &jwt_typ, &claims)).await;

    let header = at_header(Algorithm::ES256, "test-es");
    for (claim, value) in [("iss", "http://evil"), ("aud", "other-api")] {
        let mut bad = claims.clone();
        bad[claim] = json!(value);
        assert_rejected(&app, &sign_with_issuer_key(&app, &header, &bad)).await;
    }
    // Our own key, every claim right: accepted (so the rejections above are for the reason named).
    assert_eq!(
        app.userinfo(&sign_with_issuer_key(&app, &header, &claims))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn missing_or_malformed_authorization_is_rejected() {
    let (app, _) = logged_in().await;

    let none = app
        .client
        .get(app.url("/auth/userinfo"))
        .send()
        .await
        .unwrap();
    // Both schemes are offered: bearer tokens, and DPoP-bound ones (RFC 9449 §7.1).
    assert_eq!(
        none.headers()["www-authenticate"],
        "Bearer realm=\"latchkey\", DPoP algs=\"ES256 RS256 PS256 EdDSA\""
    );
    assert_error(none, StatusCode::UNAUTHORIZED, "invalid_token").await;

    for value in [
        "Basic abc",
        "Bearer",
        "Bearer not.a.jwt",
        &format!("Bearer {}", "a".repeat(9000)),
    ] {
        let response = app
            .client
            .get(app.url("/auth/userinfo"))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    }
}

#[tokio::test]
async fn a_token_with_a_critical_header_extension_is_refused() {
    let (app, access) = logged_in().await;
    // Signed by the issuer's own key, otherwise valid: only the unknown `crit` is wrong
    // (RFC 7515 §4.1.11).
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "test-es",
        "crit": ["exp-by-deed"], "exp-by-deed": true});
    let plain = json!({"alg": "ES256", "typ": "at+jwt", "kid": "test-es"});
    let claims = claims_of(&access);
    assert_eq!(
        app.userinfo(&sign_raw_with_issuer_key(&app, &plain, &claims))
            .await
            .status(),
        StatusCode::OK
    );

    assert_rejected(&app, &sign_raw_with_issuer_key(&app, &header, &claims)).await;
}
