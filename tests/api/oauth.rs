//! The OAuth 2.0 surface: interoperability with a widely used client library (the `oauth2`
//! crate), every RFC 6749 §5.2 error, the RFC 7009 and RFC 7662 rules, client binding of refresh
//! tokens, and malformed form bodies.

use std::time::Duration;

use base64::Engine;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, ClientId, ClientSecret, IntrospectionUrl, ResourceOwnerPassword,
    ResourceOwnerUsername, Scope, TokenIntrospectionResponse, TokenResponse, TokenUrl,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, PASSWORD, TestApp, assert_error, claims_of, hash, spawn_app_with, text,
};

/// Secrets with characters RFC 6749 §2.3.1 form-encodes inside HTTP Basic.
const PORTAL_SECRET: &str = "p:rtal s%cret+/&=é";
const BILLING_SECRET: &str = "billing-secret-0123456789abcdef";
const INTROSPECTOR_SECRET: &str = "introspector-secret-0123456789";

/// The issuer with four clients: `portal` (confidential, password + refresh), `billing`
/// (confidential, client credentials, its own lifetime and audience), `mobile` (public,
/// password + refresh) and `introspector` (confidential, no grant).
async fn spawn_oauth_app(backend: Backend, extra: &str) -> TestApp {
    let (portal, billing, introspector) = (
        hash(PORTAL_SECRET).await,
        hash(BILLING_SECRET).await,
        hash(INTROSPECTOR_SECRET).await,
    );
    let extra = extra.to_owned();
    let app = spawn_app_with(backend, move |c| {
        let pair_limit = if extra.contains("tight") { 3 } else { 100000 };
        c.set("limits", "login_attempts_per_ip = 100000");
        c.set(
            "limits",
            &format!("failed_logins_per_user_ip = {pair_limit}"),
        );
        c.set("limits", "failed_logins_per_user = 100000");
        c.text.push_str(&format!(
            r#"

[[clients]]
id = "portal"
type = "confidential"
secret_hash = "{portal}"
grants = ["password", "refresh_token"]
scopes = ["read", "write"]

[[clients]]
id = "billing"
type = "confidential"
secret_hash = "{billing}"
grants = ["client_credentials"]
scopes = ["billing:read", "billing:write"]
access_ttl = "5m"
audience = ["billing-api"]

[[clients]]
id = "mobile"
type = "public"
grants = ["password", "refresh_token"]

[[clients]]
id = "introspector"
type = "confidential"
secret_hash = "{introspector}"
introspect = true
"#,
        ));
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    app
}

/// oauth2's HTTP seam, driven by the suite's reqwest.
async fn http(request: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let client = reqwest::Client::new();
    let response = client
        .request(request.method().clone(), request.uri().to_string())
        .headers(request.headers().clone())
        .body(request.body().clone())
        .send()
        .await?;
    let mut builder = oauth2::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = response.bytes().await?.to_vec();
    Ok(builder.body(body).unwrap())
}

fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| url_form(s);
    let pair = format!("{}:{}", enc(id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn url_form(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", &[("v", s)])
        .unwrap()
        .query()
        .unwrap()
        .trim_start_matches("v=")
        .to_owned()
}

/// A form POST with optional HTTP Basic credentials.
async fn post_form(
    app: &TestApp,
    path: &str,
    auth: Option<(&str, &str)>,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).form(params);
    if let Some((id, secret)) = auth {
        request = request.header("authorization", basic(id, secret));
    }
    request.send().await.unwrap()
}

/// Every OAuth answer carries no-store and no-cache (RFC 6749 §5.1).
fn assert_uncacheable(response: &reqwest::Response) {
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
}

/// What was sent (a name, Basic credentials, the form) and the error expected.
type ErrorCase<'a> = (
    &'a str,
    Option<(&'a str, &'a str)>,
    Vec<(&'a str, &'a str)>,
    StatusCode,
    &'a str,
);

async fn oauth_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_uncacheable(&response);
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"latchkey\""
        );
    }
    assert_error(response, status, code).await
}

on_every_backend!(
    an_off_the_shelf_oauth_client_works_unchanged,
    refresh_tokens_are_bound_to_their_client,
    a_user_named_after_a_client_shares_none_of_its_throttle,
    a_confidential_clients_token_ends_only_with_its_authentication,
);

async fn a_confidential_clients_token_ends_only_with_its_authentication(backend: Backend) {
    let app = spawn_oauth_app(backend, "").await;
    let portal = Some(("portal", PORTAL_SECRET));
    let issued: Value = post_form(
        &app,
        "/oauth/token",
        portal,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    let token = text(&issued, "refresh_token");
    // RFC 7009 §2.1: not without the client's authentication.
    let bare = app.logout(&token).await;
    assert_error(bare, StatusCode::BAD_REQUEST, "unauthorized_client").await;
    let refreshed = post_form(
        &app,
        "/oauth/token",
        portal,
        &[("grant_type", "refresh_token"), ("refresh_token", &token)],
    )
    .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let token = text(&refreshed.json::<Value>().await.unwrap(), "refresh_token");
    let revoked = post_form(&app, "/oauth/revoke", portal, &[("token", &token)]).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let after = post_form(
        &app,
        "/oauth/token",
        portal,
        &[("grant_type", "refresh_token"), ("refresh_token", &token)],
    )
    .await;
    assert_eq!(after.status(), StatusCode::BAD_REQUEST);
}

async fn a_user_named_after_a_client_shares_none_of_its_throttle(backend: Backend) {
    let app = spawn_oauth_app(backend, "tight").await;
    app.add_user("client:billing", PASSWORD).await;
    app.add_user("client:portal", PASSWORD).await;
    let token_request = async |id: &str, secret: &str, grant: &str| {
        post_form(
            &app,
            "/oauth/token",
            Some((id, secret)),
            &[("grant_type", grant)],
        )
        .await
    };
    // A user's failed logins under a client's name do not lock the client out...
    for _ in 0..3 {
        let refused = app.login("client:portal", "wrong password").await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    let portal = post_form(
        &app,
        "/oauth/token",
        Some(("portal", PORTAL_SECRET)),
        &[
            ("grant_type", "password"),
            ("username", "someone"),
            ("password", "x"),
        ],
    )
    .await;
    // (authenticated: the grant's own answer, not 401 or 429)
    assert_eq!(portal.status(), StatusCode::BAD_REQUEST);
    // ...nor does a successful login reset the client's count of guessed secrets.
    for _ in 0..2 {
        let guess = token_request("billing", "guess", "client_credentials").await;
        assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        app.login("client:billing", PASSWORD).await.status(),
        StatusCode::OK
    );
    let guess = token_request("billing", "guess", "client_credentials").await;
    assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
    let closed = token_request("billing", BILLING_SECRET, "client_credentials").await;
    assert_error(closed, StatusCode::TOO_MANY_REQUESTS, "slow_down").await;
}

async fn an_off_the_shelf_oauth_client_works_unchanged(backend: Backend) {
    let app = spawn_oauth_app(backend, "").await;
    // Discovery tells the client where everything is.
    let metadata: Value = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    let endpoint = |name: &str| metadata[name].as_str().unwrap().to_owned();
    let portal = BasicClient::new(ClientId::new("portal".into()))
        .set_client_secret(ClientSecret::new(PORTAL_SECRET.into()))
        .set_token_uri(
            TokenUrl::new(endpoint("token_endpoint").replace("http://127.0.0.1", &app.address))
                .unwrap(),
        );
    // The metadata names the revocation endpoint beside the token endpoint.
    assert_eq!(
        endpoint("revocation_endpoint"),
        "http://127.0.0.1/oauth/revoke"
    );

    // Password grant, HTTP Basic with a secret that needs form-encoding.
    let token = portal
        .exchange_password(
            &ResourceOwnerUsername::new("alice".into()),
            &ResourceOwnerPassword::new(PASSWORD.into()),
        )
        .request_async(&http)
        .await
        .unwrap();
    let claims = claims_of(token.access_token().secret());
    assert_eq!(claims["client_id"], "portal");
    let first_refresh = token.refresh_token().unwrap().clone();

    // Refresh with rotation.
    let renewed = portal
        .exchange_refresh_token(&first_refresh)
        .request_async(&http)
        .await
        .unwrap();
    let refresh = renewed.refresh_token().unwrap().clone();
    assert_ne!(refresh.secret(), first_refresh.secret());
    assert_eq!(
        app.userinfo(renewed.access_token().secret()).await.status(),
        StatusCode::OK
    );

    // Client credentials, by Basic and by post, with the client's own lifetime and audience.
    for auth in [AuthType::BasicAuth, AuthType::RequestBody] {
        let billing = BasicClient::new(ClientId::new("billing".into()))
            .set_client_secret(ClientSecret::new(BILLING_SECRET.into()))
            .set_token_uri(TokenUrl::new(app.url("/oauth/token")).unwrap())
            .set_auth_type(auth.clone());
        let token = billing
            .exchange_client_credentials()
            .add_scope(Scope::new("billing:read".into()))
            .request_async(&http)
            .await
            .unwrap();
        assert!(token.refresh_token().is_none());
        assert_eq!(token.expires_in(), Some(Duration::from_secs(300)));
        let claims = claims_of(token.access_token().secret());
        assert_eq!(claims["sub"], "billing");
        assert_eq!(claims["client_id"], "billing");
        assert_eq!(claims["aud"], "billing-api");
        assert_eq!(claims["scope"], "billing:read");
        assert!(claims.get("sid").is_none());
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            300
        );
    }

    // Introspection by a confidential client.
    let introspector = BasicClient::new(ClientId::new("introspector".into()))
        .set_client_secret(ClientSecret::new(INTROSPECTOR_SECRET.into()))
        .set_introspection_url(IntrospectionUrl::new(app.url("/oauth/introspect")).unwrap());
    let info = introspector
        .introspect(renewed.access_token())
        .request_async(&http)
        .await
        .unwrap();
    assert!(info.active());
    assert_eq!(info.client_id().unwrap().as_str(), "portal");
    assert_eq!(info.username(), Some("alice"));

    // Revocation: the session ends, its access token with it. The oauth2 crate sends revocations
    // only over https (RFC 7009 §2 requires TLS), and this test server is plain http on
    // loopback, so the request is the RFC 7009 §2.1 example, byte for byte but for its values.
    let revoked = app
        .client
        .post(app.url("/oauth/revoke"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Authorization", basic("portal", PORTAL_SECRET))
        .body(format!(
            "token={}&token_type_hint=refresh_token",
            refresh.secret()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert!(
        portal
            .exchange_refresh_token(&refresh)
            .request_async(&http)
            .await
            .is_err()
    );
    let info = introspector
        .introspect(renewed.access_token())
        .request_async(&http)
        .await
        .unwrap();
    assert!(!info.active());
}

async fn refresh_tokens_are_bound_to_their_client(backend: Backend) {
    let app = spawn_oauth_app(backend, "").await;
    let portal: Value = post_form(
        &app,
        "/oauth/token",
        Some(("portal", PORTAL_SECRET)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    let portal_refresh = text(&portal, "refresh_token");

    // Another client presenting it: invalid_grant, and nothing was consumed.
    for (who, auth, params) in [
        ("mobile", None, vec![("client_id", "mobile")]),
        ("billing", Some(("billing", BILLING_SECRET)), vec![]),
    ] {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", portal_refresh.as_str()),
        ];
        form.extend(params);
        let response = post_form(&app, "/oauth/token", auth, &form).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{who}: {body}");
        assert!(
            body["error"] == "invalid_grant" || body["error"] == "unauthorized_client",
            "{who}: {body}"
        );
    }
    // A confidential client's token at the first-party endpoint, without its authentication.
    assert_error(
        app.refresh(&portal_refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    )
    .await;
    let own = post_form(
        &app,
        "/oauth/token",
        Some(("portal", PORTAL_SECRET)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &portal_refresh),
        ],
    )
    .await;
    assert_eq!(
        own.status(),
        StatusCode::OK,
        "the token was consumed by a refusal"
    );

    // A public client's token works for that client, by id, and at /auth/refresh.
    let mobile: Value = post_form(
        &app,
        "/oauth/token",
        None,
        &[
            ("grant_type", "password"),
            ("client_id", "mobile"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    let renewed: Value = post_form(
        &app,
        "/oauth/token",
        None,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "mobile"),
            ("refresh_token", &text(&mobile, "refresh_token")),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        app.refresh(&text(&renewed, "refresh_token")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn every_token_endpoint_error_has_its_rfc_6749_code_and_status() {
    let app = spawn_oauth_app(Backend::Embedded, "").await;
    let good_refresh = text(
        &post_form(
            &app,
            "/oauth/token",
            Some(("portal", PORTAL_SECRET)),
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await
        .json::<Value>()
        .await
        .unwrap(),
        "refresh_token",
    );
    let portal = Some(("portal", PORTAL_SECRET));
    let billing = Some(("billing", BILLING_SECRET));
    let cases: Vec<ErrorCase> = vec![
        (
            "no grant_type",
            portal,
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "refresh without token",
            portal,
            vec![("grant_type", "refresh_token")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "password without username",
            portal,
            vec![("grant_type", "password"), ("password", "x")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown client",
            Some(("nobody", "x")),
            vec![("grant_type", "client_credentials")],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "confidential without secret",
            None,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "billing"),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "wrong secret by basic",
            Some(("billing", "wrong")),
            vec![("grant_type", "client_credentials")],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "wrong secret by post",
            None,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "billing"),
                ("client_secret", "wrong"),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "authenticated twice",
            billing,
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", BILLING_SECRET),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "a public client with a secret",
            None,
            vec![
                ("grant_type", "password"),
                ("client_id", "mobile"),
                ("client_secret", "x"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "no client at all",
            None,
            vec![("grant_type", "client_credentials")],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "wrong password",
            portal,
            vec![
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "wrong"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "unknown refresh token",
            portal,
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "lk_rt_nope"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "a grant the client does not have",
            billing,
            vec![
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
        ),
        (
            "client credentials for a public client",
            None,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "mobile"),
            ],
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
        ),
        (
            "authorization_code for a client not registered for it",
            portal,
            vec![("grant_type", "authorization_code"), ("code", "x")],
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
        ),
        (
            "an unknown grant type",
            portal,
            vec![("grant_type", "urn:ietf:params:oauth:grant-type:device_code")],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            "a scope the client may not have",
            billing,
            vec![("grant_type", "client_credentials"), ("scope", "admin")],
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            "a user scope the client may not carry",
            portal,
            vec![
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", PASSWORD),
                ("scope", "admin"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            "a wider scope on refresh",
            portal,
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", &good_refresh),
                ("scope", "write"),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
    ];
    for (what, auth, params, status, code) in cases {
        let response = post_form(&app, "/oauth/token", auth, &params).await;
        assert_eq!(response.status(), status, "{what}");
        let body = oauth_error(response, status, code).await;
        assert_eq!(body["error"], code, "{what}: {body}");
    }
    // Duplicate parameters are refused (RFC 6749 §3.1).
    let duplicated = app
        .client
        .post(app.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic("billing", BILLING_SECRET))
        .body("grant_type=client_credentials&grant_type=password")
        .send()
        .await
        .unwrap();
    oauth_error(duplicated, StatusCode::BAD_REQUEST, "invalid_request").await;
    // The refused wider scope consumed nothing.
    let after = post_form(
        &app,
        "/oauth/token",
        portal,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &good_refresh),
        ],
    )
    .await;
    assert_eq!(after.status(), StatusCode::OK);
    assert_uncacheable(&after);
}

#[tokio::test]
async fn failed_client_authentications_are_throttled() {
    let app = spawn_oauth_app(Backend::Embedded, "tight").await;
    for _ in 0..3 {
        let response = post_form(
            &app,
            "/oauth/token",
            Some(("billing", "guess")),
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let throttled = post_form(
        &app,
        "/oauth/token",
        Some(("billing", BILLING_SECRET)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert!(throttled.headers().contains_key("retry-after"));
    assert_error(throttled, StatusCode::TOO_MANY_REQUESTS, "slow_down").await;
}

#[tokio::test]
async fn revocation_follows_rfc_7009() {
    let app = spawn_oauth_app(Backend::Embedded, "").await;
    let login = |app: &TestApp| {
        let app_url = app.url("/oauth/token");
        let client = app.client.clone();
        async move {
            client
                .post(app_url)
                .header("authorization", basic("portal", PORTAL_SECRET))
                .form(&[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", PASSWORD),
                ])
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let portal = Some(("portal", PORTAL_SECRET));
    let revoke = |auth, params: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(app, "/oauth/revoke", auth, &params).await
        }
    };

    // Another client's revocation: 200, and nothing happens.
    let tokens = login(&app).await;
    let response = revoke(
        Some(("billing", BILLING_SECRET)),
        vec![("token", text(&tokens, "refresh_token"))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_uncacheable(&response);
    assert_eq!(
        app.userinfo(&text(&tokens, "access_token")).await.status(),
        StatusCode::OK
    );

    // A refresh token, with a misleading hint: the session ends.
    let response = revoke(
        portal,
        vec![
            ("token", text(&tokens, "refresh_token")),
            ("token_type_hint", "access_token".into()),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        app.userinfo(&text(&tokens, "access_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // An access token: the session its sid names ends, refresh token included.
    let tokens = login(&app).await;
    let response = revoke(
        portal,
        vec![
            ("token", text(&tokens, "access_token")),
            ("token_type_hint", "refresh_token".into()),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let refreshed = post_form(
        &app,
        "/oauth/token",
        portal,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &text(&tokens, "refresh_token")),
        ],
    )
    .await;
    oauth_error(refreshed, StatusCode::BAD_REQUEST, "invalid_grant").await;

    // Unknown and malformed tokens: 200.
    for token in ["lk_rt_unknown", "garbage", "a.b.c"] {
        assert_eq!(
            revoke(portal, vec![("token", token.into())]).await.status(),
            StatusCode::OK
        );
    }
    // Only an authenticated client may ask, and it must name a token.
    let anonymous = revoke(None, vec![("token", "x".into())]).await;
    oauth_error(anonymous, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let wrong = revoke(Some(("portal", "wrong")), vec![("token", "x".into())]).await;
    oauth_error(wrong, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let missing = revoke(portal, vec![]).await;
    oauth_error(missing, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn introspection_follows_rfc_7662() {
    let app = spawn_oauth_app(Backend::Embedded, "").await;
    let introspector = Some(("introspector", INTROSPECTOR_SECRET));
    let introspect = |token: String| {
        let app = &app;
        async move {
            let response =
                post_form(app, "/oauth/introspect", introspector, &[("token", &token)]).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_uncacheable(&response);
            response.json::<Value>().await.unwrap()
        }
    };
    let tokens: Value = post_form(
        &app,
        "/oauth/token",
        Some(("portal", PORTAL_SECRET)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    let access = text(&tokens, "access_token");

    // An active access token says what it carries.
    let info = introspect(access.clone()).await;
    assert_eq!(info["active"], true);
    for field in [
        "client_id",
        "sub",
        "username",
        "exp",
        "iat",
        "nbf",
        "aud",
        "iss",
        "jti",
        "token_type",
    ] {
        assert!(info.get(field).is_some(), "{field} missing: {info}");
    }
    assert_eq!(info["username"], "alice");
    assert_eq!(info["token_type"], "Bearer");

    // A refresh token introspects too, never revealing itself; once rotated, it is inactive.
    let refresh = text(&tokens, "refresh_token");
    let info = introspect(refresh.clone()).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], "portal");
    assert!(!info.to_string().contains(&refresh));
    let rotated: Value = post_form(
        &app,
        "/oauth/token",
        Some(("portal", PORTAL_SECRET)),
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(introspect(refresh).await, json!({"active": false}));

    // A client's own token, active without a user.
    let service: Value = post_form(
        &app,
        "/oauth/token",
        Some(("billing", BILLING_SECRET)),
        &[("grant_type", "client_credentials")],
    )
    .await
    .json()
    .await
    .unwrap();
    let info = introspect(text(&service, "access_token")).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["sub"], "billing");
    assert!(info.get("username").is_none());

    // Inactive is {"active": false} and nothing else: garbage, a disabled user's token.
    for garbage in ["garbage", "a.b.c", "lk_rt_nope"] {
        assert_eq!(introspect(garbage.into()).await, json!({"active": false}));
    }
    let user = app.store.user_by_name("alice").await.unwrap().unwrap();
    app.store
        .set_disabled(
            &user.id,
            true,
            &crate::helpers::note(latchkey::store::RevocationReason::UserDisabled),
        )
        .await
        .unwrap();
    assert_eq!(
        introspect(text(&rotated, "access_token")).await,
        json!({"active": false})
    );

    // Public clients cannot introspect; a confidential one must authenticate.
    let public = post_form(
        &app,
        "/oauth/introspect",
        None,
        &[("client_id", "mobile"), ("token", &access)],
    )
    .await;
    oauth_error(public, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let wrong = post_form(
        &app,
        "/oauth/introspect",
        Some(("introspector", "x")),
        &[("token", &access)],
    )
    .await;
    oauth_error(wrong, StatusCode::UNAUTHORIZED, "invalid_client").await;
    // A confidential client not allowed to introspect learns nothing, not even of its own.
    let billing = post_form(
        &app,
        "/oauth/introspect",
        Some(("billing", BILLING_SECRET)),
        &[("token", &access)],
    )
    .await;
    let body = oauth_error(billing, StatusCode::BAD_REQUEST, "unauthorized_client").await;
    assert!(body.get("active").is_none(), "{body}");
}

#[tokio::test]
async fn a_revoked_keys_tokens_introspect_inactive() {
    let app = spawn_oauth_app(Backend::Embedded, "").await;
    let service: Value = post_form(
        &app,
        "/oauth/token",
        Some(("billing", BILLING_SECRET)),
        &[("grant_type", "client_credentials")],
    )
    .await
    .json()
    .await
    .unwrap();
    let token = text(&service, "access_token");
    let introspect = async || {
        post_form(
            &app,
            "/oauth/introspect",
            Some(("introspector", INTROSPECTOR_SECRET)),
            &[("token", &token)],
        )
        .await
    };
    assert_eq!(
        introspect().await.json::<Value>().await.unwrap()["active"],
        true
    );

    // The signing key is revoked (a replacement signs from now on).
    let mut config = crate::helpers::TestConfig {
        text: app.config_text.replace(
            "not_after = \"2100-01-01T00:00:00Z\"\n",
            "not_after = \"2100-01-01T00:00:00Z\"\nrevoked = true\n",
        ),
        dir: app.dir.path().to_owned(),
    };
    config.add_key(
        "next-es",
        "ES256",
        "2020-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "",
    );
    std::fs::write(&app.config_path, &config.text).unwrap();
    app.reload().await.unwrap();

    assert_eq!(
        introspect().await.json::<Value>().await.unwrap(),
        json!({"active": false})
    );
}

#[tokio::test]
async fn no_malformed_form_body_yields_a_5xx() {
    let app = spawn_oauth_app(Backend::Embedded, "").await;
    let big = vec![b'a'; 2 * 1024 * 1024];
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/x-www-form-urlencoded", Vec::new()),
        ("application/x-www-form-urlencoded", b"&&&==&=".to_vec()),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=%ff%fe".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=%zz".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"token=a&token=b".to_vec(),
        ),
        ("application/x-www-form-urlencoded", vec![0xff, 0xfe, 0x00]),
        (
            "application/json",
            br#"{"grant_type":"client_credentials"}"#.to_vec(),
        ),
        ("text/plain", b"grant_type=client_credentials".to_vec()),
        ("application/x-www-form-urlencoded", big),
    ];
    for path in ["/oauth/token", "/oauth/revoke", "/oauth/introspect"] {
        for (content_type, body) in &bodies {
            let response = app
                .client
                .post(app.url(path))
                .header("content-type", *content_type)
                .header("authorization", basic("introspector", INTROSPECTOR_SECRET))
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = response.status();
            assert!(
                status.is_client_error(),
                "{path} {content_type} {} bytes -> {status}",
                body.len()
            );
            assert!(response.json::<Value>().await.unwrap()["error"].is_string());
        }
    }
    // A mangled Basic header is invalid_client, not a crash.
    for header in [
        "Basic !!!",
        "Basic ",
        "Basic Zm9v",
        "Bearer x",
        "Basic Og==",
    ] {
        let response = app
            .client
            .post(app.url("/oauth/token"))
            .header("authorization", header)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header}");
    }
}

#[tokio::test]
async fn first_party_login_names_a_registered_public_client() {
    let app = spawn_oauth_app(Backend::Embedded, "").await;
    let login = async |client_id: &str| {
        app.post_json(
            "/auth/login",
            &json!({"username": "alice", "password": PASSWORD, "client_id": client_id}),
        )
        .await
    };
    assert_eq!(login("mobile").await.status(), StatusCode::OK);
    let unknown = login("nobody").await;
    assert_eq!(
        unknown.headers()["www-authenticate"],
        "Basic realm=\"latchkey\""
    );
    assert_error(unknown, StatusCode::UNAUTHORIZED, "invalid_client").await;
    // A confidential client authenticates: it signs users in at /oauth/token.
    assert_error(
        login("portal").await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    // No client_id: the first-party client, as before.
    assert_eq!(app.login("alice", PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn discovery_advertises_the_oauth_endpoints_in_use() {
    let app = spawn_oauth_app(Backend::Embedded, "").await;
    let metadata: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["token_endpoint"], "http://127.0.0.1/oauth/token");
    assert_eq!(
        metadata["revocation_endpoint"],
        "http://127.0.0.1/oauth/revoke"
    );
    assert_eq!(
        metadata["introspection_endpoint"],
        "http://127.0.0.1/oauth/introspect"
    );
    assert_eq!(
        metadata["grant_types_supported"],
        json!(["password", "refresh_token", "client_credentials"])
    );
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(
        metadata["introspection_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(
        metadata["scopes_supported"],
        json!(["billing:read", "billing:write", "read", "write"])
    );
    for (name, value) in metadata.as_object().unwrap() {
        if name.ends_with("_endpoint") || name.ends_with("_uri") {
            assert!(
                value.as_str().unwrap().starts_with("http://127.0.0.1/"),
                "{name}"
            );
        }
    }
}
