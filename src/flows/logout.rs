//! Logout: the family of a presented refresh token is revoked, under the rules of the client the
//! token was issued to (`docs/http-api.md`): a token travels, and is ended, only the way it was
//! issued to travel.

use super::{FlowError, Flows};
use crate::metrics::RevokeCause;
use crate::store::Channel;
use crate::tokens::RefreshToken;

impl Flows {
    /// Revokes the family of `token`, which came by `channel` (for a cookie client, `client_id`
    /// names the client whose cookie held it). Unknown and malformed tokens are not an error
    /// (RFC 7009 §2.2): the answer never tells whether a token was live. A live token that
    /// came another way than its client's is refused and ends nothing: a confidential client's
    /// token ends only with its authentication (`/oauth/revoke`, RFC 7009 §2.1), a cookie
    /// client's only through its cookie, behind the Origin check.
    #[tracing::instrument(name = "logout", skip_all)]
    pub async fn logout(
        &self,
        token: &str,
        channel: Channel,
        client_id: Option<&str>,
    ) -> Result<(), FlowError> {
        let Ok(presented) = RefreshToken::parse(token) else {
            return Ok(());
        };
        let sid = presented.session_id;
        let Some(session) = self.store.session(sid, self.clock.now_ms()).await? else {
            return Ok(());
        };
        let same_client = client_id.is_none_or(|id| id == session.client_id);
        if session.channel != channel || !same_client {
            return Err(FlowError::UnauthorizedClient(match session.channel {
                Channel::Confidential => {
                    "this session is a confidential client's: it revokes its tokens at \
                     /oauth/revoke, authenticated"
                }
                Channel::Cookie => {
                    "this session's token travels in its client's cookie: log out from the \
                     client's pages"
                }
                Channel::Body => "this token is not the named client's",
            }));
        }
        let note = crate::store::LogNote::new(
            &self.snapshot().config.revocation_retention(),
            crate::store::RevocationReason::Logout,
            self.clock.now_ms(),
        );
        if self.store.revoke_by_token(sid, presented.id, &note).await? {
            self.revoked(RevokeCause::Logout, 1, Some(sid));
        }
        Ok(())
    }
}
