//! SIGTERM: not ready at once, requests in flight finish, new connections are refused, exit 0.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, ServeProcess, base_config, latchkey, run_with_stdin};

fn fresh_client() -> reqwest::Client {
    // No connection reuse: every request is a new connection, as a new client's would be.
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn login(address: &str) -> Result<reqwest::Response, reqwest::Error> {
    fresh_client()
        .post(format!("{address}/auth/login"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(
        dir.path(),
        &format!("sqlite://{}", dir.path().join("latchkey.db").display()),
    );
    // A login costs long enough (an expensive hash) to be in flight when the listener closes.
    config.set("passwords", "memory_kib = 131072");
    config.set("passwords", "iterations = 4");
    config
        .text
        .push_str("\n[shutdown]\ndelay = \"1500ms\"\ndrain_timeout = \"20s\"\n");
    let config_path = dir.path().join("latchkey.toml");
    std::fs::write(&config_path, &config.text).unwrap();
    let added = run_with_stdin(latchkey(&["users", "add", "alice"], &config_path), PASSWORD);
    assert!(added.status.success());
    let mut server = ServeProcess::start(&config_path).await;
    let address = server.address.clone();

    let early = tokio::spawn({
        let address = address.clone();
        async move { login(&address).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let term = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Not ready at once, while still serving.
    let ready = fresh_client()
        .get(format!("{address}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let reason: Value = ready.json().await.unwrap();
    assert_eq!(reason["reason"], "shutting down");

    // A request that starts just before the listener closes, and finishes after.
    tokio::time::sleep(Duration::from_millis(1_300).saturating_sub(term.elapsed())).await;
    let late = tokio::spawn({
        let address = address.clone();
        async move {
            let response = login(&address).await;
            (response, term.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(1_700).saturating_sub(term.elapsed())).await;
    assert!(
        login(&address).await.is_err(),
        "a new connection was accepted after the listener closed"
    );
    let (late, finished) = late.await.unwrap();
    assert!(
        finished > Duration::from_millis(1_500),
        "the late login finished before the listener closed ({finished:?}): raise its cost"
    );
    for response in [early.await.unwrap(), late] {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let tokens: Value = response.json().await.unwrap();
        assert!(tokens["refresh_token"].is_string());
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "latchkey did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
}
