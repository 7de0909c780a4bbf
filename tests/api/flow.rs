//! The whole login → use → expire → refresh → logout flow over HTTP.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{Backend, PASSWORD, assert_error, spawn_app_with, text};

on_every_backend!(
    login_use_expire_refresh_logout,
    unknown_user_and_wrong_password_answer_identically,
    logout_is_idempotent,
    disabled_user_cannot_log_in,
);

async fn login_use_expire_refresh_logout(backend: Backend) {
    // Arrange
    let app = spawn_app_with(backend, |_| {}).await;
    let user = app.add_user("alice", PASSWORD).await;

    // Login
    let response = app.login("alice", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: serde_json::Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert_eq!(tokens["refresh_expires_in"], 7 * 86400);
    // Nothing asked: the first-party client's token may use the account API.
    assert_eq!(tokens["scope"], "account");
    let access = text(&tokens, "access_token");
    let refresh = text(&tokens, "refresh_token");
    assert!(refresh.starts_with("lk_rt_"));

    // Use
    let info = app.userinfo(&access).await;
    assert_eq!(info.status(), StatusCode::OK);
    let info: serde_json::Value = info.json().await.unwrap();
    assert_eq!(info["sub"], user.id.as_str());
    assert_eq!(info["username"], "alice");

    // Expire: 15 minutes plus the 30 s leeway
    app.clock.advance(Duration::from_secs(15 * 60 + 31));
    let expired = app.userinfo(&access).await;
    assert!(
        expired.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    assert_error(expired, StatusCode::UNAUTHORIZED, "invalid_token").await;

    // Refresh
    let response = app.refresh(&refresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let renewed: serde_json::Value = response.json().await.unwrap();
    let access2 = text(&renewed, "access_token");
    let refresh2 = text(&renewed, "refresh_token");
    assert_ne!(refresh2, refresh);
    assert_eq!(app.userinfo(&access2).await.status(), StatusCode::OK);

    // Logout: the family is gone, and with it the access token's standing at the issuer
    assert_eq!(app.logout(&refresh2).await.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.refresh(&refresh2).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    )
    .await;
    assert_error(
        app.userinfo(&access2).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

async fn unknown_user_and_wrong_password_answer_identically(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.add_user("bob", PASSWORD).await;

    let wrong = app.login("bob", "not the password").await;
    let unknown = app.login("nobody", PASSWORD).await;

    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let wrong: serde_json::Value = wrong.json().await.unwrap();
    let unknown: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"], "invalid_grant");
}

async fn logout_is_idempotent(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.add_user("carol", PASSWORD).await;
    let refresh = text(&app.login_ok("carol").await, "refresh_token");

    assert_eq!(app.logout(&refresh).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.logout(&refresh).await.status(), StatusCode::NO_CONTENT);
    // Unknown and malformed tokens: 204 too (RFC 7009 §2.2).
    let unknown = latchkey::tokens::RefreshToken::generate(uuid::Uuid::new_v4()).unwrap();
    assert_eq!(
        app.logout(unknown.as_str()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.logout("garbage").await.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.refresh(&refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    )
    .await;
}

async fn disabled_user_cannot_log_in(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let user = app.add_user("dave", PASSWORD).await;
    app.store
        .set_disabled(
            &user.id,
            true,
            &crate::helpers::note(latchkey::store::RevocationReason::UserDisabled),
        )
        .await
        .unwrap();

    assert_error(
        app.login("dave", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn repeated_failures_and_floods_are_throttled_with_429() {
    let app = crate::helpers::spawn_app_with(Backend::Embedded, |c| {
        c.set("limits", "window = \"1m\"");
        c.set("limits", "login_attempts_per_ip = 8");
        c.set("limits", "failed_logins_per_user = 3");
    })
    .await;
    app.add_user("alice", PASSWORD).await;

    // Three wrong passwords lock alice out for the rest of the window, right password or not.
    for _ in 0..3 {
        assert_eq!(
            app.login("alice", "guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let throttled = app.login("alice", PASSWORD).await;
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_error(throttled, StatusCode::TOO_MANY_REQUESTS, "slow_down").await;

    // The window passes: alice logs in.
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(app.login("alice", PASSWORD).await.status(), StatusCode::OK);

    // One client spraying usernames hits the per-IP limit (8 per window).
    for i in 0..7 {
        assert_eq!(
            app.login(&format!("nobody{i}"), "x").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_error(
        app.login("nobody-else", "x").await,
        StatusCode::TOO_MANY_REQUESTS,
        "slow_down",
    )
    .await;
}

#[tokio::test]
async fn a_client_id_given_at_login_is_recorded_in_the_session_and_the_token() {
    let app = crate::helpers::spawn_app_with(Backend::Embedded, |c| {
        c.text.push_str(
            "\n[[clients]]\nid = \"web\"\ntype = \"public\"\ngrants = [\"refresh_token\"]\n",
        );
    })
    .await;
    app.add_user("alice", PASSWORD).await;

    let response = app
        .post_json(
            "/auth/login",
            &serde_json::json!({"username": "alice", "password": PASSWORD, "client_id": "web"}),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let tokens: serde_json::Value = response.json().await.unwrap();
    let claims = crate::helpers::claims_of(&text(&tokens, "access_token"));
    assert_eq!(claims["client_id"], "web");
    let sid = uuid::Uuid::parse_str(claims["sid"].as_str().unwrap()).unwrap();
    let session = app
        .store
        .session(sid, app.clock.now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.client_id, "web");
    // The refreshed token keeps it.
    let renewed: serde_json::Value = app
        .refresh(&text(&tokens, "refresh_token"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::claims_of(&text(&renewed, "access_token"))["client_id"],
        "web"
    );
}

#[tokio::test]
async fn a_locked_username_still_logs_in_from_where_its_owner_is() {
    let app = crate::helpers::spawn_app_with(Backend::Embedded, |c| {
        c.set("limits", "window = \"1m\"");
        c.set("limits", "failed_logins_per_user_ip = 2");
        c.set("limits", "failed_logins_per_user = 4");
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    // Each client speaks from its own loopback address; the server sees distinct IPs.
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()
            .unwrap()
    };
    let login = |client: reqwest::Client, password: &'static str| {
        let url = app.url("/auth/login");
        async move {
            client
                .post(url)
                .json(&serde_json::json!({"username": "alice", "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    let laptop = from(2);
    assert_eq!(
        login(laptop.clone(), PASSWORD).await.status(),
        StatusCode::OK
    );

    // An attacker guesses from two addresses, two each: the username is now locked.
    for ip in [3, 4] {
        for _ in 0..2 {
            assert_eq!(
                login(from(ip), "guess").await.status(),
                StatusCode::UNAUTHORIZED
            );
        }
    }
    // Each attacker address is held by the (username, IP) limit…
    assert_error(
        login(from(3), "guess").await,
        StatusCode::TOO_MANY_REQUESTS,
        "slow_down",
    )
    .await;
    // …and from an address alice has no session at, even the right password waits.
    assert_error(
        login(from(5), PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "slow_down",
    )
    .await;
    // From her laptop, where her session is, alice is not locked out.
    assert_eq!(login(laptop, PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_stored_hash_that_cannot_be_checked_is_503_never_a_wrong_password() {
    let app = crate::helpers::spawn_app().await;
    // A record asking for more than the 1 GiB bound (corrupt, or planted).
    let user = latchkey::store::User {
        id: uuid::Uuid::new_v4().to_string(),
        username: "mallory".into(),
        password_hash: "$argon2id$v=19$m=2000000,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA".into(),
        disabled: false,
        created_at: 0,
        epoch: 0,
        scopes: Vec::new(),
        email: None,
        email_verified: false,
        name: None,
        preferred_username: None,
    };
    app.store.create_user(&user).await.unwrap();

    let response = app.login("mallory", "anything").await;

    assert_eq!(response.headers()["retry-after"], "1");
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    )
    .await;
}

#[tokio::test]
async fn an_old_cost_hash_is_upgraded_at_login_without_ending_sessions() {
    // The config raised the cost to 128 KiB; alice's hash is from before, at 64 KiB.
    let app = crate::helpers::spawn_app_with(Backend::Embedded, |c| {
        c.set("passwords", "memory_kib = 128")
    })
    .await;
    let old_cost =
        latchkey::credentials::PasswordHasher::new(&latchkey::config::PasswordSettings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 1,
        })
        .unwrap();
    let user = latchkey::store::User {
        id: uuid::Uuid::new_v4().to_string(),
        username: "alice".into(),
        password_hash: old_cost
            .hash(&latchkey::credentials::Password::new(PASSWORD.into()))
            .await
            .unwrap(),
        disabled: false,
        created_at: 0,
        epoch: 0,
        scopes: Vec::new(),
        email: None,
        email_verified: false,
        name: None,
        preferred_username: None,
    };
    app.store.create_user(&user).await.unwrap();

    let session = app.login_ok("alice").await;

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stored = app.store.user_by_id(&user.id).await.unwrap().unwrap();
        if stored.password_hash.contains("$m=128,") {
            assert_eq!(stored.epoch, 0, "an upgrade is no credential change");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hash was not upgraded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same password logs in against the new hash, and the session from before lives on.
    assert_eq!(app.login("alice", PASSWORD).await.status(), StatusCode::OK);
    assert_eq!(
        app.refresh(&text(&session, "refresh_token")).await.status(),
        StatusCode::OK
    );
}

/// `tokens.access_ttl_jitter`: over many logins at one instant (the clock is the test's), each
/// access token lives between 90% and 100% of `access_ttl`, spread across that window, and
/// `expires_in` says the life it has. Off, every token lives exactly `access_ttl`.
#[tokio::test]
async fn access_token_lifetimes_spread_with_jitter() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.set("tokens", "access_ttl_jitter = 0.1");
        c.set("limits", "login_attempts_per_ip = 100000");
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    let mut lives = Vec::new();
    for _ in 0..200 {
        let tokens = app.login_ok("alice").await;
        let claims = crate::helpers::claims_of(&text(&tokens, "access_token"));
        let life = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        assert_eq!(tokens["expires_in"].as_i64(), Some(life));
        lives.push(life);
    }
    lives.sort_unstable();
    let (min, max) = (lives[0], lives[lives.len() - 1]);
    let mean = lives.iter().sum::<i64>() as f64 / lives.len() as f64;
    // 15 minutes less up to 90 s, uniformly: the mean near 855 s (its standard error is ~2 s).
    assert!(min >= 810 && max <= 900, "{min}..{max}");
    assert!(
        min < 825 && max > 885,
        "spread over the window: {min}..{max}"
    );
    assert!((845.0..865.0).contains(&mean), "mean {mean}");

    let plain = spawn_app_with(Backend::Embedded, |_| {}).await;
    plain.add_user("alice", PASSWORD).await;
    for _ in 0..5 {
        let claims =
            crate::helpers::claims_of(&text(&plain.login_ok("alice").await, "access_token"));
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            900
        );
    }
}
