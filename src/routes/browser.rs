//! Browser apps (`docs/browser-apps.md`): refresh tokens only in an HttpOnly cookie, the CSRF
//! defence on every request that reads it, and CORS for the origins clients register.
//!
//! A cookie client's refresh token never appears in a body: it is set as
//! `latchkey_rt_<client_id>` (`__Secure-` prefixed with an https issuer), `HttpOnly`,
//! `SameSite=Strict`, `Path=/auth`, `Secure` with an https issuer, for as long as the token lives.
//! A request that would use or set it must come from one of the client's `allowed_origins`
//! (exact `scheme://host:port`) and not be a cross-site fetch; anything else is refused before
//! anything is touched.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};

use crate::config::{ClientSpec, RefreshDelivery};
use crate::error::ApiError;
use crate::flows::{Flows, Issued};
use crate::state::Snapshot;

/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: u32 = 600;

/// The refresh cookie's name for `client`.
pub fn cookie_name(client: &ClientSpec, secure: bool) -> String {
    let name = format!("latchkey_rt_{}", client.id);
    if secure {
        format!("__Secure-{name}")
    } else {
        name
    }
}

fn secure(snapshot: &Snapshot) -> bool {
    snapshot.config.issuer.starts_with("https://")
}

/// The cookie carrying `issued`'s refresh token, for as long as the token lives.
fn refresh_cookie(snapshot: &Snapshot, client: &ClientSpec, issued: &Issued) -> Cookie<'static> {
    let (value, max_age) = match &issued.refresh {
        Some(refresh) => (refresh.token.as_str().to_owned(), refresh.expires_in),
        None => (String::new(), 0),
    };
    let mut cookie = Cookie::build(cookie_name(client, secure(snapshot)), value)
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/auth")
        .secure(secure(snapshot))
        .max_age(actix_web::cookie::time::Duration::seconds(
            i64::try_from(max_age).unwrap_or(i64::MAX),
        ))
        .finish();
    if issued.refresh.is_none() {
        cookie.make_removal();
    }
    cookie
}

/// A cookie that deletes the client's refresh cookie.
pub fn removal_cookie(snapshot: &Snapshot, client: &ClientSpec) -> Cookie<'static> {
    let mut cookie = Cookie::build(cookie_name(client, secure(snapshot)), "")
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/auth")
        .secure(secure(snapshot))
        .finish();
    cookie.make_removal();
    cookie
}

/// Sets the refresh cookie on `response`; the body then carries no refresh token.
pub fn set_refresh_cookie(
    response: &mut HttpResponseBuilder,
    snapshot: &Snapshot,
    client: &ClientSpec,
    issued: &Issued,
) {
    response.cookie(refresh_cookie(snapshot, client, issued));
}

/// The CSRF defence: the request comes from one of `client`'s origins, and is not a cross-site
/// fetch. A missing or `null` Origin is refused: every browser sends one on these requests.
pub fn check_origin(req: &HttpRequest, client: &ClientSpec) -> Result<(), ApiError> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let allowed = origin.is_some_and(|o| client.allowed_origins.iter().any(|a| a == o));
    let cross_site = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
    if !allowed || cross_site {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "this request must come from one of the client's allowed origins",
        ));
    }
    Ok(())
}

/// The cookie client a request addresses: the one it names, or the one cookie client whose
/// origins include the request's Origin.
pub fn cookie_client(
    req: &HttpRequest,
    snapshot: &Snapshot,
    named: Option<&str>,
) -> Result<ClientSpec, ApiError> {
    let cookie_clients = snapshot
        .config
        .clients
        .iter()
        .filter(|c| c.refresh_delivery == RefreshDelivery::Cookie);
    if let Some(id) = named {
        return cookie_clients
            .into_iter()
            .find(|c| c.id == id)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "no cookie client by that client_id",
                )
                .with_challenge("Basic realm=\"latchkey\"".into())
            });
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let matching: Vec<&ClientSpec> = cookie_clients
        .filter(|c| c.allowed_origins.iter().any(|a| a == origin))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::invalid_request(
            "refresh_token is required (or, for a cookie client, its cookie and client_id)",
        )),
        _ => Err(ApiError::invalid_request(
            "several cookie clients share this origin: name the client_id",
        )),
    }
}

/// The refresh token in `client`'s cookie, if any.
pub fn cookie_token(req: &HttpRequest, snapshot: &Snapshot, client: &ClientSpec) -> Option<String> {
    req.cookie(&cookie_name(client, secure(snapshot)))
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether `origin` belongs to some client's `allowed_origins`.
fn registered(snapshot: &Snapshot, origin: &str) -> bool {
    snapshot
        .config
        .clients
        .iter()
        .any(|c| c.allowed_origins.iter().any(|a| a == origin))
}

/// CORS for `/auth/*` (the origins clients register, with credentials, nothing for others) and
/// for the public documents (JWKS, discovery: any origin). Preflights are answered here.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let path = req.path().to_owned();
    let public_document = path.starts_with("/.well-known/");
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The JSON API, and the token and revocation endpoints a browser app calls after a code
    // flow (never the authorization endpoint: browsers navigate to it).
    let browser_api =
        path.starts_with("/auth/") || path == "/oauth/token" || path == "/oauth/revoke";
    let allowed = match (&origin, req.app_data::<web::Data<Flows>>()) {
        (Some(origin), Some(flows)) if browser_api => registered(&flows.snapshot(), origin),
        _ => false,
    };
    if req.method() == Method::OPTIONS && browser_api && origin.is_some() {
        let response = if allowed {
            let mut preflight = HttpResponse::NoContent();
            preflight
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, DELETE"))
                .insert_header((
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    "content-type, authorization, dpop",
                ))
                .insert_header((
                    header::ACCESS_CONTROL_MAX_AGE,
                    PREFLIGHT_MAX_AGE_SECS.to_string(),
                ));
            grant(&mut preflight, origin.as_deref().unwrap_or(""));
            preflight.finish()
        } else {
            // A foreign origin gets no CORS grant at all.
            let mut refused = HttpResponse::Forbidden();
            refused.insert_header((header::VARY, "Origin"));
            refused.finish()
        };
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    if public_document {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    } else if browser_api {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if allowed && let Some(value) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            // A DPoP client must read the server nonce it is asked to use.
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("DPoP-Nonce"),
            );
        }
    }
    Ok(response.map_into_left_body())
}

fn grant(response: &mut HttpResponseBuilder, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        response
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, value))
            .insert_header((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"))
            .insert_header((header::VARY, "Origin"));
    }
}
