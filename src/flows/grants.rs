//! The consents a user gave on the hosted consent page (`consent = "once"` clients): kept as one
//! record per user (`consent:<user id>`, a year after the last one given), read by the
//! authorization endpoint, listed and withdrawn by the user (`/auth/grants`) and the operator
//! (`latchkey users grants`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Accounts, FlowError, Flows};
use crate::clock::UnixMs;
use crate::store::{SharedStore, StoreError};

/// Consents are remembered this long after the last one was given.
const CONSENT_KEPT_MS: i64 = 365 * 24 * 3600 * 1000;

/// A user's remembered consents, by client.
pub(super) type Consents = HashMap<String, ConsentRecord>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ConsentRecord {
    /// The scopes allowed, space-separated.
    pub(super) scope: String,
    pub(super) granted_at: UnixMs,
}

/// One client the user allowed, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub client_id: String,
    /// The scopes allowed, space-separated.
    pub scope: String,
    pub granted_at: UnixMs,
}

fn consents_key(user_id: &str) -> String {
    format!("consent:{user_id}")
}

pub(super) async fn consents(
    store: &SharedStore,
    user_id: &str,
    now: UnixMs,
) -> Result<Consents, StoreError> {
    let stored = store.record(&consents_key(user_id), now).await?;
    Ok(stored
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default())
}

pub(super) async fn put_consents(
    store: &SharedStore,
    user_id: &str,
    consents: &Consents,
    now: UnixMs,
) -> Result<(), FlowError> {
    let key = consents_key(user_id);
    if consents.is_empty() {
        return Ok(store.delete_record(&key).await?);
    }
    let value = serde_json::to_string(consents).map_err(FlowError::internal)?;
    store
        .put_record(&key, &value, now + CONSENT_KEPT_MS)
        .await?;
    Ok(())
}

async fn grants_of(
    store: &SharedStore,
    user_id: &str,
    now: UnixMs,
) -> Result<Vec<Grant>, FlowError> {
    let mut grants: Vec<Grant> = consents(store, user_id, now)
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

/// Withdraws the consent; `false` when there was none.
async fn withdraw(
    store: &SharedStore,
    user_id: &str,
    client_id: &str,
    now: UnixMs,
) -> Result<bool, FlowError> {
    let mut all = consents(store, user_id, now).await?;
    if all.remove(client_id).is_none() {
        return Ok(false);
    }
    put_consents(store, user_id, &all, now).await?;
    Ok(true)
}

impl Flows {
    /// The user's consents, by client id.
    pub async fn grants(&self, user_id: &str) -> Result<Vec<Grant>, FlowError> {
        grants_of(&self.store, user_id, self.clock.now_ms()).await
    }

    /// Withdraws the user's consent to `client_id`: the client's next authorization request
    /// asks again. Sessions already granted stay (end them under `/auth/sessions`). `false`
    /// when there was none.
    pub async fn withdraw_grant(&self, user_id: &str, client_id: &str) -> Result<bool, FlowError> {
        withdraw(&self.store, user_id, client_id, self.clock.now_ms()).await
    }
}

impl Accounts {
    /// As [`Flows::grants`], by username.
    pub async fn grants(&self, username: &str) -> Result<Vec<Grant>, FlowError> {
        let user = self.find(username).await?;
        grants_of(self.store(), &user.id, self.now()).await
    }

    /// As [`Flows::withdraw_grant`], by username.
    pub async fn withdraw_grant(&self, username: &str, client_id: &str) -> Result<bool, FlowError> {
        let user = self.find(username).await?;
        withdraw(self.store(), &user.id, client_id, self.now()).await
    }
}
