//! The store conformance suite: written once, run against every backend. A new backend is done
//! when it passes all of this.

use std::collections::HashSet;
use std::time::Duration;

use latchkey::store::{
    Channel, Invalid, LogNote, NewSession, ReuseCause, RevocationReason, RotateOutcome, Rotation,
    SharedStore, StoreError, User,
};
use latchkey::tokens::{RefreshToken, TokenId, new_session_id};
use tempfile::TempDir;
use uuid::Uuid;

use crate::helpers::{Backend, RedisCluster, RedisServer};

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded_store {
            $(#[tokio::test]
            async fn $name() {
                let fixture = super::Fixture::new(crate::helpers::Backend::Embedded).await;
                super::$name(&fixture.store).await
            })*
        }
        mod redis_store {
            $(#[tokio::test]
            async fn $name() {
                let fixture = super::Fixture::new(crate::helpers::Backend::Redis).await;
                super::$name(&fixture.store).await
            })*
        }
        /// Every step of a family or a user in one hash slot: the same suite on three masters.
        mod redis_cluster_store {
            $(#[tokio::test]
            async fn $name() {
                let fixture = super::Fixture::new(crate::helpers::Backend::RedisCluster).await;
                super::$name(&fixture.store).await
            })*
        }
    };
}

conformance!(
    users_are_unique_by_name,
    deleting_a_user_ends_its_sessions_and_frees_its_name,
    a_token_presented_by_another_client_or_way_is_refused_unconsumed,
    a_dpop_bound_family_refreshes_only_with_its_key,
    a_user_and_a_session_read_together_answer_as_read_apart,
    credential_changes_end_every_session_and_void_logins_in_flight,
    replay_within_grace_after_the_successor_was_used_is_reuse,
    rotation_swaps_the_live_token,
    replay_within_grace_returns_the_first_sealed_successor,
    presentation_after_grace_revokes_the_family,
    zero_grace_treats_any_second_presentation_as_reuse,
    racing_rotations_yield_one_successor,
    idle_and_absolute_expiry_are_checked_on_read,
    logout_needs_a_token_of_the_family,
    revocation_by_session_and_by_user,
    sessions_are_listed_per_user,
    key_publications_keep_the_first_instant,
    sign_in_records_expire_by_the_callers_clock_and_swap_once,
    every_revocation_is_logged_once_in_order,
    the_revocation_log_forgets_records_past_their_keep,
    a_removed_clients_sessions_end_each_logged,
);

const T0: i64 = 1_800_000_000_000;
const IDLE: i64 = 3_600_000;
const GRACE: i64 = 10_000;
const FAMILY: i64 = 4 * IDLE;
/// How long the revocation log keeps a record in these tests.
const RETENTION: i64 = 900_000;

/// A revocation-log note at `T0`.
fn n(reason: RevocationReason) -> LogNote {
    LogNote {
        reason,
        at: T0,
        keep_until: T0 + RETENTION,
    }
}

struct Fixture {
    store: SharedStore,
    dir: TempDir,
    redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let redis = (backend == Backend::Redis).then(RedisServer::start);
        let cluster = (backend == Backend::RedisCluster).then(|| RedisCluster::start(3));
        let url = match (&redis, &cluster) {
            (Some(r), _) => r.url(),
            (_, Some(c)) => c.url(),
            _ => format!("sqlite://{}", dir.path().join("store.db").display()),
        };
        let store = latchkey::store::open(&url).await.unwrap();
        // Sessions belong to users that exist: creating one checks the user's state.
        for id in ["u1", "u2"] {
            store
                .create_user(&user(id, &format!("user-{id}")))
                .await
                .unwrap();
        }
        Fixture {
            store,
            dir,
            redis,
            _cluster: cluster,
        }
    }

    /// Runs `during` while the store answers nothing for `pause`: Redis stopped by SIGSTOP, the
    /// embedded file's write lock held by another connection.
    async fn stalled<T>(&self, pause: Duration, during: impl Future<Output = T>) -> T {
        let holder = match &self.redis {
            Some(redis) => {
                redis.signal("-STOP");
                None
            }
            None => {
                let holder = rusqlite::Connection::open(self.dir.path().join("store.db")).unwrap();
                holder.execute_batch("BEGIN IMMEDIATE").unwrap();
                Some(holder)
            }
        };
        let resume = async {
            tokio::time::sleep(pause).await;
            match &holder {
                Some(holder) => holder.execute_batch("COMMIT").unwrap(),
                None => self.redis.as_ref().unwrap().signal("-CONT"),
            }
        };
        let (out, ()) = tokio::join!(during, resume);
        out
    }
}

mod stalled_store {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_starts_the_grace_window_when_the_token_is_consumed() {
        let fixture = Fixture::new(Backend::Redis).await;
        a_late_rotation_starts_its_grace_window_when_it_ran(&fixture).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_starts_the_grace_window_when_the_token_is_consumed() {
        let fixture = Fixture::new(Backend::Embedded).await;
        a_late_rotation_starts_its_grace_window_when_it_ran(&fixture).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_runs_nothing_its_caller_gave_up_on() {
        let fixture = Fixture::new(Backend::Redis).await;
        a_rotation_its_caller_gave_up_on_changes_nothing(&fixture).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_runs_nothing_its_caller_gave_up_on() {
        let fixture = Fixture::new(Backend::Embedded).await;
        a_rotation_its_caller_gave_up_on_changes_nothing(&fixture).await
    }
}

/// A rotation still queued when its caller gave up (answered 503) must change nothing when the
/// store resumes: the token stays live, and its next presentation is a first rotation, not a
/// replay of a successor that nobody received. (The embedded writer skips the write; on Redis the
/// command usually dies with the connection the client drops after its timeout, and the deadline
/// rotate.lua checks covers a connection that survives.)
async fn a_rotation_its_caller_gave_up_on_changes_nothing(fixture: &Fixture) {
    let store = &fixture.store;
    let (sid, t1) = new_session(store, "u1", T0).await;
    let (first, _) = rotation(sid, t1, T0);
    let outcome = fixture
        .stalled(Duration::from_millis(4_500), store.rotate(&first))
        .await;
    assert!(
        matches!(outcome, Err(StoreError::Unavailable(_))),
        "the caller did not give up: {outcome:?}"
    );
    // The queued command (Redis) or write (embedded) gets its turn now; give it that turn.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (again, successor) = rotation(sid, t1, T0 + 100);
    match store.rotate(&again).await.unwrap() {
        RotateOutcome::Rotated(_) => {}
        other => panic!("the abandoned rotation ran after all: {other:?}"),
    }
    let (next, _) = rotate(store, sid, successor, T0 + 200).await;
    assert!(matches!(next, RotateOutcome::Rotated(_)), "{next:?}");
}

/// A rotation that waited 1.2 s for a stalled store, but ran before its caller's deadline, may
/// have its answer lost on the way back (the caller timed out just as it arrived). The caller
/// presents the same token again 0.4 s after it was consumed: that is within the 1 s grace window
/// and must be a replay, not reuse, though it is 1.6 s after the first request was made.
async fn a_late_rotation_starts_its_grace_window_when_it_ran(fixture: &Fixture) {
    let store = &fixture.store;
    let (sid, t1) = new_session(store, "u1", T0).await;
    let (mut first, successor) = rotation(sid, t1, T0);
    first.grace_ms = 1_000;
    let outcome = fixture
        .stalled(Duration::from_millis(1_200), store.rotate(&first))
        .await
        .unwrap();
    assert!(
        matches!(outcome, RotateOutcome::Rotated(_)),
        "the stalled rotation did not run: {outcome:?}"
    );
    let (mut again, _) = rotation(sid, t1, T0 + 1_600);
    again.grace_ms = 1_000;
    match store.rotate(&again).await.unwrap() {
        RotateOutcome::Replayed {
            sealed_successor, ..
        } => assert_eq!(sealed_successor, first.sealed_successor),
        other => panic!("a presentation within the grace window of the consumption: {other:?}"),
    }
    // The chain goes on from the successor the lost answer carried.
    let (next, _) = rotate(store, sid, successor, T0 + 1_700).await;
    assert!(matches!(next, RotateOutcome::Rotated(_)), "{next:?}");
}

fn user(id: &str, username: &str) -> User {
    User {
        id: id.into(),
        username: username.into(),
        password_hash: "$argon2id$x".into(),
        disabled: false,
        created_at: T0,
        epoch: 0,
        scopes: Vec::new(),
        email: None,
        email_verified: false,
        name: None,
        preferred_username: None,
    }
}

fn token(sid: Uuid) -> TokenId {
    RefreshToken::generate(sid).unwrap().id()
}

async fn new_session(store: &SharedStore, user_id: &str, now: i64) -> (Uuid, TokenId) {
    let epoch = store.user_by_id(user_id).await.unwrap().unwrap().epoch;
    let (sid, first, created) = try_session(store, user_id, now, epoch).await;
    assert!(created, "the session of {user_id} was not created");
    (sid, first)
}

async fn try_session(
    store: &SharedStore,
    user_id: &str,
    now: i64,
    user_epoch: u64,
) -> (Uuid, TokenId, bool) {
    try_session_of(store, user_id, "web", now, user_epoch).await
}

async fn try_session_of(
    store: &SharedStore,
    user_id: &str,
    client_id: &str,
    now: i64,
    user_epoch: u64,
) -> (Uuid, TokenId, bool) {
    let sid = new_session_id(user_id).unwrap();
    let first = token(sid);
    let created = store
        .create_session(&NewSession {
            id: sid,
            user_id: user_id.into(),
            client_id: client_id.into(),
            scope: "read".into(),
            created_at: now,
            expires_at: now + FAMILY,
            user_agent: "test".into(),
            ip: "127.0.0.1".into(),
            first_token: first,
            first_token_expires_at: now + IDLE,
            user_epoch,
            channel: Channel::Body,
            dpop_jkt: None,
        })
        .await
        .unwrap();
    (sid, first, created)
}

fn rotation(sid: Uuid, presented: TokenId, now: i64) -> (Rotation, TokenId) {
    let successor = token(sid);
    let sealed = successor.0.iter().rev().copied().collect();
    (
        Rotation {
            session_id: sid,
            presented,
            successor,
            sealed_successor: sealed,
            now,
            idle_ttl_ms: IDLE,
            grace_ms: GRACE,
            user_agent: "test".into(),
            ip: "127.0.0.1".into(),
            client_id: None,
            channel: Channel::Body,
            dpop_jkt: None,
            log_keep_until: now + 900_000,
        },
        successor,
    )
}

async fn rotate(
    store: &SharedStore,
    sid: Uuid,
    presented: TokenId,
    now: i64,
) -> (RotateOutcome, TokenId) {
    let (r, successor) = rotation(sid, presented, now);
    (store.rotate(&r).await.unwrap(), successor)
}

async fn users_are_unique_by_name(store: &SharedStore) {
    let user = user(&Uuid::new_v4().to_string(), "alice");
    store.create_user(&user).await.unwrap();
    let twin = User {
        id: Uuid::new_v4().to_string(),
        ..user.clone()
    };
    assert!(matches!(
        store.create_user(&twin).await,
        Err(StoreError::Conflict)
    ));

    assert_eq!(
        store.user_by_name("alice").await.unwrap(),
        Some(user.clone())
    );
    assert_eq!(
        store.user_by_id(&user.id).await.unwrap(),
        Some(user.clone())
    );
    assert_eq!(store.user_by_name("Alice").await.unwrap(), None);

    // Each change of credentials or status bumps the epoch.
    assert_eq!(
        store
            .set_password(
                &user.id,
                "$argon2id$y",
                &n(RevocationReason::PasswordChanged)
            )
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(
        store
            .set_disabled(&user.id, true, &n(RevocationReason::UserDisabled))
            .await
            .unwrap(),
        Some(0)
    );
    let changed = User {
        password_hash: "$argon2id$y".into(),
        disabled: true,
        epoch: 2,
        ..user.clone()
    };
    assert_eq!(
        store.user_by_id(&user.id).await.unwrap(),
        Some(changed.clone())
    );
    let listed = store.list_users().await.unwrap();
    assert!(listed.contains(&changed), "{listed:?}");
    assert_eq!(
        store
            .set_password("nobody", "$x", &n(RevocationReason::PasswordChanged))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .set_disabled("nobody", true, &n(RevocationReason::UserDisabled))
            .await
            .unwrap(),
        None
    );

    // The profile claims round-trip, and changing them bumps no epoch.
    let profile = latchkey::store::UserAttributes {
        scopes: vec!["admin".into()],
        email: Some("alice@example.com".into()),
        email_verified: true,
        name: Some("Alice Liddell".into()),
        preferred_username: Some("Alice L.".into()),
    };
    assert!(store.set_user_attributes(&user.id, &profile).await.unwrap());
    let with_profile = User {
        scopes: profile.scopes.clone(),
        email: profile.email.clone(),
        email_verified: true,
        name: profile.name.clone(),
        preferred_username: profile.preferred_username.clone(),
        ..changed.clone()
    };
    assert_eq!(
        store.user_by_name("alice").await.unwrap(),
        Some(with_profile.clone())
    );
    let created = User {
        id: Uuid::new_v4().to_string(),
        username: "carol".into(),
        ..with_profile
    };
    store.create_user(&created).await.unwrap();
    assert_eq!(
        store.user_by_id(&created.id).await.unwrap(),
        Some(created.clone())
    );
    assert!(!store.set_user_attributes("nobody", &profile).await.unwrap());
}

async fn credential_changes_end_every_session_and_void_logins_in_flight(store: &SharedStore) {
    let (a, ta) = new_session(store, "u1", T0).await;
    let (b, _) = new_session(store, "u1", T0).await;
    let (other, to) = new_session(store, "u2", T0).await;

    // A password change ends both sessions in the same step that bumps the epoch…
    assert_eq!(
        store
            .set_password("u1", "$argon2id$new", &n(RevocationReason::PasswordChanged))
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(store.session(a, T0).await.unwrap(), None);
    assert_eq!(store.session(b, T0).await.unwrap(), None);
    assert!(matches!(
        rotate(store, a, ta, T0 + 1).await.0,
        RotateOutcome::Invalid(_)
    ));
    // …and a login that checked the old password cannot create its session afterwards.
    let (_, _, created) = try_session(store, "u1", T0 + 1, 0).await;
    assert!(!created, "a login in flight survived the password change");
    let (_, _, created) = try_session(store, "u1", T0 + 1, 1).await;
    assert!(created, "a login with the new password");

    // Disabled: no session at any epoch.
    assert_eq!(
        store
            .set_disabled("u1", true, &n(RevocationReason::UserDisabled))
            .await
            .unwrap(),
        Some(1)
    );
    for epoch in 0..4 {
        let (_, _, created) = try_session(store, "u1", T0 + 2, epoch).await;
        assert!(!created, "a session of a disabled user at epoch {epoch}");
    }
    assert!(store.sessions_of("u1", T0 + 2).await.unwrap().is_empty());
    // Other users are untouched.
    assert!(store.session(other, T0 + 2).await.unwrap().is_some());
    assert!(matches!(
        rotate(store, other, to, T0 + 2).await.0,
        RotateOutcome::Rotated(_)
    ));
}

async fn a_token_presented_by_another_client_or_way_is_refused_unconsumed(store: &SharedStore) {
    let (sid, t1) = new_session(store, "u1", T0).await;

    let (mut other_client, _) = rotation(sid, t1, T0);
    other_client.client_id = Some("other".into());
    assert_eq!(
        store.rotate(&other_client).await.unwrap(),
        RotateOutcome::Invalid(Invalid::WrongClient)
    );
    let (mut by_cookie, _) = rotation(sid, t1, T0);
    by_cookie.channel = Channel::Cookie;
    assert_eq!(
        store.rotate(&by_cookie).await.unwrap(),
        RotateOutcome::Invalid(Invalid::WrongClient)
    );
    let (mut confidential, _) = rotation(sid, t1, T0);
    confidential.channel = Channel::Confidential;
    assert_eq!(
        store.rotate(&confidential).await.unwrap(),
        RotateOutcome::Invalid(Invalid::WrongClient)
    );

    // Nothing was consumed: its own client rotates it now, as a first presentation.
    let (mut own, _) = rotation(sid, t1, T0 + 1);
    own.client_id = Some("web".into());
    assert!(matches!(
        store.rotate(&own).await.unwrap(),
        RotateOutcome::Rotated(_)
    ));
}

async fn a_dpop_bound_family_refreshes_only_with_its_key(store: &SharedStore) {
    let epoch = store.user_by_id("u1").await.unwrap().unwrap().epoch;
    let sid = new_session_id("u1").unwrap();
    let t1 = token(sid);
    let jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
    assert!(
        store
            .create_session(&NewSession {
                id: sid,
                user_id: "u1".into(),
                client_id: "web".into(),
                scope: "read".into(),
                created_at: T0,
                expires_at: T0 + FAMILY,
                user_agent: "test".into(),
                ip: "127.0.0.1".into(),
                first_token: t1,
                first_token_expires_at: T0 + IDLE,
                user_epoch: epoch,
                channel: Channel::Body,
                dpop_jkt: Some(jkt.into()),
            })
            .await
            .unwrap()
    );
    // Without a proof, and with another key: refused, nothing consumed.
    let (bare, _) = rotation(sid, t1, T0);
    assert_eq!(
        store.rotate(&bare).await.unwrap(),
        RotateOutcome::Invalid(Invalid::WrongKey)
    );
    let (mut other_key, _) = rotation(sid, t1, T0);
    other_key.dpop_jkt = Some("another-key-thumbprint".into());
    assert_eq!(
        store.rotate(&other_key).await.unwrap(),
        RotateOutcome::Invalid(Invalid::WrongKey)
    );
    // Another channel is still told apart from another key.
    let (mut by_cookie, _) = rotation(sid, t1, T0);
    by_cookie.channel = Channel::Cookie;
    by_cookie.dpop_jkt = Some(jkt.into());
    assert_eq!(
        store.rotate(&by_cookie).await.unwrap(),
        RotateOutcome::Invalid(Invalid::WrongClient)
    );
    // Its key rotates it as a first presentation, and a grace replay needs the key too.
    let (mut own, _) = rotation(sid, t1, T0 + 1);
    own.dpop_jkt = Some(jkt.into());
    assert!(matches!(
        store.rotate(&own).await.unwrap(),
        RotateOutcome::Rotated(_)
    ));
    let (replay, _) = rotation(sid, t1, T0 + 2);
    assert_eq!(
        store.rotate(&replay).await.unwrap(),
        RotateOutcome::Invalid(Invalid::WrongKey)
    );
    let (mut own_replay, _) = rotation(sid, t1, T0 + 2);
    own_replay.dpop_jkt = Some(jkt.into());
    assert!(matches!(
        store.rotate(&own_replay).await.unwrap(),
        RotateOutcome::Replayed { .. }
    ));

    // An unbound family admits a proof: the access token is bound, the family stays as it was.
    let (unbound, u1) = new_session(store, "u1", T0).await;
    let (mut with_proof, u2) = rotation(unbound, u1, T0 + 1);
    with_proof.dpop_jkt = Some(jkt.into());
    assert!(matches!(
        store.rotate(&with_proof).await.unwrap(),
        RotateOutcome::Rotated(_)
    ));
    assert!(matches!(
        rotate(store, unbound, u2, T0 + 2).await.0,
        RotateOutcome::Rotated(_)
    ));
}

async fn a_user_and_a_session_read_together_answer_as_read_apart(store: &SharedStore) {
    let (sid, _) = new_session(store, "u1", T0).await;
    let (user, session) = store.user_and_session("u1", sid, T0 + 1).await.unwrap();
    assert_eq!(user, store.user_by_id("u1").await.unwrap());
    assert_eq!(session, store.session(sid, T0 + 1).await.unwrap());
    assert!(user.is_some() && session.is_some());
    // Another user's session is not found under this one; nor is a session past its end.
    let (user, session) = store.user_and_session("u2", sid, T0 + 1).await.unwrap();
    assert_eq!(user.unwrap().id, "u2");
    assert!(session.is_none_or(|s| s.user_id == "u1"));
    let (_, ended) = store
        .user_and_session("u1", sid, T0 + FAMILY)
        .await
        .unwrap();
    assert!(ended.is_none());
    assert!(
        store
            .revoke_session(sid, &n(RevocationReason::SessionEnded))
            .await
            .unwrap()
    );
    let (user, session) = store.user_and_session("u1", sid, T0 + 2).await.unwrap();
    assert!(user.is_some() && session.is_none());
    let (nobody, _) = store.user_and_session("nobody", sid, T0 + 2).await.unwrap();
    assert!(nobody.is_none());
}

async fn deleting_a_user_ends_its_sessions_and_frees_its_name(store: &SharedStore) {
    let (sid, t1) = new_session(store, "u1", T0).await;
    let (other, _) = new_session(store, "u2", T0).await;

    assert_eq!(
        store
            .delete_user("u1", &n(RevocationReason::UserDeleted))
            .await
            .unwrap(),
        Some(1)
    );

    assert_eq!(store.user_by_id("u1").await.unwrap(), None);
    assert_eq!(store.user_by_name("user-u1").await.unwrap(), None);
    assert_eq!(store.session(sid, T0).await.unwrap(), None);
    assert!(matches!(
        rotate(store, sid, t1, T0 + 1).await.0,
        RotateOutcome::Invalid(_)
    ));
    assert!(store.session(other, T0).await.unwrap().is_some());
    assert_eq!(
        store
            .delete_user("u1", &n(RevocationReason::UserDeleted))
            .await
            .unwrap(),
        None
    );
    // The name is free: a new user takes it, inheriting nothing.
    store.create_user(&user("u9", "user-u1")).await.unwrap();
    assert_eq!(
        store.user_by_name("user-u1").await.unwrap().unwrap().id,
        "u9"
    );
    assert!(store.sessions_of("u9", T0).await.unwrap().is_empty());
}

async fn replay_within_grace_after_the_successor_was_used_is_reuse(store: &SharedStore) {
    let (sid, t1) = new_session(store, "u1", T0).await;
    let (_, t2) = rotate(store, sid, t1, T0).await;
    let (outcome, _) = rotate(store, sid, t2, T0 + 1).await;
    assert!(matches!(outcome, RotateOutcome::Rotated(_)), "{outcome:?}");

    // Still within t1's grace window, but the chain has moved on past t1's successor: this is
    // a spent token replayed, not a race.
    let (outcome, _) = rotate(store, sid, t1, T0 + 2).await;

    assert_eq!(
        outcome,
        RotateOutcome::Reused {
            user_id: "u1".into(),
            cause: ReuseCause::ConsumedSuccessor,
        }
    );
    assert_eq!(store.session(sid, T0 + 2).await.unwrap(), None);
}

async fn rotation_swaps_the_live_token(store: &SharedStore) {
    let (sid, t1) = new_session(store, "u1", T0).await;

    let (outcome, t2) = rotate(store, sid, t1, T0 + 1000).await;
    let RotateOutcome::Rotated(entitlement) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(entitlement.user_id, "u1");
    assert_eq!(entitlement.client_id, "web");
    assert_eq!(entitlement.scope, "read");
    assert_eq!(entitlement.successor_expires_at, T0 + 1000 + IDLE);

    let (outcome, _) = rotate(store, sid, t2, T0 + 2000).await;
    assert!(matches!(outcome, RotateOutcome::Rotated(_)), "{outcome:?}");
    let session = store.session(sid, T0 + 2000).await.unwrap().unwrap();
    assert_eq!(session.last_used_at, T0 + 2000);

    let (outcome, _) = rotate(store, sid, token(sid), T0 + 3000).await;
    assert_eq!(
        outcome,
        RotateOutcome::Invalid(Invalid::Unknown),
        "a token never issued"
    );
}

async fn replay_within_grace_returns_the_first_sealed_successor(store: &SharedStore) {
    let (sid, t1) = new_session(store, "u1", T0).await;
    let (first, _) = rotation(sid, t1, T0);
    let RotateOutcome::Rotated(entitlement) = store.rotate(&first).await.unwrap() else {
        panic!()
    };

    let (outcome, _) = rotate(store, sid, t1, T0 + GRACE - 1).await;

    assert_eq!(
        outcome,
        RotateOutcome::Replayed {
            entitlement,
            sealed_successor: first.sealed_successor.clone()
        }
    );
    // The replay created nothing: the first successor is still the live one.
    let (outcome, _) = rotate(store, sid, first.successor, T0 + GRACE).await;
    assert!(matches!(outcome, RotateOutcome::Rotated(_)), "{outcome:?}");
}

async fn presentation_after_grace_revokes_the_family(store: &SharedStore) {
    let (sid, t1) = new_session(store, "u1", T0).await;
    let (_, t2) = rotate(store, sid, t1, T0).await;

    // The window runs from when the store consumed the token, a little after the caller's
    // `now`: a second past it is past the window whatever the store's own delay was.
    let after = T0 + GRACE + 1_000;
    let (outcome, _) = rotate(store, sid, t1, after).await;

    assert_eq!(
        outcome,
        RotateOutcome::Reused {
            user_id: "u1".into(),
            cause: ReuseCause::AfterGrace,
        }
    );
    assert_eq!(store.session(sid, after).await.unwrap(), None);
    // Every token of the revoked session, the live one included, is refused as revoked for
    // reuse, until the session would have ended; nothing is revoked again.
    for token in [t2, t1] {
        let (outcome, _) = rotate(store, sid, token, after + 1).await;
        assert_eq!(outcome, RotateOutcome::Invalid(Invalid::RevokedForReuse));
    }
    assert!(store.sessions_of("u1", after).await.unwrap().is_empty());
}

async fn zero_grace_treats_any_second_presentation_as_reuse(store: &SharedStore) {
    let (sid, t1) = new_session(store, "u1", T0).await;
    let (mut r, _) = rotation(sid, t1, T0);
    r.grace_ms = 0;
    assert!(matches!(
        store.rotate(&r).await.unwrap(),
        RotateOutcome::Rotated(_)
    ));
    let (mut again, _) = rotation(sid, t1, T0);
    again.grace_ms = 0;
    assert_eq!(
        store.rotate(&again).await.unwrap(),
        RotateOutcome::Reused {
            user_id: "u1".into(),
            cause: ReuseCause::AfterGrace,
        }
    );
}

async fn racing_rotations_yield_one_successor(store: &SharedStore) {
    let (sid, t1) = new_session(store, "u1", T0).await;

    let mut racers = tokio::task::JoinSet::new();
    for i in 0..50 {
        let store = store.clone();
        racers.spawn(async move {
            let (r, _) = rotation(sid, t1, T0 + i);
            let outcome = store.rotate(&r).await.unwrap();
            (r, outcome)
        });
    }
    let results = racers.join_all().await;

    let winners: Vec<&Rotation> = results
        .iter()
        .filter(|(_, o)| matches!(o, RotateOutcome::Rotated(_)))
        .map(|(r, _)| r)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one rotation wins");
    let sealed: HashSet<&Vec<u8>> = results
        .iter()
        .filter_map(|(_, o)| match o {
            RotateOutcome::Replayed {
                sealed_successor, ..
            } => Some(sealed_successor),
            _ => None,
        })
        .collect();
    assert_eq!(
        results.len() - 1,
        results
            .iter()
            .filter(|(_, o)| matches!(o, RotateOutcome::Replayed { .. }))
            .count()
    );
    assert_eq!(sealed, HashSet::from([&winners[0].sealed_successor]));
}

async fn idle_and_absolute_expiry_are_checked_on_read(store: &SharedStore) {
    // Idle: unused for IDLE.
    let (sid, t1) = new_session(store, "u1", T0).await;
    let (outcome, _) = rotate(store, sid, t1, T0 + IDLE).await;
    assert_eq!(outcome, RotateOutcome::Invalid(Invalid::ExpiredIdle));

    // Absolute: used often, but the family ends at T0 + FAMILY.
    let (sid, mut t) = new_session(store, "u1", T0).await;
    let mut now = T0;
    while now + IDLE - 1 < T0 + FAMILY {
        now += IDLE - 1;
        let (outcome, next) = rotate(store, sid, t, now).await;
        let RotateOutcome::Rotated(entitlement) = outcome else {
            panic!("at {now}: {outcome:?}")
        };
        assert!(
            entitlement.successor_expires_at <= T0 + FAMILY,
            "a token outlives its family"
        );
        t = next;
    }
    let (outcome, _) = rotate(store, sid, t, T0 + FAMILY).await;
    assert_eq!(outcome, RotateOutcome::Invalid(Invalid::ExpiredAbsolute));
    assert_eq!(store.session(sid, T0 + FAMILY).await.unwrap(), None);
    assert!(store.session(sid, T0 + FAMILY - 1).await.unwrap().is_some());

    store.sweep(T0 + FAMILY).await.unwrap();
    assert!(
        store
            .sessions_of("u1", T0 + FAMILY)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn logout_needs_a_token_of_the_family(store: &SharedStore) {
    let (sid, t1) = new_session(store, "u1", T0).await;
    let (other_sid, other) = new_session(store, "u1", T0).await;

    assert!(
        !store
            .revoke_by_token(sid, token(sid), &n(RevocationReason::Logout))
            .await
            .unwrap(),
        "forged token"
    );
    assert!(
        !store
            .revoke_by_token(sid, other, &n(RevocationReason::Logout))
            .await
            .unwrap(),
        "token of another family"
    );
    assert!(store.session(sid, T0).await.unwrap().is_some());

    // A consumed token of the family still identifies it.
    let (_, _t2) = rotate(store, sid, t1, T0).await;
    assert!(
        store
            .revoke_by_token(sid, t1, &n(RevocationReason::Logout))
            .await
            .unwrap()
    );
    assert_eq!(store.session(sid, T0).await.unwrap(), None);
    assert!(
        !store
            .revoke_by_token(sid, t1, &n(RevocationReason::Logout))
            .await
            .unwrap(),
        "already revoked"
    );
    assert!(store.session(other_sid, T0).await.unwrap().is_some());
}

async fn revocation_by_session_and_by_user(store: &SharedStore) {
    let (a, ta) = new_session(store, "u1", T0).await;
    let (_, _) = new_session(store, "u1", T0).await;
    let (c, tc) = new_session(store, "u2", T0).await;

    assert!(
        store
            .revoke_session(a, &n(RevocationReason::SessionEnded))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_session(a, &n(RevocationReason::SessionEnded))
            .await
            .unwrap()
    );
    assert_eq!(
        rotate(store, a, ta, T0).await.0,
        RotateOutcome::Invalid(Invalid::Unknown)
    );

    assert_eq!(
        store
            .revoke_user_sessions("u1", &n(RevocationReason::LogoutAll))
            .await
            .unwrap(),
        1
    );
    assert!(store.sessions_of("u1", T0).await.unwrap().is_empty());
    assert!(store.session(c, T0).await.unwrap().is_some());
    assert!(matches!(
        rotate(store, c, tc, T0).await.0,
        RotateOutcome::Rotated(_)
    ));
}

async fn sessions_are_listed_per_user(store: &SharedStore) {
    let (a, _) = new_session(store, "u1", T0).await;
    let (b, _) = new_session(store, "u1", T0 + 1).await;
    let (c, _) = new_session(store, "u2", T0).await;

    let listed: Vec<Uuid> = store
        .sessions_of("u1", T0 + 2)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    // Newest first.
    assert_eq!(listed, vec![b, a]);
    let theirs = store.sessions_of("u2", T0 + 2).await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].id, c);
    assert_eq!(theirs[0].client_id, "web");
    assert_eq!(theirs[0].user_agent, "test");
    assert_eq!(theirs[0].ip, "127.0.0.1");
    assert_eq!(theirs[0].expires_at, T0 + FAMILY);
}

async fn key_publications_keep_the_first_instant(store: &SharedStore) {
    let first = store
        .record_key_publication("k1", T0, T0 + 100)
        .await
        .unwrap();
    assert_eq!(first.first_published, T0);
    let later = store
        .record_key_publication("k1", T0 + 50, T0 + 200)
        .await
        .unwrap();
    assert_eq!((later.first_published, later.publish_until), (T0, T0 + 200));
    store
        .record_key_publication("k2", T0 + 10, T0 + 300)
        .await
        .unwrap();

    let all = store.key_publications().await.unwrap();
    let summary: Vec<(&str, i64, i64)> = all
        .iter()
        .map(|p| (p.kid.as_str(), p.first_published, p.publish_until))
        .collect();
    assert_eq!(
        summary,
        vec![("k1", T0, T0 + 200), ("k2", T0 + 10, T0 + 300)]
    );
}

/// The sign-in flow's records: kept until their expiry by the caller's clock, and swapped by
/// exactly one of many racing callers (an authorization code is used once).
async fn sign_in_records_expire_by_the_callers_clock_and_swap_once(store: &SharedStore) {
    store
        .put_record("code:a", "fresh", T0 + 60_000)
        .await
        .unwrap();
    assert_eq!(
        store.record("code:a", T0).await.unwrap().as_deref(),
        Some("fresh")
    );
    assert_eq!(
        store.record("code:a", T0 + 60_000).await.unwrap(),
        None,
        "expired at its instant"
    );
    assert_eq!(
        store
            .swap_record("code:a", "used", T0 + 60_000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.record("code:missing", T0).await.unwrap(), None);
    assert_eq!(
        store.swap_record("code:missing", "used", T0).await.unwrap(),
        None
    );
    assert_eq!(
        store.record("code:missing", T0).await.unwrap(),
        None,
        "a swap creates nothing"
    );

    let swaps: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.swap_record("code:a", &format!("used{i}"), T0).await })
        })
        .collect();
    let mut originals = Vec::new();
    for swap in swaps {
        if let Some(old) = swap.await.unwrap().unwrap() {
            originals.push(old);
        }
    }
    assert_eq!(
        originals.iter().filter(|v| *v == "fresh").count(),
        1,
        "{originals:?}"
    );
    assert_eq!(
        originals.len(),
        16,
        "each later swap sees its predecessor's value"
    );
    // The swap kept the expiry.
    assert_eq!(store.record("code:a", T0 + 60_000).await.unwrap(), None);
    assert!(store.record("code:a", T0 + 59_999).await.unwrap().is_some());

    // Values are opaque text: separators and JSON survive.
    let json = r#"{"a":"b:c","d":[1,2]}"#;
    store.put_record("tx:b", json, T0 + 1000).await.unwrap();
    assert_eq!(
        store.record("tx:b", T0).await.unwrap().as_deref(),
        Some(json)
    );
    store.delete_record("tx:b").await.unwrap();
    assert_eq!(store.record("tx:b", T0).await.unwrap(), None);
    store.delete_record("tx:b").await.unwrap();
}

/// Every revoking call writes one record with what it revoked, in the order of the
/// revocations; a call that revokes nothing writes none, except per-user revocations, whose
/// cutoff matters even with no session live (a login in flight).
async fn every_revocation_is_logged_once_in_order(store: &SharedStore) {
    let (a, ta) = new_session(store, "u1", T0).await;
    let (b, _) = new_session(store, "u1", T0).await;
    let (c, tc) = new_session(store, "u2", T0).await;
    let (d, _) = new_session(store, "u2", T0).await;

    assert!(
        store
            .revoke_by_token(a, ta, &n(RevocationReason::Logout))
            .await
            .unwrap()
    );
    // Nothing revoked: nothing logged.
    assert!(
        !store
            .revoke_by_token(a, ta, &n(RevocationReason::Logout))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_session(Uuid::new_v4(), &n(RevocationReason::SessionEnded))
            .await
            .unwrap()
    );
    // Reuse: the rotated token presented again after the grace window.
    let (rotated, _) = rotate(store, c, tc, T0).await;
    assert!(matches!(rotated, RotateOutcome::Rotated(_)));
    let (reused, _) = rotate(store, c, tc, T0 + GRACE + 1).await;
    assert!(matches!(reused, RotateOutcome::Reused { .. }), "{reused:?}");
    assert_eq!(
        store
            .set_password("u1", "$argon2id$z", &n(RevocationReason::PasswordChanged))
            .await
            .unwrap(),
        Some(1)
    );
    assert!(
        store
            .revoke_session(d, &n(RevocationReason::SessionEnded))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .set_disabled("u2", true, &n(RevocationReason::UserDisabled))
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(
        store
            .set_password("nobody", "$x", &n(RevocationReason::PasswordChanged))
            .await
            .unwrap(),
        None,
        "no such user: nothing logged"
    );

    let log = store.revocations_after(None, T0, 100).await.unwrap();
    let seen: Vec<_> = log
        .iter()
        .map(|r| (r.reason, r.user_id.as_str(), r.sessions.clone(), r.cutoff))
        .collect();
    assert_eq!(
        seen,
        vec![
            (RevocationReason::Logout, "u1", vec![a], None),
            (RevocationReason::ReuseDetected, "u2", vec![c], None),
            (RevocationReason::PasswordChanged, "u1", vec![b], Some(T0)),
            (RevocationReason::SessionEnded, "u2", vec![d], None),
            (RevocationReason::UserDisabled, "u2", vec![], Some(T0)),
        ]
    );
    assert!(log.windows(2).all(|w| w[0].position < w[1].position));
    assert!(log.iter().all(|r| r.keep_until == r.at + RETENTION));
    // Read on from any record, in pages.
    let after_second = store
        .revocations_after(Some(log[1].position), T0, 2)
        .await
        .unwrap();
    assert_eq!(after_second, log[2..4].to_vec());
    assert!(
        store
            .revocations_after(Some(log[4].position), T0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A record is only read while an access token it concerns may still be alive.
async fn the_revocation_log_forgets_records_past_their_keep(store: &SharedStore) {
    let (a, _) = new_session(store, "u1", T0).await;
    let (b, _) = new_session(store, "u1", T0).await;
    let short = LogNote {
        reason: RevocationReason::SessionEnded,
        at: T0,
        keep_until: T0 + 1_000,
    };
    assert!(store.revoke_session(a, &short).await.unwrap());
    assert!(
        store
            .revoke_session(b, &n(RevocationReason::SessionEnded))
            .await
            .unwrap()
    );
    assert_eq!(
        store.revocations_after(None, T0, 10).await.unwrap().len(),
        2
    );
    store.sweep(T0 + 1_000).await.unwrap();
    let later = store.revocations_after(None, T0 + 1_000, 10).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].sessions, vec![b]);
    store.sweep(T0 + RETENTION).await.unwrap();
    assert!(
        store
            .revocations_after(None, T0 + RETENTION, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A client removed from the config: every session of it ends, one log record each; other
/// clients' sessions stay.
async fn a_removed_clients_sessions_end_each_logged(store: &SharedStore) {
    let (web1, _) = new_session(store, "u1", T0).await;
    let (web2, _) = new_session(store, "u2", T0).await;
    let (kept, _, created) = try_session_of(store, "u1", "portal", T0, 0).await;
    assert!(created);
    let note = n(RevocationReason::ClientRemoved);
    assert_eq!(store.revoke_client_sessions("web", &note).await.unwrap(), 2);
    assert_eq!(store.revoke_client_sessions("web", &note).await.unwrap(), 0);
    assert!(store.session(web1, T0).await.unwrap().is_none());
    assert!(store.session(web2, T0).await.unwrap().is_none());
    assert!(store.session(kept, T0).await.unwrap().is_some());
    let mut logged: Vec<(String, Vec<Uuid>)> = store
        .revocations_after(None, T0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            assert_eq!(r.reason, RevocationReason::ClientRemoved);
            assert_eq!(r.cutoff, None);
            (r.user_id, r.sessions)
        })
        .collect();
    logged.sort();
    assert_eq!(
        logged,
        vec![("u1".to_owned(), vec![web1]), ("u2".to_owned(), vec![web2])]
    );
}
