//! The token flows, free of HTTP. Each operation lives in its own module, takes typed input and
//! returns a domain result ([`Issued`]: what was issued) or a domain error ([`FlowError`]: why
//! not), never a status code. Each HTTP surface in `routes/` turns those into its own answer; the
//! CLI calls the account operations ([`Accounts`]) directly.
//!
//! Every flow takes one [`Snapshot`] of config and keys at its start and uses it throughout, so a
//! reload mid-request cannot mix two configs in one answer.

mod accounts;
mod authenticate;
pub mod authorize;
pub mod back_channel;
mod client_credentials;
mod clients;
mod codes;
mod dpop;
pub mod end_session;
pub mod feed;
mod grants;
mod id_tokens;
mod introspect;
mod login;
mod logout;
mod password;
mod refresh;
mod revoke;
pub mod scopes;
mod sessions;
pub mod sso;

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

pub use accounts::{Accounts, MAX_USERNAME_CHARS, ProfileChange, normalize_username};
pub use authenticate::{Authenticated, PresentedAccess};
pub use clients::{AuthMethod, ClientCredentials};
pub use codes::CodeExchange;
pub use dpop::DpopPresented;
pub use grants::Grant;
pub use introspect::Introspection;
pub use login::LoginRequest;
pub use password::check_password_policy;
pub use sessions::OwnSession;

use crate::clock::{Clock, UnixMs};
use crate::config::ClientSpec;
use crate::credentials::{CredentialError, PasswordHasher};
use crate::limits::Throttle;
use crate::metrics::{MeasuredStore, Metrics, RevokeCause};
use crate::state::{LiveState, Snapshot};
use crate::store::{Entitlement, SharedStore, StoreError};
use crate::tokens::{AccessClaims, Audience, Confirmation, RefreshToken, new_jti};

pub use crate::config::DEFAULT_CLIENT_ID;

/// Who is asking, as recorded on the session.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    pub user_agent: String,
    pub ip: String,
}

/// How the access token is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TokenType {
    Bearer,
    /// Bound to the key of the request's DPoP proof (`cnf.jkt`).
    DPoP,
}

impl TokenType {
    fn of(jkt: Option<&str>) -> TokenType {
        match jkt {
            Some(_) => TokenType::DPoP,
            None => TokenType::Bearer,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Bearer => "Bearer",
            TokenType::DPoP => "DPoP",
        }
    }
}

/// What a flow issued. The surfaces decide how it travels (a JSON body, a cookie).
#[derive(Debug)]
pub struct Issued {
    pub access_token: String,
    pub token_type: TokenType,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh: Option<IssuedRefresh>,
    /// The granted scope, space-separated; empty when none.
    pub scope: String,
    pub client_id: String,
    pub session_id: Option<Uuid>,
    /// The current DPoP nonce, for a client that uses them (`DPoP-Nonce`).
    pub dpop_nonce: Option<String>,
    /// An OpenID Connect ID token, for a session granted `openid`.
    pub id_token: Option<String>,
}

/// A refresh token and how long it lives unused.
#[derive(Debug)]
pub struct IssuedRefresh {
    pub token: RefreshToken,
    /// Seconds until the token dies unless used (idle lifetime, capped by the session's end).
    pub expires_in: u64,
}

/// Why a flow refused. Each surface maps these to its own status and RFC 6749 code.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The input is malformed; the text says how, without echoing secrets.
    #[error("{0}")]
    InvalidRequest(Cow<'static, str>),
    /// Unknown user, wrong password or disabled account: one answer for all, so none can be
    /// told from another.
    #[error("invalid username or password")]
    BadCredentials,
    /// A refresh token that is unknown, expired, revoked or reused: one answer for all.
    #[error("the refresh token is invalid, expired or revoked")]
    BadRefreshToken,
    /// An authorization code that is unknown, expired, used, or does not fit the request
    /// (client, redirect URI, PKCE verifier): RFC 6749 §5.2 `invalid_grant`, saying which.
    #[error("{0}")]
    InvalidGrant(&'static str),
    /// An access token that does not verify, or whose session or user is gone.
    #[error("{0}")]
    InvalidToken(Cow<'static, str>),
    /// Too many attempts; retry after this many seconds.
    #[error("too many attempts; retry later")]
    Throttled { retry_after_secs: u64 },
    /// The store did not answer; nothing was changed.
    #[error("the session store is unavailable")]
    StoreUnavailable(#[source] StoreError),
    /// No key is scheduled to sign now (a config error the operator must fix).
    #[error("no signing key is active")]
    NoSigningKey,
    /// A password could not be checked (an unusable stored hash, a broken hashing pool): never
    /// a wrong password, always logged.
    #[error("passwords cannot be checked")]
    PasswordCheck(#[source] CredentialError),
    /// Too much work queued (password checks waiting for a hashing thread): retry shortly.
    #[error("too busy; retry shortly")]
    Overloaded,
    /// The client is unknown, or did not authenticate as its type requires (RFC 6749 §5.2).
    #[error("{0}")]
    InvalidClient(&'static str),
    /// The client may not use this grant type.
    #[error("{0}")]
    UnauthorizedClient(&'static str),
    #[error("unsupported grant_type")]
    UnsupportedGrantType,
    /// A requested scope the client may not have, or that is not a scope.
    #[error("invalid scope: {0}")]
    InvalidScope(String),
    /// The current password given to change it is wrong.
    #[error("the current password is wrong")]
    WrongPassword,
    /// Nothing of the caller's by that name (a session, an endpoint turned off).
    #[error("{0}")]
    NotFound(&'static str),
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// Another user's name looks the same (`crate::usernames`).
    #[error("a user whose name looks like {0:?} already exists")]
    UserLooksAlike(String),
    #[error("no user {0:?}")]
    NoSuchUser(String),
    /// A DPoP-bound access token presented as a bearer token (RFC 9449 §7.2).
    #[error("the token is DPoP-bound: present it with the DPoP scheme and a proof")]
    BoundTokenAsBearer,
    /// The DPoP proof is missing where it is required, malformed, or does not fit the request
    /// or the session's key (RFC 9449 §5: `invalid_dpop_proof`).
    #[error("{0}")]
    InvalidDpopProof(Cow<'static, str>),
    /// The client must put this server nonce in its proof (RFC 9449 §8: `use_dpop_nonce`).
    #[error("a DPoP nonce is required: use the one in the DPoP-Nonce header")]
    UseDpopNonce { nonce: String },
    /// The token is valid but lacks the scope the endpoint needs (RFC 6750 §3.1).
    #[error("this endpoint needs a token with the scope {0:?}")]
    InsufficientScope(&'static str),
    /// The request conflicts with what exists (too many of something).
    #[error("{0}")]
    Conflict(&'static str),
    /// A bug or a broken host. Callers see nothing of the cause.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl FlowError {
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        FlowError::Internal(Box::new(e))
    }
}

impl From<StoreError> for FlowError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => FlowError::StoreUnavailable(e),
            other => FlowError::internal(other),
        }
    }
}

impl From<CredentialError> for FlowError {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::Busy => FlowError::Overloaded,
            other => FlowError::PasswordCheck(other),
        }
    }
}

/// The services every flow uses. Built once at start and shared by every worker.
pub struct Flows {
    state: Arc<LiveState>,
    store: SharedStore,
    hasher: PasswordHasher,
    limiter: Throttle,
    clock: Clock,
    accounts: Accounts,
    secrets: clients::VerifiedSecrets,
    metrics: Arc<Metrics>,
    dpop: dpop::DpopGuard,
    /// Set on SIGTERM/SIGINT: the server is going away, so it is no longer ready.
    draining: std::sync::atomic::AtomicBool,
    /// Back-channel logout tokens on their way to clients.
    outbox: crate::outbound::Outbox,
    /// The revocation log's newest record, for held feed polls.
    log_watch: Arc<feed::LogWatch>,
}

impl Flows {
    pub fn new(
        state: Arc<LiveState>,
        store: SharedStore,
        hasher: PasswordHasher,
        clock: Clock,
    ) -> Result<Flows, FlowError> {
        let metrics = Arc::new(Metrics::new());
        let store = MeasuredStore::wrap(store, metrics.store());
        let hasher = hasher.reporting_to(metrics.hashing());
        let accounts = Accounts::new(
            store.clone(),
            hasher.clone(),
            clock.clone(),
            state.current().config.revocation_retention(),
        );
        let limiter = Throttle::for_store(&store);
        let dpop = dpop::DpopGuard::new(&store, &state.current().config.dpop)?;
        let outbox = crate::outbound::Outbox::new(Arc::clone(&metrics));
        Ok(Flows {
            state,
            store,
            hasher,
            limiter,
            clock,
            accounts,
            secrets: clients::VerifiedSecrets::new()?,
            metrics,
            dpop,
            draining: std::sync::atomic::AtomicBool::new(false),
            outbox,
            log_watch: Arc::default(),
        })
    }

    /// Admits a request to the refresh or token endpoint from `ip` (`docs/http-api.md`, rate
    /// limits): checked before anything else, so a flood costs no store call.
    pub async fn admit_token_request(
        &self,
        snapshot: &Snapshot,
        ip: &str,
    ) -> Result<(), FlowError> {
        self.limiter
            .check_token_request(&snapshot.config.limits, ip, self.clock.now_ms())
            .await?
            .map_err(|t| {
                tracing::debug!(event = "token.throttled", %ip, "token request refused: throttled");
                FlowError::Throttled {
                    retry_after_secs: t.retry_after_secs,
                }
            })
    }

    /// Counts a refused refresh or token request from `ip` against its limit.
    pub async fn record_refused_token_request(
        &self,
        snapshot: &Snapshot,
        ip: &str,
    ) -> Result<(), FlowError> {
        Ok(self
            .limiter
            .record_token_failure(&snapshot.config.limits, ip, self.clock.now_ms())
            .await?)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts and logs sessions ended for `cause` (one named by `sid`, or `count` of a user's).
    fn revoked(&self, cause: RevokeCause, count: usize, sid: Option<Uuid>) {
        if count == 0 {
            return;
        }
        self.metrics.revoked(cause, count);
        match sid {
            Some(sid) => tracing::info!(event = "family.revoked", %sid, ?cause, "session ended"),
            None => tracing::info!(event = "family.revoked", count, ?cause, "sessions ended"),
        }
    }

    /// The config and keys in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.current()
    }

    pub fn state(&self) -> &Arc<LiveState> {
        &self.state
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The back-channel logout queue; the server runs its delivery.
    pub fn outbox(&self) -> &crate::outbound::Outbox {
        &self.outbox
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Points the unknown-user dummies at the costs of the stored password hashes (see
    /// [`PasswordHasher::follow_population`]). Run at start and now and then.
    pub async fn follow_password_costs(&self) -> Result<(), FlowError> {
        let users = self.store.list_users().await?;
        self.hasher
            .follow_population(users.iter().map(|u| u.password_hash.as_str()))
            .await?;
        Ok(())
    }

    /// From now on `/readyz` answers 503: the server is shutting down.
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Held feed polls answer now, so receivers move to another instance.
        self.log_watch.stop();
    }

    /// Ready when not shutting down, the store answers and a key signs now; otherwise the reason.
    pub async fn readiness(&self) -> Result<(), &'static str> {
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("shutting down");
        }
        if let Err(e) = self.store.ping().await {
            tracing::warn!(error = %crate::telemetry::error_chain(&e), "readiness: store unreachable");
            return Err("store unreachable");
        }
        if self.snapshot().keys.active(self.clock.now_ms()).is_none() {
            return Err("no active signing key");
        }
        Ok(())
    }

    /// The snapshot in force, provided a key signs now: checked first, so no session is created
    /// (nor token consumed) that cannot be answered.
    fn signing_snapshot(&self) -> Result<Arc<Snapshot>, FlowError> {
        let snapshot = self.snapshot();
        match snapshot.keys.active(self.clock.now_ms()) {
            Some(_) => Ok(snapshot),
            None => Err(FlowError::NoSigningKey),
        }
    }

    /// Signs an access token for `entitlement` (whose scope may have been narrowed for this
    /// token) and packs it with `refresh`.
    #[allow(clippy::too_many_arguments)]
    fn issue(
        &self,
        snapshot: &Snapshot,
        client: &ClientSpec,
        entitlement: &Entitlement,
        sid: Uuid,
        refresh: RefreshToken,
        jkt: Option<&str>,
        now: UnixMs,
    ) -> Result<Issued, FlowError> {
        let scope = entitlement.scope.as_str();
        let (access_token, expires_in) = sign_access(
            snapshot,
            client,
            &entitlement.user_id,
            scope,
            Some(sid),
            jkt,
            now,
        )?;
        let refresh_expires_in =
            u64::try_from((entitlement.successor_expires_at - now).max(0) / 1000).unwrap_or(0);
        Ok(Issued {
            access_token,
            token_type: TokenType::of(jkt),
            expires_in,
            refresh: Some(IssuedRefresh {
                token: refresh,
                expires_in: refresh_expires_in,
            }),
            scope: scope.to_owned(),
            client_id: entitlement.client_id.clone(),
            session_id: Some(sid),
            dpop_nonce: self.dpop_nonce(snapshot, client),
            id_token: None,
        })
    }
}

/// `ttl` seconds shortened by a uniformly random part of `fraction` of it (never lengthened:
/// keys stay published for the full `access_ttl`, and no token outlives what is configured).
fn jittered(ttl: u64, fraction: f64) -> Result<u64, FlowError> {
    if fraction <= 0.0 || ttl < 2 {
        return Ok(ttl);
    }
    let mut bytes = [0u8; 4];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| FlowError::internal(RandomnessFailed))?;
    let unit = f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0);
    // At most `fraction` (validated ≤ 0.5) of `ttl`: the product fits and is not negative.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let cut = (ttl as f64 * fraction * unit) as u64;
    Ok((ttl - cut).max(1))
}

#[derive(Debug, thiserror::Error)]
#[error("the system random source failed")]
struct RandomnessFailed;

/// Signs an RFC 9068 access token for `client` with the key of `snapshot` active at `now`, with
/// the client's lifetime and audience when it overrides the config's. Returns the token and its
/// lifetime in seconds.
pub fn sign_access(
    snapshot: &Snapshot,
    client: &ClientSpec,
    subject: &str,
    scope: &str,
    sid: Option<Uuid>,
    jkt: Option<&str>,
    now: UnixMs,
) -> Result<(String, u64), FlowError> {
    let key = snapshot.keys.active(now).ok_or(FlowError::NoSigningKey)?;
    let config = &snapshot.config;
    let ttl = jittered(
        client
            .access_ttl
            .unwrap_or(config.tokens.access_ttl)
            .as_secs(),
        config.tokens.access_ttl_jitter,
    )?;
    let iat = now.div_euclid(1000);
    let audience = client.audience.as_ref().unwrap_or(&config.tokens.audience);
    let claims = AccessClaims {
        iss: config.issuer.clone(),
        sub: subject.to_owned(),
        aud: Audience::from_list(audience),
        exp: iat.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX / 2)),
        iat,
        nbf: iat,
        jti: new_jti(),
        client_id: client.id.clone(),
        scope: (!scope.is_empty()).then(|| scope.to_owned()),
        sid: sid.map(|s| s.to_string()),
        cnf: jkt.map(|jkt| Confirmation {
            jkt: jkt.to_owned(),
        }),
    };
    let payload = serde_json::to_vec(&claims).map_err(FlowError::internal)?;
    let jws = key.sign_jws(&payload).map_err(FlowError::internal)?;
    Ok((jws, ttl))
}

#[cfg(test)]
mod tests {
    use super::jittered;

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        assert_eq!(jittered(900, 0.0).unwrap(), 900);
        let draws: Vec<u64> = (0..2000).map(|_| jittered(900, 0.1).unwrap()).collect();
        assert!(draws.iter().all(|t| (810..=900).contains(t)), "{draws:?}");
        let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
        assert!(distinct.len() > 60, "spread over the window: {distinct:?}");
        assert_eq!(jittered(1, 0.5).unwrap(), 1);
    }
}
