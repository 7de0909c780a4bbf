#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "axum")]
pub mod axum;
mod claims;
pub mod dpop;
mod error;
mod feed;
mod jwks;
#[cfg(any(feature = "actix", feature = "axum"))]
mod rejection;
mod revocations;
mod token_cache;
mod verifier;

pub use claims::{Claims, Confirmation};
pub use error::{ErrorKind, VerifyError};
pub use feed::{FeedSettings, FeedStatus, RevocationFeed};
pub use jsonwebtoken::Algorithm;
#[cfg(any(feature = "actix", feature = "axum"))]
pub use rejection::{Rejection, Scope};
pub use verifier::{RequestCredentials, Scheme, Verifier, VerifierBuilder, parse_authorization};
