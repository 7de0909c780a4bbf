//! Logging: lines on standard error, human-readable or one JSON object each (`[log] format`),
//! filtered by `LATCHKEY_LOG` (`RUST_LOG`-style directives), and how an error's cause chain is
//! written into one line.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tracing::level_filters::LevelFilter;

use crate::config::LogFormat;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// latchkey's own events at `info`, its dependencies' from `warn` only: their start-up chatter
/// is debug noise to an operator.
pub const DEFAULT_FILTER: &str = "warn,latchkey=info,latchkey_verify=info";

/// `LATCHKEY_LOG`, as `RUST_LOG`-style directives: `debug`, `latchkey=debug,actix_web=warn`.
pub fn parse_filter(spec: &str) -> Result<Targets, String> {
    spec.trim().parse::<Targets>().map_err(|e| {
        format!("LATCHKEY_LOG: cannot parse {spec:?} ({e}); use e.g. \"info\" or \"latchkey=debug,actix_web=warn\"")
    })
}

/// Logging for `serve`: `LATCHKEY_LOG` or [`DEFAULT_FILTER`]. A value that does not parse is an
/// error, never silently ignored.
pub fn init(format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("LATCHKEY_LOG") {
        Ok(spec) => parse_filter(&spec)?,
        Err(_) => parse_filter(DEFAULT_FILTER)?,
    };
    install(filter, format);
    Ok(())
}

/// As [`init`], for tests: `LATCHKEY_LOG` when it parses, else everything at `default`.
pub fn init_with_default(default: LevelFilter) {
    install(filter_from_env(default), LogFormat::Text);
}

/// `LATCHKEY_LOG` when it parses, else `default` for everything.
fn filter_from_env(default: LevelFilter) -> Targets {
    std::env::var("LATCHKEY_LOG")
        .ok()
        .and_then(|spec| parse_filter(&spec).ok())
        .unwrap_or_else(|| Targets::new().with_default(default))
}

/// As [`init_with_default`], for test harnesses: every line goes through the harness's output
/// capture (threads a test spawns inherit it), so only a failing test's log is shown.
pub fn init_captured(default: LevelFilter) {
    let filter = filter_from_env(default);
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_ansi(false)
                .with_target(false),
        )
        .with(filter)
        .try_init();
}

fn install(filter: Targets, format: LogFormat) {
    // A second init (tests build many apps in one process) is harmless.
    let _ = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false),
            )
            .with(filter)
            .try_init(),
        // Fields at the top level, the spans a line belongs to (login, refresh…) beside them.
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true)
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .with(filter)
            .try_init(),
    };
}

/// `outer: inner: innermost`, for one log line. A cause whose text its wrapper already
/// printed is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Lets one log line through per period and counts the rest, so an outage that fails every
/// request logs a line every few seconds saying how many it stands for, not one per request.
pub struct LogThrottle {
    period_ms: i64,
    next_ms: AtomicI64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub const fn new(period_ms: i64) -> Self {
        LogThrottle {
            period_ms,
            next_ms: AtomicI64::new(i64::MIN),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now; `n` lines were suppressed since the last one. `None`: stay quiet.
    pub fn admit(&self, now_ms: i64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.period_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_counting_the_rest() {
        let throttle = LogThrottle::new(10_000);
        assert_eq!(throttle.admit(0), Some(0));
        for t in 1..100 {
            assert_eq!(throttle.admit(t), None);
        }
        assert_eq!(throttle.admit(10_000), Some(99));
        assert_eq!(throttle.admit(10_001), None);
        assert_eq!(throttle.admit(25_000), Some(1));
    }
}
