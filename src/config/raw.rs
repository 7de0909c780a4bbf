//! The config file's shape, field by field, with its defaults and the environment overrides.
//! Unknown fields are collected (every one is reported, not only the first) and refused by the
//! parent module, which also validates into typed values.
//! `Serialize` is for the test that every field is classified as reloadable or restart-only
//! (`crate::state`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Deserialize, Serialize)]
pub(crate) struct RawConfig {
    /// The issuer URL (`iss`).
    pub(super) issuer: String,
    /// `HOST:PORT` to bind.
    pub(super) listen: String,
    #[serde(default)]
    pub(super) tokens: RawTokens,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) jwks: RawJwks,
    #[serde(default)]
    pub(super) passwords: RawPasswords,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) users: RawUsers,
    #[serde(default)]
    pub(super) demo: RawDemo,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) shutdown: RawShutdown,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) dpop: RawDpop,
    /// An `http://` issuer on a non-loopback host is refused unless this says it is meant.
    #[serde(default)]
    pub(super) allow_insecure_issuer: bool,
    /// Proxies (CIDRs) whose forwarding header names the client.
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
    /// The header those proxies set: `x-forwarded-for` (default) or `forwarded` (RFC 7239).
    #[serde(default = "default_forwarded_header")]
    pub(super) forwarded_header: String,
    #[serde(default)]
    pub(super) keys: Vec<RawKey>,
    #[serde(default)]
    pub(super) clients: Vec<super::clients::RawClient>,
}

fn default_forwarded_header() -> String {
    "x-forwarded-for".into()
}

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawTokens {
    pub(super) access_ttl: String,
    pub(super) refresh_ttl: String,
    pub(super) refresh_idle_ttl: String,
    pub(super) reuse_grace: String,
    pub(super) leeway: String,
    pub(super) audience: Vec<String>,
}

impl Default for RawTokens {
    fn default() -> Self {
        RawTokens {
            access_ttl: "15m".into(),
            refresh_ttl: "30d".into(),
            refresh_idle_ttl: "7d".into(),
            reuse_grace: "10s".into(),
            leeway: "60s".into(),
            audience: vec!["api".into()],
        }
    }
}

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

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawJwks {
    pub(super) max_age: String,
    pub(super) stale_if_error: String,
}

impl Default for RawJwks {
    fn default() -> Self {
        RawJwks {
            max_age: "5m".into(),
            stale_if_error: "1d".into(),
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawPasswords {
    pub(super) memory_kib: u32,
    pub(super) iterations: u32,
    pub(super) parallelism: u32,
    /// Absent: one less than the cores available, at least one.
    pub(super) max_concurrent: Option<usize>,
}

impl Default for RawPasswords {
    fn default() -> Self {
        RawPasswords {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            max_concurrent: None,
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawLimits {
    /// The counting window.
    pub(super) window: String,
    pub(super) login_attempts_per_ip: u32,
    pub(super) failed_logins_per_user_ip: u32,
    pub(super) failed_logins_per_user: u32,
    pub(super) max_lockout: String,
    /// Refused requests one client IP may make per window to the refresh and token endpoints.
    pub(super) failed_token_requests_per_ip: u32,
    /// All requests one client IP may make per window to them; 0: unlimited.
    pub(super) token_requests_per_ip: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            window: "1m".into(),
            login_attempts_per_ip: 60,
            failed_logins_per_user_ip: 5,
            failed_logins_per_user: 10,
            max_lockout: "1h".into(),
            failed_token_requests_per_ip: 60,
            token_requests_per_ip: 0,
        }
    }
}

#[derive(Deserialize, Serialize, Default)]
#[serde(default)]
pub(super) struct RawMetrics {
    /// `HOST:PORT` serving `/metrics` alone (an internal address).
    pub(super) listen: Option<String>,
    /// Serve `/metrics` on the main listener too: off by default, since the main listener is
    /// public and the counters describe the traffic of every user.
    pub(super) on_main_listener: bool,
}

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawDpop {
    /// How old a proof's `iat` may be.
    pub(super) proof_max_age: String,
    /// Clock skew tolerated on a proof's `iat`, either way.
    pub(super) proof_leeway: String,
    /// How long a server nonce stays acceptable.
    pub(super) nonce_lifetime: String,
    /// A file of at least 32 random bytes shared by every instance, from which nonces are
    /// derived; absent: each process draws its own (a client then needs a new nonce whenever
    /// its requests move to another instance).
    pub(super) nonce_secret_file: Option<PathBuf>,
    /// Embedded store: proofs remembered at most (about 60 bytes each); a client address holds
    /// at most a quarter of them.
    pub(super) max_remembered_proofs: usize,
}

impl Default for RawDpop {
    fn default() -> Self {
        RawDpop {
            proof_max_age: "60s".into(),
            proof_leeway: "5s".into(),
            nonce_lifetime: "5m".into(),
            nonce_secret_file: None,
            max_remembered_proofs: 200_000,
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawShutdown {
    /// After SIGTERM/SIGINT, how long `/readyz` answers 503 while still serving, so a load
    /// balancer stops sending new requests before the listener closes.
    pub(super) delay: String,
    /// Then how long in-flight requests may take before the process exits anyway.
    pub(super) drain_timeout: String,
}

impl Default for RawShutdown {
    fn default() -> Self {
        RawShutdown {
            delay: "0s".into(),
            drain_timeout: "10s".into(),
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawLog {
    /// `text` or `json`.
    pub(super) format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
        }
    }
}

#[derive(Deserialize, Serialize, Default)]
#[serde(default)]
pub(super) struct RawDemo {
    pub(super) enabled: bool,
    pub(super) client_id: String,
}

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawUsers {
    pub(super) allow_registration: bool,
    pub(super) min_password_length: u32,
}

impl Default for RawUsers {
    fn default() -> Self {
        RawUsers {
            allow_registration: false,
            min_password_length: 8,
        }
    }
}

#[derive(Deserialize, Serialize)]
pub(super) struct RawKey {
    pub(super) kid: String,
    pub(super) alg: String,
    pub(super) path: PathBuf,
    pub(super) not_before: String,
    pub(super) not_after: String,
    #[serde(default)]
    pub(super) revoked: bool,
    #[serde(default)]
    pub(super) generate_if_missing: bool,
    #[serde(default)]
    pub(super) passphrase_env: Option<String>,
}

/// Fields that environment variables override: `LATCHKEY_<SECTION>_<KEY>` (upper case), or
/// `LATCHKEY_<KEY>` for top-level fields.
const ENV_FIELDS: &[(Option<&str>, &str, EnvKind)] = &[
    (None, "issuer", EnvKind::Str),
    (None, "listen", EnvKind::Str),
    (Some("store"), "url", EnvKind::Str),
    (Some("store"), "durability", EnvKind::Str),
    (Some("store"), "password", EnvKind::Str),
    (Some("store"), "password_file", EnvKind::Str),
    (Some("store"), "tls_ca_file", EnvKind::Str),
    (Some("store"), "tls_cert_file", EnvKind::Str),
    (Some("store"), "tls_key_file", EnvKind::Str),
    (Some("tokens"), "access_ttl", EnvKind::Str),
    (Some("tokens"), "refresh_ttl", EnvKind::Str),
    (Some("tokens"), "refresh_idle_ttl", EnvKind::Str),
    (Some("tokens"), "reuse_grace", EnvKind::Str),
    (Some("tokens"), "leeway", EnvKind::Str),
    (Some("tokens"), "audience", EnvKind::List),
    (Some("jwks"), "max_age", EnvKind::Str),
    (Some("jwks"), "stale_if_error", EnvKind::Str),
    (Some("passwords"), "memory_kib", EnvKind::Int),
    (Some("passwords"), "iterations", EnvKind::Int),
    (Some("passwords"), "parallelism", EnvKind::Int),
    (Some("passwords"), "max_concurrent", EnvKind::Int),
    (Some("metrics"), "listen", EnvKind::Str),
    (Some("metrics"), "on_main_listener", EnvKind::Bool),
    (Some("shutdown"), "delay", EnvKind::Str),
    (Some("shutdown"), "drain_timeout", EnvKind::Str),
    (Some("log"), "format", EnvKind::Str),
    (Some("dpop"), "proof_max_age", EnvKind::Str),
    (Some("dpop"), "proof_leeway", EnvKind::Str),
    (Some("dpop"), "nonce_lifetime", EnvKind::Str),
    (Some("dpop"), "nonce_secret_file", EnvKind::Str),
    (Some("dpop"), "max_remembered_proofs", EnvKind::Int),
    (Some("limits"), "window", EnvKind::Str),
    (Some("limits"), "login_attempts_per_ip", EnvKind::Int),
    (Some("limits"), "failed_logins_per_user_ip", EnvKind::Int),
    (Some("limits"), "failed_logins_per_user", EnvKind::Int),
    (Some("limits"), "max_lockout", EnvKind::Str),
    (Some("limits"), "failed_token_requests_per_ip", EnvKind::Int),
    (Some("limits"), "token_requests_per_ip", EnvKind::Int),
    (Some("users"), "min_password_length", EnvKind::Int),
    (None, "trusted_proxies", EnvKind::List),
    (None, "forwarded_header", EnvKind::Str),
];

fn env_name(section: Option<&str>, key: &str) -> String {
    match section {
        Some(section) => format!("LATCHKEY_{section}_{key}").to_uppercase(),
        None => format!("LATCHKEY_{key}").to_uppercase(),
    }
}

#[derive(Clone, Copy)]
enum EnvKind {
    Str,
    Int,
    Bool,
    List,
}

/// Applies the overrides; returns which field each variable set (`tokens.access_ttl`,
/// `LATCHKEY_TOKENS_ACCESS_TTL`), so a problem with the value can name the variable.
pub(super) fn apply_env(
    table: &mut toml::Table,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    for (section, key, kind) in ENV_FIELDS {
        let var = env_name(*section, key);
        let Some(value) = env(&var) else { continue };
        let value = match kind {
            EnvKind::Str => toml::Value::String(value),
            EnvKind::Int => toml::Value::Integer(value.trim().parse().map_err(|_| {
                ConfigError::one(format!("{var}: expected a whole number, got {value:?}"))
            })?),
            EnvKind::Bool => toml::Value::Boolean(match value.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ConfigError::one(format!(
                        "{var}: expected true or false, got {value:?}"
                    )));
                }
            }),
            EnvKind::List => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
        };
        let target = match section {
            None => &mut *table,
            Some(section) => {
                let entry = table
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry.as_table_mut() {
                    Some(t) => t,
                    None => {
                        return Err(ConfigError::one(format!("{section}: must be a table")));
                    }
                }
            }
        };
        target.insert(key.to_string(), value);
        let field = match section {
            Some(section) => format!("{section}.{key}"),
            None => key.to_string(),
        };
        applied.push((field, var));
    }
    Ok(applied)
}
