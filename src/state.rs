//! The settings in force: one [`Snapshot`] of the config and the key ring, swapped whole on
//! reload and read once per request, so a reload mid-request cannot mix two configs.
//!
//! Which settings a reload applies and which wait for a restart is [`SETTINGS`], one table
//! that the reload, `config check` and `docs/configuration.md` follow. Consumers read reloadable
//! settings from the current snapshot on every use and never copy them at start; tests fail
//! when a field of the file format is missing from the table, when the reload keeps or reports
//! other than it says, or when the docs print another table.

use std::collections::BTreeMap;
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

/// When a changed setting takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    /// At the next reload: every consumer reads it from the snapshot in force.
    Reload,
    /// At the next start: something is built from it once (the listener, the store
    /// connection, the hashing pool, the log format, the DPoP replay memory). A reload keeps
    /// the running value and reports the change.
    Restart,
}

/// One setting of the file format (a whole section, or one field by its dotted path) and what
/// the code does with a change of it.
pub struct Setting {
    pub path: &'static str,
    pub applies: Applies,
    /// What is compared between two configs; a secret appears only as a digest.
    value: fn(&Config) -> String,
    /// Restart-only: puts the running value back into a reloaded config.
    keep: fn(&Config, &mut Config),
}

fn no_keep(_: &Config, _: &mut Config) {}

fn digest(text: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    crate::encoding::hex(&d.as_ref()[..16])
}

macro_rules! reloadable {
    ($path:literal, |$c:ident| $value:expr) => {
        Setting {
            path: $path,
            applies: Applies::Reload,
            value: |$c| format!("{:?}", $value),
            keep: no_keep,
        }
    };
}

macro_rules! restart_only {
    ($path:literal, |$c:ident| $value:expr, |$running:ident, $new:ident| $keep:expr) => {
        Setting {
            path: $path,
            applies: Applies::Restart,
            value: |$c| $value,
            keep: |$running, $new| $keep,
        }
    };
}

/// Every setting and when a change of it applies: the one list the reload follows (what it
/// keeps and what it reports), `config check` compares against a running server, and
/// `docs/configuration.md` prints. A test fails when a field of the file format is missing.
pub const SETTINGS: &[Setting] = &[
    restart_only!("issuer", |c| c.issuer.clone(), |r, n| n
        .issuer
        .clone_from(&r.issuer)),
    // It only decides whether an issuer passes: the new file's issuer is judged by the new
    // file's flag.
    reloadable!("allow_insecure_issuer", |c| c.allow_insecure_issuer),
    restart_only!("listen", |c| c.listen.to_string(), |r, n| n.listen =
        r.listen),
    restart_only!(
        "store",
        |c| format!(
            "{} {:?} {:?}",
            digest(&c.store.url),
            c.store.durability,
            c.store.redis.fingerprint()
        ),
        |r, n| n.store = r.store.clone()
    ),
    restart_only!("passwords", |c| format!("{:?}", c.passwords), |r, n| n
        .passwords =
        r.passwords.clone()),
    restart_only!(
        "metrics",
        |c| format!("{:?} {}", c.metrics_listen, c.metrics_on_main_listener),
        |r, n| {
            n.metrics_listen = r.metrics_listen;
            n.metrics_on_main_listener = r.metrics_on_main_listener;
        }
    ),
    restart_only!("shutdown", |c| format!("{:?}", c.shutdown), |r, n| n
        .shutdown =
        r.shutdown),
    restart_only!("log", |c| format!("{:?}", c.log_format), |r, n| n
        .log_format =
        r.log_format),
    reloadable!("dpop.proof_max_age", |c| c.dpop.proof_max_age),
    reloadable!("dpop.proof_leeway", |c| c.dpop.proof_leeway),
    reloadable!("dpop.nonce_lifetime", |c| c.dpop.nonce_lifetime),
    restart_only!(
        "dpop.nonce_secret_file",
        |c| format!("{:?}", c.dpop.nonce_secret_file),
        |r, n| n
            .dpop
            .nonce_secret_file
            .clone_from(&r.dpop.nonce_secret_file)
    ),
    restart_only!(
        "dpop.max_remembered_proofs",
        |c| c.dpop.max_remembered_proofs.to_string(),
        |r, n| n.dpop.max_remembered_proofs = r.dpop.max_remembered_proofs
    ),
    reloadable!("tokens", |c| c.tokens),
    reloadable!("jwks", |c| c.jwks),
    reloadable!("limits", |c| c.limits),
    reloadable!("keys", |c| c.keys),
    reloadable!("clients", |c| c.clients),
    reloadable!("users", |c| c.users),
    reloadable!("demo", |c| c.demo),
    reloadable!("sso", |c| c.sso),
    reloadable!("feed", |c| c.feed),
    reloadable!("trusted_proxies", |c| c.trusted_proxies),
    reloadable!("forwarded_header", |c| c.forwarded_header),
];

/// The settings a change applies to at `applies`, by path.
pub fn paths(applies: Applies) -> impl Iterator<Item = &'static str> {
    SETTINGS
        .iter()
        .filter(move |s| s.applies == applies)
        .map(|s| s.path)
}

/// The settings whose value differs between two configs.
pub fn changed<'a>(
    old: &'a Config,
    new: &'a Config,
) -> impl Iterator<Item = &'static Setting> + 'a {
    SETTINGS
        .iter()
        .filter(move |s| (s.value)(old) != (s.value)(new))
}

/// The values of the restart-only settings, as a server records them in the store at start so
/// that `config check` can tell which edits will wait for a restart. Secrets (the store URL, a
/// password) appear only as digests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RestartOnlyValues(BTreeMap<String, String>);

/// Where a running server records its [`RestartOnlyValues`] (see `Store::put_meta`).
pub const RUNNING_VALUES_META: &str = "running_restart_only";

impl RestartOnlyValues {
    pub fn of(config: &Config) -> Self {
        RestartOnlyValues(
            SETTINGS
                .iter()
                .filter(|s| s.applies == Applies::Restart)
                .map(|s| (s.path.to_owned(), (s.value)(config)))
                .collect(),
        )
    }

    /// The restart-only settings whose value differs (of those both records hold: a record
    /// from an older version names fewer).
    pub fn changes(&self, new: &RestartOnlyValues) -> Vec<String> {
        self.0
            .iter()
            .filter(|(path, value)| new.0.get(*path).is_some_and(|v| v != *value))
            .map(|(path, _)| path.clone())
            .collect()
    }
}

/// What a reload found: the restart-only settings it kept at their running values (with a
/// warning each) and the reloadable ones it applied, by path.
#[derive(Debug, Default)]
pub struct ReloadChanges {
    pub applied: Vec<&'static str>,
    pub kept: Vec<&'static str>,
}

impl ReloadChanges {
    pub fn warnings(&self) -> Vec<String> {
        self.kept
            .iter()
            .map(|path| format!("{path} changed: it takes effect after a restart"))
            .collect()
    }
}

/// Keeps the running value of every restart-only setting in `new`, and says what changed.
pub fn keep_restart_only_fields(running: &Config, new: &mut Config) -> ReloadChanges {
    let mut changes = ReloadChanges::default();
    for setting in changed(running, new).collect::<Vec<_>>() {
        match setting.applies {
            Applies::Reload => changes.applied.push(setting.path),
            Applies::Restart => changes.kept.push(setting.path),
        }
    }
    for setting in SETTINGS.iter().filter(|s| s.applies == Applies::Restart) {
        (setting.keep)(running, new);
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(path: &str) -> bool {
        let section = path.split('.').next().unwrap_or(path);
        SETTINGS.iter().any(|s| s.path == path || s.path == section)
    }

    #[test]
    fn every_config_field_is_in_the_reload_table_once() {
        let paths = Config::field_paths();
        assert!(paths.len() >= 25, "{paths:?}");
        let unclassified: Vec<&String> = paths.iter().filter(|p| !classified(p)).collect();
        assert!(
            unclassified.is_empty(),
            "add these to SETTINGS in src/state.rs: {unclassified:?}"
        );
        for (i, a) in SETTINGS.iter().enumerate() {
            for b in &SETTINGS[i + 1..] {
                let overlaps = a.path == b.path
                    || b.path.starts_with(&format!("{}.", a.path))
                    || a.path.starts_with(&format!("{}.", b.path));
                assert!(!overlaps, "{} and {} overlap", a.path, b.path);
            }
        }
    }

    /// With the first-party client made a cookie client, so that a demo may name it.
    const BASE: &str = "issuer = \"https://a\"\nlisten = \"127.0.0.1:1\"\n[[keys]]\nkid = \"k\"\nalg = \"ES256\"\npath = \"k.pem\"\nnot_before = \"2026-01-01T00:00:00Z\"\nnot_after = \"2027-01-01T00:00:00Z\"\n[[clients]]\nid = \"latchkey\"\ntype = \"public\"\ngrants = [\"refresh_token\"]\nrefresh_delivery = \"cookie\"\nallowed_origins = [\"https://x\"]\n";

    /// For every setting of the table, a config that changes it (and nothing else).
    fn edited(path: &str) -> String {
        let section = |name: &str, line: &str| format!("{BASE}[{name}]\n{line}\n");
        match path {
            "issuer" => BASE.replace("https://a", "https://b"),
            "allow_insecure_issuer" => format!("allow_insecure_issuer = true\n{BASE}"),
            "listen" => BASE.replace("127.0.0.1:1", "127.0.0.1:2"),
            "store" => section("store", "durability = \"process\""),
            "passwords" => section("passwords", "memory_kib = 64"),
            "metrics" => section("metrics", "on_main_listener = true"),
            "shutdown" => section("shutdown", "delay = \"3s\""),
            "log" => section("log", "format = \"json\""),
            "dpop.proof_max_age" => section("dpop", "proof_max_age = \"30s\""),
            "dpop.proof_leeway" => section("dpop", "proof_leeway = \"1s\""),
            "dpop.nonce_lifetime" => section("dpop", "nonce_lifetime = \"1m\""),
            "dpop.nonce_secret_file" => section("dpop", "nonce_secret_file = \"n.key\""),
            "dpop.max_remembered_proofs" => section("dpop", "max_remembered_proofs = 5"),
            "tokens" => section("tokens", "access_ttl = \"5m\""),
            "jwks" => section("jwks", "max_age = \"1m\""),
            "limits" => section("limits", "login_attempts_per_ip = 3"),
            "keys" => BASE.replace("kid = \"k\"", "kid = \"k2\""),
            "clients" => BASE.replace("\"https://x\"", "\"https://y\""),
            "users" => section("users", "allow_registration = true"),
            "sso" => section("sso", "code_ttl = \"30s\""),
            "feed" => section("feed", "push_endpoints = [\"https://rs.example/events\"]"),
            "demo" => format!("{BASE}[demo]\nenabled = true\nclient_id = \"latchkey\"\n"),
            "trusted_proxies" => format!("trusted_proxies = [\"10.0.0.1\"]\n{BASE}"),
            "forwarded_header" => format!("forwarded_header = \"forwarded\"\n{BASE}"),
            other => panic!("no edit for {other}: add one"),
        }
    }

    #[test]
    fn the_configuration_page_prints_the_table() {
        let page = include_str!("../docs/configuration.md");
        let table = page
            .split("<!-- reload-table -->")
            .nth(1)
            .and_then(|t| t.split("<!-- /reload-table -->").next())
            .unwrap_or_default();
        let rows: Vec<(String, String)> = table
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let setting = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let setting = setting.trim_start_matches('[').trim_end_matches(']');
                let when = cells.get(2)?.strip_prefix("at ")?;
                Some((setting.to_owned(), when.to_owned()))
            })
            .collect();
        let expected: Vec<(String, String)> = SETTINGS
            .iter()
            .map(|s| {
                let when = match s.applies {
                    Applies::Reload => "reload",
                    Applies::Restart => "restart",
                };
                (s.path.to_owned(), when.to_owned())
            })
            .collect();
        assert_eq!(rows, expected, "docs/configuration.md#reloading");
    }

    #[test]
    fn a_reload_keeps_and_reports_exactly_what_the_table_says() {
        let running = Config::parse(BASE, |_| None).unwrap();
        for setting in SETTINGS {
            let mut new = Config::parse(&edited(setting.path), |_| None)
                .unwrap_or_else(|e| panic!("{}: {e}", setting.path));
            let changes = keep_restart_only_fields(&running, &mut new);
            match setting.applies {
                Applies::Restart => {
                    assert_eq!(changes.kept, vec![setting.path], "{}", setting.path);
                    assert!(changes.applied.is_empty(), "{}", setting.path);
                    // The running value stays: nothing of this setting differs any more.
                    assert_eq!(changed(&running, &new).count(), 0, "{}", setting.path);
                    assert_eq!(
                        changes.warnings(),
                        vec![format!(
                            "{} changed: it takes effect after a restart",
                            setting.path
                        )]
                    );
                }
                Applies::Reload => {
                    assert_eq!(changes.applied, vec![setting.path], "{}", setting.path);
                    assert!(changes.kept.is_empty(), "{}", setting.path);
                    assert_eq!(changed(&running, &new).count(), 1, "{}", setting.path);
                }
            }
            // What a server records for `config check` names the same restart-only changes.
            let recorded = RestartOnlyValues::of(&running).changes(&RestartOnlyValues::of(
                &Config::parse(&edited(setting.path), |_| None).unwrap(),
            ));
            let expected: Vec<String> = match setting.applies {
                Applies::Restart => vec![setting.path.to_owned()],
                Applies::Reload => Vec::new(),
            };
            assert_eq!(recorded, expected, "{}", setting.path);
        }
    }
}
