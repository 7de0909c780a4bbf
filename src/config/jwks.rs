//! `[jwks]`: how long resource servers may cache the published keys.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawJwks {
    pub(super) max_age: String,
    pub(super) stale_if_error: String,
}

impl Default for RawJwks {
    fn default() -> Self {
        RawJwks {
            max_age: "5m".into(),
            stale_if_error: "1d".into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct JwksSettings {
    /// `Cache-Control: max-age` of the JWKS document.
    pub max_age: Duration,
    /// `Cache-Control: stale-if-error`: how long resource servers may keep using a cached JWKS
    /// while the issuer is unreachable.
    pub stale_if_error: Duration,
}

pub(super) fn validate(raw: RawJwks, problems: &mut Vec<String>) -> JwksSettings {
    JwksSettings {
        max_age: duration(problems, "jwks.max_age", &raw.max_age, false),
        stale_if_error: duration(problems, "jwks.stale_if_error", &raw.stale_if_error, false),
    }
}
