//! Users with scopes and their lifecycle: granting and narrowing on login, refresh and the
//! password grant; a scope taken away at the next refresh; enable, delete, sessions and logout
//! from the CLI while the server runs; paths that follow the config file; log directives.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, PASSWORD, TestApp, assert_error, claims_of, latchkey, run_with_stdin, spawn_app_with,
    text,
};

on_every_backend!(
    scopes_are_what_the_user_holds_and_the_client_may_carry,
    the_cli_manages_a_users_lifecycle_while_the_server_runs,
    names_that_look_alike_are_one_name,
    users_check_lists_look_alikes_from_before_keys_were_kept,
);

async fn names_that_look_alike_are_one_name(backend: Backend) {
    use latchkey::flows::FlowError;
    let app = spawn_app_with(backend, |_| {}).await;
    let accounts = app.flows.accounts();
    let create = async |name: &str| {
        accounts
            .create_user(
                name,
                &latchkey::credentials::Password::new(PASSWORD.into()),
                Default::default(),
            )
            .await
    };
    create("alice").await.unwrap();
    for (spelling, what) in [
        ("\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}", "fullwidth"),
        (
            "\u{1d41a}\u{1d425}\u{1d422}\u{1d41c}\u{1d41e}",
            "mathematical bold",
        ),
    ] {
        assert!(
            matches!(create(spelling).await, Err(FlowError::UserExists(_))),
            "{what}"
        );
    }
    for (spelling, what) in [
        ("\u{1d00}\u{29f}\u{26a}\u{1d04}\u{1d07}", "small capitals"),
        ("\u{430}lice", "a Cyrillic a among Latin letters"),
    ] {
        assert!(
            matches!(create(spelling).await, Err(FlowError::InvalidRequest(_))),
            "{what}"
        );
    }
    for (spelling, what) in [
        ("al\u{131}ce", "dotless i"),
        ("\u{430}\u{4cf}\u{456}\u{441}\u{435}", "all Cyrillic"),
    ] {
        assert!(
            matches!(create(spelling).await, Err(FlowError::UserLooksAlike(_))),
            "{what}"
        );
    }
    // Only alice exists, and her fullwidth spelling logs her in.
    assert_eq!(accounts.list().await.unwrap().len(), 1);
    let fullwidth = app
        .login("\u{ff21}\u{ff2c}\u{ff29}\u{ff23}\u{ff25}", PASSWORD)
        .await;
    assert_eq!(fullwidth.status(), StatusCode::OK);
    // Deleting alice frees the look: the dotless spelling can be had now.
    let alice = accounts.find("alice").await.unwrap();
    app.store
        .delete_user(
            &alice.id,
            &crate::helpers::note(latchkey::store::RevocationReason::UserDeleted),
        )
        .await
        .unwrap();
    create("al\u{131}ce").await.unwrap();
}

async fn users_check_lists_look_alikes_from_before_keys_were_kept(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let alice = app.add_user("alice", PASSWORD).await;
    // A store from before look-alike keys: alice's key is not recorded.
    match &app.redis {
        Some(redis) => {
            let mut conn = redis.connection();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("lk:{users}:alike:*")
                .query(&mut conn)
                .unwrap();
            let _: () = redis::cmd("DEL").arg(&keys).query(&mut conn).unwrap();
        }
        None => {
            let db = app.dir.path().join("latchkey.db");
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.execute(
                "UPDATE users SET name_key = NULL WHERE id = ?1",
                [&alice.id],
            )
            .unwrap();
        }
    }
    app.add_user("al\u{131}ce", PASSWORD).await;
    app.add_user("bob", PASSWORD).await;
    let checked = cli(&["users", "check"], &app.config_path, "");
    assert!(!checked.status.success());
    let out = String::from_utf8_lossy(&checked.stdout);
    assert!(out.contains("these names look alike"), "{out}");
    assert!(
        out.contains("alice") && out.contains("al\u{131}ce"),
        "{out}"
    );
    assert!(!out.contains("bob"), "{out}");
    // Once a look-alike is removed, the check is clean.
    let dotless = app.flows.accounts().find("al\u{131}ce").await.unwrap();
    app.store
        .delete_user(
            &dotless.id,
            &crate::helpers::note(latchkey::store::RevocationReason::UserDeleted),
        )
        .await
        .unwrap();
    let checked = cli(&["users", "check"], &app.config_path, "");
    assert!(ok(&checked).contains("no two names look alike"));
}

fn cli(args: &[&str], config: &Path, stdin: &str) -> Output {
    run_with_stdin(latchkey(args, config), stdin)
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn login(app: &TestApp, body: Value) -> reqwest::Response {
    let mut body = body;
    body["username"] = json!("alice");
    body["password"] = json!(PASSWORD);
    app.post_json("/auth/login", &body).await
}

fn scope_of(tokens: &Value) -> String {
    assert_eq!(
        claims_of(&text(tokens, "access_token"))["scope"]
            .as_str()
            .unwrap_or(""),
        tokens["scope"].as_str().unwrap_or(""),
        "the token and the answer agree"
    );
    tokens["scope"].as_str().unwrap_or("").to_owned()
}

async fn scopes_are_what_the_user_holds_and_the_client_may_carry(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.text.push_str(
            "\n[[clients]]\nid = \"web\"\ntype = \"public\"\ngrants = [\"refresh_token\"]\nscopes = [\"read\", \"write\"]\n",
        );
    })
    .await;
    app.add_user_with_scopes("alice", &["read", "write", "admin"])
        .await;

    // No scope asked: all the user holds (first-party client), or of it what the client may carry.
    let all: Value = login(&app, json!({})).await.json().await.unwrap();
    assert_eq!(scope_of(&all), "read write admin account");
    let web: Value = login(&app, json!({"client_id": "web"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(scope_of(&web), "read write");
    // Asked: narrowed to it; beyond what the client may carry: invalid_scope.
    let narrow: Value = login(&app, json!({"client_id": "web", "scope": "read"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(scope_of(&narrow), "read");
    assert_error(
        login(&app, json!({"client_id": "web", "scope": "admin"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_scope",
    )
    .await;

    // A refresh keeps the session's scope; a narrower one may be asked for this token only.
    let refresh = |token: String, scope: Option<&'static str>| {
        let app = &app;
        async move {
            let mut body = json!({"refresh_token": token});
            if let Some(scope) = scope {
                body["scope"] = json!(scope);
            }
            app.post_json("/auth/refresh", &body).await
        }
    };
    let renewed: Value = refresh(text(&web, "refresh_token"), Some("write"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(scope_of(&renewed), "write");
    let again: Value = refresh(text(&renewed, "refresh_token"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(scope_of(&again), "read write", "the session's scope stays");
    assert_error(
        refresh(text(&again, "refresh_token"), Some("admin")).await,
        StatusCode::BAD_REQUEST,
        "invalid_scope",
    )
    .await;

    // A scope taken away leaves every session at its next refresh.
    ok(&cli(
        &["users", "ungrant", "alice", "write"],
        &app.config_path,
        "",
    ));
    let after: Value = refresh(text(&again, "refresh_token"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(scope_of(&after), "read");
    let first_party: Value = refresh(text(&all, "refresh_token"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(scope_of(&first_party), "read admin account");
    // Given back, it returns within what the session was granted.
    ok(&cli(
        &["users", "grant", "alice", "write"],
        &app.config_path,
        "",
    ));
    let regranted: Value = refresh(text(&after, "refresh_token"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(scope_of(&regranted), "read write");
}

#[tokio::test]
async fn the_password_grant_grants_held_scopes_within_the_clients() {
    let hasher = latchkey::credentials::PasswordHasher::new(&latchkey::config::PasswordSettings {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
        max_concurrent: 1,
    })
    .unwrap();
    let secret_hash = hasher
        .hash(&latchkey::credentials::Password::new(
            "portal-secret".into(),
        ))
        .await
        .unwrap();
    let app = spawn_app_with(Backend::Embedded, move |c| {
        c.text.push_str(&format!(
            "\n[[clients]]\nid = \"portal\"\ntype = \"confidential\"\nsecret_hash = \"{secret_hash}\"\ngrants = [\"password\", \"refresh_token\"]\nscopes = [\"read\", \"admin\"]\n"
        ));
    })
    .await;
    app.add_user_with_scopes("alice", &["read", "write"]).await;
    let grant = async |scope: Option<&str>| {
        let mut form = vec![
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        app.client
            .post(app.url("/oauth/token"))
            .basic_auth("portal", Some("portal-secret"))
            .form(&form)
            .send()
            .await
            .unwrap()
    };
    let all: Value = grant(None).await.json().await.unwrap();
    assert_eq!(scope_of(&all), "read");
    // admin: the client may carry it, the user does not hold it: narrowed away.
    let asked: Value = grant(Some("read admin")).await.json().await.unwrap();
    assert_eq!(scope_of(&asked), "read");
    assert_error(
        grant(Some("write")).await,
        StatusCode::BAD_REQUEST,
        "invalid_scope",
    )
    .await;
}

async fn the_cli_manages_a_users_lifecycle_while_the_server_runs(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let config = app.config_path.clone();
    let added = ok(&cli(
        &[
            "users",
            "add",
            "bob",
            "--scope",
            "reports:read",
            "--email",
            "bob@example.com",
            "--name",
            "Bob Builder",
        ],
        &config,
        &format!("{PASSWORD}\n"),
    ));
    assert!(added.starts_with("created user bob ("), "{added}");
    let list = ok(&cli(&["users", "list"], &config, ""));
    let row = list.lines().find(|l| l.starts_with("bob ")).unwrap();
    assert!(
        row.contains("active") && row.ends_with("reports:read"),
        "{list}"
    );

    // userinfo returns the attributes; the token carries the scope.
    let tokens: Value = app
        .post_json(
            "/auth/login",
            &json!({"username": "bob", "password": PASSWORD}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(scope_of(&tokens), "reports:read account");
    let info: Value = app
        .userinfo(&text(&tokens, "access_token"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["email"], "bob@example.com");
    assert_eq!(info["name"], "Bob Builder");

    // sessions and logout, for support staff.
    app.login_ok("bob").await;
    let sessions = ok(&cli(&["users", "sessions", "bob"], &config, ""));
    assert!(
        sessions.lines().last().unwrap() == "2 sessions",
        "{sessions}"
    );
    assert!(sessions.starts_with("SID"), "{sessions}");
    let logout = ok(&cli(&["users", "logout", "bob"], &config, ""));
    assert_eq!(logout.trim(), "2 sessions of bob ended");
    assert_eq!(
        app.refresh(&text(&tokens, "refresh_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // disable, enable.
    ok(&cli(&["users", "disable", "bob"], &config, ""));
    assert_eq!(
        app.login("bob", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    ok(&cli(&["users", "enable", "bob"], &config, ""));
    let back = app.login_ok("bob").await;

    // delete: sessions end, and the name is free again, inheriting nothing.
    let deleted = ok(&cli(&["users", "delete", "bob"], &config, ""));
    assert_eq!(deleted.trim(), "deleted bob; 1 session ended");
    assert_eq!(
        app.refresh(&text(&back, "refresh_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("bob", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    ok(&cli(
        &["users", "add", "bob"],
        &config,
        "another password\n",
    ));
    let reborn: Value = app
        .post_json(
            "/auth/login",
            &json!({"username": "bob", "password": "another password"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(scope_of(&reborn), "account", "a new bob inherits no scope");
    let info: Value = app
        .userinfo(&text(&reborn, "access_token"))
        .await
        .json()
        .await
        .unwrap();
    assert!(info.get("email").is_none());
    // Unknown users are an error with a message.
    let missing = cli(&["users", "enable", "nobody"], &config, "");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user \"nobody\""));
}

#[test]
fn relative_paths_follow_the_config_file_and_read_only_commands_create_nothing() {
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc");
    std::fs::create_dir_all(etc.join("keys")).unwrap();
    let key = etc.join("keys").join("k.pem");
    latchkey::keys::files::write_private_pem(
        &key,
        &latchkey::keys::files::generate(latchkey::config::Alg::ES256, 2048).unwrap(),
    )
    .unwrap();
    std::fs::write(
        etc.join("latchkey.toml"),
        "issuer = \"http://127.0.0.1\"\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://data/l.db\"\n[passwords]\nmemory_kib = 64\niterations = 1\n[[keys]]\nkid = \"k\"\nalg = \"ES256\"\npath = \"keys/k.pem\"\nnot_before = \"2020-01-01T00:00:00Z\"\nnot_after = \"2100-01-01T00:00:00Z\"\n",
    )
    .unwrap();
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
        command
            .args(args)
            .arg("-c")
            .arg(etc.join("latchkey.toml"))
            .current_dir(&elsewhere)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };

    // Read-only before any store exists: an error naming the resolved path, nothing created.
    let listed = run(&["users", "list"], "");
    assert!(!listed.status.success());
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(
        stderr.contains(&etc.join("data/l.db").display().to_string()),
        "{stderr}"
    );
    assert!(!etc.join("data").exists() && !elsewhere.join("data").exists());
    // The key file is found from another working directory.
    ok(&run(&["keys", "list"], ""));
    let checked = run(&["config", "check"], "");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // A write creates the database beside the config, and nowhere else.
    ok(&run(&["users", "add", "carol"], &format!("{PASSWORD}\n")));
    assert!(etc.join("data/l.db").exists());
    assert!(!elsewhere.join("data").exists());
    assert!(ok(&run(&["users", "list"], "")).contains("carol"));
}

#[test]
fn a_log_directive_that_does_not_parse_stops_serve_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::helpers::base_config(
        dir.path(),
        &format!("sqlite://{}", dir.path().join("l.db").display()),
    );
    let path = dir.path().join("latchkey.toml");
    std::fs::write(&path, &config.text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["serve", "-c"])
        .arg(&path)
        .env("LATCHKEY_LOG", "latchkey=loudest")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("LATCHKEY_LOG: cannot parse"), "{stderr}");
}

/// A store that does not answer is named in the error: its URL without the password, where
/// the URL came from, and the cause.
#[test]
fn an_unreachable_store_is_named_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("latchkey.toml");
    std::fs::write(
        &config,
        "issuer = \"http://127.0.0.1\"\nlisten = \"127.0.0.1:0\"\n[passwords]\nmemory_kib = 64\niterations = 1\n[[keys]]\nkid = \"k\"\nalg = \"ES256\"\npath = \"k.pem\"\nnot_before = \"2020-01-01T00:00:00Z\"\nnot_after = \"2100-01-01T00:00:00Z\"\n",
    )
    .unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = crate::helpers::latchkey(&["users", "list"], &config);
    command.env(
        "LATCHKEY_STORE_URL",
        format!("redis://:hunter2@127.0.0.1:{port}/0"),
    );
    let output = crate::helpers::run_with_stdin(command, "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "the session store at redis://***@127.0.0.1:{port}/0 (set by LATCHKEY_STORE_URL) did not answer: "
        )),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
