//! Probes for orchestrators (liveness and readiness) and the Prometheus scrape.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::flows::Flows;

/// The process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready only with a reachable store and a key that signs now.
pub async fn readyz(flows: web::Data<Flows>) -> HttpResponse {
    match flows.readiness().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(reason) => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({"status": "not_ready", "reason": reason})),
    }
}

/// `GET /metrics`: the Prometheus text exposition (`docs/metrics.md`).
pub async fn metrics(flows: web::Data<Flows>) -> HttpResponse {
    let body = flows
        .metrics()
        .render(&flows.snapshot(), flows.clock().now_ms());
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE))
        .body(body)
}
