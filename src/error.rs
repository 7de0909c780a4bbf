//! The HTTP boundary's error: an RFC 6749 code and a safe description for the client, the cause
//! chain for the log. Every 401 carries `WWW-Authenticate: Bearer`, every 503 `Retry-After`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; the description says how, without echoing secrets.
    #[error("{0}")]
    InvalidRequest(String),
    /// 401 `invalid_grant`: bad credentials or a refresh token that is unknown, expired,
    /// revoked or reused. One description for all, so no case can be told from another.
    #[error("{0}")]
    InvalidGrant(&'static str),
    /// 401 `invalid_token` (RFC 6750 §3.1): a bearer token that does not verify.
    #[error("{0}")]
    InvalidToken(&'static str),
    /// 401 with a bare `WWW-Authenticate: Bearer` challenge: no credentials at all.
    #[error("a bearer access token is required")]
    MissingToken,
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 429 `slow_down`: too many login attempts; `Retry-After` says when to try again.
    #[error("too many login attempts; retry later")]
    SlowDown { retry_after_secs: u64 },
    /// 503: the store did not answer; nothing was changed, the client should retry.
    #[error("the session store is unavailable")]
    StoreUnavailable(#[source] StoreError),
    /// 503: no key is scheduled to sign now (a config error the operator must fix).
    #[error("no signing key is active")]
    NoSigningKey,
    /// 500: a bug or a broken host. The client sees nothing of the cause.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(e))
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_)
            | ApiError::NotFound
            | ApiError::MethodNotAllowed
            | ApiError::PayloadTooLarge
            | ApiError::UnsupportedMediaType => "invalid_request",
            ApiError::InvalidGrant(_) => "invalid_grant",
            ApiError::SlowDown { .. } => "slow_down",
            ApiError::InvalidToken(_) | ApiError::MissingToken => "invalid_token",
            ApiError::StoreUnavailable(_) | ApiError::NoSigningKey => "temporarily_unavailable",
            ApiError::Internal(_) => "server_error",
        }
    }

    fn description(&self) -> String {
        match self {
            ApiError::StoreUnavailable(_) | ApiError::NoSigningKey => {
                "the service is temporarily unavailable; retry shortly".into()
            }
            ApiError::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::StoreUnavailable(e),
            other => ApiError::internal(other),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidGrant(_) | ApiError::InvalidToken(_) | ApiError::MissingToken => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::SlowDown { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::StoreUnavailable(_) | ApiError::NoSigningKey => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(e) => {
                tracing::error!(error = %error_chain(e.as_ref()), "request failed")
            }
            ApiError::StoreUnavailable(e) => {
                tracing::warn!(error = %error_chain(e), "store unavailable")
            }
            ApiError::NoSigningKey => {
                tracing::error!("no signing key is active: check [[keys]] not_before/not_after")
            }
            _ => {}
        }
        let description = self.description();
        let mut response = HttpResponse::build(self.status_code());
        response
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"));
        match self {
            ApiError::MissingToken => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"latchkey\""));
            }
            ApiError::InvalidToken(_) => {
                let challenge = format!(
                    "Bearer realm=\"latchkey\", error=\"invalid_token\", error_description=\"{description}\""
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response.insert_header((header::WWW_AUTHENTICATE, value));
                }
            }
            ApiError::StoreUnavailable(_) | ApiError::NoSigningKey => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::SlowDown { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.code(),
            error_description: &description,
        })
    }
}

/// `outer: inner: innermost`, for one log line. A cause whose text its wrapper already
/// printed is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Turns the JSON extractor's failures into 4xx `invalid_request` bodies. Serde's messages can
/// quote the offending value (a password sent as a number, say), so only their safe kinds pass.
pub fn json_error(err: actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::PayloadTooLarge,
        E::ContentType => ApiError::UnsupportedMediaType,
        E::Deserialize(e) => {
            let msg = e.to_string();
            let safe = msg.starts_with("missing field") || msg.starts_with("unknown field");
            ApiError::InvalidRequest(match (e.classify(), safe) {
                (_, true) => format!(
                    "invalid body: {}",
                    msg.split(" at line").next().unwrap_or("")
                ),
                (serde_json::error::Category::Data, false) => {
                    "invalid body: a field has the wrong type or value".into()
                }
                _ => "invalid body: not well-formed JSON".into(),
            })
        }
        _ => ApiError::InvalidRequest("invalid body".into()),
    }
}
