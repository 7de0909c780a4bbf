//! The token flows (login, refresh, logout, access-token verification), free of HTTP.
//!
//! Handlers call these with already-parsed input; these call the store once per step and sign
//! once per issued access token.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};
use serde::Serialize;
use uuid::Uuid;

use crate::clock::{Clock, UnixMs, duration_ms};
use crate::config::Alg;
use crate::credentials::{MAX_PASSWORD_BYTES, Password, PasswordHasher};
use crate::error::ApiError;
use crate::limits::LoginLimiter;
use crate::reload::{Live, LiveHandle};
use crate::store::{Grant, NewSession, RotateOutcome, Rotation, SharedStore, User};
use crate::tokens::{AccessClaims, Audience, RefreshToken, new_jti};

/// Until clients are configured, a login without `client_id` is recorded under this one.
pub const DEFAULT_CLIENT_ID: &str = "latchkey";
pub const MAX_USERNAME_CHARS: usize = 128;
/// Longer bearer tokens are refused before any parsing.
pub const MAX_ACCESS_TOKEN_BYTES: usize = 8 * 1024;

const BAD_CREDENTIALS: &str = "invalid username or password";
const BAD_REFRESH: &str = "the refresh token is invalid, expired or revoked";

/// Who is asking, as recorded on the session.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    pub user_agent: String,
    pub ip: String,
}

/// RFC 6749 §5.1 token response (SPEC 4.4).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_expires_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// A verified access token and the user it names.
#[derive(Debug)]
pub struct Authenticated {
    pub claims: AccessClaims,
    pub user: User,
}

pub struct Issuer {
    /// The config and keys in force; swapped whole on reload.
    pub live: LiveHandle,
    pub limiter: LoginLimiter,
    pub store: SharedStore,
    pub hasher: PasswordHasher,
    pub clock: Clock,
}

impl Issuer {
    #[tracing::instrument(name = "login", skip_all, fields(user_id))]
    pub async fn login(
        &self,
        username: &str,
        password: &Password,
        client_id: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<TokenResponse, ApiError> {
        validate_username(username)?;
        if password.expose().len() > MAX_PASSWORD_BYTES {
            return Err(ApiError::InvalidRequest(format!(
                "password: at most {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        let client_id = match client_id {
            Some(id) if crate::config::valid_identifier(id) => id,
            Some(_) => {
                return Err(ApiError::InvalidRequest(
                    "client_id: 1-64 characters of A-Z a-z 0-9 . _ -".into(),
                ));
            }
            None => DEFAULT_CLIENT_ID,
        };

        // Checked first, so no session is created (nor token consumed) that cannot be answered.
        // One snapshot of config and keys serves the whole request, even across a reload.
        let live = self.signing_snapshot()?;
        self.limiter
            .check(&meta.ip, username, self.clock.now_ms())
            .map_err(|t| ApiError::SlowDown {
                retry_after_secs: t.retry_after_secs,
            })?;
        let user = self.store.user_by_name(username).await?;
        let matched = self
            .hasher
            .verify(user.as_ref().map(|u| u.password_hash.as_str()), password)
            .await
            .map_err(ApiError::internal)?;
        let user = match user {
            Some(user) if matched && !user.disabled => user,
            _ => {
                self.limiter.record_failure(username, self.clock.now_ms());
                return Err(ApiError::InvalidGrant(BAD_CREDENTIALS));
            }
        };
        tracing::Span::current().record("user_id", user.id.as_str());

        let now = self.clock.now_ms();
        let tokens = &live.config.tokens;
        let sid = Uuid::new_v4();
        let refresh = RefreshToken::generate(sid).map_err(ApiError::internal)?;
        let expires_at = now + duration_ms(tokens.refresh_ttl);
        let first_token_expires_at = (now + duration_ms(tokens.refresh_idle_ttl)).min(expires_at);
        self.store
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
            })
            .await?;
        let grant = Grant {
            user_id: user.id,
            client_id: client_id.to_owned(),
            scope: String::new(),
            successor_expires_at: first_token_expires_at,
        };
        self.respond(&live, &grant, sid, refresh, now)
    }

    #[tracing::instrument(name = "refresh", skip_all, fields(sid))]
    pub async fn refresh(
        &self,
        token: &str,
        meta: &RequestMeta,
    ) -> Result<TokenResponse, ApiError> {
        let presented =
            RefreshToken::parse(token).map_err(|_| ApiError::InvalidGrant(BAD_REFRESH))?;
        let sid = presented.session_id;
        tracing::Span::current().record("sid", tracing::field::display(sid));
        let live = self.signing_snapshot()?;
        let successor = RefreshToken::generate(sid).map_err(ApiError::internal)?;
        let now = self.clock.now_ms();
        let tokens = &live.config.tokens;
        let outcome = self
            .store
            .rotate(&Rotation {
                session_id: sid,
                presented: presented.id,
                successor: successor.id(),
                sealed_successor: presented.seal(&successor).map_err(ApiError::internal)?,
                now,
                idle_ttl_ms: duration_ms(tokens.refresh_idle_ttl),
                grace_ms: duration_ms(tokens.reuse_grace),
                user_agent: meta.user_agent.clone(),
                ip: meta.ip.clone(),
            })
            .await?;
        match outcome {
            RotateOutcome::Rotated(grant) => self.respond(&live, &grant, sid, successor, now),
            RotateOutcome::Replayed {
                grant,
                sealed_successor,
            } => match presented.open(&sealed_successor) {
                Some(earlier) => self.respond(&live, &grant, sid, earlier, now),
                None => {
                    tracing::error!("a sealed successor did not open with its own token");
                    Err(ApiError::InvalidGrant(BAD_REFRESH))
                }
            },
            RotateOutcome::Reused { user_id } => {
                tracing::warn!(%user_id, "refresh token reused after its grace window: session revoked");
                Err(ApiError::InvalidGrant(BAD_REFRESH))
            }
            RotateOutcome::Invalid => Err(ApiError::InvalidGrant(BAD_REFRESH)),
        }
    }

    /// Revokes the family of `token`. Unknown and malformed tokens are not an error (RFC 7009).
    #[tracing::instrument(name = "logout", skip_all)]
    pub async fn logout(&self, token: &str) -> Result<(), ApiError> {
        if let Ok(presented) = RefreshToken::parse(token) {
            self.store
                .revoke_by_token(presented.session_id, presented.id)
                .await?;
        }
        Ok(())
    }

    /// Verifies an access token as a resource server would, then checks what only the issuer
    /// knows: the session is live and the user still exists and is enabled.
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, ApiError> {
        let now = self.clock.now_ms();
        let claims = self.verify_access(token, now)?;
        let user = match self.store.user_by_id(&claims.sub).await? {
            Some(user) if !user.disabled => user,
            _ => {
                return Err(ApiError::InvalidToken(
                    "the user no longer exists or is disabled",
                ));
            }
        };
        if let Some(sid) = &claims.sid {
            let sid = Uuid::parse_str(sid).map_err(|_| ApiError::InvalidToken("invalid sid"))?;
            if self.store.session(sid, now).await?.is_none() {
                return Err(ApiError::InvalidToken("the session has ended"));
            }
        }
        Ok(Authenticated { claims, user })
    }

    /// Signature by a published key (alg from the key, never from the token alone), `typ`,
    /// `iss`, `aud`, `exp` and `nbf` with the configured leeway.
    pub fn verify_access(&self, token: &str, now: UnixMs) -> Result<AccessClaims, ApiError> {
        if token.len() > MAX_ACCESS_TOKEN_BYTES {
            return Err(ApiError::InvalidToken("the access token is too long"));
        }
        let malformed = ApiError::InvalidToken("the access token is malformed");
        let header = jsonwebtoken::decode_header(token).map_err(|_| malformed)?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(ApiError::InvalidToken("not an access token (typ)"));
        }
        let live = self.live.current();
        let config = &live.config;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| live.keys.verifying(kid, now))
            .ok_or(ApiError::InvalidToken(
                "signed by an unknown or withdrawn key",
            ))?;
        let alg = match key.alg() {
            Alg::ES256 => Algorithm::ES256,
            Alg::RS256 => Algorithm::RS256,
        };
        if header.alg != alg {
            return Err(ApiError::InvalidToken("algorithm does not match the key"));
        }
        let mut validation = Validation::new(alg);
        // Time is checked below against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&config.tokens.audience);
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map_err(|_| ApiError::InvalidToken("the access token does not verify"))?
            .claims;
        let now_secs = now.div_euclid(1000);
        let leeway = i64::try_from(config.tokens.leeway.as_secs()).unwrap_or(0);
        if now_secs >= claims.exp.saturating_add(leeway) {
            return Err(ApiError::InvalidToken("the access token has expired"));
        }
        if claims.nbf > now_secs.saturating_add(leeway) {
            return Err(ApiError::InvalidToken("the access token is not valid yet"));
        }
        Ok(claims)
    }

    /// Signs an access token with the key of `live` active at `now`.
    pub fn sign_access(
        &self,
        live: &Live,
        subject: &str,
        client_id: &str,
        scope: &str,
        sid: Option<Uuid>,
        now: UnixMs,
    ) -> Result<(String, u64), ApiError> {
        let key = live.keys.active(now).ok_or(ApiError::NoSigningKey)?;
        let config = &live.config;
        let ttl = config.tokens.access_ttl.as_secs();
        let iat = now.div_euclid(1000);
        let claims = AccessClaims {
            iss: config.issuer.clone(),
            sub: subject.to_owned(),
            aud: Audience::from_list(&config.tokens.audience),
            exp: iat.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX / 2)),
            iat,
            nbf: iat,
            jti: new_jti(),
            client_id: client_id.to_owned(),
            scope: (!scope.is_empty()).then(|| scope.to_owned()),
            sid: sid.map(|s| s.to_string()),
        };
        let payload = serde_json::to_vec(&claims).map_err(ApiError::internal)?;
        let jws = key.sign_jws(&payload).map_err(ApiError::internal)?;
        Ok((jws, ttl))
    }

    /// The config and keys in force, provided a key signs now.
    fn signing_snapshot(&self) -> Result<Arc<Live>, ApiError> {
        let live = self.live.current();
        match live.keys.active(self.clock.now_ms()) {
            Some(_) => Ok(live),
            None => Err(ApiError::NoSigningKey),
        }
    }

    fn respond(
        &self,
        live: &Live,
        grant: &Grant,
        sid: Uuid,
        refresh: RefreshToken,
        now: UnixMs,
    ) -> Result<TokenResponse, ApiError> {
        let (access_token, expires_in) = self.sign_access(
            live,
            &grant.user_id,
            &grant.client_id,
            &grant.scope,
            Some(sid),
            now,
        )?;
        let refresh_expires_in =
            u64::try_from((grant.successor_expires_at - now).max(0) / 1000).unwrap_or(0);
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in,
            refresh_token: Some(refresh.into_string()),
            refresh_expires_in: Some(refresh_expires_in),
            scope: (!grant.scope.is_empty()).then(|| grant.scope.clone()),
        })
    }
}

pub fn validate_username(username: &str) -> Result<(), ApiError> {
    let chars = username.chars().count();
    if chars == 0 || chars > MAX_USERNAME_CHARS || username.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(format!(
            "username: 1-{MAX_USERNAME_CHARS} characters, no control characters"
        )));
    }
    Ok(())
}
