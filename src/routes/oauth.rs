//! The OAuth 2.0 surface (`docs/http-api.md`): `/oauth/token` (RFC 6749), `/oauth/revoke`
//! (RFC 7009) and `/oauth/introspect` (RFC 7662). Form bodies, client authentication by
//! `client_secret_basic`, `client_secret_post` or `client_id` alone for public clients, and
//! RFC 6749 §5.2 statuses: 400 for every error but `invalid_client` (401, with a Basic challenge).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::form::{Form, decode};
use super::{dpop_proofs, limited_token_request, request_meta, token_response};
use crate::config::{ClientKind, ClientSpec};
use crate::credentials::Password;
use crate::error::ApiError;
use crate::flows::{
    AuthMethod, ClientCredentials, CodeExchange, DpopPresented, FlowError, Flows, LoginRequest,
};

/// This surface's answer to a flow's refusal: RFC 6749 §5.2 throughout.
fn refused(e: FlowError) -> ApiError {
    ApiError::common(e)
}

fn invalid_client(why: &'static str) -> ApiError {
    refused(FlowError::InvalidClient(why))
}

/// The client as the request identifies it (RFC 6749 §2.3): HTTP Basic with the form-encoded id
/// and secret, or `client_id` (and `client_secret`) in the body, never both.
fn client_of(req: &HttpRequest, form: &Form) -> Result<ClientCredentials, ApiError> {
    let basic = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| invalid_client("malformed Authorization header"))?;
            let encoded = match value.split_once(' ') {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => rest.trim(),
                _ => return Err(invalid_client("clients authenticate with HTTP Basic")),
            };
            let decoded = STANDARD
                .decode(encoded)
                .map_err(|_| invalid_client("malformed Basic credentials"))?;
            let colon = decoded
                .iter()
                .position(|b| *b == b':')
                .ok_or_else(|| invalid_client("malformed Basic credentials"))?;
            let id =
                decode(&decoded[..colon]).map_err(|_| invalid_client("malformed client_id"))?;
            let secret = decode(&decoded[colon + 1..])
                .map_err(|_| invalid_client("malformed client_secret"))?;
            Some((id, secret))
        }
    };
    let body_id = form.get("client_id");
    let body_secret = form.get("client_secret");
    match (basic, body_id, body_secret) {
        (Some(_), _, Some(_)) => Err(invalid_client(
            "one client authentication method per request",
        )),
        (Some((id, _)), Some(other), None) if other != id => Err(invalid_client(
            "client_id differs from the authenticated client",
        )),
        (Some((id, secret)), _, None) if !id.is_empty() => Ok(ClientCredentials {
            id,
            secret: (!secret.is_empty()).then(|| Password::new(secret)),
            method: AuthMethod::Basic,
        }),
        (Some(_), _, None) => Err(invalid_client("empty client_id")),
        (None, Some(id), secret) => Ok(ClientCredentials {
            id: id.to_owned(),
            secret: secret.map(|s| Password::new(s.to_owned())),
            method: if secret.is_some() {
                AuthMethod::Post
            } else {
                AuthMethod::None
            },
        }),
        (None, None, Some(_)) => Err(invalid_client("client_secret without client_id")),
        (None, None, None) => Err(invalid_client("the client must identify itself")),
    }
}

/// `POST /oauth/token`.
#[utoipa::path(
    post,
    path = "/oauth/token",
    tag = "oauth",
    params(("DPoP" = Option<String>, Header, description = "A DPoP proof (RFC 9449, docs/dpop.md): the tokens issued are bound to its key; required for a DPoP-bound session and for clients with `require_dpop`")),
    security((), ("client_basic" = [])),
    request_body(content = crate::routes::openapi::TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Tokens (RFC 6749 §5.1); no refresh token for `client_credentials`", body = super::TokenResponse),
        (status = 400, description = "RFC 6749 §5.2: `invalid_request`, `invalid_grant`, `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`; RFC 9449: `invalid_dpop_proof`, `use_dpop_nonce` (with `DPoP-Nonce`)", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_client`, with `WWW-Authenticate: Basic`", body = crate::error::ErrorBody),
        (status = 429, description = "`slow_down`: throttled; see `Retry-After`", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn token(
    flows: web::Data<Flows>,
    req: HttpRequest,
    form: Form,
) -> Result<HttpResponse, ApiError> {
    limited_token_request(&flows, &req, token_admitted(&flows, &req, form)).await
}

async fn token_admitted(
    flows: &Flows,
    req: &HttpRequest,
    form: Form,
) -> Result<HttpResponse, ApiError> {
    let snapshot = flows.snapshot();
    let meta = request_meta(req, &snapshot.config);
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| ApiError::invalid_request("grant_type is required"))?;
    let credentials = client_of(req, &form)?;
    let client = flows
        .authenticate_client(&snapshot, credentials, &meta.ip)
        .await
        .map_err(refused)?;
    if client.refresh_delivery == crate::config::RefreshDelivery::Cookie {
        // Its refresh tokens never travel in a body: it uses /auth/* from its pages.
        return Err(refused(FlowError::UnauthorizedClient(
            "a cookie client uses /auth/login and /auth/refresh from its allowed origins",
        )));
    }
    let proofs = dpop_proofs(req);
    let dpop = DpopPresented {
        proofs: &proofs,
        path: "/oauth/token",
        ip: &meta.ip,
    };
    let issued = match grant_type {
        "refresh_token" => {
            let token = form
                .get("refresh_token")
                .ok_or_else(|| ApiError::invalid_request("refresh_token is required"))?;
            flows
                .refresh_grant(&snapshot, &client, token, form.get("scope"), &meta, &dpop)
                .await
        }
        "authorization_code" => {
            let code = form
                .get("code")
                .ok_or_else(|| ApiError::invalid_request("code is required"))?;
            flows
                .authorization_code_grant(
                    &snapshot,
                    &client,
                    CodeExchange {
                        code,
                        redirect_uri: form.get("redirect_uri"),
                        code_verifier: form.get("code_verifier"),
                        meta: &meta,
                        dpop: &dpop,
                    },
                )
                .await
        }
        "client_credentials" => {
            flows
                .client_credentials(&snapshot, &client, form.get("scope"), &dpop)
                .await
        }
        "password" => {
            let (Some(username), Some(password)) = (form.get("username"), form.get("password"))
            else {
                return Err(ApiError::invalid_request(
                    "username and password are required",
                ));
            };
            let password = Password::new(password.to_owned());
            flows
                .password_grant(
                    &snapshot,
                    &client,
                    LoginRequest {
                        username,
                        password: &password,
                        client_id: Some(&client.id),
                        scope: form.get("scope"),
                        meta: &meta,
                        dpop,
                    },
                )
                .await
        }
        _ => Err(FlowError::UnsupportedGrantType),
    }
    .map_err(refused)?;
    Ok(token_response(&issued))
}

/// What revocation and introspection both start with (RFC 7009 §2.1, RFC 7662 §2.1): the
/// authenticated client and its required `token` parameter.
async fn authenticated_token_request<'f>(
    flows: &Flows,
    req: &HttpRequest,
    form: &'f Form,
) -> Result<(ClientSpec, &'f str), ApiError> {
    let snapshot = flows.snapshot();
    let meta = request_meta(req, &snapshot.config);
    let credentials = client_of(req, form)?;
    let token = form
        .get("token")
        .ok_or_else(|| ApiError::invalid_request("token is required"))?;
    let client = flows
        .authenticate_client(&snapshot, credentials, &meta.ip)
        .await
        .map_err(refused)?;
    Ok((client, token))
}

/// `POST /oauth/revoke`: 200 for an authenticated client, whatever the token was.
#[utoipa::path(
    post,
    path = "/oauth/revoke",
    tag = "oauth",
    security((), ("client_basic" = [])),
    request_body(content = crate::routes::openapi::TokenRequestWithToken, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked if it was the client's (the answer is the same for any token, RFC 7009 §2.2)"),
        (status = 400, description = "`invalid_request`: malformed input", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_client`", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn revoke(
    flows: web::Data<Flows>,
    req: HttpRequest,
    form: Form,
) -> Result<HttpResponse, ApiError> {
    let (client, token) = authenticated_token_request(&flows, &req, &form).await?;
    flows
        .revoke(&client, token, form.get("token_type_hint"))
        .await
        .map_err(refused)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::PRAGMA, "no-cache"))
        .finish())
}

/// `POST /oauth/introspect`, for confidential clients.
#[utoipa::path(
    post,
    path = "/oauth/introspect",
    tag = "oauth",
    security(("client_basic" = [])),
    request_body(content = crate::routes::openapi::TokenRequestWithToken, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "RFC 7662 §2.2", body = crate::routes::openapi::Introspection),
        (status = 400, description = "`invalid_request`: malformed input; `unauthorized_client`: the client is not allowed to introspect (`introspect = true`)", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_client` (confidential clients only)", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store or the hashing queue is busy; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn introspect(
    flows: web::Data<Flows>,
    req: HttpRequest,
    form: Form,
) -> Result<HttpResponse, ApiError> {
    let (client, token) = authenticated_token_request(&flows, &req, &form).await?;
    if client.kind != ClientKind::Confidential {
        return Err(invalid_client("introspection is for confidential clients"));
    }
    if !client.introspect {
        return Err(refused(FlowError::UnauthorizedClient(
            "this client may not introspect tokens (introspect = true in its [[clients]] entry)",
        )));
    }
    let answer = flows
        .introspect(token, form.get("token_type_hint"))
        .await
        .map_err(refused)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::PRAGMA, "no-cache"))
        .json(answer))
}
