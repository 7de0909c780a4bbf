//! HTTP handlers, one file per surface. They parse, call a flow ([`crate::flows`]), and render
//! its result or error as that surface's contract says.

pub mod auth;
pub mod form;
pub mod json;
pub mod oauth;
pub mod ops;
pub mod well_known;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;

use crate::error::ApiError;
use crate::flows::{Issued, RequestMeta, TokenType};

/// RFC 6749 §5.1 token response.
#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_expires_in: Option<u64>,
    #[serde(skip_serializing_if = "str::is_empty")]
    scope: &'a str,
}

/// What was issued, as a JSON body (RFC 6749 §5.1: `no-store` and `Pragma: no-cache`).
pub fn token_response(issued: &Issued) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::PRAGMA, "no-cache"))
        .json(TokenResponse {
            access_token: &issued.access_token,
            token_type: match issued.token_type {
                TokenType::Bearer => "Bearer",
            },
            expires_in: issued.expires_in,
            refresh_token: issued.refresh.as_ref().map(|r| r.token.as_str()),
            refresh_expires_in: issued.refresh.as_ref().map(|r| r.expires_in),
            scope: &issued.scope,
        })
}

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
