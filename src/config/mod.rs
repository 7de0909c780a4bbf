//! The configuration: TOML read once, environment overrides applied, then validated into a typed
//! [`Config`] or refused with one line per problem, each naming the field.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use raw::{RawConfig, apply_env};

use crate::clock::UnixMs;

pub mod clients;
mod demo;
mod dpop;
mod feed;
mod jwks;
mod keys;
mod limits;
mod operations;
mod passwords;
mod raw;
mod server;
mod sso;
mod store;
mod tokens;
mod users;
mod values;

pub use clients::{ClientKind, ClientSpec, Consent, DEFAULT_CLIENT_ID, GrantType, RefreshDelivery};
pub use demo::DemoSettings;
pub use dpop::DpopSettings;
pub use feed::FeedSettings;
pub use jwks::JwksSettings;
pub use keys::{Alg, KeySpec, PinSource, Pkcs11Key};
pub use limits::LimitSettings;
pub use operations::{LogFormat, MetricsSettings, ShutdownSettings};
pub use passwords::{MAX_ARGON2_MEMORY_KIB, PasswordSettings, default_hashing_threads};
pub use server::ForwardedHeader;
pub use sso::SsoSettings;
pub use store::{Durability, RedisOptions, StoreSettings};
pub use tokens::TokenSettings;
pub use users::UserSettings;
pub use values::{
    ConfigError, format_timestamp, parse_duration, parse_timestamp, valid_identifier,
};

/// Where the config is read from when neither `-c` nor `LATCHKEY_CONFIG` names a file.
pub const DEFAULT_PATH: &str = "config/latchkey.toml";

/// A validated configuration. Every duration is positive and every cross-field rule holds.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `iss` claim and the base of every URL in discovery, without a trailing slash.
    pub issuer: String,
    /// The socket address the server binds.
    pub listen: SocketAddr,
    /// An `http://` issuer off loopback was allowed (it only decides whether `issuer` passes).
    pub allow_insecure_issuer: bool,
    pub tokens: TokenSettings,
    pub store: StoreSettings,
    pub jwks: JwksSettings,
    pub passwords: PasswordSettings,
    pub limits: LimitSettings,
    /// Signing keys in the order they appear in the file.
    pub keys: Vec<KeySpec>,
    /// The OAuth clients, the implicit first-party client included.
    pub clients: Vec<ClientSpec>,
    pub users: UserSettings,
    pub demo: DemoSettings,
    /// Where `/metrics` is served alone.
    pub metrics_listen: Option<SocketAddr>,
    /// `/metrics` is also on the main (public) listener: only when the operator asks.
    pub metrics_on_main_listener: bool,
    pub log_format: LogFormat,
    pub shutdown: ShutdownSettings,
    pub dpop: DpopSettings,
    /// The single sign-on session and authorization codes.
    pub sso: SsoSettings,
    /// The revocation feed's push targets.
    pub feed: FeedSettings,
    /// Peers whose forwarding header names the client; from any other peer it is ignored and
    /// the client is the peer itself.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The one forwarding header the trusted proxies set; the other kind is ignored.
    pub forwarded_header: ForwardedHeader,
}

impl Config {
    /// Reads `path`, applies the process environment, validates. Relative paths in it (key
    /// files, an `sqlite://` database) resolve against the config file's directory, so a
    /// command run from any working directory finds the same files.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(format!("{}: cannot read: {e}", path.display())))?;
        let mut config = Config::parse(&text, |name| std::env::var(name).ok())
            .map_err(|e| e.prefixed(&path.display().to_string()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        config.resolve_paths_against(base);
        Ok(config)
    }

    /// Makes every relative path of the config relative to `base` instead.
    pub fn resolve_paths_against(&mut self, base: &Path) {
        if base.as_os_str().is_empty() {
            return;
        }
        for key in &mut self.keys {
            if !key.path.as_os_str().is_empty() && key.path.is_relative() {
                key.path = base.join(&key.path);
            }
            if let Some(keys::Pkcs11Key {
                pin: keys::PinSource::File(file),
                ..
            }) = &mut key.pkcs11
                && file.is_relative()
            {
                *file = base.join(&*file);
            }
        }
        if let Some(db) = self.store.url.strip_prefix("sqlite://")
            && Path::new(db).is_relative()
        {
            self.store.url = format!("sqlite://{}", base.join(db).display());
        }
        let redis = &mut self.store.redis;
        for file in [
            &mut redis.password_file,
            &mut redis.tls_ca_file,
            &mut redis.tls_cert_file,
            &mut redis.tls_key_file,
            &mut self.dpop.nonce_secret_file,
        ]
        .into_iter()
        .flatten()
        {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
    }

    /// Parses TOML text with `env` as the source of overrides. Every problem is reported at
    /// once: each unknown field, each bad value (naming the environment variable that set it).
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        // A syntax error keeps its multi-line snippet (line, column, a caret under the spot).
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| ConfigError::one(e.to_string().trim_end().to_owned()))?;
        let from_env = apply_env(&mut table, env)?;
        let mut unknown = Vec::new();
        let fields = Config::field_paths();
        let raw: RawConfig = serde_ignored::deserialize(toml::Value::Table(table), |path| {
            let path = path.to_string();
            let hint = values::nearest(&path, fields.iter().map(String::as_str))
                .map(|f| format!(" (did you mean {f}?)"))
                .unwrap_or_default();
            unknown.push(format!("{path}: unknown field{hint}"));
        })
        .map_err(|e| ConfigError::one(one_line(&e.to_string())))?;
        let validated = validate(raw);
        let mut problems = unknown;
        match validated {
            Ok(mut config) if problems.is_empty() => {
                config.store.url_set_by = from_env
                    .iter()
                    .find(|(field, _)| field == "store.url")
                    .map(|(_, var)| var.clone());
                return Ok(config);
            }
            Ok(_) => {}
            Err(e) => problems.extend(e.problems),
        }
        for problem in &mut problems {
            if let Some((_, var)) = from_env
                .iter()
                .find(|(field, _)| problem.starts_with(&format!("{field}:")))
            {
                problem.push_str(&format!(" (set by {var})"));
            }
        }
        Err(ConfigError { problems })
    }

    /// Publication is bounded by this: a token signed at the end of a key's window is still
    /// valid for `access_ttl`, and verifiers tolerate `leeway` of skew.
    pub fn publish_tail(&self) -> Duration {
        self.tokens.access_ttl + self.tokens.leeway
    }

    /// How long a revocation matters to resource servers: until the last access token it
    /// concerns has expired (the longest lifetime any client's tokens have, plus the leeway
    /// verifiers give). The revocation log keeps each record this long.
    pub fn revocation_retention(&self) -> Duration {
        let longest = self
            .clients
            .iter()
            .filter_map(|c| c.access_ttl)
            .fold(self.tokens.access_ttl, Duration::max);
        longest + self.tokens.leeway
    }

    /// The client `id`, if registered (the first-party client is always).
    pub fn client(&self, id: &str) -> Option<&ClientSpec> {
        self.clients.iter().find(|c| c.id == id)
    }

    /// Findings that do not stop this config from serving (`config check` prints them, and
    /// `serve` logs them at start): risky clients, and `LATCHKEY_*` variables of the process
    /// environment that latchkey does not read.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = clients::warnings(&self.clients);
        let rs256_id_tokens = self
            .keys
            .iter()
            .any(|k| !k.revoked && k.signs_id_tokens && k.alg == Alg::RS256);
        if !rs256_id_tokens
            && self.clients.iter().any(|c| {
                c.may(GrantType::AuthorizationCode) && c.id_token_signed_response_alg.is_none()
            })
        {
            warnings.push(
                "keys: no RS256 key signs ID tokens, so they are signed with the access-token \
                 key; relying parties that accept only RS256 (the OpenID Connect default) refuse \
                 them. Add an RS256 key with signs = [\"id_tokens\"] (latchkey keys generate \
                 --alg RS256)"
                    .into(),
            );
        }
        let passphrases: Vec<&str> = self
            .keys
            .iter()
            .filter_map(|k| k.passphrase_env.as_deref())
            .collect();
        warnings.extend(raw::unknown_variables(
            std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()),
            &passphrases,
        ));
        warnings
    }

    /// How long `key` stays in the JWKS under this config (see [`KeySpec::published_until`]).
    pub fn published_until(&self, key: &KeySpec) -> UnixMs {
        key.published_until(self.publish_tail())
    }

    /// Every field path of the file format (`tokens.access_ttl`, `keys`, …): what an unknown
    /// field is compared with, and what the reload table must cover.
    pub(crate) fn field_paths() -> Vec<String> {
        let sample = "issuer = \"https://x\"\nlisten = \"127.0.0.1:0\"\n";
        let raw: RawConfig = toml::from_str(sample).unwrap_or_else(|e| unreachable!("{e}"));
        let value = serde_json::to_value(&raw).unwrap_or_default();
        let mut paths = Vec::new();
        if let serde_json::Value::Object(top) = value {
            for (name, value) in top {
                match value {
                    serde_json::Value::Object(section) => {
                        paths.extend(section.keys().map(|k| format!("{name}.{k}")));
                    }
                    _ => paths.push(name),
                }
            }
        }
        paths
    }
}

impl ConfigError {
    fn prefixed(self, source: &str) -> Self {
        ConfigError {
            problems: self
                .problems
                .into_iter()
                .map(|p| format!("{source}: {p}"))
                .collect(),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Each section validates itself (its file in this folder); problems are collected, not
/// stopped at.
fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let server = server::validate(&raw, &mut problems);
    let tokens = tokens::validate(raw.tokens, &mut problems);
    let jwks = jwks::validate(raw.jwks, &mut problems);
    let limits = limits::validate(raw.limits, &mut problems);
    let shutdown = operations::validate_shutdown(raw.shutdown, &mut problems);
    let dpop = dpop::validate(raw.dpop, &mut problems);
    let sso = sso::validate(raw.sso, &mut problems);
    let feed = feed::validate(raw.feed, &mut problems);
    let metrics = operations::validate_metrics(raw.metrics, &mut problems);
    let log_format = operations::validate_log(raw.log, &mut problems);
    let store = store::validate(raw.store, &mut problems);
    let passwords = passwords::validate(raw.passwords, &mut problems);
    let keys = keys::validate(raw.keys, &mut problems);
    let users = users::validate(raw.users, &mut problems);
    let mut clients = clients::validate(raw.clients, &mut problems);
    if !clients.iter().any(|c| c.id == DEFAULT_CLIENT_ID) {
        clients.push(ClientSpec::default_client());
    }
    let demo = demo::validate(raw.demo, &clients, &mut problems);
    for (i, client) in clients.iter().enumerate() {
        if let Some(alg) = client.id_token_signed_response_alg
            && !keys
                .iter()
                .any(|k| !k.revoked && k.signs_id_tokens && k.alg == alg)
        {
            problems.push(format!(
                "clients[{i}].id_token_signed_response_alg: no key signs ID tokens in {alg}"
            ));
        }
    }

    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    Ok(Config {
        issuer: server.issuer,
        listen: server.listen,
        allow_insecure_issuer: raw.allow_insecure_issuer,
        tokens,
        store,
        jwks,
        passwords,
        limits,
        keys,
        clients,
        users,
        demo,
        metrics_listen: metrics.listen,
        metrics_on_main_listener: metrics.on_main_listener,
        log_format,
        shutdown,
        dpop,
        sso,
        feed,
        trusted_proxies: server.trusted_proxies,
        forwarded_header: server.forwarded_header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
issuer = "http://127.0.0.1:8080/"
listen = "127.0.0.1:8080"
[[keys]]
kid = "k1"
alg = "ES256"
path = "keys/k1.pem"
not_before = "2026-01-01T00:00:00Z"
not_after = "2027-01-01T00:00:00Z"
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn an_issuer_in_clear_is_refused_unless_on_loopback_or_allowed() {
        let with = |issuer: &str, extra: &str| {
            Config::parse(
                &format!(
                    "{extra}issuer = \"{issuer}\"\nlisten = \"127.0.0.1:0\"\n[[keys]]\nkid = \"k\"\n\
                     alg = \"ES256\"\npath = \"k.pem\"\nnot_before = \"2026-01-01T00:00:00Z\"\n\
                     not_after = \"2027-01-01T00:00:00Z\"\n"
                ),
                |_| None,
            )
        };
        for dev in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
            "http://127.0.0.2",
        ] {
            assert!(with(dev, "").is_ok(), "{dev}");
        }
        for public in [
            "http://auth.example.com",
            "http://10.0.0.1:8080",
            "http://localhost.evil.com",
        ] {
            let problems = with(public, "").unwrap_err().problems;
            assert!(
                problems.iter().any(|p| p.contains("not https")),
                "{public}: {problems:?}"
            );
            assert!(
                with(public, "allow_insecure_issuer = true\n").is_ok(),
                "{public}"
            );
        }
        assert!(with("https://auth.example.com", "").is_ok());
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, no_env).unwrap();
        assert_eq!(c.issuer, "http://127.0.0.1:8080");
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(900));
        assert_eq!(c.tokens.refresh_ttl, Duration::from_secs(30 * 86400));
        assert_eq!(c.store.url, "sqlite://data/latchkey.db");
        assert_eq!(c.keys[0].alg, Alg::ES256);
        assert_eq!(c.passwords.memory_kib, 19456);
    }

    #[test]
    fn unknown_field_is_refused_by_name_with_the_nearest_known_one() {
        let text = format!("{MINIMAL}\n[tokens]\nacess_ttl = \"5m\"\n");
        let err = Config::parse(&text, no_env).unwrap_err().to_string();
        assert!(
            err.contains("tokens.acess_ttl: unknown field (did you mean tokens.access_ttl?)"),
            "{err}"
        );
        let far = format!("surprise = 1\n{MINIMAL}");
        let err = Config::parse(&far, no_env).unwrap_err().to_string();
        assert_eq!(err, "surprise: unknown field");
    }

    #[test]
    fn unknown_latchkey_variables_are_named_with_the_nearest_known_one() {
        let names = [
            "LATCHKEY_TOKENS_ACCES_TTL",
            "LATCHKEY_LOG",
            "LATCHKEY_STORE_URL",
            "LATCHKEY_KEY_PASS",
            "PATH",
            "LATCHKEY_WHATEVER_ELSE",
        ]
        .map(String::from);
        let warnings = raw::unknown_variables(names.into_iter(), &["LATCHKEY_KEY_PASS"]);
        assert_eq!(
            warnings,
            vec![
                "environment: LATCHKEY_TOKENS_ACCES_TTL is not a latchkey variable and is \
                 ignored (did you mean LATCHKEY_TOKENS_ACCESS_TTL?)",
                "environment: LATCHKEY_WHATEVER_ELSE is not a latchkey variable and is ignored",
            ]
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let text = MINIMAL
            .replace("ES256", "HS256")
            .replace("2027-01-01", "2025-01-01");
        let text = format!("{text}\n[tokens]\naccess_ttl = \"15x\"\n");
        let err = Config::parse(&text, no_env).unwrap_err();
        let all = err.to_string();
        assert!(all.contains("keys[0].alg"), "{all}");
        assert!(all.contains("keys[0].not_after"), "{all}");
        assert!(all.contains("tokens.access_ttl"), "{all}");
        assert_eq!(err.problems.len(), 3, "{all}");
    }

    #[test]
    fn argon2_costs_are_bounded_by_field() {
        let text = format!(
            "{MINIMAL}\n[passwords]\nmemory_kib = 4294967295\niterations = 0\nparallelism = 1\n"
        );
        let err = Config::parse(&text, no_env).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.problems[0].starts_with("passwords.memory_kib: 4294967295 is outside"));
        assert!(err.problems[1].starts_with("passwords.iterations: 0 is outside"));
        let just_over = format!("{MINIMAL}\n[passwords]\nmemory_kib = 1048577\n");
        assert!(Config::parse(&just_over, no_env).is_err());
    }

    #[test]
    fn clients_are_validated_field_by_field_and_the_password_grant_warns() {
        let text = format!(
            r#"{MINIMAL}
[[clients]]
id = "svc"
type = "confidential"
grants = ["client_credentials", "implicit"]

[[clients]]
id = "spa"
type = "public"
grants = ["client_credentials"]

[[clients]]
id = "spa"
type = "public"
"#
        );
        let err = Config::parse(&text, no_env).unwrap_err();
        let all = err.to_string();
        assert!(
            all.contains("clients[0].grants: unknown grant \"implicit\""),
            "{all}"
        );
        assert!(
            all.contains("clients[0].secret_hash: a confidential client needs one"),
            "{all}"
        );
        assert!(
            all.contains("clients[1].grants: a public client cannot use client_credentials"),
            "{all}"
        );
        assert!(
            all.contains("clients[2].id: \"spa\" appears twice"),
            "{all}"
        );
        assert_eq!(err.problems.len(), 4, "{all}");

        let ok = format!(
            "{MINIMAL}\n[[clients]]\nid = \"legacy\"\ntype = \"public\"\ngrants = [\"password\", \"refresh_token\"]\n"
        );
        let config = Config::parse(&ok, no_env).unwrap();
        let about_clients: Vec<String> = config
            .warnings()
            .into_iter()
            .filter(|w| w.starts_with("clients"))
            .collect();
        assert_eq!(about_clients.len(), 1);
        assert!(about_clients[0].contains("password grant"));
        // The first-party client is always there.
        assert!(config.client(DEFAULT_CLIENT_ID).is_some());
        assert!(config.client("legacy").is_some());
    }

    #[test]
    fn redirect_clients_are_checked_and_matched_exactly() {
        let text = format!(
            r#"{MINIMAL}
[[clients]]
id = "nouris"
type = "public"
grants = ["authorization_code"]

[[clients]]
id = "bad"
type = "public"
grants = ["authorization_code"]
redirect_uris = ["https://a.example/cb#x", "https://*.example/cb", "http://a.example/cb", "cb", "ftp://x/y", "https://user@a.example/cb"]
require_pkce = false
consent = "sometimes"
loopback_any_port = false

[[clients]]
id = "cookie"
type = "public"
grants = ["authorization_code", "refresh_token"]
redirect_uris = ["https://a.example/cb"]
refresh_delivery = "cookie"
allowed_origins = ["https://a.example"]

[[clients]]
id = "server"
type = "confidential"
secret_hash = "$argon2id$x"
grants = ["authorization_code"]
redirect_uris = ["https://a.example/cb"]
loopback_any_port = true
"#
        );
        let all = Config::parse(&text, no_env).unwrap_err().to_string();
        for expected in [
            "clients[0].redirect_uris: the authorization_code grant needs",
            "\"https://a.example/cb#x\": a redirect URI has no fragment",
            "\"https://*.example/cb\": no wildcards",
            "\"http://a.example/cb\": http only on loopback",
            "\"cb\": must be an absolute URI",
            "\"ftp://x/y\": use https",
            "\"https://user@a.example/cb\": needs a host, without user information",
            "clients[1].require_pkce: a public client must use PKCE",
            "clients[1].consent: \"sometimes\" must be skip, once or always",
            "clients[2].grants: authorization_code delivers tokens in the token response",
            "clients[3].loopback_any_port: for native (public) clients only",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in {all}");
        }

        let ok = format!(
            r#"{MINIMAL}
[[clients]]
id = "native"
type = "public"
grants = ["authorization_code"]
redirect_uris = ["http://127.0.0.1/cb", "com.example.app:/callback", "http://[::1]:8000/cb"]
loopback_any_port = true

[[clients]]
id = "server"
type = "confidential"
secret_hash = "$argon2id$x"
grants = ["authorization_code"]
redirect_uris = ["https://a.example/cb?x=1"]
require_pkce = false
consent = "once"
name = "Server"
"#
        );
        let config = Config::parse(&ok, no_env).unwrap();
        let native = config.client("native").unwrap();
        assert!(native.redirect_uri_registered("http://127.0.0.1:49152/cb"));
        assert!(native.redirect_uri_registered("http://127.0.0.1/cb"));
        assert!(native.redirect_uri_registered("http://[::1]:1/cb"));
        assert!(native.redirect_uri_registered("com.example.app:/callback"));
        assert!(!native.redirect_uri_registered("http://127.0.0.1:49152/cb/"));
        assert!(!native.redirect_uri_registered("http://127.0.0.2:49152/cb"));
        assert!(!native.redirect_uri_registered("https://127.0.0.1:49152/cb"));
        assert!(!native.redirect_uri_registered("http://127.0.0.1:49152@evil/cb"));
        let server = config.client("server").unwrap();
        assert!(server.redirect_uri_registered("https://a.example/cb?x=1"));
        assert!(!server.redirect_uri_registered("https://a.example/cb?x=1&y=2"));
        assert!(!server.redirect_uri_registered("https://a.example/cb"));
        assert_eq!(server.display_name(), "Server");
        assert!(
            config
                .warnings()
                .iter()
                .any(|w| w.contains("clients server: require_pkce = false")),
            "{:?}",
            config.warnings()
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_the_variable_that_set_it() {
        let text = format!(
            "{MINIMAL}\nsurprise = 1\n[tokens]\nacess_ttl = \"5m\"\n[store]\nurl = \"sqlite://x.db\"\nkind = \"fast\"\n"
        );
        let env =
            |name: &str| (name == "LATCHKEY_TOKENS_REFRESH_TTL").then(|| "30 parsecs".to_string());
        let err = Config::parse(&text, env).unwrap_err();
        let all = err.to_string();
        for expected in [
            "surprise: unknown field",
            "tokens.acess_ttl: unknown field",
            "store.kind: unknown field",
            "(set by LATCHKEY_TOKENS_REFRESH_TTL)",
        ] {
            assert!(all.contains(expected), "{expected} in {all}");
        }
        // A syntax error keeps its snippet over several lines.
        let broken = Config::parse("issuer = \"x\"\nlisten = [\n", no_env).unwrap_err();
        assert!(broken.to_string().lines().count() > 1, "{broken}");
    }

    #[test]
    fn env_overrides_win() {
        let env = |name: &str| match name {
            "LATCHKEY_LISTEN" => Some("127.0.0.1:9999".to_string()),
            "LATCHKEY_STORE_URL" => Some("redis://127.0.0.1:7000/0".to_string()),
            "LATCHKEY_TOKENS_AUDIENCE" => Some("a, b".to_string()),
            "LATCHKEY_PASSWORDS_MEMORY_KIB" => Some("64".to_string()),
            "LATCHKEY_LIMITS_LOGIN_ATTEMPTS_PER_IP" => Some("1000".to_string()),
            "LATCHKEY_TOKENS_ACCESS_TTL" => Some("5m".to_string()),
            "LATCHKEY_TOKENS_ACCESS_TTL_JITTER" => Some("0.05".to_string()),
            _ => None,
        };
        let c = Config::parse(MINIMAL, env).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.store.url, "redis://127.0.0.1:7000/0");
        assert_eq!(c.tokens.audience, vec!["a", "b"]);
        assert_eq!(c.passwords.memory_kib, 64);
        assert_eq!(c.limits.login_attempts_per_ip, 1000);
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(300));
        assert!((c.tokens.access_ttl_jitter - 0.05).abs() < f64::EPSILON);

        for bad in ["0.6", "-0.1"] {
            let text = format!("{MINIMAL}\n[tokens]\naccess_ttl_jitter = {bad}\n");
            let all = Config::parse(&text, no_env)
                .unwrap_err()
                .problems
                .join("; ");
            assert!(
                all.contains("tokens.access_ttl_jitter: a fraction from 0 to 0.5"),
                "{all}"
            );
        }
    }

    #[test]
    fn a_store_is_described_without_its_password_and_with_its_origin() {
        let env = |name: &str| {
            (name == "LATCHKEY_STORE_URL")
                .then(|| "redis://user:hunter2@127.0.0.1:6390/0".to_string())
        };
        let c = Config::parse(MINIMAL, env).unwrap();
        assert_eq!(
            c.store.described(),
            "redis://***@127.0.0.1:6390/0 (set by LATCHKEY_STORE_URL)"
        );
        let c = Config::parse(MINIMAL, |_| None).unwrap();
        assert!(
            c.store
                .described()
                .ends_with("(store.url in the config file)"),
            "{}",
            c.store.described()
        );
    }

    #[test]
    fn store_url_stays_out_of_debug() {
        let env = |name: &str| {
            (name == "LATCHKEY_STORE_URL").then(|| "redis://:hunter2@127.0.0.1/0".to_string())
        };
        let c = Config::parse(MINIMAL, env).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn durations_and_timestamps() {
        assert_eq!(
            parse_duration("f", "900s").unwrap(),
            Duration::from_secs(900)
        );
        assert_eq!(
            parse_duration("f", "30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert!(parse_duration("f", "soon").is_err());
        let t = parse_timestamp("f", "2026-11-01T00:00:00Z").unwrap();
        assert_eq!(t, 1_793_491_200_000);
        assert_eq!(format_timestamp(t), "2026-11-01T00:00:00Z");
    }
}
