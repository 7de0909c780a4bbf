//! axum extractors and middleware, with the same checks and answers as the actix ones:
//! [`Authenticated`] for any valid token, [`Scoped`] for one that also carries a scope, and
//! [`require_token`] to guard whole routers (`axum::middleware::from_fn_with_state`), which
//! leaves the verified [`Claims`] in the request's extensions.
//!
//! The [`Verifier`] comes from the router's state: `Router::with_state(verifier)`, or any state
//! with `impl FromRef<AppState> for Verifier`.

use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use crate::rejection::{Rejection, Scope};
use crate::rejection::{authenticate, request_url};
use crate::{Claims, RequestCredentials, Scheme, Verifier};

/// The verified claims of the request's access token.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Claims);

/// The verified claims of a token that carries the scope `S::NAME`.
#[derive(Clone, Debug)]
pub struct Scoped<S: Scope>(pub Claims, PhantomData<S>);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for challenge in self.challenges() {
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.append(header::WWW_AUTHENTICATE, value);
            }
        }
        if matches!(self, Rejection::Unavailable(_)) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        (status, headers, self.body().to_string()).into_response()
    }
}

async fn verify_parts(parts: &Parts, verifier: Verifier) -> Result<(Scheme, Claims), Rejection> {
    fn text(v: &HeaderValue) -> Option<&str> {
        v.to_str().ok()
    }
    let headers = &parts.headers;
    // A header that is not text still counts, so two headers are never read as one.
    let dpop: Vec<&str> = headers
        .get_all("dpop")
        .iter()
        .map(|v| text(v).unwrap_or(""))
        .collect();
    // axum does not know whether it serves TLS; behind TLS set `public_base_url`.
    let secure = parts.uri.scheme_str() == Some("https");
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(text));
    let url = request_url(verifier.public_base_url(), secure, host, parts.uri.path());
    let credentials = RequestCredentials {
        authorization: headers.get(header::AUTHORIZATION).and_then(text),
        dpop: &dpop,
        method: parts.method.as_str(),
        url: &url,
    };
    authenticate(Some(verifier), &credentials).await
}

impl<S> FromRequestParts<S> for Authenticated
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(claims) = parts.extensions.get::<Claims>() {
            return Ok(Authenticated(claims.clone()));
        }
        let (_, claims) = verify_parts(parts, Verifier::from_ref(state)).await?;
        Ok(Authenticated(claims))
    }
}

impl<S, Sc> FromRequestParts<S> for Scoped<Sc>
where
    Verifier: FromRef<S>,
    S: Send + Sync,
    Sc: Scope + Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (scheme, claims) = verify_parts(parts, Verifier::from_ref(state)).await?;
        if !claims.has_scope(Sc::NAME) {
            return Err(Rejection::InsufficientScope(scheme, Sc::NAME));
        }
        Ok(Scoped(claims, PhantomData))
    }
}

/// Middleware for `axum::middleware::from_fn_with_state(verifier, require_token)`: lets a
/// request through only with a valid token, whose [`Claims`] it puts in the request's
/// extensions (where [`Authenticated`] finds them without verifying again).
pub async fn require_token(
    State(verifier): State<Verifier>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    match verify_parts(&parts, verifier).await {
        Ok((_, claims)) => {
            parts.extensions.insert(claims);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(rejection) => rejection.into_response(),
    }
}
