//! Token revocation (RFC 7009): a client ends what it was issued. A refresh token ends its
//! session; an access token ends the session its `sid` names. Tokens of other clients, unknown
//! and malformed tokens change nothing, and the answer is the same either way.

use uuid::Uuid;

use super::{FlowError, Flows};
use crate::config::ClientSpec;
use crate::metrics::RevokeCause;
use crate::tokens::RefreshToken;

impl Flows {
    /// `hint` (`token_type_hint`) only orders the attempts; it is never trusted.
    pub async fn revoke(
        &self,
        client: &ClientSpec,
        token: &str,
        hint: Option<&str>,
    ) -> Result<(), FlowError> {
        if hint == Some("access_token") {
            if !self.revoke_access(client, token).await? {
                self.revoke_refresh(client, token).await?;
            }
        } else if !self.revoke_refresh(client, token).await? {
            self.revoke_access(client, token).await?;
        }
        Ok(())
    }

    /// Whether `token` was a refresh token (of anyone's); revokes it only if it is `client`'s.
    async fn revoke_refresh(&self, client: &ClientSpec, token: &str) -> Result<bool, FlowError> {
        let Ok(presented) = RefreshToken::parse(token) else {
            return Ok(false);
        };
        let now = self.clock.now_ms();
        if let Some(session) = self.store.session(presented.session_id, now).await?
            && session.client_id == client.id
        {
            let sid = presented.session_id;
            let note = crate::store::LogNote::new(
                &self.snapshot().config.revocation_retention(),
                crate::store::RevocationReason::TokenRevoked,
                now,
            );
            if self.store.revoke_by_token(sid, presented.id, &note).await? {
                self.revoked(RevokeCause::Revocation, 1, Some(sid));
            }
        }
        Ok(true)
    }

    /// Whether `token` was an access token this issuer signed; ends its session if the token is
    /// `client`'s.
    async fn revoke_access(&self, client: &ClientSpec, token: &str) -> Result<bool, FlowError> {
        let Ok(claims) = self.verify_access(token).await else {
            return Ok(false);
        };
        if claims.client_id.as_deref() != Some(client.id.as_str()) {
            return Ok(true);
        }
        if let Some(sid) = claims.sid.as_deref().and_then(|s| Uuid::parse_str(s).ok())
            && let Some(session) = self.store.session(sid, self.clock.now_ms()).await?
            && session.client_id == client.id
            && session.user_id == claims.sub
            && self
                .store
                .revoke_session(
                    sid,
                    &crate::store::LogNote::new(
                        &self.snapshot().config.revocation_retention(),
                        crate::store::RevocationReason::TokenRevoked,
                        self.clock.now_ms(),
                    ),
                )
                .await?
        {
            self.revoked(RevokeCause::Revocation, 1, Some(sid));
        }
        Ok(true)
    }
}
