//! The client-credentials grant (RFC 6749 §4.4): an authenticated confidential client gets an
//! access token of its own. One signature, no store write (but a DPoP proof's replay record),
//! no refresh token, no session.

use super::{DpopPresented, FlowError, Flows, Issued, TokenType, scopes, sign_access};
use crate::config::{ClientSpec, GrantType};
use crate::state::Snapshot;

impl Flows {
    pub async fn client_credentials(
        &self,
        snapshot: &Snapshot,
        client: &ClientSpec,
        requested_scope: Option<&str>,
        dpop: &DpopPresented<'_>,
    ) -> Result<Issued, FlowError> {
        if !client.may(GrantType::ClientCredentials) {
            return Err(FlowError::UnauthorizedClient(
                "this client may not use client_credentials",
            ));
        }
        let jkt = self.check_dpop(snapshot, Some(client), dpop).await?;
        let requested = scopes::parse(requested_scope)?;
        let scope = scopes::for_client(client, requested.as_deref())?;
        let now = self.clock.now_ms();
        let (access_token, expires_in) = sign_access(
            snapshot,
            client,
            &client.id,
            &scope,
            None,
            jkt.as_deref(),
            now,
        )?;
        self.metrics.issued("client_credentials", &client.id);
        Ok(Issued {
            access_token,
            token_type: TokenType::of(jkt.as_deref()),
            expires_in,
            refresh: None,
            scope,
            client_id: client.id.clone(),
            session_id: None,
            dpop_nonce: self.dpop_nonce(snapshot, client),
            id_token: None,
        })
    }
}
