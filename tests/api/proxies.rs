//! Client addresses behind trusted proxies (`docs/security.md`): the chain is read from the
//! right, where the proxies appended what they saw, so entries a client writes itself never
//! become its address, whatever their number; only the configured header kind is read.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, assert_error, spawn_app_with, text};

/// The real client, as the trusted proxy (this test's own 127.0.0.1) reports it.
const REAL: &str = "203.0.113.9";

async fn app_behind_proxy(header_kind: &str, login_attempts_per_ip: u32) -> TestApp {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.text = c.text.replace(
            "[tokens]",
            &format!(
                "trusted_proxies = [\"127.0.0.0/8\"]\nforwarded_header = \"{header_kind}\"\n\n[tokens]"
            ),
        );
        c.set(
            "limits",
            &format!("login_attempts_per_ip = {login_attempts_per_ip}"),
        );
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    app
}

async fn login_with(app: &TestApp, headers: &[(&str, String)]) -> reqwest::Response {
    let mut request = app.client.post(app.url("/auth/login"));
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    request
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
}

/// The address the session of a login with `headers` was recorded at.
async fn recorded_ip(app: &TestApp, headers: &[(&str, String)]) -> String {
    let response = login_with(app, headers).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    let listed: Vec<Value> = app
        .client
        .get(app.url("/auth/sessions"))
        .bearer_auth(text(&tokens, "access_token"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let current = listed.iter().find(|s| s["current"] == true).unwrap();
    current["login_ip"].as_str().unwrap().to_owned()
}

/// `forged` entries of the client's own, then what the proxy appended.
fn chain(forged: usize, appended: &[&str]) -> Vec<String> {
    let mut hops: Vec<String> = (0..forged)
        .map(|i| format!("198.51.100.{}", i % 250 + 1))
        .collect();
    hops.extend(appended.iter().map(|s| s.to_string()));
    hops
}

fn xff(hops: &[String]) -> (&'static str, String) {
    ("x-forwarded-for", hops.join(", "))
}

fn forwarded(hops: &[String]) -> (&'static str, String) {
    let elements: Vec<String> = hops
        .iter()
        .map(|h| format!("for={h};proto=https"))
        .collect();
    ("forwarded", elements.join(", "))
}

async fn the_address_is_the_one_the_proxy_appended(
    header_kind: &str,
    header: fn(&[String]) -> (&'static str, String),
) {
    let app = app_behind_proxy(header_kind, 60).await;
    // Chains of 1, 16, 17 and 500 entries: all but the last are the client's own.
    for length in [1, 16, 17, 500] {
        let hops = chain(length - 1, &[REAL]);
        assert_eq!(recorded_ip(&app, &[header(&hops)]).await, REAL, "{length}");
    }
    // Two proxies: the second (trusted) appended the first's report.
    let hops = chain(40, &[REAL, "127.0.0.7"]);
    assert_eq!(recorded_ip(&app, &[header(&hops)]).await, REAL);
    // Past the bound every hop read is a trusted proxy: the leftmost of them, never an entry
    // the client wrote further left.
    let proxies: Vec<&str> = std::iter::repeat_n("127.0.0.9", 16).collect();
    let hops = chain(484, &proxies);
    assert_eq!(recorded_ip(&app, &[header(&hops)]).await, "127.0.0.9");
    // The same chain spread over two header lines reads the same.
    let (name, value) = header(&chain(20, &[]));
    let (_, last) = header(&[REAL.to_string()]);
    assert_eq!(
        recorded_ip(&app, &[(name, value), (name, last)]).await,
        REAL
    );
}

#[tokio::test]
async fn x_forwarded_for_is_read_from_the_right_whatever_the_client_prepends() {
    the_address_is_the_one_the_proxy_appended("x-forwarded-for", xff).await;
}

#[tokio::test]
async fn forwarded_is_read_from_the_right_whatever_the_client_prepends() {
    the_address_is_the_one_the_proxy_appended("forwarded", forwarded).await;
}

#[tokio::test]
async fn the_header_kind_the_proxies_do_not_set_is_ignored() {
    let app = app_behind_proxy("x-forwarded-for", 60).await;
    let spoofed = forwarded(&["6.6.6.6".to_string()]);
    let reported = xff(&[REAL.to_string()]);
    assert_eq!(recorded_ip(&app, &[spoofed.clone(), reported]).await, REAL);
    // With neither from the proxy, the proxy itself is the client, never the client's claim.
    assert_eq!(recorded_ip(&app, &[spoofed]).await, "127.0.0.1");

    let app = app_behind_proxy("forwarded", 60).await;
    let spoofed = xff(&["6.6.6.6".to_string()]);
    let reported = forwarded(&[REAL.to_string()]);
    assert_eq!(recorded_ip(&app, &[spoofed, reported]).await, REAL);
}

#[tokio::test]
async fn forged_entries_do_not_escape_the_per_address_login_limit() {
    let app = app_behind_proxy("x-forwarded-for", 3).await;
    // Each attempt forges 16 fresh entries of its own before the proxy's.
    for attempt in 0..3 {
        let mut hops: Vec<String> = (0..16)
            .map(|i| format!("198.51.{attempt}.{}", i + 1))
            .collect();
        hops.push(REAL.to_string());
        let response = login_with(&app, &[xff(&hops)]).await;
        assert_eq!(response.status(), StatusCode::OK, "attempt {attempt}");
    }
    let mut hops = chain(16, &[]);
    hops.push(REAL.to_string());
    let refused = login_with(&app, &[xff(&hops)]).await;
    assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "slow_down").await;
}
