//! Browser apps: the refresh token only in an HttpOnly cookie, the Origin check on every request
//! that uses or sets it, CORS for registered origins only.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, assert_error, spawn_app_with};

const ORIGIN: &str = "http://app.example:5173";

on_every_backend!(
    a_cookie_client_never_sees_its_refresh_token_and_refreshes_by_cookie,
    racing_tabs_get_the_same_cookie_and_reuse_clears_it,
    a_cookie_clients_session_ends_only_through_its_cookie_from_its_origin,
);

async fn a_cookie_clients_session_ends_only_through_its_cookie_from_its_origin(backend: Backend) {
    let app = spawn_spa(backend, "http://127.0.0.1").await;
    let response = login(&app, Some(ORIGIN)).await;
    let (token, _) = set_cookie(&response, "latchkey_rt_spa");
    let cookie = format!("latchkey_rt_spa={token}");
    // The bare token in a body, from anywhere: refused, and the session lives on.
    let bare = post(
        &app,
        "/auth/logout",
        None,
        None,
        &json!({"refresh_token": token}),
    )
    .await;
    assert_error(bare, StatusCode::BAD_REQUEST, "unauthorized_client").await;
    // The cookie from a foreign origin: refused too.
    let foreign = post(
        &app,
        "/auth/logout",
        Some("http://evil.example"),
        Some(&cookie),
        &json!({"client_id": "spa"}),
    )
    .await;
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let refreshed = post(
        &app,
        "/auth/refresh",
        Some(ORIGIN),
        Some(&cookie),
        &json!({}),
    )
    .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let (token, _) = set_cookie(&refreshed, "latchkey_rt_spa");
    let cookie = format!("latchkey_rt_spa={token}");
    // Through the cookie path, from its origin: ended.
    let ended = post(
        &app,
        "/auth/logout",
        Some(ORIGIN),
        Some(&cookie),
        &json!({}),
    )
    .await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let after = post(
        &app,
        "/auth/refresh",
        Some(ORIGIN),
        Some(&cookie),
        &json!({}),
    )
    .await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}

async fn spawn_spa(backend: Backend, issuer: &str) -> TestApp {
    let issuer = issuer.to_owned();
    let app = spawn_app_with(backend, move |c| {
        c.text = c
            .text
            .replace("issuer = \"http://127.0.0.1\"", &format!("issuer = \"{issuer}\""));
        c.text.push_str(&format!(
            "\n[[clients]]\nid = \"spa\"\ntype = \"public\"\ngrants = [\"refresh_token\"]\nrefresh_delivery = \"cookie\"\nallowed_origins = [\"{ORIGIN}\"]\n"
        ));
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    app
}

/// A browser-like POST: an Origin, and the cookie when given.
async fn post(
    app: &TestApp,
    path: &str,
    origin: Option<&str>,
    cookie: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).json(body);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

async fn login(app: &TestApp, origin: Option<&str>) -> reqwest::Response {
    post(
        app,
        "/auth/login",
        origin,
        None,
        &json!({"username": "alice", "password": PASSWORD, "client_id": "spa"}),
    )
    .await
}

/// The `Set-Cookie` for `name`, as `(value, attributes)`.
fn set_cookie(response: &reqwest::Response, name: &str) -> (String, String) {
    let header = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie {name}: {:?}", response.headers()));
    let (pair, attributes) = header.split_once(';').unwrap_or((&header, ""));
    (
        pair.split_once('=').unwrap().1.to_owned(),
        attributes.to_owned(),
    )
}

async fn a_cookie_client_never_sees_its_refresh_token_and_refreshes_by_cookie(backend: Backend) {
    let app = spawn_spa(backend, "http://127.0.0.1").await;

    let response = login(&app, Some(ORIGIN)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (token, attributes) = set_cookie(&response, "latchkey_rt_spa");
    assert!(token.starts_with("lk_rt_"));
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/auth", "Max-Age="] {
        assert!(
            attributes.contains(attribute),
            "{attribute} in {attributes}"
        );
    }
    assert!(
        !attributes.contains("Secure"),
        "an http issuer: {attributes}"
    );
    let body: Value = response.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body.get("refresh_expires_in").is_none(), "{body}");
    assert!(!body.to_string().contains(&token));

    // A body token is refused for a cookie client, and nothing is consumed.
    let from_body = post(
        &app,
        "/auth/refresh",
        None,
        None,
        &json!({"refresh_token": token}),
    )
    .await;
    assert_error(from_body, StatusCode::UNAUTHORIZED, "invalid_grant").await;

    // Refresh by cookie, from the client's origin: a new cookie, no token in the body.
    let cookie = format!("latchkey_rt_spa={token}");
    let response = post(
        &app,
        "/auth/refresh",
        Some(ORIGIN),
        Some(&cookie),
        &json!({}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (next, _) = set_cookie(&response, "latchkey_rt_spa");
    assert_ne!(next, token);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("refresh_token").is_none());
    assert!(body["access_token"].is_string());
    // With no body at all (what fetch sends with no payload) it works the same.
    let response = app
        .client
        .post(app.url("/auth/refresh"))
        .header("origin", ORIGIN)
        .header("cookie", format!("latchkey_rt_spa={next}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (current, _) = set_cookie(&response, "latchkey_rt_spa");

    // The CSRF defence: a missing, null or foreign Origin, or a cross-site fetch, is refused
    // and touches nothing.
    let cookie = format!("latchkey_rt_spa={current}");
    for (origin, site) in [
        (None, None),
        (Some("null"), None),
        (Some("http://evil.example"), None),
        (Some("http://app.example:5174"), None),
        (Some(ORIGIN), Some("cross-site")),
    ] {
        for path in ["/auth/refresh", "/auth/logout"] {
            let mut request = app
                .client
                .post(app.url(path))
                .json(&json!({"client_id": "spa"}))
                .header("cookie", &cookie);
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            if let Some(site) = site {
                request = request.header("sec-fetch-site", site);
            }
            let response = request.send().await.unwrap();
            assert_error(response, StatusCode::FORBIDDEN, "access_denied").await;
        }
    }
    assert_error(
        login(&app, Some("http://evil.example")).await,
        StatusCode::FORBIDDEN,
        "access_denied",
    )
    .await;
    // Untouched: the cookie still refreshes.
    let response = post(
        &app,
        "/auth/refresh",
        Some(ORIGIN),
        Some(&cookie),
        &json!({}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (last, _) = set_cookie(&response, "latchkey_rt_spa");

    // Logout ends the session and clears the cookie.
    let cookie = format!("latchkey_rt_spa={last}");
    let response = post(
        &app,
        "/auth/logout",
        Some(ORIGIN),
        Some(&cookie),
        &json!({}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (cleared, attributes) = set_cookie(&response, "latchkey_rt_spa");
    assert!(
        cleared.is_empty() && attributes.contains("Max-Age=0"),
        "{attributes}"
    );
    let after = post(
        &app,
        "/auth/refresh",
        Some(ORIGIN),
        Some(&cookie),
        &json!({}),
    )
    .await;
    assert_error(after, StatusCode::UNAUTHORIZED, "invalid_grant").await;
}

async fn racing_tabs_get_the_same_cookie_and_reuse_clears_it(backend: Backend) {
    let app = spawn_spa(backend, "http://127.0.0.1").await;
    let (token, _) = set_cookie(&login(&app, Some(ORIGIN)).await, "latchkey_rt_spa");
    let cookie = format!("latchkey_rt_spa={token}");

    // Two tabs refresh at the same moment with the same cookie: the same successor for both.
    let empty = json!({});
    let (a, b) = tokio::join!(
        post(&app, "/auth/refresh", Some(ORIGIN), Some(&cookie), &empty),
        post(&app, "/auth/refresh", Some(ORIGIN), Some(&cookie), &empty)
    );
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(b.status(), StatusCode::OK);
    let (a, _) = set_cookie(&a, "latchkey_rt_spa");
    let (b, _) = set_cookie(&b, "latchkey_rt_spa");
    assert_eq!(a, b, "racing tabs must end up holding one token");

    // The spent token after the grace window: reuse. The session ends and the cookie is cleared.
    app.clock.advance(std::time::Duration::from_secs(11));
    let reused = post(
        &app,
        "/auth/refresh",
        Some(ORIGIN),
        Some(&cookie),
        &json!({}),
    )
    .await;
    let (cleared, attributes) = set_cookie(&reused, "latchkey_rt_spa");
    assert!(
        cleared.is_empty() && attributes.contains("Max-Age=0"),
        "{attributes}"
    );
    assert_error(reused, StatusCode::UNAUTHORIZED, "invalid_grant").await;
    let live = format!("latchkey_rt_spa={a}");
    let after = post(&app, "/auth/refresh", Some(ORIGIN), Some(&live), &json!({})).await;
    assert_error(after, StatusCode::UNAUTHORIZED, "invalid_grant").await;
}

#[tokio::test]
async fn an_https_issuer_sets_a_secure_prefixed_cookie() {
    let app = spawn_spa(Backend::Embedded, "https://auth.example").await;

    let response = login(&app, Some(ORIGIN)).await;

    assert_eq!(response.status(), StatusCode::OK);
    let (token, attributes) = set_cookie(&response, "__Secure-latchkey_rt_spa");
    assert!(token.starts_with("lk_rt_"));
    assert!(attributes.contains("Secure"), "{attributes}");
    let cookie = format!("__Secure-latchkey_rt_spa={token}");
    let response = post(
        &app,
        "/auth/refresh",
        Some(ORIGIN),
        Some(&cookie),
        &json!({}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn cors_answers_registered_origins_only() {
    let app = spawn_spa(Backend::Embedded, "http://127.0.0.1").await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/auth/refresh"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };

    let allowed = preflight(ORIGIN).await.unwrap();
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let allowed_headers = h["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed_headers.contains("content-type") && allowed_headers.contains("authorization"));
    assert!(h.contains_key("access-control-max-age"));

    let foreign = preflight("http://evil.example").await.unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    assert!(
        !foreign
            .headers()
            .contains_key("access-control-allow-origin")
    );

    // Actual requests: the grant for the registered origin, nothing for others.
    let response = login(&app, Some(ORIGIN)).await;
    assert_eq!(response.headers()["access-control-allow-origin"], ORIGIN);
    assert_eq!(
        response.headers()["access-control-allow-credentials"],
        "true"
    );
    assert!(
        response.headers()["vary"]
            .to_str()
            .unwrap()
            .contains("Origin")
    );
    let foreign = post(
        &app,
        "/auth/userinfo",
        Some("http://evil.example"),
        None,
        &json!({}),
    )
    .await;
    assert!(
        !foreign
            .headers()
            .contains_key("access-control-allow-origin")
    );

    // Public documents may be read from anywhere.
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
    ] {
        let response = app
            .client
            .get(app.url(path))
            .header("origin", "http://anyone.example")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "*",
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_cookie_client_cannot_use_the_token_endpoint() {
    let app = spawn_spa(Backend::Embedded, "http://127.0.0.1").await;
    let response = app
        .client
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "spa"),
            ("refresh_token", "lk_rt_x"),
        ])
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::BAD_REQUEST, "unauthorized_client").await;
}

#[test]
fn cookie_clients_are_validated() {
    let base = "issuer = \"http://x\"\nlisten = \"127.0.0.1:0\"\n[[keys]]\nkid = \"k\"\nalg = \"ES256\"\npath = \"k.pem\"\nnot_before = \"2026-01-01T00:00:00Z\"\nnot_after = \"2027-01-01T00:00:00Z\"\n";
    let text = format!(
        "{base}\n[[clients]]\nid = \"a\"\ntype = \"public\"\ngrants = []\nrefresh_delivery = \"cookie\"\n\n[[clients]]\nid = \"b\"\ntype = \"public\"\ngrants = [\"refresh_token\"]\nrefresh_delivery = \"cookie\"\nallowed_origins = [\"http://app.example/path\"]\n"
    );
    let err = latchkey::config::Config::parse(&text, |_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("clients[0].allowed_origins: a cookie client needs"),
        "{err}"
    );
    assert!(
        err.contains("clients[0].grants: a cookie client needs refresh_token"),
        "{err}"
    );
    assert!(
        err.contains("clients[1].allowed_origins: \"http://app.example/path\""),
        "{err}"
    );
}
