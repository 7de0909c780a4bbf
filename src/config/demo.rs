//! `[demo]`: the demo SPA at `/demo/`, signed in as one cookie client.

use serde::{Deserialize, Serialize};

use super::clients::{ClientSpec, RefreshDelivery};

#[derive(Deserialize, Serialize, Default)]
#[serde(default)]
pub(super) struct RawDemo {
    pub(super) enabled: bool,
    pub(super) client_id: String,
}

/// The demo SPA at `/demo/` (off by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoSettings {
    pub enabled: bool,
    /// The cookie client the demo logs in as.
    pub client_id: String,
}

pub(super) fn validate(
    raw: RawDemo,
    clients: &[ClientSpec],
    problems: &mut Vec<String>,
) -> DemoSettings {
    let demo = DemoSettings {
        enabled: raw.enabled,
        client_id: raw.client_id,
    };
    if demo.enabled
        && !clients
            .iter()
            .any(|c| c.id == demo.client_id && c.refresh_delivery == RefreshDelivery::Cookie)
    {
        problems.push(format!(
            "demo.client_id: {:?} must name a client with refresh_delivery = \"cookie\"",
            demo.client_id
        ));
    }
    demo
}
