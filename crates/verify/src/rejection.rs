//! Why a request was turned away, and the answer that says so, shared by the actix and axum
//! extractors: RFC 6750 §3 challenges for bearer tokens, RFC 9449 §7.1 for DPoP.

use crate::dpop::SIGNING_ALGS_SPACED;
use crate::verifier::{RequestCredentials, Scheme};
use crate::{Claims, ErrorKind, Verifier, VerifyError};

/// A scope a handler requires, named at the type level:
/// `struct UsersWrite; impl Scope for UsersWrite { const NAME: &'static str = "users:write"; }`.
pub trait Scope {
    /// The scope's name as it appears in the token's `scope` claim.
    const NAME: &'static str;
}

/// Why a request was turned away.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// No `Authorization: Bearer` or `Authorization: DPoP` header.
    #[error("an access token is required")]
    MissingToken,
    /// The token, or its DPoP proof, did not verify; the scheme it came with, if any.
    #[error("{1}")]
    InvalidToken(Option<Scheme>, VerifyError),
    /// The token is valid but lacks the scope.
    #[error("the token lacks the scope {1}")]
    InsufficientScope(Scheme, &'static str),
    /// The issuer's keys could not be had, or the replay memory is full.
    #[error("the token cannot be verified right now")]
    Unavailable(VerifyError),
    /// No `Verifier` was registered with the app.
    #[error("no Verifier registered with the app")]
    NotConfigured,
}

impl Rejection {
    /// The HTTP status: 401, 403, 503 or 500.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::MissingToken | Rejection::InvalidToken(..) => 401,
            Rejection::InsufficientScope(..) => 403,
            Rejection::Unavailable(_) => 503,
            Rejection::NotConfigured => 500,
        }
    }

    /// The RFC 6749/6750/9449 error code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::MissingToken => "invalid_token",
            Rejection::InvalidToken(_, e) if e.kind() == ErrorKind::InvalidDpopProof => {
                "invalid_dpop_proof"
            }
            Rejection::InvalidToken(..) => "invalid_token",
            Rejection::InsufficientScope(..) => "insufficient_scope",
            Rejection::Unavailable(_) => "temporarily_unavailable",
            Rejection::NotConfigured => "server_error",
        }
    }

    /// The `WWW-Authenticate` challenges, one header each. Without a token, both schemes are
    /// offered; otherwise the scheme the request used, or DPoP when a bound token came as a
    /// bearer token.
    pub fn challenges(&self) -> Vec<String> {
        let description = self.to_string().replace(['"', '\\'], "'");
        let dpop = |error: &str| {
            format!(
                "DPoP error=\"{error}\", error_description=\"{description}\", algs=\"{SIGNING_ALGS_SPACED}\""
            )
        };
        let bearer =
            |error: &str| format!("Bearer error=\"{error}\", error_description=\"{description}\"");
        match self {
            Rejection::MissingToken => vec![
                "Bearer".to_owned(),
                format!("DPoP algs=\"{SIGNING_ALGS_SPACED}\""),
            ],
            Rejection::InvalidToken(scheme, e) => {
                let dpop_side = *scheme == Some(Scheme::DPoP)
                    || e.kind() == ErrorKind::BoundTokenAsBearer
                    || e.kind() == ErrorKind::InvalidDpopProof;
                if dpop_side {
                    vec![dpop(self.code())]
                } else {
                    vec![bearer("invalid_token")]
                }
            }
            Rejection::InsufficientScope(scheme, scope) => {
                let name = match scheme {
                    Scheme::Bearer => "Bearer",
                    Scheme::DPoP => "DPoP",
                };
                vec![format!(
                    "{name} error=\"insufficient_scope\", scope=\"{scope}\""
                )]
            }
            Rejection::Unavailable(_) | Rejection::NotConfigured => Vec::new(),
        }
    }

    /// The JSON body: `{"error": …, "error_description": …}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": self.code(), "error_description": self.to_string()})
    }
}

/// Verifies a request's credentials and sorts the failure into a [`Rejection`].
pub(crate) async fn authenticate(
    verifier: Option<Verifier>,
    request: &RequestCredentials<'_>,
) -> Result<(Scheme, Claims), Rejection> {
    let verifier = verifier.ok_or(Rejection::NotConfigured)?;
    let scheme = request
        .authorization
        .and_then(crate::parse_authorization)
        .map(|(scheme, _)| scheme);
    match verifier.verify_request(request).await {
        Ok(verified) => Ok(verified),
        Err(e) if e.kind() == ErrorKind::MissingToken => Err(Rejection::MissingToken),
        Err(e) if e.is_token_error() => Err(Rejection::InvalidToken(scheme, e)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot verify access tokens");
            Err(Rejection::Unavailable(e))
        }
    }
}

/// The URL a request was sent to, for the DPoP `htu` check: `public_base` (scheme and host the
/// clients use, when the server sits behind a proxy) or the request's own scheme and `Host`,
/// followed by the path. Forwarding headers are never trusted for this.
pub(crate) fn request_url(
    public_base: Option<&str>,
    secure: bool,
    host: Option<&str>,
    path: &str,
) -> String {
    match public_base {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => {
            let scheme = if secure { "https" } else { "http" };
            format!("{scheme}://{}{path}", host.unwrap_or(""))
        }
    }
}
