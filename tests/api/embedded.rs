//! The embedded store across processes: restarts, the CLI writing while `serve` runs, and a
//! kill -9 in the middle of a burst of refreshes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, PASSWORD, ServeProcess, base_config, free_port, latchkey, run_with_stdin,
    spawn_app_with, start, text,
};

#[tokio::test]
async fn sessions_survive_a_restart_on_the_same_file() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let token = text(&app.login_ok("alice").await, "refresh_token");

    let (config, dir, redis, clock) = app.stop().await;
    let app = start(config, dir, redis, clock).await;

    let response = app.refresh(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn users_added_by_the_cli_log_in_at_once_while_serve_runs() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    let config = app.config_path.clone();

    let output = run_with_stdin(
        latchkey(&["users", "add", "bob"], &config),
        &format!("{PASSWORD}\n"),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert_eq!(app.login("bob", PASSWORD).await.status(), StatusCode::OK);
    // A second add of the same name fails with a message and a non-zero exit.
    let again = run_with_stdin(
        latchkey(&["users", "add", "bob"], &config),
        &format!("{PASSWORD}\n"),
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[tokio::test]
async fn cli_passwd_and_disable_revoke_every_session() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    let config = app.config_path.clone();
    app.add_user("carol", PASSWORD).await;
    let before = app.login_ok("carol").await;

    let output = run_with_stdin(
        latchkey(&["users", "passwd", "carol"], &config),
        "new password\n",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert_eq!(
        app.refresh(&text(&before, "refresh_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.userinfo(&text(&before, "access_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("carol", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let after = app
        .login("carol", "new password")
        .await
        .json::<Value>()
        .await
        .unwrap();

    let output = latchkey(&["users", "disable", "carol"], &config)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        app.refresh(&text(&after, "refresh_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("carol", "new password").await.status(),
        StatusCode::UNAUTHORIZED
    );

    let list = latchkey(&["users", "list"], &config).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("carol") && l.contains("disabled")),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_refresh_burst_leaves_every_family_consistent() {
    kill_9_during_a_refresh_burst("fsync").await;
}

/// `process` durability syncs at checkpoints only, yet a killed process loses nothing it
/// acknowledged: the WAL it wrote is in the OS's page cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_process_durability_loses_no_acknowledged_refresh() {
    kill_9_during_a_refresh_burst("process").await;
}

async fn kill_9_during_a_refresh_burst(durability: &str) {
    const FAMILIES: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("latchkey.db");
    let mut config = base_config(dir.path(), &format!("sqlite://{}", db.display()));
    config.set("store", &format!("durability = \"{durability}\""));
    // The replay of a rotation whose answer the kill swallowed must still be within grace.
    config.set("tokens", "reuse_grace = \"60s\"");
    let config_path = dir.path().join("latchkey.toml");
    std::fs::write(&config_path, &config.text).unwrap();

    let output = run_with_stdin(latchkey(&["users", "add", "alice"], &config_path), PASSWORD);
    assert!(output.status.success());
    let mut server = ServeProcess::start(&config_path).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut last_known = Vec::new();
    for _ in 0..FAMILIES {
        let login: Value = client
            .post(format!("{}/auth/login", server.address))
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        last_known.push(text(&login, "refresh_token"));
    }

    // Each family refreshes in a loop (bounded in count and time) until the server dies.
    let mut burst = tokio::task::JoinSet::new();
    for (i, token) in last_known.iter().cloned().enumerate() {
        let (client, url) = (client.clone(), format!("{}/auth/refresh", server.address));
        burst.spawn(async move {
            let mut token = token;
            let mut rotations = 0;
            let deadline = Instant::now() + Duration::from_secs(10);
            for _ in 0..10_000 {
                if Instant::now() > deadline {
                    break;
                }
                let Ok(response) = client
                    .post(&url)
                    .json(&json!({"refresh_token": token}))
                    .send()
                    .await
                else {
                    break;
                };
                if response.status() != StatusCode::OK {
                    break;
                }
                let Ok(body) = response.json::<Value>().await else {
                    break;
                };
                token = text(&body, "refresh_token");
                rotations += 1;
            }
            (i, token, rotations)
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill_9();
    let mut total_rotations = 0;
    for (i, token, rotations) in burst.join_all().await {
        last_known[i] = token;
        total_rotations += rotations;
    }
    assert!(
        total_rotations > FAMILIES,
        "the burst did not get going ({total_rotations})"
    );

    // After the restart: every family has exactly one live token…
    let conn = rusqlite::Connection::open(&db).unwrap();
    let live_per_family: Vec<i64> = conn
        .prepare("SELECT COUNT(t.id) FROM sessions s LEFT JOIN refresh_tokens t ON t.session_id = s.id AND t.used_at IS NULL GROUP BY s.id")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(live_per_family, vec![1; FAMILIES]);
    drop(conn);

    // …and the last token each client got a 200 for still works: every answered rotation was
    // durable, and one whose answer was lost is replayed within grace.
    let server = ServeProcess::start(&config_path).await;
    for token in &last_known {
        let response = client
            .post(format!("{}/auth/refresh", server.address))
            .json(&json!({"refresh_token": token}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_corrupt_row_is_reported_as_corrupt_not_read_as_a_nil_id() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("latchkey.db");
    let store = latchkey::store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    // A session whose id is 3 bytes, as a bad migration or a hand edit could leave it.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at,
         expires_at, user_agent, ip) VALUES (x'010203', 'u1', 'web', '', 0, 0, ?1, '', '')",
        [i64::MAX],
    )
    .unwrap();
    drop(conn);

    let listed = store.sessions_of("u1", 1).await;

    assert!(
        matches!(listed, Err(latchkey::store::StoreError::Corrupt(_))),
        "{listed:?}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn the_store_directory_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("latchkey.db");
    let store = latchkey::store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    // A write, so the WAL and shared-memory files exist.
    store.put_meta("probe", "1").await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    assert_eq!(mode(db.parent().unwrap()), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert!(latchkey::store::embedded::permission_warnings(&db).is_empty());

    // An existing file left readable by others is reported.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warnings = latchkey::store::embedded::permission_warnings(&db);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("mode 644"), "{warnings:?}");
}

/// Committed pages reach the database file soon after the commit, copied by the checkpointer
/// thread, long before the WAL holds the 4,000 pages at which the writer would checkpoint
/// by itself.
#[tokio::test]
async fn commits_are_checkpointed_into_the_database_file_off_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("latchkey.db");
    let store = latchkey::store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let marker = "checkpoint-marker-6f1d2c";

    store.put_meta("probe", marker).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let file = std::fs::read(&db).unwrap();
        if file.windows(marker.len()).any(|w| w == marker.as_bytes()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the committed row is still only in the WAL after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        store.get_meta("probe").await.unwrap().as_deref(),
        Some(marker)
    );
}

#[tokio::test]
async fn a_database_write_locked_by_another_process_is_not_ready() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    let db = app.dir.path().join("latchkey.db");

    // Another process takes the write lock and holds it.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let locked = app.get("/readyz").await;
    assert_eq!(locked.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = locked.json().await.unwrap();
    assert_eq!(body["reason"], "store unreachable");

    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get("/readyz").await.status() != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "still not ready after the lock was released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn usernames_have_one_spelling() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    let config = app.config_path.clone();
    let added = run_with_stdin(
        latchkey(&["users", "add", " Jose\u{0301} "], &config),
        &format!("{PASSWORD}\n"),
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(String::from_utf8_lossy(&added.stdout).contains("created user jos\u{e9} "));

    // Case, surrounding spaces and composition do not make another account.
    for same in ["jos\u{e9}", "JOS\u{c9}", "  Jose\u{0301}"] {
        assert_eq!(
            app.login(same, PASSWORD).await.status(),
            StatusCode::OK,
            "{same:?}"
        );
    }
    let twin = run_with_stdin(
        latchkey(&["users", "add", "JOS\u{c9}"], &config),
        &format!("{PASSWORD}\n"),
    );
    assert!(!twin.status.success());
    assert!(String::from_utf8_lossy(&twin.stderr).contains("already exists"));
    // Invisible characters are refused outright, at login and at creation.
    let response = app.login("jos\u{200b}\u{e9}", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let hidden = run_with_stdin(
        latchkey(&["users", "add", "jo\u{200b}s\u{e9}"], &config),
        "x\n",
    );
    assert!(!hidden.status.success());
}

#[tokio::test]
async fn a_second_serve_on_the_same_embedded_store_refuses_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("latchkey.db");
    let config = base_config(dir.path(), &format!("sqlite://{}", db.display()));
    let config_path = dir.path().join("latchkey.toml");
    std::fs::write(&config_path, &config.text).unwrap();
    let mut first = ServeProcess::start(&config_path).await;

    let second = latchkey(&["serve"], &config_path)
        .env("LATCHKEY_LISTEN", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains("another `latchkey serve` already serves the embedded store")
            && said.contains("latchkey.db"),
        "{said}"
    );
    // The CLI still works beside the running server.
    let added = run_with_stdin(latchkey(&["users", "add", "bob"], &config_path), PASSWORD);
    assert!(added.status.success());
    // Once the first one is gone (however it ended), another may serve.
    first.kill_9();
    let mut third = ServeProcess::start(&config_path).await;
    third.kill_9();
}
