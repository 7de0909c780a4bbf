//! Access-token checks at the issuer: the same verification a resource server does
//! (`latchkey-verify`, against the published JWKS), then what only the issuer knows: the session
//! is live and the user still exists and is enabled.

use latchkey_verify::Scheme;
use uuid::Uuid;

use super::{FlowError, Flows};
use crate::store::User;

/// An access token as a request to the issuer's own protected endpoints presented it.
#[derive(Clone, Copy, Debug)]
pub struct PresentedAccess<'a> {
    pub scheme: Scheme,
    pub token: &'a str,
    /// Every `DPoP` header of the request.
    pub proofs: &'a [&'a str],
    pub method: &'a str,
    /// The endpoint's path: `htu` must be the issuer's URL with it.
    pub path: &'a str,
    /// The client's address, for its share of the DPoP replay memory.
    pub ip: &'a str,
}

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
        verifier
            .verify_at(token, self.clock.now_system_time())
            .await
            .map_err(|e| FlowError::InvalidToken(e.to_string().into()))
    }

    /// The caller of one of the issuer's own protected endpoints: a valid access token, with
    /// its DPoP proof when it is bound (RFC 9449 §7), of a live session and an enabled user.
    pub async fn authenticate(
        &self,
        presented: &PresentedAccess<'_>,
    ) -> Result<Authenticated, FlowError> {
        let now = self.clock.now_ms();
        let token = presented.token;
        let claims = self.verify_access(token).await?;
        match (presented.scheme, claims.dpop_jkt()) {
            (Scheme::Bearer, None) => {}
            (Scheme::Bearer, Some(_)) => return Err(FlowError::BoundTokenAsBearer),
            (Scheme::DPoP, None) => {
                return Err(FlowError::InvalidToken(
                    "the token is not DPoP-bound: present it as a bearer token".into(),
                ));
            }
            (Scheme::DPoP, Some(jkt)) => {
                self.check_resource_proof(presented, jkt).await?;
            }
        }
        // The user and the session in one store call (one round trip on Redis).
        let (user, session_live) = match &claims.sid {
            Some(sid) => {
                let sid = Uuid::parse_str(sid)
                    .map_err(|_| FlowError::InvalidToken("invalid sid".into()))?;
                let (user, session) = self.store.user_and_session(&claims.sub, sid, now).await?;
                (user, session.is_some_and(|s| s.user_id == claims.sub))
            }
            None => (self.store.user_by_id(&claims.sub).await?, true),
        };
        let user = match user {
            Some(user) if !user.disabled => user,
            _ => {
                return Err(FlowError::InvalidToken(
                    "the user no longer exists or is disabled".into(),
                ));
            }
        };
        if !session_live {
            return Err(FlowError::InvalidToken("the session has ended".into()));
        }
        Ok(Authenticated { claims, user })
    }
}
