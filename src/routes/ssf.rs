//! The revocation feed's HTTP surface (`docs/revocation-feed.md`): the Shared Signals
//! transmitter metadata, stream management, and poll delivery (RFC 8936).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::access_token;
use super::json::{JsonObject, OptionalJsonObject};
use crate::error::ApiError;
use crate::flows::feed::{
    self, PollRequest, Receiver, SCOPE_MANAGE, SCOPE_READ, StreamRequest, StreamStatus,
};
use crate::flows::{FlowError, Flows};
use latchkey_verify::Scheme;

/// The receiver behind the request's bearer token, holding `scope`.
async fn receiver(
    flows: &Flows,
    req: &HttpRequest,
    scope: &'static str,
) -> Result<Receiver, ApiError> {
    let (scheme, token) = access_token(req)?;
    if scheme != Scheme::Bearer {
        return Err(ApiError::invalid_token(
            "the feed takes bearer tokens (Authorization: Bearer <token>)",
        ));
    }
    flows
        .feed_receiver(token, scope)
        .await
        .map_err(ApiError::common)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    #[serde(default)]
    stream_id: Option<String>,
}

/// The `stream_id` a query must name.
fn required(query: &StreamQuery) -> Result<&str, ApiError> {
    query
        .stream_id
        .as_deref()
        .ok_or_else(|| ApiError::invalid_request("stream_id is required"))
}

fn query(req: &HttpRequest) -> Result<StreamQuery, ApiError> {
    web::Query::<StreamQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| ApiError::invalid_request("the only query parameter is stream_id"))
}

/// `GET /.well-known/ssf-configuration`: the transmitter's metadata (SSF 1.0 §7.1).
#[utoipa::path(
    get,
    path = "/.well-known/ssf-configuration",
    tag = "feed",
    responses(
        (status = 200, description = "The Shared Signals transmitter metadata (SSF 1.0 §7.1)", body = Object),
    )
)]
pub async fn configuration(flows: web::Data<Flows>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=3600"))
        .json(feed::configuration(&flows.snapshot()))
}

/// `POST /ssf/stream`: creates a stream (201).
#[utoipa::path(
    post,
    path = "/ssf/stream",
    tag = "feed",
    security(("bearer" = [])),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 201, description = "The stream created, with its poll endpoint", body = Object),
        (status = 400, description = "`invalid_request`: a malformed body or value", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_token`: missing or invalid token, a user's token, or a DPoP-bound one", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token or its client lacks the scope", body = crate::error::ErrorBody),
        (status = 409, description = "The receiver holds as many streams as it may", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store did not answer; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn create(
    flows: web::Data<Flows>,
    req: HttpRequest,
    body: Result<OptionalJsonObject<StreamRequest>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let receiver = receiver(&flows, &req, SCOPE_MANAGE).await?;
    let OptionalJsonObject(body) = body?;
    let view = flows
        .create_stream(&receiver, body)
        .await
        .map_err(ApiError::common)?;
    Ok(HttpResponse::Created().json(view))
}

/// `GET /ssf/stream[?stream_id=]`: one stream, or the receiver's streams.
#[utoipa::path(
    get,
    path = "/ssf/stream",
    tag = "feed",
    security(("bearer" = [])),
    params(("stream_id" = Option<String>, Query, description = "The stream; without it, every stream of the receiver")),
    responses(
        (status = 200, description = "The stream, or an array of the receiver's streams", body = Object),
        (status = 400, description = "`invalid_request`: a malformed body or value", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_token`: missing or invalid token, a user's token, or a DPoP-bound one", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token or its client lacks the scope", body = crate::error::ErrorBody),
        (status = 404, description = "No stream of this receiver by that id", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store did not answer; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn read(flows: web::Data<Flows>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let receiver = receiver(&flows, &req, SCOPE_MANAGE).await?;
    let query = query(&req)?;
    let view = flows
        .read_streams(&receiver, query.stream_id.as_deref())
        .await
        .map_err(ApiError::common)?;
    Ok(HttpResponse::Ok().json(view))
}

/// `PATCH /ssf/stream`: changes the properties given.
#[utoipa::path(
    patch,
    path = "/ssf/stream",
    tag = "feed",
    security(("bearer" = [])),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "The stream as it now is", body = Object),
        (status = 400, description = "`invalid_request`: a malformed body or value", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_token`: missing or invalid token, a user's token, or a DPoP-bound one", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token or its client lacks the scope", body = crate::error::ErrorBody),
        (status = 404, description = "No stream of this receiver by that id", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store did not answer; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn update(
    flows: web::Data<Flows>,
    req: HttpRequest,
    body: Result<JsonObject<StreamRequest>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    change(flows, req, body, false).await
}

/// `PUT /ssf/stream`: replaces the receiver-supplied properties.
#[utoipa::path(
    put,
    path = "/ssf/stream",
    tag = "feed",
    security(("bearer" = [])),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "The stream as it now is", body = Object),
        (status = 400, description = "`invalid_request`: a malformed body or value", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_token`: missing or invalid token, a user's token, or a DPoP-bound one", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token or its client lacks the scope", body = crate::error::ErrorBody),
        (status = 404, description = "No stream of this receiver by that id", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store did not answer; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn replace(
    flows: web::Data<Flows>,
    req: HttpRequest,
    body: Result<JsonObject<StreamRequest>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    change(flows, req, body, true).await
}

async fn change(
    flows: web::Data<Flows>,
    req: HttpRequest,
    body: Result<JsonObject<StreamRequest>, ApiError>,
    replace: bool,
) -> Result<HttpResponse, ApiError> {
    let receiver = receiver(&flows, &req, SCOPE_MANAGE).await?;
    let JsonObject(body) = body?;
    let view = flows
        .update_stream(&receiver, body, replace)
        .await
        .map_err(ApiError::common)?;
    Ok(HttpResponse::Ok().json(view))
}

/// `DELETE /ssf/stream?stream_id=`: 204.
#[utoipa::path(
    delete,
    path = "/ssf/stream",
    tag = "feed",
    security(("bearer" = [])),
    params(("stream_id" = String, Query, description = "The stream")),
    responses(
        (status = 204, description = "The stream is gone"),
        (status = 400, description = "`invalid_request`: a malformed body or value", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_token`: missing or invalid token, a user's token, or a DPoP-bound one", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token or its client lacks the scope", body = crate::error::ErrorBody),
        (status = 404, description = "No stream of this receiver by that id", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store did not answer; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn delete(flows: web::Data<Flows>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let receiver = receiver(&flows, &req, SCOPE_MANAGE).await?;
    let query = query(&req)?;
    flows
        .delete_stream(&receiver, required(&query)?)
        .await
        .map_err(ApiError::common)?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /ssf/status?stream_id=`.
#[utoipa::path(
    get,
    path = "/ssf/status",
    tag = "feed",
    security(("bearer" = [])),
    params(("stream_id" = String, Query, description = "The stream")),
    responses(
        (status = 200, description = "`{stream_id, status[, reason]}`", body = Object),
        (status = 400, description = "`invalid_request`: a malformed body or value", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_token`: missing or invalid token, a user's token, or a DPoP-bound one", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token or its client lacks the scope", body = crate::error::ErrorBody),
        (status = 404, description = "No stream of this receiver by that id", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store did not answer; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn status(flows: web::Data<Flows>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let receiver = receiver(&flows, &req, SCOPE_MANAGE).await?;
    let query = query(&req)?;
    let view = flows
        .stream_status(&receiver, required(&query)?)
        .await
        .map_err(ApiError::common)?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    stream_id: String,
    status: StreamStatus,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /ssf/status`: enables, pauses or disables a stream.
#[utoipa::path(
    post,
    path = "/ssf/status",
    tag = "feed",
    security(("bearer" = [])),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "`{stream_id, status[, reason]}`", body = Object),
        (status = 400, description = "`invalid_request`: a malformed body or value", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_token`: missing or invalid token, a user's token, or a DPoP-bound one", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token or its client lacks the scope", body = crate::error::ErrorBody),
        (status = 404, description = "No stream of this receiver by that id", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store did not answer; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn set_status(
    flows: web::Data<Flows>,
    req: HttpRequest,
    body: Result<JsonObject<StatusBody>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let receiver = receiver(&flows, &req, SCOPE_MANAGE).await?;
    let JsonObject(body) = body?;
    let view = flows
        .set_stream_status(&receiver, &body.stream_id, body.status, body.reason)
        .await
        .map_err(ApiError::common)?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    stream_id: String,
    #[serde(default)]
    state: Option<String>,
}

/// `POST /ssf/verify`: queues a verification event (204).
#[utoipa::path(
    post,
    path = "/ssf/verify",
    tag = "feed",
    security(("bearer" = [])),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 204, description = "A verification event is queued for the next poll"),
        (status = 400, description = "`invalid_request`: a malformed body or value", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_token`: missing or invalid token, a user's token, or a DPoP-bound one", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token or its client lacks the scope", body = crate::error::ErrorBody),
        (status = 404, description = "No stream of this receiver by that id", body = crate::error::ErrorBody),
        (status = 429, description = "Too many verification events are waiting", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store did not answer; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn verify(
    flows: web::Data<Flows>,
    req: HttpRequest,
    body: Result<JsonObject<VerifyBody>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let receiver = receiver(&flows, &req, SCOPE_MANAGE).await?;
    let JsonObject(body) = body?;
    flows
        .verify_stream(&receiver, &body.stream_id, body.state)
        .await
        .map_err(ApiError::common)?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /ssf/poll/{stream_id}`: RFC 8936 poll delivery, held while nothing is due.
#[utoipa::path(
    post,
    path = "/ssf/poll/{stream_id}",
    tag = "feed",
    security(("bearer" = [])),
    params(("stream_id" = String, Path, description = "The stream")),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "RFC 8936 `{sets, moreAvailable}`: SETs keyed by `jti`; held up to 20 s while nothing is due", body = Object),
        (status = 400, description = "`invalid_request`: a malformed body or value", body = crate::error::ErrorBody),
        (status = 401, description = "`invalid_token`: missing or invalid token, a user's token, or a DPoP-bound one", body = crate::error::ErrorBody),
        (status = 403, description = "`insufficient_scope`: the token or its client lacks the scope", body = crate::error::ErrorBody),
        (status = 404, description = "No stream of this receiver by that id", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
        (status = 503, description = "`temporarily_unavailable`: the store did not answer; see `Retry-After`", body = crate::error::ErrorBody),
    )
)]
pub async fn poll(
    flows: web::Data<Flows>,
    req: HttpRequest,
    path: web::Path<String>,
    body: Result<OptionalJsonObject<PollRequest>, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let receiver = receiver(&flows, &req, SCOPE_READ).await?;
    let OptionalJsonObject(body) = body?;
    let answer = flows
        .poll(&receiver, &path, body)
        .await
        .map_err(|e| match e {
            FlowError::NotFound(_) => ApiError::common(FlowError::NotFound("no such stream")),
            other => ApiError::common(other),
        })?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(answer))
}
