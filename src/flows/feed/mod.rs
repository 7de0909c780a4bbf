//! The revocation feed: a Shared Signals Framework 1.0 transmitter over the store's revocation
//! log (`docs/revocation-feed.md`). Receivers are confidential clients holding `ssf.manage` (to
//! manage their streams) or `ssf.read` (to poll them). Each revocation becomes Security Event
//! Tokens (RFC 8417): CAEP `session-revoked` for every session that ended, and for per-user
//! revocations one event about the user (`session-revoked`, `credential-change`, or RISC
//! `account-disabled` / `account-enabled` / `account-purged`). Delivery is by polling (RFC 8936),
//! long-held until records arrive, or by push (RFC 8935, [`push`]) to URLs the config allows.
//!
//! A stream's state is a cursor in the log (every record up to it acknowledged), the ids of
//! events acknowledged beyond it, and pending verification events. Any instance answers any
//! poll: the state is a store record, and the log is the store's.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

pub mod push;

use super::{FlowError, Flows};
use crate::clock::UnixMs;
use crate::state::Snapshot;
use crate::store::{LogPosition, RevocationReason, RevocationRecord, SharedStore};

pub const SCOPE_MANAGE: &str = "ssf.manage";
pub const SCOPE_READ: &str = "ssf.read";
/// Poll delivery (RFC 8936).
pub const POLL: &str = "urn:ietf:rfc:8936";
/// Push delivery (RFC 8935).
pub const PUSH: &str = "urn:ietf:rfc:8935";

pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
pub const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
pub const ACCOUNT_ENABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-enabled";
pub const ACCOUNT_PURGED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-purged";
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";

/// Every event type a stream may carry.
pub const EVENTS_SUPPORTED: [&str; 6] = [
    SESSION_REVOKED,
    CREDENTIAL_CHANGE,
    ACCOUNT_DISABLED,
    ACCOUNT_ENABLED,
    ACCOUNT_PURGED,
    VERIFICATION,
];

/// How long a poll with nothing to deliver is held before it answers empty.
pub const POLL_HOLD: Duration = Duration::from_secs(20);
/// How often each instance looks for new records to wake held polls (a revocation reaches a
/// held poll within this, plus the answer's way back).
pub const LOG_WATCH: Duration = Duration::from_millis(200);
/// A stream nobody polled or managed for this long is forgotten.
const STREAM_IDLE_MS: i64 = 7 * 24 * 3600 * 1000;
/// A stream polled without change is written again after this long, to push its expiry on.
const STREAM_TOUCH_MS: i64 = 24 * 3600 * 1000;
/// Streams one receiver may hold (one per resource-server process is the usual shape).
pub const MAX_STREAMS_PER_RECEIVER: usize = 256;
/// Events in one poll answer, at most (and the default when the receiver names none).
pub const MAX_EVENTS: usize = 1000;
const DEFAULT_MAX_EVENTS: usize = 100;
/// Acknowledged event ids kept beyond the cursor; more are ignored (their events come again).
const MAX_ACKED: usize = 4096;
/// Verification events waiting for delivery, per stream.
const MAX_PENDING: usize = 16;
/// Bounds of what a receiver may send.
pub const MAX_DESCRIPTION_CHARS: usize = 256;
pub const MAX_STATE_CHARS: usize = 256;
pub const MAX_LIST: usize = 1000;
/// Log records read per step of a poll.
const LOG_PAGE: usize = 256;

/// The client a feed request comes from, as its access token and the config say.
#[derive(Clone, Debug)]
pub struct Receiver {
    pub client_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamStatus {
    /// Events are delivered.
    Enabled,
    /// Events are held (the log keeps them for its retention) and delivered once enabled.
    Paused,
    /// Events are dropped: nothing is delivered or kept.
    Disabled,
}

/// A stream as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stream {
    pub stream_id: String,
    pub receiver: String,
    pub events_requested: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub status: StreamStatus,
    #[serde(default)]
    pub reason: Option<String>,
    /// Every record up to here is acknowledged (`None`: nothing yet, the log's start).
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub acked: BTreeSet<String>,
    #[serde(default)]
    pub pending: Vec<PendingVerification>,
    #[serde(default)]
    pub verifications: u64,
    /// Where events are pushed; `None`: the receiver polls.
    #[serde(default)]
    pub push: Option<PushTarget>,
    /// When the stream was last written: a stream in use is written at least daily, so only
    /// an abandoned one reaches its idle expiry.
    #[serde(default)]
    pub touched_at: UnixMs,
}

/// A push stream's target (RFC 8935): a URL the config allows, and the `Authorization` header
/// value the receiver asked for (kept in the store, never shown or logged).
#[derive(Clone, Serialize, Deserialize)]
pub struct PushTarget {
    pub endpoint_url: String,
    #[serde(default)]
    pub authorization_header: Option<String>,
}

impl std::fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushTarget")
            .field("endpoint_url", &self.endpoint_url)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingVerification {
    pub jti: String,
    #[serde(default)]
    pub state: Option<String>,
    pub at: UnixMs,
}

/// A create or update request's body (SSF 1.0 §8.1.1): what a receiver may set.
#[derive(Debug, Default, Deserialize)]
pub struct StreamRequest {
    #[serde(default)]
    pub stream_id: Option<String>,
    #[serde(default)]
    pub delivery: Option<DeliveryRequest>,
    #[serde(default)]
    pub events_requested: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Deserialize)]
pub struct DeliveryRequest {
    pub method: String,
    #[serde(default)]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub authorization_header: Option<String>,
}

impl std::fmt::Debug for DeliveryRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryRequest")
            .field("method", &self.method)
            .field("endpoint_url", &self.endpoint_url)
            .finish_non_exhaustive()
    }
}

/// A poll's body (RFC 8936 §2.4).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollRequest {
    #[serde(default)]
    pub ack: Vec<String>,
    #[serde(default)]
    pub set_errs: serde_json::Map<String, Value>,
    #[serde(default)]
    pub max_events: Option<usize>,
    #[serde(default)]
    pub return_immediately: bool,
}

/// A poll's answer (RFC 8936 §2.5).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PollAnswer {
    pub sets: serde_json::Map<String, Value>,
    pub more_available: bool,
}

/// The newest log position any instance of this process has seen: held polls wait on it.
pub struct LogWatch {
    latest: tokio::sync::watch::Sender<Option<LogPosition>>,
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Default for LogWatch {
    fn default() -> Self {
        LogWatch {
            latest: tokio::sync::watch::Sender::new(None),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl LogWatch {
    /// Answers every held poll now (the server is stopping).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Follows the log's tail, forever: every `LOG_WATCH` reads what came after the last record
    /// seen, and wakes held polls when something did.
    pub async fn follow(&self, store: SharedStore, clock: crate::clock::Clock) {
        let mut tick = tokio::time::interval(LOG_WATCH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = None;
        loop {
            tick.tick().await;
            // Only while someone may be waiting: an idle server reads nothing.
            if self.latest.receiver_count() == 0 && last.is_some() {
                continue;
            }
            for _ in 0..64 {
                match store
                    .revocations_after(last, clock.now_ms(), LOG_PAGE * 4)
                    .await
                {
                    Ok(records) => {
                        let Some(tail) = records.last() else { break };
                        last = Some(tail.position);
                        self.latest.send_replace(last);
                        if records.len() < LOG_PAGE * 4 {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %crate::telemetry::error_chain(&e), "revocation log unreadable");
                        break;
                    }
                }
            }
        }
    }
}

fn stream_key(id: &str) -> String {
    format!("ssf:stream:{id}")
}

fn receiver_key(client_id: &str) -> String {
    format!("ssf:receiver:{client_id}")
}

/// The ids of every push stream, for the instances that deliver them.
const PUSH_STREAMS: &str = "ssf:push-streams";

fn bad(description: impl Into<std::borrow::Cow<'static, str>>) -> FlowError {
    FlowError::InvalidRequest(description.into())
}

fn no_stream() -> FlowError {
    FlowError::NotFound("no such stream")
}

/// The transmitter's metadata (SSF 1.0 §7.1).
pub fn configuration(snapshot: &Snapshot) -> Value {
    let issuer = &snapshot.config.issuer;
    let methods = if snapshot.config.feed.push_endpoints.is_empty() {
        vec![POLL]
    } else {
        vec![POLL, PUSH]
    };
    json!({
        "spec_version": "1_0",
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "delivery_methods_supported": methods,
        "configuration_endpoint": format!("{issuer}/ssf/stream"),
        "status_endpoint": format!("{issuer}/ssf/status"),
        "verification_endpoint": format!("{issuer}/ssf/verify"),
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"}],
        "default_subjects": "ALL",
    })
}

impl Stream {
    /// The stream as its receiver sees it (SSF 1.0 §8.1.1).
    pub fn view(&self, snapshot: &Snapshot) -> Value {
        let issuer = &snapshot.config.issuer;
        let delivery = match &self.push {
            Some(push) => json!({"method": PUSH, "endpoint_url": push.endpoint_url}),
            None => json!({
                "method": POLL,
                "endpoint_url": format!("{issuer}/ssf/poll/{}", self.stream_id),
            }),
        };
        json!({
            "stream_id": self.stream_id,
            "iss": issuer,
            "aud": self.receiver,
            "delivery": delivery,
            "events_supported": EVENTS_SUPPORTED,
            "events_requested": self.events_requested,
            "events_delivered": self.delivered(),
            "description": self.description,
        })
    }

    fn delivered(&self) -> Vec<&'static str> {
        EVENTS_SUPPORTED
            .into_iter()
            .filter(|e| self.events_requested.iter().any(|r| r == e))
            .collect()
    }

    fn wants(&self, event: &str) -> bool {
        self.events_requested.iter().any(|r| r == event)
    }

    fn cursor(&self) -> Option<LogPosition> {
        self.cursor.as_deref().and_then(|c| c.parse().ok())
    }
}

/// `events_requested` checked: only supported types, each once, a bounded list. Absent: every
/// supported type.
fn requested_events(requested: Option<Vec<String>>) -> Result<Vec<String>, FlowError> {
    let Some(requested) = requested else {
        return Ok(EVENTS_SUPPORTED.iter().map(|e| (*e).to_owned()).collect());
    };
    if requested.len() > 32 {
        return Err(bad("events_requested: too many entries"));
    }
    let mut kept = Vec::new();
    for event in requested {
        // Unsupported types are not an error (SSF 1.0 §8.1.1.1): they are simply not delivered.
        if EVENTS_SUPPORTED.contains(&event.as_str()) && !kept.contains(&event) {
            kept.push(event);
        }
    }
    Ok(kept)
}

/// The delivery a request asks for: `None` for polling (the default), or a push target the
/// config allows.
fn check_delivery(
    delivery: Option<&DeliveryRequest>,
    settings: &crate::config::FeedSettings,
) -> Result<Option<PushTarget>, FlowError> {
    let Some(d) = delivery else {
        return Ok(None);
    };
    match d.method.as_str() {
        POLL if d.endpoint_url.is_none() => Ok(None),
        POLL => Err(bad(
            "delivery.endpoint_url: the transmitter names the poll endpoint; leave it out",
        )),
        PUSH if settings.push_endpoints.is_empty() => Err(bad(format!(
            "delivery.method: push is not enabled here ([feed] push_endpoints); poll with {POLL}"
        ))),
        PUSH => {
            let url = d
                .endpoint_url
                .as_deref()
                .ok_or_else(|| bad("delivery.endpoint_url is required for push"))?;
            if !settings.allows_push_to(url) {
                return Err(bad(
                    "delivery.endpoint_url: not one of the push endpoints the issuer allows",
                ));
            }
            if d.authorization_header
                .as_ref()
                .is_some_and(|h| h.len() > 4096 || h.chars().any(char::is_control))
            {
                return Err(bad("delivery.authorization_header: malformed"));
            }
            Ok(Some(PushTarget {
                endpoint_url: url.to_owned(),
                authorization_header: d.authorization_header.clone(),
            }))
        }
        _ => Err(bad(format!(
            "delivery.method: {POLL} (poll) or {PUSH} (push)"
        ))),
    }
}

fn check_description(description: Option<String>) -> Result<Option<String>, FlowError> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => Err(bad(format!(
            "description: at most {MAX_DESCRIPTION_CHARS} characters"
        ))),
        other => Ok(other),
    }
}

/// What a record tells a stream: one `(event type, subject, event body)` per SET, in order.
fn events_of(record: &RevocationRecord, issuer: &str) -> Vec<(&'static str, Value, Value)> {
    let at_s = record.at.div_euclid(1000);
    let (initiator, text) = describe(record.reason);
    let body = |extra: Value| {
        let mut event = json!({
            "event_timestamp": at_s,
            "initiating_entity": initiator,
            "reason_admin": {"en": text},
        });
        if let (Some(map), Value::Object(extra)) = (event.as_object_mut(), extra) {
            map.extend(extra);
        }
        event
    };
    let user = json!({"format": "iss_sub", "iss": issuer, "sub": record.user_id});
    let mut events = Vec::new();
    if record.reason.is_per_user() {
        let (event, extra) = match record.reason {
            RevocationReason::PasswordChanged => (
                CREDENTIAL_CHANGE,
                json!({"credential_type": "password", "change_type": "update"}),
            ),
            RevocationReason::UserDisabled => (ACCOUNT_DISABLED, json!({})),
            RevocationReason::UserEnabled => (ACCOUNT_ENABLED, json!({})),
            RevocationReason::UserDeleted => (ACCOUNT_PURGED, json!({})),
            _ => (SESSION_REVOKED, json!({})),
        };
        events.push((event, user.clone(), body(extra)));
    }
    for sid in &record.sessions {
        let subject = json!({
            "format": "complex",
            "session": {"format": "opaque", "id": sid.to_string()},
            "user": user,
        });
        events.push((SESSION_REVOKED, subject, body(json!({}))));
    }
    events
}

fn describe(reason: RevocationReason) -> (&'static str, &'static str) {
    match reason {
        RevocationReason::Logout => ("user", "The user logged out."),
        RevocationReason::LogoutAll => ("user", "The user logged out everywhere."),
        RevocationReason::SessionEnded => ("user", "The user ended this session."),
        RevocationReason::TokenRevoked => ("user", "The client revoked the session's token."),
        RevocationReason::PasswordChanged => ("user", "The user changed their password."),
        RevocationReason::ReuseDetected => (
            "policy",
            "A spent refresh token was presented again: the session is assumed stolen.",
        ),
        RevocationReason::CodeReused => (
            "policy",
            "An authorization code was presented twice: what it issued is revoked.",
        ),
        RevocationReason::UserDisabled => ("admin", "An administrator disabled the account."),
        RevocationReason::UserEnabled => ("admin", "An administrator enabled the account."),
        RevocationReason::UserDeleted => ("admin", "An administrator deleted the account."),
        RevocationReason::AdminLogout => ("admin", "An administrator ended the sessions."),
        RevocationReason::ClientRemoved => ("admin", "The session's client was removed."),
    }
}

/// An event's id in a stream: `stream.position.index`, so an acknowledgment names its record.
fn jti(stream: &str, position: LogPosition, index: usize) -> String {
    format!("{stream}.{position}.{index}")
}

/// The record position of an event id of `stream`, if it is one.
fn acked_position(stream: &str, jti: &str) -> Option<LogPosition> {
    let rest = jti.strip_prefix(stream)?.strip_prefix('.')?;
    let (position, index) = rest.split_once('.')?;
    index.parse::<usize>().ok()?;
    position.parse().ok()
}

/// An event ready to sign.
struct Outgoing {
    jti: String,
    txn: Option<String>,
    event: &'static str,
    subject: Value,
    body: Value,
}

impl Flows {
    /// The receiver behind a feed request's access token: a client's own client-credentials
    /// token (no user, no session), of a client still registered, carrying `scope` and allowed
    /// it by the config.
    pub async fn feed_receiver(
        &self,
        token: &str,
        scope: &'static str,
    ) -> Result<Receiver, FlowError> {
        let claims = self.verify_access(token).await?;
        let client_id = claims
            .client_id
            .clone()
            .ok_or(FlowError::InvalidToken("the token names no client".into()))?;
        if claims.sid.is_some() || claims.sub != client_id {
            return Err(FlowError::InvalidToken(
                "the feed takes a client's own client-credentials token, not a user's".into(),
            ));
        }
        if claims.dpop_jkt().is_some() {
            return Err(FlowError::InvalidToken(
                "the feed takes bearer tokens; this one is DPoP-bound".into(),
            ));
        }
        let snapshot = self.snapshot();
        let allowed = snapshot
            .config
            .client(&client_id)
            .and_then(|c| c.scopes.as_ref())
            .is_some_and(|s| s.iter().any(|s| s == scope));
        if !allowed || !claims.has_scope(scope) {
            return Err(FlowError::InsufficientScope(scope));
        }
        Ok(Receiver { client_id })
    }

    async fn load_stream(&self, receiver: &Receiver, id: &str) -> Result<Stream, FlowError> {
        // Stream ids are simple UUIDs: nothing else reaches the store as part of a key.
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(no_stream());
        }
        let raw = self
            .store
            .record(&stream_key(id), self.clock.now_ms())
            .await?
            .ok_or_else(no_stream)?;
        let stream: Stream = serde_json::from_str(&raw).map_err(FlowError::internal)?;
        // Another receiver's stream does not exist for this one.
        if stream.receiver != receiver.client_id {
            return Err(no_stream());
        }
        Ok(stream)
    }

    async fn save_stream(&self, stream: &Stream) -> Result<(), FlowError> {
        let now = self.clock.now_ms();
        let mut stream = stream.clone();
        stream.touched_at = now;
        let value = serde_json::to_string(&stream).map_err(FlowError::internal)?;
        let expires = now + STREAM_IDLE_MS;
        self.store
            .put_record(&stream_key(&stream.stream_id), &value, expires)
            .await?;
        Ok(())
    }

    /// The ids of the receiver's streams that still exist.
    async fn stream_ids(&self, receiver: &Receiver) -> Result<Vec<String>, FlowError> {
        let now = self.clock.now_ms();
        let ids: Vec<String> = self
            .store
            .record(&receiver_key(&receiver.client_id), now)
            .await?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        Ok(ids)
    }

    async fn save_stream_ids(&self, receiver: &Receiver, ids: &[String]) -> Result<(), FlowError> {
        let value = serde_json::to_string(ids).map_err(FlowError::internal)?;
        self.store
            .put_record(
                &receiver_key(&receiver.client_id),
                &value,
                self.clock.now_ms() + STREAM_IDLE_MS,
            )
            .await?;
        Ok(())
    }

    /// Creates a stream (SSF 1.0 §8.1.1.1). It starts at the log's oldest record still kept,
    /// so a new receiver learns every revocation whose tokens may still be alive.
    pub async fn create_stream(
        &self,
        receiver: &Receiver,
        request: StreamRequest,
    ) -> Result<Value, FlowError> {
        let push = check_delivery(request.delivery.as_ref(), &self.snapshot().config.feed)?;
        if request.stream_id.is_some() {
            return Err(bad("stream_id: the transmitter assigns it"));
        }
        let mut ids = Vec::new();
        for id in self.stream_ids(receiver).await? {
            if self
                .store
                .record(&stream_key(&id), self.clock.now_ms())
                .await?
                .is_some()
            {
                ids.push(id);
            }
        }
        if ids.len() >= MAX_STREAMS_PER_RECEIVER {
            return Err(FlowError::Conflict(
                "this receiver holds as many streams as it may: delete one first",
            ));
        }
        let stream = Stream {
            stream_id: Uuid::new_v4().simple().to_string(),
            receiver: receiver.client_id.clone(),
            events_requested: requested_events(request.events_requested)?,
            description: check_description(request.description)?,
            status: StreamStatus::Enabled,
            reason: None,
            cursor: None,
            acked: BTreeSet::new(),
            pending: Vec::new(),
            verifications: 0,
            push,
            touched_at: 0,
        };
        self.save_stream(&stream).await?;
        ids.push(stream.stream_id.clone());
        self.save_stream_ids(receiver, &ids).await?;
        if stream.push.is_some() {
            self.file_push_stream(&stream.stream_id, true).await?;
        }
        tracing::info!(event = "feed.stream_created", receiver = %receiver.client_id, stream_id = %stream.stream_id, "revocation feed stream created");
        Ok(stream.view(&self.snapshot()))
    }

    /// One stream, or (no id) every stream of the receiver (SSF 1.0 §8.1.1.2).
    pub async fn read_streams(
        &self,
        receiver: &Receiver,
        id: Option<&str>,
    ) -> Result<Value, FlowError> {
        let snapshot = self.snapshot();
        if let Some(id) = id {
            return Ok(self.load_stream(receiver, id).await?.view(&snapshot));
        }
        let mut views = Vec::new();
        for id in self.stream_ids(receiver).await? {
            match self.load_stream(receiver, &id).await {
                Ok(stream) => views.push(stream.view(&snapshot)),
                Err(FlowError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Value::Array(views))
    }

    /// Updates (PATCH: what is given) or replaces (PUT: absent fields reset) a stream's
    /// receiver-supplied properties (SSF 1.0 §8.1.1.3-4).
    pub async fn update_stream(
        &self,
        receiver: &Receiver,
        request: StreamRequest,
        replace: bool,
    ) -> Result<Value, FlowError> {
        let push = check_delivery(request.delivery.as_ref(), &self.snapshot().config.feed)?;
        let id = request
            .stream_id
            .clone()
            .ok_or_else(|| bad("stream_id is required"))?;
        let mut stream = self.load_stream(receiver, &id).await?;
        if replace || request.events_requested.is_some() {
            stream.events_requested = requested_events(request.events_requested)?;
        }
        if replace || request.description.is_some() {
            stream.description = check_description(request.description)?;
        }
        if replace || request.delivery.is_some() {
            stream.push = push;
        }
        self.save_stream(&stream).await?;
        self.file_push_stream(&stream.stream_id, stream.push.is_some())
            .await?;
        Ok(stream.view(&self.snapshot()))
    }

    pub async fn delete_stream(&self, receiver: &Receiver, id: &str) -> Result<(), FlowError> {
        let stream = self.load_stream(receiver, id).await?;
        self.store.delete_record(&stream_key(id)).await?;
        if stream.push.is_some() {
            self.file_push_stream(id, false).await?;
        }
        let ids: Vec<String> = self
            .stream_ids(receiver)
            .await?
            .into_iter()
            .filter(|s| s != id)
            .collect();
        self.save_stream_ids(receiver, &ids).await?;
        tracing::info!(event = "feed.stream_deleted", receiver = %receiver.client_id, stream_id = %id, "revocation feed stream deleted");
        Ok(())
    }

    /// A stream's status (SSF 1.0 §8.1.2.1).
    pub async fn stream_status(&self, receiver: &Receiver, id: &str) -> Result<Value, FlowError> {
        let stream = self.load_stream(receiver, id).await?;
        Ok(status_view(&stream))
    }

    /// Enables, pauses or disables a stream (SSF 1.0 §8.1.2.2). Disabling drops what the
    /// stream has not delivered; enabling again starts from the log's newest record.
    pub async fn set_stream_status(
        &self,
        receiver: &Receiver,
        id: &str,
        status: StreamStatus,
        reason: Option<String>,
    ) -> Result<Value, FlowError> {
        let mut stream = self.load_stream(receiver, id).await?;
        if reason
            .as_ref()
            .is_some_and(|r| r.chars().count() > MAX_DESCRIPTION_CHARS)
        {
            return Err(bad(format!(
                "reason: at most {MAX_DESCRIPTION_CHARS} characters"
            )));
        }
        if stream.status == StreamStatus::Disabled && status != StreamStatus::Disabled {
            stream.cursor = self.log_tail().await?.map(|p| p.to_string());
            stream.acked.clear();
        }
        stream.status = status;
        stream.reason = reason;
        self.save_stream(&stream).await?;
        Ok(status_view(&stream))
    }

    /// Adds the stream to (or removes it from) the list the pushing instances read.
    async fn file_push_stream(&self, id: &str, push: bool) -> Result<(), FlowError> {
        let now = self.clock.now_ms();
        let mut ids: Vec<String> = self
            .store
            .record(PUSH_STREAMS, now)
            .await?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let listed = ids.iter().any(|i| i == id);
        if listed == push {
            return Ok(());
        }
        if push {
            ids.push(id.to_owned());
        } else {
            ids.retain(|i| i != id);
        }
        let value = serde_json::to_string(&ids).map_err(FlowError::internal)?;
        self.store
            .put_record(PUSH_STREAMS, &value, now + STREAM_IDLE_MS)
            .await?;
        Ok(())
    }

    /// The newest record of the log, if any.
    async fn log_tail(&self) -> Result<Option<LogPosition>, FlowError> {
        let now = self.clock.now_ms();
        let mut tail = None;
        for _ in 0..1024 {
            let page = self
                .store
                .revocations_after(tail, now, LOG_PAGE * 4)
                .await?;
            match page.last() {
                Some(last) => tail = Some(last.position),
                None => break,
            }
            if page.len() < LOG_PAGE * 4 {
                break;
            }
        }
        Ok(tail)
    }

    /// Queues a verification event on the stream (SSF 1.0 §8.1.4.2), delivered first by the
    /// next poll.
    pub async fn verify_stream(
        &self,
        receiver: &Receiver,
        id: &str,
        state: Option<String>,
    ) -> Result<(), FlowError> {
        if state
            .as_ref()
            .is_some_and(|s| s.chars().count() > MAX_STATE_CHARS)
        {
            return Err(bad(format!("state: at most {MAX_STATE_CHARS} characters")));
        }
        let mut stream = self.load_stream(receiver, id).await?;
        if stream.pending.len() >= MAX_PENDING {
            return Err(FlowError::Throttled {
                retry_after_secs: 5,
            });
        }
        stream.verifications += 1;
        stream.pending.push(PendingVerification {
            jti: format!("{}.v.{}", stream.stream_id, stream.verifications),
            state,
            at: self.clock.now_ms(),
        });
        self.save_stream(&stream).await?;
        Ok(())
    }

    /// A poll (RFC 8936): applies the acknowledgments, then answers the events not yet
    /// acknowledged, oldest first; with nothing to deliver, holds the request up to
    /// [`POLL_HOLD`] unless `returnImmediately`, and answers as soon as a record arrives or the
    /// server begins to stop.
    pub async fn poll(
        &self,
        receiver: &Receiver,
        id: &str,
        request: PollRequest,
    ) -> Result<PollAnswer, FlowError> {
        if request.ack.len() > MAX_LIST || request.set_errs.len() > MAX_LIST {
            return Err(bad(format!(
                "ack and setErrs: at most {MAX_LIST} entries each"
            )));
        }
        let max_events = request.max_events.unwrap_or(DEFAULT_MAX_EVENTS);
        if max_events > MAX_EVENTS {
            return Err(bad(format!("maxEvents: at most {MAX_EVENTS}")));
        }
        let mut stream = self.load_stream(receiver, id).await?;
        if stream.push.is_some() {
            return Err(bad(
                "this stream is delivered by push: its events are not polled",
            ));
        }
        let mut changed = self.clock.now_ms() - stream.touched_at > STREAM_TOUCH_MS;
        for (jti, error) in &request.set_errs {
            // An event the receiver could not take is not sent again (RFC 8936 §2.4).
            tracing::warn!(event = "feed.set_error", receiver = %receiver.client_id, stream_id = %id, %jti, error = %error, "a receiver refused an event");
        }
        for jti in request.ack.iter().chain(request.set_errs.keys()) {
            changed |= acknowledge(&mut stream, jti);
        }
        let mut latest = self.log_watch.latest.subscribe();
        let mut stopping = self.log_watch.stopping.subscribe();
        let hold_until = tokio::time::Instant::now() + POLL_HOLD;
        let outgoing = loop {
            let (outgoing, more, moved) = self.collect(&mut stream, max_events).await?;
            changed |= moved;
            if !outgoing.is_empty() || max_events == 0 || request.return_immediately {
                break (outgoing, more);
            }
            if *stopping.borrow() {
                break (outgoing, more);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(hold_until) => break (Vec::new(), false),
                _ = latest.changed() => {}
                _ = stopping.changed() => {}
            }
        };
        if changed {
            self.save_stream(&stream).await?;
        }
        let (outgoing, more_available) = outgoing;
        let snapshot = self.snapshot();
        let mut sets = serde_json::Map::new();
        for event in outgoing {
            let token = self.sign_event(&snapshot, &stream, &event)?;
            sets.insert(event.jti, Value::String(token));
        }
        Ok(PollAnswer {
            sets,
            more_available,
        })
    }

    /// The next events of `stream` (at most `max`), whether more wait, and whether the stream's
    /// state moved (its cursor past fully acknowledged records).
    async fn collect(
        &self,
        stream: &mut Stream,
        max: usize,
    ) -> Result<(Vec<Outgoing>, bool, bool), FlowError> {
        let snapshot = self.snapshot();
        let issuer = snapshot.config.issuer.clone();
        let now = self.clock.now_ms();
        let mut outgoing = Vec::new();
        let mut moved = false;
        if stream.status == StreamStatus::Enabled && stream.wants(VERIFICATION) {
            for pending in stream.pending.iter().take(max) {
                outgoing.push(Outgoing {
                    jti: pending.jti.clone(),
                    txn: None,
                    event: VERIFICATION,
                    subject: json!({"format": "opaque", "id": stream.stream_id}),
                    body: match &pending.state {
                        Some(state) => json!({"state": state}),
                        None => json!({}),
                    },
                });
            }
        }
        let mut more = false;
        let mut head_done = true;
        let mut after = stream.cursor();
        'pages: for _ in 0..64 {
            let records = self.store.revocations_after(after, now, LOG_PAGE).await?;
            let full = records.len() == LOG_PAGE;
            for record in &records {
                after = Some(record.position);
                let mut waiting = false;
                for (index, (event, subject, body)) in
                    events_of(record, &issuer).into_iter().enumerate()
                {
                    if !stream.wants(event) {
                        continue;
                    }
                    let id = jti(&stream.stream_id, record.position, index);
                    if stream.acked.contains(&id) {
                        continue;
                    }
                    waiting = true;
                    if stream.status != StreamStatus::Enabled {
                        continue;
                    }
                    if outgoing.len() >= max {
                        more = true;
                        break 'pages;
                    }
                    outgoing.push(Outgoing {
                        jti: id,
                        txn: Some(record.position.to_string()),
                        event,
                        subject,
                        body,
                    });
                }
                // A disabled stream drops what it has not delivered.
                if stream.status == StreamStatus::Disabled {
                    waiting = false;
                }
                if head_done && !waiting {
                    // Every event of this record is acknowledged: the cursor moves past it.
                    let prefix = format!("{}.{}.", stream.stream_id, record.position);
                    stream.acked.retain(|a| !a.starts_with(&prefix));
                    stream.cursor = Some(record.position.to_string());
                    moved = true;
                } else {
                    head_done = false;
                }
            }
            if !full {
                break;
            }
        }
        // Acknowledgments of records no longer in the log (or never there) are dropped.
        if let Some(cursor) = stream.cursor() {
            let before = stream.acked.len();
            let id = stream.stream_id.clone();
            stream
                .acked
                .retain(|a| acked_position(&id, a).is_some_and(|p| p > cursor));
            moved |= stream.acked.len() != before;
        }
        Ok((outgoing, more, moved))
    }

    fn sign_event(
        &self,
        snapshot: &Snapshot,
        stream: &Stream,
        event: &Outgoing,
    ) -> Result<String, FlowError> {
        let now = self.clock.now_ms();
        let key = snapshot.keys.active(now).ok_or(FlowError::NoSigningKey)?;
        let mut claims = json!({
            "iss": snapshot.config.issuer,
            "jti": event.jti,
            "iat": now.div_euclid(1000),
            "aud": stream.receiver,
            "sub_id": event.subject,
            "events": {event.event: event.body},
        });
        if let (Some(txn), Some(map)) = (&event.txn, claims.as_object_mut()) {
            map.insert("txn".into(), Value::String(txn.clone()));
        }
        let payload = serde_json::to_vec(&claims).map_err(FlowError::internal)?;
        key.sign_security_event(&payload)
            .map_err(FlowError::internal)
    }

    /// The log watch held polls wait on (the server runs its [`LogWatch::follow`]).
    pub fn log_watch(&self) -> &Arc<LogWatch> {
        &self.log_watch
    }
}

/// Records an acknowledgment; `true` when the stream changed.
fn acknowledge(stream: &mut Stream, jti: &str) -> bool {
    let before = stream.pending.len();
    stream.pending.retain(|p| p.jti != jti);
    if stream.pending.len() != before {
        return true;
    }
    match acked_position(&stream.stream_id, jti) {
        Some(position) if stream.cursor().is_none_or(|c| position > c) => {
            stream.acked.len() < MAX_ACKED && stream.acked.insert(jti.to_owned())
        }
        _ => false,
    }
}

fn status_view(stream: &Stream) -> Value {
    let mut view = json!({"stream_id": stream.stream_id, "status": stream.status});
    if let (Some(reason), Some(map)) = (&stream.reason, view.as_object_mut()) {
        map.insert("reason".into(), Value::String(reason.clone()));
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(reason: RevocationReason, sessions: usize) -> RevocationRecord {
        RevocationRecord {
            position: LogPosition(5, 1),
            at: 1_700_000_000_500,
            keep_until: 1_700_000_960_500,
            reason,
            user_id: "u1".into(),
            sessions: (0..sessions).map(|_| Uuid::new_v4()).collect(),
            cutoff: reason.is_per_user().then_some(1_700_000_000_500),
        }
    }

    #[test]
    fn a_logout_is_one_session_revoked_event_with_a_complex_subject() {
        let r = record(RevocationReason::Logout, 1);
        let events = events_of(&r, "https://id.example");
        assert_eq!(events.len(), 1);
        let (event, subject, body) = &events[0];
        assert_eq!(*event, SESSION_REVOKED);
        assert_eq!(subject["format"], "complex");
        assert_eq!(subject["session"]["id"], r.sessions[0].to_string());
        assert_eq!(subject["user"]["sub"], "u1");
        assert_eq!(subject["user"]["iss"], "https://id.example");
        assert_eq!(body["event_timestamp"], 1_700_000_000);
        assert_eq!(body["initiating_entity"], "user");
    }

    #[test]
    fn per_user_revocations_lead_with_an_event_about_the_user() {
        let events = events_of(
            &record(RevocationReason::PasswordChanged, 2),
            "https://id.example",
        );
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].0, CREDENTIAL_CHANGE);
        assert_eq!(events[0].1["format"], "iss_sub");
        assert_eq!(events[0].2["credential_type"], "password");
        assert!(events[1..].iter().all(|e| e.0 == SESSION_REVOKED));
        let disabled = events_of(&record(RevocationReason::UserDisabled, 0), "i");
        assert_eq!(disabled[0].0, ACCOUNT_DISABLED);
        assert_eq!(disabled[0].2["initiating_entity"], "admin");
        let all = events_of(&record(RevocationReason::LogoutAll, 0), "i");
        assert_eq!((all[0].0, all.len()), (SESSION_REVOKED, 1));
    }

    #[test]
    fn acknowledgments_name_their_record_and_are_bounded() {
        let id = "abc";
        let jti = jti(id, LogPosition(7, 2), 3);
        assert_eq!(jti, "abc.7-2.3");
        assert_eq!(acked_position(id, &jti), Some(LogPosition(7, 2)));
        assert_eq!(acked_position("abd", &jti), None);
        assert_eq!(acked_position(id, "abc.7-2"), None);
        assert_eq!(acked_position(id, "abc.x.1"), None);
        let mut stream = Stream {
            stream_id: id.into(),
            receiver: "r".into(),
            events_requested: vec![],
            description: None,
            status: StreamStatus::Enabled,
            reason: None,
            cursor: Some("7-2".into()),
            acked: BTreeSet::new(),
            pending: vec![],
            verifications: 0,
            push: None,
            touched_at: 0,
        };
        assert!(
            !acknowledge(&mut stream, &jti),
            "at the cursor: already done"
        );
        assert!(acknowledge(&mut stream, "abc.7-3.0"));
        assert!(!acknowledge(&mut stream, "abc.7-3.0"), "once");
        for i in 0..MAX_ACKED + 10 {
            acknowledge(&mut stream, &format!("abc.8-{i}.0"));
        }
        assert_eq!(stream.acked.len(), MAX_ACKED);
    }

    #[test]
    fn unsupported_event_types_are_dropped_and_push_goes_only_where_allowed() {
        let kept = requested_events(Some(vec![
            SESSION_REVOKED.into(),
            "urn:example:other".into(),
            SESSION_REVOKED.into(),
        ]))
        .unwrap();
        assert_eq!(kept, vec![SESSION_REVOKED.to_owned()]);
        assert_eq!(
            requested_events(None).unwrap().len(),
            EVENTS_SUPPORTED.len()
        );
        let push_to = |url: &str| DeliveryRequest {
            method: PUSH.into(),
            endpoint_url: Some(url.into()),
            authorization_header: Some("Bearer abc".into()),
        };
        let off = crate::config::FeedSettings::default();
        assert!(check_delivery(Some(&push_to("https://rs.example/events")), &off).is_err());
        let on = crate::config::FeedSettings {
            push_endpoints: vec!["https://rs.example/events".into()],
        };
        let target = check_delivery(Some(&push_to("https://rs.example/events")), &on)
            .unwrap()
            .unwrap();
        assert_eq!(target.endpoint_url, "https://rs.example/events");
        assert!(
            !format!("{target:?}").contains("abc"),
            "the header is never shown"
        );
        assert!(check_delivery(Some(&push_to("https://rs.example/other")), &on).is_err());
        let poll = DeliveryRequest {
            method: POLL.into(),
            endpoint_url: None,
            authorization_header: None,
        };
        assert!(check_delivery(Some(&poll), &off).unwrap().is_none());
    }
}
