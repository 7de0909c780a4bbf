//! Login throttling, checked before any password hashing so a flood costs no argon2 work. The
//! policy follows OWASP's guidance on brute force (documented in `docs/http-api.md`):
//!
//! - **per client IP** (IPv6 counted per /64): at most `login_attempts_per_ip` attempts per
//!   `window`, whatever the usernames;
//! - **per (username, IP)**: at most `failed_logins_per_user_ip` failures per `window`, the tight
//!   limit on one attacker guessing one account;
//! - **per username**: from `failed_logins_per_user` failures on, each failure locks the username
//!   for twice as long as the last (`window`, 2×, 4×, … up to `max_lockout`). The lock does not
//!   block an IP the user has a live session from ([`UserLock::Locked`] is resolved by the
//!   caller), so an attacker cannot lock the owner out of the devices they use.
//!
//! Memory is bounded without letting an attacker choose what is dropped: checking never creates
//! an entry (only a recorded failure does, and recording one passes the per-IP limit first), and a
//! full table drops expired entries first, then those with the fewest failures — never a lock an
//! attacker did not earn with as many failures of their own.
//!
//! With a store several instances share (Redis), the counters live there ([`Throttle::Shared`]):
//! N instances enforce one limit. The embedded store serves one process, which counts in memory
//! ([`LoginLimiter`]). The settings come from the snapshot in force on every call.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::clock::{UnixMs, duration_ms};
use crate::config::LimitSettings;
use crate::store::{SharedCounters, SharedStore, StoreError};

/// Entries kept per table at most.
const MAX_TRACKED: usize = 100_000;

/// Refused: retry after this many seconds.
#[derive(Debug, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after_secs: u64,
}

/// The username's state when an attempt passes the per-IP and per-pair limits.
#[derive(Debug, PartialEq, Eq)]
pub enum UserLock {
    Open,
    /// Locked until then: refuse unless the attempt comes from an IP the user is known at.
    Locked {
        retry_after_secs: u64,
    },
}

#[derive(Debug, Default)]
pub struct LoginLimiter {
    attempts_per_ip: Mutex<Table<Window>>,
    /// Refused refresh and token-endpoint requests per client IP: a client guessing or replaying
    /// tokens is stopped before its requests cost store calls.
    token_failures_per_ip: Mutex<Table<Window>>,
    /// All refresh and token-endpoint requests per client IP, when `token_requests_per_ip` is set.
    token_requests_per_ip: Mutex<Table<Window>>,
    /// Sign-in and sign-out pages opened per client IP.
    pages_per_ip: Mutex<Table<Window>>,
    failures_per_pair: Mutex<Table<Window>>,
    failures_per_user: Mutex<Table<Backoff>>,
}

/// A fixed-window counter.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: UnixMs,
    count: u32,
}

/// Failures of one username, and the lock they earned.
#[derive(Clone, Copy, Debug)]
struct Backoff {
    failures: u32,
    last_failure: UnixMs,
    locked_until: UnixMs,
}

trait Entry {
    /// Past this instant the entry holds nothing worth keeping.
    fn expires(&self, settings: &LimitSettings) -> UnixMs;
    /// What a full table keeps longest.
    fn weight(&self) -> u32;
}

impl Entry for Window {
    fn expires(&self, settings: &LimitSettings) -> UnixMs {
        self.start + duration_ms(settings.window)
    }

    fn weight(&self) -> u32 {
        self.count
    }
}

impl Entry for Backoff {
    fn expires(&self, settings: &LimitSettings) -> UnixMs {
        // Failures are forgotten once a whole max_lockout passed without one.
        self.locked_until
            .max(self.last_failure + duration_ms(settings.max_lockout))
    }

    fn weight(&self) -> u32 {
        self.failures
    }
}

#[derive(Debug)]
struct Table<E>(HashMap<String, E>);

impl<E> Default for Table<E> {
    fn default() -> Self {
        Table(HashMap::new())
    }
}

impl<E: Entry + Copy> Table<E> {
    fn get(&self, key: &str, settings: &LimitSettings, now: UnixMs) -> Option<E> {
        self.0
            .get(key)
            .copied()
            .filter(|e| now < e.expires(settings))
    }

    /// Makes room for one more entry: expired ones first, then the lightest tenth.
    fn make_room(&mut self, settings: &LimitSettings, now: UnixMs) {
        if self.0.len() < MAX_TRACKED {
            return;
        }
        self.0.retain(|_, e| now < e.expires(settings));
        if self.0.len() >= MAX_TRACKED {
            let mut weights: Vec<u32> = self.0.values().map(Entry::weight).collect();
            let tenth = weights.len() / 10;
            let (_, cutoff, _) = weights.select_nth_unstable(tenth);
            let cutoff = *cutoff;
            let mut excess = self.0.len() + 1 - MAX_TRACKED + tenth;
            self.0.retain(|_, e| {
                if excess > 0 && e.weight() <= cutoff {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    fn put(&mut self, key: &str, entry: E, settings: &LimitSettings, now: UnixMs) {
        if !self.0.contains_key(key) {
            self.make_room(settings, now);
        }
        self.0.insert(key.to_owned(), entry);
    }
}

/// IPv4 per address; IPv6 per /64, the smallest block a single subscriber usually holds.
pub(crate) fn ip_bucket(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map_or_else(String::new, |v4| v4.to_string()),
        _ => ip.to_owned(),
    }
}

/// The (username, IP) counter's key. Users and clients count in namespaces of their own, told
/// apart before the name, so no username (not even `client:<id>`) reaches a client's counter.
fn pair_key(username: &str, ip: &str) -> String {
    format!("{}\u{0}u\u{0}{username}", ip_bucket(ip))
}

/// The (client, IP) counter's key for client authentication (see [`pair_key`]).
fn client_pair_key(client_id: &str, ip: &str) -> String {
    format!("{}\u{0}c\u{0}{client_id}", ip_bucket(ip))
}

/// Counts one request of `ip`'s bucket in the fixed window of `table`, refusing it past `limit`.
fn count_in_window(
    table: &Mutex<Table<Window>>,
    ip: &str,
    limit: u32,
    settings: &LimitSettings,
    now: UnixMs,
) -> Result<(), Throttled> {
    let mut table = lock(table);
    let key = ip_bucket(ip);
    let mut w = table.get(&key, settings, now).unwrap_or(Window {
        start: now,
        count: 0,
    });
    if w.count >= limit {
        return Err(Throttled {
            retry_after_secs: retry_after(w.start + duration_ms(settings.window), now),
        });
    }
    w.count += 1;
    table.put(&key, w, settings, now);
    Ok(())
}

fn retry_after(until: UnixMs, now: UnixMs) -> u64 {
    u64::try_from((until - now).max(1000) / 1000).unwrap_or(1)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LoginLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one attempt from `ip` for `username`. Refuses it when the IP or the (username, IP)
    /// pair is over its limit; otherwise says whether the username is locked.
    pub fn check(
        &self,
        settings: &LimitSettings,
        ip: &str,
        username: &str,
        now: UnixMs,
    ) -> Result<UserLock, Throttled> {
        let window = duration_ms(settings.window);
        count_in_window(
            &self.attempts_per_ip,
            ip,
            settings.login_attempts_per_ip,
            settings,
            now,
        )?;
        if let Some(w) = lock(&self.failures_per_pair).get(&pair_key(username, ip), settings, now)
            && w.count >= settings.failed_logins_per_user_ip
        {
            return Err(Throttled {
                retry_after_secs: retry_after(w.start + window, now),
            });
        }
        Ok(
            match lock(&self.failures_per_user).get(username, settings, now) {
                Some(b) if now < b.locked_until => UserLock::Locked {
                    retry_after_secs: retry_after(b.locked_until, now),
                },
                _ => UserLock::Open,
            },
        )
    }

    /// Admits one request from `ip` to the refresh or token endpoint: refused once the IP had
    /// `failed_token_requests_per_ip` refusals in the window, or (when set) made
    /// `token_requests_per_ip` requests.
    pub fn check_token_request(
        &self,
        settings: &LimitSettings,
        ip: &str,
        now: UnixMs,
    ) -> Result<(), Throttled> {
        if let Some(w) = lock(&self.token_failures_per_ip).get(&ip_bucket(ip), settings, now)
            && w.count >= settings.failed_token_requests_per_ip
        {
            return Err(Throttled {
                retry_after_secs: retry_after(w.start + duration_ms(settings.window), now),
            });
        }
        match settings.token_requests_per_ip {
            0 => Ok(()),
            limit => count_in_window(&self.token_requests_per_ip, ip, limit, settings, now),
        }
    }

    /// Counts a refused refresh or token request from `ip`.
    pub fn record_token_failure(&self, settings: &LimitSettings, ip: &str, now: UnixMs) {
        let mut table = lock(&self.token_failures_per_ip);
        let key = ip_bucket(ip);
        let mut w = table.get(&key, settings, now).unwrap_or(Window {
            start: now,
            count: 0,
        });
        w.count = w.count.saturating_add(1);
        table.put(&key, w, settings, now);
    }

    /// Entries held per table (login attempts per IP, failures per pair, failures per user,
    /// token failures per IP, token requests per IP): each at most [`MAX_TRACKED`].
    pub fn tracked(&self) -> [usize; 6] {
        [
            lock(&self.attempts_per_ip).0.len(),
            lock(&self.failures_per_pair).0.len(),
            lock(&self.failures_per_user).0.len(),
            lock(&self.token_failures_per_ip).0.len(),
            lock(&self.token_requests_per_ip).0.len(),
            lock(&self.pages_per_ip).0.len(),
        ]
    }

    /// Counts a sign-in or sign-out page opened from `ip`; refused past `sign_in_pages_per_ip`
    /// in the window.
    pub fn check_page(
        &self,
        settings: &LimitSettings,
        ip: &str,
        now: UnixMs,
    ) -> Result<(), Throttled> {
        count_in_window(
            &self.pages_per_ip,
            ip,
            settings.sign_in_pages_per_ip,
            settings,
            now,
        )
    }

    /// Counts a failed attempt for `username` from `ip`, locking the username with exponential
    /// back-off past its threshold.
    pub fn record_failure(&self, settings: &LimitSettings, username: &str, ip: &str, now: UnixMs) {
        let key = pair_key(username, ip);
        {
            let mut pairs = lock(&self.failures_per_pair);
            let mut w = pairs.get(&key, settings, now).unwrap_or(Window {
                start: now,
                count: 0,
            });
            w.count = w.count.saturating_add(1);
            pairs.put(&key, w, settings, now);
        }
        let mut users = lock(&self.failures_per_user);
        let mut b = users.get(username, settings, now).unwrap_or(Backoff {
            failures: 0,
            last_failure: now,
            locked_until: now,
        });
        b.failures = b.failures.saturating_add(1);
        b.last_failure = now;
        if b.failures >= settings.failed_logins_per_user {
            let doublings = (b.failures - settings.failed_logins_per_user).min(30);
            let lock_ms = duration_ms(settings.window)
                .saturating_mul(1 << doublings)
                .min(duration_ms(settings.max_lockout));
            b.locked_until = b.locked_until.max(now + lock_ms);
        }
        users.put(username, b, settings, now);
    }

    /// Client authentication: only the (client, IP) failure limit applies. Client secrets are
    /// long random strings nobody guesses, so a per-client lock would only let anyone lock a
    /// service out; and per-IP attempt counting would throttle a busy service's own traffic.
    pub fn check_pair(
        &self,
        settings: &LimitSettings,
        ip: &str,
        client_id: &str,
        now: UnixMs,
    ) -> Result<(), Throttled> {
        let window = duration_ms(settings.window);
        match lock(&self.failures_per_pair).get(&client_pair_key(client_id, ip), settings, now) {
            Some(w) if w.count >= settings.failed_logins_per_user_ip => Err(Throttled {
                retry_after_secs: retry_after(w.start + window, now),
            }),
            _ => Ok(()),
        }
    }

    /// Counts a failed client authentication against the (client, IP) pair only.
    pub fn record_pair_failure(
        &self,
        settings: &LimitSettings,
        client_id: &str,
        ip: &str,
        now: UnixMs,
    ) {
        let key = client_pair_key(client_id, ip);
        let mut pairs = lock(&self.failures_per_pair);
        let mut w = pairs.get(&key, settings, now).unwrap_or(Window {
            start: now,
            count: 0,
        });
        w.count = w.count.saturating_add(1);
        pairs.put(&key, w, settings, now);
    }

    /// A successful login from `ip` clears that pair's failures.
    pub fn record_success(&self, username: &str, ip: &str) {
        lock(&self.failures_per_pair)
            .0
            .remove(&pair_key(username, ip));
    }
}

/// The throttles in force: counted in this process, or in the store every instance shares.
/// Each check answers `Ok(Err(Throttled))` when refused; `Err` is a store that did not answer.
pub enum Throttle {
    Local(Box<LoginLimiter>),
    Shared(Box<SharedThrottle>),
}

/// The counters in the store, and which client IPs this instance already knows to be over the
/// refused-token-request limit: refresh, the hot path, costs no extra store call. Another
/// instance learns it at that IP's next refusal there.
pub struct SharedThrottle {
    counters: Arc<dyn SharedCounters>,
    closed: Mutex<Table<Window>>,
}

impl SharedThrottle {
    /// Refuses `key` here until its shared counter (started at `start`) resets.
    fn close(&self, key: &str, count: u32, start: UnixMs, settings: &LimitSettings, now: UnixMs) {
        lock(&self.closed).put(key, Window { start, count }, settings, now);
    }
}

fn retry_after_ms(ms: i64) -> u64 {
    u64::try_from((ms.max(1000) + 999) / 1000).unwrap_or(1)
}

impl Throttle {
    /// Shared when the store offers shared counters.
    pub fn for_store(store: &SharedStore) -> Throttle {
        match store.shared_counters() {
            Some(counters) => Throttle::Shared(Box::new(SharedThrottle {
                counters,
                closed: Mutex::default(),
            })),
            None => Throttle::Local(Box::default()),
        }
    }

    /// As [`LoginLimiter::check`].
    pub async fn check(
        &self,
        settings: &LimitSettings,
        ip: &str,
        username: &str,
        now: UnixMs,
    ) -> Result<Result<UserLock, Throttled>, StoreError> {
        let counters = match self {
            Throttle::Local(local) => return Ok(local.check(settings, ip, username, now)),
            Throttle::Shared(shared) => &shared.counters,
        };
        let window = duration_ms(settings.window);
        let (attempts, ttl) = counters
            .add(&format!("ip:{}", ip_bucket(ip)), 1, window)
            .await?;
        if attempts > settings.login_attempts_per_ip {
            return Ok(Err(Throttled {
                retry_after_secs: retry_after_ms(ttl),
            }));
        }
        let (failures, ttl) = counters
            .add(&format!("pair:{}", pair_key(username, ip)), 0, window)
            .await?;
        if failures >= settings.failed_logins_per_user_ip {
            return Ok(Err(Throttled {
                retry_after_secs: retry_after_ms(ttl),
            }));
        }
        let locked_until = counters.locked_until(&format!("user:{username}")).await?;
        Ok(Ok(if now < locked_until {
            UserLock::Locked {
                retry_after_secs: retry_after(locked_until, now),
            }
        } else {
            UserLock::Open
        }))
    }

    /// As [`LoginLimiter::record_failure`].
    pub async fn record_failure(
        &self,
        settings: &LimitSettings,
        username: &str,
        ip: &str,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        let counters = match self {
            Throttle::Local(local) => {
                local.record_failure(settings, username, ip, now);
                return Ok(());
            }
            Throttle::Shared(shared) => &shared.counters,
        };
        let window = duration_ms(settings.window);
        counters
            .add(&format!("pair:{}", pair_key(username, ip)), 1, window)
            .await?;
        counters
            .backoff_failure(
                &format!("user:{username}"),
                now,
                settings.failed_logins_per_user,
                window,
                duration_ms(settings.max_lockout),
            )
            .await?;
        Ok(())
    }

    /// As [`LoginLimiter::check_pair`], for client authentication. Shared: refused once this
    /// instance has seen the pair go over the limit in Redis, so an authentication that
    /// succeeds costs no store call (another instance closes at the pair's next failure there).
    pub async fn check_pair(
        &self,
        settings: &LimitSettings,
        ip: &str,
        client_id: &str,
        now: UnixMs,
    ) -> Result<Result<(), Throttled>, StoreError> {
        let shared = match self {
            Throttle::Local(local) => return Ok(local.check_pair(settings, ip, client_id, now)),
            Throttle::Shared(shared) => shared,
        };
        Ok(
            match lock(&shared.closed).get(
                &format!("pair:{}", client_pair_key(client_id, ip)),
                settings,
                now,
            ) {
                Some(w) if w.count >= settings.failed_logins_per_user_ip => Err(Throttled {
                    retry_after_secs: retry_after(w.start + duration_ms(settings.window), now),
                }),
                _ => Ok(()),
            },
        )
    }

    /// As [`LoginLimiter::record_pair_failure`].
    pub async fn record_pair_failure(
        &self,
        settings: &LimitSettings,
        client_id: &str,
        ip: &str,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        match self {
            Throttle::Local(local) => local.record_pair_failure(settings, client_id, ip, now),
            Throttle::Shared(shared) => {
                let key = format!("pair:{}", client_pair_key(client_id, ip));
                let window = duration_ms(settings.window);
                let (failures, ttl) = shared.counters.add(&key, 1, window).await?;
                if failures >= settings.failed_logins_per_user_ip {
                    shared.close(&key, failures, now + ttl - window, settings, now);
                }
            }
        }
        Ok(())
    }

    /// A client authenticated from `ip`: its pair's failures are forgotten. Shared counters
    /// are left to expire with their window rather than cost a store call per authentication.
    pub fn forget_client_failures(&self, client_id: &str, ip: &str) {
        if let Throttle::Local(local) = self {
            lock(&local.failures_per_pair)
                .0
                .remove(&client_pair_key(client_id, ip));
        }
    }

    /// As [`LoginLimiter::record_success`].
    pub async fn record_success(&self, username: &str, ip: &str) -> Result<(), StoreError> {
        match self {
            Throttle::Local(local) => local.record_success(username, ip),
            Throttle::Shared(shared) => {
                shared
                    .counters
                    .remove(&format!("pair:{}", pair_key(username, ip)))
                    .await?
            }
        }
        Ok(())
    }

    /// As [`LoginLimiter::check_page`].
    pub async fn check_page(
        &self,
        settings: &LimitSettings,
        ip: &str,
        now: UnixMs,
    ) -> Result<Result<(), Throttled>, StoreError> {
        let shared = match self {
            Throttle::Local(local) => return Ok(local.check_page(settings, ip, now)),
            Throttle::Shared(shared) => shared,
        };
        let (pages, ttl) = shared
            .counters
            .add(
                &format!("page:{}", ip_bucket(ip)),
                1,
                duration_ms(settings.window),
            )
            .await?;
        Ok(if pages > settings.sign_in_pages_per_ip {
            Err(Throttled {
                retry_after_secs: retry_after_ms(ttl),
            })
        } else {
            Ok(())
        })
    }

    /// As [`LoginLimiter::check_token_request`].
    pub async fn check_token_request(
        &self,
        settings: &LimitSettings,
        ip: &str,
        now: UnixMs,
    ) -> Result<Result<(), Throttled>, StoreError> {
        let shared = match self {
            Throttle::Local(local) => return Ok(local.check_token_request(settings, ip, now)),
            Throttle::Shared(shared) => shared,
        };
        let window = duration_ms(settings.window);
        let bucket = ip_bucket(ip);
        if let Some(w) = lock(&shared.closed).get(&bucket, settings, now)
            && w.count >= settings.failed_token_requests_per_ip
        {
            return Ok(Err(Throttled {
                retry_after_secs: retry_after(w.start + window, now),
            }));
        }
        if settings.token_requests_per_ip > 0 {
            let (requests, ttl) = shared
                .counters
                .add(&format!("treq:{bucket}"), 1, window)
                .await?;
            if requests > settings.token_requests_per_ip {
                return Ok(Err(Throttled {
                    retry_after_secs: retry_after_ms(ttl),
                }));
            }
        }
        Ok(Ok(()))
    }

    /// As [`LoginLimiter::record_token_failure`].
    pub async fn record_token_failure(
        &self,
        settings: &LimitSettings,
        ip: &str,
        now: UnixMs,
    ) -> Result<(), StoreError> {
        match self {
            Throttle::Local(local) => local.record_token_failure(settings, ip, now),
            Throttle::Shared(shared) => {
                let window = duration_ms(settings.window);
                let bucket = ip_bucket(ip);
                let (refused, ttl) = shared
                    .counters
                    .add(&format!("tok:{bucket}"), 1, window)
                    .await?;
                if refused >= settings.failed_token_requests_per_ip {
                    shared.close(&bucket, refused, now + ttl - window, settings, now);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> LimitSettings {
        LimitSettings {
            window: Duration::from_secs(60),
            login_attempts_per_ip: 5,
            failed_logins_per_user_ip: 3,
            failed_logins_per_user: 4,
            max_lockout: Duration::from_secs(600),
            failed_token_requests_per_ip: 2,
            token_requests_per_ip: 3,
            sign_in_pages_per_ip: 2,
        }
    }

    #[test]
    fn pages_are_counted_per_address() {
        let (l, s) = (LoginLimiter::new(), settings());
        assert!(l.check_page(&s, "192.0.2.1", 0).is_ok());
        assert!(l.check_page(&s, "192.0.2.1", 1).is_ok());
        assert!(l.check_page(&s, "192.0.2.1", 2).is_err());
        assert!(l.check_page(&s, "192.0.2.2", 2).is_ok());
        // The next window opens again.
        assert!(l.check_page(&s, "192.0.2.1", 60_001).is_ok());
    }

    #[test]
    fn refused_token_requests_close_the_ip_for_the_window() {
        let (l, s) = (LoginLimiter::new(), settings());
        let s = LimitSettings {
            token_requests_per_ip: 0,
            ..s
        };
        // Unlimited while they succeed.
        for _ in 0..100 {
            l.check_token_request(&s, "10.0.0.1", 0).unwrap();
        }
        l.record_token_failure(&s, "10.0.0.1", 0);
        l.check_token_request(&s, "10.0.0.1", 0).unwrap();
        l.record_token_failure(&s, "10.0.0.1", 0);
        assert!(l.check_token_request(&s, "10.0.0.1", 1_000).is_err());
        l.check_token_request(&s, "10.0.0.2", 1_000).unwrap();
        l.check_token_request(&s, "10.0.0.1", 60_000).unwrap();
    }

    #[test]
    fn token_requests_are_limited_per_ip_and_window() {
        let (l, s) = (LoginLimiter::new(), settings());
        for _ in 0..3 {
            l.check_token_request(&s, "10.0.0.1", 0).unwrap();
        }
        assert_eq!(
            l.check_token_request(&s, "10.0.0.1", 1_000),
            Err(Throttled {
                retry_after_secs: 59
            })
        );
        // Another IP, and the same IP in the next window, are not affected.
        l.check_token_request(&s, "10.0.0.2", 1_000).unwrap();
        l.check_token_request(&s, "10.0.0.1", 60_000).unwrap();
        // IPv6 counts per /64.
        for i in 0..3 {
            l.check_token_request(&s, &format!("2001:db8::{i}"), 0)
                .unwrap();
        }
        assert!(l.check_token_request(&s, "2001:db8::ff", 0).is_err());
    }

    #[test]
    fn token_request_counters_stay_bounded_under_a_flood_of_addresses() {
        let (l, s) = (LoginLimiter::new(), settings());
        for i in 0..2 * MAX_TRACKED {
            let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
            let _ = l.check_token_request(&s, &ip, 1_000);
        }
        assert!(l.tracked()[4] <= MAX_TRACKED);
        // A busy client's counter survives the flood: it is heavier than the new arrivals.
        for _ in 0..3 {
            let _ = l.check_token_request(&s, "192.0.2.1", 2_000);
        }
        for i in 0..MAX_TRACKED {
            let ip = format!(
                "10.{}.{}.{}",
                100 + ((i >> 16) & 127),
                (i >> 8) & 255,
                i & 255
            );
            let _ = l.check_token_request(&s, &ip, 3_000);
        }
        assert!(l.check_token_request(&s, "192.0.2.1", 4_000).is_err());
        assert!(l.tracked().iter().all(|&n| n <= MAX_TRACKED));
    }

    fn fail(l: &LoginLimiter, s: &LimitSettings, user: &str, ip: &str, now: UnixMs) {
        l.check(s, ip, user, now).unwrap();
        l.record_failure(s, user, ip, now);
    }

    #[test]
    fn failures_per_user_and_ip_throttle_that_pair_only() {
        let (l, s) = (LoginLimiter::new(), settings());
        for _ in 0..3 {
            fail(&l, &s, "alice", "10.0.0.1", 1_000);
        }
        assert_eq!(
            l.check(&s, "10.0.0.1", "alice", 2_000),
            Err(Throttled {
                retry_after_secs: 59
            })
        );
        // Another IP, or another user from that IP, is not held by that pair.
        assert_eq!(l.check(&s, "10.0.0.2", "alice", 2_000), Ok(UserLock::Open));
        assert_eq!(l.check(&s, "10.0.0.1", "bob", 2_000), Ok(UserLock::Open));
        assert_eq!(l.check(&s, "10.0.0.1", "alice", 61_000), Ok(UserLock::Open));
    }

    #[test]
    fn a_username_locks_with_exponential_back_off_up_to_the_cap() {
        let (l, s) = (LoginLimiter::new(), settings());
        // Four failures from four IPs (no pair reaches its limit): locked for one window.
        for i in 0..4 {
            fail(&l, &s, "alice", &format!("10.0.0.{i}"), 0);
        }
        assert_eq!(
            l.check(&s, "10.0.1.1", "alice", 0),
            Ok(UserLock::Locked {
                retry_after_secs: 60
            })
        );
        // Each further failure doubles it: 2, 4, 8 windows, then the 10-minute cap.
        let mut now = 0;
        for expected in [120, 240, 480, 600, 600] {
            now += 1_000;
            l.record_failure(&s, "alice", &format!("10.1.0.{now}"), now);
            assert_eq!(
                l.check(&s, "10.2.0.1", "alice", now),
                Ok(UserLock::Locked {
                    retry_after_secs: expected
                })
            );
        }
        // Forgotten once max_lockout passes without a failure.
        assert_eq!(
            l.check(&s, "10.2.0.1", "alice", now + 600_001),
            Ok(UserLock::Open)
        );
    }

    #[test]
    fn attempts_per_ip_are_bounded_whatever_the_username_and_ipv6_counts_per_64() {
        let (l, s) = (LoginLimiter::new(), settings());
        for i in 0..5 {
            l.check(&s, "10.0.0.1", &format!("user{i}"), 0).unwrap();
        }
        assert!(l.check(&s, "10.0.0.1", "another", 0).is_err());
        assert!(l.check(&s, "10.0.0.2", "another", 0).is_ok());
        assert!(l.check(&s, "10.0.0.1", "another", 60_000).is_ok());
        for i in 0..5 {
            l.check(&s, &format!("2001:db8:1:2::{i:x}"), "u", 0)
                .unwrap();
        }
        assert!(l.check(&s, "2001:db8:1:2:ffff::9", "u", 0).is_err());
        assert!(l.check(&s, "2001:db8:1:3::1", "u", 0).is_ok());
    }

    #[test]
    fn new_settings_apply_to_the_next_attempt() {
        let l = LoginLimiter::new();
        let loose = settings();
        let tight = LimitSettings {
            login_attempts_per_ip: 2,
            ..settings()
        };
        l.check(&loose, "10.0.0.1", "a", 0).unwrap();
        l.check(&loose, "10.0.0.1", "b", 0).unwrap();
        // The same counters, judged by the settings in force now.
        assert!(l.check(&tight, "10.0.0.1", "c", 0).is_err());
    }

    #[test]
    fn a_flood_of_fresh_usernames_cannot_evict_a_lock() {
        let (l, s) = (LoginLimiter::new(), settings());
        for i in 0..4 {
            fail(&l, &s, "victim", &format!("10.0.0.{i}"), 0);
        }
        // 100,000 logins with fresh usernames from one IP, almost all refused per IP, and as
        // many failures recorded from as many IPs: the victim's lock holds.
        for i in 0..MAX_TRACKED {
            let _ = l.check(&s, "10.9.9.9", &format!("fresh{i}"), 1_000);
        }
        for i in 0..MAX_TRACKED {
            let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
            l.record_failure(&s, &format!("other{i}"), &ip, 1_000);
            l.record_token_failure(&s, &ip, 1_000);
        }
        assert!(matches!(
            l.check(&s, "10.0.1.1", "victim", 2_000),
            Ok(UserLock::Locked { .. })
        ));
        assert!(l.tracked().iter().all(|&n| n <= MAX_TRACKED));
    }

    #[test]
    fn a_success_clears_its_pairs_failures() {
        let (l, s) = (LoginLimiter::new(), settings());
        for _ in 0..2 {
            fail(&l, &s, "alice", "10.0.0.1", 0);
        }
        l.record_success("alice", "10.0.0.1");
        for _ in 0..2 {
            fail(&l, &s, "alice", "10.0.0.1", 0);
        }
        assert!(l.check(&s, "10.0.0.1", "alice", 0).is_ok());
    }
}
