//! Back-channel logout (OpenID Connect Back-Channel Logout 1.0): when a session ends at the
//! issuer, the client that started it hears so server to server, with no browser involved.
//!
//! Each ended session that was granted `openid` and belongs to a client with a
//! `backchannel_logout_uri` yields one logout token (§2.4): `iss`, `sub`, `aud` (the client),
//! `iat`, `exp` (two minutes on), `jti`, the back-channel logout event, and the `sid` its ID
//! tokens carried; header `typ: logout+jwt`, signed as its ID tokens are. Delivery is
//! [`crate::outbound`]'s: queued, never awaited by the sign-out.

use serde::Serialize;

use super::{FlowError, Flows};
use crate::clock::UnixMs;
use crate::config::{ClientSpec, Config};
use crate::keys::KeyRing;
use crate::outbound::LogoutNotice;
use crate::state::Snapshot;
use crate::store::Session;

/// A logout token's life: long enough for retries, short enough not to be worth replaying.
const LOGOUT_TOKEN_TTL_SECS: i64 = 120;

const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

#[derive(Serialize)]
struct LogoutClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
    events: serde_json::Value,
    sid: String,
}

/// Whether any client takes back-channel logouts: when none does, a sign-out need not read the
/// sessions it ends.
pub(super) fn wanted(snapshot: &Snapshot) -> bool {
    any_client_wants(&snapshot.config)
}

/// The logout tokens for `ended` sessions whose client wants one, signed with `keys` (the
/// server's, or those the CLI loads when it ends sessions apart from a server).
pub fn logout_notices(
    config: &Config,
    keys: &KeyRing,
    ended: &[Session],
    now: UnixMs,
) -> Vec<LogoutNotice> {
    let mut notices = Vec::new();
    for session in ended {
        if !super::id_tokens::wants_id_token(&session.scope) {
            continue;
        }
        let Some(client) = config.client(&session.client_id) else {
            continue;
        };
        let Some(uri) = &client.backchannel_logout_uri else {
            continue;
        };
        match logout_token(config, keys, client, session, now) {
            Ok(logout_token) => notices.push(LogoutNotice {
                client_id: client.id.clone(),
                uri: uri.clone(),
                logout_token,
            }),
            Err(e) => tracing::error!(
                event = "backchannel_logout.unsigned",
                client_id = %client.id,
                error = %e,
                "no logout token could be signed"
            ),
        }
    }
    notices
}

/// Whether any client of `config` takes back-channel logouts.
pub fn any_client_wants(config: &Config) -> bool {
    config
        .clients
        .iter()
        .any(|c| c.backchannel_logout_uri.is_some())
}

fn logout_token(
    config: &Config,
    keys: &KeyRing,
    client: &ClientSpec,
    session: &Session,
    now: UnixMs,
) -> Result<String, FlowError> {
    let key = super::id_tokens::id_token_key(keys, client, now)?;
    let iat = now.div_euclid(1000);
    let claims = LogoutClaims {
        iss: &config.issuer,
        sub: &session.user_id,
        aud: &client.id,
        iat,
        exp: iat + LOGOUT_TOKEN_TTL_SECS,
        jti: uuid::Uuid::new_v4().to_string(),
        events: serde_json::json!({ BACKCHANNEL_LOGOUT_EVENT: {} }),
        sid: session.id.to_string(),
    };
    let payload = serde_json::to_vec(&claims).map_err(FlowError::internal)?;
    key.sign_logout_token(&payload).map_err(FlowError::internal)
}

impl Flows {
    /// Queues a logout token for each of `ended` whose client wants one.
    pub(super) fn notify_ended(&self, snapshot: &Snapshot, ended: &[Session]) {
        let now = self.clock.now_ms();
        for notice in logout_notices(&snapshot.config, &snapshot.keys, ended, now) {
            self.outbox.send(notice);
        }
    }

    /// The live sessions of `user_id`, when some client may need to hear that they end.
    pub(super) async fn sessions_to_notify(
        &self,
        snapshot: &Snapshot,
        user_id: &str,
    ) -> Result<Vec<Session>, FlowError> {
        if !wanted(snapshot) {
            return Ok(Vec::new());
        }
        Ok(self.store.sessions_of(user_id, self.clock.now_ms()).await?)
    }
}
