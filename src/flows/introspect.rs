//! Token introspection (RFC 7662), for confidential clients: whether a token is usable right
//! now, and what it carries. An access token is active only while its signature, expiry and key
//! all hold (the verifier resource servers use) and, for a user's token, while its session lives
//! and its user exists and is enabled; a client's own token while the client is registered. A
//! refresh token is active while it is its session's live token.

use serde::Serialize;
use uuid::Uuid;

use super::{FlowError, Flows};
use crate::tokens::RefreshToken;

/// RFC 7662 §2.2. An inactive token is `{"active": false}` and nothing else.
#[derive(Debug, Default, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The key a DPoP-bound token is bound to (RFC 9449 §6.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<latchkey_verify::Confirmation>,
}

impl Flows {
    pub async fn introspect(
        &self,
        token: &str,
        hint: Option<&str>,
    ) -> Result<Introspection, FlowError> {
        let inactive = Introspection::default();
        // The hint orders nothing that matters: the formats cannot be confused.
        let _ = hint;
        if let Ok(presented) = RefreshToken::parse(token) {
            let now = self.clock.now_ms();
            let Some((session, token_expires_at)) = self
                .store
                .live_refresh_token(presented.session_id, presented.id, now)
                .await?
            else {
                return Ok(inactive);
            };
            let Some(user) = self.store.user_by_id(&session.user_id).await? else {
                return Ok(inactive);
            };
            if user.disabled {
                return Ok(inactive);
            }
            return Ok(Introspection {
                active: true,
                scope: (!session.scope.is_empty()).then_some(session.scope),
                client_id: Some(session.client_id),
                username: Some(user.username),
                token_type: Some("refresh_token"),
                exp: Some(token_expires_at.div_euclid(1000)),
                iat: Some(session.last_used_at.div_euclid(1000)),
                sub: Some(session.user_id),
                iss: Some(self.snapshot().config.issuer.clone()),
                sid: Some(session.id.to_string()),
                cnf: session.dpop_jkt.map(|jkt| latchkey_verify::Confirmation {
                    jkt: Some(jkt),
                    extra: serde_json::Map::new(),
                }),
                ..Introspection::default()
            });
        }
        let Ok(claims) = self.verify_access(token).await else {
            return Ok(inactive);
        };
        let username = match claims.sid.as_deref() {
            Some(sid) => {
                let Ok(sid) = Uuid::parse_str(sid) else {
                    return Ok(inactive);
                };
                let now = self.clock.now_ms();
                let (user, session) = self.store.user_and_session(&claims.sub, sid, now).await?;
                match (session, user) {
                    (Some(session), Some(user)) if session.user_id == user.id && !user.disabled => {
                        Some(user.username)
                    }
                    _ => return Ok(inactive),
                }
            }
            // A client's own token: active while the client is registered.
            None => {
                let snapshot = self.snapshot();
                if claims.client_id.as_deref() != Some(claims.sub.as_str())
                    || snapshot.config.client(&claims.sub).is_none()
                {
                    return Ok(inactive);
                }
                None
            }
        };
        Ok(Introspection {
            active: true,
            scope: claims.scope,
            client_id: claims.client_id,
            username,
            token_type: Some(if claims.cnf.is_some() {
                "DPoP"
            } else {
                "Bearer"
            }),
            exp: Some(claims.exp),
            iat: claims.iat,
            nbf: claims.nbf,
            sub: Some(claims.sub),
            aud: Some(claims.aud),
            iss: Some(claims.iss),
            jti: claims.jti,
            sid: claims.sid,
            cnf: claims.cnf,
        })
    }
}
