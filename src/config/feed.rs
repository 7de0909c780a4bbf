//! `[feed]`: the revocation feed (`docs/revocation-feed.md`). Receivers poll by default; push
//! delivery (RFC 8935) goes only to the URLs listed here.

use serde::{Deserialize, Serialize};

#[derive(Default, Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawFeed {
    /// The URLs a stream may ask events to be pushed to (exact strings): https, or http on
    /// loopback. Empty: push delivery is off.
    pub(super) push_endpoints: Vec<String>,
}

/// The revocation feed's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedSettings {
    /// Where push delivery may go (exact URLs); empty: polling only.
    pub push_endpoints: Vec<String>,
}

impl FeedSettings {
    pub fn allows_push_to(&self, url: &str) -> bool {
        self.push_endpoints.iter().any(|u| u == url)
    }
}

pub(super) fn validate(raw: RawFeed, problems: &mut Vec<String>) -> FeedSettings {
    if raw.push_endpoints.len() > 1000 {
        problems.push("feed.push_endpoints: at most 1000 entries".into());
    }
    for uri in &raw.push_endpoints {
        if let Some(why) = super::clients::server_uri_problem(uri) {
            problems.push(format!("feed.push_endpoints: {uri:?}: {why}"));
        }
    }
    FeedSettings {
        push_endpoints: raw.push_endpoints,
    }
}
