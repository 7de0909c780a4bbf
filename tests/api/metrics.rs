//! `/metrics`: every counter `docs/metrics.md` lists moves when its event happens, scraped the
//! way Prometheus scrapes it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, hash, spawn_app_with, text};

const SERVICE_SECRET: &str = "service-secret-0123456789abcdef";

pub(crate) async fn scrape(app: &TestApp) -> String {
    let base = app.metrics_address.as_deref().unwrap_or(&app.address);
    let response = app
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as exposed); 0 when absent.
pub(crate) fn sample(scraped: &str, series: &str) -> f64 {
    scraped
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn refresh_outcome(scraped: &str, outcome: &str, cause: &str) -> f64 {
    sample(
        scraped,
        &format!("latchkey_refresh_outcomes_total{{outcome=\"{outcome}\",cause=\"{cause}\"}}"),
    )
}

fn revoked(scraped: &str, cause: &str) -> f64 {
    sample(
        scraped,
        &format!("latchkey_families_revoked_total{{cause=\"{cause}\"}}"),
    )
}

fn logins(scraped: &str, outcome: &str) -> f64 {
    sample(
        scraped,
        &format!("latchkey_logins_total{{outcome=\"{outcome}\"}}"),
    )
}

async fn bearer_post(app: &TestApp, path: &str, access: &str, body: &Value) -> StatusCode {
    app.client
        .post(app.url(path))
        .bearer_auth(access)
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn every_refresh_outcome_login_outcome_and_revocation_is_counted() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.set("limits", "failed_logins_per_user_ip = 2");
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    let disabled = app.add_user("dora", PASSWORD).await;
    app.store
        .set_disabled(
            &disabled.id,
            true,
            &crate::helpers::note(latchkey::store::RevocationReason::UserDisabled),
        )
        .await
        .unwrap();
    let before = scrape(&app).await;
    assert_eq!(refresh_outcome(&before, "rotated", ""), 0.0);

    // Logins: a success, a wrong password, a disabled account, then throttled.
    let first = app.login_ok("alice").await;
    assert_eq!(
        app.login("alice", "wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("dora", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("alice", "wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("alice", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // Rotation, a grace replay, then reuse of a token whose successor was consumed.
    let t1 = text(&first, "refresh_token");
    let r2: Value = app.refresh(&t1).await.json().await.unwrap();
    assert_eq!(app.refresh(&t1).await.status(), StatusCode::OK);
    let t2 = text(&r2, "refresh_token");
    assert_eq!(app.refresh(&t2).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&t1).await.status(), StatusCode::UNAUTHORIZED);
    // The revoked session's tokens, tried again: still recognised, counted, not revoked again.
    assert_eq!(app.refresh(&t2).await.status(), StatusCode::UNAUTHORIZED);
    // An unknown token.
    assert_eq!(
        app.refresh("not-a-refresh-token").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let scraped = scrape(&app).await;
    assert_eq!(logins(&scraped, "success"), 1.0);
    assert_eq!(logins(&scraped, "bad_credentials"), 2.0);
    assert_eq!(logins(&scraped, "disabled"), 1.0);
    assert_eq!(logins(&scraped, "throttled"), 1.0);
    assert_eq!(refresh_outcome(&scraped, "rotated", ""), 2.0);
    assert_eq!(refresh_outcome(&scraped, "grace_replay", ""), 1.0);
    assert_eq!(
        refresh_outcome(&scraped, "reuse_detected", "consumed_successor"),
        1.0
    );
    assert_eq!(
        refresh_outcome(&scraped, "reuse_detected", "revoked_family"),
        1.0
    );
    assert_eq!(refresh_outcome(&scraped, "unknown", ""), 1.0);
    assert_eq!(revoked(&scraped, "reuse"), 1.0);
    assert_eq!(
        sample(
            &scraped,
            "latchkey_tokens_issued_total{grant=\"password\",client=\"latchkey\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scraped,
            "latchkey_tokens_issued_total{grant=\"refresh_token\",client=\"latchkey\"}"
        ),
        3.0
    );

    // The clock moves on (the throttle's window passes too): reuse after the grace window,
    // idle expiry, absolute expiry.
    app.clock.advance(Duration::from_secs(120));
    let t = text(&app.login_ok("alice").await, "refresh_token");
    assert_eq!(app.refresh(&t).await.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(11));
    assert_eq!(app.refresh(&t).await.status(), StatusCode::UNAUTHORIZED);

    let idle = text(&app.login_ok("alice").await, "refresh_token");
    app.clock.advance(Duration::from_secs(7 * 86_400 + 1));
    assert_eq!(app.refresh(&idle).await.status(), StatusCode::UNAUTHORIZED);

    let mut long = text(&app.login_ok("alice").await, "refresh_token");
    for _ in 0..4 {
        app.clock.advance(Duration::from_secs(6 * 86_400));
        let next: Value = app.refresh(&long).await.json().await.unwrap();
        long = text(&next, "refresh_token");
    }
    // 30 days and a second after the login: within the idle window, past the session's end.
    app.clock.advance(Duration::from_secs(6 * 86_400 + 1));
    assert_eq!(app.refresh(&long).await.status(), StatusCode::UNAUTHORIZED);

    // Revocations: logout, one session ended by its user, logout everywhere, a password change.
    let out = text(&app.login_ok("alice").await, "refresh_token");
    assert_eq!(app.logout(&out).await.status(), StatusCode::NO_CONTENT);
    let mine = app.login_ok("alice").await;
    let access = text(&mine, "access_token");
    let sid = claims_of_sid(&access);
    let ended = app
        .client
        .delete(app.url(&format!("/auth/sessions/{sid}")))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let a = app.login_ok("alice").await;
    app.login_ok("alice").await;
    assert_eq!(
        bearer_post(
            &app,
            "/auth/logout-all",
            &text(&a, "access_token"),
            &json!({})
        )
        .await,
        StatusCode::NO_CONTENT
    );
    let b = app.login_ok("alice").await;
    app.login_ok("alice").await;
    assert_eq!(
        bearer_post(
            &app,
            "/auth/password",
            &text(&b, "access_token"),
            &json!({"current_password": PASSWORD, "new_password": "a brand new password"}),
        )
        .await,
        StatusCode::NO_CONTENT
    );

    let scraped = scrape(&app).await;
    assert_eq!(
        refresh_outcome(&scraped, "reuse_detected", "after_grace"),
        1.0
    );
    assert_eq!(refresh_outcome(&scraped, "expired_idle", ""), 1.0);
    assert_eq!(refresh_outcome(&scraped, "expired_absolute", ""), 1.0);
    assert_eq!(revoked(&scraped, "reuse"), 2.0);
    assert_eq!(revoked(&scraped, "logout"), 1.0);
    assert_eq!(revoked(&scraped, "revocation"), 1.0);
    // Expired sessions not yet swept may be among those logout-all ends.
    assert!(revoked(&scraped, "logout_all") >= 2.0);
    assert_eq!(revoked(&scraped, "password"), 2.0);
}

fn claims_of_sid(access: &str) -> String {
    crate::helpers::claims_of(access)["sid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn requests_store_calls_hashing_and_the_signing_schedule_are_exposed() {
    let secret_hash = hash(SERVICE_SECRET).await;
    let app = spawn_app_with(Backend::Redis, move |c| {
        c.text.push_str(&format!(
            "\n[[clients]]\nid = \"reports\"\ntype = \"confidential\"\nsecret_hash = \"{secret_hash}\"\n\
             grants = [\"client_credentials\"]\nscopes = [\"reports:read\"]\n"
        ));
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    let tokens = app.login_ok("alice").await;
    assert_eq!(
        app.refresh(&text(&tokens, "refresh_token")).await.status(),
        StatusCode::OK
    );
    let service = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth("reports", Some(SERVICE_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(service.status(), StatusCode::OK);
    assert_eq!(
        app.get("/no/such/path").await.status(),
        StatusCode::NOT_FOUND
    );

    let scraped = scrape(&app).await;
    for (series, at_least) in [
        (
            "latchkey_http_requests_total{route=\"/auth/login\",status=\"200\"}",
            1.0,
        ),
        (
            "latchkey_http_requests_total{route=\"/auth/refresh\",status=\"200\"}",
            1.0,
        ),
        (
            "latchkey_http_requests_total{route=\"/oauth/token\",status=\"200\"}",
            1.0,
        ),
        (
            "latchkey_http_requests_total{route=\"unmatched\",status=\"404\"}",
            1.0,
        ),
        (
            "latchkey_http_request_duration_seconds_count{route=\"/auth/refresh\"}",
            1.0,
        ),
        (
            "latchkey_tokens_issued_total{grant=\"client_credentials\",client=\"reports\"}",
            1.0,
        ),
        (
            "latchkey_store_call_duration_seconds_count{operation=\"rotate\"}",
            1.0,
        ),
        (
            "latchkey_store_call_duration_seconds_count{operation=\"create_session\"}",
            1.0,
        ),
        ("latchkey_password_hash_wait_seconds_count", 2.0),
        (
            "latchkey_signing_key_info{kid=\"test-es\",alg=\"ES256\"}",
            1.0,
        ),
    ] {
        assert!(
            sample(&scraped, series) >= at_least,
            "{series} below {at_least} in:\n{scraped}"
        );
    }
    assert!(scraped.contains("\nlatchkey_password_hash_queue_depth 0\n"));
    // The test key signs until 2100; the schedule ends with it.
    let remaining = sample(&scraped, "latchkey_signing_key_remaining_seconds");
    assert!(remaining > 70.0 * 365.0 * 86_400.0, "{remaining}");
    assert_eq!(
        sample(&scraped, "latchkey_signing_schedule_remaining_seconds"),
        remaining
    );
    // The store failed nothing yet; when Redis stops answering, the errors are counted.
    assert_eq!(
        sample(
            &scraped,
            "latchkey_store_errors_total{operation=\"rotate\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn store_errors_are_counted_per_operation() {
    let mut app = spawn_app_with(Backend::Redis, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let token = text(&app.login_ok("alice").await, "refresh_token");
    app.redis.as_mut().unwrap().kill();
    assert_eq!(
        app.refresh(&token).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let scraped = scrape(&app).await;
    assert_eq!(
        sample(
            &scraped,
            "latchkey_store_errors_total{operation=\"rotate\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn a_wrong_password_for_a_disabled_account_counts_as_any_wrong_password() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    let dora = app.add_user("dora", PASSWORD).await;
    app.store
        .set_disabled(
            &dora.id,
            true,
            &crate::helpers::note(latchkey::store::RevocationReason::UserDisabled),
        )
        .await
        .unwrap();
    let counted = async |username: &str, password: &str| {
        let before = scrape(&app).await;
        let refused = app.login(username, password).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let after = scrape(&app).await;
        ["bad_credentials", "disabled"].map(|o| logins(&after, o) - logins(&before, o))
    };
    let unknown = counted("nobody", "a wrong guess").await;
    let disabled_wrong = counted("dora", "a wrong guess").await;
    assert_eq!(unknown, [1.0, 0.0]);
    assert_eq!(disabled_wrong, unknown);
    // Only the right password tells (the owner, or whoever already holds it).
    assert_eq!(counted("dora", PASSWORD).await, [0.0, 1.0]);
}

#[tokio::test]
async fn metrics_are_not_on_the_public_listener_unless_asked_for() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.set("metrics", "on_main_listener = false");
    })
    .await;
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    assert!(app.metrics_address.is_none());
}

#[tokio::test]
async fn metrics_on_their_own_listener_leave_the_public_port() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.set("metrics", "listen = \"127.0.0.1:0\"");
        c.set("metrics", "on_main_listener = false");
    })
    .await;
    let own = app.metrics_address.clone().expect("a metrics listener");
    assert_ne!(own, app.address);
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    let scraped = scrape(&app).await;
    assert!(scraped.contains("latchkey_signing_key_info{kid=\"test-es\",alg=\"ES256\"} 1"));
    // Only /metrics is there.
    let other = app
        .client
        .get(format!("{own}/auth/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}
