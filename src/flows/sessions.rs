//! A user's own sessions: see them, end one (a lost laptop), end them all.

use uuid::Uuid;

use super::{Authenticated, FlowError, Flows};
use crate::metrics::RevokeCause;
use crate::store::Session;

/// A session as its owner sees it.
#[derive(Debug)]
pub struct OwnSession {
    pub session: Session,
    /// The session the caller's access token belongs to.
    pub current: bool,
}

impl Flows {
    /// The caller's live sessions, newest first.
    pub async fn sessions(&self, auth: &Authenticated) -> Result<Vec<OwnSession>, FlowError> {
        let current = auth.claims.sid.as_deref();
        let sessions = self
            .store
            .sessions_of(&auth.user.id, self.clock.now_ms())
            .await?;
        Ok(sessions
            .into_iter()
            .map(|session| OwnSession {
                current: current == Some(session.id.to_string().as_str()),
                session,
            })
            .collect())
    }

    /// Ends one of the caller's sessions. A malformed, unknown or someone else's session id is
    /// `NotFound` alike, so nobody can probe for others' sessions.
    pub async fn end_session(&self, auth: &Authenticated, sid: &str) -> Result<(), FlowError> {
        let not_found = FlowError::NotFound("no such session");
        let sid = Uuid::parse_str(sid).map_err(|_| FlowError::NotFound("no such session"))?;
        match self.store.session(sid, self.clock.now_ms()).await? {
            Some(session) if session.user_id == auth.user.id => {
                let note = crate::store::LogNote::new(
                    &self.snapshot().config.revocation_retention(),
                    crate::store::RevocationReason::SessionEnded,
                    self.clock.now_ms(),
                );
                if self.store.revoke_session(sid, &note).await? {
                    self.revoked(RevokeCause::Revocation, 1, Some(sid));
                    self.notify_ended(&self.snapshot(), &[session]);
                    Ok(())
                } else {
                    Err(not_found)
                }
            }
            _ => Err(not_found),
        }
    }

    /// Ends every session of the caller, the current one included. Returns how many.
    pub async fn logout_everywhere(&self, auth: &Authenticated) -> Result<usize, FlowError> {
        let snapshot = self.snapshot();
        let to_notify = self.sessions_to_notify(&snapshot, &auth.user.id).await?;
        let note = crate::store::LogNote::new(
            &snapshot.config.revocation_retention(),
            crate::store::RevocationReason::LogoutAll,
            self.clock.now_ms(),
        );
        let ended = self
            .store
            .revoke_user_sessions(&auth.user.id, &note)
            .await?;
        super::sso::end_all_sign_ons(&self.store, &auth.user.id, self.clock.now_ms()).await?;
        self.revoked(RevokeCause::LogoutAll, ended, None);
        self.notify_ended(&snapshot, &to_notify);
        Ok(ended)
    }
}
