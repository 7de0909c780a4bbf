//! Sign-in by redirect: the authorization endpoint, the hosted login and consent pages, single
//! sign-on, and the code exchange (RFC 6749 §4.1, RFC 7636, RFC 9207), driven as a browser
//! drives them (a cookie jar, redirects read rather than followed) and by the `oauth2` crate.

use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse, TokenUrl,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, PASSWORD, TestApp, assert_error, claims_of, hash, spawn_app_with, text,
};

const CALLBACK: &str = "http://127.0.0.1:9/callback";
const WIKI_CALLBACK: &str = "https://wiki.example/callback";
const PRINTER_CALLBACK: &str = "https://printer.example/cb";
const BACKEND_SECRET: &str = "backend-secret-0123456789abcdef";
/// RFC 7636 Appendix B.
pub(crate) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub(crate) const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// The issuer with clients for every shape of the code flow: `webapp` (public, first-party),
/// `wiki` (a second first-party app), `printer` (third-party, consent once, an unsafe name),
/// `always` (consent always), `backend` (confidential, no PKCE), `native` (loopback, any port).
async fn spawn_sso_app(
    backend: Backend,
    tweak: impl FnOnce(&mut crate::helpers::TestConfig),
) -> TestApp {
    let secret = hash(BACKEND_SECRET).await;
    let app = spawn_app_with(backend, move |c| {
        c.text.push_str(&format!(
            r#"
[[clients]]
id = "webapp"
type = "public"
name = "Web App"
grants = ["authorization_code", "refresh_token"]
redirect_uris = ["{CALLBACK}", "https://app.example/cb?tenant=1"]
allowed_origins = ["http://127.0.0.1:9"]

[[clients]]
id = "wiki"
type = "public"
grants = ["authorization_code", "refresh_token"]
redirect_uris = ["{WIKI_CALLBACK}"]

[[clients]]
id = "printer"
type = "public"
name = "Photo <Printer> & \"Co\""
grants = ["authorization_code"]
redirect_uris = ["{PRINTER_CALLBACK}"]
scopes = ["openid", "photos:read"]
consent = "once"

[[clients]]
id = "always"
type = "public"
grants = ["authorization_code"]
redirect_uris = ["https://always.example/cb"]
consent = "always"

[[clients]]
id = "backend"
type = "confidential"
secret_hash = "{secret}"
grants = ["authorization_code", "refresh_token"]
redirect_uris = ["https://backend.example/cb"]
require_pkce = false

[[clients]]
id = "native"
type = "public"
grants = ["authorization_code"]
redirect_uris = ["http://127.0.0.1/cb"]
loopback_any_port = true
"#
        ));
        tweak(c);
    })
    .await;
    app.add_user_with_scopes("alice", &["photos:read"]).await;
    app
}

/// A browser: a cookie jar, redirects read rather than followed.
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn authorize_url(app: &TestApp, params: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params(&app.url("/oauth/authorize"), params)
        .unwrap()
        .to_string()
}

/// The usual request of `client_id` to `redirect_uri`, with PKCE and a state.
fn request<'a>(client_id: &'a str, redirect_uri: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("state", "st-1"),
    ]
}

/// The value of the hidden field `name` of a page.
pub(crate) fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {page}"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

/// The query parameters of a redirect's `Location`.
pub(crate) fn redirect_params(
    response: &reqwest::Response,
) -> (String, std::collections::HashMap<String, String>) {
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "expected a redirect"
    );
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let url = reqwest::Url::parse(&location).unwrap();
    let params = url.query_pairs().into_owned().collect();
    let base = location.split('?').next().unwrap().to_owned();
    (base, params)
}

async fn get(browser: &reqwest::Client, url: &str) -> reqwest::Response {
    browser.get(url).send().await.unwrap()
}

async fn post_page(
    app: &TestApp,
    browser: &reqwest::Client,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    browser
        .post(app.url(path))
        .form(fields)
        .send()
        .await
        .unwrap()
}

/// Fills the login page with `password`.
pub(crate) async fn log_in_on(
    app: &TestApp,
    browser: &reqwest::Client,
    page: &str,
    password: &str,
) -> reqwest::Response {
    log_in_as(app, browser, page, "alice", password).await
}

/// As [`log_in_on`], as `username`.
pub(crate) async fn log_in_as(
    app: &TestApp,
    browser: &reqwest::Client,
    page: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    post_page(
        app,
        browser,
        "/oauth/authorize/login",
        &[
            ("transaction", &hidden(page, "transaction")),
            ("csrf", &hidden(page, "csrf")),
            ("username", username),
            ("password", password),
            ("action", "login"),
        ],
    )
    .await
}

/// Signs in through the pages and returns the code the redirect carried.
async fn code_for(app: &TestApp, browser: &reqwest::Client, params: &[(&str, &str)]) -> String {
    let response = get(browser, &authorize_url(app, params)).await;
    let response = if response.status() == StatusCode::OK {
        let page = response.text().await.unwrap();
        log_in_on(app, browser, &page, PASSWORD).await
    } else {
        response
    };
    let (_, query) = redirect_params(&response);
    query
        .get("code")
        .cloned()
        .unwrap_or_else(|| panic!("no code: {query:?}"))
}

async fn exchange(app: &TestApp, fields: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .post(app.url("/oauth/token"))
        .form(fields)
        .send()
        .await
        .unwrap()
}

fn exchange_fields<'a>(code: &'a str, client_id: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("client_id", client_id),
        ("redirect_uri", CALLBACK),
        ("code_verifier", VERIFIER),
    ]
}

/// oauth2's HTTP seam, driven by the suite's reqwest.
pub(crate) async fn http(
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let response = reqwest::Client::new()
        .request(request.method().clone(), request.uri().to_string())
        .headers(request.headers().clone())
        .body(request.body().clone())
        .send()
        .await?;
    let mut builder = oauth2::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    Ok(builder.body(response.bytes().await?.to_vec()).unwrap())
}

/// The whole flow as an OAuth client library runs it: PKCE S256 and state from the `oauth2`
/// crate, the login page filled by the "browser", the code exchanged and the refresh token
/// rotated by the library; a second presentation of the code revokes what the first obtained.
async fn the_oauth2_crate_signs_in_with_pkce(backend: Backend) {
    let app = spawn_sso_app(backend, |_| {}).await;
    let client = BasicClient::new(ClientId::new("webapp".into()))
        .set_auth_uri(AuthUrl::new(app.url("/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(app.url("/oauth/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(CALLBACK.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf_state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("photos:read".into()))
        .set_pkce_challenge(challenge)
        .url();

    let browser = browser();
    let page = get(&browser, url.as_str()).await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:9"),
        "{csp}"
    );
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"name="username""#) && html.contains(r#"autocomplete="username""#));
    assert!(
        html.contains(r#"name="password""#) && html.contains(r#"autocomplete="current-password""#)
    );
    assert!(html.contains("Web App"), "the client's name is shown");
    assert!(!html.contains("<script"), "no JavaScript on the page");

    let redirect = log_in_on(&app, &browser, &html, PASSWORD).await;
    let cookie = redirect
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("latchkey_sso="))
        .expect("a sign-on cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let (base, query) = redirect_params(&redirect);
    assert_eq!(base, CALLBACK);
    assert_eq!(query["state"], *csrf_state.secret());
    assert_eq!(query["iss"], "http://127.0.0.1", "RFC 9207");
    let code = query["code"].clone();

    let token = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.secret().clone()))
        .request_async(&http)
        .await
        .unwrap();
    let claims = claims_of(token.access_token().secret());
    assert_eq!(claims["client_id"], "webapp");
    assert_eq!(claims["scope"], "photos:read");
    let sid = claims["sid"].as_str().unwrap().to_owned();
    let refresh = token.refresh_token().expect("a refresh token").clone();
    assert!(refresh.secret().starts_with("lk_rt_"));
    // The family rotates like any other.
    let renewed = client
        .exchange_refresh_token(&refresh)
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(
        claims_of(renewed.access_token().secret())["sid"],
        sid.as_str()
    );

    // The same code again: refused, and the session the first use created is revoked.
    let again = exchange(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "webapp"),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier.secret()),
        ],
    )
    .await;
    assert_error(again, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let after = client
        .exchange_refresh_token(renewed.refresh_token().unwrap())
        .request_async(&http)
        .await;
    assert!(
        after.is_err(),
        "the family the reused code created is revoked"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"latchkey_code_exchanges_total{outcome="issued"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"latchkey_code_exchanges_total{outcome="reused"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"latchkey_authorization_requests_total{outcome="login_page"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"latchkey_page_logins_total{outcome="success"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"latchkey_families_revoked_total{cause="code_reuse"} 1"#),
        "{metrics}"
    );
}

/// One login, then a second app signs in with no page at all; `prompt=login` and `max_age`
/// ask again, `prompt=none` never shows a page, `login_hint` prefills.
async fn single_sign_on_spans_clients(backend: Backend) {
    let app = spawn_sso_app(backend, |_| {}).await;
    let browser = browser();
    code_for(&app, &browser, &request("webapp", CALLBACK)).await;

    let second = get(
        &browser,
        &authorize_url(&app, &request("wiki", WIKI_CALLBACK)),
    )
    .await;
    let (base, query) = redirect_params(&second);
    assert_eq!(base, WIKI_CALLBACK);
    assert!(query.contains_key("code"), "{query:?}");

    let mut forced = request("wiki", WIKI_CALLBACK);
    forced.push(("prompt", "login"));
    assert_eq!(
        get(&browser, &authorize_url(&app, &forced)).await.status(),
        StatusCode::OK
    );

    app.clock.advance(Duration::from_secs(120));
    let mut fresh = request("wiki", WIKI_CALLBACK);
    fresh.push(("max_age", "60"));
    assert_eq!(
        get(&browser, &authorize_url(&app, &fresh)).await.status(),
        StatusCode::OK
    );
    let mut recent_enough = request("wiki", WIKI_CALLBACK);
    recent_enough.push(("max_age", "600"));
    assert!(
        redirect_params(&get(&browser, &authorize_url(&app, &recent_enough)).await)
            .1
            .contains_key("code")
    );

    // Another browser, with no sign-on.
    let stranger = self::browser();
    let mut silent = request("wiki", WIKI_CALLBACK);
    silent.push(("prompt", "none"));
    let (_, query) = redirect_params(&get(&stranger, &authorize_url(&app, &silent)).await);
    assert_eq!(query["error"], "login_required");
    assert_eq!(query["state"], "st-1");
    assert_eq!(query["iss"], "http://127.0.0.1");
    let mut hinted = request("wiki", WIKI_CALLBACK);
    hinted.push(("login_hint", "alice\"><b>"));
    let page = get(&stranger, &authorize_url(&app, &hinted))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"value="alice&#34;&gt;&lt;b&gt;""#)
            || page.contains(r#"value="alice&quot;&gt;&lt;b&gt;""#),
        "{page}"
    );
}

/// The sign-on ends with a logout everywhere, a password change and `users disable`.
async fn the_sign_on_ends_with_the_users_sessions(backend: Backend) {
    let app = spawn_sso_app(backend, |_| {}).await;
    let user = app.store.user_by_name("alice").await.unwrap().unwrap();
    let signed_on = || async {
        let b = browser();
        code_for(&app, &b, &request("webapp", CALLBACK)).await;
        b
    };
    let shows_login = |b: reqwest::Client| {
        let url = authorize_url(&app, &request("wiki", WIKI_CALLBACK));
        async move { get(&b, &url).await.status() == StatusCode::OK }
    };

    let b = signed_on().await;
    let tokens = app.login_ok("alice").await;
    let ended = app
        .client
        .post(app.url("/auth/logout-all"))
        .bearer_auth(text(&tokens, "access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert!(shows_login(b).await, "logout-all ends the sign-on");

    app.clock.advance(Duration::from_millis(5));
    let b = signed_on().await;
    assert!(!shows_login(b.clone()).await);
    let new_hash = app.user_record("x", "another password").await.password_hash;
    app.store
        .set_password(
            &user.id,
            &new_hash,
            &crate::helpers::note(latchkey::store::RevocationReason::PasswordChanged),
        )
        .await
        .unwrap();
    assert!(shows_login(b).await, "a password change ends the sign-on");

    let b = browser();
    let page = get(&b, &authorize_url(&app, &request("webapp", CALLBACK)))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        log_in_on(&app, &b, &page, "another password")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    app.store
        .set_disabled(
            &user.id,
            true,
            &crate::helpers::note(latchkey::store::RevocationReason::UserDisabled),
        )
        .await
        .unwrap();
    assert!(shows_login(b).await, "users disable ends the sign-on");
}

/// Consent: asked once, remembered per client and scopes, listed and withdrawn under
/// `/auth/grants`; Deny answers `access_denied`; `consent = "always"` asks every time and
/// `prompt=none` then answers `consent_required`.
async fn consent_is_asked_remembered_and_withdrawn(backend: Backend) {
    let app = spawn_sso_app(backend, |_| {}).await;
    let browser = browser();
    let mut ask = request("printer", PRINTER_CALLBACK);
    ask.push(("scope", "openid photos:read"));
    let page = get(&browser, &authorize_url(&app, &ask))
        .await
        .text()
        .await
        .unwrap();
    let consent = log_in_on(&app, &browser, &page, PASSWORD).await;
    assert_eq!(consent.status(), StatusCode::OK);
    let csp = consent.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("form-action 'self' https://printer.example"),
        "{csp}"
    );
    let html = consent.text().await.unwrap();
    assert!(
        html.contains("Photo &lt;Printer&gt; &amp; &#34;Co&#34;")
            || html.contains("Photo &lt;Printer&gt; &amp; &quot;Co&quot;"),
        "{html}"
    );
    assert!(!html.contains("<Printer>"), "the name is escaped");
    assert!(
        html.contains("Know who you are") && html.contains("photos:read"),
        "{html}"
    );

    let deny = post_page(
        &app,
        &browser,
        "/oauth/authorize/consent",
        &[
            ("transaction", &hidden(&html, "transaction")),
            ("csrf", &hidden(&html, "csrf")),
            ("action", "deny"),
        ],
    )
    .await;
    assert_eq!(redirect_params(&deny).1["error"], "access_denied");

    let html = get(&browser, &authorize_url(&app, &ask))
        .await
        .text()
        .await
        .unwrap();
    let allow = post_page(
        &app,
        &browser,
        "/oauth/authorize/consent",
        &[
            ("transaction", &hidden(&html, "transaction")),
            ("csrf", &hidden(&html, "csrf")),
            ("action", "allow"),
        ],
    )
    .await;
    assert!(redirect_params(&allow).1.contains_key("code"));
    // Remembered: the next request goes straight back with a code, even with prompt=none.
    let mut silent = ask.clone();
    silent.push(("prompt", "none"));
    assert!(
        redirect_params(&get(&browser, &authorize_url(&app, &silent)).await)
            .1
            .contains_key("code")
    );

    let tokens = app.login_ok("alice").await;
    let access = text(&tokens, "access_token");
    let grants: Value = app
        .client
        .get(app.url("/auth/grants"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(grants.as_array().unwrap().len(), 1, "{grants}");
    assert_eq!(grants[0]["client_id"], "printer");
    assert_eq!(grants[0]["scope"], "openid photos:read");
    assert_eq!(grants[0]["client_name"], "Photo <Printer> & \"Co\"");
    // The operator sees the same, from the CLI beside the running server.
    let listed = crate::helpers::run_with_stdin(
        crate::helpers::latchkey(&["users", "grants", "alice"], &app.config_path),
        "",
    );
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.starts_with("CLIENT")
            && listed.contains("printer")
            && listed.contains("openid photos:read"),
        "{listed}"
    );
    assert!(listed.trim_end().ends_with("1 consent"), "{listed}");
    let withdraw = |client: &'static str| {
        app.client
            .delete(app.url(&format!("/auth/grants/{client}")))
            .bearer_auth(&access)
            .send()
    };
    assert_eq!(
        withdraw("printer").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        withdraw("printer").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let again = crate::helpers::run_with_stdin(
        crate::helpers::latchkey(
            &["users", "grants", "alice", "--withdraw", "printer"],
            &app.config_path,
        ),
        "",
    );
    assert!(!again.status.success(), "nothing left to withdraw");
    assert!(String::from_utf8_lossy(&again.stderr).contains("alice has not allowed printer"));
    let (_, query) = redirect_params(&get(&browser, &authorize_url(&app, &silent)).await);
    assert_eq!(query["error"], "consent_required", "withdrawn: asked again");

    // Always: a page every time.
    for _ in 0..2 {
        let page = get(
            &browser,
            &authorize_url(&app, &request("always", "https://always.example/cb")),
        )
        .await;
        assert_eq!(page.status(), StatusCode::OK);
        assert!(
            page.text()
                .await
                .unwrap()
                .contains("/oauth/authorize/consent")
        );
    }
}

/// An unknown client, or a redirect URI not registered exactly, gets an error page and never a
/// redirect: not with a query altered, a path extended, a fragment, another port, twice.
#[tokio::test]
async fn a_redirect_uri_in_doubt_gets_a_page_never_a_redirect() {
    let app = spawn_sso_app(Backend::Embedded, |_| {}).await;
    let browser = browser();
    let long = "x".repeat(20_000);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        request("nobody", CALLBACK),
        request("webapp", "http://127.0.0.1:9/callback?x=1"),
        request("webapp", "http://127.0.0.1:9/callback/../evil"),
        request("webapp", "http://127.0.0.1:9/callback#frag"),
        request("webapp", "http://127.0.0.1:10/callback"),
        request("webapp", "https://app.example/cb"),
        request("webapp", "https://evil.example/callback"),
        {
            let mut twice = request("webapp", CALLBACK);
            twice.push(("redirect_uri", CALLBACK));
            twice
        },
        {
            let mut twice = request("webapp", CALLBACK);
            twice.push(("client_id", "wiki"));
            twice
        },
        vec![("response_type", "code"), ("redirect_uri", CALLBACK)],
        // Two URIs registered: one must be named.
        vec![
            ("response_type", "code"),
            ("client_id", "webapp"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ],
        request("webapp", &long),
    ];
    for params in cases {
        let response = get(&browser, &authorize_url(&app, &params)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{params:?}");
        assert!(response.headers().get("location").is_none(), "{params:?}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let page = response.text().await.unwrap();
        assert!(page.contains("Sign-in problem"), "{page}");
    }
    // Malformed percent-encoding and non-UTF-8 are pages too.
    for query in ["client_id=%ZZ", "client_id=%FF%FE", "a=%00"] {
        let response = get(&browser, &app.url(&format!("/oauth/authorize?{query}"))).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(response.headers().get("location").is_none());
    }
    // The registered URI with its own query keeps it, the response parameters appended.
    let response = get(
        &browser,
        &authorize_url(&app, &request("webapp", "https://app.example/cb?tenant=1")),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Once the client and redirect URI are sure, every error goes back there with `error`,
/// `error_description`, `state` and `iss`; unknown parameters are ignored.
#[tokio::test]
async fn later_errors_go_back_to_the_client() {
    let app = spawn_sso_app(Backend::Embedded, |_| {}).await;
    let browser = browser();
    let base = || request("webapp", CALLBACK);
    let without = |name: &str| -> Vec<(&'static str, &'static str)> {
        request("webapp", CALLBACK)
            .into_iter()
            .filter(|(n, _)| *n != name)
            .collect()
    };
    let with = |name: &'static str, value: &'static str| {
        let mut params: Vec<(&str, &str)> =
            base().into_iter().filter(|(n, _)| *n != name).collect();
        params.push((name, value));
        params
    };
    let long_state = "s".repeat(5000);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (without("response_type"), "invalid_request"),
        (with("response_type", "token"), "unsupported_response_type"),
        (
            with("response_type", "code id_token"),
            "unsupported_response_type",
        ),
        (with("code_challenge_method", "plain"), "invalid_request"),
        (without("code_challenge_method"), "invalid_request"),
        (
            without("code_challenge")
                .into_iter()
                .filter(|(n, _)| *n != "code_challenge_method")
                .collect(),
            "invalid_request",
        ),
        (with("code_challenge", "too-short"), "invalid_request"),
        (with("scope", "bad\"scope"), "invalid_scope"),
        (with("prompt", "none login"), "invalid_request"),
        (with("prompt", "sometimes"), "invalid_request"),
        (with("max_age", "-1"), "invalid_request"),
        (with("response_mode", "fragment"), "invalid_request"),
        (with("request", "eyJ.x.y"), "request_not_supported"),
        (
            {
                let mut p = base();
                p.push(("scope", "a"));
                p.push(("scope", "b"));
                p
            },
            "invalid_request",
        ),
        (
            {
                let mut p = base();
                p.push(("nonce", &long_state));
                p
            },
            "invalid_request",
        ),
    ];
    for (params, error) in cases {
        let response = get(&browser, &authorize_url(&app, &params)).await;
        let (location, query) = redirect_params(&response);
        assert_eq!(location, CALLBACK, "{params:?}");
        assert_eq!(query["error"], error, "{params:?}");
        assert!(!query["error_description"].is_empty());
        assert_eq!(query["iss"], "http://127.0.0.1");
        assert_eq!(
            query.get("state").map(String::as_str),
            Some("st-1"),
            "{params:?}"
        );
    }
    // A client without the grant, at its registered URI.
    let mut params = request("wiki", WIKI_CALLBACK);
    params.push(("ignored_extension", "x"));
    assert_eq!(
        get(&browser, &authorize_url(&app, &params)).await.status(),
        StatusCode::OK,
        "unknown parameters are ignored"
    );
}

/// The token endpoint holds a code to its client, redirect URI, verifier and lifetime.
async fn a_code_is_bound_to_its_request(backend: Backend) {
    let app = spawn_sso_app(backend, |_| {}).await;
    let browser = browser();
    code_for(&app, &browser, &request("webapp", CALLBACK)).await;
    let usual = request("webapp", CALLBACK);
    let fresh = || code_for(&app, &browser, &usual);

    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![(
                "code_verifier",
                "wrong-verifier-wrong-verifier-wrong-verifier-0",
            )],
            "a wrong verifier",
        ),
        (vec![("code_verifier", "")], "no verifier"),
        (vec![("code_verifier", "short")], "a malformed verifier"),
        (
            vec![("redirect_uri", "https://app.example/cb?tenant=1")],
            "another redirect URI",
        ),
        (vec![("redirect_uri", "")], "no redirect URI"),
    ];
    for (overrides, what) in cases {
        let code = fresh().await;
        let mut fields = exchange_fields(&code, "webapp");
        for (name, value) in &overrides {
            fields.retain(|(n, _)| n != name);
            if !value.is_empty() {
                fields.push((name, value));
            }
        }
        let response = exchange(&app, &fields).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
        let _ = what;
    }
    // Another client's code.
    let code = fresh().await;
    let mut fields = exchange_fields(&code, "wiki");
    fields.retain(|(n, _)| *n != "redirect_uri");
    fields.push(("redirect_uri", WIKI_CALLBACK));
    let refused = exchange(&app, &fields).await;
    assert_error(refused, StatusCode::BAD_REQUEST, "invalid_grant").await;
    // Expired: codes live 60 s.
    let code = fresh().await;
    app.clock.advance(Duration::from_secs(61));
    assert_error(
        exchange(&app, &exchange_fields(&code, "webapp")).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    // A forged code.
    assert_error(
        exchange(&app, &exchange_fields("lk_ac_AAAA", "webapp")).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_error(
        exchange(
            &app,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "webapp"),
            ],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    // And the right one works.
    let code = fresh().await;
    let ok = exchange(&app, &exchange_fields(&code, "webapp")).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(text(&body, "refresh_token").starts_with("lk_rt_"));
}

/// The login and consent forms are accepted only with their own CSRF token and from the
/// browser that opened them; Cancel answers `access_denied`.
#[tokio::test]
async fn the_forms_hold_to_their_transaction_and_browser() {
    let app = spawn_sso_app(Backend::Embedded, |_| {}).await;
    let browser = browser();
    let first = get(&browser, &authorize_url(&app, &request("webapp", CALLBACK)))
        .await
        .text()
        .await
        .unwrap();
    let second = get(
        &browser,
        &authorize_url(&app, &request("wiki", WIKI_CALLBACK)),
    )
    .await
    .text()
    .await
    .unwrap();
    let attempt = |client: reqwest::Client, transaction: String, csrf: Option<String>| {
        let app = &app;
        async move {
            let mut fields = vec![
                ("transaction", transaction),
                ("username", "alice".to_owned()),
                ("password", PASSWORD.to_owned()),
            ];
            if let Some(csrf) = csrf {
                fields.push(("csrf", csrf));
            }
            client
                .post(app.url("/oauth/authorize/login"))
                .form(&fields)
                .send()
                .await
                .unwrap()
        }
    };
    for (client, transaction, csrf, what) in [
        (
            browser.clone(),
            hidden(&first, "transaction"),
            None,
            "no CSRF token",
        ),
        (
            browser.clone(),
            hidden(&first, "transaction"),
            Some(hidden(&second, "csrf")),
            "another transaction's token",
        ),
        (
            self::browser(),
            hidden(&first, "transaction"),
            Some(hidden(&first, "csrf")),
            "another browser",
        ),
        (
            browser.clone(),
            "unknown".to_owned(),
            Some(hidden(&first, "csrf")),
            "no such transaction",
        ),
    ] {
        let response = attempt(client, transaction, csrf).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        assert!(response.headers().get("location").is_none(), "{what}");
        assert!(
            response
                .headers()
                .get_all("set-cookie")
                .iter()
                .all(|c| !c.to_str().unwrap().contains("latchkey_sso")),
            "{what}"
        );
    }
    let cancel = post_page(
        &app,
        &browser,
        "/oauth/authorize/login",
        &[
            ("transaction", &hidden(&first, "transaction")),
            ("csrf", &hidden(&first, "csrf")),
            ("action", "cancel"),
        ],
    )
    .await;
    let (base, query) = redirect_params(&cancel);
    assert_eq!(base, CALLBACK);
    assert_eq!(query["error"], "access_denied");
    assert_eq!(query["state"], "st-1");
    // A used transaction is gone.
    let replay = log_in_on(&app, &browser, &first, PASSWORD).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    // A wrong password shows the page again, 401, the name kept.
    let wrong = log_in_on(&app, &browser, &second, "wrong password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let page = wrong.text().await.unwrap();
    assert!(page.contains("Wrong username or password") && page.contains(r#"value="alice""#));
}

/// A request that arrives by POST (a cross-site form: no `SameSite=Lax` cookie travels with
/// it) is kept and answered 303 to a GET, where the sign-on cookie flows.
#[tokio::test]
async fn a_cross_site_post_continues_as_a_get_with_the_sign_on() {
    let app = spawn_sso_app(Backend::Embedded, |_| {}).await;
    let browser = browser();
    code_for(&app, &browser, &request("webapp", CALLBACK)).await;
    // The cross-site POST carries no cookie.
    let post = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(app.url("/oauth/authorize"))
        .form(&request("wiki", WIKI_CALLBACK))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::SEE_OTHER);
    let location = post.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("/oauth/authorize?transaction="),
        "{location}"
    );
    // The browser follows it as a top-level GET, with its cookies.
    let (base, query) = redirect_params(&get(&browser, &app.url(&location)).await);
    assert_eq!(base, WIKI_CALLBACK);
    assert!(query.contains_key("code"));
    // Once.
    assert_eq!(
        get(&browser, &app.url(&location)).await.status(),
        StatusCode::BAD_REQUEST
    );
    // A POST that is not a form, or whose client is unknown, is a page.
    let not_form = app
        .client
        .post(app.url("/oauth/authorize"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(not_form.status(), StatusCode::BAD_REQUEST);
}

/// The login page counts failures like `/auth/login`: the pair limit answers 429 with
/// `Retry-After`, on the page.
#[tokio::test]
async fn the_login_page_is_throttled() {
    let app = spawn_sso_app(Backend::Embedded, |c| {
        c.set("limits", "failed_logins_per_user_ip = 3")
    })
    .await;
    let browser = browser();
    let page = get(&browser, &authorize_url(&app, &request("webapp", CALLBACK)))
        .await
        .text()
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            log_in_on(&app, &browser, &page, "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let throttled = log_in_on(&app, &browser, &page, PASSWORD).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers().contains_key("retry-after"));
    assert!(
        throttled
            .text()
            .await
            .unwrap()
            .contains("Too many attempts")
    );
    // The JSON API shares the count.
    assert_eq!(
        app.login("alice", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// A confidential client without PKCE authenticates at the exchange; a verifier for a code
/// issued without a challenge is refused. A native app's loopback URI matches on any port.
#[tokio::test]
async fn confidential_and_native_clients() {
    let app = spawn_sso_app(Backend::Embedded, |_| {}).await;
    let browser = browser();
    let params = vec![
        ("response_type", "code"),
        ("client_id", "backend"),
        ("state", "s"),
    ];
    let code = code_for(&app, &browser, &params).await;
    let unauthenticated = exchange(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "backend"),
        ],
    )
    .await;
    assert_error(unauthenticated, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let code = code_for(&app, &browser, &params).await;
    let ok = exchange(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "backend"),
            ("client_secret", BACKEND_SECRET),
        ],
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let code = code_for(&app, &browser, &params).await;
    let with_verifier = exchange(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "backend"),
            ("client_secret", BACKEND_SECRET),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_error(with_verifier, StatusCode::BAD_REQUEST, "invalid_grant").await;

    let native = request("native", "http://127.0.0.1:51234/cb");
    let (base, query) = redirect_params(&get(&browser, &authorize_url(&app, &native)).await);
    assert_eq!(base, "http://127.0.0.1:51234/cb");
    let code = query["code"].clone();
    let ok = exchange(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "native"),
            ("redirect_uri", "http://127.0.0.1:51234/cb"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    for elsewhere in [
        "http://127.0.0.1:51234/other",
        "http://localhost.evil.example:51234/cb",
        "https://127.0.0.1:51234/cb",
    ] {
        let response = get(
            &browser,
            &authorize_url(&app, &request("native", elsewhere)),
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{elsewhere}");
    }
}

/// Discovery says what the endpoint does.
#[tokio::test]
async fn discovery_advertises_the_authorization_endpoint() {
    let app = spawn_sso_app(Backend::Embedded, |_| {}).await;
    let meta: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["authorization_endpoint"],
        "http://127.0.0.1/oauth/authorize"
    );
    assert_eq!(meta["response_types_supported"], json!(["code"]));
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("authorization_code"))
    );
    let css = app.get("/oauth/pages.css").await;
    assert_eq!(css.status(), StatusCode::OK);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

/// A browser app on another origin exchanges its code at the token endpoint cross-origin.
#[tokio::test]
async fn the_token_endpoint_answers_registered_origins() {
    let app = spawn_sso_app(Backend::Embedded, |_| {}).await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/oauth/token"))
        .header("origin", "http://127.0.0.1:9")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://127.0.0.1:9"
    );
    let browser = browser();
    let code = code_for(&app, &browser, &request("webapp", CALLBACK)).await;
    let response = app
        .client
        .post(app.url("/oauth/token"))
        .header("origin", "http://127.0.0.1:9")
        .form(&exchange_fields(&code, "webapp"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://127.0.0.1:9"
    );
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        response.text().await.unwrap()
    );
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://127.0.0.1:9"
    );
    let foreign = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/oauth/token"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

on_every_backend!(
    the_oauth2_crate_signs_in_with_pkce,
    single_sign_on_spans_clients,
    the_sign_on_ends_with_the_users_sessions,
    consent_is_asked_remembered_and_withdrawn,
    a_code_is_bound_to_its_request,
);

/// A relying party written by others: Authlib's `OAuth2Session` (Python) with PKCE S256 signs
/// in through the hosted page, exchanges the code and refreshes. `.ci/run` installs Authlib.
#[tokio::test]
async fn authlib_signs_in_and_refreshes() {
    let mut issuer = String::new();
    let app = spawn_sso_app(Backend::Embedded, |c| issuer = c.issuer_on_own_port()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/authlib_rp.py");
    let output = tokio::process::Command::new("python3")
        .args([script, &issuer, "webapp", CALLBACK, "alice", PASSWORD])
        .output()
        .await
        .expect("python3");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'authlib'"),
        "Authlib must be installed (python3 -m pip install authlib; .ci/run installs it)"
    );
    assert!(output.status.success(), "{stderr}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    let claims = claims_of(result["access_token"].as_str().unwrap());
    assert_eq!(claims["client_id"], "webapp");
    assert_eq!(claims["iss"], issuer.as_str());
    assert_eq!(result["scope"], "photos:read");
    assert_eq!(result["rotated"], true);
    assert_eq!(
        claims_of(result["renewed_access_token"].as_str().unwrap())["sid"],
        claims["sid"]
    );
    drop(app);
}

/// Asking for nothing grants what the user holds that the client may carry, but never the
/// account API, which an app must ask for by name.
#[tokio::test]
async fn the_account_scope_is_granted_only_when_asked_for() {
    let app = spawn_sso_app(Backend::Embedded, |_| {}).await;
    let browser = browser();
    let mut plain = request("webapp", CALLBACK);
    plain.retain(|(n, _)| *n != "scope");
    let code = code_for(&app, &browser, &plain).await;
    let body: Value = exchange(&app, &exchange_fields(&code, "webapp"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["scope"], "photos:read");
    let mut asked = request("webapp", CALLBACK);
    asked.push(("scope", "photos:read account"));
    let code = code_for(&app, &browser, &asked).await;
    let body: Value = exchange(&app, &exchange_fields(&code, "webapp"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["scope"], "photos:read account");
}

/// A code exchanged with a DPoP proof binds what it issues to the key, like any token request:
/// the session's refresh tokens then need proofs of that key.
#[tokio::test]
async fn a_code_exchanged_with_a_proof_binds_the_session() {
    let app = spawn_sso_app(Backend::Embedded, |_| {}).await;
    let browser = browser();
    let key = crate::dpop::DpopKey::es256();
    let code = code_for(&app, &browser, &request("webapp", CALLBACK)).await;
    let bound = app
        .client
        .post(app.url("/oauth/token"))
        .header(
            "dpop",
            key.proof("POST", "http://127.0.0.1/oauth/token", None),
        )
        .form(&exchange_fields(&code, "webapp"))
        .send()
        .await
        .unwrap();
    assert_eq!(bound.status(), StatusCode::OK);
    let body: Value = bound.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    assert_eq!(
        claims_of(&text(&body, "access_token"))["cnf"]["jkt"],
        key.jkt()
    );
    let refresh = text(&body, "refresh_token");
    let without = exchange(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "webapp"),
        ],
    )
    .await;
    assert_error(without, StatusCode::BAD_REQUEST, "invalid_dpop_proof").await;
    let with = app
        .client
        .post(app.url("/oauth/token"))
        .header(
            "dpop",
            key.proof("POST", "http://127.0.0.1/oauth/token", None),
        )
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "webapp"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), StatusCode::OK);
}

/// Every page is a record the store keeps for ten minutes: one address may open only so many
/// per window, then gets a 429 page (another address is not affected).
#[tokio::test]
async fn one_address_may_open_only_so_many_pages() {
    let app = spawn_sso_app(Backend::Embedded, |c| {
        c.set("limits", "sign_in_pages_per_ip = 3");
        c.text = format!("trusted_proxies = [\"127.0.0.1\"]\n{}", c.text);
    })
    .await;
    let url = authorize_url(&app, &request("webapp", CALLBACK));
    let from = |ip: &'static str| {
        browser()
            .get(url.clone())
            .header("x-forwarded-for", ip)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(from("192.0.2.1").await.unwrap().status(), StatusCode::OK);
    }
    let refused = from("192.0.2.1").await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(refused.headers().get("location").is_none());
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("Too many sign-in requests")
    );
    assert_eq!(from("192.0.2.2").await.unwrap().status(), StatusCode::OK);
}
