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
//! - [`state`]: the live snapshot of config and keys; what a reload applies, what waits for a
//!   restart.
//! - [`reload`]: hot reload of config and keys (SIGHUP, file changes), refused when unsafe.
//! - [`flows`]: one module per operation (login, refresh, logout, access-token checks, accounts),
//!   returning what was issued or why not, free of HTTP.
//! - [`store`]: the storage seam, with the Redis and embedded SQLite backends.
//! - [`outbound`]: what the issuer sends to other servers (back-channel logout tokens), from a
//!   bounded queue with bounded retries.
//! - [`routes`]: thin HTTP handlers, one file per surface, each mapping flow results to its
//!   own answers.
//! - [`error`]: the HTTP error answer and its RFC 6749 JSON rendering.
//!
//! The external contract (CLI, config, token formats, endpoints and errors) is `docs/`.
//! - [`startup`]: `Application::build`, the route table, and the server's lifecycle.
//! - [`telemetry`]: logging set-up, and error chains in one log line.
//! - [`metrics`]: the Prometheus metrics every part reports to (`GET /metrics`).
//! - [`encoding`]: hex, shared by keys, tokens and stores.
//! - [`usernames`]: the one spelling of a username, and the key that makes look-alikes one name.

pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod encoding;
pub mod error;
pub mod flows;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod reload;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod usernames;
