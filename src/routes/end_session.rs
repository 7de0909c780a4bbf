//! The end-session endpoint (RP-Initiated Logout 1.0, `docs/openid-connect.md#logout`):
//! `GET|POST /oauth/logout` and its confirmation form. The pages, cookies and form handling are
//! the sign-in pages' (`super::authorize`).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::authorize::{
    BROWSER, PageInput, SIGN_ON, browser_binding, cookie, cookie_value, is_form, page_headers,
    pairs, refused, render,
};
use crate::flows::Flows;
use crate::flows::authorize::{AuthorizeError, PageForm};
use crate::flows::end_session::{EndSessionAnswer, EndSessionRequest};
use crate::state::Snapshot;

/// The answer to an end-session step: a redirect, the confirmation page or the signed-out page,
/// with the sign-on cookie removed when it ended.
fn end_session_answer(
    snapshot: &Snapshot,
    answer: EndSessionAnswer,
    browser: Option<String>,
    signed_out: bool,
) -> HttpResponse {
    let mut response = match answer {
        EndSessionAnswer::Redirect(location) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, location))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .finish(),
        EndSessionAnswer::Confirm { transaction, csrf } => {
            let mut builder = HttpResponse::Ok();
            page_headers(&mut builder, None);
            render(
                builder,
                "logout.html",
                minijinja::context! { transaction => transaction, csrf => csrf },
            )
        }
        EndSessionAnswer::SignedOut => {
            let mut builder = HttpResponse::Ok();
            page_headers(&mut builder, None);
            let (heading, message) = if signed_out {
                ("You are signed out", "You can close this window.")
            } else {
                (
                    "Still signed in",
                    "Nothing was changed. You can close this window.",
                )
            };
            render(
                builder,
                "signed_out.html",
                minijinja::context! { heading => heading, message => message },
            )
        }
    };
    if signed_out {
        let mut removal = cookie(snapshot, SIGN_ON, String::new(), None);
        removal.make_removal();
        let _ = response.add_cookie(&removal);
    }
    if let Some(value) = browser {
        let _ = response.add_cookie(&cookie(snapshot, BROWSER, value, None));
    }
    response
}

/// `GET` and `POST /oauth/logout`: RP-Initiated Logout 1.0.
#[utoipa::path(
    get,
    path = "/oauth/logout",
    tag = "oauth",
    params(
        ("id_token_hint" = Option<String>, Query, description = "An ID token latchkey issued to the client: with one that verifies, the sign-out needs no confirmation"),
        ("post_logout_redirect_uri" = Option<String>, Query, description = "One of the client's `post_logout_redirect_uris`, exactly"),
        ("state" = Option<String>, Query, description = "Returned unchanged to the post-logout redirect URI"),
        ("client_id" = Option<String>, Query, description = "The client, when there is no hint"),
    ),
    responses(
        (status = 200, description = "The confirmation page (no hint, or one that does not verify), or the signed-out page", content_type = "text/html"),
        (status = 303, description = "Signed out; to the post-logout redirect URI with `state`"),
        (status = 400, description = "An error page: an unregistered post-logout redirect URI, a client that differs from the hint's, a malformed request", content_type = "text/html"),
        (status = 429, description = "An error page: this address opened `limits.sign_in_pages_per_ip` pages in the window; see `Retry-After`", content_type = "text/html"),
        (status = 503, description = "An error page: the store is unreachable", content_type = "text/html"),
    )
)]
pub async fn end_session_get(flows: web::Data<Flows>, req: HttpRequest) -> HttpResponse {
    end_session_with(flows, req, None).await
}

/// `POST /oauth/logout`: the same parameters as a form.
#[utoipa::path(
    post,
    path = "/oauth/logout",
    tag = "oauth",
    request_body(content_type = "application/x-www-form-urlencoded", description = "The parameters of `GET /oauth/logout`"),
    responses(
        (status = 200, description = "The confirmation or signed-out page", content_type = "text/html"),
        (status = 303, description = "Signed out; to the post-logout redirect URI with `state`"),
        (status = 400, description = "An error page", content_type = "text/html"),
        (status = 429, description = "An error page: this address opened `limits.sign_in_pages_per_ip` pages in the window; see `Retry-After`", content_type = "text/html"),
        (status = 503, description = "An error page: the store is unreachable", content_type = "text/html"),
    )
)]
pub async fn end_session_post(
    flows: web::Data<Flows>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    end_session_with(flows, req, Some(body)).await
}

async fn end_session_with(
    flows: web::Data<Flows>,
    req: HttpRequest,
    body: Option<web::Bytes>,
) -> HttpResponse {
    let snapshot = flows.snapshot();
    let answered = async {
        flows
            .admit_page(&snapshot, &super::client_ip(&req, &snapshot.config))
            .await?;
        let params = match &body {
            Some(_) if !is_form(&req) => {
                return Err(AuthorizeError::Page(
                    "The sign-out request must be a form.".into(),
                ));
            }
            Some(body) => pairs(body)?,
            None => pairs(req.query_string().as_bytes())?,
        };
        let get = |name: &str| -> Result<Option<&str>, AuthorizeError> {
            let mut found = params.iter().filter(|(n, v)| n == name && !v.is_empty());
            match (found.next(), found.next()) {
                (Some((_, v)), None) => Ok(Some(v.as_str())),
                (None, _) => Ok(None),
                (Some(_), Some(_)) => Err(AuthorizeError::Page(
                    "The sign-out request names a parameter more than once.".into(),
                )),
            }
        };
        let request = EndSessionRequest {
            id_token_hint: get("id_token_hint")?,
            post_logout_redirect_uri: get("post_logout_redirect_uri")?,
            state: get("state")?,
            client_id: get("client_id")?,
        };
        let (browser, new_browser) = browser_binding(&req, &snapshot)?;
        let sign_on = cookie_value(&req, &snapshot, SIGN_ON);
        let answer = flows
            .sign_out(&snapshot, request, sign_on.as_deref(), &browser)
            .await?;
        Ok::<_, AuthorizeError>((answer, new_browser.then_some(browser)))
    };
    match answered.await {
        Ok((answer, browser)) => {
            let signed_out = !matches!(answer, EndSessionAnswer::Confirm { .. });
            end_session_answer(&snapshot, answer, browser, signed_out)
        }
        Err(e) => refused(&flows, e),
    }
}

/// `POST /oauth/logout/confirm`: the confirmation page's form.
#[utoipa::path(
    post,
    path = "/oauth/logout/confirm",
    tag = "oauth",
    request_body(content_type = "application/x-www-form-urlencoded", description = "`transaction`, `csrf`, and `action` = `logout` or `cancel`"),
    responses(
        (status = 200, description = "The signed-out page (or, after Cancel, the page that says nothing changed)", content_type = "text/html"),
        (status = 303, description = "Signed out; to the post-logout redirect URI the request was allowed"),
        (status = 400, description = "An error page: the form is stale, forged, or from another browser", content_type = "text/html"),
        (status = 503, description = "An error page: the store is unreachable", content_type = "text/html"),
    )
)]
pub async fn end_session_confirm(
    flows: web::Data<Flows>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let snapshot = flows.snapshot();
    let answered = async {
        let input = PageInput::read(&req, &snapshot, &body)?;
        let (form, action) = input.form()?;
        let cancel = action != Some("logout");
        let form = PageForm { cancel, ..form };
        let answer = flows
            .confirm_sign_out(&snapshot, form, input.sign_on.as_deref())
            .await?;
        Ok::<_, AuthorizeError>((answer, !cancel))
    };
    match answered.await {
        Ok((answer, signed_out)) => end_session_answer(&snapshot, answer, None, signed_out),
        Err(e) => refused(&flows, e),
    }
}
