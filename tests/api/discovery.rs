//! The JWKS, the RFC 8414 metadata, and the probes.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, spawn_app, spawn_app_with};

#[tokio::test]
async fn jwks_publishes_every_scheduled_key_and_nothing_private() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.add_key(
            "next-rs",
            "RS256",
            "2099-01-01T00:00:00Z",
            "2100-06-01T00:00:00Z",
            "",
        );
        c.add_key(
            "old-es",
            "ES256",
            "2020-01-01T00:00:00Z",
            "2021-01-01T00:00:00Z",
            "",
        );
        c.add_key(
            "pulled",
            "ES256",
            "2020-01-01T00:00:00Z",
            "2100-01-01T00:00:00Z",
            "revoked = true",
        );
    })
    .await;

    let response = app.get("/.well-known/jwks.json").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=300, stale-if-error=86400"
    );
    assert!(response.headers().contains_key("etag"));
    let jwks: Value = response.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    // Active and upcoming are published; long-expired and revoked are not.
    assert_eq!(kids, vec!["test-es", "next-rs"]);
    for key in keys {
        assert_eq!(key["use"], "sig");
        match key["kty"].as_str().unwrap() {
            "EC" => {
                assert_eq!(key["alg"], "ES256");
                assert_eq!(key["crv"], "P-256");
                assert!(key["x"].is_string() && key["y"].is_string());
            }
            "RSA" => {
                assert_eq!(key["alg"], "RS256");
                assert!(key["n"].is_string() && key["e"].is_string());
            }
            other => panic!("unexpected kty {other}"),
        }
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            assert!(
                key.get(private).is_none(),
                "private member {private} published"
            );
        }
    }
}

#[tokio::test]
async fn jwks_answers_if_none_match_with_304() {
    let app = spawn_app().await;
    let first = app.get("/.well-known/jwks.json").await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();

    let again = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .header("if-none-match", format!("\"other\", {etag}"))
        .send()
        .await
        .unwrap();

    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    assert!(
        again.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=300")
    );
    assert!(again.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn metadata_lists_what_exists() {
    let app = spawn_app().await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK);
        let meta: Value = response.json().await.unwrap();
        assert_eq!(meta["issuer"], "http://127.0.0.1");
        assert_eq!(meta["jwks_uri"], "http://127.0.0.1/.well-known/jwks.json");
        assert!(meta["response_types_supported"].is_array());
        assert_eq!(
            meta["access_token_signing_alg_values_supported"],
            serde_json::json!(["ES256"])
        );
    }
}

#[tokio::test]
async fn probes_report_health_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn not_ready_without_an_active_key() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        // Only a key that has not started signing yet.
        c.text = c.text.replace(
            "2020-01-01T00:00:00Z\"\nnot_after = \"2100",
            "2099-01-01T00:00:00Z\"\nnot_after = \"2100",
        );
    })
    .await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["reason"], "no active signing key");

    app.add_user("alice", crate::helpers::PASSWORD).await;
    let login = app.login("alice", crate::helpers::PASSWORD).await;
    assert!(login.headers().contains_key("retry-after"));
    crate::helpers::assert_error(
        login,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    )
    .await;
}
