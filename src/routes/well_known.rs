//! Discovery: the JWKS (RFC 7517) and the authorization-server metadata (RFC 8414).

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::config::{ClientKind, GrantType};
use crate::flows::Flows;

#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "discovery",
    responses(
        (status = 200, description = "The public signing keys, with `ETag` and `Cache-Control`", body = crate::routes::openapi::Jwks),
        (status = 304, description = "Not modified (`If-None-Match`)"),
    )
)]
pub async fn jwks(flows: web::Data<Flows>, req: HttpRequest) -> HttpResponse {
    let snapshot = flows.snapshot();
    let doc = snapshot.keys.jwks(flows.clock().now_ms());
    let jwks = &snapshot.config.jwks;
    let cache_control = format!(
        "public, max-age={}, stale-if-error={}",
        jwks.max_age.as_secs(),
        jwks.stale_if_error.as_secs()
    );
    let not_modified = none_match(&req, &doc.etag);
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CACHE_CONTROL, cache_control))
        .insert_header((header::ETAG, doc.etag.clone()));
    if not_modified {
        return response.finish();
    }
    response
        .content_type("application/json")
        .body(doc.body.clone())
}

/// `If-None-Match` holds `*` or our ETag, compared weakly (RFC 9110 §13.1.2).
fn none_match(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// RFC 8414 metadata, listing only what this issuer serves and its clients use.
#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    tag = "discovery",
    responses((status = 200, description = "RFC 8414 metadata", body = crate::routes::openapi::Metadata))
)]
pub async fn metadata(flows: web::Data<Flows>) -> HttpResponse {
    let snapshot = flows.snapshot();
    let body = snapshot
        .discovery
        .get_or_init(|| metadata_document(&snapshot.config));
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .content_type("application/json")
        .body(body.clone())
}

fn metadata_document(config: &crate::config::Config) -> web::Bytes {
    let base = &config.issuer;
    let mut algs: Vec<&str> = config
        .keys
        .iter()
        .filter(|k| !k.revoked)
        .map(|k| k.alg.as_str())
        .collect();
    algs.sort_unstable();
    algs.dedup();
    let grants: Vec<&str> = GrantType::ALL
        .into_iter()
        .filter(|g| config.clients.iter().any(|c| c.may(*g)))
        .map(GrantType::as_str)
        .collect();
    let mut auth_methods = Vec::new();
    if config
        .clients
        .iter()
        .any(|c| c.kind == ClientKind::Confidential)
    {
        auth_methods.extend(["client_secret_basic", "client_secret_post"]);
    }
    if config.clients.iter().any(|c| c.kind == ClientKind::Public) {
        auth_methods.push("none");
    }
    let mut scopes: Vec<&str> = config
        .clients
        .iter()
        .flat_map(|c| c.scopes.iter().flatten())
        .map(String::as_str)
        // ID tokens come by redirect only: `openid` means something once a client signs in so.
        .chain(
            config
                .clients
                .iter()
                .any(|c| c.may(GrantType::AuthorizationCode))
                .then_some("openid"),
        )
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    // What ID tokens can be signed with: the algorithms of keys that sign them.
    let mut id_token_algs: Vec<&str> = config
        .keys
        .iter()
        .filter(|k| !k.revoked && k.signs_id_tokens)
        .map(|k| k.alg.as_str())
        .collect();
    id_token_algs.sort_unstable();
    id_token_algs.dedup();
    let document = json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/oauth/authorize"),
            "end_session_endpoint": format!("{base}/oauth/logout"),
            // Back-Channel Logout 1.0 §2.1: logout tokens always carry `sid`.
            "backchannel_logout_supported": true,
            "backchannel_logout_session_supported": true,
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "token_endpoint": format!("{base}/oauth/token"),
            "revocation_endpoint": format!("{base}/oauth/revoke"),
            "introspection_endpoint": format!("{base}/oauth/introspect"),
            "userinfo_endpoint": format!("{base}/auth/userinfo"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            // RFC 7636: plain is refused.
            "code_challenge_methods_supported": ["S256"],
            // RFC 9207: every authorization response carries `iss`.
            "authorization_response_iss_parameter_supported": true,
            "prompt_values_supported": ["none", "login", "consent", "select_account"],
            "grant_types_supported": grants,
            "token_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "introspection_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post"],
            "scopes_supported": scopes,
            // OIDC Discovery §3.
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": id_token_algs,
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce",
                "at_hash", "azp", "amr", "sid", "username", "preferred_username", "name",
                "email", "email_verified"],
            "access_token_signing_alg_values_supported": algs,
            // RFC 9449 §5.1.
            "dpop_signing_alg_values_supported": latchkey_verify::dpop::SIGNING_ALGS,
    });
    web::Bytes::from(document.to_string())
}

/// The same metadata where OpenID Connect clients look for it.
#[utoipa::path(
    get,
    path = "/.well-known/openid-configuration",
    tag = "discovery",
    responses((status = 200, description = "RFC 8414 metadata", body = crate::routes::openapi::Metadata))
)]
pub async fn openid_configuration(flows: web::Data<Flows>) -> HttpResponse {
    metadata(flows).await
}
