//! Following the issuer's revocation feed (Shared Signals 1.0, RFC 8936 polling): the verifier
//! learns within a second that a session was revoked, and refuses its tokens from then on.
//!
//! [`Verifier::follow_revocations`] discovers the transmitter, gets a client-credentials token,
//! opens one stream for this process, and applies every revocation still in the issuer's
//! retention before it returns. A background task then long-polls, checking every Security Event
//! Token with the verifier's JWKS cache. When the feed is down, verification goes on by
//! signature (or, with [`FeedSettings::fail_closed_after`], refuses every token after that
//! delay); one warning per outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::error::{ErrorKind, VerifyError};
use crate::revocations::Revocations;
use crate::verifier::Verifier;

const POLL_METHOD: &str = "urn:ietf:rfc:8936";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
const ACCOUNT_DISABLED: &str =
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
const ACCOUNT_PURGED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-purged";
/// What the verifier asks for: every event that ends tokens.
const EVENTS: [&str; 4] = [
    SESSION_REVOKED,
    CREDENTIAL_CHANGE,
    ACCOUNT_DISABLED,
    ACCOUNT_PURGED,
];
/// A held poll answers within 20 s; this leaves room for the way back.
const POLL_TIMEOUT: Duration = Duration::from_secs(35);
const MAX_EVENTS: usize = 1000;
/// Backfill rounds at most (each up to `MAX_EVENTS` events).
const MAX_BACKFILL_ROUNDS: usize = 10_000;
/// A SET that fails verification this many times is reported as an error instead of retried.
const MAX_SET_ATTEMPTS: u32 = 5;
const MIN_BACKOFF: Duration = Duration::from_millis(500);

/// How to follow the revocation feed.
#[derive(Clone)]
pub struct FeedSettings {
    client_id: String,
    client_secret: String,
    max_revoked: usize,
    retention: Duration,
    fail_closed_after: Option<Duration>,
    max_backoff: Duration,
}

impl std::fmt::Debug for FeedSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedSettings")
            .field("client_id", &self.client_id)
            .field("max_revoked", &self.max_revoked)
            .field("retention", &self.retention)
            .field("fail_closed_after", &self.fail_closed_after)
            .finish_non_exhaustive()
    }
}

impl FeedSettings {
    /// The receiver's client credentials: a confidential client of the issuer allowed the
    /// scopes `ssf.manage` and `ssf.read`.
    pub fn new(client_id: &str, client_secret: &str) -> FeedSettings {
        FeedSettings {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            max_revoked: 100_000,
            retention: Duration::from_secs(24 * 3600),
            fail_closed_after: None,
            max_backoff: Duration::from_secs(30),
        }
    }

    /// How many revoked sessions and subjects are held (default 100,000, a few MiB). Past it,
    /// entries older than the retention go, and if that is not enough the list compacts into
    /// "every token issued until now": correct, at the cost of one refresh per live session.
    pub fn max_revoked(mut self, max: usize) -> Self {
        self.max_revoked = max;
        self
    }

    /// How long a revocation is held once the list is full (default 24 h): longer than any
    /// access token lives.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Refuse every token (503) once the feed has been unreachable this long. Default: never;
    /// verification goes on by signature and expiry alone.
    pub fn fail_closed_after(mut self, delay: Duration) -> Self {
        self.fail_closed_after = Some(delay);
        self
    }

    /// The longest wait between attempts while the feed is down (default 30 s, jittered).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max.max(MIN_BACKOFF);
        self
    }
}

/// What the feed is doing, for the application to export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedStatus {
    /// The last poll was answered.
    pub up: bool,
    /// How long the feed has been unreachable (`None` while up).
    pub down_for: Option<Duration>,
    /// Security events applied since the subscription.
    pub events_applied: u64,
    /// How long after its revocation the last event was applied, to the second (events carry
    /// the revocation's second): the feed's lag. `None` before the first event.
    pub last_lag: Option<Duration>,
    /// Tokens refused because the feed said they are revoked.
    pub tokens_refused: u64,
    /// Revoked sessions and subjects held now.
    pub revoked_held: usize,
    /// The stream this process reads.
    pub stream_id: String,
}

/// A running subscription. Dropping it stops following the feed (what is known stays applied).
pub struct RevocationFeed {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RevocationFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationFeed")
            .field("status", &self.status())
            .finish()
    }
}

impl Drop for RevocationFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RevocationFeed {
    /// The feed's figures now.
    pub fn status(&self) -> FeedStatus {
        let down = self.shared.down_since.load(Ordering::Relaxed);
        let down_for = (down > 0).then(|| Duration::from_millis(now_ms().saturating_sub(down)));
        FeedStatus {
            up: self.shared.up.load(Ordering::Relaxed),
            down_for,
            events_applied: self.shared.applied.load(Ordering::Relaxed),
            last_lag: match self.shared.last_lag_ms.load(Ordering::Relaxed) {
                u64::MAX => None,
                ms => Some(Duration::from_millis(ms)),
            },
            tokens_refused: self.shared.revocations.refused(),
            revoked_held: self.shared.revocations.held(),
            stream_id: self
                .shared
                .stream
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .id
                .clone(),
        }
    }
}

struct Shared {
    up: AtomicBool,
    /// Milliseconds since the epoch the feed went down (0: up).
    down_since: AtomicU64,
    applied: AtomicU64,
    /// Milliseconds from the last event's revocation to its application (`u64::MAX`: none yet).
    last_lag_ms: AtomicU64,
    revocations: Arc<Revocations>,
    stream: Mutex<StreamAt>,
}

#[derive(Clone, Default)]
struct StreamAt {
    id: String,
    poll_url: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn feed_error(detail: impl Into<String>) -> VerifyError {
    VerifyError::new(ErrorKind::JwksUnavailable, detail)
}

/// Why one exchange with the transmitter failed.
enum Failure {
    /// The access token expired or was refused: get another.
    Unauthorized,
    /// The stream is gone (deleted, or forgotten after a long silence): open another.
    StreamGone,
    Other(String),
}

/// One process's view of the transmitter.
struct Receiver {
    verifier: Verifier,
    settings: FeedSettings,
    token_endpoint: String,
    configuration_endpoint: String,
    token: String,
    /// Acknowledgments for the next poll, and SETs that failed to verify (attempts).
    acks: Vec<String>,
    attempts: HashMap<String, u32>,
    shared: Arc<Shared>,
}

impl Verifier {
    /// Follows the issuer's revocation feed; returns once every revocation still in the
    /// issuer's retention is applied, so a token revoked before this process started is refused
    /// too. Keep the returned handle: dropping it stops following.
    pub async fn follow_revocations(
        &self,
        settings: FeedSettings,
    ) -> Result<RevocationFeed, VerifyError> {
        let issuer = self.issuer().to_owned();
        let client = self.http_client().clone();
        let metadata = get_json(&client, &format!("{issuer}/.well-known/ssf-configuration"))
            .await
            .map_err(|e| feed_error(format!("the issuer's SSF metadata: {e}")))?;
        if metadata["issuer"].as_str() != Some(issuer.as_str()) {
            return Err(VerifyError::new(
                ErrorKind::Configuration,
                "the SSF metadata names another issuer",
            ));
        }
        if !metadata["delivery_methods_supported"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m == POLL_METHOD))
        {
            return Err(VerifyError::new(
                ErrorKind::Configuration,
                "the transmitter does not deliver by polling",
            ));
        }
        let configuration_endpoint = metadata["configuration_endpoint"]
            .as_str()
            .ok_or_else(|| feed_error("the SSF metadata has no configuration_endpoint"))?
            .to_owned();
        let oauth = get_json(
            &client,
            &format!("{issuer}/.well-known/oauth-authorization-server"),
        )
        .await
        .map_err(|e| feed_error(format!("the issuer's OAuth metadata: {e}")))?;
        let token_endpoint = oauth["token_endpoint"]
            .as_str()
            .ok_or_else(|| feed_error("the OAuth metadata has no token_endpoint"))?
            .to_owned();
        let revocations = Arc::clone(self.revocations());
        let shared = Arc::new(Shared {
            up: AtomicBool::new(false),
            down_since: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            last_lag_ms: AtomicU64::new(u64::MAX),
            revocations: Arc::clone(&revocations),
            stream: Mutex::new(StreamAt::default()),
        });
        let mut receiver = Receiver {
            verifier: self.clone(),
            settings: settings.clone(),
            token_endpoint,
            configuration_endpoint,
            token: String::new(),
            acks: Vec::new(),
            attempts: HashMap::new(),
            shared: Arc::clone(&shared),
        };
        revocations.configure(
            settings.max_revoked,
            settings.retention,
            settings.fail_closed_after,
        );
        receiver.authenticate().await.map_err(VerifyError::from)?;
        receiver.open_stream().await.map_err(VerifyError::from)?;
        receiver.backfill().await.map_err(VerifyError::from)?;
        revocations.activate();
        shared.up.store(true, Ordering::Relaxed);
        tracing::info!(
            stream_id = %receiver.stream().id,
            held = revocations.held(),
            "following the revocation feed"
        );
        let task = tokio::spawn(async move { receiver.follow().await });
        Ok(RevocationFeed { shared, task })
    }
}

impl From<Failure> for VerifyError {
    fn from(f: Failure) -> VerifyError {
        feed_error(match f {
            Failure::Unauthorized => "the issuer refused the feed client's token".to_owned(),
            Failure::StreamGone => "the feed stream is gone".to_owned(),
            Failure::Other(e) => e,
        })
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    read_json(response).await
}

async fn read_json(response: reqwest::Response) -> Result<Value, String> {
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// A JSON request body (this crate's HTTP client carries no JSON helpers).
fn with_json(request: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
    request
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
}

impl Receiver {
    fn stream(&self) -> StreamAt {
        self.shared
            .stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn client(&self) -> &reqwest::Client {
        self.verifier.http_client()
    }

    async fn authenticate(&mut self) -> Result<(), Failure> {
        let response = self
            .client()
            .post(&self.token_endpoint)
            .basic_auth(&self.settings.client_id, Some(&self.settings.client_secret))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body("grant_type=client_credentials&scope=ssf.manage%20ssf.read")
            .send()
            .await
            .map_err(|e| Failure::Other(format!("token request: {e}")))?;
        let status = response.status();
        let body = read_json(response)
            .await
            .map_err(|e| Failure::Other(format!("token answer: {e}")))?;
        if !status.is_success() {
            return Err(Failure::Other(format!(
                "the token endpoint refused the feed client ({status}: {})",
                body["error"].as_str().unwrap_or("no error code")
            )));
        }
        self.token = body["access_token"]
            .as_str()
            .ok_or_else(|| Failure::Other("the token answer has no access_token".into()))?
            .to_owned();
        Ok(())
    }

    async fn open_stream(&mut self) -> Result<(), Failure> {
        let description = format!("latchkey-verify, process {}", std::process::id());
        let request = self
            .client()
            .post(&self.configuration_endpoint)
            .bearer_auth(&self.token);
        let response = with_json(
            request,
            &json!({
                "delivery": {"method": POLL_METHOD},
                "events_requested": EVENTS,
                "description": description,
            }),
        )
        .send()
        .await
        .map_err(|e| Failure::Other(format!("stream creation: {e}")))?;
        match response.status().as_u16() {
            201 | 200 => {}
            401 => return Err(Failure::Unauthorized),
            status => {
                return Err(Failure::Other(format!("stream creation answered {status}")));
            }
        }
        let stream = read_json(response)
            .await
            .map_err(|e| Failure::Other(format!("stream answer: {e}")))?;
        let at = StreamAt {
            id: stream["stream_id"].as_str().unwrap_or_default().to_owned(),
            poll_url: stream["delivery"]["endpoint_url"]
                .as_str()
                .ok_or_else(|| Failure::Other("the stream has no poll endpoint".into()))?
                .to_owned(),
        };
        *self
            .shared
            .stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = at;
        self.acks.clear();
        Ok(())
    }

    /// Polls without waiting until nothing more is due: the state before the verifier reports
    /// ready.
    async fn backfill(&mut self) -> Result<(), Failure> {
        for _ in 0..MAX_BACKFILL_ROUNDS {
            let (received, more) = self.poll(true).await?;
            if received == 0 && !more {
                return Ok(());
            }
        }
        Err(Failure::Other("the backfill did not end".into()))
    }

    /// One poll: sends the pending acknowledgments, applies what arrives. Returns how many SETs
    /// came and whether more are waiting.
    async fn poll(&mut self, immediately: bool) -> Result<(usize, bool), Failure> {
        let stream = self.stream();
        let errors: serde_json::Map<String, Value> = self
            .attempts
            .iter()
            .filter(|(_, n)| **n >= MAX_SET_ATTEMPTS)
            .map(|(jti, _)| {
                (
                    jti.clone(),
                    json!({"err": "invalid_request", "description": "the SET did not verify"}),
                )
            })
            .collect();
        let request = self
            .client()
            .post(&stream.poll_url)
            .bearer_auth(&self.token)
            .timeout(POLL_TIMEOUT);
        let response = with_json(
            request,
            &json!({
                "ack": self.acks,
                "setErrs": errors,
                "maxEvents": MAX_EVENTS,
                "returnImmediately": immediately,
            }),
        )
        .send()
        .await
        .map_err(|e| Failure::Other(format!("poll: {e}")))?;
        match response.status().as_u16() {
            200 => {}
            401 => return Err(Failure::Unauthorized),
            404 => return Err(Failure::StreamGone),
            status => return Err(Failure::Other(format!("the poll answered {status}"))),
        }
        let answer = read_json(response)
            .await
            .map_err(|e| Failure::Other(format!("poll answer: {e}")))?;
        // The transmitter has them now.
        self.acks.clear();
        self.attempts.retain(|_, n| *n < MAX_SET_ATTEMPTS);
        let sets = answer["sets"].as_object().cloned().unwrap_or_default();
        for (jti, token) in &sets {
            let Some(token) = token.as_str() else {
                continue;
            };
            match self
                .verifier
                .verify_security_event(token, &self.settings.client_id, SystemTime::now())
                .await
            {
                Ok(set) => {
                    self.apply(&set);
                    self.attempts.remove(jti);
                    self.acks.push(jti.clone());
                }
                // Not acknowledged: it comes again (a key just published, say), up to a bound.
                Err(e) => {
                    tracing::warn!(%jti, error = %e, "a revocation event did not verify");
                    *self.attempts.entry(jti.clone()).or_default() += 1;
                }
            }
        }
        Ok((sets.len(), answer["moreAvailable"] == Value::Bool(true)))
    }

    /// Records what one verified SET revokes.
    fn apply(&self, set: &Value) {
        let now = SystemTime::now();
        let revocations = &self.shared.revocations;
        let issuer = self.verifier.issuer();
        let Some(events) = set["events"].as_object() else {
            return;
        };
        let subject = &set["sub_id"];
        // The user: an `iss_sub` subject, or the `user` of a complex one, of this issuer.
        let user = match subject["format"].as_str() {
            Some("iss_sub") => Some(subject),
            Some("complex") => Some(&subject["user"]),
            _ => None,
        }
        .filter(|u| u["format"] == "iss_sub" && u["iss"].as_str() == Some(issuer))
        .and_then(|u| u["sub"].as_str());
        let session = (subject["format"] == "complex")
            .then(|| &subject["session"])
            .and_then(|s| s["id"].as_str());
        for (event, body) in events {
            let at = body["event_timestamp"]
                .as_i64()
                .or_else(|| set["iat"].as_i64())
                .unwrap_or(0);
            match (event.as_str(), session, user) {
                (SESSION_REVOKED, Some(sid), _) => revocations.revoke_session(sid, at, now),
                (
                    SESSION_REVOKED | CREDENTIAL_CHANGE | ACCOUNT_DISABLED | ACCOUNT_PURGED,
                    None,
                    Some(sub),
                ) => {
                    revocations.revoke_subject(sub, at, now);
                }
                _ => continue,
            }
            self.shared.applied.fetch_add(1, Ordering::Relaxed);
            let at_ms = u64::try_from(at).unwrap_or(0).saturating_mul(1000);
            self.shared
                .last_lag_ms
                .store(now_ms().saturating_sub(at_ms), Ordering::Relaxed);
        }
    }

    /// Long-polls forever, mending what breaks: a refused token, a forgotten stream, an
    /// unreachable issuer (with jittered, growing waits and one warning per outage).
    async fn follow(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let failure = match self.poll(false).await {
                Ok(_) => {
                    if !self.shared.up.swap(true, Ordering::Relaxed) {
                        tracing::info!("the revocation feed answers again");
                    }
                    self.shared.down_since.store(0, Ordering::Relaxed);
                    self.shared.revocations.set_down(None);
                    backoff = MIN_BACKOFF;
                    continue;
                }
                Err(Failure::Unauthorized) => self.authenticate().await.err(),
                Err(Failure::StreamGone) => {
                    tracing::warn!("the revocation feed stream is gone; opening another");
                    self.open_stream().await.err()
                }
                Err(other) => Some(other),
            };
            let Some(failure) = failure else {
                continue;
            };
            if self.shared.up.swap(false, Ordering::Relaxed) {
                let since = now_ms();
                self.shared.down_since.store(since, Ordering::Relaxed);
                self.shared.revocations.set_down(Some(SystemTime::now()));
                let reason = match &failure {
                    Failure::Other(e) => e.clone(),
                    Failure::Unauthorized => "the feed client's token is refused".into(),
                    Failure::StreamGone => "the stream is gone".into(),
                };
                tracing::warn!(
                    error = %reason,
                    "the revocation feed is unreachable: tokens are checked by signature alone \
                     until it answers"
                );
            }
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(self.settings.max_backoff);
        }
    }
}

/// `base` scaled by a random factor in [0.5, 1.5): receivers that lost the issuer together do
/// not come back together.
fn jittered(base: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let unit = match aws_lc_rs::rand::fill(&mut byte) {
        Ok(()) => f64::from(byte[0]) / 256.0,
        Err(_) => 0.5,
    };
    base.mul_f64(0.5 + unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_spread_around_their_base() {
        let waits: Vec<Duration> = (0..200).map(|_| jittered(Duration::from_secs(2))).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_secs(1) && *w < Duration::from_secs(3))
        );
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 20);
    }
}
