//! OpenID Connect as a strict relying party sees it: the Rust `openidconnect` crate discovers
//! the issuer, signs in with PKCE and a nonce, and verifies the ID token (RS256 only by default:
//! `typ`, `aud`, `azp`, nonce, signature, `at_hash`), then refreshes and verifies the new one.
//! Tests are named after the OpenID Foundation's Basic OP modules they follow.

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenClaims, CoreProviderMetadata,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::authorize::{browser, http, log_in_on, redirect_params};
use crate::helpers::{Backend, PASSWORD, TestApp, assert_error, claims_of, spawn_app_with, text};

pub(crate) const CALLBACK: &str = "http://127.0.0.1:9/callback";
pub(crate) const SIGNED_OUT: &str = "http://127.0.0.1:9/signed-out";

/// The issuer on its own port (relying parties follow discovery's URLs), an ES256 key for
/// access tokens and an RS256 key for ID tokens, the public client `rp` and `alice`.
async fn spawn_op(backend: Backend) -> (TestApp, String) {
    spawn_op_with(backend, "").await
}

/// As [`spawn_op`], with `rp_settings` (TOML lines) added to the client `rp`.
pub(crate) async fn spawn_op_with(backend: Backend, rp_settings: &str) -> (TestApp, String) {
    let mut issuer = String::new();
    let app = spawn_app_with(backend, |c| {
        issuer = c.issuer_on_own_port();
        c.add_key(
            "id-rs",
            "RS256",
            "2020-01-01T00:00:00Z",
            "2100-01-01T00:00:00Z",
            "signs = [\"id_tokens\"]",
        );
        c.text.push_str(&format!(
            "\n[[clients]]\nid = \"rp\"\ntype = \"public\"\ngrants = [\"authorization_code\", \"refresh_token\"]\nredirect_uris = [\"{CALLBACK}\"]\npost_logout_redirect_uris = [\"{SIGNED_OUT}\"]\n{rp_settings}\n"
        ));
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    (app, issuer)
}

/// `oidcc-server` and `oidcc-refresh-token`: discovery, the code flow with a nonce, an ID token
/// the crate verifies (signature, issuer, audience, nonce, expiry, at_hash), and a refresh whose
/// ID token keeps the subject and `auth_time` and carries no nonce.
async fn oidcc_server_and_refresh_token(backend: Backend) {
    let (app, issuer) = spawn_op(backend).await;
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.clone()).unwrap(), &http)
            .await
            .expect("discovery the crate accepts");
    let client = CoreClient::from_provider_metadata(metadata, ClientId::new("rp".into()), None)
        .set_redirect_uri(RedirectUrl::new(CALLBACK.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("openid".into()))
        .set_pkce_challenge(challenge)
        .url();

    let browser = browser();
    let page = browser.get(url.as_str()).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    let (_, query) = redirect_params(&log_in_on(&app, &browser, &page, PASSWORD).await);
    assert_eq!(query["state"], *state.secret());

    let token = client
        .exchange_code(AuthorizationCode::new(query["code"].clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("a token response the crate accepts");
    let id_token = token.id_token().expect("an ID token");
    let verifier = client.id_token_verifier();
    let claims: &CoreIdTokenClaims = id_token
        .claims(&verifier, &nonce)
        .expect("a valid ID token");
    let alice = app.store.user_by_name("alice").await.unwrap().unwrap();
    assert_eq!(claims.subject().as_str(), alice.id);
    assert_eq!(claims.audiences().len(), 1);
    let signing_alg = id_token.signing_alg().unwrap();
    let signing_key = id_token.signing_key(&verifier).unwrap();
    let expected_hash =
        AccessTokenHash::from_token(token.access_token(), signing_alg, signing_key).unwrap();
    assert_eq!(claims.access_token_hash(), Some(&expected_hash));
    let auth_time = claims.auth_time().expect("auth_time");

    // The raw ID token: the header and the claims the crate does not surface.
    let raw = id_token.to_string();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            raw.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "id-rs");
    assert_ne!(header["typ"], "at+jwt");
    let raw_claims = claims_of(&raw);
    assert_eq!(raw_claims["azp"], "rp");
    assert_eq!(raw_claims["amr"], serde_json::json!(["pwd"]));
    let access_claims = claims_of(token.access_token().secret());
    assert_eq!(raw_claims["sid"], access_claims["sid"]);
    assert_eq!(
        raw_claims["exp"].as_i64().unwrap() - raw_claims["iat"].as_i64().unwrap(),
        600
    );
    // The access token is still the ES256 one.
    assert_eq!(claims_of(token.access_token().secret())["client_id"], "rp");

    app.clock.advance(std::time::Duration::from_secs(5));
    let refreshed = client
        .exchange_refresh_token(token.refresh_token().unwrap())
        .unwrap()
        .request_async(&http)
        .await
        .expect("a refresh the crate accepts");
    let renewed = refreshed.id_token().expect("an ID token on refresh");
    let renewed_claims = renewed
        .claims(&verifier, |_: Option<&Nonce>| Ok(()))
        .expect("a valid refreshed ID token");
    assert_eq!(renewed_claims.subject(), claims.subject());
    assert_eq!(
        renewed_claims.auth_time(),
        Some(auth_time),
        "the original auth_time"
    );
    assert!(
        renewed_claims.nonce().is_none(),
        "no nonce on refresh (Core 12.2 errata)"
    );
    assert!(renewed_claims.issue_time() > claims.issue_time());
}

/// No `openid`, no ID token; and the password grant never issues one.
#[tokio::test]
async fn id_tokens_come_only_with_openid_by_redirect() {
    let (app, _) = spawn_op(Backend::Embedded).await;
    let browser = browser();
    let params = [
        ("response_type", "code"),
        ("client_id", "rp"),
        ("redirect_uri", CALLBACK),
        ("code_challenge", crate::authorize::CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    let url = reqwest::Url::parse_with_params(&app.url("/oauth/authorize"), &params).unwrap();
    let page = browser.get(url).send().await.unwrap().text().await.unwrap();
    let (_, query) = redirect_params(&log_in_on(&app, &browser, &page, PASSWORD).await);
    let body: Value = exchange_request(&app, &query["code"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body.get("id_token").is_none(), "{body}");
    let login = app.login_ok("alice").await;
    assert!(login.get("id_token").is_none());
    let _ = text(&login, "access_token");
}

/// Signs in through the pages with `scope` and exchanges the code: the token response.
pub(crate) async fn sign_in(app: &TestApp, browser: &reqwest::Client, scope: &str) -> Value {
    let params = [
        ("response_type", "code"),
        ("client_id", "rp"),
        ("redirect_uri", CALLBACK),
        ("code_challenge", crate::authorize::CHALLENGE),
        ("code_challenge_method", "S256"),
        ("scope", scope),
        ("nonce", "n-1"),
    ];
    let url = reqwest::Url::parse_with_params(&app.url("/oauth/authorize"), &params).unwrap();
    let first = browser.get(url).send().await.unwrap();
    let back = if first.status() == StatusCode::OK {
        let page = first.text().await.unwrap();
        log_in_on(app, browser, &page, PASSWORD).await
    } else {
        first
    };
    let (_, query) = redirect_params(&back);
    exchange(app, &query["code"]).await
}

pub(crate) async fn signed_on(app: &TestApp, browser: &reqwest::Client) -> bool {
    let params = [
        ("response_type", "code"),
        ("client_id", "rp"),
        ("redirect_uri", CALLBACK),
        ("code_challenge", crate::authorize::CHALLENGE),
        ("code_challenge_method", "S256"),
        ("prompt", "none"),
    ];
    let url = reqwest::Url::parse_with_params(&app.url("/oauth/authorize"), &params).unwrap();
    let (_, query) = redirect_params(&browser.get(url).send().await.unwrap());
    query.contains_key("code")
}

pub(crate) async fn refreshes(app: &TestApp, tokens: &Value) -> bool {
    app.client
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &text(tokens, "refresh_token")),
            ("client_id", "rp"),
        ])
        .send()
        .await
        .unwrap()
        .status()
        == StatusCode::OK
}

pub(crate) fn logout_url(app: &TestApp, params: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params(&app.url("/oauth/logout"), params)
        .unwrap()
        .to_string()
}

/// `oidcc-rp-initiated-logout`: with an ID token as hint, the sign-out needs no page: the
/// sign-on ends, with the sessions it started but the `offline_access` one, and the browser goes
/// back to the registered URI with `state`.
async fn oidcc_rp_initiated_logout(backend: Backend) {
    let (app, _) = spawn_op(backend).await;
    let browser = browser();
    let online = sign_in(&app, &browser, "openid").await;
    let offline = sign_in(&app, &browser, "openid offline_access").await;
    assert!(signed_on(&app, &browser).await);
    let hint = text(&online, "id_token");
    let response = browser
        .get(logout_url(
            &app,
            &[
                ("id_token_hint", &hint),
                ("post_logout_redirect_uri", SIGNED_OUT),
                ("state", "bye"),
            ],
        ))
        .send()
        .await
        .unwrap();
    let (base, query) = redirect_params(&response);
    assert_eq!(base, SIGNED_OUT);
    assert_eq!(query["state"], "bye");
    assert!(!signed_on(&app, &browser).await, "the sign-on ended");
    assert!(!refreshes(&app, &online).await, "its session ended");
    assert!(
        refreshes(&app, &offline).await,
        "the offline_access session outlives it"
    );
}

/// `oidcc-rp-initiated-logout-bad-post-logout-redirect-uri` and `-no-id-token-hint`, and hints
/// that do not verify (tampered, `alg: none`, another key, expired): never a redirect to an
/// unregistered URI, and without a hint that verifies the user is asked first.
#[tokio::test]
async fn oidcc_rp_initiated_logout_refusals_and_confirmation() {
    let (app, _) = spawn_op(Backend::Embedded).await;
    let browser = browser();
    let tokens = sign_in(&app, &browser, "openid").await;
    let hint = text(&tokens, "id_token");

    let bad_uri = browser
        .get(logout_url(
            &app,
            &[
                ("id_token_hint", &hint),
                ("post_logout_redirect_uri", "https://evil.example/"),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_uri.status(), StatusCode::BAD_REQUEST);
    assert!(bad_uri.headers().get("location").is_none());
    assert!(signed_on(&app, &browser).await, "nothing ended");

    let mut parts: Vec<String> = hint.split('.').map(str::to_owned).collect();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value =
        serde_json::from_slice(&base64::Engine::decode(&engine, &parts[1]).unwrap()).unwrap();
    claims["sub"] = "someone-else".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(&engine, claims.to_string()),
        parts[2]
    );
    let none_header =
        base64::Engine::encode(&engine, r#"{"alg":"none","typ":"JWT","kid":"id-rs"}"#);
    let alg_none = format!("{none_header}.{}.", parts[1]);
    parts[2] = base64::Engine::encode(&engine, [7u8; 256]);
    let foreign = parts.join(".");
    for bad in [
        tampered.as_str(),
        alg_none.as_str(),
        foreign.as_str(),
        "not-a-jwt",
    ] {
        // With a redirect URI but nothing that names the client: a page, never a redirect.
        let response = browser
            .get(logout_url(
                &app,
                &[
                    ("id_token_hint", bad),
                    ("post_logout_redirect_uri", SIGNED_OUT),
                ],
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(response.headers().get("location").is_none());
        // Alone: the confirmation page.
        let page = browser
            .get(logout_url(&app, &[("id_token_hint", bad)]))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.text().await.unwrap().contains("Sign out?"));
        assert!(
            signed_on(&app, &browser).await,
            "a bad hint signs nobody out"
        );
    }
    // Expired (an hour after its 10 minutes).
    app.clock.advance(std::time::Duration::from_secs(3600));
    let page = browser
        .get(logout_url(&app, &[("id_token_hint", &hint)]))
        .send()
        .await
        .unwrap();
    assert!(
        page.text().await.unwrap().contains("Sign out?"),
        "an expired hint asks"
    );

    // No hint, a client_id and its registered URI: asked, then signed out and sent back.
    let page = browser
        .get(logout_url(
            &app,
            &[
                ("client_id", "rp"),
                ("post_logout_redirect_uri", SIGNED_OUT),
                ("state", "s"),
            ],
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let field = |name: &str| crate::authorize::hidden(&page, name);
    let stranger = crate::authorize::browser();
    let forged = stranger
        .post(app.url("/oauth/logout/confirm"))
        .form(&[
            ("transaction", field("transaction")),
            ("csrf", field("csrf")),
            ("action", "logout".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        StatusCode::BAD_REQUEST,
        "another browser cannot confirm"
    );
    assert!(signed_on(&app, &browser).await);
    let confirmed = browser
        .post(app.url("/oauth/logout/confirm"))
        .form(&[
            ("transaction", field("transaction")),
            ("csrf", field("csrf")),
            ("action", "logout".into()),
        ])
        .send()
        .await
        .unwrap();
    let (base, query) = redirect_params(&confirmed);
    assert_eq!(base, SIGNED_OUT);
    assert_eq!(query["state"], "s");
    assert!(!signed_on(&app, &browser).await);
    assert!(!refreshes(&app, &tokens).await);
}

/// Discovery carries what OIDC Discovery §3 requires, and nothing that does not exist.
#[tokio::test]
async fn oidcc_discovery_has_the_required_fields() {
    let (app, issuer) = spawn_op(Backend::Embedded).await;
    let meta: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], issuer.as_str());
    for field in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "end_session_endpoint",
    ] {
        assert!(
            meta[field].as_str().unwrap().starts_with(&issuer),
            "{field}"
        );
    }
    assert_eq!(
        meta["subject_types_supported"],
        serde_json::json!(["public"])
    );
    assert_eq!(
        meta["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256", "RS256"])
    );
    assert!(
        meta["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&"openid".into())
    );
    assert!(
        meta["response_types_supported"]
            .as_array()
            .unwrap()
            .contains(&"code".into())
    );
}

#[derive(Clone, Copy, Debug)]
enum UserInfoRequest {
    Get,
    PostHeader,
    PostBody,
}

/// `oidcc-userinfo-get`, `oidcc-userinfo-post-header` and `oidcc-userinfo-post-body`: UserInfo
/// answers what the scopes name, with the ID token's `sub`, by GET, by POST with the token in
/// the header and by POST with the token in the form body. The profile claims are set from the
/// CLI as an operator would.
#[tokio::test]
async fn oidcc_userinfo_get_post_header_and_post_body() {
    let (app, _) = spawn_op(Backend::Embedded).await;
    let alice = app.store.user_by_name("alice").await.unwrap().unwrap();
    let set = crate::helpers::run_with_stdin(
        crate::helpers::latchkey(
            &[
                "users",
                "set",
                "alice",
                "--email",
                "alice@example.com",
                "--email-verified",
                "true",
                "--name",
                "Alice Liddell",
                "--preferred-username",
                "Alice L.",
            ],
            &app.config_path,
        ),
        "",
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&set.stdout).trim(),
        "alice: email alice@example.com (verified), name Alice Liddell, preferred_username Alice L."
    );
    let browser = browser();
    let only_openid = sign_in(&app, &browser, "openid").await;
    let everything = sign_in(&app, &browser, "openid profile email").await;
    let ask = |token: String, how: UserInfoRequest| {
        let url = app.url("/auth/userinfo");
        let request = match how {
            UserInfoRequest::Get => app.client.get(url).bearer_auth(token),
            UserInfoRequest::PostHeader => app.client.post(url).bearer_auth(token),
            UserInfoRequest::PostBody => app.client.post(url).form(&[("access_token", token)]),
        };
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{how:?}");
            response.json::<Value>().await.unwrap()
        }
    };
    let minimal = ask(text(&only_openid, "access_token"), UserInfoRequest::Get).await;
    assert_eq!(minimal, serde_json::json!({"sub": alice.id}));
    assert_eq!(
        claims_of(&text(&only_openid, "id_token"))["sub"],
        minimal["sub"]
    );
    for how in [
        UserInfoRequest::Get,
        UserInfoRequest::PostHeader,
        UserInfoRequest::PostBody,
    ] {
        let full = ask(text(&everything, "access_token"), how).await;
        assert_eq!(
            full,
            serde_json::json!({"sub": alice.id, "preferred_username": "Alice L.", "name": "Alice Liddell", "email": "alice@example.com", "email_verified": true}),
            "{how:?}"
        );
    }
    // RFC 6750 §2: the token in the header and in the body is one too many.
    let token = text(&everything, "access_token");
    let both = app
        .client
        .post(app.url("/auth/userinfo"))
        .bearer_auth(&token)
        .form(&[("access_token", &token)])
        .send()
        .await
        .unwrap();
    assert_error(both, StatusCode::BAD_REQUEST, "invalid_request").await;
    let forged = app
        .client
        .post(app.url("/auth/userinfo"))
        .form(&[("access_token", "not.a.token")])
        .send()
        .await
        .unwrap();
    assert_error(forged, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // A first-party token (no openid) keeps the first-party shape.
    let first_party = ask(
        text(&app.login_ok("alice").await, "access_token"),
        UserInfoRequest::Get,
    )
    .await;
    assert_eq!(first_party["username"], "alice");
    assert_eq!(first_party["email_verified"], true);
}

/// A user changes their own name and email through the account API; a changed email is no
/// longer verified, and the claims only operators set cannot be sent.
#[tokio::test]
async fn users_edit_their_profile_and_a_new_email_is_unverified() {
    let (app, _) = spawn_op(Backend::Embedded).await;
    let alice = app.store.user_by_name("alice").await.unwrap().unwrap();
    let mut attributes = latchkey::store::UserAttributes {
        email: Some("alice@example.com".into()),
        email_verified: true,
        ..Default::default()
    };
    app.store
        .set_user_attributes(&alice.id, &attributes)
        .await
        .unwrap();
    let token = text(&app.login_ok("alice").await, "access_token");
    let patch = |body: Value| {
        app.client
            .patch(app.url("/auth/profile"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };

    let same = patch(serde_json::json!({"name": "Alice", "email": "alice@example.com"}))
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::OK);
    let same: Value = same.json().await.unwrap();
    assert_eq!(same["name"], "Alice");
    assert_eq!(
        same["email_verified"], true,
        "the same email stays verified"
    );

    let changed: Value = patch(serde_json::json!({"email": "alice@example.org"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        changed,
        serde_json::json!({"sub": alice.id, "username": "alice", "preferred_username": "alice",
            "name": "Alice", "email": "alice@example.org", "email_verified": false})
    );
    for operators_only in [
        serde_json::json!({"email_verified": true}),
        serde_json::json!({"preferred_username": "admin"}),
        serde_json::json!({"name": "two\nlines"}),
    ] {
        let refused = patch(operators_only.clone()).await.unwrap();
        assert_error(refused, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let stored = app.store.user_by_id(&alice.id).await.unwrap().unwrap();
    assert_eq!(stored.preferred_username, None);
    assert!(!stored.email_verified);

    // Without a token: 401 before the body is looked at.
    let anonymous = app
        .client
        .patch(app.url("/auth/profile"))
        .send()
        .await
        .unwrap();
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // An operator cannot vouch for an email the user does not have.
    attributes.email = None;
    attributes.email_verified = false;
    app.store
        .set_user_attributes(&alice.id, &attributes)
        .await
        .unwrap();
    let output = crate::helpers::run_with_stdin(
        crate::helpers::latchkey(
            &["users", "set", "alice", "--email-verified", "true"],
            &app.config_path,
        ),
        "",
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no email to verify"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Apps signing in at the same moment from one browser each file their session under the
/// sign-on at once; the logout still ends every one of them.
async fn sessions_filed_at_once_all_end_at_logout(backend: Backend) {
    let (app, _) = spawn_op(backend).await;
    let browser = browser();
    let first = sign_in(&app, &browser, "openid").await;
    let mut codes = Vec::new();
    for _ in 0..12 {
        let (_, query) = authorize_as(&app, &browser, &[("scope", "openid")]).await;
        codes.push(query["code"].clone());
    }
    let mut exchanges = tokio::task::JoinSet::new();
    for code in codes {
        let request = exchange_request(&app, &code);
        exchanges.spawn(async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        });
    }
    let mut sessions = vec![first];
    while let Some(tokens) = exchanges.join_next().await {
        sessions.push(tokens.unwrap());
    }
    let response = browser
        .get(logout_url(
            &app,
            &[
                ("id_token_hint", &text(&sessions[0], "id_token")),
                ("post_logout_redirect_uri", SIGNED_OUT),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect_params(&response).0, SIGNED_OUT);
    for (i, tokens) in sessions.iter().enumerate() {
        assert!(
            !refreshes(&app, tokens).await,
            "session {i} outlived the logout"
        );
    }
}

on_every_backend!(
    oidcc_server_and_refresh_token,
    oidcc_rp_initiated_logout,
    sessions_filed_at_once_all_end_at_logout
);

/// `config check` says which key signs what, and warns when ID tokens would not be RS256.
#[tokio::test]
async fn config_check_says_what_signs_what() {
    let (app, _) = spawn_op(Backend::Embedded).await;
    let output = crate::helpers::run_with_stdin(
        crate::helpers::latchkey(&["config", "check"], &app.config_path),
        "",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("access tokens are signed now by test-es (ES256)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("RS256 ID tokens are signed now by id-rs (RS256)"),
        "{stdout}"
    );

    // Without the RS256 key, ID tokens fall back to the ES256 key, with a warning.
    let only_es = app
        .config_text
        .split("\n[[keys]]\nkid = \"id-rs\"")
        .next()
        .unwrap()
        .to_owned()
        + &app.config_text[app.config_text.find("\n[[clients]]\nid = \"rp\"").unwrap()..];
    let path = app.dir.path().join("only-es.toml");
    std::fs::write(&path, only_es).unwrap();
    let output =
        crate::helpers::run_with_stdin(crate::helpers::latchkey(&["config", "check"], &path), "");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no RS256 key signs ID tokens"), "{stderr}");
    assert!(stdout.contains("ID tokens of clients without id_token_signed_response_alg are signed by test-es (ES256)"), "{stdout}");
}

/// A relying party written by others in another language: openid-client (v6, Node) discovers
/// the issuer, signs in with PKCE, state and nonce, validates the ID token (RS256 by default),
/// refreshes and reads UserInfo. `.ci/run` installs it (`npm ci` in its folder).
#[tokio::test]
async fn openid_client_accepts_latchkey_unchanged() {
    let (app, issuer) = spawn_op(Backend::Embedded).await;
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/openid-client");
    assert!(
        std::path::Path::new(folder)
            .join("node_modules/openid-client")
            .exists(),
        "openid-client must be installed: npm ci --prefix tests/fixtures/openid-client (.ci/run does)"
    );
    let output = tokio::process::Command::new("node")
        .arg(format!("{folder}/rp.mjs"))
        .args([&issuer, "rp", CALLBACK, "alice", PASSWORD])
        .output()
        .await
        .expect("node");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    let alice = app.store.user_by_name("alice").await.unwrap().unwrap();
    assert_eq!(result["claims"]["sub"], alice.id.as_str());
    assert_eq!(result["claims"]["aud"], "rp");
    assert_eq!(result["claims"]["iss"], issuer.as_str());
    assert_eq!(
        result["refreshed_claims"]["auth_time"],
        result["claims"]["auth_time"]
    );
    assert_eq!(result["userinfo"]["sub"], alice.id.as_str());
    assert_eq!(result["userinfo"]["preferred_username"], "alice");
}

/// The authorization response for `params` added to a code request of `rp` (PKCE, `state`
/// `s-1`), from a browser: `(where it was sent, its query)`.
async fn authorize_as(
    app: &TestApp,
    browser: &reqwest::Client,
    params: &[(&str, &str)],
) -> (String, std::collections::HashMap<String, String>) {
    let mut all = vec![
        ("client_id", "rp"),
        ("redirect_uri", CALLBACK),
        ("code_challenge", crate::authorize::CHALLENGE),
        ("code_challenge_method", "S256"),
        ("state", "s-1"),
    ];
    if !params.iter().any(|(name, _)| *name == "response_type") {
        all.push(("response_type", "code"));
    }
    all.extend_from_slice(params);
    let all: Vec<_> = all.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let url = reqwest::Url::parse_with_params(&app.url("/oauth/authorize"), &all).unwrap();
    redirect_params(&browser.get(url).send().await.unwrap())
}

/// The token request of `rp` exchanging `code` (its redirect URI and PKCE verifier), to send.
pub(crate) fn exchange_request(app: &TestApp, code: &str) -> reqwest::RequestBuilder {
    app.client.post(app.url("/oauth/token")).form(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("client_id", "rp"),
        ("redirect_uri", CALLBACK),
        ("code_verifier", crate::authorize::VERIFIER),
    ])
}

/// The token response for a code of [`authorize_as`].
async fn exchange(app: &TestApp, code: &str) -> Value {
    let response = exchange_request(app, code).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The Basic OP plan's request variants, for a signed-in browser: each answers a code with
/// `state`, and the ID token or UserInfo shows what the module checks.
/// `oidcc-ensure-request-without-nonce-succeeds-for-code-flow`,
/// `oidcc-ensure-request-with-unknown-parameter-succeeds`, `oidcc-display-page`,
/// `oidcc-display-popup`, `oidcc-ui-locales`, `oidcc-claims-locales`,
/// `oidcc-ensure-request-with-acr-values-succeeds`, `oidcc-ensure-other-scope-order-succeeds`,
/// `oidcc-claims-essential` (and a malformed `claims`, ignored), `oidcc-login-hint`,
/// `oidcc-prompt-none-logged-in`, `oidcc-max-age-10000`, `oidcc-scope-profile`,
/// `oidcc-scope-email`, `oidcc-scope-all`, `oidcc-ensure-request-with-valid-pkce-succeeds`.
#[tokio::test]
async fn oidcc_basic_op_request_variants() {
    let (app, _) = spawn_op(Backend::Embedded).await;
    let alice = app.store.user_by_name("alice").await.unwrap().unwrap();
    let attributes = latchkey::store::UserAttributes {
        email: Some("alice@example.com".into()),
        name: Some("Alice Liddell".into()),
        ..Default::default()
    };
    app.store
        .set_user_attributes(&alice.id, &attributes)
        .await
        .unwrap();
    let browser = browser();
    sign_in(&app, &browser, "openid").await;

    let userinfo = |tokens: Value| {
        let request = app
            .client
            .get(app.url("/auth/userinfo"))
            .bearer_auth(text(&tokens, "access_token"));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let variants: &[(&str, &[(&str, &str)])] = &[
        ("without nonce", &[("scope", "openid")]),
        (
            "unknown parameter",
            &[("scope", "openid"), ("extra", "foobar")],
        ),
        ("display=page", &[("scope", "openid"), ("display", "page")]),
        (
            "display=popup",
            &[("scope", "openid"), ("display", "popup")],
        ),
        ("ui_locales", &[("scope", "openid"), ("ui_locales", "se")]),
        (
            "claims_locales",
            &[("scope", "openid"), ("claims_locales", "se")],
        ),
        ("acr_values", &[("scope", "openid"), ("acr_values", "1 2")]),
        ("other scope order", &[("scope", "email openid")]),
        (
            "claims essential",
            &[
                ("scope", "openid"),
                ("claims", r#"{"userinfo":{"name":{"essential":true}}}"#),
            ],
        ),
        (
            "malformed claims",
            &[("scope", "openid"), ("claims", "{not json")],
        ),
        (
            "login_hint",
            &[("scope", "openid"), ("login_hint", "alice")],
        ),
        ("prompt=none", &[("scope", "openid"), ("prompt", "none")]),
        (
            "max_age=10000",
            &[("scope", "openid"), ("max_age", "10000")],
        ),
        ("scope profile", &[("scope", "openid profile")]),
        ("scope email", &[("scope", "openid email")]),
        (
            "scope all",
            &[("scope", "openid profile email offline_access")],
        ),
    ];
    for (name, params) in variants {
        let (base, query) = authorize_as(&app, &browser, params).await;
        assert_eq!(base, CALLBACK, "{name}");
        assert_eq!(
            query.get("state").map(String::as_str),
            Some("s-1"),
            "{name}"
        );
        let code = query
            .get("code")
            .unwrap_or_else(|| panic!("{name}: {query:?}"));
        let tokens = exchange(&app, code).await;
        let claims = claims_of(&text(&tokens, "id_token"));
        assert_eq!(claims["sub"], alice.id.as_str(), "{name}");
        assert!(claims.get("nonce").is_none(), "{name}: no nonce was sent");
        assert!(claims["auth_time"].is_i64(), "{name}");
        let info = userinfo(tokens.clone()).await;
        let scope = params
            .iter()
            .find(|(n, _)| *n == "scope")
            .map_or("", |(_, v)| *v);
        assert_eq!(
            info.get("name").is_some(),
            scope.contains("profile"),
            "{name}: {info}"
        );
        assert_eq!(
            info.get("preferred_username").is_some(),
            scope.contains("profile"),
            "{name}: {info}"
        );
        assert_eq!(
            info.get("email").is_some() && info.get("email_verified") == Some(&false.into()),
            scope.contains("email"),
            "{name}: {info}"
        );
        assert!(
            tokens.get("refresh_token").is_some(),
            "{name}: the client holds the refresh_token grant"
        );
    }
}

/// `oidcc-id-token-hint`: with the ID token it got as hint and `prompt=none`, the client signs
/// in again as the same user. A hint for another user is `login_required` for this sign-on; a
/// hint that does not verify is `invalid_request`. `oidcc-response-type-missing`,
/// `oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported`: an error
/// sent back to the client, with `state`.
#[tokio::test]
async fn oidcc_id_token_hint_and_refused_requests() {
    let (app, _) = spawn_op(Backend::Embedded).await;
    let browser = browser();
    let first = sign_in(&app, &browser, "openid").await;
    let hint = text(&first, "id_token");
    // Past its 10 minutes the hint has expired: it still names the user (OIDC Core §3.1.2.1).
    app.clock.advance(std::time::Duration::from_secs(660));
    sign_in(&app, &browser, "openid").await;
    let (_, query) = authorize_as(
        &app,
        &browser,
        &[
            ("scope", "openid"),
            ("prompt", "none"),
            ("id_token_hint", &hint),
        ],
    )
    .await;
    let again = exchange(&app, &query["code"]).await;
    assert_eq!(
        claims_of(&text(&again, "id_token"))["sub"],
        claims_of(&hint)["sub"]
    );

    // Bob's browser, with Alice's ID token as hint.
    app.add_user("bob", PASSWORD).await;
    let bobs = crate::authorize::browser();
    let page = bobs
        .get(
            reqwest::Url::parse_with_params(
                &app.url("/oauth/authorize"),
                &[
                    ("response_type", "code"),
                    ("client_id", "rp"),
                    ("redirect_uri", CALLBACK),
                    ("code_challenge", crate::authorize::CHALLENGE),
                    ("code_challenge_method", "S256"),
                    ("scope", "openid"),
                ],
            )
            .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    crate::authorize::log_in_as(&app, &bobs, &page, "bob", PASSWORD).await;
    let (_, query) = authorize_as(
        &app,
        &bobs,
        &[
            ("scope", "openid"),
            ("prompt", "none"),
            ("id_token_hint", &hint),
        ],
    )
    .await;
    assert_eq!(query["error"], "login_required", "{query:?}");

    let mut forged = hint.clone();
    forged.push('A');
    for (params, error) in [
        (
            vec![("scope", "openid"), ("id_token_hint", forged.as_str())],
            "invalid_request",
        ),
        (
            vec![("scope", "openid"), ("response_type", "")],
            "invalid_request",
        ),
        (
            vec![
                ("scope", "openid"),
                ("request", "eyJhbGciOiJub25lIn0.eyJzY29wZSI6Im9wZW5pZCJ9."),
            ],
            "request_not_supported",
        ),
        (
            vec![("scope", "openid"), ("registration", "{}")],
            "registration_not_supported",
        ),
    ] {
        let (base, query) = authorize_as(&app, &browser, &params).await;
        assert_eq!(base, CALLBACK);
        assert_eq!(query["error"], error, "{params:?}");
        assert_eq!(query["state"], "s-1");
        assert!(!query.contains_key("code"));
    }
}

/// `oidcc-codereuse-30seconds`: a code presented again 30 seconds later is refused, and the
/// access token the first exchange gave stops working.
#[tokio::test]
async fn oidcc_codereuse_30seconds() {
    let (app, _) = spawn_op(Backend::Embedded).await;
    let browser = browser();
    sign_in(&app, &browser, "openid").await;
    let (_, query) = authorize_as(&app, &browser, &[("scope", "openid")]).await;
    let tokens = exchange(&app, &query["code"]).await;
    app.clock.advance(std::time::Duration::from_secs(30));
    let again = exchange_request(&app, &query["code"]).send().await.unwrap();
    assert_error(again, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let info = app
        .client
        .get(app.url("/auth/userinfo"))
        .bearer_auth(text(&tokens, "access_token"))
        .send()
        .await
        .unwrap();
    assert_error(info, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert!(!refreshes(&app, &tokens).await);
}

/// The rest of the RP-Initiated Logout plan: `-no-params` and `-only-state` ask first;
/// `-no-post-logout-redirect-uri` signs out and shows the signed-out page; `-no-state` goes
/// back without `state`; `-query-added-to-post-logout-redirect-uri` is not the registered URI
/// and gets a page.
#[tokio::test]
async fn oidcc_rp_initiated_logout_plan_variants() {
    let (app, _) = spawn_op(Backend::Embedded).await;
    let browser = browser();
    for params in [vec![], vec![("state", "only")]] {
        let page = browser.get(logout_url(&app, &params)).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.text().await.unwrap().contains("Sign out?"));
    }

    let tokens = sign_in(&app, &browser, "openid").await;
    let hint = text(&tokens, "id_token");
    let added = format!("{SIGNED_OUT}?foo=bar");
    let response = browser
        .get(logout_url(
            &app,
            &[
                ("id_token_hint", &hint),
                ("post_logout_redirect_uri", &added),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
    assert!(signed_on(&app, &browser).await);

    let response = browser
        .get(logout_url(
            &app,
            &[
                ("id_token_hint", &hint),
                ("post_logout_redirect_uri", SIGNED_OUT),
            ],
        ))
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, SIGNED_OUT, "no state, none added");
    assert!(!signed_on(&app, &browser).await);

    let tokens = sign_in(&app, &browser, "openid").await;
    let page = browser
        .get(logout_url(
            &app,
            &[("id_token_hint", &text(&tokens, "id_token"))],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers().get("location").is_none());
    assert!(
        !page.text().await.unwrap().contains("Sign out?"),
        "signed out at once"
    );
    assert!(!signed_on(&app, &browser).await);
}
