//! The HTTP error answer: a status, an RFC 6749 code and a safe description for the client, the
//! cause chain for the log. Each surface in `routes/` decides the status and code of a flow's
//! error ([`crate::flows::FlowError`]); what every surface answers alike (malformed input,
//! throttling, an unavailable store, a bug) is mapped once, in [`ApiError::common`].
//!
//! Every 401 carries a `WWW-Authenticate` challenge and every 503 and 429 a `Retry-After`.

use std::borrow::Cow;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::flows::FlowError;
use crate::telemetry::{LogThrottle, error_chain};

/// RFC 9449 §8: the server nonce a client must put in its next DPoP proof.
pub const DPOP_NONCE: &str = "dpop-nonce";

/// A store outage fails every request; one warning per 10 s says so, with the count.
static STORE_WARNINGS: LogThrottle = LogThrottle::new(10_000);
/// Likewise for a flood that fills the password-hashing queue.
static OVERLOAD_WARNINGS: LogThrottle = LogThrottle::new(10_000);

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    description: Cow<'static, str>,
    /// One header the answer needs beyond the usual: a `WWW-Authenticate` challenge, or the
    /// `DPoP-Nonce` of a `use_dpop_nonce` answer.
    header: Option<Box<(&'static str, String)>>,
    retry_after_secs: Option<u64>,
    /// The `Allow` header of a 405.
    allow: Option<&'static str>,
    /// Logged, never shown: set for 5xx answers. Boxed: errors travel in every `Result`.
    cause: Option<Box<FlowError>>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.description
        )
    }
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            description: description.into(),
            header: None,
            retry_after_secs: None,
            allow: None,
            cause: None,
        }
    }

    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request", "no such endpoint")
    }

    pub fn method_not_allowed(allow: &'static str) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "method not allowed",
        );
        error.allow = Some(allow);
        error
    }

    pub fn payload_too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "request body too large",
        )
    }

    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "Content-Type must be application/json",
        )
    }

    /// 401 with a bare `WWW-Authenticate: Bearer` challenge: no credentials at all (RFC 6750
    /// §3.1 says to send no error code then).
    pub fn missing_bearer_token() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "an access token is required",
        )
        .with_challenge(format!(
            "Bearer realm=\"latchkey\", DPoP algs=\"{}\"",
            latchkey_verify::dpop::SIGNING_ALGS_SPACED
        ))
    }

    /// 401 with a DPoP challenge (RFC 9449 §7.1): `invalid_token` or `invalid_dpop_proof`.
    pub fn dpop_refused(code: &'static str, description: Cow<'static, str>) -> ApiError {
        let challenge = format!(
            "DPoP error=\"{code}\", error_description=\"{}\", algs=\"{}\"",
            description.replace(['"', '\\'], "'"),
            latchkey_verify::dpop::SIGNING_ALGS_SPACED
        );
        ApiError::new(StatusCode::UNAUTHORIZED, code, description).with_challenge(challenge)
    }

    /// 401 `invalid_token` (RFC 6750 §3.1) with its challenge.
    pub fn invalid_token(description: impl Into<Cow<'static, str>>) -> ApiError {
        let description = description.into();
        let challenge = format!(
            "Bearer realm=\"latchkey\", error=\"invalid_token\", error_description=\"{}\"",
            description.replace(['"', '\\'], "'")
        );
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", description)
            .with_challenge(challenge)
    }

    pub fn with_challenge(mut self, challenge: String) -> ApiError {
        self.header = Some(Box::new(("www-authenticate", challenge)));
        self
    }

    /// The answers every surface gives alike. Surfaces map their own variants (bad credentials,
    /// bad refresh tokens) first and pass the rest here.
    pub fn common(e: FlowError) -> ApiError {
        match e {
            FlowError::InvalidRequest(description) => ApiError::invalid_request(description),
            FlowError::InvalidToken(description) => ApiError::invalid_token(description),
            FlowError::BadCredentials | FlowError::BadRefreshToken => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_grant", e.to_string())
            }
            FlowError::Throttled { retry_after_secs } => {
                let mut error = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "slow_down",
                    "too many attempts; retry later",
                );
                error.retry_after_secs = Some(retry_after_secs);
                error
            }
            FlowError::StoreUnavailable(_)
            | FlowError::NoSigningKey
            | FlowError::PasswordCheck(_)
            | FlowError::Overloaded => {
                let mut error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the service is temporarily unavailable; retry shortly",
                );
                error.retry_after_secs = Some(1);
                error.cause = Some(Box::new(e));
                error
            }
            FlowError::UserExists(_) | FlowError::UserLooksAlike(_) | FlowError::NoSuchUser(_) => {
                ApiError::invalid_request(e.to_string())
            }
            FlowError::InvalidGrant(description) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
            }
            FlowError::WrongPassword => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_grant", e.to_string())
            }
            FlowError::NotFound(description) => {
                ApiError::new(StatusCode::NOT_FOUND, "invalid_request", description)
            }
            // RFC 6749 §5.2: 401, with a challenge in the scheme clients authenticate with.
            FlowError::InvalidClient(description) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
                    .with_challenge("Basic realm=\"latchkey\"".into())
            }
            FlowError::UnauthorizedClient(description) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unauthorized_client", description)
            }
            FlowError::UnsupportedGrantType => ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be authorization_code, refresh_token, client_credentials or \
                 password, as the client is registered for",
            ),
            FlowError::InvalidScope(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_scope", e.to_string())
            }
            // RFC 9449 §5 and §8: both 400, the second with the nonce to use.
            FlowError::InvalidDpopProof(description) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_dpop_proof", description)
            }
            FlowError::BoundTokenAsBearer => {
                ApiError::dpop_refused("invalid_token", e.to_string().into())
            }
            FlowError::UseDpopNonce { ref nonce } => {
                let mut error =
                    ApiError::new(StatusCode::BAD_REQUEST, "use_dpop_nonce", e.to_string());
                error.header = Some(Box::new((DPOP_NONCE, nonce.clone())));
                error
            }
            FlowError::InsufficientScope(scope) => {
                ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", e.to_string())
                    .with_challenge(format!(
                        "Bearer realm=\"latchkey\", error=\"insufficient_scope\", scope=\"{scope}\""
                    ))
            }
            FlowError::Conflict(description) => {
                ApiError::new(StatusCode::CONFLICT, "invalid_request", description)
            }
            FlowError::Internal(_) => {
                let mut error = ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal error",
                );
                error.cause = Some(Box::new(e));
                error
            }
        }
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

/// RFC 6749 §5.2 error body, on every error of every endpoint.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        match self.cause.as_deref() {
            Some(cause @ FlowError::NoSigningKey) => {
                tracing::error!("{cause}: check [[keys]] not_before/not_after")
            }
            Some(cause @ FlowError::StoreUnavailable(_)) => {
                if let Some(suppressed) = STORE_WARNINGS.admit(crate::clock::system_ms()) {
                    tracing::warn!(
                        error = %error_chain(cause),
                        similar_since_last = suppressed,
                        "store unavailable"
                    )
                }
            }
            Some(cause @ FlowError::Overloaded) => {
                if let Some(suppressed) = OVERLOAD_WARNINGS.admit(crate::clock::system_ms()) {
                    tracing::warn!(
                        event = "overloaded",
                        similar_since_last = suppressed,
                        "{cause}: the password-hashing queue is full"
                    )
                }
            }
            Some(cause @ FlowError::PasswordCheck(_)) => {
                tracing::error!(error = %error_chain(cause), "a password could not be checked")
            }
            Some(cause) => tracing::error!(error = %error_chain(cause), "request failed"),
            None => {}
        }
        let mut response = HttpResponse::build(self.status);
        response
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"));
        if let Some((name, value)) = self.header.as_deref()
            && let Ok(value) = HeaderValue::from_str(value)
        {
            response.insert_header((*name, value));
        }
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if let Some(allow) = self.allow {
            response.insert_header((header::ALLOW, allow));
        }
        response.json(ErrorBody {
            error: self.code,
            error_description: &self.description,
        })
    }
}
