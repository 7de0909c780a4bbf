//! An example axum resource server: `GET /users` answers only to a valid latchkey access token
//! (bearer, or DPoP-bound with its proof), `DELETE /users/{id}` also wants the `users:admin`
//! scope, and everything under `/admin` is guarded as a whole by the `require_token` middleware.
//!
//! ```sh
//! cargo run -p latchkey-verify --features axum --example axum_resource_server
//! ```
//!
//! Environment: `LATCHKEY_ISSUER` (default `http://127.0.0.1:8080`), `RESOURCE_AUDIENCE`
//! (default `api`), `RESOURCE_LISTEN` (default `127.0.0.1:8082`), `RESOURCE_PUBLIC_URL` (the
//! scheme and host clients use, when behind a TLS-terminating proxy), and to refuse revoked
//! sessions' tokens within a second, `LATCHKEY_FEED_CLIENT_ID` and `LATCHKEY_FEED_CLIENT_SECRET`
//! (`docs/revocation-feed.md` in the latchkey repository).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router, middleware};
use latchkey_verify::Verifier;
use latchkey_verify::axum::{Authenticated, Scope, Scoped, require_token};
use serde_json::{Value, json};

/// The scope `DELETE /users/{id}` requires.
pub struct UsersAdmin;

impl Scope for UsersAdmin {
    const NAME: &'static str = "users:admin";
}

async fn list_users(Authenticated(claims): Authenticated) -> Json<Value> {
    Json(json!({
        "requested_by": claims.sub,
        "users": [
            {"id": "1", "name": "Ada Lovelace"},
            {"id": "2", "name": "Grace Hopper"},
        ],
    }))
}

async fn delete_user(_admin: Scoped<UsersAdmin>, Path(id): Path<String>) -> StatusCode {
    println!("deleted user {id}");
    StatusCode::NO_CONTENT
}

/// Behind `require_token`: the claims are already verified and waiting in the extensions.
async fn whoami(Authenticated(claims): Authenticated) -> Json<Value> {
    Json(json!({"sub": claims.sub, "bound_to": claims.dpop_jkt()}))
}

/// The routes, shared by `main` and the tests.
pub fn router(verifier: Verifier) -> Router {
    let admin = Router::new()
        .route("/admin/whoami", get(whoami))
        .route_layer(middleware::from_fn_with_state(
            verifier.clone(),
            require_token,
        ));
    Router::new()
        .route("/users", get(list_users))
        .route("/users/{id}", delete(delete_user))
        .merge(admin)
        .with_state(verifier)
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

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let issuer = env("LATCHKEY_ISSUER", "http://127.0.0.1:8080");
    let audience = env("RESOURCE_AUDIENCE", "api");
    let listen = env("RESOURCE_LISTEN", "127.0.0.1:8082");
    let mut verifier = Verifier::from_issuer(&issuer, &audience);
    if let Ok(public) = std::env::var("RESOURCE_PUBLIC_URL") {
        verifier = verifier.public_base_url(&public);
    }
    let verifier = verifier.build().map_err(std::io::Error::other)?;
    let _feed = follow_feed_if_configured(&verifier).await?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("resource server on http://{listen}, trusting tokens from {issuer} for {audience:?}");
    axum::serve(listener, router(verifier)).await
}
