//! Access-token checks at the issuer: the same verification a resource server does
//! (`latchkey-verify`, against the published JWKS), then what only the issuer knows: the session
//! is live and the user still exists and is enabled.

use std::time::{Duration, UNIX_EPOCH};

use uuid::Uuid;

use super::{FlowError, Flows};
use crate::store::User;

/// A verified access token and the user it names.
#[derive(Debug)]
pub struct Authenticated {
    pub claims: latchkey_verify::Claims,
    pub user: User,
}

impl Flows {
    /// Verifies an access token exactly as a resource server reading the published JWKS would:
    /// signature by a published key, `typ`, `iss`, audience, `exp` and `nbf`, at the clock's now.
    pub async fn verify_access(&self, token: &str) -> Result<latchkey_verify::Claims, FlowError> {
        let now = self.clock.now_ms();
        let jwks = self.snapshot().keys.jwks(now);
        let verifier = jwks
            .verifier
            .as_ref()
            .ok_or_else(|| FlowError::Internal("the issuer's own JWKS does not parse".into()))?;
        let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(now).unwrap_or(0));
        verifier
            .verify_at(token, at)
            .await
            .map_err(|e| FlowError::InvalidToken(e.to_string().into()))
    }

    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, FlowError> {
        let now = self.clock.now_ms();
        let claims = self.verify_access(token).await?;
        let user = match self.store.user_by_id(&claims.sub).await? {
            Some(user) if !user.disabled => user,
            _ => {
                return Err(FlowError::InvalidToken(
                    "the user no longer exists or is disabled".into(),
                ));
            }
        };
        if let Some(sid) = &claims.sid {
            let sid =
                Uuid::parse_str(sid).map_err(|_| FlowError::InvalidToken("invalid sid".into()))?;
            if self.store.session(sid, now).await?.is_none() {
                return Err(FlowError::InvalidToken("the session has ended".into()));
            }
        }
        Ok(Authenticated { claims, user })
    }
}
