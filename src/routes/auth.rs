//! The first-party JSON API (SPEC 4.1): login, refresh, logout, userinfo.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::{bearer_token, request_meta};
use crate::credentials::Password;
use crate::error::ApiError;
use crate::issuer::Issuer;

#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: Password,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
pub struct RefreshRequest {
    refresh_token: String,
}

#[derive(Serialize)]
struct UserInfo<'a> {
    sub: &'a str,
    username: &'a str,
}

pub async fn login(
    issuer: web::Data<Issuer>,
    req: HttpRequest,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let response = issuer
        .login(
            &body.username,
            &body.password,
            body.client_id.as_deref(),
            &request_meta(&req),
        )
        .await?;
    Ok(HttpResponse::Ok().json(response))
}

pub async fn refresh(
    issuer: web::Data<Issuer>,
    req: HttpRequest,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let response = issuer
        .refresh(&body.refresh_token, &request_meta(&req))
        .await?;
    Ok(HttpResponse::Ok().json(response))
}

pub async fn logout(
    issuer: web::Data<Issuer>,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    issuer.logout(&body.refresh_token).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn userinfo(
    issuer: web::Data<Issuer>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let auth = issuer.authenticate(bearer_token(&req)?).await?;
    Ok(HttpResponse::Ok().json(UserInfo {
        sub: &auth.user.id,
        username: &auth.user.username,
    }))
}
