//! Logout: the family of a presented refresh token is revoked.

use super::{FlowError, Flows};
use crate::metrics::RevokeCause;
use crate::tokens::RefreshToken;

impl Flows {
    /// Revokes the family of `token`. Unknown and malformed tokens are not an error (RFC 7009
    /// §2.2): the answer never tells whether a token was live.
    #[tracing::instrument(name = "logout", skip_all)]
    pub async fn logout(&self, token: &str) -> Result<(), FlowError> {
        if let Ok(presented) = RefreshToken::parse(token) {
            let sid = presented.session_id;
            if self.store.revoke_by_token(sid, presented.id).await? {
                self.revoked(RevokeCause::Logout, 1, Some(sid));
            }
        }
        Ok(())
    }
}
