//! The storage seam: users and refresh-token families, behind one trait with two backends,
//! Redis ([`redis`]) for deployments of many instances and SQLite ([`embedded`]) for one box.
//!
//! Every backend passes the same conformance suite (`tests/api/store_conformance.rs`). The rules
//! it must keep: rotation is one atomic check-and-swap, a family is one chain that never
//! branches, the sealed successor lives only for the grace window, and nothing outlives its
//! family's expiry. Expiry is decided with the caller's `now`, never the backend's own clock.

pub mod embedded;
pub mod redis;
pub mod revocation_log;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::clock::UnixMs;
use crate::config::{Durability, StoreSettings};
use crate::tokens::TokenId;
pub use revocation_log::{LogNote, LogPosition, RevocationReason, RevocationRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or did not answer in time: clients get 503.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A unique value (a username) is taken.
    #[error("already exists")]
    Conflict,
    /// The username looks like one that is taken (the same [`crate::usernames::look_alike_key`]).
    #[error("a name that looks the same exists")]
    LookAlike,
    /// The backend answered with data this version cannot read.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Unavailable(Box::new(e))
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id, the `sub` claim.
    pub id: String,
    pub username: String,
    /// PHC string (`$argon2id$…`).
    pub password_hash: String,
    pub disabled: bool,
    pub created_at: UnixMs,
    /// Bumped by every change of credentials or status (password, disable, enable). A session
    /// records the epoch its login saw; one from another epoch can neither be created nor
    /// refreshed, which closes the race between a login in flight and `users disable`.
    pub epoch: u64,
    /// The scopes (roles) the user holds.
    pub scopes: Vec<String>,
    /// Optional standard attributes, returned by `/auth/userinfo`.
    pub email: Option<String>,
    /// Whether an operator vouched for `email` (OIDC `email_verified`); a changed email is
    /// unverified until one does again.
    pub email_verified: bool,
    pub name: Option<String>,
    /// OIDC `preferred_username`, when it is not the username; only operators set it.
    pub preferred_username: Option<String>,
}

/// The attributes of a user that are not credentials: changing them ends no session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserAttributes {
    pub scopes: Vec<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"<hidden>")
            .field("disabled", &self.disabled)
            .field("epoch", &self.epoch)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// A login session (a refresh family) as it is created, with its first token.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub id: Uuid,
    pub user_id: String,
    pub client_id: String,
    pub scope: String,
    pub created_at: UnixMs,
    /// Absolute end of the family: `created_at + refresh_ttl`.
    pub expires_at: UnixMs,
    pub user_agent: String,
    pub ip: String,
    pub first_token: TokenId,
    /// `min(created_at + refresh_idle_ttl, expires_at)`.
    pub first_token_expires_at: UnixMs,
    /// The user's epoch when the login checked the password.
    pub user_epoch: u64,
    /// Where the family's refresh tokens travel; every refresh must come the same way.
    pub channel: Channel,
    /// The DPoP key the family is bound to: every refresh must prove it.
    pub dpop_jkt: Option<String>,
}

/// How a family's refresh tokens travel. A token presented another way is refused without
/// being consumed: a cookie client's token never works from a body, and a confidential
/// client's never without its authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// A public client, token in request and response bodies.
    Body,
    /// A browser client, token in an HttpOnly cookie.
    Cookie,
    /// A confidential client, which authenticates at `/oauth/token`.
    Confidential,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Body => "body",
            Channel::Cookie => "cookie",
            Channel::Confidential => "confidential",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: String,
    pub client_id: String,
    pub scope: String,
    pub created_at: UnixMs,
    pub last_used_at: UnixMs,
    pub expires_at: UnixMs,
    /// Of the last refresh (of the login until the first).
    pub user_agent: String,
    pub ip: String,
    /// Of the login.
    pub login_user_agent: String,
    pub login_ip: String,
    /// The DPoP key the session is bound to, if it is.
    pub dpop_jkt: Option<String>,
    /// How its refresh tokens travel.
    pub channel: Channel,
}

/// The DPoP key of a stored binding (see [`binding`]).
pub(crate) fn bound_key(stored: &str) -> Option<String> {
    stored.split_once(' ').map(|(_, key)| key.to_owned())
}

/// The channel of a stored binding (see [`binding`]); a session from before channels were
/// recorded travelled in bodies.
pub(crate) fn bound_channel(stored: &str) -> Channel {
    match stored.split(' ').next() {
        Some("cookie") => Channel::Cookie,
        Some("confidential") => Channel::Confidential,
        _ => Channel::Body,
    }
}

/// One presentation of a refresh token, with the successor prepared in advance so the backend
/// can swap in a single step.
#[derive(Clone, Debug)]
pub struct Rotation {
    pub session_id: Uuid,
    pub presented: TokenId,
    pub successor: TokenId,
    /// The successor sealed under a key derived from the presented token.
    pub sealed_successor: Vec<u8>,
    pub now: UnixMs,
    pub idle_ttl_ms: i64,
    pub grace_ms: i64,
    pub user_agent: String,
    pub ip: String,
    /// The client the presenter is (or claims to be, for public clients); `None`: any.
    pub client_id: Option<String>,
    /// How the token arrived.
    pub channel: Channel,
    /// The DPoP key the request proved, if it carried a proof.
    pub dpop_jkt: Option<String>,
    /// Until when the revocation-log record of a detected reuse is kept.
    pub log_keep_until: UnixMs,
}

/// A family's binding as stored: its channel, then the key thumbprint of a DPoP-bound family.
pub(crate) fn binding(channel: Channel, jkt: Option<&str>) -> String {
    match jkt {
        Some(jkt) => format!("{} {jkt}", channel.as_str()),
        None => channel.as_str().to_owned(),
    }
}

/// Whether a family bound as `stored` admits a token that came by `channel` with a proof of
/// `jkt`: `None` when it does, else why not. (`rotate.lua` does the same.)
pub(crate) fn binding_refusal(
    stored: &str,
    channel: Channel,
    jkt: Option<&str>,
) -> Option<Invalid> {
    let (stored_channel, stored_key) = match stored.split_once(' ') {
        Some((channel, key)) => (channel, Some(key)),
        None => (stored, None),
    };
    if stored_channel != channel.as_str() {
        return Some(Invalid::WrongClient);
    }
    match stored_key {
        Some(key) if Some(key) != jkt => Some(Invalid::WrongKey),
        _ => None,
    }
}

/// What a family entitles whoever presented a valid token of it to: tokens for this user, client
/// and scope. (Not called a grant: in OAuth that word names the grant type.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entitlement {
    pub user_id: String,
    pub client_id: String,
    pub scope: String,
    /// When the successor token dies unless it is used.
    pub successor_expires_at: UnixMs,
    /// The scopes the user holds now, space-separated: a scope ungranted since the login is not
    /// issued again.
    pub held_scopes: String,
}

/// The shared memory of the key schedule: when any instance first published a key, and until
/// when the last config that held it said it must stay published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPublication {
    pub kid: String,
    pub first_published: UnixMs,
    pub publish_until: UnixMs,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The presented token was live: it is now consumed and `Rotation::successor` is live.
    Rotated(Entitlement),
    /// The presented token was consumed less than the grace window ago: the caller gets the
    /// successor the first presentation got, still sealed.
    Replayed {
        entitlement: Entitlement,
        sealed_successor: Vec<u8>,
    },
    /// A consumed token presented again outside the grace rules: theft is assumed and the whole
    /// family is now revoked.
    Reused { user_id: String, cause: ReuseCause },
    /// Refused without changing anything but what the reason says.
    Invalid(Invalid),
}

/// How a reused refresh token was recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReuseCause {
    /// The last consumed token, presented after its grace window.
    AfterGrace,
    /// An older consumed token: its successor was consumed too.
    ConsumedSuccessor,
    /// A token of a session already revoked for reuse (counted, not revoked again).
    RevokedFamily,
}

/// Why a presented refresh token was refused (for logs and metrics; clients all see one answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Never issued, from a revoked or forgotten family, or a forgery.
    Unknown,
    /// Unused for `refresh_idle_ttl`.
    ExpiredIdle,
    /// The session reached `refresh_ttl`.
    ExpiredAbsolute,
    /// The user's password or status changed since the login (or the user is gone): the session
    /// is revoked now.
    UserChanged,
    /// Presented by another client, or another way (a body for a cookie family): nothing was
    /// consumed.
    WrongClient,
    /// The family is DPoP-bound and the request proved no key, or another one: nothing was
    /// consumed.
    WrongKey,
    /// A token of a session revoked because reuse was detected: someone still holds and tries
    /// the stolen chain. Remembered until the session would have ended.
    RevokedForReuse,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Succeeds only when the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates a user. `Conflict` when the name is taken, `LookAlike` when a name with the same
    /// look-alike key is.
    async fn create_user(&self, user: &User) -> Result<(), StoreError>;
    /// Records the look-alike key of a user created before keys were kept (or while their
    /// key was held by another): `false` when another user holds it.
    async fn index_look_alike(&self, user: &User) -> Result<bool, StoreError>;
    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError>;
    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError>;
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    /// Sets the password hash, bumps the epoch and ends every session, in one atomic step that
    /// also writes `note` to the revocation log (as every revoking method does). Returns how
    /// many sessions ended, or `None` when there is no such user.
    async fn set_password(
        &self,
        user_id: &str,
        hash: &str,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError>;
    /// Replaces `old_hash` by `new_hash` (the same password at another cost) if it is still the
    /// stored one. The epoch stays and no session ends. Returns whether it was replaced.
    async fn upgrade_password_hash(
        &self,
        user_id: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError>;
    /// Sets scopes, email and name. No session ends: a scope taken away stops being issued at
    /// the next refresh. `false` when there is no such user.
    async fn set_user_attributes(
        &self,
        user_id: &str,
        attributes: &UserAttributes,
    ) -> Result<bool, StoreError>;
    /// Removes the user and ends every session; the name is free again. Returns how many
    /// sessions ended, or `None` when there is no such user.
    async fn delete_user(&self, user_id: &str, note: &LogNote)
    -> Result<Option<usize>, StoreError>;
    /// As [`Store::set_password`], for the disabled flag.
    async fn set_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        note: &LogNote,
    ) -> Result<Option<usize>, StoreError>;

    /// Creates the session if the user is still enabled and at `session.user_epoch`, atomically;
    /// `false` when the user changed since the login checked it (nothing is created).
    async fn create_session(&self, session: &NewSession) -> Result<bool, StoreError>;
    /// The atomic check-and-rotate of `docs/tokens.md` (rotation and reuse); a detected reuse
    /// is logged as a revocation in the same step.
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError>;
    /// The session if it is live at `now`.
    async fn session(&self, id: Uuid, now: UnixMs) -> Result<Option<Session>, StoreError>;
    /// A user and one session (the caller an access token names), as [`Store::user_by_id`]
    /// and [`Store::session`] would answer; a backend may fetch both in one round trip.
    async fn user_and_session(
        &self,
        user_id: &str,
        session_id: Uuid,
        now: UnixMs,
    ) -> Result<(Option<User>, Option<Session>), StoreError> {
        Ok((
            self.user_by_id(user_id).await?,
            self.session(session_id, now).await?,
        ))
    }
    /// The session of `token` and the token's expiry, if `token` is its session's live refresh
    /// token at `now` (introspection: usable right now), without consuming anything.
    async fn live_refresh_token(
        &self,
        session_id: Uuid,
        token: TokenId,
        now: UnixMs,
    ) -> Result<Option<(Session, UnixMs)>, StoreError>;
    /// Every live session of a user.
    async fn sessions_of(&self, user_id: &str, now: UnixMs) -> Result<Vec<Session>, StoreError>;
    /// Revokes the family of `token` if the store ever issued that token (logout). Returns
    /// whether a family was revoked (and logged).
    async fn revoke_by_token(
        &self,
        session_id: Uuid,
        token: TokenId,
        note: &LogNote,
    ) -> Result<bool, StoreError>;
    async fn revoke_session(&self, id: Uuid, note: &LogNote) -> Result<bool, StoreError>;
    /// Revokes every family of the user and logs a per-user record (with its cutoff) even when
    /// none was live; returns how many.
    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        note: &LogNote,
    ) -> Result<usize, StoreError>;
    /// Revokes every session of a client removed from the config, logging each. Rare (a reload
    /// that removes a client): backends without an index by client may scan.
    async fn revoke_client_sessions(
        &self,
        client_id: &str,
        note: &LogNote,
    ) -> Result<usize, StoreError>;
    /// The revocation log after `after` (from its start: `None`), oldest first, at most `limit`
    /// records, without those past their `keep_until` at `now`.
    async fn revocations_after(
        &self,
        after: Option<LogPosition>,
        now: UnixMs,
        limit: usize,
    ) -> Result<Vec<RevocationRecord>, StoreError>;

    /// Records that `kid` is published at `now` (kept if an earlier record exists) and must stay
    /// published until `publish_until` (overwritten). Returns the record as it now stands.
    async fn record_key_publication(
        &self,
        kid: &str,
        now: UnixMs,
        publish_until: UnixMs,
    ) -> Result<KeyPublication, StoreError>;
    async fn key_publications(&self) -> Result<Vec<KeyPublication>, StoreError>;

    /// Small operational records shared by every process on the store (what a running server
    /// uses, for `config check`). Never secrets.
    async fn put_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Short-lived records of the sign-in flow (`crate::flows::authorize`): pending
    /// authorization requests, codes, sign-on sessions, consents. Each holds an opaque value
    /// and is forgotten after `expires_at`; the flows also check the expiry written in the
    /// value with their own clock. Keys are the flows' own, never user input.
    async fn put_record(
        &self,
        key: &str,
        value: &str,
        expires_at: UnixMs,
    ) -> Result<(), StoreError>;
    /// The record's value, unless it is absent or expired at `now`.
    async fn record(&self, key: &str, now: UnixMs) -> Result<Option<String>, StoreError>;
    /// Replaces a record's value, keeping its expiry, and returns the value it replaced, in one
    /// atomic step: of many concurrent swaps exactly one sees the original value (an
    /// authorization code is consumed once). Absent or expired: `None`, nothing written.
    async fn swap_record(
        &self,
        key: &str,
        value: &str,
        now: UnixMs,
    ) -> Result<Option<String>, StoreError>;
    async fn delete_record(&self, key: &str) -> Result<(), StoreError>;

    /// Removes whatever has expired at `now`. Backends with native expiry do nothing.
    async fn sweep(&self, _now: UnixMs) -> Result<(), StoreError> {
        Ok(())
    }

    /// Throttle counters every instance on this store shares (`crate::limits`); `None`: the
    /// store serves one process, which counts in memory.
    fn shared_counters(&self) -> Option<Arc<dyn SharedCounters>> {
        None
    }
}

/// Counters with expiry, shared by every instance on one store, for the throttles.
#[async_trait]
pub trait SharedCounters: Send + Sync + 'static {
    /// Adds `by` to the counter `key` (0: only reads it); a new counter lives `window_ms`.
    /// Returns the count and the milliseconds until it resets.
    async fn add(&self, key: &str, by: u32, window_ms: i64) -> Result<(u32, i64), StoreError>;
    async fn remove(&self, key: &str) -> Result<(), StoreError>;
    /// Records `key` for `ttl_ms` unless it is recorded already: `true` when it was new (a DPoP
    /// proof's `jti`, seen once).
    async fn claim(&self, key: &str, ttl_ms: i64) -> Result<bool, StoreError>;
    /// Counts a failure in the back-off record `key` and returns the instant it is locked until:
    /// from `threshold` failures on, `window_ms` doubling per failure up to `max_lockout_ms`.
    /// A record is forgotten `max_lockout_ms` after its last failure or lock.
    async fn backoff_failure(
        &self,
        key: &str,
        now: UnixMs,
        threshold: u32,
        window_ms: i64,
        max_lockout_ms: i64,
    ) -> Result<UnixMs, StoreError>;
    /// The instant the back-off record `key` is locked until (0: never locked).
    async fn locked_until(&self, key: &str) -> Result<UnixMs, StoreError>;
}

/// The store in use, shared by every worker.
pub type SharedStore = Arc<dyn Store>;

fn is_redis(url: &str) -> bool {
    [
        "redis://",
        "rediss://",
        "redis+cluster://",
        "redis+sentinel://",
    ]
    .iter()
    .any(|scheme| url.starts_with(scheme))
}

/// The store the config names, with all its settings (durability, Redis password and TLS).
pub async fn open_configured(settings: &StoreSettings) -> Result<SharedStore, StoreError> {
    let url = settings.url.as_str();
    if is_redis(url) {
        return Ok(Arc::new(redis::Reconnecting(
            redis::RedisStore::with_options(url, &settings.redis)?,
        )));
    }
    open_with(url, settings.durability).await
}

/// As [`open_configured`], for commands that only read: a database file that does not exist is
/// an error naming the path it was looked for at, never an empty store created on the spot.
pub async fn open_existing(settings: &StoreSettings) -> Result<SharedStore, StoreError> {
    let url = settings.url.as_str();
    if let Some(path) = url.strip_prefix("sqlite://")
        && !std::path::Path::new(path).exists()
    {
        return Err(StoreError::Unavailable(
            format!(
                "no database at {path} (store.url; a relative path resolves against the config \
                 file's directory)"
            )
            .into(),
        ));
    }
    open_configured(settings).await
}

/// Opens the backend the URL names: `sqlite://PATH` or `redis://…`.
pub async fn open(url: &str) -> Result<SharedStore, StoreError> {
    open_with(url, Durability::Fsync).await
}

/// As [`open`], with the embedded store's commit durability (`store.durability`).
pub async fn open_with(url: &str, durability: Durability) -> Result<SharedStore, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(
            embedded::EmbeddedStore::open(path, durability).await?,
        ));
    }
    if is_redis(url) {
        return Ok(Arc::new(redis::Reconnecting(redis::RedisStore::new(url)?)));
    }
    Err(StoreError::Unavailable(
        format!(
            "store URL scheme {:?} is not supported by this build (use sqlite://, redis://, rediss://, redis+cluster:// or redis+sentinel://)",
            url.split("://").next().unwrap_or_default()
        )
        .into(),
    ))
}
