//! actix-web extractors: [`Authenticated`] for any valid token, [`Scoped`] for one that also
//! carries a scope. Register the [`Verifier`] with
//! `App::app_data(web::Data::new(verifier))`.
//!
//! Failures answer with RFC 6750 challenges: 401 `invalid_token` for a missing or bad token,
//! 403 `insufficient_scope` for a missing scope, 503 when the issuer's keys cannot be had.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};

use crate::{Claims, Verifier, VerifyError};

/// The verified claims of the request's bearer token.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Claims);

/// The verified claims of a token that carries the scope `S::NAME`.
#[derive(Clone, Debug)]
pub struct Scoped<S: Scope>(pub Claims, PhantomData<S>);

/// A scope a handler requires, named at the type level:
/// `struct UsersWrite; impl Scope for UsersWrite { const NAME: &'static str = "users:write"; }`.
pub trait Scope {
    /// The scope's name as it appears in the token's `scope` claim.
    const NAME: &'static str;
}

/// Why a request was turned away.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// No `Authorization: Bearer` header.
    #[error("a bearer access token is required")]
    MissingToken,
    /// The token did not verify.
    #[error("{0}")]
    InvalidToken(VerifyError),
    /// The token is valid but lacks the scope.
    #[error("the token lacks the scope {0}")]
    InsufficientScope(&'static str),
    /// The issuer's keys could not be had.
    #[error("the token cannot be verified right now")]
    Unavailable(VerifyError),
    /// No `Verifier` was registered with the app.
    #[error("no Verifier registered in app_data")]
    NotConfigured,
}

impl ResponseError for Rejection {
    fn status_code(&self) -> StatusCode {
        match self {
            Rejection::MissingToken | Rejection::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Rejection::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::NotConfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let description = self.to_string().replace('"', "'");
        let (code, challenge) = match self {
            Rejection::MissingToken => ("invalid_token", "Bearer".to_string()),
            Rejection::InvalidToken(_) => (
                "invalid_token",
                format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
            ),
            Rejection::InsufficientScope(scope) => (
                "insufficient_scope",
                format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\""),
            ),
            Rejection::Unavailable(_) => ("temporarily_unavailable", String::new()),
            Rejection::NotConfigured => ("server_error", String::new()),
        };
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Ok(value) = HeaderValue::from_str(&challenge)
            && !challenge.is_empty()
        {
            response.insert_header((header::WWW_AUTHENTICATE, value));
        }
        if matches!(self, Rejection::Unavailable(_)) {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(serde_json::json!({"error": code, "error_description": description}))
    }
}

fn bearer(req: &HttpRequest) -> Result<String, Rejection> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(Rejection::MissingToken)?;
    let value = value.to_str().map_err(|_| Rejection::MissingToken)?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim().to_owned())
        }
        _ => Err(Rejection::MissingToken),
    }
}

async fn authenticate(
    verifier: Option<Verifier>,
    token: Result<String, Rejection>,
) -> Result<Claims, Rejection> {
    let verifier = verifier.ok_or(Rejection::NotConfigured)?;
    match verifier.verify(&token?).await {
        Ok(claims) => Ok(claims),
        Err(e) if e.is_token_error() => Err(Rejection::InvalidToken(e)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot verify access tokens");
            Err(Rejection::Unavailable(e))
        }
    }
}

fn verifier(req: &HttpRequest) -> Option<Verifier> {
    req.app_data::<web::Data<Verifier>>()
        .map(|d| d.get_ref().clone())
        .or_else(|| req.app_data::<Verifier>().cloned())
}

impl FromRequest for Authenticated {
    type Error = Rejection;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (verifier, token) = (verifier(req), bearer(req));
        Box::pin(async move { authenticate(verifier, token).await.map(Authenticated) })
    }
}

impl<S: Scope + 'static> FromRequest for Scoped<S> {
    type Error = Rejection;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (verifier, token) = (verifier(req), bearer(req));
        Box::pin(async move {
            let claims = authenticate(verifier, token).await?;
            if !claims.has_scope(S::NAME) {
                return Err(Rejection::InsufficientScope(S::NAME));
            }
            Ok(Scoped(claims, PhantomData))
        })
    }
}
