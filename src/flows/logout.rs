//! Logout: the family of a presented refresh token is revoked.

use super::{FlowError, Flows};
use crate::tokens::RefreshToken;

impl Flows {
    /// Revokes the family of `token`. Unknown and malformed tokens are not an error (RFC 7009
    /// §2.2): the answer never tells whether a token was live.
    #[tracing::instrument(name = "logout", skip_all)]
    pub async fn logout(&self, token: &str) -> Result<(), FlowError> {
        if let Ok(presented) = RefreshToken::parse(token) {
            self.store
                .revoke_by_token(presented.session_id, presented.id)
                .await?;
        }
        Ok(())
    }
}
