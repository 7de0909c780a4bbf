//! Sessions and accounts: a user sees and ends their sessions, logs out everywhere, changes
//! their password; the password policy; registration; the trusted-proxy rule for client IPs.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, assert_error, spawn_app_with, text};

on_every_backend!(
    a_user_sees_their_sessions_newest_first_with_the_current_one_marked,
    ending_one_session_leaves_the_others_refreshing,
    nobody_can_end_or_probe_someone_elses_session,
    logout_all_ends_every_session_the_current_one_included,
    a_password_change_ends_every_session_and_a_refused_one_ends_none,
    a_disabled_users_tokens_stop_at_once,
    ten_thousand_expired_sessions_leave_no_index_behind,
);

async fn get_with(app: &TestApp, path: &str, access: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
}

async fn sessions(app: &TestApp, access: &str) -> Vec<Value> {
    let response = get_with(app, "/auth/sessions", access).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Vec<Value>>().await.unwrap()
}

async fn delete_session(app: &TestApp, access: &str, sid: &str) -> reqwest::Response {
    app.client
        .delete(app.url(&format!("/auth/sessions/{sid}")))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
}

async fn post_with(app: &TestApp, path: &str, access: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(access)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn a_user_sees_their_sessions_newest_first_with_the_current_one_marked(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let laptop = app.login_ok("alice").await;
    app.clock.advance(Duration::from_secs(5));
    let phone = app.login_ok("alice").await;

    let listed = sessions(&app, &text(&laptop, "access_token")).await;

    assert_eq!(listed.len(), 2);
    let sid_of = |tokens: &Value| {
        crate::helpers::claims_of(&text(tokens, "access_token"))["sid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // Newest first; the laptop's token marks the laptop's session.
    assert_eq!(listed[0]["sid"], sid_of(&phone));
    assert_eq!(listed[1]["sid"], sid_of(&laptop));
    assert_eq!(listed[0]["current"], false);
    assert_eq!(listed[1]["current"], true);
    for field in [
        "client_id",
        "created_at",
        "last_used_at",
        "expires_at",
        "user_agent",
        "ip",
        "login_user_agent",
        "login_ip",
    ] {
        assert!(listed[0].get(field).is_some(), "{field}: {}", listed[0]);
    }
    assert_eq!(listed[0]["ip"], "127.0.0.1");
    assert_eq!(listed[0]["login_ip"], "127.0.0.1");
    assert_eq!(listed[0]["client_id"], "latchkey");
    assert!(listed[0]["created_at"].as_str().unwrap().ends_with('Z'));
}

async fn ending_one_session_leaves_the_others_refreshing(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let laptop = app.login_ok("alice").await;
    let phone = app.login_ok("alice").await;
    let phone_sid = crate::helpers::claims_of(&text(&phone, "access_token"))["sid"]
        .as_str()
        .unwrap()
        .to_owned();

    // The phone is lost: the laptop ends its session.
    let response = delete_session(&app, &text(&laptop, "access_token"), &phone_sid).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    assert_error(
        app.refresh(&text(&phone, "refresh_token")).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        app.userinfo(&text(&phone, "access_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&text(&laptop, "refresh_token")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        sessions(&app, &text(&laptop, "access_token")).await.len(),
        1
    );
}

async fn nobody_can_end_or_probe_someone_elses_session(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    app.add_user("mallory", PASSWORD).await;
    let alice = app.login_ok("alice").await;
    let mallory = app.login_ok("mallory").await;
    let alice_sid = crate::helpers::claims_of(&text(&alice, "access_token"))["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let access = text(&mallory, "access_token");

    // Someone else's, unknown, malformed: the same 404.
    for sid in [
        alice_sid.as_str(),
        "00000000-0000-0000-0000-000000000000",
        "not-a-sid",
    ] {
        let response = delete_session(&app, &access, sid).await;
        let body = assert_error(response, StatusCode::NOT_FOUND, "invalid_request").await;
        assert_eq!(body["error_description"], "no such session", "{sid}");
    }
    assert_eq!(
        app.refresh(&text(&alice, "refresh_token")).await.status(),
        StatusCode::OK
    );
    // Without a token, nothing at all.
    let anonymous = app.get("/auth/sessions").await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers().contains_key("www-authenticate"));
}

async fn logout_all_ends_every_session_the_current_one_included(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    app.add_user("bob", PASSWORD).await;
    let a = app.login_ok("alice").await;
    let b = app.login_ok("alice").await;
    let bob = app.login_ok("bob").await;

    let response = post_with(
        &app,
        "/auth/logout-all",
        &text(&a, "access_token"),
        &json!({}),
    )
    .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for tokens in [&a, &b] {
        assert_eq!(
            app.refresh(&text(tokens, "refresh_token")).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.userinfo(&text(tokens, "access_token")).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.refresh(&text(&bob, "refresh_token")).await.status(),
        StatusCode::OK
    );
}

async fn a_password_change_ends_every_session_and_a_refused_one_ends_none(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let here = app.login_ok("alice").await;
    let stolen = app.login_ok("alice").await;
    let access = text(&here, "access_token");
    let change = async |current: &str, new: &str| {
        post_with(
            &app,
            "/auth/password",
            &access,
            &json!({"current_password": current, "new_password": new}),
        )
        .await
    };

    // Refused changes: each says which rule failed, and ends nothing.
    let cases = [
        (
            "wrong current",
            "not it",
            "a perfectly fine new one",
            "invalid_grant",
            "current password",
        ),
        (
            "too short",
            PASSWORD,
            "short",
            "invalid_request",
            "at least 8 characters",
        ),
        (
            "unchanged",
            PASSWORD,
            PASSWORD,
            "invalid_request",
            "must differ",
        ),
    ];
    for (what, current, new, code, says) in cases {
        let response = change(current, new).await;
        let body = assert_error(response, StatusCode::BAD_REQUEST, code).await;
        assert!(
            body["error_description"].as_str().unwrap().contains(says),
            "{what}: {body}"
        );
    }
    let too_long = "x".repeat(1025);
    let body = assert_error(
        change(PASSWORD, &too_long).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("1024 bytes")
    );
    assert_eq!(
        app.refresh(&text(&stolen, "refresh_token")).await.status(),
        StatusCode::OK,
        "a refused change ended a session"
    );

    // The change: 204, and every session ends, the current one and the stolen one too.
    let response = change(PASSWORD, "a brand new passphrase").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.refresh(&text(&here, "refresh_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.userinfo(&access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("alice", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("alice", "a brand new passphrase").await.status(),
        StatusCode::OK
    );
}

async fn a_disabled_users_tokens_stop_at_once(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let user = app.add_user("alice", PASSWORD).await;
    let tokens = app.login_ok("alice").await;

    app.store
        .set_disabled(
            &user.id,
            true,
            &crate::helpers::note(latchkey::store::RevocationReason::UserDisabled),
        )
        .await
        .unwrap();

    assert_eq!(
        app.userinfo(&text(&tokens, "access_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with(&app, "/auth/sessions", &text(&tokens, "access_token"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&text(&tokens, "refresh_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("alice", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn ten_thousand_expired_sessions_leave_no_index_behind(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let user = app.add_user("alice", PASSWORD).await;
    let now = latchkey::clock::system_ms();
    // 10,000 sessions that expire in a second, created concurrently (bounded: one batch).
    let mut created = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        let (store, user_id) = (app.store.clone(), user.id.clone());
        created.spawn(async move {
            let sid = latchkey::tokens::new_session_id(&user_id).unwrap();
            store
                .create_session(&latchkey::store::NewSession {
                    id: sid,
                    user_id,
                    client_id: "latchkey".into(),
                    scope: String::new(),
                    created_at: now,
                    expires_at: now + 1_000,
                    user_agent: String::new(),
                    ip: String::new(),
                    first_token: latchkey::tokens::RefreshToken::generate(sid).unwrap().id(),
                    first_token_expires_at: now + 1_000,
                    user_epoch: 0,
                    channel: latchkey::store::Channel::Body,
                    dpop_jkt: None,
                })
                .await
                .unwrap()
        });
    }
    assert!(created.join_all().await.into_iter().all(|c| c));
    assert_eq!(
        app.store.sessions_of(&user.id, now).await.unwrap().len(),
        10_000
    );

    // Their time passes (real time: the store's own expiry is what is tested).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    app.store.sweep(latchkey::clock::system_ms()).await.unwrap();

    match &app.redis {
        Some(redis) => {
            let mut conn = redis.connection();
            let tag = latchkey::encoding::hex(&latchkey::tokens::user_slot_tag(&user.id));
            let left: Vec<String> = redis::cmd("KEYS")
                .arg(format!("lk:{{{tag}}}:[sfx]:*"))
                .query(&mut conn)
                .unwrap();
            assert!(
                left.is_empty(),
                "{} keys left: {:?}",
                left.len(),
                &left[..left.len().min(5)]
            );
        }
        None => {
            let db = app.dir.path().join("latchkey.db");
            let conn = rusqlite::Connection::open(db).unwrap();
            let left: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM sessions WHERE user_id = ?1",
                    [&user.id],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(left, 0);
        }
    }
    assert!(
        app.store
            .sessions_of(&user.id, latchkey::clock::system_ms())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn registration_is_off_by_default_and_follows_the_policy_when_on() {
    let closed = spawn_app_with(Backend::Embedded, |_| {}).await;
    let response = closed
        .post_json(
            "/auth/register",
            &json!({"username": "eve", "password": PASSWORD}),
        )
        .await;
    assert_error(response, StatusCode::NOT_FOUND, "invalid_request").await;

    let app = spawn_app_with(Backend::Embedded, |c| {
        c.text
            .push_str("\n[users]\nallow_registration = true\nmin_password_length = 12\n");
    })
    .await;
    let register = async |username: &str, password: &str| {
        app.post_json(
            "/auth/register",
            &json!({"username": username, "password": password}),
        )
        .await
    };
    let short = register("eve", "eleven char").await;
    let body = assert_error(short, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("at least 12")
    );

    let created = register(" Eve ", "twelve chars!").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["username"], "eve");
    assert_eq!(
        app.login("eve", "twelve chars!").await.status(),
        StatusCode::OK
    );

    // A taken name says so, and nothing more.
    let taken = register("EVE", "another password").await;
    assert_error(taken, StatusCode::CONFLICT, "invalid_request").await;
}

#[tokio::test]
async fn a_forged_x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    // 127.0.0.2 is a trusted proxy; 127.0.0.1 is not.
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.text = c.text.replace(
            "[tokens]",
            "trusted_proxies = [\"127.0.0.2/32\"]\n\n[tokens]",
        );
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(IpAddr::from([127, 0, 0, last]))
            .build()
            .unwrap()
    };
    let login_via = |client: reqwest::Client, header: (&'static str, &'static str)| {
        let url = app.url("/auth/login");
        async move {
            client
                .post(url)
                .header(header.0, header.1)
                .json(&json!({"username": "alice", "password": PASSWORD}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let recorded_ip = async |tokens: &Value| {
        let listed = sessions(&app, &text(tokens, "access_token")).await;
        listed.iter().find(|s| s["current"] == true).unwrap()["login_ip"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let forged = login_via(from(1), ("x-forwarded-for", "203.0.113.9")).await;
    assert_eq!(recorded_ip(&forged).await, "127.0.0.1");

    let proxied = login_via(from(2), ("x-forwarded-for", "198.51.100.7, 203.0.113.9")).await;
    assert_eq!(recorded_ip(&proxied).await, "203.0.113.9");

    // The proxies set X-Forwarded-For (the default): a Forwarded header is the client's own.
    let forwarded = login_via(
        from(2),
        ("forwarded", "for=\"[2001:db8::17]:4711\";proto=https"),
    )
    .await;
    assert_eq!(recorded_ip(&forwarded).await, "127.0.0.2");
}

#[tokio::test]
async fn the_cli_applies_the_password_policy() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["users", "add", "frank", "-c"])
        .arg(&app.config_path)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"short\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 8 characters"));
}

#[tokio::test]
async fn the_account_api_wants_the_account_scope() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.text.push_str(
            "\n[[clients]]\nid = \"partner\"\ntype = \"public\"\ngrants = [\"refresh_token\"]\nscopes = [\"read\"]\n",
        );
    })
    .await;
    app.add_user_with_scopes("alice", &["read"]).await;
    let token_for = async |body: Value| {
        let mut body = body;
        body["username"] = json!("alice");
        body["password"] = json!(PASSWORD);
        let tokens: Value = app
            .post_json("/auth/login", &body)
            .await
            .json()
            .await
            .unwrap();
        text(&tokens, "access_token")
    };
    // A token asked for an API's scope only, and a third-party client's token.
    let narrow = token_for(json!({"scope": "read"})).await;
    let partner = token_for(json!({"client_id": "partner"})).await;
    let sid = crate::helpers::claims_of(&narrow)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    for token in [&narrow, &partner] {
        let listed = get_with(&app, "/auth/sessions", token).await;
        assert_eq!(
            listed.headers()["www-authenticate"],
            "Bearer realm=\"latchkey\", error=\"insufficient_scope\", scope=\"account\""
        );
        assert_error(listed, StatusCode::FORBIDDEN, "insufficient_scope").await;
        let ended = delete_session(&app, token, &sid).await;
        assert_error(ended, StatusCode::FORBIDDEN, "insufficient_scope").await;
        let all = app
            .client
            .post(app.url("/auth/logout-all"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_error(all, StatusCode::FORBIDDEN, "insufficient_scope").await;
        let password = app
            .client
            .post(app.url("/auth/password"))
            .bearer_auth(token)
            .json(&json!({"current_password": PASSWORD, "new_password": "a new password"}))
            .send()
            .await
            .unwrap();
        assert_error(password, StatusCode::FORBIDDEN, "insufficient_scope").await;
        // Who the token is for is still answered.
        assert_eq!(app.userinfo(token).await.status(), StatusCode::OK);
    }
    // Asked for explicitly, or by a first-party login asking nothing: served.
    let asked = token_for(json!({"scope": "read account"})).await;
    assert_eq!(sessions(&app, &asked).await.len(), 3);
    let first_party = token_for(json!({})).await;
    assert_eq!(sessions(&app, &first_party).await.len(), 4);
}

#[tokio::test]
async fn a_bearer_endpoint_answers_a_missing_token_before_looking_at_the_body() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    // No token, and no body (nor a JSON content type): the missing token is the answer.
    let bare = app
        .client
        .post(app.url("/auth/password"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    assert!(
        bare.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    // With a token, the body is judged as before.
    app.add_user("alice", PASSWORD).await;
    let access = text(&app.login_ok("alice").await, "access_token");
    let no_body = app
        .client
        .post(app.url("/auth/password"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(no_body.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}
