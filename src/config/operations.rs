//! `[metrics]`, `[shutdown]` and `[log]`: how the process reports and how it stops.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

#[derive(Deserialize, Serialize, Default)]
#[serde(default)]
pub(super) struct RawMetrics {
    /// `HOST:PORT` serving `/metrics` alone (an internal address).
    pub(super) listen: Option<String>,
    /// Serve `/metrics` on the main listener too: off by default, since the main listener is
    /// public and the counters describe the traffic of every user.
    pub(super) on_main_listener: bool,
}

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawShutdown {
    /// After SIGTERM/SIGINT, how long `/readyz` answers 503 while still serving, so a load
    /// balancer stops sending new requests before the listener closes.
    pub(super) delay: String,
    /// Then how long in-flight requests may take before the process exits anyway.
    pub(super) drain_timeout: String,
}

impl Default for RawShutdown {
    fn default() -> Self {
        RawShutdown {
            delay: "0s".into(),
            drain_timeout: "10s".into(),
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawLog {
    /// `text` or `json`.
    pub(super) format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
        }
    }
}

/// SIGTERM/SIGINT: not ready at once, serving for `delay`, then the listener closes and
/// in-flight requests get up to `drain_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownSettings {
    pub delay: Duration,
    pub drain_timeout: Duration,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Where `/metrics` is served ([`crate::startup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Served here alone (an internal address).
    pub listen: Option<SocketAddr>,
    /// Also on the main (public) listener: only when the operator asks.
    pub on_main_listener: bool,
}

pub(super) fn validate_metrics(metrics: RawMetrics, problems: &mut Vec<String>) -> MetricsSettings {
    let metrics_listen = match metrics.listen.as_deref().map(str::parse::<SocketAddr>) {
        None => None,
        Some(Ok(addr)) => Some(addr),
        Some(Err(_)) => {
            problems.push("metrics.listen: must be IP:PORT, e.g. \"127.0.0.1:9100\"".into());
            None
        }
    };
    MetricsSettings {
        listen: metrics_listen,
        on_main_listener: metrics.on_main_listener,
    }
}

pub(super) fn validate_shutdown(raw: RawShutdown, problems: &mut Vec<String>) -> ShutdownSettings {
    ShutdownSettings {
        delay: duration(problems, "shutdown.delay", &raw.delay, true),
        drain_timeout: duration(
            problems,
            "shutdown.drain_timeout",
            &raw.drain_timeout,
            false,
        ),
    }
}

pub(super) fn validate_log(log: RawLog, problems: &mut Vec<String>) -> LogFormat {
    match log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            problems.push(format!(
                "log.format: {other:?} must be \"text\" or \"json\""
            ));
            LogFormat::Text
        }
    }
}
