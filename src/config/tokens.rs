//! `[tokens]`: lifetimes of access and refresh tokens, the reuse grace, clock leeway, audience.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawTokens {
    pub(super) access_ttl: String,
    pub(super) access_ttl_jitter: f64,
    pub(super) refresh_ttl: String,
    pub(super) refresh_idle_ttl: String,
    pub(super) reuse_grace: String,
    pub(super) leeway: String,
    pub(super) audience: Vec<String>,
}

impl Default for RawTokens {
    fn default() -> Self {
        RawTokens {
            access_ttl: "15m".into(),
            access_ttl_jitter: 0.0,
            refresh_ttl: "30d".into(),
            refresh_idle_ttl: "7d".into(),
            reuse_grace: "10s".into(),
            leeway: "60s".into(),
            audience: vec!["api".into()],
        }
    }
}

#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub access_ttl: Duration,
    /// Each access token lives up to this fraction less than its `access_ttl`, at random, so
    /// that a burst of logins does not come back as a burst of refreshes. 0: off.
    pub access_ttl_jitter: f64,
    /// Absolute lifetime of a login session (a refresh family).
    pub refresh_ttl: Duration,
    /// A refresh token unused this long is dead.
    pub refresh_idle_ttl: Duration,
    /// How long a consumed refresh token still yields its successor (racing tabs).
    pub reuse_grace: Duration,
    /// Clock skew tolerated when checking `exp`/`nbf`, and added to each key's publication.
    pub leeway: Duration,
    pub audience: Vec<String>,
}

/// The most an access token's life may be shortened by jitter: half.
const MAX_JITTER: f64 = 0.5;

pub(super) fn validate(raw: RawTokens, problems: &mut Vec<String>) -> TokenSettings {
    let tokens = TokenSettings {
        access_ttl: duration(problems, "tokens.access_ttl", &raw.access_ttl, false),
        access_ttl_jitter: raw.access_ttl_jitter,
        refresh_ttl: duration(problems, "tokens.refresh_ttl", &raw.refresh_ttl, false),
        refresh_idle_ttl: duration(
            problems,
            "tokens.refresh_idle_ttl",
            &raw.refresh_idle_ttl,
            false,
        ),
        reuse_grace: duration(problems, "tokens.reuse_grace", &raw.reuse_grace, true),
        leeway: duration(problems, "tokens.leeway", &raw.leeway, true),
        audience: raw.audience,
    };
    if !(0.0..=MAX_JITTER).contains(&tokens.access_ttl_jitter) {
        problems.push(format!(
            "tokens.access_ttl_jitter: a fraction from 0 to {MAX_JITTER} (0.05: up to 5% \
             shorter), got {}",
            tokens.access_ttl_jitter
        ));
    }
    if tokens.refresh_idle_ttl > tokens.refresh_ttl {
        problems.push("tokens.refresh_idle_ttl: must not exceed tokens.refresh_ttl".into());
    }
    if tokens.access_ttl >= tokens.refresh_idle_ttl && !tokens.refresh_idle_ttl.is_zero() {
        problems.push("tokens.access_ttl: must be shorter than tokens.refresh_idle_ttl".into());
    }
    if tokens.reuse_grace > Duration::from_secs(300) {
        problems
            .push("tokens.reuse_grace: at most 5m; longer windows weaken theft detection".into());
    }
    if tokens.audience.is_empty() || tokens.audience.iter().any(|a| a.trim().is_empty()) {
        problems.push("tokens.audience: needs at least one non-empty audience".into());
    }
    tokens
}
