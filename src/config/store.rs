//! `[store]`: where sessions and users live (the embedded SQLite file or Redis), and how to reach
//! Redis (a password kept out of the URL, TLS material).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawStore {
    pub(super) url: String,
    pub(super) durability: String,
    /// Redis: the password (ACL or requirepass), best from LATCHKEY_STORE_PASSWORD.
    pub(super) password: Option<String>,
    /// Redis: a file holding the password (a mounted secret), read at start.
    pub(super) password_file: Option<PathBuf>,
    /// rediss://: the CA certificate(s) to trust (PEM) instead of the system's.
    pub(super) tls_ca_file: Option<PathBuf>,
    /// rediss://: a client certificate and its key (PEM), for servers that require one.
    pub(super) tls_cert_file: Option<PathBuf>,
    pub(super) tls_key_file: Option<PathBuf>,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            url: "sqlite://data/latchkey.db".into(),
            durability: "fsync".into(),
            password: None,
            password_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Clone)]
pub struct StoreSettings {
    /// May carry a password (`redis://:secret@host`), so it never reaches `Debug`.
    pub url: String,
    /// The embedded store's commit durability (Redis keeps its own settings).
    pub durability: Durability,
    pub redis: RedisOptions,
    /// The environment variable the URL came from, when it did not come from the file.
    pub url_set_by: Option<String>,
}

impl StoreSettings {
    /// The URL as it may be shown (a password or user name in it hidden), and where it came
    /// from: for messages about a store that does not answer.
    pub fn described(&self) -> String {
        let url = match self.url.split_once("://") {
            Some((scheme, rest)) => {
                let authority_end = rest.find('/').unwrap_or(rest.len());
                match rest[..authority_end].rfind('@') {
                    Some(at) => format!("{scheme}://***{}", &rest[at..]),
                    None => self.url.clone(),
                }
            }
            None => self.url.clone(),
        };
        match &self.url_set_by {
            Some(var) => format!("{url} (set by {var})"),
            None => format!("{url} (store.url in the config file)"),
        }
    }
}

/// How to reach Redis beyond its URL: a password kept out of the URL, and TLS material.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisOptions {
    /// Replaces a password in the URL. Never logged.
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl RedisOptions {
    /// What tells two sets of options apart without showing the password.
    pub fn fingerprint(&self) -> String {
        let password = self.password.as_deref().map(|p| {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, p.as_bytes());
            crate::encoding::hex(&d.as_ref()[..16])
        });
        format!(
            "{password:?} {:?} {:?} {:?} {:?}",
            self.password_file, self.tls_ca_file, self.tls_cert_file, self.tls_key_file
        )
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("password_file", &self.password_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .finish()
    }
}

/// When an embedded-store commit counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Synced to disk before the answer (`synchronous = FULL`): survives power loss.
    Fsync,
    /// Written to the WAL before the answer, synced at checkpoints (`synchronous = NORMAL`):
    /// survives a killed or crashed process, may lose the last moments on power loss.
    Process,
}

impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.url.split("://").next().unwrap_or("");
        f.debug_struct("StoreSettings")
            .field("url", &format_args!("{scheme}://<hidden>"))
            .field("durability", &self.durability)
            .field("redis", &self.redis)
            .finish()
    }
}

pub(super) fn validate(raw: RawStore, problems: &mut Vec<String>) -> StoreSettings {
    let url = raw.url;
    let scheme = url.split("://").next().unwrap_or_default();
    if !url.contains("://")
        || !matches!(
            scheme,
            "sqlite" | "redis" | "rediss" | "redis+cluster" | "redis+sentinel"
        )
    {
        problems.push(
            "store.url: must start with sqlite://, redis://, rediss://, redis+cluster:// or \
             redis+sentinel://"
                .into(),
        );
    } else if scheme == "redis+sentinel"
        && url
            .trim_start_matches("redis+sentinel://")
            .split('/')
            .nth(1)
            .is_none_or(str::is_empty)
    {
        problems.push(
            "store.url: redis+sentinel://S1:P1,S2:P2/MASTER names the master after the hosts"
                .into(),
        );
    } else if scheme == "redis+cluster"
        && url
            .trim_start_matches("redis+cluster://")
            .trim_end_matches('/')
            .contains('/')
    {
        problems.push(
            "store.url: redis+cluster://H1:P1,H2:P2 takes no database (a cluster has one)".into(),
        );
    } else if scheme == "sqlite" && url.trim_start_matches("sqlite://").is_empty() {
        problems
            .push("store.url: sqlite:// needs a file path, e.g. sqlite://data/latchkey.db".into());
    }

    let redis = RedisOptions {
        password: raw.password,
        password_file: raw.password_file,
        tls_ca_file: raw.tls_ca_file,
        tls_cert_file: raw.tls_cert_file,
        tls_key_file: raw.tls_key_file,
    };
    if redis.password.is_some() && redis.password_file.is_some() {
        problems.push("store.password and store.password_file: set one, not both".into());
    }
    if redis.tls_cert_file.is_some() != redis.tls_key_file.is_some() {
        problems.push("store.tls_cert_file and store.tls_key_file go together".into());
    }
    if scheme != "rediss" && (redis.tls_ca_file.is_some() || redis.tls_cert_file.is_some()) {
        problems.push("store.tls_*: only for a rediss:// store.url".into());
    }
    let durability = match raw.durability.as_str() {
        "fsync" => Durability::Fsync,
        "process" => Durability::Process,
        other => {
            problems.push(format!(
                "store.durability: {other:?} must be fsync (survives power loss) or process \
                 (survives crashes)"
            ));
            Durability::Fsync
        }
    };
    StoreSettings {
        url,
        durability,
        redis,
        url_set_by: None,
    }
}
