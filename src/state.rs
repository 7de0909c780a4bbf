//! The settings in force: one [`Snapshot`] of the config and the key ring, swapped whole on
//! reload and read once per request, so a reload mid-request cannot mix two configs.
//!
//! Which config fields a reload applies and which wait for a restart is listed here, in one
//! place. Consumers read reloadable settings from the current snapshot on every use and never
//! copy them at start; a test fails when a field is added to the file format without being
//! classified.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::keys::KeyRing;

/// The config and the keys it names, always swapped together.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub keys: KeyRing,
    /// The RFC 8414 metadata document, serialised once on first use: it depends on the config
    /// alone, and discovery is among the busiest endpoints.
    pub discovery: OnceLock<actix_web::web::Bytes>,
}

impl Snapshot {
    pub fn new(config: Config, keys: KeyRing) -> Self {
        Snapshot {
            config: Arc::new(config),
            keys,
            discovery: OnceLock::new(),
        }
    }
}

/// The current snapshot, replaced whole by a reload.
#[derive(Debug)]
pub struct LiveState(RwLock<Arc<Snapshot>>);

impl LiveState {
    pub fn new(config: Config, keys: KeyRing) -> Self {
        LiveState(RwLock::new(Arc::new(Snapshot::new(config, keys))))
    }

    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn replace(&self, snapshot: Snapshot) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
    }
}

/// Applied by a reload (a whole section, or one field by its dotted path).
pub const RELOADABLE: &[&str] = &[
    "tokens",
    "jwks",
    "limits",
    "keys",
    "clients",
    "users",
    "demo",
    "trusted_proxies",
    "forwarded_header",
];

/// Read once at start: the listener, the store connection and the hashing pool are built from
/// them, and `issuer` names every token already out there. A changed value is reported and the
/// running one stays until a restart.
pub const RESTART_ONLY: &[&str] = &[
    "issuer",
    "allow_insecure_issuer",
    "listen",
    "store",
    "passwords",
    "metrics",
    "shutdown",
    "log",
    "dpop",
];

/// The values of the restart-only fields, as a server records them in the store at start so that
/// `config check` can tell which edits will wait for a restart. The store URL may carry a
/// password, so only its digest is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartOnlyValues {
    issuer: String,
    listen: String,
    store_url_digest: String,
    passwords: String,
}

/// Where a running server records its [`RestartOnlyValues`] (see `Store::put_meta`).
pub const RUNNING_VALUES_META: &str = "running_restart_only";

impl RestartOnlyValues {
    pub fn of(config: &Config) -> Self {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, config.store.url.as_bytes());
        let p = &config.passwords;
        RestartOnlyValues {
            issuer: config.issuer.clone(),
            listen: config.listen.to_string(),
            store_url_digest: format!(
                "{} {:?}",
                crate::encoding::hex(&digest.as_ref()[..16]),
                config.store.durability
            ),
            passwords: format!(
                "m={} t={} p={} max_concurrent={}",
                p.memory_kib, p.iterations, p.parallelism, p.max_concurrent
            ),
        }
    }

    /// The restart-only fields whose value differs.
    pub fn changes(&self, new: &RestartOnlyValues) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.issuer != new.issuer {
            changed.push("issuer");
        }
        if self.listen != new.listen {
            changed.push("listen");
        }
        if self.store_url_digest != new.store_url_digest {
            changed.push("store");
        }
        if self.passwords != new.passwords {
            changed.push("passwords");
        }
        changed
    }
}

/// Keeps the running values of every restart-only field in `new`, and says which ones the new
/// file changed.
pub fn keep_restart_only_fields(running: &Config, new: &mut Config) -> Vec<String> {
    let warnings = RestartOnlyValues::of(running)
        .changes(&RestartOnlyValues::of(new))
        .into_iter()
        .map(|field| format!("{field} changed: it takes effect after a restart"))
        .collect();
    new.issuer.clone_from(&running.issuer);
    new.listen = running.listen;
    new.store = running.store.clone();
    new.passwords = running.passwords.clone();
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(path: &str) -> bool {
        let section = path.split('.').next().unwrap_or(path);
        [RELOADABLE, RESTART_ONLY]
            .iter()
            .any(|list| list.contains(&path) || list.contains(&section))
    }

    #[test]
    fn every_config_field_is_reloadable_or_restart_only() {
        let paths = Config::field_paths();
        assert!(paths.len() >= 25, "{paths:?}");
        let unclassified: Vec<&String> = paths.iter().filter(|p| !classified(p)).collect();
        assert!(
            unclassified.is_empty(),
            "add these to RELOADABLE or RESTART_ONLY in src/state.rs: {unclassified:?}"
        );
        for entry in RELOADABLE {
            assert!(!RESTART_ONLY.contains(entry), "{entry} is in both lists");
        }
    }

    #[test]
    fn restart_only_fields_keep_their_running_values() {
        let base = "issuer = \"https://a\"\nlisten = \"127.0.0.1:1\"\n[[keys]]\nkid = \"k\"\nalg = \"ES256\"\npath = \"k.pem\"\nnot_before = \"2026-01-01T00:00:00Z\"\nnot_after = \"2027-01-01T00:00:00Z\"\n";
        let running = Config::parse(base, |_| None).unwrap();
        let edited = base
            .replace("https://a", "https://b")
            .replace("127.0.0.1:1", "127.0.0.1:2")
            + "[passwords]\nmemory_kib = 64\n[limits]\nlogin_attempts_per_ip = 3\n";
        let mut new = Config::parse(&edited, |_| None).unwrap();

        let warnings = keep_restart_only_fields(&running, &mut new);

        assert_eq!(
            warnings,
            vec![
                "issuer changed: it takes effect after a restart",
                "listen changed: it takes effect after a restart",
                "passwords changed: it takes effect after a restart",
            ]
        );
        assert_eq!(new.issuer, "https://a");
        assert_eq!(new.listen, running.listen);
        assert_eq!(new.passwords, running.passwords);
        // Reloadable fields take the new value.
        assert_eq!(new.limits.login_attempts_per_ip, 3);
    }
}
