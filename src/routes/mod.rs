//! HTTP handlers, one file per surface. They parse, call a flow ([`crate::flows`]), and render
//! its result or error as that surface's contract says.

pub mod account;
pub mod auth;
pub mod authorize;
pub mod browser;
pub mod demo;
pub mod end_session;
pub mod form;
pub mod json;
pub mod oauth;
pub mod openapi;
pub mod ops;
pub mod ssf;
pub mod well_known;

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;

use crate::config::{Config, ForwardedHeader};
use crate::error::{ApiError, DPOP_NONCE};
use crate::flows::{Authenticated, FlowError, Flows, Issued, PresentedAccess, RequestMeta};
use latchkey_verify::Scheme;

/// RFC 6749 §5.1 token response.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_expires_in: Option<u64>,
    #[serde(skip_serializing_if = "str::is_empty")]
    scope: &'a str,
    /// An OpenID Connect ID token, for a session granted `openid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<&'a str>,
}

/// The client a response was issued to, for the request's log line.
pub struct ClientOf(pub String);

/// What was issued, as a JSON body (RFC 6749 §5.1: `no-store` and `Pragma: no-cache`).
pub fn token_response(issued: &Issued) -> HttpResponse {
    token_response_from(HttpResponse::Ok(), issued, true)
}

/// As [`token_response`] on `builder`; without the refresh token when it travels otherwise (a
/// cookie).
pub fn token_response_from(
    mut builder: actix_web::HttpResponseBuilder,
    issued: &Issued,
    with_refresh: bool,
) -> HttpResponse {
    let refresh = issued.refresh.as_ref().filter(|_| with_refresh);
    if let Some(nonce) = issued.dpop_nonce.as_deref()
        && let Ok(value) = header::HeaderValue::from_str(nonce)
    {
        builder.insert_header((DPOP_NONCE, value));
    }
    let mut response = builder
        .insert_header((header::PRAGMA, "no-cache"))
        .json(TokenResponse {
            access_token: &issued.access_token,
            token_type: issued.token_type.as_str(),
            expires_in: issued.expires_in,
            refresh_token: refresh.map(|r| r.token.as_str()),
            refresh_expires_in: refresh.map(|r| r.expires_in),
            scope: &issued.scope,
            id_token: issued.id_token.as_deref(),
        });
    response
        .extensions_mut()
        .insert(ClientOf(issued.client_id.clone()));
    response
}

/// The `DPoP` headers of a token request (RFC 9449 §4.1), for [`DpopPresented`]: every one, so
/// that two are refused; one that is not text is kept as an empty, unusable proof.
pub fn dpop_proofs(req: &HttpRequest) -> Vec<&str> {
    req.headers()
        .get_all("dpop")
        .map(|v| v.to_str().unwrap_or(""))
        .collect()
}

/// Runs a refresh or token-endpoint handler under the per-IP limits: refused before any work
/// when the client IP is over them; a refusal (400 or 401) counts against the IP.
pub async fn limited_token_request(
    flows: &Flows,
    req: &HttpRequest,
    handler: impl Future<Output = Result<HttpResponse, ApiError>>,
) -> Result<HttpResponse, ApiError> {
    let snapshot = flows.snapshot();
    let ip = client_ip(req, &snapshot.config);
    flows
        .admit_token_request(&snapshot, &ip)
        .await
        .map_err(ApiError::common)?;
    let response = handler
        .await
        .unwrap_or_else(|e| actix_web::ResponseError::error_response(&e));
    // A nonce challenge (`use_dpop_nonce`) is the protocol, not a failure.
    let nonce_challenge = response.headers().contains_key(DPOP_NONCE);
    if matches!(response.status().as_u16(), 400 | 401) && !nonce_challenge {
        // A store that cannot count now answers the next request; this one is answered.
        let _ = flows.record_refused_token_request(&snapshot, &ip).await;
    }
    Ok(response)
}

const MAX_USER_AGENT_CHARS: usize = 256;

/// The caller as recorded on its session and as the throttles count it: the client IP (see
/// [`client_ip`]) and a bounded User-Agent.
pub fn request_meta(req: &HttpRequest, config: &Config) -> RequestMeta {
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(MAX_USER_AGENT_CHARS)
        .collect();
    RequestMeta {
        user_agent,
        ip: client_ip(req, config),
    }
}

/// Hops of a forwarding chain read at most, from the right: no real path has more proxies, and
/// the client writes whatever it likes further left.
const MAX_FORWARDED_HOPS: usize = 16;

/// The client's IP: the connection's peer, unless the peer is a trusted proxy; then the nearest
/// untrusted address in the one forwarding header the config names (`forwarded_header`), read
/// from the right, where each trusted proxy appended the address it saw. Whatever the client
/// wrote itself stands further left and is never reached while a trusted hop reports a real
/// address. Past [`MAX_FORWARDED_HOPS`] trusted hops, or at a hop that names no address, the
/// leftmost trusted hop seen is the client. From an untrusted peer no header is read at all.
pub fn client_ip(req: &HttpRequest, config: &Config) -> String {
    let Some(peer) = req.peer_addr().map(|a| a.ip()) else {
        return String::new();
    };
    let trusted = &config.trusted_proxies;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer.to_string();
    }
    let mut nearest_proxy = peer;
    for hop in forwarded_hops_from_right(req, config.forwarded_header).take(MAX_FORWARDED_HOPS) {
        match hop {
            Some(ip) if is_trusted(&ip) => nearest_proxy = ip,
            Some(ip) => return ip.to_string(),
            // An obfuscated or malformed hop: nothing left of it can be believed.
            None => break,
        }
    }
    nearest_proxy.to_string()
}

/// The addresses of the forwarding chain, nearest hop first (the header's last element first,
/// across repeated header lines); `None` for a hop that is not an IP. Lazy, so a long header
/// costs only the hops read.
fn forwarded_hops_from_right(
    req: &HttpRequest,
    kind: ForwardedHeader,
) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    let name = match kind {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    let lines: Vec<&str> = req
        .headers()
        .get_all(name)
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    lines
        .into_iter()
        .rev()
        .flat_map(|line| line.rsplit(','))
        .map(move |element| match kind {
            ForwardedHeader::XForwardedFor => parse_node(element.trim()),
            // RFC 7239 §4: `for=` among `;`-separated pairs of one element.
            ForwardedHeader::Forwarded => element.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(value.trim().trim_matches('"')))
            })?,
        })
}

/// `192.0.2.60`, `192.0.2.60:4711`, `[2001:db8::17]:4711` or `2001:db8::17`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    node.rsplit_once(':')?.0.parse().ok()
}

/// The token of an `Authorization: Bearer …` header (RFC 6750 §2.1).
pub fn access_token(req: &HttpRequest) -> Result<(Scheme, &str), ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::missing_bearer_token());
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid_token("malformed Authorization header"))?;
    latchkey_verify::parse_authorization(value).ok_or_else(|| {
        ApiError::invalid_token("expected Authorization: Bearer <token> or DPoP <token>")
    })
}

/// The caller of one of the issuer's own protected endpoints (userinfo, sessions, password):
/// its access token, checked with its DPoP proof when bound. Refusals answer 401 with a
/// challenge in the scheme the token came with (RFC 6750 §3, RFC 9449 §7.1).
pub async fn caller(flows: &Flows, req: &HttpRequest) -> Result<Authenticated, ApiError> {
    let (scheme, token) = access_token(req)?;
    caller_presenting(flows, req, scheme, token).await
}

/// As [`caller`], with the token found by the handler (in a form body, RFC 6750 §2.2).
pub async fn caller_presenting(
    flows: &Flows,
    req: &HttpRequest,
    scheme: Scheme,
    token: &str,
) -> Result<Authenticated, ApiError> {
    let proofs = dpop_proofs(req);
    // The address only counts a proof against its share of the replay memory: not worked out
    // for the bearer tokens of the hot path.
    let ip = if proofs.is_empty() {
        String::new()
    } else {
        client_ip(req, &flows.snapshot().config)
    };
    let presented = PresentedAccess {
        scheme,
        token,
        proofs: &proofs,
        method: req.method().as_str(),
        path: req.path(),
        ip: &ip,
    };
    flows
        .authenticate(&presented)
        .await
        .map_err(|e| match (e, scheme) {
            (FlowError::InvalidDpopProof(description), _) => {
                ApiError::dpop_refused("invalid_dpop_proof", description)
            }
            (FlowError::InvalidToken(description), Scheme::DPoP) => {
                ApiError::dpop_refused("invalid_token", description)
            }
            (other, _) => ApiError::common(other),
        })
}

/// The caller of the account API: as [`caller`], and its token must carry the `account` scope
/// ([`crate::flows::scopes::ACCOUNT`]), else 403 `insufficient_scope` (RFC 6750 §3.1).
pub async fn account_caller(flows: &Flows, req: &HttpRequest) -> Result<Authenticated, ApiError> {
    let auth = caller(flows, req).await?;
    if !auth.claims.has_scope(crate::flows::scopes::ACCOUNT) {
        let scheme = if auth.claims.dpop_jkt().is_some() {
            "DPoP"
        } else {
            "Bearer"
        };
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "insufficient_scope",
            "the account API needs a token with the scope \"account\"",
        )
        .with_challenge(format!(
            "{scheme} realm=\"latchkey\", error=\"insufficient_scope\", scope=\"account\""
        )));
    }
    Ok(auth)
}

pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found())
}

/// 405 with the methods the path does answer.
pub async fn method_not_allowed(allow: &'static str) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed(allow))
}
