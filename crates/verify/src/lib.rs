#![doc = include_str!("../README.md")]
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
