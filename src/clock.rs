//! The one source of "now" for every expiry decision.
//!
//! Production uses the system clock; tests share a handle and move it forward, so token and
//! session lifetimes are tested without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type UnixMs = i64;

/// A clock that reads the system time plus an offset that only tests move.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Self {
        Self::default()
    }

    pub fn now_ms(&self) -> UnixMs {
        system_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    pub fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Now, for APIs that take a `SystemTime` (the verifier's `*_at` methods).
    pub fn now_system_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.now_ms()).unwrap_or(0))
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(duration_ms(by), Ordering::Relaxed);
    }
}

pub fn system_ms() -> UnixMs {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => duration_ms(d),
        // A clock before 1970 is a broken host; treat it as the epoch rather than panic.
        Err(_) => 0,
    }
}

/// Saturating conversion, so absurd configured durations cannot overflow arithmetic.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}
