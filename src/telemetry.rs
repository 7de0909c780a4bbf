//! Logging: human-readable lines on standard error, level from `LATCHKEY_LOG` (default `info`),
//! and how an error's cause chain is written into one line.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tracing::level_filters::LevelFilter;

pub fn init() {
    init_with_default(LevelFilter::INFO);
}

/// As [`init`], with another level when `LATCHKEY_LOG` is unset (tests use `warn`).
pub fn init_with_default(default: LevelFilter) {
    let level = std::env::var("LATCHKEY_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(default);
    // A second init (tests build many apps in one process) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
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
