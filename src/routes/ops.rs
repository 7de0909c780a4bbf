//! Probes for orchestrators (liveness and readiness) and the Prometheus scrape.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::flows::Flows;

/// The process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process serves HTTP", body = crate::routes::openapi::Status))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready only with a reachable store and a key that signs now.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: the store answers and a key signs", body = crate::routes::openapi::Status),
        (status = 503, description = "Not ready, with the reason and `Retry-After`", body = crate::routes::openapi::Status),
    )
)]
pub async fn readyz(flows: web::Data<Flows>) -> HttpResponse {
    match flows.readiness().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(reason) => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({"status": "not_ready", "reason": reason})),
    }
}

/// `GET /metrics`: the Prometheus text exposition (`docs/metrics.md`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4 (`docs/metrics.md`); on the `[metrics] listen` address when that is set", content_type = "text/plain"))
)]
pub async fn metrics(flows: web::Data<Flows>) -> HttpResponse {
    let body = flows
        .metrics()
        .render(&flows.snapshot(), flows.clock().now_ms());
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE))
        .body(body)
}
