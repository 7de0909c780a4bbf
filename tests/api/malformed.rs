//! No input, however malformed, yields a 5xx: every bad request gets a 4xx JSON error.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, assert_error, spawn_app};

#[tokio::test]
async fn malformed_bodies_get_400_json_errors() {
    let app = spawn_app().await;
    app.add_user("alice", PASSWORD).await;
    let bodies = [
        "",
        "{",
        "null",
        "[]",
        "\"text\"",
        r#"{"username": "alice"}"#,
        r#"{"password": "x"}"#,
        r#"{"username": 5, "password": "x"}"#,
        r#"{"username": "alice", "password": ["x"]}"#,
        r#"{"username": "alice", "password": "x", "client_id": "bad client id!"}"#,
        "{\"username\": \"al\\u0000ice\", \"password\": \"x\"}",
    ];
    for path in ["/auth/login", "/auth/refresh", "/auth/logout"] {
        for body in bodies {
            let response = app
                .client
                .post(app.url(path))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            // /auth/refresh and /auth/logout accept any object with a refresh_token only.
            let status = response.status();
            assert!(status.is_client_error(), "{path} {body:?} -> {status}");
            let body_json: serde_json::Value = response.json().await.unwrap();
            assert!(body_json["error"].is_string(), "{path} {body:?}");
        }
    }
}

#[tokio::test]
async fn a_json_array_is_a_malformed_body_not_a_login() {
    let app = spawn_app().await;
    app.add_user("alice", PASSWORD).await;
    // serde reads a struct from an array positionally; the first-party API must not.
    for (path, body) in [
        ("/auth/login", json!(["alice", PASSWORD])),
        ("/auth/login", json!(["alice", PASSWORD, null])),
        ("/auth/login", json!(["alice", "wrong"])),
        ("/auth/refresh", json!(["lk_rt_x"])),
        ("/auth/logout", json!(["lk_rt_x"])),
    ] {
        let response = app.post_json(path, &body).await;
        let error = assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(
            error["error_description"]
                .as_str()
                .unwrap()
                .contains("JSON object"),
            "{path} {body}: {error}"
        );
    }
}

#[tokio::test]
async fn serde_messages_do_not_echo_values() {
    let app = spawn_app().await;
    let response = app
        .post_json(
            "/auth/login",
            &json!({"username": "alice", "password": 123456789}),
        )
        .await;
    let body = assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(!body.to_string().contains("123456789"));
}

#[tokio::test]
async fn oversized_and_mistyped_requests_are_refused() {
    let app = spawn_app().await;

    let huge = json!({"username": "a", "password": "x".repeat(64 * 1024)});
    assert_error(
        app.post_json("/auth/login", &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request",
    )
    .await;

    let long_password = json!({"username": "a", "password": "x".repeat(2000)});
    assert_error(
        app.post_json("/auth/login", &long_password).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;

    let long_name = json!({"username": "a".repeat(200), "password": "x"});
    assert_error(
        app.post_json("/auth/login", &long_name).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;

    let form = app
        .client
        .post(app.url("/auth/login"))
        .form(&[("username", "a"), ("password", "b")])
        .send()
        .await
        .unwrap();
    assert_error(form, StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request").await;

    let malformed_refresh = app
        .post_json("/auth/refresh", &json!({"refresh_token": "lk_rt_%%%"}))
        .await;
    assert_error(malformed_refresh, StatusCode::UNAUTHORIZED, "invalid_grant").await;
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let app = spawn_app().await;
    assert_error(
        app.get("/nope").await,
        StatusCode::NOT_FOUND,
        "invalid_request",
    )
    .await;
    assert_error(
        app.get("/auth/login").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
    )
    .await;
    let delete = app
        .client
        .delete(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_error(delete, StatusCode::METHOD_NOT_ALLOWED, "invalid_request").await;
}

#[tokio::test]
async fn head_answers_like_get_without_a_body_and_405_says_what_is_allowed() {
    let app = spawn_app().await;
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/healthz",
        "/readyz",
    ] {
        let get = app.get(path).await;
        let head = app.client.head(app.url(path)).send().await.unwrap();
        assert_eq!(head.status(), get.status(), "{path}");
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type"),
            "{path}"
        );
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "{path}: a HEAD body"
        );
    }
    // The userinfo challenge, too.
    let head = app
        .client
        .head(app.url("/auth/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::UNAUTHORIZED);
    assert!(head.headers().contains_key("www-authenticate"));

    for (method, path, allow) in [
        (reqwest::Method::GET, "/auth/login", "POST"),
        (reqwest::Method::PUT, "/auth/refresh", "POST"),
        (reqwest::Method::POST, "/.well-known/jwks.json", "GET, HEAD"),
        (reqwest::Method::DELETE, "/auth/userinfo", "GET, HEAD, POST"),
        (reqwest::Method::PUT, "/oauth/authorize", "GET, HEAD, POST"),
        (reqwest::Method::DELETE, "/oauth/logout", "GET, HEAD, POST"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        assert_error(response, StatusCode::METHOD_NOT_ALLOWED, "invalid_request").await;
    }
}
