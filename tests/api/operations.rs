//! Operating the issuer: security headers and request ids on every answer, bounded work (the
//! hashing queue, the per-IP token limit), store faults that never turn into a 5xx other than
//! 503, and logs that never carry a secret.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, PASSWORD, ServeProcess, base_config, hash, latchkey, run_with_stdin, spawn_app_with,
    text,
};

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_a_request_id() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    let mut generated = std::collections::HashSet::new();
    for (method, path) in [
        ("GET", "/healthz"),
        ("GET", "/.well-known/jwks.json"),
        ("GET", "/no/such/path"),
        ("POST", "/auth/login"),
        ("POST", "/oauth/token"),
        ("GET", "/auth/userinfo"),
        ("GET", "/metrics"),
    ] {
        let request = match method {
            "GET" => app.client.get(app.url(path)),
            _ => app.client.post(app.url(path)),
        };
        let response = request.send().await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
        let id = headers["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 32, "{path}: a generated id, {id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert!(
            generated.insert(id.to_owned()),
            "{path}: {id} was given before"
        );
    }

    // A plain id from the caller (a proxy's) is kept; anything else is replaced.
    let kept = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "lb-7f3a.42:1")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "lb-7f3a.42:1");
    for hostile in ["a b", "x\"y", &"a".repeat(65), "<script>"] {
        let replaced = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", hostile)
            .send()
            .await
            .unwrap();
        let id = replaced.headers()["x-request-id"].to_str().unwrap();
        assert!(id != hostile && id.len() == 32, "{hostile:?} -> {id}");
    }
}

#[tokio::test]
async fn refused_token_requests_close_the_address_with_429_slow_down() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.set("limits", "failed_token_requests_per_ip = 3");
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    let good = text(&app.login_ok("alice").await, "refresh_token");
    // Successful refreshes are not limited.
    let mut token = good;
    for _ in 0..10 {
        let next: Value = app.refresh(&token).await.json().await.unwrap();
        token = text(&next, "refresh_token");
    }
    for _ in 0..3 {
        assert_eq!(
            app.refresh("guessed-token").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    for refused in [
        app.refresh(&token).await,
        app.client
            .post(app.url("/oauth/token"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", &token)])
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "slow_down");
    }
    // Nothing was consumed while refused: the token refreshes once the window has passed.
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(app.refresh(&token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_login_flood_beyond_the_hashing_queue_gets_503_not_memory() {
    // A real cost, one hashing thread: 32 checks may wait, the rest are refused at once.
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.set("passwords", "memory_kib = 8192");
        c.set("passwords", "iterations = 2");
        c.set("passwords", "max_concurrent = 1");
        c.set("limits", "login_attempts_per_ip = 100000");
        c.set("limits", "failed_logins_per_user_ip = 100000");
        c.set("limits", "failed_logins_per_user = 100000");
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    let app = Arc::new(app);
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..120 {
        let app = app.clone();
        flood.spawn(async move {
            let response = app.login(&format!("user{i}"), "wrong password").await;
            let status = response.status();
            let retry_after = response.headers().get("retry-after").cloned();
            let body: Value = response.json().await.unwrap();
            (
                status,
                retry_after,
                body["error"].as_str().unwrap().to_owned(),
            )
        });
    }
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for (status, retry_after, error) in flood.join_all().await {
        *counts.entry(status.as_u16()).or_default() += 1;
        match status {
            StatusCode::UNAUTHORIZED => assert_eq!(error, "invalid_grant"),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(error, "temporarily_unavailable");
                assert_eq!(retry_after.unwrap(), "1");
            }
            other => panic!("a flooded login answered {other}"),
        }
    }
    assert!(
        counts.get(&503).copied().unwrap_or(0) > 0 && counts.get(&401).copied().unwrap_or(0) > 0,
        "{counts:?}"
    );
    // The queue drains and logins work again.
    assert_eq!(app.login("alice", PASSWORD).await.status(), StatusCode::OK);
}

fn only_expected_statuses(seen: &BTreeMap<u16, usize>) {
    assert!(
        seen.keys().all(|s| [200, 401, 429, 503].contains(s)),
        "unexpected statuses: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_during_a_burst_answers_only_503_and_recovers_by_itself() {
    let mut app = spawn_app_with(Backend::Redis, |c| {
        c.set("limits", "login_attempts_per_ip = 1000000");
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    let redis = app.redis.take().unwrap();
    let redis = Arc::new(std::sync::Mutex::new(redis));
    let app = Arc::new(app);

    let load = tokio::spawn({
        let app = app.clone();
        async move { crate::helpers::burst(&app, 4, Instant::now() + Duration::from_secs(6)).await }
    });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    redis.lock().unwrap().kill();
    // While Redis is down the public keys and the probes keep answering.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.get("/.well-known/jwks.json").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/.well-known/oauth-authorization-server")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    let not_ready = app.get("/readyz").await;
    assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let reason: Value = not_ready.json().await.unwrap();
    assert_eq!(reason["reason"], "store unreachable");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    redis.lock().unwrap().restart();
    let seen = load.await.unwrap();
    only_expected_statuses(&seen);
    assert!(seen.contains_key(&503), "the outage was not seen: {seen:?}");

    // Service resumed with no restart: ready, and (the restarted Redis kept nothing) a user
    // added again logs in and refreshes.
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.get("/readyz").await.status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "not ready after Redis returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = redis.lock().unwrap().url();
    let store = latchkey::store::open(&url).await.unwrap();
    let fresh = app.user_record("bob", PASSWORD).await;
    store.create_user(&fresh).await.unwrap();
    let tokens: Value = app.login("bob", PASSWORD).await.json().await.unwrap();
    assert_eq!(
        app.refresh(&text(&tokens, "refresh_token")).await.status(),
        StatusCode::OK
    );
}

/// A small tmpfs the test fills up: the embedded store's disk becomes full, then has room again.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &std::path::Path) -> SmallDisk {
        let path = dir.join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = std::process::Command::new("mount")
            // Room for SQLite's write-ahead log to reach its checkpoint (1,000 pages).
            .args(["-t", "tmpfs", "-o", "size=32m", "latchkey-test"])
            .arg(&path)
            .status()
            .expect("mount(8) is needed for the disk-full test");
        assert!(
            status.success(),
            "cannot mount a tmpfs for the disk-full test (the suite runs as root in CI)"
        );
        SmallDisk { path }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.path)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_embedded_store_answers_only_503_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path());
    let db = disk.path.join("latchkey.db");
    let mut config = base_config(dir.path(), &format!("sqlite://{}", db.display()));
    config.set("limits", "login_attempts_per_ip = 1000000");
    let app = crate::helpers::start(config.text, dir, None, latchkey::clock::Clock::system()).await;
    app.add_user("alice", PASSWORD).await;
    let app = Arc::new(app);

    let load = tokio::spawn({
        let app = app.clone();
        async move { crate::helpers::burst(&app, 4, Instant::now() + Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Fill every free byte.
    let filler = disk.path.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
    }
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    std::fs::remove_file(&filler).unwrap();
    let seen = load.await.unwrap();
    only_expected_statuses(&seen);
    assert!(
        seen.contains_key(&503),
        "the full disk was not seen: {seen:?}"
    );
    // No restart: logins and refreshes work again.
    let tokens = app.login_ok("alice").await;
    assert_eq!(
        app.refresh(&text(&tokens, "refresh_token")).await.status(),
        StatusCode::OK
    );
    drop(disk);
}

/// Every secret the flow below uses, and the signing key's private material, must be absent
/// from the logs at `trace`, in both formats.
#[tokio::test]
async fn no_secret_reaches_the_logs_at_trace_level() {
    for format in ["json", "text"] {
        logs_hold_no_secret(format).await;
    }
}

async fn logs_hold_no_secret(format: &str) {
    const CLIENT_SECRET: &str = "client-secret-never-logged-0123456789";
    const NEW_PASSWORD: &str = "a new password never logged";
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(
        dir.path(),
        &format!("sqlite://{}", dir.path().join("latchkey.db").display()),
    );
    config.text.push_str(&format!(
        "\n[log]\nformat = \"{format}\"\n\n[[clients]]\nid = \"svc\"\ntype = \"confidential\"\n\
         secret_hash = \"{}\"\ngrants = [\"client_credentials\", \"password\", \"refresh_token\"]\n",
        hash(CLIENT_SECRET).await
    ));
    let config_path = dir.path().join("latchkey.toml");
    std::fs::write(&config_path, &config.text).unwrap();
    let added = run_with_stdin(latchkey(&["users", "add", "alice"], &config_path), PASSWORD);
    assert!(added.status.success());
    let log = dir.path().join("serve.log");
    let server = ServeProcess::start_logging(&config_path, "trace", Some(&log)).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.address);

    let mut secrets = vec![
        PASSWORD.to_owned(),
        NEW_PASSWORD.to_owned(),
        CLIENT_SECRET.to_owned(),
    ];
    let login: Value = client
        .post(url("/auth/login"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = |token: Value| {
        let client = client.clone();
        let url = url("/auth/refresh");
        async move {
            client
                .post(url)
                .json(&json!({"refresh_token": token}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let refreshed = refresh(login["refresh_token"].clone()).await;
    // A replay, then reuse (the successor consumed first), so the security events are logged.
    refresh(login["refresh_token"].clone()).await;
    let latest = refresh(refreshed["refresh_token"].clone()).await;
    refresh(login["refresh_token"].clone()).await;
    let grant: Value = client
        .post(url("/oauth/token"))
        .basic_auth("svc", Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let service: Value = client
        .post(url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (token, hint) in [
        (text(&grant, "access_token"), "access_token"),
        (text(&grant, "refresh_token"), "refresh_token"),
    ] {
        client
            .post(url("/oauth/introspect"))
            .basic_auth("svc", Some(CLIENT_SECRET))
            .form(&[("token", token.as_str()), ("token_type_hint", hint)])
            .send()
            .await
            .unwrap();
    }
    // The refreshed session is gone (reuse); the password grant's session is alive.
    let access = text(&grant, "access_token");
    client
        .get(url("/auth/userinfo"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    let changed = client
        .post(url("/auth/password"))
        .bearer_auth(&access)
        .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    // A wrong password, a wrong client secret.
    client
        .post(url("/auth/login"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    client
        .post(url("/oauth/token"))
        .basic_auth("svc", Some(format!("{CLIENT_SECRET}x")))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    for v in [&login, &refreshed, &latest, &grant, &service] {
        for field in ["access_token", "refresh_token"] {
            if let Some(t) = v[field].as_str() {
                secrets.push(t.to_owned());
                // Every part of a token, each on its own, too: the signature, the random part.
                secrets.extend(
                    t.split(['.', '_'])
                        .filter(|part| part.len() >= 16)
                        .map(str::to_owned),
                );
            }
        }
    }
    drop(server);

    let pem = std::fs::read_to_string(dir.path().join("test-es.pem")).unwrap();
    secrets.extend(
        pem.lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
            .map(str::to_owned),
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("refresh.reuse_detected") && logged.contains("login.succeeded"),
        "the flow did not run or was not logged ({format}):\n{logged}"
    );
    assert!(
        logged.contains("DEBUG") || logged.contains("TRACE"),
        "debug and trace were not on:\n{logged}"
    );
    for secret in &secrets {
        // Access tokens' payloads are public claims; their header part alone is not a secret.
        assert!(
            !logged.contains(secret.as_str()),
            "{format} logs contain a secret ({} chars)",
            secret.len()
        );
    }
    if format == "json" {
        for line in logged.lines().filter(|l| l.starts_with('{')) {
            serde_json::from_str::<Value>(line).unwrap();
        }
    }
}

#[tokio::test]
async fn oversized_heads_are_refused_before_any_work() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    let huge = app
        .client
        .get(app.url("/healthz"))
        .header("x-padding", "a".repeat(200 * 1024))
        .send()
        .await;
    // Refused with 431, or the connection closed on it: never served, never a 5xx.
    if let Ok(response) = huge {
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
    let mut many = app.client.get(app.url("/healthz"));
    for i in 0..120 {
        many = many.header(format!("x-h{i}"), "v");
    }
    if let Ok(response) = many.send().await {
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
    // The server is unharmed.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}
