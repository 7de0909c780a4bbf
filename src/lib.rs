//! latchkey: a token issuer for APIs.
//!
//! Users log in once and get a short-lived JWT access token, signed with an asymmetric key that
//! resource servers fetch from the JWKS, plus a long-lived opaque refresh token that rotates on
//! every use. The map of the crate:
//!
//! - [`cli`]: the command line (`serve`, `keys`, `users`, `hash-secret`, `config check`).
//! - [`config`]: the TOML configuration with environment overrides, validated once.
//! - [`clock`]: the one source of "now", injectable so expiry is testable without sleeping.
//! - [`keys`]: the signing-key ring: schedule, the active key, the published JWKS, key files.
//! - [`tokens`]: access-token claims and signing; refresh-token format, hashing and sealing.
//! - [`limits`]: login throttling per client IP and per username.
//! - [`credentials`]: argon2id password hashing on a bounded blocking pool.
//! - [`reload`]: hot reload of config and keys (SIGHUP, file changes), refused when unsafe.
//! - [`issuer`]: the flows (login, refresh, logout, userinfo), free of HTTP.
//! - [`store`]: the storage seam, with the Redis and embedded SQLite backends.
//! - [`routes`]: thin HTTP handlers, one file per area.
//! - [`error`]: the API error type and its RFC 6749 JSON rendering.
//! - [`startup`]: `Application::build`, the route table, and the server's lifecycle.
//! - [`telemetry`]: logging set-up.

pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod error;
pub mod issuer;
pub mod keys;
pub mod limits;
pub mod reload;
pub mod routes;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
