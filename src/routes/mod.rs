//! HTTP handlers, one file per surface. They parse, call a flow ([`crate::flows`]), and render
//! its result or error as that surface's contract says.

pub mod auth;
pub mod json;
pub mod ops;
pub mod well_known;

use actix_web::HttpRequest;
use actix_web::http::header;

use crate::error::ApiError;
use crate::flows::RequestMeta;

const MAX_USER_AGENT_CHARS: usize = 256;

/// The caller as recorded on its session: the connection's peer address (a proxy's
/// `X-Forwarded-For` is not trusted) and a bounded User-Agent.
pub fn request_meta(req: &HttpRequest) -> RequestMeta {
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(MAX_USER_AGENT_CHARS)
        .collect();
    RequestMeta {
        user_agent,
        ip: req
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
    }
}

/// The token of an `Authorization: Bearer …` header (RFC 6750 §2.1).
pub fn bearer_token(req: &HttpRequest) -> Result<&str, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::missing_bearer_token());
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid_token("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::invalid_token(
            "expected Authorization: Bearer <token>",
        )),
    }
}

pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found())
}

/// 405 with the methods the path does answer.
pub async fn method_not_allowed(allow: &'static str) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed(allow))
}
