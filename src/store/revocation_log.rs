//! The revocation log: every revocation, written by the store in the same atomic step as the
//! revocation itself, and kept until the last access token it concerns has expired
//! (`docs/revocation-feed.md`). The Shared Signals transmitter (`crate::flows::feed`) reads it.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::clock::UnixMs;

/// Why sessions ended, as the log records it (and the feed's events say).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    /// The user logged out of one session.
    Logout,
    /// The user ended every session (`/auth/logout-all`).
    LogoutAll,
    /// The user ended one session from the session list (`DELETE /auth/sessions/{sid}`).
    SessionEnded,
    /// A client revoked a refresh token (RFC 7009).
    TokenRevoked,
    PasswordChanged,
    /// A consumed refresh token was presented again: theft is assumed.
    ReuseDetected,
    /// An authorization code was presented twice: the sessions it issued end.
    CodeReused,
    UserDisabled,
    UserEnabled,
    UserDeleted,
    /// An operator ended the user's sessions (`latchkey users logout`).
    AdminLogout,
    /// The session's client is no longer in the config.
    ClientRemoved,
}

impl RevocationReason {
    pub const ALL: [RevocationReason; 12] = [
        RevocationReason::Logout,
        RevocationReason::LogoutAll,
        RevocationReason::SessionEnded,
        RevocationReason::TokenRevoked,
        RevocationReason::PasswordChanged,
        RevocationReason::ReuseDetected,
        RevocationReason::CodeReused,
        RevocationReason::UserDisabled,
        RevocationReason::UserEnabled,
        RevocationReason::UserDeleted,
        RevocationReason::AdminLogout,
        RevocationReason::ClientRemoved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Logout => "logout",
            RevocationReason::LogoutAll => "logout_all",
            RevocationReason::SessionEnded => "session_ended",
            RevocationReason::TokenRevoked => "token_revoked",
            RevocationReason::PasswordChanged => "password_changed",
            RevocationReason::ReuseDetected => "reuse_detected",
            RevocationReason::CodeReused => "code_reused",
            RevocationReason::UserDisabled => "user_disabled",
            RevocationReason::UserEnabled => "user_enabled",
            RevocationReason::UserDeleted => "user_deleted",
            RevocationReason::AdminLogout => "admin_logout",
            RevocationReason::ClientRemoved => "client_removed",
        }
    }

    pub fn parse(s: &str) -> Option<RevocationReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the revocation concerns the user as a whole: the record then carries a cutoff
    /// ("every token of this user issued before"), which also covers a login that was in flight.
    pub fn is_per_user(self) -> bool {
        matches!(
            self,
            RevocationReason::LogoutAll
                | RevocationReason::PasswordChanged
                | RevocationReason::UserDisabled
                | RevocationReason::UserEnabled
                | RevocationReason::UserDeleted
                | RevocationReason::AdminLogout
        )
    }
}

/// What a revoking store call writes to the log beside the revocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogNote {
    pub reason: RevocationReason,
    /// When the revocation happens (the caller's clock).
    pub at: UnixMs,
    /// Until when the record matters: `at` plus the longest access-token lifetime and the
    /// verifiers' leeway.
    pub keep_until: UnixMs,
}

impl LogNote {
    /// The note for sessions ended at `at` for `reason`, kept for `retention`
    /// (`Config::revocation_retention`).
    pub fn new(retention: &std::time::Duration, reason: RevocationReason, at: UnixMs) -> LogNote {
        LogNote {
            reason,
            at,
            keep_until: at.saturating_add(crate::clock::duration_ms(*retention)),
        }
    }

    /// The cutoff a per-user record carries: the revocation's instant.
    pub fn cutoff(&self) -> Option<UnixMs> {
        self.reason.is_per_user().then_some(self.at)
    }

    /// The note packed for a Redis script (`append_revocation.lua`): `at|keep|reason`.
    pub(crate) fn packed(&self) -> String {
        format!("{}|{}|{}", self.at, self.keep_until, self.reason.as_str())
    }
}

/// A record's place in the log: ordered, comparable across reads of one store. Redis stream ids
/// (`ms-seq`) on Redis, `0-rowid` on the embedded store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition(pub u64, pub u64);

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

impl FromStr for LogPosition {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (a, b) = s.split_once('-').ok_or(())?;
        Ok(LogPosition(
            a.parse().map_err(|_| ())?,
            b.parse().map_err(|_| ())?,
        ))
    }
}

/// One revocation as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationRecord {
    pub position: LogPosition,
    pub at: UnixMs,
    pub keep_until: UnixMs,
    pub reason: RevocationReason,
    pub user_id: String,
    /// The sessions (refresh families, the access tokens' `sid`) that ended.
    pub sessions: Vec<Uuid>,
    /// Per-user records: the user's tokens issued before this instant are revoked too.
    pub cutoff: Option<UnixMs>,
}

/// Session ids as the log stores them: simple (hex) UUIDs, comma-separated.
pub(crate) fn join_sessions(sessions: &[Uuid]) -> String {
    sessions
        .iter()
        .map(|s| s.simple().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn split_sessions(joined: &str) -> Vec<Uuid> {
    joined
        .split(',')
        .filter_map(|s| Uuid::try_parse(s).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_and_round_trip() {
        let a: LogPosition = "1700000000000-3".parse().unwrap();
        assert_eq!(a, LogPosition(1_700_000_000_000, 3));
        assert_eq!(a.to_string(), "1700000000000-3");
        assert!(LogPosition(0, 9) < LogPosition(0, 10));
        assert!("x-1".parse::<LogPosition>().is_err());
        assert!("12".parse::<LogPosition>().is_err());
    }

    #[test]
    fn reasons_round_trip_and_note_packs() {
        for r in RevocationReason::ALL {
            assert_eq!(RevocationReason::parse(r.as_str()), Some(r));
        }
        let note = LogNote {
            reason: RevocationReason::Logout,
            at: 1_000_000,
            keep_until: 1_960_000,
        };
        assert_eq!(note.packed(), "1000000|1960000|logout");
        assert_eq!(note.cutoff(), None);
        let sids = vec![Uuid::new_v4(), Uuid::new_v4()];
        assert_eq!(split_sessions(&join_sessions(&sids)), sids);
        assert!(split_sessions("").is_empty());
    }
}
