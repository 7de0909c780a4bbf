//! Static files for browser apps: the client module `/sdk/latchkey.js` (always), and the demo
//! SPA at `/demo/` when `[demo] enabled = true`. The files are compiled into the binary.
//!
//! The demo's pages carry a strict Content-Security-Policy: scripts, styles and connections
//! from this origin only, no inline script, no framing.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::error::ApiError;
use crate::flows::Flows;

const LATCHKEY_JS: &str = include_str!("../../web/latchkey.js");
const DEMO_HTML: &str = include_str!("../../web/demo/index.html");
const DEMO_JS: &str = include_str!("../../web/demo/app.js");
const DEMO_CSS: &str = include_str!("../../web/demo/demo.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .body(body)
}

/// `GET /sdk/latchkey.js`.
#[utoipa::path(
    get,
    path = "/sdk/latchkey.js",
    tag = "demo",
    responses(
        (status = 200, description = "The JavaScript client module", content_type = "text/javascript"),
        (status = 404, description = "The demo is off (`demo.enabled`)", body = crate::error::ErrorBody),
    )
)]
pub async fn client_module() -> HttpResponse {
    asset("text/javascript; charset=utf-8", LATCHKEY_JS)
}

/// The demo is served only when enabled: otherwise its paths do not exist.
fn enabled(flows: &Flows) -> Result<(), ApiError> {
    if flows.snapshot().config.demo.enabled {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// What `/demo/` says while the demo is off: how to turn it on.
const DEMO_OFF_HTML: &str = "<!doctype html>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>latchkey demo: off</title>\n\
<h1>The demo is off</h1>\n\
<p>This issuer does not serve its demo. To turn it on, register a browser client and name it in \
the config, then reload (SIGHUP, or save the file):</p>\n\
<pre>[demo]\nenabled = true\nclient_id = \"demo\"\n\n[[clients]]\nid = \"demo\"\ntype = \"public\"\n\
grants = [\"refresh_token\"]\nrefresh_delivery = \"cookie\"\nallowed_origins = [\"http://127.0.0.1:8080\"]</pre>\n\
<p>The development config (<code>config/latchkey.toml</code>) has it on. See \
<code>docs/browser-apps.md</code>.</p>\n";

#[utoipa::path(
    get,
    path = "/demo/",
    tag = "demo",
    responses(
        (status = 200, description = "The demo SPA", content_type = "text/html"),
        (status = 404, description = "The demo is off (`demo.enabled`): a page saying how to turn it on", content_type = "text/html"),
    )
)]
pub async fn page(flows: web::Data<Flows>) -> Result<HttpResponse, ApiError> {
    if enabled(&flows).is_err() {
        return Ok(HttpResponse::NotFound()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
            .body(DEMO_OFF_HTML));
    }
    Ok(asset("text/html; charset=utf-8", DEMO_HTML))
}

#[utoipa::path(
    get,
    path = "/demo/app.js",
    tag = "demo",
    responses(
        (status = 200, description = "The demo's script", content_type = "text/javascript"),
        (status = 404, description = "The demo is off (`demo.enabled`)", body = crate::error::ErrorBody),
    )
)]
pub async fn script(flows: web::Data<Flows>) -> Result<HttpResponse, ApiError> {
    enabled(&flows)?;
    Ok(asset("text/javascript; charset=utf-8", DEMO_JS))
}

#[utoipa::path(
    get,
    path = "/demo/demo.css",
    tag = "demo",
    responses(
        (status = 200, description = "The demo's style sheet", content_type = "text/css"),
        (status = 404, description = "The demo is off (`demo.enabled`)", body = crate::error::ErrorBody),
    )
)]
pub async fn style(flows: web::Data<Flows>) -> Result<HttpResponse, ApiError> {
    enabled(&flows)?;
    Ok(asset("text/css; charset=utf-8", DEMO_CSS))
}

/// The demo's settings: its client, and when to refresh (a third of the access token's life,
/// at most 30 s before it ends).
#[utoipa::path(
    get,
    path = "/demo/config.json",
    tag = "demo",
    responses(
        (status = 200, description = "The demo's client id and refresh timing", content_type = "application/json"),
        (status = 404, description = "The demo is off (`demo.enabled`)", body = crate::error::ErrorBody),
    )
)]
pub async fn settings(flows: web::Data<Flows>) -> Result<HttpResponse, ApiError> {
    enabled(&flows)?;
    let snapshot = flows.snapshot();
    let config = &snapshot.config;
    let refresh_before = (config.tokens.access_ttl.as_secs() / 3).clamp(1, 30);
    // A client that requires DPoP gets its tokens bound to a key of the browser's.
    let dpop = config
        .client(&config.demo.client_id)
        .is_some_and(|c| c.require_dpop);
    Ok(HttpResponse::Ok().json(json!({
        "client_id": config.demo.client_id,
        "refresh_before_seconds": refresh_before,
        "dpop": dpop,
    })))
}
