//! Verify latchkey access tokens in a resource server.
//!
//! A [`Verifier`] is built from the issuer URL (it discovers the JWKS through RFC 8414 metadata)
//! or from a JWKS URL, plus the audience the resource server answers to. It checks a token the
//! way RFC 9068 asks: signature by a key from the issuer's JWKS, the algorithm taken from that
//! key (never `none`, never HMAC), `typ` `at+jwt`, `iss`, `aud`, `exp` and `nbf` with a small
//! leeway. The JWKS is cached as its `Cache-Control` allows; an unknown `kid` triggers at most
//! one refetch per cooldown, shared by every request waiting on it; a stale cache keeps serving
//! (within `stale-if-error`) while the issuer is unreachable, and is refreshed in the background.
//!
//! ```no_run
//! # async fn run() -> Result<(), latchkey_verify::VerifyError> {
//! let verifier = latchkey_verify::Verifier::from_issuer("https://auth.example.com", "api").build()?;
//! let claims = verifier.verify("eyJhbGciOi…").await?;
//! println!("{} with scopes {:?}", claims.sub, claims.scopes().collect::<Vec<_>>());
//! # Ok(()) }
//! ```
//!
//! Time is a parameter: [`Verifier::verify_at`] judges expiry and the cache's freshness at the
//! instant given, so a service with its own clock (and every test) never depends on the wall
//! clock. The issuer itself verifies its tokens with this crate, from its own JWKS
//! ([`Verifier::from_jwks`]).
//!
//! With the `actix` feature, [`actix::Authenticated`] extracts verified claims from a request
//! and answers 401 with `WWW-Authenticate: Bearer error="invalid_token"` otherwise;
//! [`actix::Scoped`] also requires a scope and answers 403 `insufficient_scope`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "actix")]
pub mod actix;
mod claims;
mod error;
mod jwks;
mod verifier;

pub use claims::Claims;
pub use error::{ErrorKind, VerifyError};
pub use jsonwebtoken::Algorithm;
pub use verifier::{Verifier, VerifierBuilder};
