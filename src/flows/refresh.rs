//! Refresh: the presented token is consumed and its successor issued, in one atomic store step
//! (`docs/tokens.md`, rotation and reuse).

use super::{FlowError, Flows, Issued, RequestMeta};
use crate::clock::duration_ms;
use crate::store::{RotateOutcome, Rotation};
use crate::tokens::RefreshToken;

impl Flows {
    #[tracing::instrument(name = "refresh", skip_all, fields(sid))]
    pub async fn refresh(&self, token: &str, meta: &RequestMeta) -> Result<Issued, FlowError> {
        let presented = RefreshToken::parse(token).map_err(|_| FlowError::BadRefreshToken)?;
        let sid = presented.session_id;
        tracing::Span::current().record("sid", tracing::field::display(sid));
        let snapshot = self.signing_snapshot()?;
        let successor = RefreshToken::generate(sid).map_err(FlowError::internal)?;
        let now = self.clock.now_ms();
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
            })
            .await?;
        match outcome {
            RotateOutcome::Rotated(entitlement) => {
                self.issue(&snapshot, &entitlement, sid, successor, now)
            }
            RotateOutcome::Replayed {
                entitlement,
                sealed_successor,
            } => match presented.open(&sealed_successor) {
                Some(earlier) => self.issue(&snapshot, &entitlement, sid, earlier, now),
                None => {
                    tracing::error!("a sealed successor did not open with its own token");
                    Err(FlowError::BadRefreshToken)
                }
            },
            RotateOutcome::Reused { user_id } => {
                tracing::warn!(%user_id, "refresh token reused after its grace window: session revoked");
                Err(FlowError::BadRefreshToken)
            }
            RotateOutcome::Invalid(why) => {
                tracing::debug!(?why, "refresh refused");
                Err(FlowError::BadRefreshToken)
            }
        }
    }
}
