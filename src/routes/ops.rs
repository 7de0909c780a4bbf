//! Probes for orchestrators: liveness and readiness.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::issuer::Issuer;

/// The process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready only with a reachable store and a key that signs now.
pub async fn readyz(issuer: web::Data<Issuer>) -> HttpResponse {
    let reason = if let Err(e) = issuer.store.ping().await {
        tracing::warn!(error = %crate::error::error_chain(&e), "readiness: store unreachable");
        Some("store unreachable")
    } else if issuer
        .live
        .current()
        .keys
        .active(issuer.clock.now_ms())
        .is_none()
    {
        Some("no active signing key")
    } else {
        None
    };
    match reason {
        None => HttpResponse::Ok().json(json!({"status": "ready"})),
        Some(reason) => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({"status": "not_ready", "reason": reason})),
    }
}
