//! Login with a username and password: a new session (refresh family) and its first tokens.

use super::{DEFAULT_CLIENT_ID, FlowError, Flows, Issued, RequestMeta, normalize_username};
use crate::clock::duration_ms;
use crate::credentials::{MAX_PASSWORD_BYTES, Password};
use crate::limits::UserLock;
use crate::store::{Entitlement, NewSession};
use crate::tokens::{RefreshToken, new_session_id};

/// A login as the first-party API receives it.
#[derive(Debug)]
pub struct LoginRequest<'a> {
    pub username: &'a str,
    pub password: &'a Password,
    pub client_id: Option<&'a str>,
    pub meta: &'a RequestMeta,
}

impl Flows {
    /// Whether `ip` is where one of the user's live sessions was last used.
    async fn is_known_ip(&self, user_id: &str, ip: &str) -> Result<bool, FlowError> {
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

    #[tracing::instrument(name = "login", skip_all, fields(user_id))]
    pub async fn login(&self, request: LoginRequest<'_>) -> Result<Issued, FlowError> {
        let LoginRequest {
            username,
            password,
            client_id,
            meta,
        } = request;
        let username = &normalize_username(username)?;
        if password.expose().len() > MAX_PASSWORD_BYTES {
            return Err(FlowError::InvalidRequest(
                format!("password: at most {MAX_PASSWORD_BYTES} bytes").into(),
            ));
        }
        let client_id = match client_id {
            Some(id) if crate::config::valid_identifier(id) => id,
            Some(_) => {
                return Err(FlowError::InvalidRequest(
                    "client_id: 1-64 characters of A-Z a-z 0-9 . _ -".into(),
                ));
            }
            None => DEFAULT_CLIENT_ID,
        };

        let snapshot = self.signing_snapshot()?;
        let limits = &snapshot.config.limits;
        let lock = self
            .limiter
            .check(limits, &meta.ip, username, self.clock.now_ms())
            .map_err(|t| FlowError::Throttled {
                retry_after_secs: t.retry_after_secs,
            })?;
        let user = self.store.user_by_name(username).await?;
        if let UserLock::Locked { retry_after_secs } = lock {
            // A locked username still logs in from where its owner already is.
            let known = match &user {
                Some(user) => self.is_known_ip(&user.id, &meta.ip).await?,
                None => false,
            };
            if !known {
                return Err(FlowError::Throttled { retry_after_secs });
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
            _ => {
                self.limiter
                    .record_failure(limits, username, &meta.ip, self.clock.now_ms());
                return Err(FlowError::BadCredentials);
            }
        };
        self.limiter.record_success(username, &meta.ip);
        if self.hasher.needs_rehash(&user.password_hash) {
            self.upgrade_hash_later(&user.id, &user.password_hash, password);
        }
        tracing::Span::current().record("user_id", user.id.as_str());

        let now = self.clock.now_ms();
        let tokens = &snapshot.config.tokens;
        let sid = new_session_id(&user.id).map_err(FlowError::internal)?;
        let refresh = RefreshToken::generate(sid).map_err(FlowError::internal)?;
        let expires_at = now + duration_ms(tokens.refresh_ttl);
        let first_token_expires_at = (now + duration_ms(tokens.refresh_idle_ttl)).min(expires_at);
        let created = self
            .store
            .create_session(&NewSession {
                id: sid,
                user_id: user.id.clone(),
                client_id: client_id.to_owned(),
                scope: String::new(),
                created_at: now,
                expires_at,
                user_agent: meta.user_agent.clone(),
                ip: meta.ip.clone(),
                first_token: refresh.id(),
                first_token_expires_at,
                user_epoch: user.epoch,
            })
            .await?;
        if !created {
            // Disabled, or its password changed, while this login was being checked.
            return Err(FlowError::BadCredentials);
        }
        let entitlement = Entitlement {
            user_id: user.id,
            client_id: client_id.to_owned(),
            scope: String::new(),
            successor_expires_at: first_token_expires_at,
        };
        self.issue(&snapshot, &entitlement, sid, refresh, now)
    }
}
