//! A [`Store`] that times every call of the store it wraps and counts its failures, per
//! operation, for `/metrics`. The backends stay free of metrics.

use std::time::Instant;

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreMetrics;
use crate::clock::UnixMs;
use crate::store::{
    KeyPublication, NewSession, RotateOutcome, Rotation, Session, SharedCounters, SharedStore,
    Store, StoreError, User, UserAttributes,
};
use crate::store::{LogNote, LogPosition, RevocationRecord};
use crate::tokens::TokenId;

pub struct MeasuredStore {
    inner: SharedStore,
    metrics: StoreMetrics,
}

impl MeasuredStore {
    pub fn wrap(inner: SharedStore, metrics: StoreMetrics) -> SharedStore {
        std::sync::Arc::new(MeasuredStore { inner, metrics })
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        timed(&self.metrics, operation, call).await
    }
}

#[async_trait]
impl Store for MeasuredStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }

    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.timed("create_user", self.inner.create_user(user))
            .await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.timed("user_by_name", self.inner.user_by_name(username))
            .await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.timed("user_by_id", self.inner.user_by_id(id)).await
    }

    async fn index_look_alike(&self, user: &User) -> Result<bool, StoreError> {
        self.timed("index_look_alike", self.inner.index_look_alike(user))
            .await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.timed("list_users", self.inner.list_users()).await
    }

    async fn set_password(
        &self,
        user_id: &str,
        hash: &str,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError> {
        self.timed("set_password", self.inner.set_password(user_id, hash, note))
            .await
    }

    async fn upgrade_password_hash(
        &self,
        user_id: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        self.timed(
            "upgrade_password_hash",
            self.inner
                .upgrade_password_hash(user_id, old_hash, new_hash),
        )
        .await
    }

    async fn set_user_attributes(
        &self,
        user_id: &str,
        attributes: &UserAttributes,
    ) -> Result<bool, StoreError> {
        self.timed(
            "set_user_attributes",
            self.inner.set_user_attributes(user_id, attributes),
        )
        .await
    }

    async fn delete_user(
        &self,
        user_id: &str,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError> {
        self.timed("delete_user", self.inner.delete_user(user_id, note))
            .await
    }

    async fn set_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError> {
        self.timed(
            "set_disabled",
            self.inner.set_disabled(user_id, disabled, note),
        )
        .await
    }

    async fn create_session(&self, session: &NewSession) -> Result<bool, StoreError> {
        self.timed("create_session", self.inner.create_session(session))
            .await
    }

    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        self.timed("rotate", self.inner.rotate(rotation)).await
    }

    async fn session(&self, id: Uuid, now: UnixMs) -> Result<Option<Session>, StoreError> {
        self.timed("session", self.inner.session(id, now)).await
    }

    async fn user_and_session(
        &self,
        user_id: &str,
        session_id: Uuid,
        now: UnixMs,
    ) -> Result<(Option<User>, Option<Session>), StoreError> {
        self.timed(
            "user_and_session",
            self.inner.user_and_session(user_id, session_id, now),
        )
        .await
    }

    async fn live_refresh_token(
        &self,
        session_id: Uuid,
        token: TokenId,
        now: UnixMs,
    ) -> Result<Option<(Session, UnixMs)>, StoreError> {
        self.timed(
            "live_refresh_token",
            self.inner.live_refresh_token(session_id, token, now),
        )
        .await
    }

    async fn sessions_of(&self, user_id: &str, now: UnixMs) -> Result<Vec<Session>, StoreError> {
        self.timed("sessions_of", self.inner.sessions_of(user_id, now))
            .await
    }

    async fn revoke_by_token(
        &self,
        session_id: Uuid,
        token: TokenId,
        note: &LogNote,
    ) -> Result<bool, StoreError> {
        self.timed(
            "revoke_by_token",
            self.inner.revoke_by_token(session_id, token, note),
        )
        .await
    }

    async fn revoke_session(&self, id: Uuid, note: &LogNote) -> Result<bool, StoreError> {
        self.timed("revoke_session", self.inner.revoke_session(id, note))
            .await
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        note: &LogNote,
    ) -> Result<usize, StoreError> {
        self.timed(
            "revoke_user_sessions",
            self.inner.revoke_user_sessions(user_id, note),
        )
        .await
    }

    async fn revoke_client_sessions(
        &self,
        client_id: &str,
        note: &LogNote,
    ) -> Result<usize, StoreError> {
        self.timed(
            "revoke_client_sessions",
            self.inner.revoke_client_sessions(client_id, note),
        )
        .await
    }

    async fn revocations_after(
        &self,
        after: Option<LogPosition>,
        now: UnixMs,
        limit: usize,
    ) -> Result<Vec<RevocationRecord>, StoreError> {
        self.timed(
            "revocations_after",
            self.inner.revocations_after(after, now, limit),
        )
        .await
    }

    async fn record_key_publication(
        &self,
        kid: &str,
        now: UnixMs,
        publish_until: UnixMs,
    ) -> Result<KeyPublication, StoreError> {
        self.timed(
            "record_key_publication",
            self.inner.record_key_publication(kid, now, publish_until),
        )
        .await
    }

    async fn key_publications(&self) -> Result<Vec<KeyPublication>, StoreError> {
        self.timed("key_publications", self.inner.key_publications())
            .await
    }

    async fn put_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.timed("put_meta", self.inner.put_meta(key, value))
            .await
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.timed("get_meta", self.inner.get_meta(key)).await
    }

    async fn put_record(
        &self,
        key: &str,
        value: &str,
        expires_at: UnixMs,
    ) -> Result<(), StoreError> {
        self.timed("put_record", self.inner.put_record(key, value, expires_at))
            .await
    }

    async fn record(&self, key: &str, now: UnixMs) -> Result<Option<String>, StoreError> {
        self.timed("record", self.inner.record(key, now)).await
    }

    async fn swap_record(
        &self,
        key: &str,
        value: &str,
        now: UnixMs,
    ) -> Result<Option<String>, StoreError> {
        self.timed("swap_record", self.inner.swap_record(key, value, now))
            .await
    }

    async fn delete_record(&self, key: &str) -> Result<(), StoreError> {
        self.timed("delete_record", self.inner.delete_record(key))
            .await
    }

    async fn sweep(&self, now: UnixMs) -> Result<(), StoreError> {
        self.timed("sweep", self.inner.sweep(now)).await
    }

    fn shared_counters(&self) -> Option<std::sync::Arc<dyn SharedCounters>> {
        let inner = self.inner.shared_counters()?;
        Some(std::sync::Arc::new(MeasuredCounters {
            inner,
            metrics: self.metrics.clone(),
        }))
    }
}

/// Runs one store call, recording its time and whether it failed under `operation`.
async fn timed<T>(
    metrics: &StoreMetrics,
    operation: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let result = call.await;
    metrics.observe(operation, started.elapsed().as_secs_f64(), result.is_err());
    result
}

/// The throttle counters, timed and counted like every other store call.
struct MeasuredCounters {
    inner: std::sync::Arc<dyn SharedCounters>,
    metrics: StoreMetrics,
}

impl MeasuredCounters {
    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        timed(&self.metrics, operation, call).await
    }
}

#[async_trait]
impl SharedCounters for MeasuredCounters {
    async fn add(&self, key: &str, by: u32, window_ms: i64) -> Result<(u32, i64), StoreError> {
        self.timed("counter_add", self.inner.add(key, by, window_ms))
            .await
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.timed("counter_remove", self.inner.remove(key)).await
    }

    async fn claim(&self, key: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        self.timed("claim", self.inner.claim(key, ttl_ms)).await
    }

    async fn backoff_failure(
        &self,
        key: &str,
        now: UnixMs,
        threshold: u32,
        window_ms: i64,
        max_lockout_ms: i64,
    ) -> Result<UnixMs, StoreError> {
        self.timed(
            "backoff_failure",
            self.inner
                .backoff_failure(key, now, threshold, window_ms, max_lockout_ms),
        )
        .await
    }

    async fn locked_until(&self, key: &str) -> Result<UnixMs, StoreError> {
        self.timed("locked_until", self.inner.locked_until(key))
            .await
    }
}
