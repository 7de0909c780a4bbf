//! Refresh: the presented token is consumed and its successor issued, in one atomic store step
//! (`docs/tokens.md`, rotation and reuse). A token is bound to its client and to the way it
//! travels: presented by another client, or another way, it is refused without being consumed.

use uuid::Uuid;

use super::login::channel_of;
use super::{DpopPresented, FlowError, Flows, Issued, RequestMeta, scopes};
use crate::clock::duration_ms;
use crate::config::{ClientSpec, GrantType};
use crate::metrics::{RefreshOutcome, RevokeCause};
use crate::state::Snapshot;
use crate::store::{Channel, Entitlement, Invalid, ReuseCause, RotateOutcome, Rotation};
use crate::tokens::{PresentedToken, RefreshToken};

impl Flows {
    /// `/auth/refresh`: a public client's token from a request body; `scope` may narrow the new
    /// access token. A named `client_id` must be the token's client. The client's DPoP rules
    /// (`require_dpop`, `dpop_nonce`) apply whether it is named or not: unnamed, the session
    /// tells which client it is, read only when some client uses nonces and a proof came.
    #[tracing::instrument(name = "refresh", skip_all, fields(sid))]
    pub async fn refresh(
        &self,
        token: &str,
        client_id: Option<&str>,
        scope: Option<&str>,
        meta: &RequestMeta,
        dpop: &DpopPresented<'_>,
    ) -> Result<Issued, FlowError> {
        let snapshot = self.signing_snapshot()?;
        let requested = scopes::parse(scope)?;
        let named = match client_id {
            Some(id) => Some(
                snapshot
                    .config
                    .client(id)
                    .ok_or(FlowError::InvalidClient("unknown client_id"))?
                    .clone(),
            ),
            None => None,
        };
        let rules = match &named {
            Some(client) => Some(client.clone()),
            None => self.session_client_for_dpop(&snapshot, token, dpop).await?,
        };
        let jkt = self.check_dpop(&snapshot, rules.as_ref(), dpop).await?;
        self.rotate(
            &snapshot,
            token,
            named.as_ref(),
            Channel::Body,
            requested.as_deref(),
            meta,
            jkt,
        )
        .await
    }

    /// The client of `token`'s session, when its DPoP rules could matter: a proof came and
    /// some client wants nonces. Otherwise `None` at no cost (a session bound to a key is
    /// checked by the rotation itself).
    async fn session_client_for_dpop(
        &self,
        snapshot: &Snapshot,
        token: &str,
        dpop: &DpopPresented<'_>,
    ) -> Result<Option<ClientSpec>, FlowError> {
        if dpop.proofs.is_empty() || !snapshot.config.clients.iter().any(|c| c.dpop_nonce) {
            return Ok(None);
        }
        let Ok(presented) = RefreshToken::parse(token) else {
            return Ok(None);
        };
        let session = self
            .store
            .session(presented.session_id, self.clock.now_ms())
            .await?;
        Ok(session.and_then(|s| snapshot.config.client(&s.client_id).cloned()))
    }

    /// `/auth/refresh` for a cookie client: the token came from its cookie (the surface has
    /// checked the request's origin).
    #[tracing::instrument(name = "refresh", skip_all, fields(sid, client_id = %client.id))]
    pub async fn refresh_from_cookie(
        &self,
        client: &ClientSpec,
        token: &str,
        scope: Option<&str>,
        meta: &RequestMeta,
        dpop: &DpopPresented<'_>,
    ) -> Result<Issued, FlowError> {
        let snapshot = self.signing_snapshot()?;
        let requested = scopes::parse(scope)?;
        let jkt = self.check_dpop(&snapshot, Some(client), dpop).await?;
        self.rotate(
            &snapshot,
            token,
            Some(client),
            Channel::Cookie,
            requested.as_deref(),
            meta,
            jkt,
        )
        .await
    }

    /// The refresh-token grant at `/oauth/token` (RFC 6749 §6), for the client the token was
    /// issued to; `scope` may narrow the new access token.
    #[tracing::instrument(name = "refresh", skip_all, fields(sid, client_id = %client.id))]
    pub async fn refresh_grant(
        &self,
        snapshot: &Snapshot,
        client: &ClientSpec,
        token: &str,
        scope: Option<&str>,
        meta: &RequestMeta,
        dpop: &DpopPresented<'_>,
    ) -> Result<Issued, FlowError> {
        if !client.may(GrantType::RefreshToken) {
            return Err(FlowError::UnauthorizedClient(
                "this client may not use the refresh_token grant",
            ));
        }
        let requested = scopes::parse(scope)?;
        let jkt = self.check_dpop(snapshot, Some(client), dpop).await?;
        self.rotate(
            snapshot,
            token,
            Some(client),
            channel_of(client),
            requested.as_deref(),
            meta,
            jkt,
        )
        .await
    }

    /// `jkt`: the key of the request's DPoP proof, if it carried one. A bound family needs it;
    /// the new access token is bound to it either way.
    #[allow(clippy::too_many_arguments)]
    async fn rotate(
        &self,
        snapshot: &Snapshot,
        token: &str,
        client: Option<&ClientSpec>,
        channel: Channel,
        requested: Option<&[String]>,
        meta: &RequestMeta,
        jkt: Option<String>,
    ) -> Result<Issued, FlowError> {
        let presented = RefreshToken::parse(token).map_err(|_| {
            self.metrics.refresh(RefreshOutcome::Unknown);
            FlowError::BadRefreshToken
        })?;
        let sid = presented.session_id;
        tracing::Span::current().record("sid", tracing::field::display(sid));
        let now = self.clock.now_ms();
        // A narrower scope is checked before the token is consumed (one read, only then).
        if requested.is_some() {
            let session = self
                .store
                .session(sid, now)
                .await?
                .ok_or(FlowError::BadRefreshToken)?;
            scopes::narrowed(&session.scope, requested)?;
        }
        let successor = RefreshToken::generate(sid).map_err(FlowError::internal)?;
        let tokens = &snapshot.config.tokens;
        let outcome = self
            .store
            .rotate(&Rotation {
                session_id: sid,
                presented: presented.id,
                successor: successor.id(),
                sealed_successor: presented.seal(&successor).map_err(FlowError::internal)?,
                now,
                idle_ttl_ms: duration_ms(tokens.refresh_idle_ttl),
                grace_ms: duration_ms(tokens.reuse_grace),
                user_agent: meta.user_agent.clone(),
                ip: meta.ip.clone(),
                client_id: client.map(|c| c.id.clone()),
                channel,
                dpop_jkt: jkt.clone(),
                log_keep_until: crate::store::LogNote::new(
                    &snapshot.config.revocation_retention(),
                    crate::store::RevocationReason::ReuseDetected,
                    now,
                )
                .keep_until,
            })
            .await?;
        let (entitlement, refresh) = match outcome {
            RotateOutcome::Rotated(entitlement) => {
                self.metrics.refresh(RefreshOutcome::Rotated);
                (entitlement, successor)
            }
            RotateOutcome::Replayed {
                entitlement,
                sealed_successor,
            } => match presented.open(&sealed_successor) {
                Some(earlier) => {
                    self.metrics.refresh(RefreshOutcome::GraceReplay);
                    (entitlement, earlier)
                }
                None => {
                    tracing::error!("a sealed successor did not open with its own token");
                    return Err(FlowError::BadRefreshToken);
                }
            },
            RotateOutcome::Reused { user_id, cause } => {
                self.metrics.refresh(RefreshOutcome::ReuseDetected(cause));
                self.metrics.revoked(RevokeCause::Reuse, 1);
                tracing::warn!(
                    event = "refresh.reuse_detected",
                    %user_id,
                    %sid,
                    ?cause,
                    ip = %meta.ip,
                    "a consumed refresh token was presented again: session revoked"
                );
                tracing::warn!(event = "family.revoked", %user_id, %sid, cause = "reuse", "session revoked");
                return Err(FlowError::BadRefreshToken);
            }
            RotateOutcome::Invalid(Invalid::WrongKey) => {
                self.metrics.refresh(RefreshOutcome::WrongKey);
                tracing::warn!(
                    event = "refresh.wrong_dpop_key",
                    %sid,
                    ip = %meta.ip,
                    "a DPoP-bound refresh token was presented without a proof of its key"
                );
                return Err(match jkt {
                    None => FlowError::InvalidDpopProof(
                        "this session is DPoP-bound: send a proof signed with its key".into(),
                    ),
                    Some(_) => FlowError::BadRefreshToken,
                });
            }
            RotateOutcome::Invalid(why) => {
                self.metrics.refresh(match why {
                    Invalid::Unknown => RefreshOutcome::Unknown,
                    Invalid::ExpiredIdle => RefreshOutcome::ExpiredIdle,
                    Invalid::ExpiredAbsolute => RefreshOutcome::ExpiredAbsolute,
                    Invalid::UserChanged => RefreshOutcome::UserChanged,
                    Invalid::WrongClient => RefreshOutcome::WrongClient,
                    Invalid::WrongKey => RefreshOutcome::WrongKey,
                    Invalid::RevokedForReuse => {
                        RefreshOutcome::ReuseDetected(ReuseCause::RevokedFamily)
                    }
                });
                if why == Invalid::RevokedForReuse {
                    tracing::warn!(
                        event = "refresh.reuse_detected",
                        %sid,
                        cause = "revoked_family",
                        ip = %meta.ip,
                        "a token of a session revoked for reuse was presented again"
                    );
                }
                tracing::debug!(?why, "refresh refused");
                return Err(FlowError::BadRefreshToken);
            }
        };
        // The session's client must still be registered.
        let Some(client) = snapshot.config.client(&entitlement.client_id) else {
            self.end_orphan(sid, &presented).await;
            return Err(FlowError::BadRefreshToken);
        };
        // The session's scope never widens; of it, what the user still holds and the client may
        // still carry (an ungranted scope stops here), narrowed further on request.
        let still = scopes::still_granted(&entitlement.scope, &entitlement.held_scopes, client);
        let entitlement = Entitlement {
            scope: scopes::narrowed(&still, requested)?,
            ..entitlement
        };
        let mut issued = self.issue(
            snapshot,
            client,
            &entitlement,
            sid,
            refresh,
            jkt.as_deref(),
            now,
        )?;
        // OIDC Core §12.2: the same subject, audience and auth_time, a new iat, no nonce.
        if super::id_tokens::wants_id_token(&entitlement.scope)
            && let Some(authentication) = self.authentication_of(sid).await?
        {
            self.add_id_token(
                snapshot,
                client,
                &mut issued,
                &entitlement.user_id,
                &authentication,
                None,
            )?;
        }
        self.metrics.issued("refresh_token", &client.id);
        Ok(issued)
    }

    /// Revokes a session whose client was removed from the config.
    async fn end_orphan(&self, sid: Uuid, presented: &PresentedToken) {
        tracing::warn!(event = "family.revoked", %sid, cause = "admin", "a session of a client no longer registered: revoked");
        self.metrics.revoked(RevokeCause::Admin, 1);
        let note = crate::store::LogNote::new(
            &self.snapshot().config.revocation_retention(),
            crate::store::RevocationReason::ClientRemoved,
            self.clock.now_ms(),
        );
        let _ = self.store.revoke_by_token(sid, presented.id, &note).await;
        let _ = self.store.revoke_session(sid, &note).await;
    }
}
