//! Several instances on one Redis, requests spread round-robin: one session seen alike by all,
//! and one throttle for all.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, RedisServer, ServeProcess, base_config, hash, latchkey, run_with_stdin, text,
};

const SERVICE_SECRET: &str = "service-secret-0123456789abcdef";

struct Instances {
    servers: Vec<ServeProcess>,
    client: reqwest::Client,
    _redis: RedisServer,
    _dir: tempfile::TempDir,
}

impl Instances {
    async fn start(n: usize) -> Instances {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let mut config = base_config(dir.path(), &redis.url());
        config.text.push_str(&format!(
            "\n[[clients]]\nid = \"svc\"\ntype = \"confidential\"\nsecret_hash = \"{}\"\n\
             grants = [\"client_credentials\"]\n",
            hash(SERVICE_SECRET).await
        ));
        let path = dir.path().join("latchkey.toml");
        std::fs::write(&path, &config.text).unwrap();
        let added = run_with_stdin(latchkey(&["users", "add", "alice"], &path), PASSWORD);
        assert!(added.status.success());
        let mut servers = Vec::new();
        for _ in 0..n {
            servers.push(ServeProcess::start(&path).await);
        }
        Instances {
            servers,
            client: reqwest::Client::new(),
            _redis: redis,
            _dir: dir,
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("{}{path}", self.servers[i % self.servers.len()].address)
    }

    async fn post(&self, i: usize, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(i, path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_sessions_reuse_detection_logout_and_the_login_throttle() {
    let all = Instances::start(3).await;

    // Log in on the first, refresh on the second, replay the consumed token on the third after
    // its successor was used: reuse, detected wherever it lands.
    let login: Value = all
        .post(
            0,
            "/auth/login",
            json!({"username": "alice", "password": PASSWORD}),
        )
        .await
        .json()
        .await
        .unwrap();
    let first = text(&login, "refresh_token");
    let second: Value = all
        .post(1, "/auth/refresh", json!({"refresh_token": first}))
        .await
        .json()
        .await
        .unwrap();
    let third: Value = all
        .post(
            2,
            "/auth/refresh",
            json!({"refresh_token": second["refresh_token"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(third["refresh_token"].is_string());
    let reused = all
        .post(2, "/auth/refresh", json!({"refresh_token": first}))
        .await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    // The whole session is gone on every instance.
    for i in 0..3 {
        let r = all
            .post(
                i,
                "/auth/refresh",
                json!({"refresh_token": third["refresh_token"]}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "instance {i}");
    }

    // Logout on one is seen by all.
    let session: Value = all
        .post(
            1,
            "/auth/login",
            json!({"username": "alice", "password": PASSWORD}),
        )
        .await
        .json()
        .await
        .unwrap();
    let access = text(&session, "access_token");
    assert_eq!(
        all.post(
            0,
            "/auth/logout",
            json!({"refresh_token": session["refresh_token"]})
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    for i in 0..3 {
        let userinfo = all
            .client
            .get(all.url(i, "/auth/userinfo"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(userinfo.status(), StatusCode::UNAUTHORIZED, "instance {i}");
    }

    // One login throttle for all: 60 attempts per IP and minute (2 were made above), spread
    // round-robin; the 61st is refused wherever it lands.
    for i in 2..60 {
        let r = all
            .post(
                i,
                "/auth/login",
                json!({"username": format!("nobody{i}"), "password": "x"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {}", i + 1);
    }
    for i in 0..3 {
        let r = all
            .post(
                i,
                "/auth/login",
                json!({"username": "alice", "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "instance {i}");
        assert!(r.headers().contains_key("retry-after"));
    }

    // Client authentication failures count in Redis too: five wrong secrets spread over the
    // instances close the (client, IP) pair where the fifth landed at once, and every other
    // instance at its next failure there; then even the right secret waits for the window.
    let token = |i: usize, secret: &'static str| {
        all.client
            .post(all.url(i, "/oauth/token"))
            .basic_auth("svc", Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    assert_eq!(
        token(0, SERVICE_SECRET).await.unwrap().status(),
        StatusCode::OK
    );
    for i in 0..5 {
        assert_eq!(
            token(i, "wrong").await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "failure {}",
            i + 1
        );
    }
    assert_eq!(
        token(1, SERVICE_SECRET).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    for i in [0, 2] {
        assert_eq!(
            token(i, "wrong").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            token(i, SERVICE_SECRET).await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS,
            "instance {i}"
        );
    }
}
