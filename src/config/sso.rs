//! `[sso]`: the single sign-on session of the hosted login pages and the authorization codes
//! they hand out (`docs/sign-in-by-redirect.md`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawSso {
    /// A sign-on session unused this long ends: the next app asks for the password again.
    pub(super) session_idle: String,
    /// A sign-on session ends this long after its login, used or not.
    pub(super) session_max: String,
    /// How long an authorization code may wait for its exchange (RFC 6749 §4.1.2: short).
    pub(super) code_ttl: String,
    /// How long an ID token is valid (its `exp`).
    pub(super) id_token_ttl: String,
}

impl Default for RawSso {
    fn default() -> Self {
        RawSso {
            session_idle: "12h".into(),
            session_max: "7d".into(),
            code_ttl: "60s".into(),
            id_token_ttl: "10m".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsoSettings {
    pub session_idle: Duration,
    pub session_max: Duration,
    pub code_ttl: Duration,
    pub id_token_ttl: Duration,
}

pub(super) fn validate(raw: RawSso, problems: &mut Vec<String>) -> SsoSettings {
    let sso = SsoSettings {
        session_idle: duration(problems, "sso.session_idle", &raw.session_idle, false),
        session_max: duration(problems, "sso.session_max", &raw.session_max, false),
        code_ttl: duration(problems, "sso.code_ttl", &raw.code_ttl, false),
        id_token_ttl: duration(problems, "sso.id_token_ttl", &raw.id_token_ttl, false),
    };
    if sso.session_idle > sso.session_max {
        problems.push("sso.session_idle: longer than sso.session_max, which ends it first".into());
    }
    if sso.code_ttl > Duration::from_secs(600) {
        problems
            .push("sso.code_ttl: at most 10m (RFC 6749 4.1.2: a code must expire shortly)".into());
    }
    sso
}
