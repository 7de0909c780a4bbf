//! Redis-specific guarantees: nothing stored can rebuild a refresh token, family keys share a
//! hash tag, and an outage answers 503 and recovers without a restart.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, PASSWORD, assert_error, spawn_app_with, text};

/// Every key and every value in the Redis keyspace, concatenated.
fn dump_keyspace(conn: &mut redis::Connection) -> (Vec<String>, Vec<u8>) {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).unwrap();
    let mut bytes = Vec::new();
    for key in &keys {
        bytes.extend_from_slice(key.as_bytes());
        let kind: String = redis::cmd("TYPE").arg(key).query(conn).unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis::cmd("GET").arg(key).query(conn).unwrap()],
            "hash" => redis::cmd("HGETALL").arg(key).query(conn).unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(key).query(conn).unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query(conn)
                .unwrap(),
            other => panic!("unexpected key type {other} at {key}"),
        };
        for v in values {
            bytes.extend_from_slice(&v);
            bytes.push(0);
        }
    }
    (keys, bytes)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn keyspace_holds_no_issued_refresh_token_in_any_form() {
    let app = spawn_app_with(Backend::Redis, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let mut issued = Vec::new();
    let first = text(&app.login_ok("alice").await, "refresh_token");
    issued.push(first.clone());
    let second = text(
        &app.refresh(&first).await.json::<Value>().await.unwrap(),
        "refresh_token",
    );
    issued.push(second.clone());
    // A replay within grace: the sealed successor is in Redis right now.
    let replayed = app.refresh(&first).await.json::<Value>().await.unwrap();
    assert_eq!(text(&replayed, "refresh_token"), second);
    let third = text(
        &app.refresh(&second).await.json::<Value>().await.unwrap(),
        "refresh_token",
    );
    issued.push(third);
    issued.push(text(&app.login_ok("alice").await, "refresh_token"));

    let (keys, dump) = dump_keyspace(&mut app.redis.as_ref().unwrap().connection());

    assert!(
        keys.iter().any(|k| k.contains(":x:")),
        "expected a sealed successor: {keys:?}"
    );
    for token in &issued {
        let body = token.strip_prefix("lk_rt_").unwrap();
        let raw = B64.decode(body).unwrap();
        let secret = &raw[16..];
        let secret_hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!contains(&dump, token.as_bytes()), "token stored verbatim");
        assert!(!contains(&dump, body.as_bytes()), "token body stored");
        assert!(!contains(&dump, &raw), "raw token bytes stored");
        assert!(!contains(&dump, secret), "token secret stored");
        assert!(
            !contains(&dump, secret_hex.as_bytes()),
            "token secret stored as hex"
        );
        assert!(
            !contains(&dump, B64.encode(secret).as_bytes()),
            "token secret stored as base64"
        );
    }
}

#[tokio::test]
async fn a_users_keys_share_one_hash_slot_and_sessions_expire() {
    let app = spawn_app_with(Backend::Redis, |_| {}).await;
    let user = app.add_user("alice", PASSWORD).await;
    let token = text(&app.login_ok("alice").await, "refresh_token");
    app.refresh(&token).await;
    let sid = latchkey::tokens::RefreshToken::parse(&token)
        .unwrap()
        .session_id;
    // A second session, revoked for reuse: its tombstone shares the slot and expires too.
    let other = text(&app.login_ok("alice").await, "refresh_token");
    let next = text(
        &app.refresh(&other).await.json().await.unwrap(),
        "refresh_token",
    );
    app.refresh(&next).await;
    assert_eq!(app.refresh(&other).await.status(), StatusCode::UNAUTHORIZED);
    let mut conn = app.redis.as_ref().unwrap().connection();

    // The user's record, session index, session and sealed successor: one tag, one slot, so
    // every step of a rotation or a password change is one script on Redis Cluster too.
    let tag = format!(
        "{{{}}}",
        latchkey::encoding::hex(&latchkey::tokens::user_slot_tag(&user.id))
    );
    assert_eq!(
        format!("{{{}}}", latchkey::encoding::hex(&sid.as_bytes()[..4])),
        tag,
        "the session id names its user's slot"
    );
    let slot: Vec<String> = redis::cmd("KEYS")
        .arg(format!("lk:{tag}:*"))
        .query(&mut conn)
        .unwrap();
    for kind in ["u:", "s:", "f:", "x:", "r:"] {
        assert!(
            slot.iter()
                .any(|k| k.starts_with(&format!("lk:{tag}:{kind}"))),
            "no {kind} key in {slot:?}"
        );
    }
    let all: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    for key in all {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
        // User records, usernames, the key-publication history and the operational records
        // live until deleted; everything of a session expires by itself.
        let kept = key.starts_with("lk:{users}:")
            || key.starts_with(&format!("lk:{tag}:u:"))
            || key.starts_with("lk:{keys}:")
            || key == "lk:meta";
        if kept {
            assert_eq!(ttl, -1, "{key}");
        } else {
            assert!(ttl > 0, "{key} has no TTL");
        }
    }
}

#[tokio::test]
async fn redis_outage_answers_503_then_recovers() {
    let mut app = spawn_app_with(Backend::Redis, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let token = text(&app.login_ok("alice").await, "refresh_token");

    app.redis.as_mut().unwrap().kill();

    let login = app.login("alice", PASSWORD).await;
    assert_eq!(login.headers()["retry-after"], "1");
    assert_error(
        login,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    )
    .await;
    assert_error(
        app.refresh(&token).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
    )
    .await;
    assert_eq!(
        app.get("/readyz").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);

    app.redis.as_mut().unwrap().restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.get("/readyz").await.status() != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "did not recover from the Redis restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The restarted Redis is empty (this test runs it without persistence). The test's own
    // store handle lost its connection too, so arrange through a fresh one.
    app.store = latchkey::store::open(&app.redis.as_ref().unwrap().url())
        .await
        .unwrap();
    app.add_user("alice", PASSWORD).await;
    assert_eq!(app.login("alice", PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn key_publications_are_recorded_once_redis_answers_after_a_start_without_it() {
    // Redis is down when the issuer starts.
    let mut redis = crate::helpers::RedisServer::start();
    redis.kill();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::helpers::base_config(dir.path(), &redis.url());
    let mut app = crate::helpers::start(
        config.text,
        dir,
        Some(redis),
        latchkey::clock::Clock::system(),
    )
    .await;

    app.redis.as_mut().unwrap().restart();
    let store = latchkey::store::open(&app.redis.as_ref().unwrap().url())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(history) = store.key_publications().await
            && history.iter().any(|p| p.kid == "test-es")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the publication was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_first_requests_after_a_redis_restart_do_not_fail() {
    let mut app = spawn_app_with(Backend::Redis, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let token = text(&app.login_ok("alice").await, "refresh_token");

    // Redis restarts (empty: no persistence here) while no request is in flight; the issuer's
    // connections are now broken, and it has not noticed yet.
    app.redis.as_mut().unwrap().restart();
    app.store = latchkey::store::open(&app.redis.as_ref().unwrap().url())
        .await
        .unwrap();
    app.add_user("alice", PASSWORD).await;

    // No warm-up, no readiness probe first: the very first requests are answered.
    assert_eq!(app.refresh(&token).await.status(), StatusCode::UNAUTHORIZED);
    let tokens = app.login_ok("alice").await;
    assert_eq!(
        app.refresh(&text(&tokens, "refresh_token")).await.status(),
        StatusCode::OK
    );
}

/// The whole flow on three Redis Cluster masters: users land on different masters, and each
/// one's login, refresh, grace replay, reuse detection and logout work there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refresh_grace_reuse_and_logout_on_a_redis_cluster() {
    let app = spawn_app_with(Backend::RedisCluster, |_| {}).await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    for i in 0..6 {
        let name = format!("user{i}");
        app.add_user(&name, PASSWORD).await;
        let login: Value = app.login(&name, PASSWORD).await.json().await.unwrap();
        let t1 = text(&login, "refresh_token");
        let r2: Value = app.refresh(&t1).await.json().await.unwrap();
        // A racing tab within the grace window gets the same successor.
        let replay: Value = app.refresh(&t1).await.json().await.unwrap();
        assert_eq!(replay["refresh_token"], r2["refresh_token"]);
        let t2 = text(&r2, "refresh_token");
        let r3: Value = app.refresh(&t2).await.json().await.unwrap();
        // The first token again, after its successor was used: reuse, the session is gone.
        assert_eq!(app.refresh(&t1).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            app.refresh(&text(&r3, "refresh_token")).await.status(),
            StatusCode::UNAUTHORIZED
        );
        // A new session, logged out.
        let again: Value = app.login(&name, PASSWORD).await.json().await.unwrap();
        let token = text(&again, "refresh_token");
        assert_eq!(app.logout(&token).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.refresh(&token).await.status(), StatusCode::UNAUTHORIZED);
    }
    // The users' data is spread over the masters: every one holds some of it.
    for port in &app.cluster.as_ref().unwrap().ports {
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .get_connection()
            .unwrap();
        let keys: i64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
        assert!(keys > 0, "master {port} holds nothing");
    }
}

/// A replica takes over its master's slots (`CLUSTER FAILOVER`) while sessions refresh in a
/// loop: the client follows the slots to the new master and no session is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_during_refreshes_loses_no_session() {
    let cluster = crate::helpers::RedisCluster::start_with_replicas(3, 1);
    let dir = tempfile::tempdir().unwrap();
    let config = crate::helpers::base_config(dir.path(), &cluster.url());
    let app = crate::helpers::start(config.text, dir, None, latchkey::clock::Clock::system()).await;
    let mut tokens = Vec::new();
    for i in 0..8 {
        let name = format!("user{i}");
        app.add_user(&name, PASSWORD).await;
        let login: Value = app.login(&name, PASSWORD).await.json().await.unwrap();
        tokens.push(text(&login, "refresh_token"));
    }
    let app = std::sync::Arc::new(app);
    let until = Instant::now() + Duration::from_secs(6);
    let mut loops = tokio::task::JoinSet::new();
    for token in tokens {
        let app = app.clone();
        loops.spawn(async move {
            let mut token = token;
            let mut rotations = 0;
            for _ in 0..5_000 {
                if Instant::now() > until {
                    break;
                }
                let response = app.refresh(&token).await;
                match response.status() {
                    StatusCode::OK => {
                        token = text(&response.json().await.unwrap(), "refresh_token");
                        rotations += 1;
                    }
                    StatusCode::SERVICE_UNAVAILABLE => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("a refresh answered {other} during the failover"),
                }
            }
            (token, rotations)
        });
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let replica = cluster.a_replica();
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{replica}"))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: String = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query(&mut conn)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).unwrap();
        if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
            break;
        }
        assert!(Instant::now() < deadline, "the replica did not take over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (token, rotations) in loops.join_all().await {
        assert!(rotations > 0);
        // Every session is alive: its last token refreshes.
        assert_eq!(app.refresh(&token).await.status(), StatusCode::OK);
    }
}

/// A session's record stays in Redis's compact hash encoding however long its chain grows (the
/// history of consumed tokens is kept in parts of at most 64 bytes), and a token from deep in
/// that history is still recognised as reuse.
#[tokio::test]
async fn a_long_refresh_chain_keeps_the_session_compact_and_its_history_whole() {
    let app = spawn_app_with(Backend::Redis, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let mut token = text(&app.login_ok("alice").await, "refresh_token");
    let mut chain = vec![token.clone()];
    for _ in 0..40 {
        let response = app.refresh(&token).await;
        assert_eq!(response.status(), StatusCode::OK);
        token = text(&response.json::<Value>().await.unwrap(), "refresh_token");
        chain.push(token.clone());
    }
    let mut conn = app.redis.as_ref().unwrap().connection();
    let families: Vec<String> = redis::cmd("KEYS").arg("lk:*:f:*").query(&mut conn).unwrap();
    assert_eq!(families.len(), 1);
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&families[0])
        .query(&mut conn)
        .unwrap();
    assert_eq!(encoding, "listpack");
    let bytes: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&families[0])
        .query(&mut conn)
        .unwrap();
    assert!(bytes < 1024, "{bytes} bytes for one session");

    // 25 rotations back: past the grace window's single token, found in the history.
    let old = &chain[chain.len() - 26];
    assert_error(
        app.refresh(old).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    )
    .await;
    assert_error(
        app.refresh(&token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    )
    .await;
    let families: Vec<String> = redis::cmd("KEYS").arg("lk:*:f:*").query(&mut conn).unwrap();
    assert!(families.is_empty(), "the family was revoked for reuse");
}

/// A session written by an earlier version keeps its history: 8-byte fingerprints in one
/// `hist` field are read, converted at the next rotation, and still recognised as reuse. The
/// successor's expiry it kept in `prev_next` goes at that rotation too, and its whole token ids
/// (now kept as their first 16 bytes) still match.
#[tokio::test]
async fn a_history_in_the_earlier_format_still_detects_reuse() {
    let app = spawn_app_with(Backend::Redis, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let mut chain = vec![text(&app.login_ok("alice").await, "refresh_token")];
    for _ in 0..2 {
        let response = app.refresh(chain.last().unwrap()).await;
        chain.push(text(
            &response.json::<Value>().await.unwrap(),
            "refresh_token",
        ));
    }
    let mut conn = app.redis.as_ref().unwrap().connection();
    let families: Vec<String> = redis::cmd("KEYS").arg("lk:*:f:*").query(&mut conn).unwrap();
    let family = &families[0];
    // As an earlier version stored it: the consumed tokens' first 8 bytes, in `hist`.
    let mut old = Vec::new();
    for token in &chain[..2] {
        let id = latchkey::tokens::RefreshToken::parse(token).unwrap().id;
        old.extend_from_slice(&id.0[..8]);
    }
    let _: () = redis::cmd("HDEL")
        .arg(family)
        .arg(&["h1", "h2", "h3", "h4"])
        .query(&mut conn)
        .unwrap();
    let id = |token: &String| latchkey::tokens::RefreshToken::parse(token).unwrap().id.0;
    let _: () = redis::cmd("HSET")
        .arg(family)
        .arg("hist")
        .arg(old.as_slice())
        .arg("prev_next")
        .arg("1")
        .arg("live")
        .arg(id(&chain[2]).as_slice())
        .arg("prev")
        .arg(id(&chain[1]).as_slice())
        .query(&mut conn)
        .unwrap();
    // Whole token ids, as earlier versions kept them: the last consumed one replays within the
    // grace window, the live one rotates.
    let replay = app.refresh(&chain[1]).await;
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(
        text(&replay.json::<Value>().await.unwrap(), "refresh_token"),
        chain[2]
    );
    let response = app.refresh(&chain[2]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let live = text(&response.json::<Value>().await.unwrap(), "refresh_token");
    let hist: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(family)
        .arg("hist")
        .query(&mut conn)
        .unwrap();
    assert!(hist.is_none(), "converted at the rotation");
    let prev_next: bool = redis::cmd("HEXISTS")
        .arg(family)
        .arg("prev_next")
        .query(&mut conn)
        .unwrap();
    assert!(
        !prev_next,
        "an earlier version's field, removed at the rotation"
    );
    let kept: Vec<Vec<u8>> = redis::cmd("HMGET")
        .arg(family)
        .arg(&["live", "prev"])
        .query(&mut conn)
        .unwrap();
    assert_eq!(kept[0], id(&live)[..16]);
    assert_eq!(kept[1], id(&chain[2])[..16]);
    assert_error(
        app.refresh(&chain[0]).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    )
    .await;
    assert_error(
        app.refresh(&live).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    )
    .await;
}

/// The rotation script itself refuses a call that reaches Redis after its caller's deadline:
/// `late`, and the session untouched. (Through the store this is hard to provoke: the client
/// drops a connection whose answer timed out, and Redis discards what it had queued on it.)
#[tokio::test]
async fn the_rotation_script_changes_nothing_after_its_callers_deadline() {
    let app = spawn_app_with(Backend::Redis, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let token = text(&app.login_ok("alice").await, "refresh_token");
    let presented = latchkey::tokens::RefreshToken::parse(&token).unwrap();
    let sid = presented.session_id.simple().to_string();
    let mut conn = app.redis.as_ref().unwrap().connection();
    let families: Vec<String> = redis::cmd("KEYS").arg("lk:*:f:*").query(&mut conn).unwrap();
    let prefix = families[0].strip_suffix(&format!("f:{sid}")).unwrap();
    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/lua/rotate.lua"),
    )
    .unwrap();
    let now = latchkey::clock::system_ms();
    let rotate = |deadline: i64| {
        let reply: Vec<Vec<u8>> = redis::cmd("EVAL")
            .arg(&script)
            .arg(3)
            .arg(format!("{prefix}f:{sid}"))
            .arg(format!("{prefix}x:{sid}"))
            .arg(format!("{prefix}r:{sid}"))
            .arg(now)
            .arg(10_000)
            .arg(60_000)
            .arg(presented.id.0.as_slice())
            .arg([7u8; 32].as_slice())
            .arg(b"sealed".as_slice())
            .arg("test")
            .arg("127.0.0.1")
            .arg(&sid)
            .arg(deadline)
            .arg(32)
            .arg(prefix)
            .arg("")
            .arg("body")
            .arg(now)
            .arg("")
            .query(&mut app.redis.as_ref().unwrap().connection())
            .unwrap();
        String::from_utf8(reply[0].clone()).unwrap()
    };
    let live = |conn: &mut redis::Connection| -> Vec<u8> {
        redis::cmd("HGET")
            .arg(&families[0])
            .arg("live")
            .query(conn)
            .unwrap()
    };
    let before = live(&mut conn);

    assert_eq!(rotate(now - 1_000), "late");
    assert_eq!(live(&mut conn), before, "a late call changed the session");
    // The same call in time rotates: the arguments above are the ones the store sends.
    assert_eq!(rotate(now + 60_000), "rotated");
    assert_eq!(live(&mut conn), [7u8; 16]);
}
