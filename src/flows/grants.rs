//! The consents a user gave on the hosted consent page (`consent = "once"` clients): listed and
//! withdrawn by the user (`/auth/grants`) and the operator (`latchkey users grants`).

use super::{FlowError, Flows};
use crate::clock::UnixMs;

/// One client the user allowed, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub client_id: String,
    /// The scopes allowed, space-separated.
    pub scope: String,
    pub granted_at: UnixMs,
}

impl Flows {
    /// The user's consents, by client id.
    pub async fn grants(&self, user_id: &str) -> Result<Vec<Grant>, FlowError> {
        let mut grants: Vec<Grant> = self
            .consents(user_id)
            .await?
            .into_iter()
            .map(|(client_id, record)| Grant {
                client_id,
                scope: record.scope,
                granted_at: record.granted_at,
            })
            .collect();
        grants.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(grants)
    }

    /// Withdraws the user's consent to `client_id`: the client's next authorization request
    /// asks again. Sessions already granted stay (end them under `/auth/sessions`). `false`
    /// when there was none.
    pub async fn withdraw_grant(&self, user_id: &str, client_id: &str) -> Result<bool, FlowError> {
        let mut consents = self.consents(user_id).await?;
        if consents.remove(client_id).is_none() {
            return Ok(false);
        }
        self.put_consents(user_id, &consents).await?;
        Ok(true)
    }
}
