//! The first-party JSON API (`docs/http-api.md`): login, refresh, logout, userinfo. Its
//! failures answer as that document says: a bad credential or refresh token is
//! `401 invalid_grant`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::json::{JsonObject, OptionalJsonObject};
use super::{
    browser, caller, dpop_proofs, limited_token_request, request_meta, token_response,
    token_response_from,
};
use actix_web::ResponseError;

use crate::config::RefreshDelivery;
use crate::credentials::Password;
use crate::error::ApiError;
use crate::flows::{DpopPresented, FlowError, Flows, LoginRequest};
use crate::store::Channel;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginBody {
    username: String,
    #[schema(value_type = String)]
    password: Password,
    /// A registered public client; absent: the first-party client.
    #[serde(default)]
    client_id: Option<String>,
    /// Space-separated; absent: all the user holds that the client may carry.
    #[serde(default)]
    scope: Option<String>,
}

/// `/auth/refresh` and `/auth/logout`: a token in the body, or, for a cookie client, nothing
/// but (optionally) the client's id, the token being in its cookie.
#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct RefreshBody {
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct UserInfo<'a> {
    sub: &'a str,
    /// Absent for a token granted `openid` (then `profile` gives `preferred_username`).
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    /// With `openid` and `profile`: the one an operator set, else the username.
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    /// With `email`: whether an operator vouched for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
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

#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    request_body = LoginBody,
    params(("DPoP" = Option<String>, Header, description = "A DPoP proof (RFC 9449, docs/dpop.md): the tokens issued are bound to its key; required for a DPoP-bound session and for clients with `require_dpop`")),
    responses(
        (status = 200, description = "Tokens. A cookie client gets its refresh token only in a `Set-Cookie` (HttpOnly, SameSite=Strict), never in the body", body = super::TokenResponse),
        (status = 400, description = "`invalid_request`: malformed input; `invalid_dpop_proof`; `use_dpop_nonce` (retry with the `DPoP-Nonce` header's value in the proof)", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_grant` (bad credentials) or `invalid_client`", body = crate::error::ErrorBody),
        (status = 403, description = "`invalid_request`: a cookie client's request from an origin it does not allow", body = crate::error::ErrorBody),
        (status = 429, description = "`slow_down`: throttled; see `Retry-After`", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn login(
    flows: web::Data<Flows>,
    req: HttpRequest,
    JsonObject(body): JsonObject<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    let snapshot = flows.snapshot();
    // A cookie client's login sets its cookie: only from its own pages (login CSRF).
    let cookie_client = body
        .client_id
        .as_deref()
        .and_then(|id| snapshot.config.client(id))
        .filter(|c| c.refresh_delivery == RefreshDelivery::Cookie)
        .cloned();
    if let Some(client) = &cookie_client {
        browser::check_origin(&req, client)?;
    }
    let proofs = dpop_proofs(&req);
    let meta = request_meta(&req, &snapshot.config);
    let issued = flows
        .login(LoginRequest {
            username: &body.username,
            password: &body.password,
            client_id: body.client_id.as_deref(),
            scope: body.scope.as_deref(),
            meta: &meta,
            dpop: DpopPresented {
                proofs: &proofs,
                path: "/auth/login",
                ip: &meta.ip,
            },
        })
        .await
        .map_err(refused)?;
    Ok(match &cookie_client {
        Some(client) => {
            let mut response = HttpResponse::Ok();
            browser::set_refresh_cookie(&mut response, &snapshot, client, &issued);
            token_response_from(response, &issued, false)
        }
        None => token_response(&issued),
    })
}

#[utoipa::path(
    post,
    path = "/auth/refresh",
    tag = "auth",
    params(("DPoP" = Option<String>, Header, description = "A DPoP proof (RFC 9449, docs/dpop.md): the tokens issued are bound to its key; required for a DPoP-bound session and for clients with `require_dpop`")),
    request_body(content = RefreshBody, description = "The refresh token; a cookie client sends `{}` or its `client_id`, the token riding in its cookie"),
    responses(
        (status = 200, description = "A new access token and the successor refresh token (a replay within the grace window gets the same successor)", body = super::TokenResponse),
        (status = 400, description = "`invalid_request`: malformed input; `invalid_dpop_proof` (also: a DPoP-bound session without a proof of its key); `use_dpop_nonce`", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_grant`: unknown, expired, revoked or reused (the session is then revoked)", body = crate::error::ErrorBody),
        (status = 403, description = "`invalid_request`: a cookie client's request from an origin it does not allow", body = crate::error::ErrorBody),
        (status = 429, description = "`slow_down`: throttled; see `Retry-After`", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn refresh(
    flows: web::Data<Flows>,
    req: HttpRequest,
    body: OptionalJsonObject<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    limited_token_request(&flows, &req, refresh_admitted(&flows, &req, body)).await
}

async fn refresh_admitted(
    flows: &Flows,
    req: &HttpRequest,
    OptionalJsonObject(body): OptionalJsonObject<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    let snapshot = flows.snapshot();
    let meta = request_meta(req, &snapshot.config);
    let proofs = dpop_proofs(req);
    let dpop = DpopPresented {
        proofs: &proofs,
        path: "/auth/refresh",
        ip: &meta.ip,
    };
    if let Some(token) = &body.refresh_token {
        let issued = flows
            .refresh(
                token,
                body.client_id.as_deref(),
                body.scope.as_deref(),
                &meta,
                &dpop,
            )
            .await
            .map_err(refused)?;
        return Ok(token_response(&issued));
    }
    let client = browser::cookie_client(req, &snapshot, body.client_id.as_deref())?;
    browser::check_origin(req, &client)?;
    let Some(token) = browser::cookie_token(req, &snapshot, &client) else {
        return Err(refused(FlowError::BadRefreshToken));
    };
    match flows
        .refresh_from_cookie(&client, &token, body.scope.as_deref(), &meta, &dpop)
        .await
    {
        Ok(issued) => {
            // Every refresh sets the cookie again, a grace-window replay included (it carries
            // the same successor, so racing tabs end up holding the same token).
            let mut response = HttpResponse::Ok();
            browser::set_refresh_cookie(&mut response, &snapshot, &client, &issued);
            Ok(token_response_from(response, &issued, false))
        }
        Err(e @ FlowError::BadRefreshToken) => {
            // The session is over (or never was): the cookie goes with it.
            let mut response = refused(e).error_response();
            let _ = response.add_cookie(&browser::removal_cookie(&snapshot, &client));
            Ok(response)
        }
        Err(e) => Err(refused(e)),
    }
}

#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 204, description = "The session of the token is ended (also for an unknown token)"),
        (status = 400, description = "`invalid_request`: malformed input; `unauthorized_client`: the token is a confidential client's (it revokes at /oauth/revoke) or travels in a cookie client's cookie, or is not the named client's; nothing is ended", body = crate::error::ErrorBody),
        (status = 403, description = "`invalid_request`: a cookie client's request from an origin it does not allow", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn logout(
    flows: web::Data<Flows>,
    req: HttpRequest,
    OptionalJsonObject(body): OptionalJsonObject<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    if let Some(token) = &body.refresh_token {
        flows
            .logout(token, Channel::Body, body.client_id.as_deref())
            .await
            .map_err(refused)?;
        return Ok(HttpResponse::NoContent().finish());
    }
    let snapshot = flows.snapshot();
    let client = browser::cookie_client(&req, &snapshot, body.client_id.as_deref())?;
    browser::check_origin(&req, &client)?;
    if let Some(token) = browser::cookie_token(&req, &snapshot, &client) {
        flows
            .logout(&token, Channel::Cookie, Some(&client.id))
            .await
            .map_err(refused)?;
    }
    Ok(HttpResponse::NoContent()
        .cookie(browser::removal_cookie(&snapshot, &client))
        .finish())
}

/// `GET /auth/userinfo` (and `POST`, OIDC Core §5.3.1, with the token in the header).
#[utoipa::path(
    get,
    path = "/auth/userinfo",
    tag = "auth",
    security(("bearer" = [])),
    params(("DPoP" = Option<String>, Header, description = "With `Authorization: DPoP <token>` for a DPoP-bound token: a proof for this request, with `ath`")),
    responses(
        (status = 200, description = "Who the access token is for", body = UserInfo),
        (status = 401, description = "`invalid_token`: missing, invalid or revoked access token, or a DPoP-bound token presented as a bearer token; `invalid_dpop_proof`: its proof is missing or does not hold", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn userinfo(flows: web::Data<Flows>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let auth = caller(&flows, &req).await?;
    Ok(userinfo_of(&auth))
}

fn userinfo_of(auth: &crate::flows::Authenticated) -> HttpResponse {
    let user = &auth.user;
    // OIDC Core §5.4: a token granted `openid` sees only what its scopes name.
    let info = if auth.claims.has_scope("openid") {
        let profile = auth.claims.has_scope("profile");
        let email = auth.claims.has_scope("email");
        UserInfo {
            sub: &user.id,
            username: None,
            preferred_username: profile
                .then(|| user.preferred_username.as_deref().unwrap_or(&user.username)),
            email: user.email.as_deref().filter(|_| email),
            email_verified: (email && user.email.is_some()).then_some(user.email_verified),
            name: user.name.as_deref().filter(|_| profile),
        }
    } else {
        UserInfo {
            sub: &user.id,
            username: Some(&user.username),
            preferred_username: user.preferred_username.as_deref(),
            email: user.email.as_deref(),
            email_verified: user.email.is_some().then_some(user.email_verified),
            name: user.name.as_deref(),
        }
    };
    HttpResponse::Ok().json(info)
}

/// `POST /auth/userinfo`: as `GET` (OIDC Core §5.3.1), the token in the `Authorization` header
/// or, as a bearer token, in a form body's `access_token` (RFC 6750 §2.2).
#[utoipa::path(
    post,
    path = "/auth/userinfo",
    tag = "auth",
    security(("bearer" = [])),
    request_body(content = UserInfoForm, content_type = "application/x-www-form-urlencoded", description = "Without an `Authorization` header: the bearer token as `access_token`"),
    responses(
        (status = 200, description = "As for GET", body = UserInfo),
        (status = 400, description = "`invalid_request`: the token both in the header and in the body, or a malformed form", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_token`, as for GET", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn userinfo_post(
    flows: web::Data<Flows>,
    req: HttpRequest,
    form: Option<super::form::Form>,
) -> Result<HttpResponse, ApiError> {
    let body = form.map(|f| UserInfoForm {
        access_token: f.get("access_token").map(str::to_owned),
    });
    let in_body = body.as_ref().and_then(|b| b.access_token.as_deref());
    let in_header = req
        .headers()
        .contains_key(actix_web::http::header::AUTHORIZATION);
    let auth = match in_body {
        // RFC 6750 §2: one way per request.
        Some(_) if in_header => {
            return Err(ApiError::invalid_request(
                "the access token is both in the Authorization header and in the body",
            ));
        }
        Some(token) => {
            super::caller_presenting(&flows, &req, latchkey_verify::Scheme::Bearer, token).await?
        }
        None => caller(&flows, &req).await?,
    };
    Ok(userinfo_of(&auth))
}

/// The form body `POST /auth/userinfo` may carry (RFC 6750 §2.2).
#[derive(utoipa::ToSchema)]
pub struct UserInfoForm {
    access_token: Option<String>,
}
