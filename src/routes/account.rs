//! The first-party account API (`docs/http-api.md`): a signed-in user's sessions and password,
//! and optional self-registration. Bearer-authenticated like `/auth/userinfo`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::json::JsonObject;
use super::{account_caller, request_meta};
use crate::config::format_timestamp;
use crate::credentials::Password;
use crate::error::ApiError;
use crate::flows::{FlowError, Flows};

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PasswordBody {
    #[schema(value_type = String)]
    current_password: Password,
    #[schema(value_type = String)]
    new_password: Password,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RegisterBody {
    username: String,
    #[schema(value_type = String)]
    password: Password,
}

/// What a user may change of their own profile. The email becomes unverified when it changes;
/// `email_verified` and `preferred_username` are set by operators only (`latchkey users set`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileBody {
    /// The display name; `""` clears it.
    name: Option<String>,
    /// `""` clears it.
    email: Option<String>,
}

/// A user's own profile, whatever the token's scopes.
#[derive(Serialize, utoipa::ToSchema)]
struct ProfileView<'a> {
    sub: &'a str,
    username: &'a str,
    preferred_username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    email_verified: bool,
}

impl<'a> ProfileView<'a> {
    fn of(user: &'a crate::store::User) -> ProfileView<'a> {
        ProfileView {
            sub: &user.id,
            username: &user.username,
            preferred_username: user.preferred_username.as_deref().unwrap_or(&user.username),
            name: user.name.as_deref(),
            email: user.email.as_deref(),
            email_verified: user.email_verified,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct SessionView<'a> {
    sid: String,
    client_id: &'a str,
    created_at: String,
    last_used_at: String,
    expires_at: String,
    /// Of the last refresh.
    user_agent: &'a str,
    ip: &'a str,
    login_user_agent: &'a str,
    login_ip: &'a str,
    current: bool,
}

/// This surface's answer to a flow's refusal (as `/auth/*`).
fn refused(e: FlowError) -> ApiError {
    match e {
        FlowError::BadCredentials | FlowError::BadRefreshToken => {
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid_grant", e.to_string())
        }
        other => ApiError::common(other),
    }
}

/// `GET /auth/sessions`: the caller's live sessions, newest first.
#[utoipa::path(
    get,
    path = "/auth/sessions",
    tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's live sessions, newest first", body = Vec<SessionView>),
        (status = 401, description = "`invalid_token`: missing, invalid or revoked access token, or a DPoP-bound token presented as a bearer token; `invalid_dpop_proof`: its proof is missing or does not hold", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token does not carry the `account` scope", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn list(flows: web::Data<Flows>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let auth = account_caller(&flows, &req).await?;
    let sessions = flows.sessions(&auth).await.map_err(refused)?;
    let views: Vec<SessionView> = sessions
        .iter()
        .map(|own| {
            let s = &own.session;
            SessionView {
                sid: s.id.to_string(),
                client_id: &s.client_id,
                created_at: format_timestamp(s.created_at),
                last_used_at: format_timestamp(s.last_used_at),
                expires_at: format_timestamp(s.expires_at),
                user_agent: &s.user_agent,
                ip: &s.ip,
                login_user_agent: &s.login_user_agent,
                login_ip: &s.login_ip,
                current: own.current,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// `DELETE /auth/sessions/{sid}`: 204, or 404 for anything but one of the caller's sessions.
#[utoipa::path(
    delete,
    path = "/auth/sessions/{sid}",
    tag = "account",
    security(("bearer" = [])),
    params(("sid" = String, Path, description = "A session id from `GET /auth/sessions`")),
    responses(
        (status = 204, description = "The session is ended"),
        (status = 401, description = "`invalid_token`: missing, invalid or revoked access token, or a DPoP-bound token presented as a bearer token; `invalid_dpop_proof`: its proof is missing or does not hold", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token does not carry the `account` scope", body = crate::error::ErrorBody),
        (status = 404, description = "No such session of the caller's (also for a malformed or another user's id)", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn end(
    flows: web::Data<Flows>,
    req: HttpRequest,
    sid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let auth = account_caller(&flows, &req).await?;
    flows.end_session(&auth, &sid).await.map_err(refused)?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, utoipa::ToSchema)]
struct GrantView<'a> {
    client_id: &'a str,
    /// The client's `name`, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_name: Option<&'a str>,
    /// The scopes allowed, space-separated.
    scope: &'a str,
    granted_at: String,
}

/// `GET /auth/grants`: the clients the caller allowed on the consent page.
#[utoipa::path(
    get,
    path = "/auth/grants",
    tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's consents, by client id", body = Vec<GrantView>),
        (status = 401, description = "`invalid_token`: missing, invalid or revoked access token, or a DPoP-bound token presented as a bearer token; `invalid_dpop_proof`: its proof is missing or does not hold", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token does not carry the `account` scope", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn grants(flows: web::Data<Flows>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let auth = account_caller(&flows, &req).await?;
    let grants = flows.grants(&auth.user.id).await.map_err(refused)?;
    let snapshot = flows.snapshot();
    let views: Vec<GrantView> = grants
        .iter()
        .map(|g| GrantView {
            client_id: &g.client_id,
            client_name: snapshot
                .config
                .client(&g.client_id)
                .and_then(|c| c.name.as_deref()),
            scope: &g.scope,
            granted_at: format_timestamp(g.granted_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// `DELETE /auth/grants/{client_id}`: the client's next authorization request asks again.
#[utoipa::path(
    delete,
    path = "/auth/grants/{client_id}",
    tag = "account",
    security(("bearer" = [])),
    params(("client_id" = String, Path, description = "A client id from `GET /auth/grants`")),
    responses(
        (status = 204, description = "The consent is withdrawn (sessions already granted stay; end them under /auth/sessions)"),
        (status = 401, description = "`invalid_token`: missing, invalid or revoked access token, or a DPoP-bound token presented as a bearer token; `invalid_dpop_proof`: its proof is missing or does not hold", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token does not carry the `account` scope", body = crate::error::ErrorBody),
        (status = 404, description = "The caller has no consent for that client", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn withdraw_grant(
    flows: web::Data<Flows>,
    req: HttpRequest,
    client_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let auth = account_caller(&flows, &req).await?;
    if flows
        .withdraw_grant(&auth.user.id, &client_id)
        .await
        .map_err(refused)?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(refused(FlowError::NotFound("no consent for that client")))
    }
}

/// `POST /auth/logout-all`: every session of the caller ends, this one included.
#[utoipa::path(
    post,
    path = "/auth/logout-all",
    tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session of the caller is ended, the current one included"),
        (status = 401, description = "`invalid_token`: missing, invalid or revoked access token, or a DPoP-bound token presented as a bearer token; `invalid_dpop_proof`: its proof is missing or does not hold", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token does not carry the `account` scope", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn logout_all(
    flows: web::Data<Flows>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let auth = account_caller(&flows, &req).await?;
    flows.logout_everywhere(&auth).await.map_err(refused)?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /auth/password`: 204, and every session of the caller ends.
#[utoipa::path(
    post,
    path = "/auth/password",
    tag = "account",
    security(("bearer" = [])),
    request_body = PasswordBody,
    responses(
        (status = 204, description = "Changed; every session of the user is ended"),
        (status = 400, description = "`invalid_request` (policy) or `invalid_grant` (wrong current password)", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_token`: missing, invalid or revoked access token, or a DPoP-bound token presented as a bearer token; `invalid_dpop_proof`: its proof is missing or does not hold", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token does not carry the `account` scope", body = crate::error::ErrorBody),
        (status = 429, description = "`slow_down`: throttled; see `Retry-After`", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn change_password(
    flows: web::Data<Flows>,
    req: HttpRequest,
    // The body is judged only after the token: a request without one answers 401, whatever
    // its body.
    body: Result<JsonObject<PasswordBody>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let auth = account_caller(&flows, &req).await?;
    let JsonObject(body) = body?;
    let meta = request_meta(&req, &flows.snapshot().config);
    flows
        .change_password(&auth, &body.current_password, &body.new_password, &meta)
        .await
        .map_err(refused)?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /auth/profile`: the caller's profile claims.
#[utoipa::path(
    get,
    path = "/auth/profile",
    tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = ProfileView),
        (status = 401, description = "`invalid_token`: missing, invalid or revoked access token, or a DPoP-bound token presented as a bearer token; `invalid_dpop_proof`: its proof is missing or does not hold", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token does not carry the `account` scope", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn profile(flows: web::Data<Flows>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let auth = account_caller(&flows, &req).await?;
    Ok(HttpResponse::Ok().json(ProfileView::of(&auth.user)))
}

/// `PATCH /auth/profile`: changes the caller's display name or email; 200 with the profile.
#[utoipa::path(
    patch,
    path = "/auth/profile",
    tag = "account",
    security(("bearer" = [])),
    request_body = ProfileBody,
    responses(
        (status = 200, description = "The changed profile; a changed email is unverified", body = ProfileView),
        (status = 400, description = "`invalid_request`: malformed input, an unknown field (`email_verified` and `preferred_username` are set by operators), or a value over 256 characters or on several lines", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_token`: missing, invalid or revoked access token, or a DPoP-bound token presented as a bearer token; `invalid_dpop_proof`: its proof is missing or does not hold", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token does not carry the `account` scope", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn update_profile(
    flows: web::Data<Flows>,
    req: HttpRequest,
    // Judged after the token, as for the password.
    body: Result<JsonObject<ProfileBody>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let auth = account_caller(&flows, &req).await?;
    let JsonObject(body) = body?;
    let change = crate::flows::ProfileChange {
        email: body.email.as_deref(),
        name: body.name.as_deref(),
        ..Default::default()
    };
    let user = flows
        .accounts()
        .set_profile(&auth.user.username, change)
        .await
        .map_err(refused)?;
    Ok(HttpResponse::Ok().json(ProfileView::of(&user)))
}

/// `POST /auth/register` (when `users.allow_registration` is on): 201 `{"sub","username"}`.
#[utoipa::path(
    post,
    path = "/auth/register",
    tag = "account",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "Registered: `{\"sub\", \"username\"}`"),
        (status = 400, description = "`invalid_request`: malformed input", body = crate::error::ErrorBody),
        (status = 404, description = "Registration is off (`users.allow_registration`)", body = crate::error::ErrorBody),
        (status = 409, description = "The username is taken", body = crate::error::ErrorBody),
        (status = 429, description = "`slow_down`: throttled; see `Retry-After`", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn register(
    flows: web::Data<Flows>,
    req: HttpRequest,
    JsonObject(body): JsonObject<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let meta = request_meta(&req, &flows.snapshot().config);
    let user = flows
        .register(&body.username, &body.password, &meta)
        .await
        .map_err(|e| match e {
            FlowError::UserExists(_) | FlowError::UserLooksAlike(_) => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_request",
                "this username, or one that looks the same, is taken",
            ),
            other => refused(other),
        })?;
    Ok(HttpResponse::Created().json(serde_json::json!({
        "sub": user.id,
        "username": user.username,
    })))
}
