//! Rotation and reuse (docs/tokens.md): one chain per family, the grace window, theft detection,
//! idle and absolute lifetimes, and racing presentations.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, PASSWORD, assert_error, spawn_app_with, text};

on_every_backend!(
    every_refresh_rotates,
    reuse_within_grace_returns_the_same_successor,
    reuse_after_grace_revokes_the_whole_family,
    fifty_concurrent_refreshes_yield_one_successor,
    idle_token_dies,
    family_never_outlives_refresh_ttl,
    other_families_survive_a_reuse,
);

async fn every_refresh_rotates(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let mut token = text(&app.login_ok("alice").await, "refresh_token");
    let mut seen = HashSet::from([token.clone()]);

    for _ in 0..5 {
        let response = app.refresh(&token).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        token = text(&body, "refresh_token");
        assert!(
            seen.insert(token.clone()),
            "a refresh token was issued twice"
        );
    }
}

async fn reuse_within_grace_returns_the_same_successor(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let first = text(&app.login_ok("alice").await, "refresh_token");

    let a: Value = app.refresh(&first).await.json().await.unwrap();
    app.clock.advance(Duration::from_secs(9));
    let b = app.refresh(&first).await;

    assert_eq!(b.status(), StatusCode::OK);
    let b: Value = b.json().await.unwrap();
    assert_eq!(
        a["refresh_token"], b["refresh_token"],
        "the chain must not branch"
    );
    assert_ne!(a["access_token"], b["access_token"]);
    // The successor is live and rotates normally.
    let next = app.refresh(&text(&b, "refresh_token")).await;
    assert_eq!(next.status(), StatusCode::OK);
}

async fn reuse_after_grace_revokes_the_whole_family(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let login = app.login_ok("alice").await;
    let first = text(&login, "refresh_token");
    let second: Value = app.refresh(&first).await.json().await.unwrap();
    let third: Value = app
        .refresh(&text(&second, "refresh_token"))
        .await
        .json()
        .await
        .unwrap();

    app.clock.advance(Duration::from_secs(11));
    assert_error(
        app.refresh(&first).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    )
    .await;

    // Every token of the family is dead, the live one included, and so is the session.
    assert_error(
        app.refresh(&text(&third, "refresh_token")).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    )
    .await;
    assert_error(
        app.userinfo(&text(&third, "access_token")).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

async fn fifty_concurrent_refreshes_yield_one_successor(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let token = text(&app.login_ok("alice").await, "refresh_token");

    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (client, url, token) = (app.client.clone(), app.url("/auth/refresh"), token.clone());
        racers.spawn(async move {
            let response = client
                .post(url)
                .json(&serde_json::json!({"refresh_token": token}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            text(&response.json::<Value>().await.unwrap(), "refresh_token")
        });
    }
    let successors: HashSet<String> = racers.join_all().await.into_iter().collect();

    assert_eq!(successors.len(), 1, "racing refreshes branched the family");
    let successor = successors.into_iter().next().unwrap();
    assert_eq!(app.refresh(&successor).await.status(), StatusCode::OK);
    let owner = session_owner(&app, &successor).await;
    let sessions = app
        .store
        .sessions_of(&owner, app.clock.now_ms())
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
}

async fn session_owner(app: &crate::helpers::TestApp, token: &str) -> String {
    let presented = latchkey::tokens::RefreshToken::parse(token).unwrap();
    app.store
        .session(presented.session_id, app.clock.now_ms())
        .await
        .unwrap()
        .unwrap()
        .user_id
}

async fn idle_token_dies(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.set("tokens", "refresh_idle_ttl = \"1h\"")).await;
    app.add_user("alice", PASSWORD).await;
    let token = text(&app.login_ok("alice").await, "refresh_token");

    app.clock.advance(Duration::from_secs(3600));

    assert_error(
        app.refresh(&token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    )
    .await;
}

async fn family_never_outlives_refresh_ttl(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.set("tokens", "refresh_idle_ttl = \"1h\"");
        c.set("tokens", "refresh_ttl = \"3h\"");
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    let mut token = text(&app.login_ok("alice").await, "refresh_token");

    // Used every 50 minutes, the chain lives until the family's absolute end…
    for step in 1..=3 {
        app.clock.advance(Duration::from_secs(50 * 60));
        let response = app.refresh(&token).await;
        assert_eq!(response.status(), StatusCode::OK, "refresh {step}");
        let body: Value = response.json().await.unwrap();
        let left = body["refresh_expires_in"].as_u64().unwrap();
        assert!(
            left <= 3 * 3600 - step * 50 * 60,
            "refresh_expires_in {left} outlives the family"
        );
        token = text(&body, "refresh_token");
    }
    // …and not a moment longer (3h = 180 min; now at 200).
    app.clock.advance(Duration::from_secs(30 * 60));
    assert_error(
        app.refresh(&token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    )
    .await;
}

async fn other_families_survive_a_reuse(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let laptop = text(&app.login_ok("alice").await, "refresh_token");
    let phone = text(&app.login_ok("alice").await, "refresh_token");

    app.refresh(&laptop).await;
    app.clock.advance(Duration::from_secs(11));
    assert_eq!(
        app.refresh(&laptop).await.status(),
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(app.refresh(&phone).await.status(), StatusCode::OK);
}
