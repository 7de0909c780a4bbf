//! Login throttling: attempts per client IP and failed attempts per username, counted in fixed
//! windows on the injected clock. Checked before any password hashing, so a flood costs no
//! argon2 work. The counters are per instance: behind a load balancer of N instances an
//! attacker gets at most N times the configured rate.
//!
//! The settings are passed in on every call, from the snapshot in force, so a reload of
//! `[limits]` applies to the next attempt.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::clock::{UnixMs, duration_ms};
use crate::config::LimitSettings;

/// Counters kept at most; past this, expired windows are dropped, and if none has expired the
/// oldest are, so memory stays bounded whatever the traffic.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Default)]
pub struct LoginLimiter {
    per_ip: Mutex<Windows>,
    failures_per_user: Mutex<Windows>,
}

/// Refused: retry after this many seconds.
#[derive(Debug, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after_secs: u64,
}

#[derive(Debug, Default)]
struct Windows(HashMap<String, (UnixMs, u32)>);

impl Windows {
    /// The count in the key's current window, after adding `add`.
    fn bump(&mut self, key: &str, now: UnixMs, window_ms: i64, add: u32) -> (u32, UnixMs) {
        if self.0.len() >= MAX_TRACKED && !self.0.contains_key(key) {
            self.0.retain(|_, (start, _)| now - *start < window_ms);
            if self.0.len() >= MAX_TRACKED {
                let mut starts: Vec<UnixMs> = self.0.values().map(|(s, _)| *s).collect();
                starts.sort_unstable();
                let cutoff = starts[starts.len() / 2];
                self.0.retain(|_, (start, _)| *start > cutoff);
            }
        }
        let entry = self.0.entry(key.to_owned()).or_insert((now, 0));
        if now - entry.0 >= window_ms {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(add);
        (entry.1, entry.0 + window_ms)
    }
}

impl LoginLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one attempt from `ip` and refuses it when `ip` or `username` is over its limit.
    pub fn check(
        &self,
        settings: &LimitSettings,
        ip: &str,
        username: &str,
        now: UnixMs,
    ) -> Result<(), Throttled> {
        let window = duration_ms(settings.window);
        let retry = |until: UnixMs| Throttled {
            retry_after_secs: u64::try_from((until - now).max(1000) / 1000).unwrap_or(1),
        };
        let (failures, until) = lock(&self.failures_per_user).bump(username, now, window, 0);
        if failures >= settings.failed_logins_per_user {
            return Err(retry(until));
        }
        let (attempts, until) = lock(&self.per_ip).bump(ip, now, window, 1);
        if attempts > settings.login_attempts_per_ip {
            return Err(retry(until));
        }
        Ok(())
    }

    /// Counts a failed attempt against `username`.
    pub fn record_failure(&self, settings: &LimitSettings, username: &str, now: UnixMs) {
        let window = duration_ms(settings.window);
        lock(&self.failures_per_user).bump(username, now, window, 1);
    }
}

fn lock(m: &Mutex<Windows>) -> std::sync::MutexGuard<'_, Windows> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> LimitSettings {
        LimitSettings {
            window: Duration::from_secs(60),
            login_attempts_per_ip: 5,
            failed_logins_per_user: 3,
        }
    }

    #[test]
    fn failures_per_user_lock_that_user_until_the_window_ends() {
        let (l, s) = (LoginLimiter::new(), settings());
        for i in 0..3 {
            l.check(&s, &format!("10.0.0.{i}"), "alice", 1_000).unwrap();
            l.record_failure(&s, "alice", 1_000);
        }
        assert_eq!(
            l.check(&s, "10.0.0.9", "alice", 2_000),
            Err(Throttled {
                retry_after_secs: 59
            })
        );
        assert!(l.check(&s, "10.0.0.9", "bob", 2_000).is_ok());
        assert!(l.check(&s, "10.0.0.9", "alice", 61_000).is_ok());
    }

    #[test]
    fn attempts_per_ip_are_bounded_whatever_the_username() {
        let (l, s) = (LoginLimiter::new(), settings());
        for i in 0..5 {
            l.check(&s, "10.0.0.1", &format!("user{i}"), 0).unwrap();
        }
        assert!(l.check(&s, "10.0.0.1", "another", 0).is_err());
        assert!(l.check(&s, "10.0.0.2", "another", 0).is_ok());
        assert!(l.check(&s, "10.0.0.1", "another", 60_000).is_ok());
    }

    #[test]
    fn new_settings_apply_to_the_next_attempt() {
        let l = LoginLimiter::new();
        let loose = settings();
        let tight = LimitSettings {
            login_attempts_per_ip: 1,
            ..settings()
        };
        l.check(&loose, "10.0.0.1", "a", 0).unwrap();
        l.check(&loose, "10.0.0.1", "b", 0).unwrap();
        // The same counters, judged by the settings in force now.
        assert!(l.check(&tight, "10.0.0.1", "c", 0).is_err());
    }

    #[test]
    fn memory_stays_bounded() {
        let (l, s) = (LoginLimiter::new(), settings());
        for i in 0..(MAX_TRACKED + 10) {
            let _ = l.check(&s, &i.to_string(), "u", 0);
        }
        assert!(lock(&l.per_ip).0.len() <= MAX_TRACKED);
    }
}
