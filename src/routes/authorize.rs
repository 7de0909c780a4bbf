//! The authorization endpoint and the hosted pages (`docs/sign-in-by-redirect.md`; the
//! end-session endpoint, which shares them, is `super::end_session`):
//! `GET|POST /oauth/authorize`, the login and consent forms, their stylesheet.
//!
//! Pages are rendered from templates that escape every value for HTML (`web/pages/`), under a
//! CSP that allows nothing but the stylesheet and forms posted here or to the client's redirect
//! origin (a bare `form-action 'self'` makes Chrome and Safari block the redirect back to the
//! client after a form post). Two cookies, both `HttpOnly`, `SameSite=Lax`, `Path=/`, and
//! `__Host-` prefixed with an https issuer: the sign-on (`latchkey_sso`) and the pre-login
//! browser binding (`latchkey_browser`) that a page's form must come with.

use std::sync::OnceLock;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use minijinja::Environment;
use serde::Serialize;

use super::form::decode;
use super::{client_ip, request_meta};
use crate::credentials::Password;
use crate::flows::authorize::{
    Answer, AuthorizeError, ConsentPage, Interaction, LoginPage, LoginProblem, PageForm,
};
use crate::flows::{FlowError, Flows};
use crate::state::Snapshot;

/// The largest form or query the endpoint reads.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

const PAGES_CSS: &str = include_str!("../../web/pages/pages.css");

fn templates() -> &'static Environment<'static> {
    static TEMPLATES: OnceLock<Environment<'static>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut env = Environment::new();
        // Names ending in .html are escaped for HTML (minijinja's default).
        for (name, source) in [
            ("base.html", include_str!("../../web/pages/base.html")),
            ("login.html", include_str!("../../web/pages/login.html")),
            ("consent.html", include_str!("../../web/pages/consent.html")),
            ("error.html", include_str!("../../web/pages/error.html")),
            ("logout.html", include_str!("../../web/pages/logout.html")),
            (
                "signed_out.html",
                include_str!("../../web/pages/signed_out.html"),
            ),
        ] {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "a page template does not parse");
            }
        }
        env
    })
}

fn cookie_name(snapshot: &Snapshot, name: &str) -> String {
    if secure(snapshot) {
        format!("__Host-{name}")
    } else {
        name.to_owned()
    }
}

fn secure(snapshot: &Snapshot) -> bool {
    snapshot.config.issuer.starts_with("https://")
}

pub(super) const SIGN_ON: &str = "latchkey_sso";
pub(super) const BROWSER: &str = "latchkey_browser";

pub(super) fn cookie_value(req: &HttpRequest, snapshot: &Snapshot, name: &str) -> Option<String> {
    req.cookie(&cookie_name(snapshot, name))
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 64)
}

pub(super) fn cookie(
    snapshot: &Snapshot,
    name: &str,
    value: String,
    max_age_secs: Option<i64>,
) -> Cookie<'static> {
    let mut cookie = Cookie::build(cookie_name(snapshot, name), value)
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(secure(snapshot))
        .finish();
    if let Some(secs) = max_age_secs {
        cookie.set_max_age(actix_web::cookie::time::Duration::seconds(secs));
    }
    cookie
}

/// The browser binding of this request: its pre-login cookie, or a new one to set.
pub(super) fn browser_binding(
    req: &HttpRequest,
    snapshot: &Snapshot,
) -> Result<(String, bool), FlowError> {
    match cookie_value(req, snapshot, BROWSER) {
        Some(value) => Ok((value, false)),
        None => Ok((crate::flows::authorize::random_token()?, true)),
    }
}

/// `name=value&…` pairs, strictly decoded.
pub(super) fn pairs(raw: &[u8]) -> Result<Vec<(String, String)>, AuthorizeError> {
    if raw.len() > MAX_REQUEST_BYTES {
        return Err(AuthorizeError::Page(
            "The sign-in request is too long.".into(),
        ));
    }
    let malformed = || AuthorizeError::Page("The sign-in request is malformed.".into());
    raw.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            Ok((
                decode(name).map_err(|_| malformed())?,
                decode(value).map_err(|_| malformed())?,
            ))
        })
        .collect()
}

pub(super) fn is_form(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|e| {
            e.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The origin a form on a page may post to besides this one: the redirect URI's, so that the
/// redirect after the post is allowed. Only plain origin characters reach the header.
fn redirect_origin(redirect_uri: &str) -> Option<String> {
    let origin = match redirect_uri.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?']).next().unwrap_or("");
            format!("{scheme}://{authority}")
        }
        None => format!("{}:", redirect_uri.split(':').next().unwrap_or("")),
    };
    origin
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-+:/[]".contains(&b))
        .then_some(origin)
}

pub(super) fn page_headers(builder: &mut HttpResponseBuilder, redirect_uri: Option<&str>) {
    let form_action = match redirect_uri.and_then(redirect_origin) {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    builder
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            format!(
                "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; \
                 frame-ancestors 'none'; form-action {form_action}"
            ),
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
}

/// A page rendered, then answered by `builder`; a template that fails (a bug) answers 500.
pub(super) fn render(
    mut builder: HttpResponseBuilder,
    template: &str,
    context: minijinja::Value,
) -> HttpResponse {
    match templates()
        .get_template(template)
        .and_then(|t| t.render(context))
    {
        Ok(body) => builder.body(body),
        Err(e) => {
            tracing::error!(template, error = %e, "a page cannot be rendered");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("The sign-in page cannot be shown.")
        }
    }
}

fn error_page(status: StatusCode, message: &str) -> HttpResponse {
    let mut builder = HttpResponse::build(status);
    page_headers(&mut builder, None);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        builder.insert_header((header::RETRY_AFTER, "1"));
    }
    render(builder, "error.html", minijinja::context! { message })
}

/// The page for an error that cannot go back to the client.
pub(super) fn refused(flows: &Flows, e: AuthorizeError) -> HttpResponse {
    flows.count_error_page();
    match e {
        AuthorizeError::Page(message) => error_page(StatusCode::BAD_REQUEST, &message),
        AuthorizeError::Flow(FlowError::Throttled { retry_after_secs }) => {
            let mut page = error_page(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many sign-in requests from your network. Try again in {retry_after_secs} seconds."
                ),
            );
            if let Ok(value) = header::HeaderValue::from_str(&retry_after_secs.to_string()) {
                page.headers_mut().insert(header::RETRY_AFTER, value);
            }
            page
        }
        AuthorizeError::Flow(
            e @ (FlowError::StoreUnavailable(_) | FlowError::Overloaded | FlowError::NoSigningKey),
        ) => {
            tracing::warn!(error = %crate::telemetry::error_chain(&e), "sign-in page: unavailable");
            error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The sign-in service is busy or cannot reach its store. Try again in a moment.",
            )
        }
        AuthorizeError::Flow(e) => {
            tracing::error!(error = %crate::telemetry::error_chain(&e), "sign-in page failed");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on the sign-in service.",
            )
        }
    }
}

#[derive(Serialize)]
struct ScopeLine {
    name: Option<String>,
    text: String,
}

/// A scope in words for the consent page.
fn scope_line(scope: &str) -> ScopeLine {
    let known = match scope {
        "openid" => Some("Know who you are (your account identifier)"),
        "profile" => Some("See your name and username"),
        "email" => Some("See your email address"),
        "offline_access" => Some("Stay signed in when you are not using it"),
        crate::flows::scopes::ACCOUNT => {
            Some("See and end your sessions, and change your password")
        }
        _ => None,
    };
    match known {
        Some(text) => ScopeLine {
            name: None,
            text: text.to_owned(),
        },
        None => ScopeLine {
            name: Some(scope.to_owned()),
            text: "Use the permission".to_owned(),
        },
    }
}

fn login_page(page: &LoginPage) -> HttpResponse {
    let (status, problem) = match page.problem {
        None => (StatusCode::OK, None),
        Some(LoginProblem::BadCredentials) => (
            StatusCode::UNAUTHORIZED,
            Some("Wrong username or password.".to_owned()),
        ),
        Some(LoginProblem::Throttled { retry_after_secs }) => (
            StatusCode::TOO_MANY_REQUESTS,
            Some(format!(
                "Too many attempts. Try again in {retry_after_secs} seconds."
            )),
        ),
        Some(LoginProblem::Unavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("The sign-in service is busy. Try again in a moment.".to_owned()),
        ),
    };
    let mut builder = HttpResponse::build(status);
    page_headers(&mut builder, Some(&page.redirect_uri));
    if let Some(LoginProblem::Throttled { retry_after_secs }) = page.problem {
        builder.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
    }
    render(
        builder,
        "login.html",
        minijinja::context! {
            transaction => page.transaction.as_str(),
            csrf => page.csrf.as_str(),
            client_name => page.client_name.as_str(),
            username => page.username.as_str(),
            problem => problem,
        },
    )
}

fn consent_page(page: &ConsentPage) -> HttpResponse {
    let mut lines: Vec<ScopeLine> = page.scopes.iter().map(|s| scope_line(s)).collect();
    if lines.is_empty() {
        lines.push(ScopeLine {
            name: None,
            text: "Sign you in".to_owned(),
        });
    }
    let mut builder = HttpResponse::Ok();
    page_headers(&mut builder, Some(&page.redirect_uri));
    render(
        builder,
        "consent.html",
        minijinja::context! {
            transaction => page.transaction.as_str(),
            csrf => page.csrf.as_str(),
            client_name => page.client_name.as_str(),
            username => page.username.as_str(),
            scopes => minijinja::value::Serde(lines),
        },
    )
}

/// The response to an answer, with the cookies it needs.
fn respond(snapshot: &Snapshot, answer: Answer, browser: Option<String>) -> HttpResponse {
    let mut response = match &answer.interaction {
        Interaction::Redirect(location) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, location.as_str()))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .finish(),
        Interaction::Login(page) => login_page(page),
        Interaction::Consent(page) => consent_page(page),
    };
    if let Some(value) = answer.new_sign_on {
        let max_age = i64::try_from(snapshot.config.sso.session_max.as_secs()).unwrap_or(i64::MAX);
        let _ = response.add_cookie(&cookie(snapshot, SIGN_ON, value, Some(max_age)));
    }
    if let Some(value) = browser {
        let _ = response.add_cookie(&cookie(snapshot, BROWSER, value, None));
    }
    response
}

/// `GET /oauth/authorize`: a request in the query, or `?transaction=` for one that arrived by
/// POST.
#[utoipa::path(
    get,
    path = "/oauth/authorize",
    tag = "oauth",
    params(
        ("response_type" = String, Query, description = "`code`"),
        ("client_id" = String, Query, description = "A client with the `authorization_code` grant"),
        ("redirect_uri" = Option<String>, Query, description = "One of the client's `redirect_uris`, exactly; optional when it has only one"),
        ("code_challenge" = Option<String>, Query, description = "PKCE (RFC 7636): BASE64URL(SHA256(verifier)), 43 characters; required unless the confidential client has `require_pkce = false`"),
        ("code_challenge_method" = Option<String>, Query, description = "`S256` (plain is refused)"),
        ("scope" = Option<String>, Query, description = "Space-separated; narrowed as at the token endpoint"),
        ("state" = Option<String>, Query, description = "Returned unchanged"),
        ("nonce" = Option<String>, Query, description = "Kept with the code"),
        ("prompt" = Option<String>, Query, description = "`none`, `login`, `consent` (OIDC Core 3.1.2.1)"),
        ("max_age" = Option<u64>, Query, description = "Seconds since the last password entry that are acceptable"),
        ("login_hint" = Option<String>, Query, description = "Prefills the username"),
        ("transaction" = Option<String>, Query, description = "A request that arrived by POST, resumed"),
    ),
    responses(
        (status = 200, description = "The login or consent page", content_type = "text/html"),
        (status = 303, description = "Back to the redirect URI with `code`, `state` and `iss`, or with `error`, `error_description`, `state` and `iss` (RFC 6749 4.1.2, RFC 9207)"),
        (status = 400, description = "An error page: unknown client, unregistered or missing redirect URI, malformed request (nothing is sent to the client)", content_type = "text/html"),
        (status = 429, description = "An error page: this address opened `limits.sign_in_pages_per_ip` pages in the window; see `Retry-After`", content_type = "text/html"),
        (status = 503, description = "An error page: the store is unreachable", content_type = "text/html"),
    )
)]
pub async fn authorize_get(flows: web::Data<Flows>, req: HttpRequest) -> HttpResponse {
    let snapshot = flows.snapshot();
    let answered = async {
        flows
            .admit_page(&snapshot, &client_ip(&req, &snapshot.config))
            .await?;
        let params = pairs(req.query_string().as_bytes())?;
        let resumed = match params.as_slice() {
            [(name, id)] if name == "transaction" => Some(
                flows.resume_request(id).await?.ok_or_else(|| {
                    AuthorizeError::Page(
                        "This sign-in request has expired. Go back to the application and sign in again."
                            .into(),
                    )
                })?,
            ),
            _ => None,
        };
        let request = match resumed {
            Some(request) => request,
            None => match flows.check_authorization(&snapshot, &params)? {
                Ok(request) => request,
                Err(location) => return Ok((Answer::from(Interaction::Redirect(location)), None)),
            },
        };
        let (browser, new_browser) = browser_binding(&req, &snapshot)?;
        let sign_on = cookie_value(&req, &snapshot, SIGN_ON);
        let answer = flows
            .authorize(&snapshot, request, sign_on.as_deref(), &browser)
            .await?;
        Ok::<_, AuthorizeError>((answer, new_browser.then_some(browser)))
    };
    match answered.await {
        Ok((answer, browser)) => respond(&snapshot, answer, browser),
        Err(e) => refused(&flows, e),
    }
}

/// `POST /oauth/authorize`: the same request as a form, kept and answered 303 to a GET of it,
/// where the browser's `SameSite=Lax` sign-on cookie flows.
#[utoipa::path(
    post,
    path = "/oauth/authorize",
    tag = "oauth",
    request_body(content_type = "application/x-www-form-urlencoded", description = "The parameters of `GET /oauth/authorize`"),
    responses(
        (status = 303, description = "To `GET /oauth/authorize?transaction=…`, or back to the redirect URI with an error"),
        (status = 400, description = "An error page, as for GET", content_type = "text/html"),
        (status = 429, description = "An error page: this address opened `limits.sign_in_pages_per_ip` pages in the window; see `Retry-After`", content_type = "text/html"),
        (status = 503, description = "An error page: the store is unreachable", content_type = "text/html"),
    )
)]
pub async fn authorize_post(
    flows: web::Data<Flows>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let snapshot = flows.snapshot();
    let answered = async {
        if !is_form(&req) {
            return Err(AuthorizeError::Page(
                "The sign-in request must be a form (application/x-www-form-urlencoded).".into(),
            ));
        }
        flows
            .admit_page(&snapshot, &client_ip(&req, &snapshot.config))
            .await?;
        let params = pairs(&body)?;
        match flows.check_authorization(&snapshot, &params)? {
            Ok(request) => {
                let id = flows.park_request(&request).await?;
                Ok(crate::flows::authorize::with_query(
                    "/oauth/authorize",
                    &[("transaction", &id)],
                ))
            }
            Err(location) => Ok(location),
        }
    };
    match answered.await {
        Ok(location) => respond(&snapshot, Interaction::Redirect(location).into(), None),
        Err(e) => refused(&flows, e),
    }
}

/// A page form as it arrived: its fields, the browser's pre-login cookie, its sign-on cookie.
pub(super) struct PageInput {
    params: Vec<(String, String)>,
    browser: String,
    pub(super) sign_on: Option<String>,
}

impl PageInput {
    pub(super) fn read(
        req: &HttpRequest,
        snapshot: &Snapshot,
        body: &[u8],
    ) -> Result<PageInput, AuthorizeError> {
        if !is_form(req) {
            return Err(AuthorizeError::Page("The form is malformed.".into()));
        }
        Ok(PageInput {
            params: pairs(body)?,
            browser: cookie_value(req, snapshot, BROWSER).unwrap_or_default(),
            sign_on: cookie_value(req, snapshot, SIGN_ON),
        })
    }

    /// The fields every page form carries, and its `action`.
    pub(super) fn form(&self) -> Result<(PageForm<'_>, Option<&str>), AuthorizeError> {
        page_form(&self.params, &self.browser)
    }

    /// A field's value; empty when absent.
    fn field(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The fields every page form carries, and the browser's binding.
fn page_form<'a>(
    params: &'a [(String, String)],
    browser: &'a str,
) -> Result<(PageForm<'a>, Option<&'a str>), AuthorizeError> {
    let field = |name: &str| {
        let mut found = params.iter().filter(|(n, _)| n == name);
        match (found.next(), found.next()) {
            (Some((_, v)), None) => Ok(Some(v.as_str())),
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(AuthorizeError::Page("The form is malformed.".into())),
        }
    };
    let stale = || {
        AuthorizeError::Page(
            "This sign-in form has expired or was not opened in this browser. Go back to the \
             application and sign in again."
                .into(),
        )
    };
    let transaction = field("transaction")?.ok_or_else(stale)?;
    let csrf = field("csrf")?.ok_or_else(stale)?;
    let action = field("action")?;
    Ok((
        PageForm {
            transaction,
            csrf,
            browser,
            cancel: action == Some("cancel") || action == Some("deny"),
        },
        action,
    ))
}

/// `POST /oauth/authorize/login`: the login page's form.
#[utoipa::path(
    post,
    path = "/oauth/authorize/login",
    tag = "oauth",
    request_body(content_type = "application/x-www-form-urlencoded", description = "`transaction`, `csrf`, `username`, `password`, and `action` = `login` or `cancel`"),
    responses(
        (status = 303, description = "Onwards: back to the client with a code (or `access_denied` after Cancel), or to the consent page"),
        (status = 200, description = "The consent page", content_type = "text/html"),
        (status = 400, description = "An error page: the form is stale, forged, or from another browser", content_type = "text/html"),
        (status = 401, description = "The login page again: wrong username or password", content_type = "text/html"),
        (status = 429, description = "The login page again: too many attempts; see `Retry-After`", content_type = "text/html"),
        (status = 503, description = "The login page or an error page: the service is busy", content_type = "text/html"),
    )
)]
pub async fn login_form(
    flows: web::Data<Flows>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let snapshot = flows.snapshot();
    let answered = async {
        let input = PageInput::read(&req, &snapshot, &body)?;
        let (form, _) = input.form()?;
        let password = Password::new(input.field("password").to_owned());
        let meta = request_meta(&req, &snapshot.config);
        flows
            .login_on_page(
                &snapshot,
                form,
                input.field("username"),
                &password,
                &meta,
                input.sign_on.as_deref(),
            )
            .await
    };
    match answered.await {
        Ok(answer) => respond(&snapshot, answer, None),
        Err(e) => refused(&flows, e),
    }
}

/// `POST /oauth/authorize/consent`: the consent page's form.
#[utoipa::path(
    post,
    path = "/oauth/authorize/consent",
    tag = "oauth",
    request_body(content_type = "application/x-www-form-urlencoded", description = "`transaction`, `csrf`, and `action` = `allow` or `deny`"),
    responses(
        (status = 303, description = "Back to the client: a code after Allow, `access_denied` after Deny"),
        (status = 200, description = "The login page, when the sign-on ended meanwhile", content_type = "text/html"),
        (status = 400, description = "An error page: the form is stale, forged, or from another browser", content_type = "text/html"),
        (status = 503, description = "An error page: the service is busy", content_type = "text/html"),
    )
)]
pub async fn consent_form(
    flows: web::Data<Flows>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let snapshot = flows.snapshot();
    let answered = async {
        let input = PageInput::read(&req, &snapshot, &body)?;
        let (form, action) = input.form()?;
        flows
            .consent_on_page(
                &snapshot,
                form,
                action == Some("allow"),
                input.sign_on.as_deref(),
            )
            .await
    };
    match answered.await {
        Ok(answer) => respond(&snapshot, answer, None),
        Err(e) => refused(&flows, e),
    }
}

/// `GET /oauth/pages.css`: the hosted pages' one stylesheet.
#[utoipa::path(
    get,
    path = "/oauth/pages.css",
    tag = "oauth",
    responses((status = 200, description = "The stylesheet of the hosted pages", content_type = "text/css"))
)]
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(PAGES_CSS)
}
