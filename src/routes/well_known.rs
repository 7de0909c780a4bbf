//! Discovery: the JWKS (RFC 7517) and the authorization-server metadata (RFC 8414).

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::flows::Flows;

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

/// RFC 8414 metadata, listing only what this issuer serves.
pub async fn metadata(flows: web::Data<Flows>) -> HttpResponse {
    let snapshot = flows.snapshot();
    let base = &snapshot.config.issuer;
    let mut algs: Vec<&str> = snapshot
        .config
        .keys
        .iter()
        .filter(|k| !k.revoked)
        .map(|k| k.alg.as_str())
        .collect();
    algs.sort_unstable();
    algs.dedup();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(json!({
            "issuer": base,
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "userinfo_endpoint": format!("{base}/auth/userinfo"),
            // No authorization endpoint: the first-party API logs users in directly.
            "response_types_supported": [],
            "access_token_signing_alg_values_supported": algs,
        }))
}
