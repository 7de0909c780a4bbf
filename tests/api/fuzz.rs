//! Property tests over every parser an attacker or an operator can feed: the refresh-token
//! format, the form and scope parsers, the config file, and the HTTP API as a whole (random
//! bodies, content types, headers and tokens never yield a 5xx). Each runs a fixed number of
//! cases, so CI time is bounded; a failure prints the smallest input that shows it.

use std::collections::BTreeMap;

use latchkey::config::Config;
use latchkey::routes::form::Form;
use latchkey::tokens::RefreshToken;
use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestRunner};

use crate::helpers::{Backend, PASSWORD, spawn_app_with, text};

fn cases(n: u32) -> Cases {
    Cases {
        cases: n,
        failure_persistence: None,
        ..Cases::default()
    }
}

/// Any text, biased towards what the parsers look for: token prefixes, separators, escapes.
fn hostile_text() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        any::<String>(),
        Just(latchkey::tokens::REFRESH_PREFIX.to_owned()),
        Just("%".to_owned()),
        Just("%zz".to_owned()),
        Just("%00".to_owned()),
        Just("%C3%28".to_owned()),
        Just("=".to_owned()),
        Just("&".to_owned()),
        Just("+".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\"".to_owned()),
        Just("[".to_owned()),
        Just("Bearer ".to_owned()),
        "[A-Za-z0-9_-]{0,64}",
    ];
    proptest::collection::vec(pieces, 0..8).prop_map(|p| p.concat())
}

#[test]
fn the_refresh_token_parser_takes_any_text_and_accepts_only_what_it_issued() {
    TestRunner::new(cases(2_000))
        .run(&hostile_text(), |text| {
            // Never a panic; whatever parses has the exact shape of an issued token.
            if RefreshToken::parse(&text).is_ok() {
                prop_assert_eq!(text.len(), latchkey::tokens::REFRESH_TOKEN_LEN);
            }
            Ok(())
        })
        .unwrap();
    let issued = RefreshToken::generate(uuid::Uuid::new_v4()).unwrap();
    let issued = issued.as_str().to_owned();
    let parsed = RefreshToken::parse(&issued).unwrap();
    TestRunner::new(cases(1_000))
        .run(&(0..issued.len(), any::<char>()), |(at, replacement)| {
            let mut mutated: Vec<char> = issued.chars().collect();
            prop_assume!(mutated[at] != replacement);
            mutated[at] = replacement;
            let mutated: String = mutated.into_iter().collect();
            // One character changed: refused, or (base64's last character carries spare
            // bits, refused as non-canonical) never the same token.
            if let Ok(other) = RefreshToken::parse(&mutated) {
                prop_assert!(other.id != parsed.id);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_form_parser_takes_any_bytes_and_round_trips_what_clients_send() {
    TestRunner::new(cases(2_000))
        .run(
            &prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..256),
                hostile_text().prop_map(String::into_bytes),
            ],
            |bytes| {
                if let Ok(form) = Form::parse(&bytes) {
                    for name in ["grant_type", "token", "refresh_token", "scope"] {
                        if let Some(value) = form.get(name) {
                            prop_assert!(!value.is_empty());
                            prop_assert!(!value.chars().any(|c| c.is_control() && c != '\t'));
                        }
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    let params = proptest::collection::btree_map("[a-z_]{1,12}", "[^\\p{Cc}]{1,24}", 0..6);
    TestRunner::new(cases(500))
        .run(&params, |params: BTreeMap<String, String>| {
            let encoded: String = params
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        k,
                        percent_encoding::utf8_percent_encode(
                            v,
                            percent_encoding::NON_ALPHANUMERIC
                        )
                    )
                })
                .collect::<Vec<_>>()
                .join("&");
            let form = Form::parse(encoded.as_bytes()).unwrap();
            for (k, v) in &params {
                prop_assert_eq!(form.get(k), Some(v.as_str()));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_scope_parser_takes_any_text() {
    TestRunner::new(cases(2_000))
        .run(&hostile_text(), |text| {
            if let Ok(Some(scopes)) = latchkey::flows::scopes::parse(Some(&text)) {
                for scope in scopes {
                    prop_assert!(!scope.is_empty() && !scope.contains(' '));
                }
            }
            Ok(())
        })
        .unwrap();
}

/// A config line: a known field (or an unknown one) with a value of any TOML kind.
fn config_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("issuer".to_owned()),
        Just("listen".to_owned()),
        Just("access_ttl".to_owned()),
        Just("refresh_ttl".to_owned()),
        Just("reuse_grace".to_owned()),
        Just("url".to_owned()),
        Just("memory_kib".to_owned()),
        Just("window".to_owned()),
        Just("kid".to_owned()),
        Just("alg".to_owned()),
        Just("not_before".to_owned()),
        Just("grants".to_owned()),
        Just("refresh_delivery".to_owned()),
        Just("allowed_origins".to_owned()),
        Just("trusted_proxies".to_owned()),
        Just("format".to_owned()),
        "[a-z_]{1,10}".prop_map(|s| s),
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        hostile_text().prop_map(|s| format!("{s:?}")),
        Just("\"2026-01-01T00:00:00Z\"".to_owned()),
        Just("\"10s\"".to_owned()),
        Just("[\"a\", 1]".to_owned()),
        Just("{ x = 1 }".to_owned()),
    ];
    let header = prop_oneof![
        Just(""),
        Just("[tokens]\n"),
        Just("[store]\n"),
        Just("[limits]\n"),
        Just("[[keys]]\n"),
        Just("[[clients]]\n"),
        Just("[metrics]\n"),
        Just("[log]\n"),
        Just("[[tokens]]\n"),
    ];
    (header, key, value).prop_map(|(h, k, v)| format!("{h}{k} = {v}\n"))
}

#[test]
fn the_config_parser_takes_any_file_and_explains_what_it_refuses() {
    let file = prop_oneof![
        proptest::collection::vec(config_line(), 0..12).prop_map(|l| l.concat()),
        hostile_text(),
    ];
    TestRunner::new(cases(1_000))
        .run(&file, |text| {
            match Config::parse(&text, |_| None) {
                Ok(config) => prop_assert!(!config.keys.is_empty()),
                Err(e) => prop_assert!(!e.problems.is_empty()),
            }
            Ok(())
        })
        .unwrap();
}

/// One request an attacker might send.
#[derive(Debug, Clone)]
struct Probe {
    method: &'static str,
    path: &'static str,
    content_type: Option<String>,
    authorization: Option<String>,
    cookie: Option<String>,
    origin: Option<String>,
    forwarded: Option<String>,
    body: Vec<u8>,
}

fn probe() -> impl Strategy<Value = Probe> {
    let target = prop_oneof![
        Just(("POST", "/auth/login")),
        Just(("POST", "/auth/refresh")),
        Just(("POST", "/auth/logout")),
        Just(("GET", "/auth/userinfo")),
        Just(("GET", "/auth/sessions")),
        Just(("DELETE", "/auth/sessions/x")),
        Just(("POST", "/auth/logout-all")),
        Just(("POST", "/auth/password")),
        Just(("POST", "/auth/register")),
        Just(("POST", "/oauth/token")),
        Just(("POST", "/oauth/revoke")),
        Just(("POST", "/oauth/introspect")),
        Just(("GET", "/.well-known/jwks.json")),
    ];
    let content_type = proptest::option::of(prop_oneof![
        Just("application/json".to_owned()),
        Just("application/x-www-form-urlencoded".to_owned()),
        Just("application/json; charset=latin1".to_owned()),
        Just("text/plain".to_owned()),
        "[ -~]{0,40}",
    ]);
    let token = prop_oneof![
        hostile_text(),
        Just("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_owned()),
        "[A-Za-z0-9_-]{10,40}\\.[A-Za-z0-9_-]{10,80}\\.[A-Za-z0-9_-]{0,90}",
    ];
    let authorization = proptest::option::of(prop_oneof![
        token.clone().prop_map(|t| format!("Bearer {t}")),
        token.clone().prop_map(|t| format!("Basic {t}")),
        "[ -~]{0,60}",
    ]);
    let json_body = prop_oneof![
        (hostile_text(), hostile_text())
            .prop_map(|(u, p)| { serde_json::json!({"username": u, "password": p}).to_string() }),
        token
            .clone()
            .prop_map(|t| serde_json::json!({"refresh_token": t}).to_string()),
        (hostile_text(), hostile_text()).prop_map(|(a, b)| {
            serde_json::json!({"current_password": a, "new_password": b, "scope": [1, 2]})
                .to_string()
        }),
        Just("{\"username\": {\"$gt\": \"\"}}".to_owned()),
        Just("[".repeat(5_000)),
        hostile_text(),
    ];
    let form_body = prop_oneof![
        token
            .clone()
            .prop_map(|t| format!("grant_type=refresh_token&refresh_token={t}")),
        (hostile_text(), token).prop_map(|(g, t)| format!("grant_type={g}&token={t}&token={t}")),
        hostile_text(),
    ];
    let body = prop_oneof![
        json_body.prop_map(String::into_bytes),
        form_body.prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..512),
    ];
    (
        target,
        content_type,
        authorization,
        proptest::option::of(hostile_text()),
        proptest::option::of(prop_oneof![
            Just("null".to_owned()),
            Just("https://evil.example".to_owned()),
            "[ -~]{0,30}",
        ]),
        proptest::option::of(prop_oneof![
            "[0-9.:, ]{0,40}",
            Just("for=\"[::1]:80\";proto=https, for=unknown".to_owned()),
        ]),
        body,
    )
        .prop_map(
            |((method, path), content_type, authorization, cookie, origin, forwarded, body)| {
                Probe {
                    method,
                    path,
                    content_type,
                    authorization,
                    cookie: cookie.map(|c| format!("latchkey_rt_spa={c}")),
                    origin,
                    forwarded,
                    body,
                }
            },
        )
}

#[test]
fn no_malformed_request_yields_a_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, valid) = runtime.block_on(async {
        let app = spawn_app_with(Backend::Embedded, |c| {
            c.set("limits", "login_attempts_per_ip = 1000000");
            c.set("limits", "failed_logins_per_user_ip = 1000000");
            c.set("limits", "failed_logins_per_user = 1000000");
            // Forwarding headers are read: the test client is a trusted proxy.
            c.text = format!("trusted_proxies = [\"127.0.0.1\"]\n{}", c.text);
            c.text.push_str(
                "\n[[clients]]\nid = \"spa\"\ntype = \"public\"\n\
                 grants = [\"refresh_token\"]\nrefresh_delivery = \"cookie\"\n\
                 allowed_origins = [\"https://app.example\"]\n",
            );
        })
        .await;
        app.add_user("alice", PASSWORD).await;
        let valid = text(&app.login_ok("alice").await, "access_token");
        (app, valid)
    });
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = TestRunner::new(cases(600));
    let result = runner.run(&(probe(), any::<bool>()), |(probe, with_valid_token)| {
        let status = runtime.block_on(async {
            let method = reqwest::Method::from_bytes(probe.method.as_bytes()).unwrap();
            let mut request = app
                .client
                .request(method, app.url(probe.path))
                .body(probe.body.clone());
            if let Some(v) = &probe.content_type {
                request = request.header("content-type", v.as_str());
            }
            match (&probe.authorization, with_valid_token) {
                (_, true) => request = request.bearer_auth(&valid),
                (Some(v), false) => request = request.header("authorization", v.as_str()),
                (None, false) => {}
            }
            if let Some(v) = &probe.cookie {
                request = request.header("cookie", v.as_str());
            }
            if let Some(v) = &probe.origin {
                request = request.header("origin", v.as_str());
            }
            if let Some(v) = &probe.forwarded {
                request = request.header("x-forwarded-for", v.as_str());
                request = request.header("forwarded", v.as_str());
            }
            // Headers reqwest refuses to build are not requests the server can see.
            match request.send().await {
                Ok(response) => Some(response.status()),
                Err(e) if e.is_builder() => None,
                Err(e) => panic!("{e}"),
            }
        });
        if let Some(status) = status {
            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            prop_assert!(
                !status.is_server_error(),
                "{} {} answered {status}",
                probe.method,
                probe.path
            );
        }
        Ok(())
    });
    // The valid token's password may have been changed by a probe: that is fine, the server
    // must only never fail.
    result.unwrap();
    let answered = answered.into_inner();
    assert!(answered > 400, "only {answered} probes reached the server");
}

/// The authorization endpoint and its forms under random parameters (known names with hostile
/// values, repeated, misspelt; random bytes): never a 5xx, and never a redirect anywhere but a
/// registered redirect URI or the endpoint itself.
#[test]
fn no_authorization_request_yields_a_5xx_or_a_foreign_redirect() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    const REGISTERED: [&str; 2] = ["https://app.example/cb", "http://127.0.0.1/native"];
    let app = runtime.block_on(async {
        let app = spawn_app_with(Backend::Embedded, |c| {
            // One address sends every case: the page limit has a test of its own.
            c.set("limits", "sign_in_pages_per_ip = 1000000");
            c.text.push_str(
                "\n[[clients]]\nid = \"app\"\ntype = \"public\"\n\
                 grants = [\"authorization_code\"]\n\
                 redirect_uris = [\"https://app.example/cb\"]\nconsent = \"once\"\n\
                 [[clients]]\nid = \"native\"\ntype = \"public\"\n\
                 grants = [\"authorization_code\"]\nloopback_any_port = true\n\
                 redirect_uris = [\"http://127.0.0.1/native\"]\n",
            );
        })
        .await;
        app.add_user("alice", PASSWORD).await;
        app
    });
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let names = prop_oneof![
        Just("response_type"),
        Just("client_id"),
        Just("redirect_uri"),
        Just("code_challenge"),
        Just("code_challenge_method"),
        Just("scope"),
        Just("state"),
        Just("prompt"),
        Just("max_age"),
        Just("login_hint"),
        Just("nonce"),
        Just("transaction"),
        Just("csrf"),
        Just("username"),
        Just("password"),
        Just("action"),
        Just("request"),
        Just("response_mode"),
    ];
    let values = prop_oneof![
        hostile_text(),
        Just("code".to_owned()),
        Just("app".to_owned()),
        Just("native".to_owned()),
        Just("https://app.example/cb".to_owned()),
        Just("https://app.example/cb/../x".to_owned()),
        Just("http://127.0.0.1:8/native".to_owned()),
        Just("http://127.0.0.1:8@evil.example/native".to_owned()),
        Just("S256".to_owned()),
        Just("plain".to_owned()),
        Just("none".to_owned()),
        Just("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned()),
        "[a-z ]{0,20}",
    ];
    let pairs = proptest::collection::vec((names, values), 0..12);
    let path = prop_oneof![
        Just(("GET", "/oauth/authorize")),
        Just(("POST", "/oauth/authorize")),
        Just(("POST", "/oauth/authorize/login")),
        Just(("POST", "/oauth/authorize/consent")),
    ];
    let mut runner = TestRunner::new(cases(600));
    let result = runner.run(&(path, pairs), |((method, path), pairs)| {
        let encoded: String = pairs
            .iter()
            .map(|(n, v)| {
                let v: String = url_escape(v);
                format!("{n}={v}")
            })
            .collect::<Vec<_>>()
            .join("&");
        let (status, location) = runtime.block_on(async {
            let request = if method == "GET" {
                browser.get(format!("{}?{encoded}", app.url(path)))
            } else {
                browser
                    .post(app.url(path))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(encoded.clone())
            };
            let response = request.send().await.unwrap();
            let location = response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap_or("").to_owned());
            (response.status(), location)
        });
        prop_assert!(
            status.as_u16() < 500,
            "{status} for {method} {path}?{encoded}"
        );
        if let Some(location) = location {
            let to_registered = REGISTERED
                .iter()
                .any(|r| location.starts_with(&format!("{r}?")))
                || location.starts_with("http://127.0.0.1:")
                    && location.split('?').next().is_some_and(|base| {
                        base.starts_with("http://127.0.0.1:")
                            && base.ends_with("/native")
                            && base["http://127.0.0.1:".len()..base.len() - "/native".len()]
                                .bytes()
                                .all(|b| b.is_ascii_digit())
                    });
            prop_assert!(
                to_registered || location.starts_with("/oauth/authorize?transaction="),
                "redirect to {location} for {method} {path}?{encoded}"
            );
        }
        Ok(())
    });
    drop(app);
    result.unwrap();
}

/// Percent-encodes all but unreserved characters.
fn url_escape(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
