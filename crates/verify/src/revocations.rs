//! What the revocation feed says is revoked, checked on every verification: sessions (the
//! tokens' `sid`), subjects' cutoffs ("issued before"), and after a compaction one cutoff for
//! everything. Bounded: past `max_revoked` entries the set compacts into "every token issued
//! until now", which over-refuses (live sessions refresh once) but never lets a revoked token
//! through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::claims::Claims;
use crate::error::{ErrorKind, VerifyError};

#[derive(Default)]
pub(crate) struct Revocations {
    /// Set once a feed is followed: until then a check costs one atomic load.
    active: AtomicBool,
    set: RwLock<RevokedSet>,
    refused: AtomicU64,
    /// Seconds since the epoch from which the feed has been down (0: up).
    down_since: AtomicU64,
    /// Refuse every token once the feed has been down this long (seconds; 0: never).
    fail_closed_after: AtomicU64,
}

#[derive(Default)]
struct RevokedSet {
    /// Session id → when it was revoked (seconds), for pruning.
    sessions: HashMap<String, i64>,
    /// Subject → tokens issued strictly before this second are revoked.
    subjects: HashMap<String, i64>,
    /// After a compaction: tokens issued at or before this second are revoked.
    everything_until: Option<i64>,
    max: usize,
    /// How long an entry is kept (no token it concerns lives longer).
    retention: i64,
}

fn seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn revoked(detail: &'static str) -> VerifyError {
    VerifyError::new(ErrorKind::Revoked, detail)
}

impl Revocations {
    /// Sets the bounds (before anything is applied) and the fail-closed delay.
    pub(crate) fn configure(&self, max: usize, retention: Duration, fail_closed: Option<Duration>) {
        {
            let mut set = self.set.write().unwrap_or_else(PoisonError::into_inner);
            set.max = max.max(1);
            set.retention = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        }
        self.fail_closed_after.store(
            fail_closed.map_or(0, |d| d.as_secs().max(1)),
            Ordering::Relaxed,
        );
    }

    /// From now on every verification is checked against the set.
    pub(crate) fn activate(&self) {
        self.active.store(true, Ordering::Release);
    }

    /// Refuses a token the feed said is revoked, or any token while the feed has been down
    /// longer than the fail-closed delay.
    pub(crate) fn check(&self, claims: &Claims, now: SystemTime) -> Result<(), VerifyError> {
        if !self.active.load(Ordering::Acquire) {
            return Ok(());
        }
        let fail_closed = self.fail_closed_after.load(Ordering::Relaxed);
        let down = self.down_since.load(Ordering::Relaxed);
        if fail_closed > 0 && down > 0 {
            let down_for = u64::try_from(seconds(now))
                .unwrap_or(0)
                .saturating_sub(down);
            if down_for >= fail_closed {
                return Err(VerifyError::new(
                    ErrorKind::RevocationsUnknown,
                    "the revocation feed has been unreachable too long to accept tokens",
                ));
            }
        }
        let set = self.set.read().unwrap_or_else(PoisonError::into_inner);
        let result = set.verdict(claims);
        drop(set);
        if result.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// A session ended at `at` (seconds).
    pub(crate) fn revoke_session(&self, sid: &str, at: i64, now: SystemTime) {
        let mut set = self.set.write().unwrap_or_else(PoisonError::into_inner);
        set.sessions.insert(sid.to_owned(), at);
        set.bound(now);
    }

    /// Every token of `subject` issued before `cutoff` (seconds) is revoked.
    pub(crate) fn revoke_subject(&self, subject: &str, cutoff: i64, now: SystemTime) {
        let mut set = self.set.write().unwrap_or_else(PoisonError::into_inner);
        let entry = set.subjects.entry(subject.to_owned()).or_insert(cutoff);
        *entry = (*entry).max(cutoff);
        set.bound(now);
    }

    pub(crate) fn set_down(&self, down_since: Option<SystemTime>) {
        let value = down_since.map_or(0, |t| u64::try_from(seconds(t)).unwrap_or(0).max(1));
        self.down_since.store(value, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Sessions and subjects held.
    pub(crate) fn held(&self) -> usize {
        let set = self.set.read().unwrap_or_else(PoisonError::into_inner);
        set.sessions.len() + set.subjects.len()
    }
}

impl RevokedSet {
    fn verdict(&self, claims: &Claims) -> Result<(), VerifyError> {
        if let Some(sid) = &claims.sid
            && self.sessions.contains_key(sid)
        {
            return Err(revoked("session revoked"));
        }
        let cutoff = self.subjects.get(&claims.sub);
        if cutoff.is_none() && self.everything_until.is_none() {
            return Ok(());
        }
        // Without `iat` nothing shows the token came after a cutoff.
        let Some(iat) = claims.iat else {
            return Err(revoked("session revoked"));
        };
        if cutoff.is_some_and(|c| iat < *c) {
            return Err(revoked("session revoked"));
        }
        if self.everything_until.is_some_and(|c| iat <= c) {
            return Err(revoked(
                "session revoked (the revocation list was compacted; refresh the token)",
            ));
        }
        Ok(())
    }

    /// Forgets what no live token can concern, then compacts if still over the bound.
    fn bound(&mut self, now: SystemTime) {
        if self.sessions.len() + self.subjects.len() <= self.max {
            return;
        }
        let horizon = seconds(now).saturating_sub(self.retention);
        self.sessions.retain(|_, at| *at > horizon);
        self.subjects.retain(|_, cutoff| *cutoff > horizon);
        if self.sessions.len() + self.subjects.len() > self.max {
            tracing::warn!(
                max = self.max,
                "revocation list full: compacted into one cutoff; tokens issued until now are \
                 refused and their sessions refresh once"
            );
            self.sessions.clear();
            self.subjects.clear();
            self.everything_until = Some(seconds(now));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims(sub: &str, sid: Option<&str>, iat: i64) -> Claims {
        serde_json::from_value(serde_json::json!({
            "iss": "i", "sub": sub, "aud": "a", "exp": iat + 900, "iat": iat, "sid": sid,
        }))
        .unwrap()
    }

    fn at(s: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap())
    }

    #[test]
    fn an_idle_set_accepts_everything() {
        let r = Revocations::default();
        r.revoke_session("s1", 100, at(100));
        assert!(r.check(&claims("u", Some("s1"), 90), at(100)).is_ok());
    }

    #[test]
    fn sessions_and_subject_cutoffs_are_refused() {
        let r = Revocations::default();
        r.configure(100, Duration::from_secs(3600), None);
        r.activate();
        r.revoke_session("s1", 100, at(100));
        r.revoke_subject("u2", 200, at(200));
        let refused = r.check(&claims("u", Some("s1"), 90), at(101)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Revoked);
        assert!(r.check(&claims("u", Some("s2"), 90), at(101)).is_ok());
        assert!(r.check(&claims("u2", Some("s3"), 199), at(201)).is_err());
        assert!(
            r.check(&claims("u2", Some("s3"), 200), at(201)).is_ok(),
            "issued in the cutoff's second: only the ended sessions' ids refuse those"
        );
        assert_eq!(r.refused(), 2);
    }

    #[test]
    fn overflow_forgets_the_expired_then_compacts_without_letting_anything_through() {
        let r = Revocations::default();
        r.configure(3, Duration::from_secs(1000), None);
        r.activate();
        r.revoke_session("old", 100, at(100));
        for (i, sid) in ["a", "b", "c"].iter().enumerate() {
            r.revoke_session(sid, 2000 + i64::try_from(i).unwrap(), at(2000));
        }
        assert_eq!(r.held(), 3, "the entry older than the retention went first");
        r.revoke_session("d", 2100, at(2100));
        assert_eq!(r.held(), 0);
        // Everything issued until the compaction is refused, revoked or not.
        assert!(r.check(&claims("x", Some("live"), 2100), at(2101)).is_err());
        assert!(r.check(&claims("x", Some("d"), 2050), at(2101)).is_err());
        assert!(r.check(&claims("x", Some("new"), 2101), at(2102)).is_ok());
    }

    #[test]
    fn fail_closed_refuses_everything_after_its_delay() {
        let r = Revocations::default();
        r.configure(10, Duration::from_secs(60), Some(Duration::from_secs(30)));
        r.activate();
        r.set_down(Some(at(1000)));
        assert!(r.check(&claims("u", None, 990), at(1029)).is_ok());
        let refused = r.check(&claims("u", None, 990), at(1030)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::RevocationsUnknown);
        assert!(!refused.is_token_error());
        r.set_down(None);
        assert!(r.check(&claims("u", None, 990), at(1031)).is_ok());
    }
}
