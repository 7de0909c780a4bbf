//! `[limits]`: login throttling and the refresh and token-endpoint limits (`crate::limits`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawLimits {
    /// The counting window.
    pub(super) window: String,
    pub(super) login_attempts_per_ip: u32,
    pub(super) failed_logins_per_user_ip: u32,
    pub(super) failed_logins_per_user: u32,
    pub(super) max_lockout: String,
    /// Refused requests one client IP may make per window to the refresh and token endpoints.
    pub(super) failed_token_requests_per_ip: u32,
    /// All requests one client IP may make per window to them; 0: unlimited.
    pub(super) token_requests_per_ip: u32,
    /// Sign-in and sign-out pages one client IP may open per window (each is a record kept ten
    /// minutes).
    pub(super) sign_in_pages_per_ip: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            window: "1m".into(),
            login_attempts_per_ip: 60,
            failed_logins_per_user_ip: 5,
            failed_logins_per_user: 10,
            max_lockout: "1h".into(),
            failed_token_requests_per_ip: 60,
            token_requests_per_ip: 0,
            sign_in_pages_per_ip: 120,
        }
    }
}

/// Login throttling, per instance (see [`crate::limits`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSettings {
    pub window: Duration,
    /// Login attempts one client IP may make per window.
    pub login_attempts_per_ip: u32,
    /// Failed logins one (username, client IP) pair may make per window.
    pub failed_logins_per_user_ip: u32,
    /// Failures after which a username is locked, with exponential back-off, except for IPs it
    /// has a live session from.
    pub failed_logins_per_user: u32,
    /// The longest lock the back-off reaches.
    pub max_lockout: Duration,
    /// Refused requests (bad tokens, bad client credentials) one client IP may make per window
    /// to `/auth/refresh` and `/oauth/token` before it is refused outright.
    pub failed_token_requests_per_ip: u32,
    /// All requests one client IP may make per window to those endpoints; 0: no such limit
    /// (clients behind one NAT address share it).
    pub token_requests_per_ip: u32,
    /// Login, consent and sign-out pages one client IP may open per window: each page is a
    /// record the store keeps ten minutes, so this bounds what one address can make it hold.
    pub sign_in_pages_per_ip: u32,
}

pub(super) fn validate(raw: RawLimits, problems: &mut Vec<String>) -> LimitSettings {
    let limits = LimitSettings {
        window: duration(problems, "limits.window", &raw.window, false),
        login_attempts_per_ip: raw.login_attempts_per_ip,
        failed_logins_per_user_ip: raw.failed_logins_per_user_ip,
        failed_logins_per_user: raw.failed_logins_per_user,
        max_lockout: duration(problems, "limits.max_lockout", &raw.max_lockout, false),
        failed_token_requests_per_ip: raw.failed_token_requests_per_ip,
        token_requests_per_ip: raw.token_requests_per_ip,
        sign_in_pages_per_ip: raw.sign_in_pages_per_ip,
    };
    if limits.sign_in_pages_per_ip == 0 {
        problems.push("limits.sign_in_pages_per_ip: must be greater than zero".into());
    }
    if limits.failed_token_requests_per_ip == 0 {
        problems.push("limits.failed_token_requests_per_ip: must be greater than zero".into());
    }
    if limits.login_attempts_per_ip == 0
        || limits.failed_logins_per_user == 0
        || limits.failed_logins_per_user_ip == 0
    {
        problems.push(
            "limits: login_attempts_per_ip, failed_logins_per_user_ip and failed_logins_per_user \
             must be at least 1"
                .into(),
        );
    }
    if limits.max_lockout < limits.window {
        problems.push("limits.max_lockout: must be at least limits.window".into());
    }
    limits
}
