//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API, generated from the handlers'
//! annotations and the request and response types (utoipa), so it follows the code. The types
//! here describe answers the handlers build field by field (discovery, introspection, the
//! probes) and the form bodies of the OAuth endpoints.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use actix_web::http::header;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{account, auth, authorize, demo, end_session, oauth, ops, ssf, well_known};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "latchkey",
        description = "A token issuer: short-lived JWT access tokens, rotating refresh tokens, \
                       published signing keys. Errors are RFC 6749 JSON bodies \
                       (`{\"error\", \"error_description\"}`); every 401 carries \
                       `WWW-Authenticate`, every 429 and 503 `Retry-After`. Every GET endpoint \
                       answers HEAD alike, without the body.",
        license(name = "Apache-2.0")
    ),
    paths(
        auth::login,
        auth::refresh,
        auth::logout,
        auth::userinfo,
        auth::userinfo_post,
        account::list,
        account::end,
        account::logout_all,
        account::change_password,
        account::profile,
        account::update_profile,
        account::register,
        account::grants,
        account::withdraw_grant,
        authorize::authorize_get,
        authorize::authorize_post,
        authorize::login_form,
        authorize::consent_form,
        authorize::stylesheet,
        end_session::end_session_get,
        end_session::end_session_post,
        end_session::end_session_confirm,
        oauth::token,
        oauth::revoke,
        oauth::introspect,
        well_known::jwks,
        well_known::metadata,
        well_known::openid_configuration,
        ssf::configuration,
        ssf::create,
        ssf::read,
        ssf::update,
        ssf::replace,
        ssf::delete,
        ssf::status,
        ssf::set_status,
        ssf::verify,
        ssf::poll,
        document,
        demo::client_module,
        demo::page,
        demo::script,
        demo::style,
        demo::settings,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    components(schemas(
        crate::error::ErrorBody,
        super::TokenResponse,
        TokenRequest,
        TokenRequestWithToken,
        Introspection,
        Metadata,
        Jwks,
        Status,
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "The first-party JSON API: log in, refresh, log out"),
        (name = "account", description = "A signed-in user's sessions and password"),
        (name = "oauth", description = "RFC 6749 token endpoint, RFC 7009 revocation, RFC 7662 introspection"),
        (name = "discovery", description = "Public keys and metadata"),
        (name = "feed", description = "The revocation feed: a Shared Signals (SSF 1.0) transmitter with RFC 8936 poll delivery"),
        (name = "operations", description = "Probes and metrics"),
        (name = "demo", description = "The demo SPA and its JavaScript client (off by default)"),
    )
)]
struct ApiDoc;

/// Bearer access tokens for the account API; HTTP Basic client authentication (RFC 6749
/// §2.3.1) for the OAuth endpoints.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The document, rendered once.
pub fn json() -> &'static str {
    static DOCUMENT: LazyLock<String> =
        LazyLock::new(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default());
    &DOCUMENT
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "discovery",
    responses((status = 200, description = "This document", content_type = "application/json"))
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .content_type("application/json")
        .body(json())
}

/// `POST /oauth/token`, form-encoded (RFC 6749 §4.3, §4.4, §6). Client credentials go in HTTP
/// Basic, or as `client_id`/`client_secret` here; a public client gives only `client_id`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenRequest {
    /// `authorization_code`, `refresh_token`, `client_credentials` or `password`.
    grant_type: String,
    /// For `authorization_code`: the code from the redirect.
    code: Option<String>,
    /// For `authorization_code`: the redirect URI of the authorization request, when it named one.
    redirect_uri: Option<String>,
    /// For `authorization_code`: the PKCE verifier (RFC 7636).
    code_verifier: Option<String>,
    /// For `refresh_token`.
    refresh_token: Option<String>,
    /// For `password`.
    username: Option<String>,
    /// For `password`.
    password: Option<String>,
    /// Space-separated; narrows what is granted.
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// `POST /oauth/revoke` and `/oauth/introspect`, form-encoded (RFC 7009 §2.1, RFC 7662 §2.1).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenRequestWithToken {
    token: String,
    /// `access_token` or `refresh_token`: orders the lookups, trusted for nothing.
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// RFC 7662 §2.2. An inactive token is `{"active": false}` and nothing else.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Introspection {
    active: bool,
    scope: Option<String>,
    client_id: Option<String>,
    username: Option<String>,
    /// `Bearer` or `refresh_token`.
    token_type: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    sub: Option<String>,
    aud: Option<Vec<String>>,
    iss: Option<String>,
    jti: Option<String>,
    /// The session (refresh-token family).
    sid: Option<String>,
}

/// RFC 8414 authorization-server metadata, as served.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    jwks_uri: String,
    token_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    userinfo_endpoint: String,
    /// `["code"]`.
    response_types_supported: Vec<String>,
    response_modes_supported: Vec<String>,
    /// `["S256"]`.
    code_challenge_methods_supported: Vec<String>,
    authorization_response_iss_parameter_supported: bool,
    prompt_values_supported: Vec<String>,
    /// `["public"]` (OIDC Discovery §3).
    subject_types_supported: Vec<String>,
    /// The algorithms of the keys that sign ID tokens.
    id_token_signing_alg_values_supported: Vec<String>,
    claims_supported: Vec<String>,
    /// RP-Initiated Logout 1.0.
    end_session_endpoint: String,
    grant_types_supported: Vec<String>,
    token_endpoint_auth_methods_supported: Vec<String>,
    revocation_endpoint_auth_methods_supported: Vec<String>,
    introspection_endpoint_auth_methods_supported: Vec<String>,
    scopes_supported: Vec<String>,
    access_token_signing_alg_values_supported: Vec<String>,
    dpop_signing_alg_values_supported: Vec<String>,
}

/// RFC 7517 key set: the public keys that sign, will sign, or signed tokens still alive.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Jwks {
    /// Public JWKs (`kty`, `kid`, `alg`, `use`, and `crv`/`x`/`y` or `n`/`e`).
    keys: Vec<serde_json::Value>,
}

/// A probe's answer.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Status {
    /// `ok`, `ready` or `not_ready`.
    status: String,
    /// Why not ready: `store unreachable`, `no active signing key`, `shutting down`.
    reason: Option<String>,
}
