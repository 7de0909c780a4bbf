//! Value formats shared by every section (durations, timestamps, identifiers) and the error
//! that collects problems. A leaf: it
//! imports nothing of the config, so every section file may import it.

use std::time::Duration;

use crate::clock::UnixMs;

/// Parses `"900s"`, `"15m"`, `"30d"`, `"1h 30m"`.
pub fn parse_duration(field: &str, value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        format!("{field}: invalid duration {value:?} ({e}); use e.g. \"900s\", \"15m\", \"30d\"")
    })
}

/// Parses an RFC 3339 UTC timestamp such as `"2026-11-01T00:00:00Z"`.
pub fn parse_timestamp(field: &str, value: &str) -> Result<UnixMs, String> {
    let t = humantime::parse_rfc3339_weak(value.trim()).map_err(|e| {
        format!("{field}: invalid timestamp {value:?} ({e}); use e.g. \"2026-11-01T00:00:00Z\"")
    })?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{field}: timestamp {value:?} is before 1970"))?;
    Ok(crate::clock::duration_ms(d))
}

pub fn format_timestamp(ms: UnixMs) -> String {
    let secs = u64::try_from(ms.div_euclid(1000)).unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// A duration field: positive (or zero where `zero_ok`), else a problem naming the field.
pub(super) fn duration(
    problems: &mut Vec<String>,
    field: &str,
    value: &str,
    zero_ok: bool,
) -> Duration {
    match parse_duration(field, value) {
        Ok(d) if d.is_zero() && !zero_ok => {
            problems.push(format!("{field}: must be greater than zero"));
            d
        }
        Ok(d) => d,
        Err(p) => {
            problems.push(p);
            Duration::ZERO
        }
    }
}

/// Key ids and client ids: 1-64 characters of `A-Z a-z 0-9 . _ -`, safe in headers and logs.
pub fn valid_identifier(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why a config was refused: one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    pub fn one(problem: String) -> Self {
        ConfigError {
            problems: vec![problem],
        }
    }
}

/// Of `candidates`, the one closest to `typed` by edit distance, if close enough to be what
/// was meant (at most a third of its length, and 3, apart).
pub fn nearest<'a>(typed: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (typed.chars().count() / 3).clamp(1, 3);
    candidates
        .map(|c| (edit_distance(typed, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
