//! Signing in with a username and password: a new session (refresh family) and its first tokens.
//! The first-party `/auth/login` and the OAuth password grant share it.

use super::{DpopPresented, FlowError, Flows, Issued, RequestMeta, normalize_username, scopes};
use crate::clock::duration_ms;
use crate::config::{ClientKind, ClientSpec, DEFAULT_CLIENT_ID, GrantType, RefreshDelivery};
use crate::credentials::{MAX_PASSWORD_BYTES, Password};
use crate::limits::UserLock;
use crate::metrics::LoginOutcome;
use crate::state::Snapshot;
use crate::store::{Channel, Entitlement, NewSession, User};
use crate::tokens::{RefreshToken, new_session_id};

/// A login as the first-party API receives it.
#[derive(Debug)]
pub struct LoginRequest<'a> {
    pub username: &'a str,
    pub password: &'a Password,
    pub client_id: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub meta: &'a RequestMeta,
    pub dpop: DpopPresented<'a>,
}

/// A session about to start: whose, its id, what it grants, who asked, the DPoP key proved.
#[derive(Clone, Copy, Debug)]
pub(super) struct NewFamily<'a> {
    pub(super) user: &'a User,
    pub(super) sid: uuid::Uuid,
    pub(super) scope: &'a str,
    pub(super) meta: &'a RequestMeta,
    pub(super) jkt: Option<&'a str>,
}

/// The channel a client's refresh tokens travel by.
pub(super) fn channel_of(client: &ClientSpec) -> Channel {
    match (client.kind, client.refresh_delivery) {
        (ClientKind::Confidential, _) => Channel::Confidential,
        (ClientKind::Public, RefreshDelivery::Cookie) => Channel::Cookie,
        (ClientKind::Public, RefreshDelivery::Body) => Channel::Body,
    }
}

impl Flows {
    /// `/auth/login`: for public clients (the first-party one when none is named). A
    /// confidential client authenticates, so it signs users in at `/oauth/token`.
    pub async fn login(&self, request: LoginRequest<'_>) -> Result<Issued, FlowError> {
        let snapshot = self.signing_snapshot()?;
        let client_id = match request.client_id {
            Some(id) if crate::config::valid_identifier(id) => id,
            Some(_) => {
                return Err(FlowError::InvalidRequest(
                    "client_id: 1-64 characters of A-Z a-z 0-9 . _ -".into(),
                ));
            }
            None => DEFAULT_CLIENT_ID,
        };
        let client = match snapshot.config.client(client_id) {
            Some(client) if client.kind == ClientKind::Public => client.clone(),
            Some(_) => {
                return Err(FlowError::InvalidClient(
                    "a confidential client signs users in at /oauth/token, authenticated",
                ));
            }
            None => return Err(FlowError::InvalidClient("unknown client_id")),
        };
        self.sign_in(&snapshot, &client, request).await
    }

    /// The password grant at `/oauth/token` (RFC 6749 §4.3), for an authenticated client that
    /// lists it.
    pub async fn password_grant(
        &self,
        snapshot: &Snapshot,
        client: &ClientSpec,
        request: LoginRequest<'_>,
    ) -> Result<Issued, FlowError> {
        if !client.may(GrantType::Password) {
            return Err(FlowError::UnauthorizedClient(
                "this client may not use the password grant",
            ));
        }
        self.sign_in(snapshot, client, request).await
    }

    /// Whether `ip` is where one of the user's live sessions was last used.
    pub(super) async fn is_known_ip(&self, user_id: &str, ip: &str) -> Result<bool, FlowError> {
        let sessions = self.store.sessions_of(user_id, self.clock.now_ms()).await?;
        Ok(!ip.is_empty() && sessions.iter().any(|s| s.ip == ip))
    }

    /// Re-hashes a verified password at the configured cost, off the request's path: old-cost
    /// hashes converge to the configured cost as their users log in.
    fn upgrade_hash_later(&self, user_id: &str, old_hash: &str, password: &Password) {
        let (hasher, store) = (self.hasher.clone(), self.store.clone());
        let (user_id, old_hash, password) =
            (user_id.to_owned(), old_hash.to_owned(), password.clone());
        tokio::spawn(async move {
            let upgraded = match hasher.hash(&password).await {
                Ok(new_hash) => store
                    .upgrade_password_hash(&user_id, &old_hash, &new_hash)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match upgraded {
                Ok(true) => {
                    tracing::debug!(%user_id, "password hash upgraded to the configured cost")
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%user_id, %error, "cannot upgrade a password hash"),
            }
        });
    }

    #[tracing::instrument(name = "login", skip_all, fields(client_id = %client.id, user_id))]
    async fn sign_in(
        &self,
        snapshot: &Snapshot,
        client: &ClientSpec,
        request: LoginRequest<'_>,
    ) -> Result<Issued, FlowError> {
        let LoginRequest {
            username,
            password,
            scope,
            meta,
            dpop,
            ..
        } = request;
        let username = &normalize_username(username)?;
        if password.expose().len() > MAX_PASSWORD_BYTES {
            return Err(FlowError::InvalidRequest(
                format!("password: at most {MAX_PASSWORD_BYTES} bytes").into(),
            ));
        }
        let requested = scopes::parse(scope)?;
        let (user, jkt) = self
            .check_credentials(snapshot, client, username, password, meta, Some(&dpop))
            .await?;
        tracing::Span::current().record("user_id", user.id.as_str());
        // What was asked for (all the client may carry when nothing was), of what the user holds.
        let scope = scopes::for_user(client, requested.as_deref(), &user.scopes)?;

        let sid = new_session_id(&user.id).map_err(FlowError::internal)?;
        let family = NewFamily {
            user: &user,
            sid,
            scope: &scope,
            meta,
            jkt: jkt.as_deref(),
        };
        let Some(issued) = self.open_family(snapshot, client, family).await? else {
            // Disabled, or its password changed, while this login was being checked.
            self.metrics.login(LoginOutcome::Disabled);
            return Err(FlowError::BadCredentials);
        };
        self.metrics.login(LoginOutcome::Success);
        self.metrics.issued("password", &client.id);
        tracing::info!(
            event = "login.succeeded",
            user = %username,
            user_id = %user.id,
            client_id = %client.id,
            ip = %meta.ip,
            %sid,
            "login"
        );
        Ok(issued)
    }

    /// Starts a session (refresh family) and issues its first tokens: what every sign-in ends
    /// with. `None` when the user changed since the credentials were checked (nothing was
    /// created).
    pub(super) async fn open_family(
        &self,
        snapshot: &Snapshot,
        client: &ClientSpec,
        family: NewFamily<'_>,
    ) -> Result<Option<Issued>, FlowError> {
        let NewFamily {
            user,
            sid,
            scope,
            meta,
            jkt,
        } = family;
        let now = self.clock.now_ms();
        let tokens = &snapshot.config.tokens;
        let refresh = RefreshToken::generate(sid).map_err(FlowError::internal)?;
        let expires_at = now + duration_ms(tokens.refresh_ttl);
        let first_token_expires_at = (now + duration_ms(tokens.refresh_idle_ttl)).min(expires_at);
        let created = self
            .store
            .create_session(&NewSession {
                id: sid,
                user_id: user.id.clone(),
                client_id: client.id.clone(),
                scope: scope.to_owned(),
                created_at: now,
                expires_at,
                user_agent: meta.user_agent.clone(),
                ip: meta.ip.clone(),
                first_token: refresh.id(),
                first_token_expires_at,
                user_epoch: user.epoch,
                channel: channel_of(client),
                // RFC 9449 §5: a public client's refresh tokens are bound to its key; a
                // confidential client's are bound by its authentication already.
                dpop_jkt: jkt
                    .filter(|_| client.kind == ClientKind::Public)
                    .map(str::to_owned),
            })
            .await?;
        if !created {
            return Ok(None);
        }
        let entitlement = Entitlement {
            user_id: user.id.clone(),
            client_id: client.id.clone(),
            scope: scope.to_owned(),
            successor_expires_at: first_token_expires_at,
            held_scopes: user.scopes.join(" "),
        };
        let mut issued = self.issue(snapshot, client, &entitlement, sid, refresh, jkt, now)?;
        if !client.may(GrantType::RefreshToken) {
            // RFC 6749 §5.1: a refresh token is optional; a client without the grant gets none.
            issued.refresh = None;
        }
        Ok(Some(issued))
    }

    /// A username (normalised) and password checked under the throttles and lockout, with the
    /// same cost whether or not the user exists: the user, and the DPoP key proved when a proof
    /// was looked at. Every login path (the JSON API, the password grant, the hosted page) goes
    /// through here.
    pub(super) async fn check_credentials(
        &self,
        snapshot: &Snapshot,
        client: &ClientSpec,
        username: &str,
        password: &Password,
        meta: &RequestMeta,
        dpop: Option<&DpopPresented<'_>>,
    ) -> Result<(User, Option<String>), FlowError> {
        let limits = &snapshot.config.limits;
        let throttled = |retry_after_secs| {
            tracing::warn!(
                event = "login.throttled",
                user = %username,
                client_id = %client.id,
                ip = %meta.ip,
                "login refused: throttled"
            );
            self.metrics.login(LoginOutcome::Throttled);
            FlowError::Throttled { retry_after_secs }
        };
        let lock = self
            .limiter
            .check(limits, &meta.ip, username, self.clock.now_ms())
            .await?
            .map_err(|t| throttled(t.retry_after_secs))?;
        // The proof once the request passed its throttles (a refused request plants nothing in
        // the replay memory), and before the password: it costs a signature check, the password
        // a hash.
        let jkt = match dpop {
            Some(dpop) => self.check_dpop(snapshot, Some(client), dpop).await?,
            None => None,
        };
        let user = self.store.user_by_name(username).await?;
        if let UserLock::Locked { retry_after_secs } = lock {
            // A locked username still logs in from where its owner already is.
            let known = match &user {
                Some(user) => self.is_known_ip(&user.id, &meta.ip).await?,
                None => false,
            };
            if !known {
                return Err(throttled(retry_after_secs));
            }
        }
        let matched = self
            .hasher
            .verify(
                user.as_ref().map(|u| u.password_hash.as_str()),
                username,
                password,
            )
            .await?;
        let user = match user {
            Some(user) if matched && !user.disabled => user,
            other => {
                self.limiter
                    .record_failure(limits, username, &meta.ip, self.clock.now_ms())
                    .await?;
                // "Disabled" only once the password was right: a wrong guess at a disabled
                // account must look like any other wrong guess, in the metrics too.
                let disabled = matched && other.as_ref().is_some_and(|u| u.disabled);
                self.metrics.login(if disabled {
                    LoginOutcome::Disabled
                } else {
                    LoginOutcome::BadCredentials
                });
                // An audit event: who, from where, through which client; never the password.
                tracing::warn!(
                    event = "login.failed",
                    user = %username,
                    client_id = %client.id,
                    ip = %meta.ip,
                    reason = match other {
                        None => "unknown user",
                        Some(_) if disabled => "disabled",
                        Some(_) => "wrong password",
                    },
                    "login failed"
                );
                return Err(FlowError::BadCredentials);
            }
        };
        self.limiter.record_success(username, &meta.ip).await?;
        if self.hasher.needs_rehash(&user.password_hash) {
            self.upgrade_hash_later(&user.id, &user.password_hash, password);
        }
        Ok((user, jkt))
    }
}
