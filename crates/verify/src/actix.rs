//! actix-web extractors: [`Authenticated`] for any valid token, [`Scoped`] for one that also
//! carries a scope. Register the [`Verifier`] with
//! `App::app_data(web::Data::new(verifier))`.
//!
//! Both accept a bearer token, or a DPoP-bound token with `Authorization: DPoP` and its `DPoP`
//! proof (RFC 9449 §7); a bound token presented as a bearer token is refused. Failures answer
//! with RFC 6750 / RFC 9449 challenges: 401 `invalid_token` or `invalid_dpop_proof`, 403
//! `insufficient_scope` for a missing scope, 503 when the issuer's keys cannot be had.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};

pub use crate::rejection::{Rejection, Scope};
use crate::rejection::{authenticate, request_url};
use crate::{Claims, RequestCredentials, Scheme, Verifier};

/// The verified claims of the request's access token.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Claims);

/// The verified claims of a token that carries the scope `S::NAME`.
#[derive(Clone, Debug)]
pub struct Scoped<S: Scope>(pub Claims, PhantomData<S>);

impl ResponseError for Rejection {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        for challenge in self.challenges() {
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.append_header((header::WWW_AUTHENTICATE, value));
            }
        }
        if matches!(self, Rejection::Unavailable(_)) {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(self.body())
    }
}

/// What the extractors need of a request, owned so the future outlives the borrow.
struct Presented {
    authorization: Option<String>,
    dpop: Vec<String>,
    method: String,
    url: String,
}

impl Presented {
    fn of(req: &HttpRequest, verifier: Option<&Verifier>) -> Presented {
        let text = |v: &HeaderValue| v.to_str().ok().map(str::to_owned);
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        Presented {
            authorization: req.headers().get(header::AUTHORIZATION).and_then(text),
            // A header that is not text still counts, so two headers are never read as one.
            dpop: req
                .headers()
                .get_all("dpop")
                .map(|v| text(v).unwrap_or_default())
                .collect(),
            method: req.method().as_str().to_owned(),
            url: request_url(
                verifier.and_then(Verifier::public_base_url),
                req.app_config().secure(),
                host,
                req.path(),
            ),
        }
    }

    async fn verify(self, verifier: Option<Verifier>) -> Result<(Scheme, Claims), Rejection> {
        let dpop: Vec<&str> = self.dpop.iter().map(String::as_str).collect();
        let credentials = RequestCredentials {
            authorization: self.authorization.as_deref(),
            dpop: &dpop,
            method: &self.method,
            url: &self.url,
        };
        authenticate(verifier, &credentials).await
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
        let verifier = verifier(req);
        let presented = Presented::of(req, verifier.as_ref());
        Box::pin(async move {
            let (_, claims) = presented.verify(verifier).await?;
            Ok(Authenticated(claims))
        })
    }
}

impl<S: Scope + 'static> FromRequest for Scoped<S> {
    type Error = Rejection;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let verifier = verifier(req);
        let presented = Presented::of(req, verifier.as_ref());
        Box::pin(async move {
            let (scheme, claims) = presented.verify(verifier).await?;
            if !claims.has_scope(S::NAME) {
                return Err(Rejection::InsufficientScope(scheme, S::NAME));
            }
            Ok(Scoped(claims, PhantomData))
        })
    }
}
