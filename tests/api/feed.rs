//! The revocation feed (SSF 1.0 transmitter, RFC 8936 polling): every revocation reaches a
//! receiver as Security Event Tokens it can verify from the JWKS, within a second of the
//! revocation, from any instance.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, PASSWORD, RedisServer, ServeProcess, TestApp, TestConfig, assert_error, base_config,
    claims_of, hash, latchkey, run_with_stdin, spawn_app_with, text,
};

const RECEIVER_SECRET: &str = "receiver-secret-0123456789abcdef";
const POLL: &str = "urn:ietf:rfc:8936";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";

on_every_backend!(
    a_receiver_learns_every_revocation_as_verifiable_events_within_a_second,
    a_new_stream_starts_with_every_revocation_still_retained,
    latchkey_verify_refuses_a_revoked_sessions_tokens_within_a_second,
    latchkey_verify_goes_on_by_signature_while_the_feed_is_down_or_fails_closed_when_asked,
    events_are_pushed_only_to_allowed_urls_and_retried_until_accepted,
);

/// `[[clients]]` for feed receivers: `rs` may manage and read streams, `other` too (its own),
/// `reader` may only read.
fn receivers(c: &mut TestConfig, secret_hash: &str) {
    for (id, scopes) in [
        ("rs", "\"ssf.manage\", \"ssf.read\""),
        ("other", "\"ssf.manage\", \"ssf.read\""),
        ("reader", "\"ssf.read\""),
    ] {
        c.text.push_str(&format!(
            "\n[[clients]]\nid = \"{id}\"\ntype = \"confidential\"\nsecret_hash = \"{secret_hash}\"\n\
             grants = [\"client_credentials\"]\nscopes = [{scopes}]\n"
        ));
    }
}

async fn feed_app(backend: Backend) -> TestApp {
    let secret_hash = hash(RECEIVER_SECRET).await;
    spawn_app_with(backend, move |c| {
        c.issuer_on_own_port();
        receivers(c, &secret_hash);
    })
    .await
}

/// A client-credentials token of `client` for `scope`.
async fn receiver_token(client: &reqwest::Client, base: &str, id: &str, scope: &str) -> String {
    let answer: Value = client
        .post(format!("{base}/oauth/token"))
        .basic_auth(id, Some(RECEIVER_SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", scope)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    text(&answer, "access_token")
}

async fn create_stream(client: &reqwest::Client, base: &str, token: &str, body: Value) -> Value {
    let created = client
        .post(format!("{base}/ssf/stream"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    created.json().await.unwrap()
}

async fn poll(client: &reqwest::Client, url: &str, token: &str, body: Value) -> Value {
    let answer = client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["cache-control"], "no-store");
    answer.json().await.unwrap()
}

/// Each SET of a poll answer, verified with the issuer's JWKS as a receiver would: explicit
/// type, issuer, audience, no `exp` and no `sub` (RFC 8417 §2.2, SSF 1.0 §4.1), the `jti` it is
/// keyed by. In the order of their `jti`s' log positions.
async fn verified_sets(base: &str, issuer: &str, aud: &str, answer: &Value) -> Vec<Value> {
    let jwks: JwkSet = reqwest::get(format!("{base}/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut sets = Vec::new();
    for (jti, token) in answer["sets"].as_object().unwrap() {
        let token = token.as_str().unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("secevent+jwt"));
        let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[aud]);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["iss", "aud"]);
        let claims: Value =
            jsonwebtoken::decode(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
                .expect("a SET that verifies")
                .claims;
        assert_eq!(claims["jti"], *jti);
        assert!(claims.get("exp").is_none() && claims.get("sub").is_none());
        assert!(claims["iat"].is_i64());
        sets.push(claims);
    }
    sets.sort_by_key(|s| position_of(s["jti"].as_str().unwrap()));
    sets
}

/// `stream.ms-seq.index` → `(ms, seq, index)`; verification events (`stream.v.n`) first.
fn position_of(jti: &str) -> (u64, u64, u64) {
    let mut parts = jti.split('.').skip(1);
    let Some((a, b)) = parts.next().unwrap().split_once('-') else {
        return (0, 0, 0);
    };
    let index = parts.next().unwrap().parse().unwrap_or(0);
    (a.parse().unwrap(), b.parse().unwrap(), index)
}

fn event_of(set: &Value) -> (&str, &Value) {
    let events = set["events"].as_object().unwrap();
    assert_eq!(events.len(), 1, "one event per SET: {set}");
    let (uri, body) = events.iter().next().unwrap();
    (uri.as_str(), body)
}

fn jtis(answer: &Value) -> Vec<String> {
    answer["sets"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

async fn a_receiver_learns_every_revocation_as_verifiable_events_within_a_second(backend: Backend) {
    let app = feed_app(backend).await;
    let issuer = app.address.clone();
    let metadata: Value = app
        .get("/.well-known/ssf-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], issuer);
    assert_eq!(metadata["spec_version"], "1_0");
    assert_eq!(
        metadata["jwks_uri"],
        format!("{issuer}/.well-known/jwks.json")
    );
    assert_eq!(metadata["delivery_methods_supported"], json!([POLL]));
    for endpoint in [
        "configuration_endpoint",
        "status_endpoint",
        "verification_endpoint",
    ] {
        assert!(
            metadata[endpoint]
                .as_str()
                .unwrap()
                .starts_with(&format!("{issuer}/ssf/")),
            "{endpoint}"
        );
    }

    let token = receiver_token(&app.client, &issuer, "rs", "ssf.manage ssf.read").await;
    let stream = create_stream(
        &app.client,
        &issuer,
        &token,
        json!({"delivery": {"method": POLL}, "description": "orders api"}),
    )
    .await;
    assert_eq!(stream["iss"], issuer);
    assert_eq!(stream["aud"], "rs");
    assert_eq!(stream["delivery"]["method"], POLL);
    assert_eq!(stream["description"], "orders api");
    assert!(
        stream["events_delivered"]
            .as_array()
            .unwrap()
            .contains(&json!(SESSION_REVOKED))
    );
    let poll_url = text(&stream["delivery"], "endpoint_url");
    let stream_id = text(&stream, "stream_id");
    assert_eq!(poll_url, format!("{issuer}/ssf/poll/{stream_id}"));
    let nothing = poll(
        &app.client,
        &poll_url,
        &token,
        json!({"returnImmediately": true}),
    )
    .await;
    assert_eq!(nothing, json!({"sets": {}, "moreAvailable": false}));

    let alice = app.add_user("alice", PASSWORD).await;
    let bob = app.add_user("bob", PASSWORD).await;
    let first = app.login_ok("alice").await;
    let second = app.login_ok("alice").await;
    app.login_ok("bob").await;
    let first_sid = claims_of(&text(&first, "access_token"))["sid"].clone();
    let second_sid = claims_of(&text(&second, "access_token"))["sid"].clone();

    // A held poll answers as soon as the logout lands.
    let held = {
        let (client, url, token) = (app.client.clone(), poll_url.clone(), token.clone());
        tokio::spawn(async move { poll(&client, &url, &token, json!({})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "nothing to deliver: the poll is held");
    let logged_out = Instant::now();
    assert_eq!(
        app.logout(&text(&first, "refresh_token")).await.status(),
        StatusCode::NO_CONTENT
    );
    let answer = held.await.unwrap();
    let waited = logged_out.elapsed();
    assert!(
        waited < Duration::from_secs(1),
        "the held poll answered {waited:?} after the logout"
    );
    let sets = verified_sets(&issuer, &issuer, "rs", &answer).await;
    assert_eq!(sets.len(), 1, "{answer}");
    let (event, body) = event_of(&sets[0]);
    assert_eq!(event, SESSION_REVOKED);
    assert_eq!(body["initiating_entity"], "user");
    assert!(body["reason_admin"]["en"].is_string());
    assert!(body["event_timestamp"].is_i64());
    assert_eq!(
        sets[0]["sub_id"],
        json!({
            "format": "complex",
            "session": {"format": "opaque", "id": first_sid},
            "user": {"format": "iss_sub", "iss": issuer, "sub": alice.id},
        })
    );
    assert!(sets[0]["txn"].is_string());
    // Not acknowledged: delivered again.
    let again = poll(
        &app.client,
        &poll_url,
        &token,
        json!({"returnImmediately": true}),
    )
    .await;
    assert_eq!(jtis(&again), jtis(&answer));

    // A password change: the credential change, then every session it ended; disabling bob.
    let changed = app
        .client
        .post(app.url("/auth/password"))
        .bearer_auth(text(&second, "access_token"))
        .json(&json!({"current_password": PASSWORD, "new_password": "another long password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    app.flows.accounts().disable("bob").await.unwrap();
    let answer = poll(
        &app.client,
        &poll_url,
        &token,
        json!({"ack": jtis(&answer), "returnImmediately": true}),
    )
    .await;
    let sets = verified_sets(&issuer, &issuer, "rs", &answer).await;
    let seen: Vec<(&str, &Value)> = sets.iter().map(|s| (event_of(s).0, &s["sub_id"])).collect();
    assert_eq!(seen.len(), 4, "{answer}");
    assert_eq!(seen[0].0, CREDENTIAL_CHANGE);
    assert_eq!(
        *seen[0].1,
        json!({"format": "iss_sub", "iss": issuer, "sub": alice.id})
    );
    assert_eq!(event_of(&sets[0]).1["credential_type"], "password");
    assert_eq!(seen[1].0, SESSION_REVOKED);
    assert_eq!(seen[1].1["session"]["id"], second_sid);
    assert_eq!(seen[2].0, ACCOUNT_DISABLED);
    assert_eq!(seen[2].1["sub"], bob.id);
    assert_eq!(event_of(&sets[2]).1["initiating_entity"], "admin");
    assert_eq!(seen[3].0, SESSION_REVOKED);
    assert_eq!(seen[3].1["user"]["sub"], bob.id);
    // maxEvents pages; acknowledging everything leaves nothing.
    let page = poll(
        &app.client,
        &poll_url,
        &token,
        json!({"maxEvents": 1, "returnImmediately": true}),
    )
    .await;
    assert_eq!(page["sets"].as_object().unwrap().len(), 1);
    assert_eq!(page["moreAvailable"], true);
    let rest = poll(
        &app.client,
        &poll_url,
        &token,
        json!({"ack": jtis(&answer), "returnImmediately": true}),
    )
    .await;
    assert_eq!(rest, json!({"sets": {}, "moreAvailable": false}));
}

async fn a_new_stream_starts_with_every_revocation_still_retained(backend: Backend) {
    let app = feed_app(backend).await;
    let issuer = app.address.clone();
    app.add_user("alice", PASSWORD).await;
    let session = app.login_ok("alice").await;
    app.logout(&text(&session, "refresh_token")).await;

    let token = receiver_token(&app.client, &issuer, "rs", "ssf.manage ssf.read").await;
    let stream = create_stream(&app.client, &issuer, &token, json!({})).await;
    let poll_url = text(&stream["delivery"], "endpoint_url");
    let answer = poll(
        &app.client,
        &poll_url,
        &token,
        json!({"returnImmediately": true}),
    )
    .await;
    let sets = verified_sets(&issuer, &issuer, "rs", &answer).await;
    assert_eq!(sets.len(), 1, "the logout before the stream existed");
    assert_eq!(event_of(&sets[0]).0, SESSION_REVOKED);
    poll(
        &app.client,
        &poll_url,
        &token,
        json!({"ack": jtis(&answer), "returnImmediately": true, "maxEvents": 0}),
    )
    .await;
    let stream_id = text(&stream, "stream_id");

    // The stream is its receiver's alone.
    let other = receiver_token(&app.client, &issuer, "other", "ssf.manage ssf.read").await;
    let foreign = app
        .client
        .post(&poll_url)
        .bearer_auth(&other)
        .json(&json!({"returnImmediately": true}))
        .send()
        .await
        .unwrap();
    assert_error(foreign, StatusCode::NOT_FOUND, "invalid_request").await;
    let listed: Value = app
        .client
        .get(app.url("/ssf/stream"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([]));
    // Who may call: a reader cannot manage, a user's token is no receiver's, and none is 401.
    let reader = receiver_token(&app.client, &issuer, "reader", "ssf.read").await;
    let refused = app
        .client
        .post(app.url("/ssf/stream"))
        .bearer_auth(&reader)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(
        refused.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    assert_error(refused, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let users = app
        .client
        .get(app.url("/ssf/stream"))
        .bearer_auth(text(&app.login_ok("alice").await, "access_token"))
        .send()
        .await
        .unwrap();
    assert_error(users, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let anonymous = app
        .client
        .post(&poll_url)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Management: read, narrow the events, pause, verify, delete.
    let listed: Value = app
        .client
        .get(app.url("/ssf/stream"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["stream_id"], stream_id);
    let patched: Value = app
        .client
        .patch(app.url("/ssf/stream"))
        .bearer_auth(&token)
        .json(&json!({"stream_id": stream_id, "events_requested": [SESSION_REVOKED, VERIFICATION, "urn:example:unknown"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        patched["events_delivered"],
        json!([SESSION_REVOKED, VERIFICATION])
    );
    let push = app
        .client
        .post(app.url("/ssf/stream"))
        .bearer_auth(&token)
        .json(&json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "https://rs.example/events"}}))
        .send()
        .await
        .unwrap();
    assert_error(push, StatusCode::BAD_REQUEST, "invalid_request").await;

    let status_url = app.url(&format!("/ssf/status?stream_id={stream_id}"));
    let paused: Value = app
        .client
        .post(app.url("/ssf/status"))
        .bearer_auth(&token)
        .json(&json!({"stream_id": stream_id, "status": "paused", "reason": "maintenance"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        paused,
        json!({"stream_id": stream_id, "status": "paused", "reason": "maintenance"})
    );
    let read: Value = app
        .client
        .get(&status_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["status"], "paused");
    let session = app.login_ok("alice").await;
    app.logout(&text(&session, "refresh_token")).await;
    let held_back = poll(
        &app.client,
        &poll_url,
        &token,
        json!({"returnImmediately": true}),
    )
    .await;
    assert_eq!(
        held_back["sets"],
        json!({}),
        "a paused stream delivers nothing"
    );
    app.client
        .post(app.url("/ssf/status"))
        .bearer_auth(&token)
        .json(&json!({"stream_id": stream_id, "status": "enabled"}))
        .send()
        .await
        .unwrap();
    let verify = app
        .client
        .post(app.url("/ssf/verify"))
        .bearer_auth(&token)
        .json(&json!({"stream_id": stream_id, "state": "abc123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(verify.status(), StatusCode::NO_CONTENT);
    let only_acks = poll(
        &app.client,
        &poll_url,
        &token,
        json!({"returnImmediately": true, "maxEvents": 0}),
    )
    .await;
    assert_eq!(only_acks["sets"], json!({}), "maxEvents 0 delivers nothing");
    for malformed in ["abc", "..%2F..%2Fx", &"f".repeat(33)] {
        let answer = app
            .client
            .post(app.url(&format!("/ssf/poll/{malformed}")))
            .bearer_auth(&token)
            .json(&json!({"returnImmediately": true}))
            .send()
            .await
            .unwrap();
        assert_error(answer, StatusCode::NOT_FOUND, "invalid_request").await;
    }
    let answer = poll(
        &app.client,
        &poll_url,
        &token,
        json!({"returnImmediately": true}),
    )
    .await;
    let sets = verified_sets(&issuer, &issuer, "rs", &answer).await;
    let kinds: Vec<&str> = sets.iter().map(|s| event_of(s).0).collect();
    assert!(kinds.contains(&VERIFICATION), "{kinds:?}");
    assert!(
        kinds.contains(&SESSION_REVOKED),
        "held while paused, delivered once enabled"
    );
    let verification = sets.iter().find(|s| event_of(s).0 == VERIFICATION).unwrap();
    assert_eq!(event_of(verification).1["state"], "abc123");
    assert_eq!(
        verification["sub_id"],
        json!({"format": "opaque", "id": stream_id})
    );

    let deleted = app
        .client
        .delete(app.url(&format!("/ssf/stream?stream_id={stream_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = app
        .client
        .post(&poll_url)
        .bearer_auth(&token)
        .json(&json!({"returnImmediately": true}))
        .send()
        .await
        .unwrap();
    assert_error(gone, StatusCode::NOT_FOUND, "invalid_request").await;
}

/// Two instances on one Redis: a stream made on one is polled on the other, which answers a
/// held poll when the first revokes; SIGTERM answers a held poll at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_instance_answers_any_poll_and_a_stopping_one_lets_go_at_once() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path(), &redis.url());
    receivers(&mut config, &hash(RECEIVER_SECRET).await);
    let path = dir.path().join("latchkey.toml");
    std::fs::write(&path, &config.text).unwrap();
    assert!(
        run_with_stdin(latchkey(&["users", "add", "alice"], &path), PASSWORD)
            .status
            .success()
    );
    let a = ServeProcess::start(&path).await;
    let b = ServeProcess::start(&path).await;
    let client = reqwest::Client::new();
    let token = receiver_token(&client, &a.address, "rs", "ssf.manage ssf.read").await;
    let stream = create_stream(&client, &a.address, &token, json!({})).await;
    let stream_id = text(&stream, "stream_id");
    let on_b = format!("{}/ssf/poll/{stream_id}", b.address);

    let held = {
        let (client, url, token) = (client.clone(), on_b.clone(), token.clone());
        tokio::spawn(async move { poll(&client, &url, &token, json!({})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let login: Value = client
        .post(format!("{}/auth/login", a.address))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revoked = Instant::now();
    client
        .post(format!("{}/auth/logout", a.address))
        .json(&json!({"refresh_token": text(&login, "refresh_token")}))
        .send()
        .await
        .unwrap();
    let answer = held.await.unwrap();
    assert!(revoked.elapsed() < Duration::from_secs(1));
    assert_eq!(answer["sets"].as_object().unwrap().len(), 1, "{answer}");

    // Acknowledged on b; a held poll on a is answered when a is told to stop.
    poll(
        &client,
        &on_b,
        &token,
        json!({"ack": jtis(&answer), "maxEvents": 0}),
    )
    .await;
    let on_a = format!("{}/ssf/poll/{stream_id}", a.address);
    let held = {
        let (client, token) = (client.clone(), token.clone());
        tokio::spawn(async move { poll(&client, &on_a, &token, json!({})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let answer = held.await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "held {:?} after SIGTERM",
        stopping.elapsed()
    );
    assert_eq!(answer, json!({"sets": {}, "moreAvailable": false}));
}

/// Verifies `token` every 10 ms until the verifier refuses it as revoked; how long that took.
async fn until_refused(verifier: &latchkey_verify::Verifier, token: &str) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        match verifier.verify(token).await {
            Err(e) if e.kind() == latchkey_verify::ErrorKind::Revoked => return started.elapsed(),
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    panic!("still accepted 5 s after its revocation");
}

async fn latchkey_verify_refuses_a_revoked_sessions_tokens_within_a_second(backend: Backend) {
    let app = feed_app(backend).await;
    let issuer = app.address.clone();
    app.add_user("alice", PASSWORD).await;
    let before = app.login_ok("alice").await;
    app.logout(&text(&before, "refresh_token")).await;
    let kept = app.login_ok("alice").await;
    let other = app.login_ok("alice").await;

    // With the verified-token cache: its hits check the revocation set too.
    let verifier = latchkey_verify::Verifier::from_issuer(&issuer, "api")
        .token_cache(1000)
        .build()
        .unwrap();
    let feed = verifier
        .follow_revocations(latchkey_verify::FeedSettings::new("rs", RECEIVER_SECRET))
        .await
        .unwrap();
    // Revoked before this process subscribed: refused from the first request on.
    let early = verifier
        .verify(&text(&before, "access_token"))
        .await
        .unwrap_err();
    assert_eq!(early.kind(), latchkey_verify::ErrorKind::Revoked);
    assert_eq!(early.to_string(), "session revoked");
    verifier
        .verify(&text(&kept, "access_token"))
        .await
        .expect("a live session's token");

    app.logout(&text(&kept, "refresh_token")).await;
    let took = until_refused(&verifier, &text(&kept, "access_token")).await;
    assert!(
        took < Duration::from_secs(1),
        "refused {took:?} after the logout"
    );
    verifier
        .verify(&text(&other, "access_token"))
        .await
        .expect("another session is untouched");

    // A password change ends every session; a login after it works at once.
    let changed = app
        .client
        .post(app.url("/auth/password"))
        .bearer_auth(text(&other, "access_token"))
        .json(&json!({"current_password": PASSWORD, "new_password": "another long password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    until_refused(&verifier, &text(&other, "access_token")).await;
    let fresh = app
        .login("alice", "another long password")
        .await
        .json::<Value>()
        .await
        .unwrap();
    verifier
        .verify(&text(&fresh, "access_token"))
        .await
        .expect("a session begun after the change");

    let status = feed.status();
    assert!(status.up && status.down_for.is_none(), "{status:?}");
    assert!(
        status
            .last_lag
            .is_some_and(|lag| lag < Duration::from_secs(3)),
        "{status:?}"
    );
    assert!(status.events_applied >= 4, "{status:?}");
    assert!(status.tokens_refused >= 3, "{status:?}");
    assert_eq!(
        status.revoked_held, 4,
        "three sessions and one subject: {status:?}"
    );
}

async fn latchkey_verify_goes_on_by_signature_while_the_feed_is_down_or_fails_closed_when_asked(
    backend: Backend,
) {
    let app = feed_app(backend).await;
    let issuer = app.address.clone();
    app.add_user("alice", PASSWORD).await;
    let session = app.login_ok("alice").await;
    let token = text(&session, "access_token");
    let open = latchkey_verify::Verifier::from_issuer(&issuer, "api")
        .build()
        .unwrap();
    let closed = latchkey_verify::Verifier::from_issuer(&issuer, "api")
        .build()
        .unwrap();
    let open_feed = open
        .follow_revocations(
            latchkey_verify::FeedSettings::new("rs", RECEIVER_SECRET)
                .max_backoff(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    let closed_feed = closed
        .follow_revocations(
            latchkey_verify::FeedSettings::new("rs", RECEIVER_SECRET)
                .fail_closed_after(Duration::from_secs(1))
                .max_backoff(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    open.verify(&token).await.unwrap();
    closed.verify(&token).await.unwrap();

    // The issuer goes away: held polls are let go, and the next ones find nobody.
    app.flows.start_draining();
    app.stop().await;
    let down = Instant::now();
    while open_feed.status().up && down.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!open_feed.status().up, "the feed is seen down");
    open.verify(&token)
        .await
        .expect("verified by signature while the feed is down");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!closed_feed.status().up);
    assert!(closed_feed.status().down_for.unwrap() >= Duration::from_secs(1));
    let refused = closed.verify(&token).await.unwrap_err();
    assert_eq!(
        refused.kind(),
        latchkey_verify::ErrorKind::RevocationsUnknown
    );
    assert!(!refused.is_token_error(), "a 503, not the token's fault");
    open.verify(&token).await.expect("fail-open by default");
}

/// Both example resource servers, their verifiers following the feed: a revoked session's token
/// gets 401 `invalid_token` ("session revoked") within a second.
#[tokio::test]
async fn the_example_resource_servers_refuse_a_revoked_sessions_token() {
    let app = feed_app(Backend::Embedded).await;
    let issuer = app.address.clone();
    app.add_user("alice", PASSWORD).await;
    let verifier = latchkey_verify::Verifier::from_issuer(&issuer, "api")
        .build()
        .unwrap();
    let _feed = verifier
        .follow_revocations(latchkey_verify::FeedSettings::new("rs", RECEIVER_SECRET))
        .await
        .unwrap();
    let actix_verifier = verifier.clone();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(actix_web::web::Data::new(actix_verifier.clone()))
            .configure(crate::verifier::resource_server::routes)
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let actix_url = format!("http://{}/users", server.addrs()[0]);
    tokio::spawn(server.run());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let axum_url = format!("http://{}/users", listener.local_addr().unwrap());
    let router = crate::dpop::axum_example::router(verifier);
    tokio::spawn(async move { axum::serve(listener, router).await });

    let session = app.login_ok("alice").await;
    let token = text(&session, "access_token");
    for url in [&actix_url, &axum_url] {
        let ok = app
            .client
            .get(url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK, "{url}");
    }
    app.logout(&text(&session, "refresh_token")).await;
    let revoked = Instant::now();
    for url in [&actix_url, &axum_url] {
        loop {
            let answer = app
                .client
                .get(url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            if answer.status() == StatusCode::UNAUTHORIZED {
                let challenge = answer.headers()["www-authenticate"].to_str().unwrap();
                assert!(
                    challenge.contains("invalid_token") && challenge.contains("session revoked"),
                    "{challenge}"
                );
                break;
            }
            assert_eq!(answer.status(), StatusCode::OK);
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "{url} still accepts the token"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A push receiver (RFC 8935): records each POST's content type, `Authorization` and body, and
/// answers the next scripted status (202 once the script is used up).
struct PushReceiver {
    url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
}

async fn push_receiver(script: &[u16]) -> PushReceiver {
    use std::sync::{Arc, Mutex};
    let received = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(
        script
            .iter()
            .copied()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    let (kept, next) = (Arc::clone(&received), Arc::clone(&statuses));
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (kept, next) = (Arc::clone(&kept), Arc::clone(&next));
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default()
                };
                kept.lock()
                    .unwrap()
                    .push((header("content-type"), header("authorization"), body));
                let status = next.lock().unwrap().pop_front().unwrap_or(202);
                let body = if status == 400 {
                    r#"{"err":"invalid_key","description":"unknown key"}"#
                } else {
                    ""
                };
                (axum::http::StatusCode::from_u16(status).unwrap(), body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    PushReceiver { url, received }
}

impl PushReceiver {
    /// What arrived, once `count` pushes did (waiting at most 15 s).
    async fn wait_for(&self, count: usize) -> Vec<(String, String, String)> {
        for _ in 0..300 {
            let received = self.received.lock().unwrap().clone();
            if received.len() >= count {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{count} pushes expected, {} arrived",
            self.received.lock().unwrap().len()
        );
    }
}

async fn events_are_pushed_only_to_allowed_urls_and_retried_until_accepted(backend: Backend) {
    // 503 first (retried), then 400 for the next event (refused: not sent again), then 202s.
    let rs = push_receiver(&[503, 202, 400]).await;
    let secret_hash = hash(RECEIVER_SECRET).await;
    let allowed = rs.url.clone();
    let app = spawn_app_with(backend, move |c| {
        c.issuer_on_own_port();
        receivers(c, &secret_hash);
        c.text
            .push_str(&format!("\n[feed]\npush_endpoints = [\"{allowed}\"]\n"));
    })
    .await;
    let issuer = app.address.clone();
    let metadata: Value = app
        .get("/.well-known/ssf-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        metadata["delivery_methods_supported"],
        json!([POLL, "urn:ietf:rfc:8935"])
    );
    let token = receiver_token(&app.client, &issuer, "rs", "ssf.manage ssf.read").await;
    let elsewhere = app
        .client
        .post(app.url("/ssf/stream"))
        .bearer_auth(&token)
        .json(&json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "http://127.0.0.1:9/events"}}))
        .send()
        .await
        .unwrap();
    let refused = assert_error(elsewhere, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(
        refused["error_description"]
            .as_str()
            .unwrap()
            .contains("not one of the push endpoints")
    );
    let stream = create_stream(
        &app.client,
        &issuer,
        &token,
        json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": rs.url, "authorization_header": "Bearer push-secret"}}),
    )
    .await;
    assert_eq!(
        stream["delivery"],
        json!({"method": "urn:ietf:rfc:8935", "endpoint_url": rs.url}),
        "the authorization header is never shown"
    );
    let polled = app
        .client
        .post(app.url(&format!("/ssf/poll/{}", text(&stream, "stream_id"))))
        .bearer_auth(&token)
        .json(&json!({"returnImmediately": true}))
        .send()
        .await
        .unwrap();
    assert_error(polled, StatusCode::BAD_REQUEST, "invalid_request").await;

    app.add_user("alice", PASSWORD).await;
    let first = app.login_ok("alice").await;
    let second = app.login_ok("alice").await;
    let third = app.login_ok("alice").await;
    app.logout(&text(&first, "refresh_token")).await;
    // 503, then the retry's 202.
    let received = rs.wait_for(2).await;
    assert_eq!(
        claims_of(&received[0].2)["jti"],
        claims_of(&received[1].2)["jti"],
        "the same event again"
    );
    app.logout(&text(&second, "refresh_token")).await;
    app.logout(&text(&third, "refresh_token")).await;
    // The second logout's event is refused (400) and not sent again; the third's is accepted.
    let received = rs.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let received_later = rs.received.lock().unwrap().clone();
    assert_eq!(received_later.len(), 4, "nothing more: {received_later:?}");
    let sids: Vec<Value> = [&first, &second, &third]
        .iter()
        .map(|s| claims_of(&text(s, "access_token"))["sid"].clone())
        .collect();
    let issuer_jwks = issuer.clone();
    for (i, (content_type, authorization, body)) in received.iter().enumerate() {
        assert_eq!(content_type, "application/secevent+jwt");
        assert_eq!(authorization, "Bearer push-secret");
        let answer = json!({"sets": {format!("push{i}"): body}});
        let mut sets = verified_sets(&issuer_jwks, &issuer, "rs", &answer_with_jti(&answer)).await;
        let set = sets.remove(0);
        assert_eq!(event_of(&set).0, SESSION_REVOKED);
        let expected = [0, 0, 1, 2][i];
        assert_eq!(set["sub_id"]["session"]["id"], sids[expected], "push {i}");
    }
    let metrics = crate::metrics::scrape(&app).await;
    assert_eq!(
        crate::metrics::sample(
            &metrics,
            "latchkey_feed_pushes_total{outcome=\"delivered\"}"
        ),
        2.0
    );
    assert_eq!(
        crate::metrics::sample(&metrics, "latchkey_feed_pushes_total{outcome=\"refused\"}"),
        1.0
    );
}

/// A poll-shaped answer keyed by each SET's own `jti` (what [`verified_sets`] checks).
fn answer_with_jti(answer: &Value) -> Value {
    let mut sets = serde_json::Map::new();
    for token in answer["sets"].as_object().unwrap().values() {
        let claims = claims_of(token.as_str().unwrap());
        sets.insert(claims["jti"].as_str().unwrap().to_owned(), token.clone());
    }
    json!({"sets": sets})
}

/// A reload that removes a client ends its sessions at once: resource servers following the feed
/// refuse their tokens within a second, and their refresh tokens are dead.
#[tokio::test]
async fn removing_a_client_at_a_reload_revokes_its_sessions() {
    const KIOSK: &str =
        "\n[[clients]]\nid = \"kiosk\"\ntype = \"public\"\ngrants = [\"refresh_token\"]\n";
    let secret_hash = hash(RECEIVER_SECRET).await;
    let app = spawn_app_with(Backend::Redis, move |c| {
        c.issuer_on_own_port();
        receivers(c, &secret_hash);
        c.text.push_str(KIOSK);
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    let kiosk: Value = app
        .post_json(
            "/auth/login",
            &json!({"username": "alice", "password": PASSWORD, "client_id": "kiosk"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        claims_of(&text(&kiosk, "access_token"))["client_id"],
        "kiosk"
    );
    let other = app.login_ok("alice").await;
    let verifier = latchkey_verify::Verifier::from_issuer(&app.address, "api")
        .build()
        .unwrap();
    let _feed = verifier
        .follow_revocations(latchkey_verify::FeedSettings::new("rs", RECEIVER_SECRET))
        .await
        .unwrap();
    verifier
        .verify(&text(&kiosk, "access_token"))
        .await
        .unwrap();

    std::fs::write(&app.config_path, app.config_text.replace(KIOSK, "")).unwrap();
    app.reload().await.unwrap();
    let took = until_refused(&verifier, &text(&kiosk, "access_token")).await;
    assert!(
        took < Duration::from_secs(1),
        "refused {took:?} after the reload"
    );
    verifier
        .verify(&text(&other, "access_token"))
        .await
        .expect("another client's session stays");
    assert_eq!(
        app.refresh(&text(&kiosk, "refresh_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
