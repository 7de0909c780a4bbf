//! RP-Initiated Logout 1.0: a relying party sends the browser to the end-session endpoint to
//! end the user's sign-on at latchkey and the sessions that sign-on started (those granted
//! `offline_access` outlive it), and may be sent back to a `post_logout_redirect_uri` it
//! registered (`docs/openid-connect.md`).
//!
//! Only an `id_token_hint` that verifies (an ID token latchkey signed with a key it still
//! publishes, its `iss`, not expired) identifies the client by itself. Without one, or with one
//! that does not verify, the user is asked on a page; the browser then goes back only to a URI
//! registered for the `client_id` the request named, never elsewhere.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use super::authorize::{AuthorizeError, PageForm, digest_hex, random_token, with_query};
use super::{FlowError, Flows};
use crate::clock::UnixMs;
use crate::config::valid_identifier;
use crate::state::Snapshot;

/// How long the confirmation page may stay open.
const CONFIRMATION_TTL_MS: i64 = 10 * 60 * 1000;
/// The longest `id_token_hint` read.
const MAX_HINT_LEN: usize = 16 * 1024;

/// An end-session request's parameters.
#[derive(Clone, Copy, Debug, Default)]
pub struct EndSessionRequest<'a> {
    pub id_token_hint: Option<&'a str>,
    pub post_logout_redirect_uri: Option<&'a str>,
    pub state: Option<&'a str>,
    pub client_id: Option<&'a str>,
}

/// How an end-session request is answered.
#[derive(Debug)]
pub enum EndSessionAnswer {
    /// Signed out; back to the client's registered URI (with `state`).
    Redirect(String),
    /// Signed out; the page that says so.
    SignedOut,
    /// The user is asked first (the hint was missing or did not verify).
    Confirm { transaction: String, csrf: String },
}

/// A confirmation waiting for the user.
#[derive(Debug, Serialize, Deserialize)]
struct Confirmation {
    csrf: String,
    browser: String,
    /// Where to go afterwards (registered for the named client), with `state`.
    redirect: Option<String>,
    expires_at: UnixMs,
}

fn confirmation_key(id: &str) -> String {
    format!("logout-tx:{}", digest_hex(id))
}

/// The claims of a hint that verified.
#[derive(Debug, Deserialize)]
pub(super) struct HintClaims {
    iss: String,
    pub(super) sub: String,
    aud: serde_json::Value,
    exp: i64,
    #[serde(default)]
    sid: Option<String>,
}

impl HintClaims {
    fn audience(&self) -> Option<&str> {
        match &self.aud {
            serde_json::Value::String(aud) => Some(aud),
            serde_json::Value::Array(list) if list.len() == 1 => list[0].as_str(),
            _ => None,
        }
    }
}

impl Flows {
    /// The claims of `hint` when it is an ID token latchkey signed with a key it publishes,
    /// unexpired unless `expired_ok`: the signature is checked before anything else is read.
    pub(super) fn verified_hint(
        &self,
        snapshot: &Snapshot,
        hint: &str,
        expired_ok: bool,
    ) -> Option<HintClaims> {
        if hint.len() > MAX_HINT_LEN {
            return None;
        }
        let mut parts = hint.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: serde_json::Value = serde_json::from_slice(&B64.decode(header).ok()?).ok()?;
        let kid = header.get("kid")?.as_str()?;
        let now = self.clock.now_ms();
        let key = snapshot.keys.verifying(kid, now)?;
        // The algorithm is the key's; a header claiming another (`none`, HS256) is refused.
        if header.get("alg")?.as_str()? != key.alg().as_str()
            || header.get("typ")?.as_str()? != "JWT"
        {
            return None;
        }
        let signing_input = &hint[..header_len(hint)?];
        if !key.verifies(signing_input.as_bytes(), &B64.decode(signature).ok()?) {
            return None;
        }
        let claims: HintClaims = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        let leeway = crate::clock::duration_ms(snapshot.config.tokens.leeway) / 1000;
        (claims.iss == snapshot.config.issuer
            && (expired_ok || claims.exp + leeway > now.div_euclid(1000)))
        .then_some(claims)
    }

    /// Answers an end-session request from the browser whose sign-on cookie is `sign_on` and
    /// whose pre-login cookie is `browser`.
    pub async fn sign_out(
        &self,
        snapshot: &Snapshot,
        request: EndSessionRequest<'_>,
        sign_on: Option<&str>,
        browser: &str,
    ) -> Result<EndSessionAnswer, AuthorizeError> {
        let page = |message: &'static str| Err(AuthorizeError::Page(message.into()));
        if request.state.is_some_and(|s| s.len() > 2048)
            || request
                .post_logout_redirect_uri
                .is_some_and(|u| u.len() > 2048)
        {
            return page("The sign-out request is malformed.");
        }
        let hint = request
            .id_token_hint
            .and_then(|h| self.verified_hint(snapshot, h, false));
        // The client: the hint's audience, or the named client_id; both must agree.
        let client_id = match (&hint, request.client_id) {
            (Some(h), Some(named)) if h.audience() != Some(named) => {
                return page("The sign-out request names two different applications.");
            }
            (Some(h), _) => h.audience(),
            (None, named) => named.filter(|id| valid_identifier(id)),
        };
        let client = client_id.and_then(|id| snapshot.config.client(id));
        let redirect = match (request.post_logout_redirect_uri, client) {
            (Some(uri), Some(client))
                if client.post_logout_redirect_uris.iter().any(|r| r == uri) =>
            {
                let mut params = Vec::new();
                if let Some(state) = request.state {
                    params.push(("state", state));
                }
                Some(with_query(uri, &params))
            }
            (Some(_), _) => {
                return page(
                    "The application asked to send you to an address it has not registered for \
                     after sign-out.",
                );
            }
            (None, _) => None,
        };
        if hint.is_none() {
            // Ask first: a link on another site must not sign anyone out silently.
            let transaction = random_token()?;
            let csrf = random_token()?;
            let confirmation = Confirmation {
                csrf: csrf.clone(),
                browser: digest_hex(browser),
                redirect,
                expires_at: self.clock.now_ms() + CONFIRMATION_TTL_MS,
            };
            let value = serde_json::to_string(&confirmation).map_err(FlowError::internal)?;
            self.store
                .put_record(
                    &confirmation_key(&transaction),
                    &value,
                    confirmation.expires_at,
                )
                .await
                .map_err(FlowError::from)?;
            return Ok(EndSessionAnswer::Confirm { transaction, csrf });
        }
        if let Some(cookie) = sign_on {
            self.end_sign_on_and_families(snapshot, cookie).await?;
        }
        // The session the hint names ends too (it may come from a sign-on in another browser).
        if let Some(sid) = hint
            .as_ref()
            .and_then(|h| h.sid.as_deref())
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            && let Some(session) = self
                .store
                .session(sid, self.clock.now_ms())
                .await
                .map_err(FlowError::from)?
            && !session.scope.split(' ').any(|s| s == "offline_access")
            && self
                .store
                .revoke_session(
                    sid,
                    &crate::store::LogNote::new(
                        &snapshot.config.revocation_retention(),
                        crate::store::RevocationReason::Logout,
                        self.clock.now_ms(),
                    ),
                )
                .await
                .map_err(FlowError::from)?
        {
            self.revoked(crate::metrics::RevokeCause::Logout, 1, Some(sid));
        }
        tracing::info!(
            event = "sso.ended",
            client_id = client_id.unwrap_or("-"),
            "signed out by the end-session endpoint"
        );
        Ok(match redirect {
            Some(url) => EndSessionAnswer::Redirect(url),
            None => EndSessionAnswer::SignedOut,
        })
    }

    /// The confirmation page's form: `cancel` keeps everything; otherwise the sign-on and its
    /// sessions end, and the browser goes where the request was allowed to send it.
    pub async fn confirm_sign_out(
        &self,
        snapshot: &Snapshot,
        form: PageForm<'_>,
        sign_on: Option<&str>,
    ) -> Result<EndSessionAnswer, AuthorizeError> {
        let stale = || {
            AuthorizeError::Page(
                "This sign-out form has expired or was not opened in this browser.".into(),
            )
        };
        if form.transaction.len() > 64 || form.csrf.len() > 64 || form.browser.is_empty() {
            return Err(stale());
        }
        let key = confirmation_key(form.transaction);
        let stored = self
            .store
            .record(&key, self.clock.now_ms())
            .await
            .map_err(FlowError::from)?
            .ok_or_else(stale)?;
        let confirmation: Confirmation = serde_json::from_str(&stored).map_err(|_| stale())?;
        let same = |a: &str, b: &str| {
            aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
        };
        if !same(&confirmation.csrf, form.csrf)
            || !same(&confirmation.browser, &digest_hex(form.browser))
        {
            return Err(stale());
        }
        self.store
            .delete_record(&key)
            .await
            .map_err(FlowError::from)?;
        if !form.cancel
            && let Some(cookie) = sign_on
        {
            self.end_sign_on_and_families(snapshot, cookie).await?;
            tracing::info!(event = "sso.ended", "signed out after confirmation");
        }
        Ok(match confirmation.redirect {
            Some(url) if !form.cancel => EndSessionAnswer::Redirect(url),
            _ => EndSessionAnswer::SignedOut,
        })
    }
}

/// The length of `header.payload` in a compact JWS.
fn header_len(jws: &str) -> Option<usize> {
    jws.rfind('.')
}
