//! Why a token was not accepted.

use std::fmt;

use crate::dpop::ProofFault;

/// What went wrong, for matching. New kinds may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Not a compact JWS, or its header or claims do not parse.
    Malformed,
    /// `alg` is `none`, an HMAC algorithm, or one this crate does not verify.
    UnsupportedAlgorithm,
    /// The header's `alg` differs from the `alg` of the JWK its `kid` names.
    AlgorithmMismatch,
    /// No key with this `kid` in the issuer's JWKS (after the allowed refetch).
    UnknownKey,
    /// The signature does not verify.
    InvalidSignature,
    /// The header lists critical extensions (`crit`, RFC 7515 §4.1.11), which this crate does
    /// not implement.
    CriticalHeader,
    /// `typ` is not `at+jwt`: an ID token or another JWT presented as an access token.
    WrongType,
    /// `iss` is not the expected issuer.
    WrongIssuer,
    /// `aud` does not contain the expected audience.
    WrongAudience,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// A required claim (`exp`, `iss`, `aud`, `sub`) is missing.
    MissingClaim,
    /// The JWKS could not be fetched and no usable cached copy exists.
    JwksUnavailable,
    /// The verifier was configured with an unusable value.
    Configuration,
    /// No `Authorization: Bearer` or `Authorization: DPoP` credentials in the request.
    MissingToken,
    /// The `DPoP` proof is missing, malformed or does not fit the request or the token
    /// ([`VerifyError::dpop_fault`] says how).
    InvalidDpopProof,
    /// A DPoP-bound token (one with `cnf.jkt`) presented as a bearer token.
    BoundTokenAsBearer,
    /// `Authorization: DPoP` with a token that is not DPoP-bound.
    NotDpopBound,
    /// The replay memory is full of live proofs: retry shortly (a 503, not the client's fault).
    ReplayMemoryFull,
    /// The revocation feed says the token's session (or every token of its subject issued
    /// before a cutoff) is revoked.
    Revoked,
    /// The revocation feed has been unreachable longer than the configured fail-closed delay:
    /// no token is accepted until it answers again (a 503).
    RevocationsUnknown,
}

/// A token that did not verify, or a JWKS that could not be had.
#[derive(Debug)]
pub struct VerifyError {
    kind: ErrorKind,
    detail: String,
    dpop_fault: Option<ProofFault>,
}

impl VerifyError {
    pub(crate) fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        VerifyError {
            kind,
            detail: detail.into(),
            dpop_fault: None,
        }
    }

    pub(crate) fn dpop(fault: ProofFault, detail: &'static str) -> Self {
        VerifyError {
            kind: ErrorKind::InvalidDpopProof,
            detail: detail.into(),
            dpop_fault: Some(fault),
        }
    }

    /// What was wrong with the `DPoP` proof, for [`ErrorKind::InvalidDpopProof`].
    pub fn dpop_fault(&self) -> Option<ProofFault> {
        self.dpop_fault
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the token itself is at fault (answer 401), as opposed to the issuer being
    /// unreachable (answer 503).
    pub fn is_token_error(&self) -> bool {
        !matches!(
            self.kind,
            ErrorKind::JwksUnavailable
                | ErrorKind::Configuration
                | ErrorKind::ReplayMemoryFull
                | ErrorKind::RevocationsUnknown
        )
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for VerifyError {}
