//! Prometheus metrics (`GET /metrics`, `docs/metrics.md`). One [`Metrics`] per server: the
//! flows count outcomes, the store decorator ([`MeasuredStore`]) times calls, the request middleware counts
//! requests, and the signing-key gauges are read from the snapshot at each scrape.
//!
//! Every label value is bounded: routes are the route table's patterns, clients are the
//! registered ids, outcomes and causes are fixed words. Nothing a caller writes becomes a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::clock::UnixMs;
use crate::keys::scheduled_signer;
use crate::state::Snapshot;
use crate::store::ReuseCause;

mod measured_store;
pub use measured_store::MeasuredStore;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuedLabels {
    grant: &'static str,
    client: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    outcome: &'static str,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    kid: String,
    alg: &'static str,
}

/// What a refresh came to, as counted. `ReuseDetected` carries its cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    Rotated,
    GraceReplay,
    ReuseDetected(ReuseCause),
    ExpiredIdle,
    ExpiredAbsolute,
    /// The user's password or status changed since the login: the session ended.
    UserChanged,
    /// Presented by another client or another way; nothing consumed.
    WrongClient,
    /// A DPoP-bound session refreshed without a proof of its key.
    WrongKey,
    /// Never issued, from an ended session, or malformed.
    Unknown,
}

impl RefreshOutcome {
    fn labels(self) -> RefreshLabels {
        let (outcome, cause) = match self {
            RefreshOutcome::Rotated => ("rotated", ""),
            RefreshOutcome::GraceReplay => ("grace_replay", ""),
            RefreshOutcome::ReuseDetected(ReuseCause::AfterGrace) => {
                ("reuse_detected", "after_grace")
            }
            RefreshOutcome::ReuseDetected(ReuseCause::ConsumedSuccessor) => {
                ("reuse_detected", "consumed_successor")
            }
            RefreshOutcome::ReuseDetected(ReuseCause::RevokedFamily) => {
                ("reuse_detected", "revoked_family")
            }
            RefreshOutcome::ExpiredIdle => ("expired_idle", ""),
            RefreshOutcome::ExpiredAbsolute => ("expired_absolute", ""),
            RefreshOutcome::UserChanged => ("user_changed", ""),
            RefreshOutcome::WrongClient => ("wrong_client", ""),
            RefreshOutcome::WrongKey => ("wrong_dpop_key", ""),
            RefreshOutcome::Unknown => ("unknown", ""),
        };
        RefreshLabels { outcome, cause }
    }
}

/// Why sessions (refresh families) ended before their time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeCause {
    Logout,
    LogoutAll,
    /// One session ended by its user (`DELETE /auth/sessions/{sid}`) or by a client's
    /// revocation request (RFC 7009).
    Revocation,
    Password,
    Reuse,
    /// An authorization code presented a second time (RFC 6749 §4.1.2).
    CodeReuse,
    /// The operator: `users disable|passwd|delete|logout`, or a client removed from the config.
    Admin,
}

impl RevokeCause {
    fn as_str(self) -> &'static str {
        match self {
            RevokeCause::Logout => "logout",
            RevokeCause::LogoutAll => "logout_all",
            RevokeCause::Revocation => "revocation",
            RevokeCause::Password => "password",
            RevokeCause::Reuse => "reuse",
            RevokeCause::CodeReuse => "code_reuse",
            RevokeCause::Admin => "admin",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    Success,
    BadCredentials,
    Throttled,
    Disabled,
}

impl LoginOutcome {
    fn as_str(self) -> &'static str {
        match self {
            LoginOutcome::Success => "success",
            LoginOutcome::BadCredentials => "bad_credentials",
            LoginOutcome::Throttled => "throttled",
            LoginOutcome::Disabled => "disabled",
        }
    }
}

/// The password-hashing pool's queue, as the pool reports it.
#[derive(Clone, Debug, Default)]
pub struct HashingMetrics {
    /// Checks waiting for a hashing thread.
    pub waiting: Gauge,
    /// How long a check waited for a thread.
    pub wait: HashWait,
}

/// A histogram of seconds, cloneable into the pool.
#[derive(Clone, Debug)]
pub struct HashWait(pub Histogram);

impl Default for HashWait {
    fn default() -> Self {
        HashWait(seconds_histogram())
    }
}

/// Store calls, as the store decorator reports them.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    latency: Family<OperationLabels, Histogram>,
    errors: Family<OperationLabels, Counter>,
}

impl StoreMetrics {
    pub fn observe(&self, operation: &'static str, seconds: f64, failed: bool) {
        let labels = OperationLabels { operation };
        self.latency.get_or_create(&labels).observe(seconds);
        if failed {
            self.errors.get_or_create(&labels).inc();
        }
    }
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            latency: Family::new_with_constructor(seconds_histogram),
            errors: Family::default(),
        }
    }
}

/// 0.1 ms to ~13 s in doublings: a Redis call, an fsync, an argon2 wait and a stalled store
/// all fall inside.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    issued: Family<IssuedLabels, Counter>,
    refreshes: Family<RefreshLabels, Counter>,
    revoked: Family<CauseLabels, Counter>,
    logins: Family<OutcomeLabels, Counter>,
    dpop_proofs: Family<OutcomeLabels, Counter>,
    authorizations: Family<OutcomeLabels, Counter>,
    page_logins: Family<OutcomeLabels, Counter>,
    code_exchanges: Family<OutcomeLabels, Counter>,
    backchannel_logouts: Family<OutcomeLabels, Counter>,
    feed_pushes: Family<OutcomeLabels, Counter>,
    hashing: HashingMetrics,
    store: StoreMetrics,
    signing_key: Family<KeyLabels, Gauge>,
    signing_key_remaining: Gauge<f64, AtomicU64>,
    schedule_remaining: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("latchkey");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern and status",
            requests.clone(),
        );
        let latency =
            Family::<RouteLabels, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route pattern",
            latency.clone(),
        );
        let issued = Family::<IssuedLabels, Counter>::default();
        registry.register(
            "tokens_issued",
            "Access tokens issued, by grant (password, refresh_token, client_credentials) and client",
            issued.clone(),
        );
        let refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "refresh_outcomes",
            "Refresh-token presentations, by outcome (and cause, for reuse)",
            refreshes.clone(),
        );
        let revoked = Family::<CauseLabels, Counter>::default();
        registry.register(
            "families_revoked",
            "Sessions (refresh-token families) ended before their time, by cause",
            revoked.clone(),
        );
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "logins",
            "Password logins (login endpoint and password grant), by outcome",
            logins.clone(),
        );
        let dpop_proofs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "dpop_proofs",
            "DPoP proofs at the issuer (token endpoints and its own protected endpoints), by outcome",
            dpop_proofs.clone(),
        );
        let authorizations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "authorization_requests",
            "Authorization requests (/oauth/authorize), by how they were answered: code, login_page, consent_page, error_redirect, error_page",
            authorizations.clone(),
        );
        let page_logins = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "page_logins",
            "Logins on the hosted login page, by outcome (also counted in latchkey_logins)",
            page_logins.clone(),
        );
        let code_exchanges = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "code_exchanges",
            "Authorization codes presented at the token endpoint, by outcome: issued, invalid, reused",
            code_exchanges.clone(),
        );
        let backchannel_logouts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "backchannel_logouts",
            "Back-channel logout tokens sent to clients, by outcome: delivered, refused (4xx), gave_up (after retries), dropped (queue full)",
            backchannel_logouts.clone(),
        );
        let feed_pushes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "feed_pushes",
            "Security events pushed to revocation-feed receivers (RFC 8935), by outcome: delivered, refused (400), failed (network, 401/403, 429, 5xx: retried later)",
            feed_pushes.clone(),
        );
        let hashing = HashingMetrics::default();
        registry.register(
            "password_hash_queue_depth",
            "Password checks waiting for a hashing thread",
            hashing.waiting.clone(),
        );
        registry.register(
            "password_hash_wait_seconds",
            "Time a password check waited for a hashing thread",
            hashing.wait.0.clone(),
        );
        let store = StoreMetrics::default();
        registry.register(
            "store_call_duration_seconds",
            "Store calls, by operation",
            store.latency.clone(),
        );
        registry.register(
            "store_errors",
            "Store calls that failed (unreachable, timed out, or broken), by operation",
            store.errors.clone(),
        );
        let signing_key = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "signing_key_info",
            "The key signing access tokens now (value 1), by kid and alg",
            signing_key.clone(),
        );
        let signing_key_remaining = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "signing_key_remaining_seconds",
            "Seconds until the active key stops signing (its not_after)",
            signing_key_remaining.clone(),
        );
        let schedule_remaining = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "signing_schedule_remaining_seconds",
            "Seconds until no configured key signs (0: none signs now): alert well before it runs out",
            schedule_remaining.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            issued,
            refreshes,
            revoked,
            logins,
            dpop_proofs,
            authorizations,
            page_logins,
            code_exchanges,
            backchannel_logouts,
            feed_pushes,
            hashing,
            store,
            signing_key,
            signing_key_remaining,
            schedule_remaining,
        }
    }

    pub fn request(&self, route: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    /// An access token issued by `grant` to a registered `client`.
    pub fn issued(&self, grant: &'static str, client: &str) {
        self.issued
            .get_or_create(&IssuedLabels {
                grant,
                client: client.to_owned(),
            })
            .inc();
    }

    pub fn refresh(&self, outcome: RefreshOutcome) {
        self.refreshes.get_or_create(&outcome.labels()).inc();
    }

    /// `count` sessions ended for `cause` (none: nothing counted).
    pub fn revoked(&self, cause: RevokeCause, count: usize) {
        if count > 0 {
            self.revoked
                .get_or_create(&CauseLabels {
                    cause: cause.as_str(),
                })
                .inc_by(count as u64);
        }
    }

    pub fn login(&self, outcome: LoginOutcome) {
        self.logins
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// An authorization request's answer (see the metric's help).
    pub fn authorization(&self, outcome: &'static str) {
        self.authorizations
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A login on the hosted page.
    pub fn page_login(&self, outcome: LoginOutcome) {
        self.page_logins
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// A code presented for exchange: `issued`, `invalid` or `reused`.
    pub fn code_exchange(&self, outcome: &'static str) {
        self.code_exchanges
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A back-channel logout notice: `delivered`, `refused`, `gave_up` or `dropped`.
    pub fn backchannel_logout(&self, outcome: &'static str) {
        self.backchannel_logouts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A security event pushed to a feed receiver: `delivered`, `refused` or `failed`.
    pub fn feed_push(&self, outcome: &'static str) {
        self.feed_pushes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A DPoP proof: `accepted`, `invalid`, `replayed` or `nonce_required`.
    pub fn dpop_proof(&self, outcome: &'static str) {
        self.dpop_proofs
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn hashing(&self) -> HashingMetrics {
        self.hashing.clone()
    }

    pub fn store(&self) -> StoreMetrics {
        self.store.clone()
    }

    /// The text exposition (Prometheus 0.0.4), with the signing-key gauges read from `snapshot`
    /// at `now`.
    pub fn render(&self, snapshot: &Snapshot, now: UnixMs) -> String {
        self.read_signing_schedule(snapshot, now);
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    fn read_signing_schedule(&self, snapshot: &Snapshot, now: UnixMs) {
        self.signing_key.clear();
        let active = snapshot.keys.active(now);
        if let Some(key) = active {
            self.signing_key
                .get_or_create(&KeyLabels {
                    kid: key.kid().to_owned(),
                    alg: key.alg().as_str(),
                })
                .set(1);
        }
        let seconds = |until: UnixMs| (until.saturating_sub(now).max(0) as f64) / 1000.0;
        self.signing_key_remaining
            .set(active.map_or(0.0, |k| seconds(k.spec.not_after)));
        // Follow the schedule from signer to signer until no key signs.
        let specs = snapshot.keys.specs();
        let mut at = now;
        for _ in 0..=specs.len() {
            match scheduled_signer(specs, at) {
                Some(spec) => at = spec.not_after,
                None => break,
            }
        }
        self.schedule_remaining.set(seconds(at));
    }
}
