//! Races an adversary (or bad luck) can arrange: logins in flight while an operator disables the
//! account or changes its password, and a store that stalls longer than the grace window while
//! clients refresh.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, latchkey, run_with_stdin, spawn_app_with, text};

on_every_backend!(
    no_login_racing_users_disable_keeps_a_session,
    no_login_racing_users_passwd_keeps_a_session,
);

/// Login loops (bounded in count and time) that collect every token pair they were given, until
/// `stop` is set.
fn login_loops(app: &TestApp, stop: &Arc<AtomicBool>) -> tokio::task::JoinSet<Vec<Value>> {
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, url, stop) = (app.client.clone(), app.url("/auth/login"), stop.clone());
        loops.spawn(async move {
            let mut issued = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            for _ in 0..5_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let response = client
                    .post(&url)
                    .json(&json!({"username": "victim", "password": PASSWORD}))
                    .send()
                    .await
                    .unwrap();
                if response.status() == StatusCode::OK {
                    issued.push(response.json::<Value>().await.unwrap());
                }
            }
            issued
        });
    }
    loops
}

/// Runs `latchkey users ARGS victim` against the app's config while logins race it, then checks
/// that no token pair issued at any time refreshes, and no access token passes userinfo.
async fn race_a_credential_change(backend: Backend, command: &str, stdin: &str) {
    let app = spawn_app_with(backend, |c| {
        c.set("limits", "login_attempts_per_ip = 1000000");
        c.set("limits", "failed_logins_per_user = 1000000");
    })
    .await;
    app.add_user("victim", PASSWORD).await;
    let stop = Arc::new(AtomicBool::new(false));
    let loops = login_loops(&app, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let config = app.config_path.clone();
    let stdin = stdin.to_owned();
    let subcommand = command.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        run_with_stdin(latchkey(&["users", &subcommand, "victim"], &config), &stdin)
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Logins keep racing a little after the command returned, then stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let issued: Vec<Value> = loops.join_all().await.into_iter().flatten().collect();
    assert!(
        issued.len() > 5,
        "the race did not get going ({} logins)",
        issued.len()
    );

    let mut survivors = 0;
    for tokens in &issued {
        if app.refresh(&text(tokens, "refresh_token")).await.status() != StatusCode::UNAUTHORIZED {
            survivors += 1;
        }
        assert_eq!(
            app.userinfo(&text(tokens, "access_token")).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        survivors,
        0,
        "{survivors} of {} sessions survived `users {command}`",
        issued.len()
    );
}

async fn no_login_racing_users_disable_keeps_a_session(backend: Backend) {
    race_a_credential_change(backend, "disable", "").await;
}

async fn no_login_racing_users_passwd_keeps_a_session(backend: Backend) {
    race_a_credential_change(backend, "passwd", "a brand new password\n").await;
}

/// Refreshes in a loop: a 503 is retried with the same token (as a client must), a 200 moves to
/// the new token, anything else (a 401: the session was lost) fails the test. Returns the last
/// token.
async fn refresh_through_outages(app: &TestApp, token: String, until: Instant) -> String {
    let mut token = token;
    for _ in 0..2_000 {
        if Instant::now() > until {
            break;
        }
        let response = app
            .client
            .post(app.url("/auth/refresh"))
            .json(&json!({"refresh_token": token}))
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::OK => {
                token = text(&response.json::<Value>().await.unwrap(), "refresh_token");
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => {
                let body = response.text().await.unwrap_or_default();
                let metrics = app
                    .client
                    .get(app.url("/metrics"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let outcomes: Vec<&str> = metrics
                    .lines()
                    .filter(|l| {
                        l.starts_with("latchkey_refresh_outcomes")
                            || l.starts_with("latchkey_store_errors")
                    })
                    .collect();
                panic!("refresh answered {other}: {body}\n{outcomes:#?}");
            }
        }
    }
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_longer_than_the_grace_window_revokes_no_session() {
    let app = spawn_app_with(Backend::Redis, |c| c.set("tokens", "reuse_grace = \"4s\"")).await;
    app.add_user("alice", PASSWORD).await;
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(text(&app.login_ok("alice").await, "refresh_token"));
    }
    let app = Arc::new(app);
    let until = Instant::now() + Duration::from_secs(9);
    let mut loops = tokio::task::JoinSet::new();
    for token in tokens {
        let app = app.clone();
        loops.spawn(async move { refresh_through_outages(&app, token, until).await });
    }

    // Redis answers nothing for 5 s, longer than the 4 s grace window: every refresh in flight times out (503) and is retried;
    // the stalled commands run when it resumes, long after their callers gave up.
    // The stall is a pause between commands (CLIENT PAUSE), not SIGSTOP: a stopped process can be
    // frozen inside a script or between a commit and its answer, and an answer lost after the
    // commit for longer than the grace window is reuse by design (nothing tells that client
    // from a thief). This test is about commands that were queued during the stall.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut pauser = app.redis.as_ref().unwrap().connection();
    redis::cmd("CLIENT")
        .arg(&["PAUSE", "5000", "ALL"])
        .query::<()>(&mut pauser)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5000)).await;

    for token in loops.join_all().await {
        // Every session is alive: its last token refreshes.
        assert_eq!(app.refresh(&token).await.status(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_store_stall_longer_than_the_grace_window_revokes_no_session() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.set("tokens", "reuse_grace = \"2500ms\"")
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(text(&app.login_ok("alice").await, "refresh_token"));
    }
    let db = app.dir.path().join("latchkey.db");
    let app = Arc::new(app);
    let until = Instant::now() + Duration::from_secs(9);
    let mut loops = tokio::task::JoinSet::new();
    for token in tokens {
        let app = app.clone();
        loops.spawn(async move { refresh_through_outages(&app, token, until).await });
    }

    // Another process holds the write lock for 4 s: writes wait, their callers answer 503 after
    // 3 s and retry, and the waiting writes get their turn long after their callers gave up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    tokio::time::sleep(Duration::from_millis(4000)).await;
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);

    for token in loops.join_all().await {
        assert_eq!(app.refresh(&token).await.status(), StatusCode::OK);
    }
}
