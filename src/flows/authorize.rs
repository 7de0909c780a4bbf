//! The authorization endpoint (RFC 6749 §4.1, PKCE per RFC 7636, `iss` per RFC 9207): a
//! request is checked, then answered with a code when the browser's sign-on and the user's
//! consent allow it, or with the hosted login or consent page (`docs/sign-in-by-redirect.md`).
//!
//! Order matters for safety. `client_id` and `redirect_uri` are checked first, and while either
//! is in doubt nothing is sent to the redirect URI: the caller shows an error page instead
//! (RFC 6749 §4.1.2.1, no open redirect). Every later error goes back to the client.
//!
//! A request that needs the user is kept as a transaction (`tx:<id>`, ten minutes) with a CSRF
//! token, bound to a pre-login cookie of the browser that started it: a login or consent form
//! is accepted only with both.

use std::borrow::Cow;
use std::collections::HashMap;

use aws_lc_rs::rand::SecureRandom;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use super::sso::SignOn;
use super::{FlowError, Flows, RequestMeta, normalize_username, scopes};
use crate::clock::UnixMs;
use crate::config::{ClientSpec, Consent, GrantType, valid_identifier};
use crate::credentials::{MAX_PASSWORD_BYTES, Password};
use crate::metrics::LoginOutcome;
use crate::state::Snapshot;
use crate::store::User;

/// How long a login or consent page may stay open.
const TRANSACTION_TTL_MS: i64 = 10 * 60 * 1000;
/// Parameters of one authorization request, at most.
const MAX_PARAMETERS: usize = 64;
/// The longest value of any parameter (a redirect URI has its own, shorter limit).
const MAX_VALUE_LEN: usize = 2048;

/// SHA-256 of `text`, in hex: the store keeps only digests of what browsers hold.
pub(super) fn digest_hex(text: &str) -> String {
    crate::encoding::hex(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref(),
    )
}

/// 256 random bits, base64url: cookie values, CSRF tokens, transaction ids.
pub fn random_token() -> Result<String, FlowError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| FlowError::internal(crate::tokens::RandomError))?;
    Ok(B64.encode(bytes))
}

/// What `prompt` asked for (OIDC Core §3.1.2.1).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Prompt {
    /// Never show a page: answer `login_required` / `consent_required` instead.
    pub none: bool,
    /// Ask for the password even with a live sign-on.
    pub login: bool,
    /// Ask for consent even when it was given before.
    pub consent: bool,
}

/// A checked authorization request, as a transaction keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    /// Where the browser goes back to: registered for the client.
    pub redirect_uri: String,
    /// The request named it (then the token request must name the same, RFC 6749 §4.1.3).
    pub redirect_uri_given: bool,
    pub state: Option<String>,
    /// The scopes asked for, each one the client may carry.
    pub scope: Option<Vec<String>>,
    /// The PKCE S256 challenge.
    pub code_challenge: Option<String>,
    pub nonce: Option<String>,
    pub prompt: Prompt,
    /// Seconds since the last password entry the client accepts.
    pub max_age: Option<u64>,
    pub login_hint: Option<String>,
    /// The `sub` of a verified `id_token_hint`: only that user's sign-on answers the request.
    #[serde(default)]
    pub hinted_subject: Option<String>,
}

/// Why no redirect can be trusted: shown on an error page, never sent to the client.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error("{0}")]
    Page(Cow<'static, str>),
    #[error(transparent)]
    Flow(#[from] FlowError),
}

/// The login page of a transaction.
#[derive(Debug)]
pub struct LoginPage {
    pub transaction: String,
    pub csrf: String,
    pub client_name: String,
    pub redirect_uri: String,
    /// Prefilled: the hint, or what was typed.
    pub username: String,
    pub problem: Option<LoginProblem>,
}

/// Why the login page is shown again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginProblem {
    BadCredentials,
    Throttled {
        retry_after_secs: u64,
    },
    /// The store or the hashing queue is busy: try again shortly.
    Unavailable,
}

/// The consent page of a transaction.
#[derive(Debug)]
pub struct ConsentPage {
    pub transaction: String,
    pub csrf: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub username: String,
    pub scopes: Vec<String>,
}

/// How an authorization step is answered.
#[derive(Debug)]
pub enum Interaction {
    /// Back to the client: a code, or an error (RFC 6749 §4.1.2).
    Redirect(String),
    Login(LoginPage),
    Consent(ConsentPage),
}

/// An answer, and the sign-on cookie to set when a login started one.
#[derive(Debug)]
pub struct Answer {
    pub interaction: Interaction,
    pub new_sign_on: Option<String>,
}

impl From<Interaction> for Answer {
    fn from(interaction: Interaction) -> Answer {
        Answer {
            interaction,
            new_sign_on: None,
        }
    }
}

/// A request waiting for the user.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Transaction {
    request: AuthorizationRequest,
    csrf: String,
    /// Digest of the pre-login cookie of the browser that started it.
    browser: String,
    expires_at: UnixMs,
    /// The user the consent page was shown to: only that user's decision counts.
    consent_for: Option<String>,
}

fn transaction_key(id: &str) -> String {
    format!("tx:{}", digest_hex(id))
}

/// `uri` with `params` appended to its query (RFC 6749 §4.1.2: the redirect URI's own query
/// is kept).
pub fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const VALUE: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let mut url = uri.to_owned();
    let mut separator = if uri.contains('?') { '&' } else { '?' };
    for (name, value) in params {
        url.push(separator);
        url.push_str(name);
        url.push('=');
        url.extend(utf8_percent_encode(value, VALUE));
        separator = '&';
    }
    url
}

/// An error redirect (RFC 6749 §4.1.2.1, RFC 9207).
fn error_redirect(
    snapshot: &Snapshot,
    request: &AuthorizationRequest,
    error: &str,
    description: &str,
) -> Interaction {
    Interaction::Redirect(redirect_back(
        snapshot,
        &request.redirect_uri,
        request.state.as_deref(),
        &[("error", error), ("error_description", description)],
    ))
}

fn redirect_back(
    snapshot: &Snapshot,
    redirect_uri: &str,
    state: Option<&str>,
    params: &[(&str, &str)],
) -> String {
    let mut all: Vec<(&str, &str)> = params.to_vec();
    if let Some(state) = state {
        all.push(("state", state));
    }
    all.push(("iss", &snapshot.config.issuer));
    with_query(redirect_uri, &all)
}

/// What a request is granted for `user`: narrowed as at the token endpoint, except that an app
/// signing in by redirect gets the account API (sessions, password) only when it asks for it by
/// name, never by asking for nothing.
fn granted_scope(
    client: &ClientSpec,
    request: &AuthorizationRequest,
    user: &User,
) -> Result<String, FlowError> {
    let scope = scopes::for_user(client, request.scope.as_deref(), &user.scopes)?;
    if request.scope.is_some() {
        return Ok(scope);
    }
    Ok(scope
        .split(' ')
        .filter(|s| *s != scopes::ACCOUNT)
        .collect::<Vec<_>>()
        .join(" "))
}

/// The parameters of a request, each at most once.
struct Parameters<'a> {
    values: HashMap<&'a str, &'a str>,
    repeated: Vec<&'a str>,
}

impl<'a> Parameters<'a> {
    fn new(pairs: &'a [(String, String)]) -> Parameters<'a> {
        let mut values = HashMap::new();
        let mut repeated = Vec::new();
        for (name, value) in pairs {
            // RFC 6749 §3.1: a parameter sent without a value is treated as omitted.
            if value.is_empty() {
                continue;
            }
            if values.insert(name.as_str(), value.as_str()).is_some() {
                repeated.push(name.as_str());
            }
        }
        Parameters { values, repeated }
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.values.get(name).copied()
    }
}

impl Flows {
    /// Checks an authorization request's parameters (from the query, or a form body). `Err`:
    /// show an error page; `Ok(Err(url))`: send the browser back with an error.
    pub fn check_authorization(
        &self,
        snapshot: &Snapshot,
        pairs: &[(String, String)],
    ) -> Result<Result<AuthorizationRequest, String>, AuthorizeError> {
        let page = |message: &'static str| Err(AuthorizeError::Page(message.into()));
        if pairs.len() > MAX_PARAMETERS {
            return page("The sign-in request has too many parameters.");
        }
        let params = Parameters::new(pairs);
        if params.repeated.contains(&"client_id") {
            return page("The sign-in request names client_id more than once.");
        }
        if params.repeated.contains(&"redirect_uri") {
            return page("The sign-in request names redirect_uri more than once.");
        }
        let Some(client_id) = params.get("client_id") else {
            return page(
                "The sign-in request does not say which application it comes from (client_id).",
            );
        };
        let client = match valid_identifier(client_id)
            .then(|| snapshot.config.client(client_id))
            .flatten()
        {
            Some(client) => client,
            None => {
                return page(
                    "The application that sent you here is not registered with this issuer.",
                );
            }
        };
        let redirect_uri = match params.get("redirect_uri") {
            Some(uri) if client.redirect_uri_registered(uri) => uri.to_owned(),
            Some(_) => {
                return page(
                    "The application asked to send you back to an address it has not registered.",
                );
            }
            None => match client.redirect_uris.as_slice() {
                [only] => only.clone(),
                _ => {
                    return page(
                        "The sign-in request does not say where to send you back (redirect_uri).",
                    );
                }
            },
        };
        let state = params.get("state").map(str::to_owned);
        let back = |error: &str, description: &str| {
            Ok(Err(redirect_back(
                snapshot,
                &redirect_uri,
                state.as_deref().filter(|s| s.len() <= MAX_VALUE_LEN),
                &[("error", error), ("error_description", description)],
            )))
        };
        if let Some(name) = params.repeated.first() {
            return back(
                "invalid_request",
                &format!("the parameter {name} appears more than once"),
            );
        }
        if let Some((name, _)) = params.values.iter().find(|(_, v)| v.len() > MAX_VALUE_LEN) {
            return back(
                "invalid_request",
                &format!("the parameter {name} is longer than {MAX_VALUE_LEN} bytes"),
            );
        }
        if !client.may(GrantType::AuthorizationCode) {
            return back(
                "unauthorized_client",
                "this client may not use the authorization code grant",
            );
        }
        match params.get("response_type") {
            Some("code") => {}
            None => return back("invalid_request", "response_type is required"),
            Some(_) => {
                return back(
                    "unsupported_response_type",
                    "only response_type=code is supported",
                );
            }
        }
        if params.get("request").is_some() {
            return back("request_not_supported", "request objects are not supported");
        }
        if params.get("request_uri").is_some() {
            return back("request_uri_not_supported", "request_uri is not supported");
        }
        if params.get("response_mode").is_some_and(|m| m != "query") {
            return back("invalid_request", "only response_mode=query is supported");
        }
        let code_challenge = match (
            params.get("code_challenge"),
            params.get("code_challenge_method"),
        ) {
            (Some(_), Some(method)) if method != "S256" => {
                return back(
                    "invalid_request",
                    "code_challenge_method must be S256 (plain is not supported)",
                );
            }
            // RFC 7636 §4.3: no method means plain, which is refused.
            (Some(_), None) => {
                return back(
                    "invalid_request",
                    "code_challenge_method=S256 is required (plain is not supported)",
                );
            }
            (Some(challenge), Some(_)) => {
                if challenge.len() != 43
                    || !challenge
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return back(
                        "invalid_request",
                        "code_challenge must be the 43-character base64url SHA-256 of the verifier",
                    );
                }
                Some(challenge.to_owned())
            }
            (None, Some(_)) => {
                return back(
                    "invalid_request",
                    "code_challenge_method without code_challenge",
                );
            }
            (None, None) if client.require_pkce => {
                return back(
                    "invalid_request",
                    "this client must send a PKCE code_challenge (S256)",
                );
            }
            (None, None) => None,
        };
        let scope = match scopes::parse(params.get("scope")) {
            Ok(scope) => scope,
            Err(e) => return back("invalid_scope", &e.to_string()),
        };
        if let Some(denied) = scope.iter().flatten().find(|s| !client.allows_scope(s)) {
            return back(
                "invalid_scope",
                &format!("the client may not request {denied:?}"),
            );
        }
        let mut prompt = Prompt::default();
        for value in params
            .get("prompt")
            .unwrap_or("")
            .split(' ')
            .filter(|v| !v.is_empty())
        {
            match value {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                "consent" => prompt.consent = true,
                // One account per sign-on: there is nothing to select.
                "select_account" => {}
                _ => {
                    return back(
                        "invalid_request",
                        "prompt: none, login, consent or select_account",
                    );
                }
            }
        }
        if prompt.none && (prompt.login || prompt.consent) {
            return back(
                "invalid_request",
                "prompt=none cannot be combined with other values",
            );
        }
        let max_age = match params.get("max_age").map(str::parse::<u64>) {
            None => None,
            Some(Ok(age)) => Some(age),
            Some(Err(_)) => return back("invalid_request", "max_age must be a number of seconds"),
        };
        if params.get("registration").is_some() {
            return back(
                "registration_not_supported",
                "the registration parameter is not supported",
            );
        }
        // OIDC Core §3.1.2.1: the hint may have expired; it must be ours and verify.
        let hinted_subject = match params.get("id_token_hint") {
            None => None,
            Some(hint) => match self.verified_hint(snapshot, hint, true) {
                Some(claims) => Some(claims.sub),
                None => {
                    return back(
                        "invalid_request",
                        "id_token_hint is not an ID token of this issuer",
                    );
                }
            },
        };
        let login_hint = params
            .get("login_hint")
            .filter(|h| h.chars().count() <= super::MAX_USERNAME_CHARS)
            .map(str::to_owned);
        Ok(Ok(AuthorizationRequest {
            client_id: client.id.clone(),
            redirect_uri,
            redirect_uri_given: params.get("redirect_uri").is_some(),
            state,
            scope,
            code_challenge,
            nonce: params.get("nonce").map(str::to_owned),
            prompt,
            max_age,
            login_hint,
            hinted_subject,
        }))
    }

    /// Answers a checked request for the browser whose sign-on cookie is `sign_on` and whose
    /// pre-login cookie is `browser`: a code when the sign-on and consent allow, else a page
    /// (a new transaction), or an error redirect.
    pub async fn authorize(
        &self,
        snapshot: &Snapshot,
        request: AuthorizationRequest,
        sign_on: Option<&str>,
        browser: &str,
    ) -> Result<Answer, AuthorizeError> {
        let signed_on = self.sign_on(snapshot, sign_on).await?;
        let now_secs = self.clock.now_secs();
        let signed_on = signed_on.filter(|(s, user)| {
            !request.prompt.login
                && request.max_age.is_none_or(|age| {
                    now_secs - s.auth_time <= i64::try_from(age).unwrap_or(i64::MAX)
                })
                // Another user's ID token as hint: this sign-on does not answer for them.
                && request.hinted_subject.as_ref().is_none_or(|sub| *sub == user.id)
        });
        let answer = self
            .proceed(snapshot, request, signed_on, browser, false)
            .await?;
        self.count(&answer.interaction);
        Ok(answer)
    }

    fn count(&self, interaction: &Interaction) {
        self.metrics.authorization(match interaction {
            Interaction::Redirect(url) if url.contains("?code=") || url.contains("&code=") => {
                "code"
            }
            Interaction::Redirect(_) => "error_redirect",
            Interaction::Login(_) => "login_page",
            Interaction::Consent(_) => "consent_page",
        });
    }

    /// Admits a request that may open a page (and so a record the store keeps ten minutes) from
    /// `ip`: refused past `limits.sign_in_pages_per_ip` in the window.
    pub async fn admit_page(&self, snapshot: &Snapshot, ip: &str) -> Result<(), FlowError> {
        self.limiter
            .check_page(&snapshot.config.limits, ip, self.clock.now_ms())
            .await?
            .map_err(|t| {
                tracing::debug!(event = "page.throttled", %ip, "sign-in page refused: throttled");
                FlowError::Throttled {
                    retry_after_secs: t.retry_after_secs,
                }
            })
    }

    /// Counts an authorization request answered with an error page.
    pub fn count_error_page(&self) {
        self.metrics.authorization("error_page");
    }

    /// With the user known (or not), the next step: a login page, a consent page, a code.
    async fn proceed(
        &self,
        snapshot: &Snapshot,
        request: AuthorizationRequest,
        signed_on: Option<(SignOn, User)>,
        browser: &str,
        consented: bool,
    ) -> Result<Answer, AuthorizeError> {
        let Some(client) = snapshot.config.client(&request.client_id).cloned() else {
            return Err(AuthorizeError::Page(
                "The application is no longer registered with this issuer.".into(),
            ));
        };
        let Some((sign_on, user)) = signed_on else {
            if request.prompt.none {
                return Ok(error_redirect(
                    snapshot,
                    &request,
                    "login_required",
                    "the user is not signed in",
                )
                .into());
            }
            let login_hint = request.login_hint.clone().unwrap_or_default();
            let (transaction, csrf) = self.open_transaction(&request, browser, None).await?;
            return Ok(Interaction::Login(LoginPage {
                transaction,
                csrf,
                client_name: client.display_name().to_owned(),
                redirect_uri: request.redirect_uri.clone(),
                username: login_hint,
                problem: None,
            })
            .into());
        };
        let scope = match granted_scope(&client, &request, &user) {
            Ok(scope) => scope,
            Err(e) => {
                return Ok(
                    error_redirect(snapshot, &request, "invalid_scope", &e.to_string()).into(),
                );
            }
        };
        if !consented && self.needs_consent(&client, &request, &user, &scope).await? {
            if request.prompt.none {
                return Ok(error_redirect(
                    snapshot,
                    &request,
                    "consent_required",
                    "the user has not allowed this client",
                )
                .into());
            }
            let (transaction, csrf) = self
                .open_transaction(&request, browser, Some(&user.id))
                .await?;
            return Ok(Interaction::Consent(ConsentPage {
                transaction,
                csrf,
                client_name: client.display_name().to_owned(),
                redirect_uri: request.redirect_uri.clone(),
                username: user.username.clone(),
                scopes: scope
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
            .into());
        }
        let code = self
            .issue_code(snapshot, &client, &request, &user, &sign_on, &scope)
            .await?;
        Ok(Interaction::Redirect(redirect_back(
            snapshot,
            &request.redirect_uri,
            request.state.as_deref(),
            &[("code", &code)],
        ))
        .into())
    }

    async fn needs_consent(
        &self,
        client: &ClientSpec,
        request: &AuthorizationRequest,
        user: &User,
        scope: &str,
    ) -> Result<bool, FlowError> {
        match client.consent {
            Consent::Skip if !request.prompt.consent => Ok(false),
            Consent::Always => Ok(true),
            _ if request.prompt.consent => Ok(true),
            _ => {
                let consents =
                    super::grants::consents(&self.store, &user.id, self.clock.now_ms()).await?;
                Ok(!consents.get(&client.id).is_some_and(|given| {
                    let allowed: Vec<&str> = given.scope.split(' ').collect();
                    scope
                        .split(' ')
                        .filter(|s| !s.is_empty())
                        .all(|s| allowed.contains(&s))
                }))
            }
        }
    }

    async fn open_transaction(
        &self,
        request: &AuthorizationRequest,
        browser: &str,
        consent_for: Option<&str>,
    ) -> Result<(String, String), FlowError> {
        let id = random_token()?;
        let csrf = random_token()?;
        let expires_at = self.clock.now_ms() + TRANSACTION_TTL_MS;
        let transaction = Transaction {
            request: request.clone(),
            csrf: csrf.clone(),
            browser: digest_hex(browser),
            expires_at,
            consent_for: consent_for.map(str::to_owned),
        };
        let value = serde_json::to_string(&transaction).map_err(FlowError::internal)?;
        self.store
            .put_record(&transaction_key(&id), &value, expires_at)
            .await?;
        Ok((id, csrf))
    }

    /// Stores a request that arrived by POST so that the browser can fetch it by GET, where its
    /// `SameSite=Lax` sign-on cookie flows. Returns the transaction id.
    pub async fn park_request(&self, request: &AuthorizationRequest) -> Result<String, FlowError> {
        // Not yet bound to a browser: the GET that resumes it binds it.
        Ok(self.open_transaction(request, "", None).await?.0)
    }

    /// Resumes a parked request (see [`Flows::park_request`]): the request, once.
    pub async fn resume_request(
        &self,
        id: &str,
    ) -> Result<Option<AuthorizationRequest>, FlowError> {
        if id.len() > 64 {
            return Ok(None);
        }
        let key = transaction_key(id);
        let Some(stored) = self.store.record(&key, self.clock.now_ms()).await? else {
            return Ok(None);
        };
        let Some(parked) = serde_json::from_str::<Transaction>(&stored)
            .ok()
            .filter(|t| t.browser == digest_hex("") && t.expires_at > self.clock.now_ms())
        else {
            return Ok(None);
        };
        self.store.delete_record(&key).await?;
        Ok(Some(parked.request))
    }

    /// The transaction a page's form names, if its CSRF token and the browser's pre-login
    /// cookie are the ones it was opened with; else an error page (a forged or stale form is
    /// never answered with a redirect).
    async fn transaction(
        &self,
        id: &str,
        csrf: &str,
        browser: &str,
    ) -> Result<Transaction, AuthorizeError> {
        let stale = || {
            AuthorizeError::Page(
                "This sign-in form has expired or was not opened in this browser. Go back to the \
                 application and sign in again."
                    .into(),
            )
        };
        // A form without the browser's pre-login cookie is never accepted (a parked request is
        // bound to no browser, and must not be completed by one that has none).
        if id.len() > 64 || csrf.len() > 64 || browser.is_empty() {
            return Err(stale());
        }
        let stored = self
            .store
            .record(&transaction_key(id), self.clock.now_ms())
            .await
            .map_err(FlowError::from)?
            .ok_or_else(stale)?;
        let transaction: Transaction = serde_json::from_str(&stored).map_err(|_| stale())?;
        let csrf_ok = aws_lc_rs::constant_time::verify_slices_are_equal(
            transaction.csrf.as_bytes(),
            csrf.as_bytes(),
        )
        .is_ok();
        let browser_ok = aws_lc_rs::constant_time::verify_slices_are_equal(
            transaction.browser.as_bytes(),
            digest_hex(browser).as_bytes(),
        )
        .is_ok();
        if !csrf_ok || !browser_ok || transaction.expires_at <= self.clock.now_ms() {
            return Err(stale());
        }
        Ok(transaction)
    }

    /// The login form of a transaction: the password checked as on `/auth/login` (throttles,
    /// lockout, one answer for every failure), then a new sign-on and the next step. `cancel`:
    /// the user declined, and the client hears `access_denied`.
    #[allow(clippy::too_many_arguments)]
    pub async fn login_on_page(
        &self,
        snapshot: &Snapshot,
        form: PageForm<'_>,
        username: &str,
        password: &Password,
        meta: &RequestMeta,
        sign_on: Option<&str>,
    ) -> Result<Answer, AuthorizeError> {
        let id = form.transaction;
        let transaction = self.transaction(id, form.csrf, form.browser).await?;
        let request = transaction.request;
        if form.cancel {
            self.store
                .delete_record(&transaction_key(id))
                .await
                .map_err(FlowError::from)?;
            return Ok(error_redirect(
                snapshot,
                &request,
                "access_denied",
                "the user cancelled the sign-in",
            )
            .into());
        }
        let Some(client) = snapshot.config.client(&request.client_id).cloned() else {
            return Err(AuthorizeError::Page(
                "The application is no longer registered with this issuer.".into(),
            ));
        };
        let again = |problem: LoginProblem, typed: &str| -> Answer {
            self.metrics.page_login(match problem {
                LoginProblem::BadCredentials => LoginOutcome::BadCredentials,
                LoginProblem::Throttled { .. } => LoginOutcome::Throttled,
                LoginProblem::Unavailable => LoginOutcome::Throttled,
            });
            Interaction::Login(LoginPage {
                transaction: id.to_owned(),
                csrf: form.csrf.to_owned(),
                client_name: client.display_name().to_owned(),
                redirect_uri: request.redirect_uri.clone(),
                username: typed.chars().take(super::MAX_USERNAME_CHARS).collect(),
                problem: Some(problem),
            })
            .into()
        };
        let Ok(normalized) = normalize_username(username) else {
            return Ok(again(LoginProblem::BadCredentials, username));
        };
        if password.expose().len() > MAX_PASSWORD_BYTES {
            return Ok(again(LoginProblem::BadCredentials, username));
        }
        let user = match self
            .check_credentials(snapshot, &client, &normalized, password, meta, None)
            .await
        {
            Ok((user, _)) => user,
            Err(FlowError::BadCredentials) => {
                return Ok(again(LoginProblem::BadCredentials, username));
            }
            Err(FlowError::Throttled { retry_after_secs }) => {
                return Ok(again(
                    LoginProblem::Throttled { retry_after_secs },
                    username,
                ));
            }
            Err(FlowError::Overloaded | FlowError::StoreUnavailable(_)) => {
                return Ok(again(LoginProblem::Unavailable, username));
            }
            Err(other) => return Err(other.into()),
        };
        self.metrics.page_login(LoginOutcome::Success);
        self.metrics.login(LoginOutcome::Success);
        tracing::info!(
            event = "login.succeeded",
            user = %normalized,
            user_id = %user.id,
            client_id = %client.id,
            ip = %meta.ip,
            "login on the hosted page"
        );
        let (cookie, new_sign_on) = self.start_sign_on(snapshot, &user, sign_on).await?;
        self.store
            .delete_record(&transaction_key(id))
            .await
            .map_err(FlowError::from)?;
        let mut answer = self
            .proceed(
                snapshot,
                request,
                Some((new_sign_on, user)),
                form.browser,
                false,
            )
            .await?;
        answer.new_sign_on = Some(cookie);
        self.count(&answer.interaction);
        Ok(answer)
    }

    /// The consent form of a transaction: `allow` remembers the consent (for `consent = once`)
    /// and answers with a code; otherwise the client hears `access_denied`.
    pub async fn consent_on_page(
        &self,
        snapshot: &Snapshot,
        form: PageForm<'_>,
        allow: bool,
        sign_on: Option<&str>,
    ) -> Result<Answer, AuthorizeError> {
        let id = form.transaction;
        let transaction = self.transaction(id, form.csrf, form.browser).await?;
        self.store
            .delete_record(&transaction_key(id))
            .await
            .map_err(FlowError::from)?;
        let request = transaction.request;
        if !allow || form.cancel {
            return Ok(error_redirect(
                snapshot,
                &request,
                "access_denied",
                "the user did not allow access",
            )
            .into());
        }
        let signed_on = self.sign_on(snapshot, sign_on).await?;
        let Some((sign_on, user)) =
            signed_on.filter(|(_, u)| Some(&u.id) == transaction.consent_for.as_ref())
        else {
            // Signed out (or in as someone else) since the page was shown: start over.
            return self
                .proceed(snapshot, request, None, form.browser, false)
                .await;
        };
        let client = snapshot.config.client(&request.client_id).cloned();
        if let Some(client) = client.filter(|c| c.consent == Consent::Once) {
            let scope = granted_scope(&client, &request, &user).unwrap_or_default();
            let now = self.clock.now_ms();
            let mut consents = super::grants::consents(&self.store, &user.id, now)
                .await
                .map_err(FlowError::from)?;
            consents.insert(
                client.id.clone(),
                super::grants::ConsentRecord {
                    scope,
                    granted_at: now,
                },
            );
            super::grants::put_consents(&self.store, &user.id, &consents, now).await?;
        }
        let answer = self
            .proceed(snapshot, request, Some((sign_on, user)), form.browser, true)
            .await?;
        self.count(&answer.interaction);
        Ok(answer)
    }
}

/// What every page form carries.
#[derive(Clone, Copy, Debug)]
pub struct PageForm<'a> {
    pub transaction: &'a str,
    pub csrf: &'a str,
    /// The browser's pre-login cookie.
    pub browser: &'a str,
    /// The user pressed Cancel.
    pub cancel: bool,
}
