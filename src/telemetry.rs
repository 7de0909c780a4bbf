//! Logging: human-readable lines on standard error, level from `LATCHKEY_LOG` (default `info`),
//! and how an error's cause chain is written into one line.

use std::io::IsTerminal;

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
