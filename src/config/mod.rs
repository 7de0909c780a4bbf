//! The configuration: TOML read once, environment overrides applied, then validated into a typed
//! [`Config`] or refused with one line per problem, each naming the field.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raw::{RawConfig, RawPasswords, apply_env};

use crate::clock::UnixMs;

pub mod clients;
mod raw;

pub use clients::{ClientKind, ClientSpec, DEFAULT_CLIENT_ID, GrantType, RefreshDelivery};

/// The largest argon2 memory cost accepted (1 GiB), in the config and in stored hashes.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;

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
    /// Peers whose forwarding header names the client; from any other peer it is ignored and
    /// the client is the peer itself.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The one forwarding header the trusted proxies set; the other kind is ignored.
    pub forwarded_header: ForwardedHeader,
}

/// Which header a trusted proxy reports the client's address in. Only one is read: a proxy
/// that appends to one passes the other through as the client wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx, HAProxy, cloud load balancers).
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// SIGTERM/SIGINT: not ready at once, serving for `delay`, then the listener closes and
/// in-flight requests get up to `drain_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownSettings {
    pub delay: Duration,
    pub drain_timeout: Duration,
}

/// DPoP proofs at the token endpoints (RFC 9449): how fresh they must be, and server nonces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpopSettings {
    pub proof_max_age: Duration,
    pub proof_leeway: Duration,
    pub nonce_lifetime: Duration,
    pub nonce_secret_file: Option<PathBuf>,
    /// The embedded store's replay memory: proofs remembered at most.
    pub max_remembered_proofs: usize,
}

impl DpopSettings {
    pub fn freshness(&self) -> latchkey_verify::dpop::Freshness {
        latchkey_verify::dpop::Freshness {
            max_age: self.proof_max_age,
            leeway: self.proof_leeway,
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The demo SPA at `/demo/` (off by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoSettings {
    pub enabled: bool,
    /// The cookie client the demo logs in as.
    pub client_id: String,
}

/// Accounts: self-registration and the password policy (NIST SP 800-63B: a minimum length, a
/// maximum of 1,024 bytes, no composition rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSettings {
    /// `POST /auth/register` is served.
    pub allow_registration: bool,
    /// In characters (Unicode scalar values).
    pub min_password_length: u32,
}

#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub access_ttl: Duration,
    /// Absolute lifetime of a login session (a refresh family).
    pub refresh_ttl: Duration,
    /// A refresh token unused this long is dead.
    pub refresh_idle_ttl: Duration,
    /// How long a consumed refresh token still yields its successor (racing tabs).
    pub reuse_grace: Duration,
    /// Clock skew tolerated when checking `exp`/`nbf`, and added to each key's publication.
    pub leeway: Duration,
    pub audience: Vec<String>,
}

#[derive(Clone)]
pub struct StoreSettings {
    /// May carry a password (`redis://:secret@host`), so it never reaches `Debug`.
    pub url: String,
    /// The embedded store's commit durability (Redis keeps its own settings).
    pub durability: Durability,
    pub redis: RedisOptions,
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

#[derive(Clone, Debug)]
pub struct JwksSettings {
    /// `Cache-Control: max-age` of the JWKS document.
    pub max_age: Duration,
    /// `Cache-Control: stale-if-error`: how long resource servers may keep using a cached JWKS
    /// while the issuer is unreachable.
    pub stale_if_error: Duration,
}

/// argon2id cost. The defaults are OWASP's (19 MiB, 2 passes, 1 lane); tests lower them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; the rest queue, so a login flood cannot exhaust memory.
    pub max_concurrent: usize,
}

impl Default for PasswordSettings {
    fn default() -> Self {
        let raw = RawPasswords::default();
        PasswordSettings {
            memory_kib: raw.memory_kib,
            iterations: raw.iterations,
            parallelism: raw.parallelism,
            max_concurrent: default_hashing_threads(),
        }
    }
}

/// One hashing thread per core but one: a login storm keeps a core free for refreshes and the
/// rest of the API, and resident memory stays at `memory_kib` per thread.
pub fn default_hashing_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

/// Login throttling, per instance (see [`crate::limits`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSettings {
    pub window: Duration,
    /// Login attempts one client IP may make per window.
    pub login_attempts_per_ip: u32,
    /// Failed logins one (username, client IP) pair may make per window.
    pub failed_logins_per_user_ip: u32,
    /// Failures after which a username is locked, with exponential back-off, except for IPs it
    /// has a live session from.
    pub failed_logins_per_user: u32,
    /// The longest lock the back-off reaches.
    pub max_lockout: Duration,
    /// Refused requests (bad tokens, bad client credentials) one client IP may make per window
    /// to `/auth/refresh` and `/oauth/token` before it is refused outright.
    pub failed_token_requests_per_ip: u32,
    /// All requests one client IP may make per window to those endpoints; 0: no such limit
    /// (clients behind one NAT address share it).
    pub token_requests_per_ip: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    ES256,
    RS256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
        }
    }

    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::ES256),
            "RS256" => Some(Alg::RS256),
            _ => None,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct KeySpec {
    pub kid: String,
    pub alg: Alg,
    pub path: PathBuf,
    /// Starts signing at (inclusive).
    pub not_before: UnixMs,
    /// Stops signing at (exclusive).
    pub not_after: UnixMs,
    /// Emergency switch: unpublished at once, its tokens stop verifying.
    pub revoked: bool,
    /// Dev convenience: a missing file is generated at start, with a loud warning.
    pub generate_if_missing: bool,
    /// The environment variable holding the passphrase of an encrypted key file.
    pub passphrase_env: Option<String>,
}

impl KeySpec {
    /// The one rule for how long a key stays in the JWKS: `not_after + publish_tail`, where the
    /// tail is `access_ttl + leeway` ([`Config::publish_tail`]): a token signed at the last
    /// instant of the key's window stays verifiable until it expires.
    pub fn published_until(&self, publish_tail: Duration) -> UnixMs {
        self.not_after
            .saturating_add(crate::clock::duration_ms(publish_tail))
    }
}

/// Why a config was refused: one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    pub fn one(problem: String) -> Self {
        ConfigError {
            problems: vec![problem],
        }
    }
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
            if key.path.is_relative() {
                key.path = base.join(&key.path);
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
        let raw: RawConfig = serde_ignored::deserialize(toml::Value::Table(table), |path| {
            unknown.push(format!("{path}: unknown field"));
        })
        .map_err(|e| ConfigError::one(one_line(&e.to_string())))?;
        let validated = validate(raw);
        let mut problems = unknown;
        match validated {
            Ok(config) if problems.is_empty() => return Ok(config),
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

    /// The client `id`, if registered (the first-party client is always).
    pub fn client(&self, id: &str) -> Option<&ClientSpec> {
        self.clients.iter().find(|c| c.id == id)
    }

    /// Findings that do not stop this config from serving (`config check` prints them).
    pub fn warnings(&self) -> Vec<String> {
        clients::warnings(&self.clients)
    }

    /// How long `key` stays in the JWKS under this config (see [`KeySpec::published_until`]).
    pub fn published_until(&self, key: &KeySpec) -> UnixMs {
        key.published_until(self.publish_tail())
    }

    /// Every field path of the file format (`tokens.access_ttl`, `keys`, …), for the test that
    /// each one is classified as reloadable or restart-only.
    #[cfg(test)]
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

/// Parses `"900s"`, `"15m"`, `"30d"`, `"1h 30m"`.
pub fn parse_duration(field: &str, value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        format!("{field}: invalid duration {value:?} ({e}); use e.g. \"900s\", \"15m\", \"30d\"")
    })
}

/// Parses an RFC 3339 UTC timestamp such as `"2026-11-01T00:00:00Z"`.
pub fn parse_timestamp(field: &str, value: &str) -> Result<UnixMs, String> {
    let t = humantime::parse_rfc3339_weak(value.trim()).map_err(|e| {
        format!("{field}: invalid timestamp {value:?} ({e}); use e.g. \"2026-11-01T00:00:00Z\"")
    })?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{field}: timestamp {value:?} is before 1970"))?;
    Ok(crate::clock::duration_ms(d))
}

pub fn format_timestamp(ms: UnixMs) -> String {
    let secs = u64::try_from(ms.div_euclid(1000)).unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let mut duration = |field: &str, value: &str| -> Duration {
        match parse_duration(field, value) {
            Ok(d)
                if d.is_zero()
                    && !["tokens.reuse_grace", "tokens.leeway", "shutdown.delay"]
                        .contains(&field) =>
            {
                problems.push(format!("{field}: must be greater than zero"));
                d
            }
            Ok(d) => d,
            Err(p) => {
                problems.push(p);
                Duration::ZERO
            }
        }
    };
    let tokens = TokenSettings {
        access_ttl: duration("tokens.access_ttl", &raw.tokens.access_ttl),
        refresh_ttl: duration("tokens.refresh_ttl", &raw.tokens.refresh_ttl),
        refresh_idle_ttl: duration("tokens.refresh_idle_ttl", &raw.tokens.refresh_idle_ttl),
        reuse_grace: duration("tokens.reuse_grace", &raw.tokens.reuse_grace),
        leeway: duration("tokens.leeway", &raw.tokens.leeway),
        audience: raw.tokens.audience,
    };
    let jwks = JwksSettings {
        max_age: duration("jwks.max_age", &raw.jwks.max_age),
        stale_if_error: duration("jwks.stale_if_error", &raw.jwks.stale_if_error),
    };
    let limits = LimitSettings {
        window: duration("limits.window", &raw.limits.window),
        login_attempts_per_ip: raw.limits.login_attempts_per_ip,
        failed_logins_per_user_ip: raw.limits.failed_logins_per_user_ip,
        failed_logins_per_user: raw.limits.failed_logins_per_user,
        max_lockout: duration("limits.max_lockout", &raw.limits.max_lockout),
        failed_token_requests_per_ip: raw.limits.failed_token_requests_per_ip,
        token_requests_per_ip: raw.limits.token_requests_per_ip,
    };
    let shutdown = ShutdownSettings {
        delay: duration("shutdown.delay", &raw.shutdown.delay),
        drain_timeout: duration("shutdown.drain_timeout", &raw.shutdown.drain_timeout),
    };
    let dpop = DpopSettings {
        proof_max_age: duration("dpop.proof_max_age", &raw.dpop.proof_max_age),
        proof_leeway: duration("dpop.proof_leeway", &raw.dpop.proof_leeway),
        nonce_lifetime: duration("dpop.nonce_lifetime", &raw.dpop.nonce_lifetime),
        nonce_secret_file: raw.dpop.nonce_secret_file,
        max_remembered_proofs: raw.dpop.max_remembered_proofs,
    };
    if !(1..=10_000_000).contains(&dpop.max_remembered_proofs) {
        problems.push("dpop.max_remembered_proofs: must be 1..=10000000".into());
    }
    if dpop.proof_max_age > Duration::from_secs(600) {
        problems.push("dpop.proof_max_age: at most 10m; proofs are meant to be fresh".into());
    }
    if limits.failed_token_requests_per_ip == 0 {
        problems.push("limits.failed_token_requests_per_ip: must be greater than zero".into());
    }

    if tokens.refresh_idle_ttl > tokens.refresh_ttl {
        problems.push("tokens.refresh_idle_ttl: must not exceed tokens.refresh_ttl".into());
    }
    if tokens.access_ttl >= tokens.refresh_idle_ttl && !tokens.refresh_idle_ttl.is_zero() {
        problems.push("tokens.access_ttl: must be shorter than tokens.refresh_idle_ttl".into());
    }
    if tokens.reuse_grace > Duration::from_secs(300) {
        problems
            .push("tokens.reuse_grace: at most 5m; longer windows weaken theft detection".into());
    }
    if tokens.audience.is_empty() || tokens.audience.iter().any(|a| a.trim().is_empty()) {
        problems.push("tokens.audience: needs at least one non-empty audience".into());
    }

    let issuer = raw.issuer.trim_end_matches('/').to_owned();
    if !(issuer.starts_with("https://") || issuer.starts_with("http://"))
        || issuer.contains(['?', '#', ' '])
    {
        problems.push(format!(
            "issuer: {issuer:?} must be an http(s) URL without query or fragment"
        ));
    }
    if issuer.starts_with("http://") && !raw.allow_insecure_issuer && !is_loopback_url(&issuer) {
        problems.push(format!(
            "issuer: {issuer:?} is not https; tokens and cookies would travel in clear. Use the \
             public https URL (TLS may end at a proxy), or set allow_insecure_issuer = true"
        ));
    }
    let metrics_listen = match raw.metrics.listen.as_deref().map(str::parse::<SocketAddr>) {
        None => None,
        Some(Ok(addr)) => Some(addr),
        Some(Err(_)) => {
            problems.push("metrics.listen: must be IP:PORT, e.g. \"127.0.0.1:9100\"".into());
            None
        }
    };
    let metrics_on_main_listener = raw.metrics.on_main_listener;
    let log_format = match raw.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            problems.push(format!(
                "log.format: {other:?} must be \"text\" or \"json\""
            ));
            LogFormat::Text
        }
    };
    let listen = match raw.listen.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            problems.push(format!(
                "listen: {:?} must be IP:PORT, e.g. \"127.0.0.1:8080\"",
                raw.listen
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };

    let url = raw.store.url;
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
        password: raw.store.password,
        password_file: raw.store.password_file,
        tls_ca_file: raw.store.tls_ca_file,
        tls_cert_file: raw.store.tls_cert_file,
        tls_key_file: raw.store.tls_key_file,
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
    let durability = match raw.store.durability.as_str() {
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
    let p = raw.passwords;
    let before = problems.len();
    // Bounded so a typo cannot abort the server or make every login allocate gigabytes.
    let mut bounded = |field: &str, value: u64, min: u64, max: u64| {
        if !(min..=max).contains(&value) {
            problems.push(format!(
                "passwords.{field}: {value} is outside {min}..={max}"
            ));
        }
    };
    bounded(
        "memory_kib",
        u64::from(p.memory_kib),
        8 * u64::from(p.parallelism.max(1)),
        u64::from(MAX_ARGON2_MEMORY_KIB),
    );
    bounded("iterations", u64::from(p.iterations), 1, 64);
    bounded("parallelism", u64::from(p.parallelism), 1, 16);
    let max_concurrent = p.max_concurrent.unwrap_or_else(default_hashing_threads);
    bounded("max_concurrent", max_concurrent as u64, 1, 256);
    // Within the bounds, argon2 itself has the last word on the combination.
    if problems.len() == before
        && let Err(e) = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None)
    {
        problems.push(format!("passwords: invalid argon2 parameters: {e}"));
    }
    let passwords = PasswordSettings {
        memory_kib: p.memory_kib,
        iterations: p.iterations,
        parallelism: p.parallelism,
        max_concurrent,
    };

    if limits.login_attempts_per_ip == 0
        || limits.failed_logins_per_user == 0
        || limits.failed_logins_per_user_ip == 0
    {
        problems.push(
            "limits: login_attempts_per_ip, failed_logins_per_user_ip and failed_logins_per_user \
             must be at least 1"
                .into(),
        );
    }
    if limits.max_lockout < limits.window {
        problems.push("limits.max_lockout: must be at least limits.window".into());
    }

    let mut keys = Vec::new();
    let mut kids = HashSet::new();
    for (i, k) in raw.keys.into_iter().enumerate() {
        let at = format!("keys[{i}]");
        if !valid_identifier(&k.kid) {
            problems.push(format!(
                "{at}.kid: {:?} must be 1-64 characters of A-Z a-z 0-9 . _ -",
                k.kid
            ));
        } else if !kids.insert(k.kid.clone()) {
            problems.push(format!("{at}.kid: {:?} appears twice", k.kid));
        }
        let alg = Alg::parse(&k.alg).unwrap_or_else(|| {
            problems.push(format!("{at}.alg: {:?} must be ES256 or RS256", k.alg));
            Alg::ES256
        });
        let not_before = parse_timestamp(&format!("{at}.not_before"), &k.not_before)
            .unwrap_or_else(|p| {
                problems.push(p);
                0
            });
        let not_after =
            parse_timestamp(&format!("{at}.not_after"), &k.not_after).unwrap_or_else(|p| {
                problems.push(p);
                0
            });
        if not_after <= not_before {
            problems.push(format!("{at}.not_after: must be later than not_before"));
        }
        keys.push(KeySpec {
            kid: k.kid,
            alg,
            path: k.path,
            not_before,
            not_after,
            revoked: k.revoked,
            generate_if_missing: k.generate_if_missing,
            passphrase_env: k.passphrase_env,
        });
    }
    if keys.iter().all(|k| k.revoked) {
        problems.push("keys: at least one [[keys]] entry that is not revoked is needed".into());
    }

    let users = UserSettings {
        allow_registration: raw.users.allow_registration,
        min_password_length: raw.users.min_password_length,
    };
    if !(1..=256).contains(&users.min_password_length) {
        problems.push("users.min_password_length: must be 1..=256".into());
    }
    let mut trusted_proxies = Vec::new();
    for (i, cidr) in raw.trusted_proxies.iter().enumerate() {
        // A bare address is a /32 (or /128).
        let parsed = cidr
            .parse::<ipnet::IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => problems.push(format!(
                "trusted_proxies[{i}]: {cidr:?} is not an IP address or CIDR (e.g. \"10.0.0.0/8\")"
            )),
        }
    }

    let forwarded_header = match raw.forwarded_header.to_ascii_lowercase().as_str() {
        "x-forwarded-for" => ForwardedHeader::XForwardedFor,
        "forwarded" => ForwardedHeader::Forwarded,
        other => {
            problems.push(format!(
                "forwarded_header: {other:?} must be x-forwarded-for or forwarded (RFC 7239)"
            ));
            ForwardedHeader::XForwardedFor
        }
    };

    let mut clients = clients::validate(raw.clients, &mut problems);
    if !clients.iter().any(|c| c.id == DEFAULT_CLIENT_ID) {
        clients.push(ClientSpec::default_client());
    }
    let demo = DemoSettings {
        enabled: raw.demo.enabled,
        client_id: raw.demo.client_id,
    };
    if demo.enabled
        && !clients
            .iter()
            .any(|c| c.id == demo.client_id && c.refresh_delivery == RefreshDelivery::Cookie)
    {
        problems.push(format!(
            "demo.client_id: {:?} must name a client with refresh_delivery = \"cookie\"",
            demo.client_id
        ));
    }

    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    Ok(Config {
        issuer,
        listen,
        allow_insecure_issuer: raw.allow_insecure_issuer,
        tokens,
        store: StoreSettings {
            url,
            durability,
            redis,
        },
        jwks,
        passwords,
        limits,
        keys,
        clients,
        users,
        demo,
        metrics_listen,
        metrics_on_main_listener,
        log_format,
        shutdown,
        dpop,
        trusted_proxies,
        forwarded_header,
    })
}

/// `http://localhost…`, `http://127.x.x.x…`, `http://[::1]…`: development on one machine.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Key ids and client ids: 1-64 characters of `A-Z a-z 0-9 . _ -`, safe in headers and logs.
pub fn valid_identifier(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
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
    fn unknown_field_is_refused_by_name() {
        let text = format!("{MINIMAL}\n[tokens]\nacess_ttl = \"5m\"\n");
        let err = Config::parse(&text, no_env).unwrap_err().to_string();
        assert!(err.contains("acess_ttl"), "{err}");
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
        assert_eq!(config.warnings().len(), 1);
        assert!(config.warnings()[0].contains("password grant"));
        // The first-party client is always there.
        assert!(config.client(DEFAULT_CLIENT_ID).is_some());
        assert!(config.client("legacy").is_some());
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
            _ => None,
        };
        let c = Config::parse(MINIMAL, env).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.store.url, "redis://127.0.0.1:7000/0");
        assert_eq!(c.tokens.audience, vec!["a", "b"]);
        assert_eq!(c.passwords.memory_kib, 64);
        assert_eq!(c.limits.login_attempts_per_ip, 1000);
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(300));
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
