//! The config file's top level (each section's fields, defaults and validation are in that
//! section's file beside this one), and the environment overrides of every section.
//! Unknown fields are collected (every one is reported, not only the first) and refused by the
//! parent module, which also validates into typed values.
//! `Serialize` is for the test that every field is classified as reloadable or restart-only
//! (`crate::state`).

use serde::{Deserialize, Serialize};

use super::values::ConfigError;

#[derive(Deserialize, Serialize)]
pub(crate) struct RawConfig {
    /// The issuer URL (`iss`).
    pub(super) issuer: String,
    /// `HOST:PORT` to bind.
    pub(super) listen: String,
    #[serde(default)]
    pub(super) tokens: super::tokens::RawTokens,
    #[serde(default)]
    pub(super) store: super::store::RawStore,
    #[serde(default)]
    pub(super) jwks: super::jwks::RawJwks,
    #[serde(default)]
    pub(super) passwords: super::passwords::RawPasswords,
    #[serde(default)]
    pub(super) limits: super::limits::RawLimits,
    #[serde(default)]
    pub(super) users: super::users::RawUsers,
    #[serde(default)]
    pub(super) demo: super::demo::RawDemo,
    #[serde(default)]
    pub(super) metrics: super::operations::RawMetrics,
    #[serde(default)]
    pub(super) shutdown: super::operations::RawShutdown,
    #[serde(default)]
    pub(super) log: super::operations::RawLog,
    #[serde(default)]
    pub(super) dpop: super::dpop::RawDpop,
    #[serde(default)]
    pub(super) sso: super::sso::RawSso,
    #[serde(default)]
    pub(super) feed: super::feed::RawFeed,
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
    pub(super) keys: Vec<super::keys::RawKey>,
    #[serde(default)]
    pub(super) clients: Vec<super::clients::RawClient>,
}

fn default_forwarded_header() -> String {
    "x-forwarded-for".into()
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
    (Some("tokens"), "access_ttl_jitter", EnvKind::Float),
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
    (Some("feed"), "push_endpoints", EnvKind::List),
    (Some("sso"), "session_idle", EnvKind::Str),
    (Some("sso"), "session_max", EnvKind::Str),
    (Some("sso"), "code_ttl", EnvKind::Str),
    (Some("sso"), "id_token_ttl", EnvKind::Str),
    (Some("limits"), "window", EnvKind::Str),
    (Some("limits"), "login_attempts_per_ip", EnvKind::Int),
    (Some("limits"), "failed_logins_per_user_ip", EnvKind::Int),
    (Some("limits"), "failed_logins_per_user", EnvKind::Int),
    (Some("limits"), "max_lockout", EnvKind::Str),
    (Some("limits"), "failed_token_requests_per_ip", EnvKind::Int),
    (Some("limits"), "token_requests_per_ip", EnvKind::Int),
    (Some("limits"), "sign_in_pages_per_ip", EnvKind::Int),
    (Some("users"), "min_password_length", EnvKind::Int),
    (None, "trusted_proxies", EnvKind::List),
    (None, "forwarded_header", EnvKind::Str),
];

/// `LATCHKEY_*` variables read elsewhere than [`ENV_FIELDS`].
const OTHER_VARIABLES: &[&str] = &["LATCHKEY_CONFIG", "LATCHKEY_LOG"];

/// Of the variables `names`, the `LATCHKEY_*` ones latchkey does not read (a typo such as
/// `LATCHKEY_TOKENS_ACCES_TTL` would otherwise be ignored in silence), with the nearest it does.
/// `also_read` are variables the config itself names (a key's `passphrase_env`).
pub(super) fn unknown_variables(
    names: impl Iterator<Item = String>,
    also_read: &[&str],
) -> Vec<String> {
    let known: Vec<String> = ENV_FIELDS
        .iter()
        .map(|(section, key, _)| env_name(*section, key))
        .chain(OTHER_VARIABLES.iter().map(|v| v.to_string()))
        .collect();
    let mut unknown: Vec<String> = names
        .filter(|n| n.starts_with("LATCHKEY_"))
        .filter(|n| !known.contains(n) && !also_read.contains(&n.as_str()))
        .map(|n| {
            let hint = super::values::nearest(&n, known.iter().map(String::as_str))
                .map(|k| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            format!("environment: {n} is not a latchkey variable and is ignored{hint}")
        })
        .collect();
    unknown.sort();
    unknown
}

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
    Float,
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
            EnvKind::Float => toml::Value::Float(
                value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| {
                        ConfigError::one(format!("{var}: expected a number, got {value:?}"))
                    })?,
            ),
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
