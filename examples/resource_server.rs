//! An example resource server: `GET /users` answers only to a valid latchkey access token, and
//! `DELETE /users/{id}` also wants the `users:admin` scope.
//!
//! ```sh
//! cargo run --example resource_server
//! ```
//!
//! Environment: `LATCHKEY_ISSUER` (default `http://127.0.0.1:8080`), `RESOURCE_AUDIENCE`
//! (default `api`), `RESOURCE_LISTEN` (default `127.0.0.1:8081`), and to refuse revoked sessions'
//! tokens within a second, `LATCHKEY_FEED_CLIENT_ID` and `LATCHKEY_FEED_CLIENT_SECRET`
//! (`docs/revocation-feed.md`).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpResponse, HttpServer, web};
use latchkey_verify::Verifier;
use latchkey_verify::actix::{Authenticated, Scope, Scoped};
use serde_json::json;

/// The scope `DELETE /users/{id}` requires.
pub struct UsersAdmin;

impl Scope for UsersAdmin {
    const NAME: &'static str = "users:admin";
}

async fn list_users(Authenticated(claims): Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "requested_by": claims.sub,
        "users": [
            {"id": "1", "name": "Ada Lovelace"},
            {"id": "2", "name": "Grace Hopper"},
        ],
    }))
}

async fn delete_user(_admin: Scoped<UsersAdmin>, id: web::Path<String>) -> HttpResponse {
    tracing::info!(user = %id, "deleted");
    HttpResponse::NoContent().finish()
}

/// The routes, shared by `main` and the tests.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/users", web::get().to(list_users))
        .route("/users/{id}", web::delete().to(delete_user));
}

/// One line per request (method, path, status, time), so a 401 or 403 can be seen as it happens.
async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let (method, path) = (req.method().clone(), req.path().to_owned());
    let response = next.call(req).await?;
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(response)
}

/// Follows the issuer's revocation feed when `LATCHKEY_FEED_CLIENT_ID` and
/// `LATCHKEY_FEED_CLIENT_SECRET` name a client allowed `ssf.manage` and `ssf.read`: a revoked
/// session's tokens are then refused within a second. The handle must live as long as the server.
async fn follow_feed_if_configured(
    verifier: &Verifier,
) -> std::io::Result<Option<latchkey_verify::RevocationFeed>> {
    let (Ok(id), Ok(secret)) = (
        std::env::var("LATCHKEY_FEED_CLIENT_ID"),
        std::env::var("LATCHKEY_FEED_CLIENT_SECRET"),
    ) else {
        return Ok(None);
    };
    let feed = verifier
        .follow_revocations(latchkey_verify::FeedSettings::new(&id, &secret))
        .await
        .map_err(std::io::Error::other)?;
    println!("following the revocation feed as {id:?}");
    Ok(Some(feed))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    // Requests, and the verifier's own warnings (an unreachable issuer, a failed JWKS refresh).
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .init();
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let issuer = env("LATCHKEY_ISSUER", "http://127.0.0.1:8080");
    let audience = env("RESOURCE_AUDIENCE", "api");
    let listen = env("RESOURCE_LISTEN", "127.0.0.1:8081");
    let verifier = Verifier::from_issuer(&issuer, &audience)
        .build()
        .map_err(std::io::Error::other)?;
    let _feed = follow_feed_if_configured(&verifier).await?;
    println!("resource server on http://{listen}, trusting tokens from {issuer} for {audience:?}");
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(verifier.clone()))
            .wrap(from_fn(log_request))
            .configure(routes)
    })
    .bind(listen)?
    .run()
    .await
}
