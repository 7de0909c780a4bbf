//! The first-party JSON API (`docs/http-api.md`): login, refresh, logout, userinfo. Its
//! failures answer as that document says: a bad credential or refresh token is
//! `401 invalid_grant`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::json::JsonObject;
use super::{bearer_token, request_meta, token_response};
use crate::credentials::Password;
use crate::error::ApiError;
use crate::flows::{FlowError, Flows, LoginRequest};

#[derive(Deserialize)]
pub struct LoginBody {
    username: String,
    password: Password,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
pub struct RefreshBody {
    refresh_token: String,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Serialize)]
struct UserInfo<'a> {
    sub: &'a str,
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// This surface's answer to a flow's refusal.
fn refused(e: FlowError) -> ApiError {
    match e {
        FlowError::BadCredentials | FlowError::BadRefreshToken => {
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid_grant", e.to_string())
        }
        other => ApiError::common(other),
    }
}

pub async fn login(
    flows: web::Data<Flows>,
    req: HttpRequest,
    JsonObject(body): JsonObject<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    let issued = flows
        .login(LoginRequest {
            username: &body.username,
            password: &body.password,
            client_id: body.client_id.as_deref(),
            scope: body.scope.as_deref(),
            meta: &request_meta(&req, &flows.snapshot().config.trusted_proxies),
        })
        .await
        .map_err(refused)?;
    Ok(token_response(&issued))
}

pub async fn refresh(
    flows: web::Data<Flows>,
    req: HttpRequest,
    JsonObject(body): JsonObject<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    let issued = flows
        .refresh(
            &body.refresh_token,
            body.scope.as_deref(),
            &request_meta(&req, &flows.snapshot().config.trusted_proxies),
        )
        .await
        .map_err(refused)?;
    Ok(token_response(&issued))
}

pub async fn logout(
    flows: web::Data<Flows>,
    JsonObject(body): JsonObject<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    flows.logout(&body.refresh_token).await.map_err(refused)?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn userinfo(flows: web::Data<Flows>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let auth = flows
        .authenticate(bearer_token(&req)?)
        .await
        .map_err(refused)?;
    Ok(HttpResponse::Ok().json(UserInfo {
        sub: &auth.user.id,
        username: &auth.user.username,
        email: auth.user.email.as_deref(),
        name: auth.user.name.as_deref(),
    }))
}
