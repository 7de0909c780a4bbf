//! OpenID Connect ID tokens (Core §2, §3.1.3.6, §12.2): issued beside the access token when a
//! session was granted the scope `openid`, at the code exchange and at every refresh of that
//! session. Never for the password or client-credentials grants.
//!
//! A refresh must repeat the original `auth_time` and `amr`, which the session itself does not
//! keep: the code exchange records them as `oidc:<sid>` (until the session's absolute end).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{FlowError, Flows};
use crate::clock::{UnixMs, duration_ms};
use crate::config::{Alg, ClientSpec};
use crate::state::Snapshot;

/// How the user authenticated, as a session's ID tokens repeat it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Authentication {
    /// Seconds, OIDC `auth_time`: the password entry, not the token's issue.
    pub(super) auth_time: i64,
    /// RFC 8176 values: `pwd`.
    pub(super) amr: Vec<String>,
}

#[derive(Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    at_hash: String,
    azp: &'a str,
    amr: &'a [String],
    sid: String,
}

/// Whether a session's scope asks for ID tokens.
pub(super) fn wants_id_token(scope: &str) -> bool {
    scope.split(' ').any(|s| s == "openid")
}

fn authentication_key(sid: Uuid) -> String {
    format!("oidc:{sid}")
}

/// The key that signs `client`'s ID tokens (and its logout tokens): its
/// `id_token_signed_response_alg`, else RS256 when a key signs ID tokens in it, else the
/// access-token key (`config check` says which signs what).
pub(super) fn id_token_key<'k>(
    keys: &'k crate::keys::KeyRing,
    client: &ClientSpec,
    now: UnixMs,
) -> Result<&'k crate::keys::LoadedKey, FlowError> {
    match client.id_token_signed_response_alg {
        Some(alg) => keys.id_token_key(alg, now),
        None => keys
            .id_token_key(Alg::RS256, now)
            .or_else(|| keys.active(now)),
    }
    .ok_or(FlowError::NoSigningKey)
}

/// OIDC Core §3.1.3.6: the left half of the hash of the access token, base64url; SHA-256 for
/// every algorithm latchkey signs with.
fn at_hash(access_token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    B64.encode(&digest.as_ref()[..16])
}

impl Flows {
    /// Records how the user of session `sid` authenticated, for the ID tokens of its refreshes.
    pub(super) async fn remember_authentication(
        &self,
        sid: Uuid,
        authentication: &Authentication,
        until: UnixMs,
    ) -> Result<(), FlowError> {
        let value = serde_json::to_string(authentication).map_err(FlowError::internal)?;
        self.store
            .put_record(&authentication_key(sid), &value, until)
            .await?;
        Ok(())
    }

    pub(super) async fn authentication_of(
        &self,
        sid: Uuid,
    ) -> Result<Option<Authentication>, FlowError> {
        let stored = self
            .store
            .record(&authentication_key(sid), self.clock.now_ms())
            .await?;
        Ok(stored.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Adds to `issued` (tokens of a session) an ID token for `subject`, bound to its access
    /// token by `at_hash`, signed by [`id_token_key`].
    pub(super) fn add_id_token(
        &self,
        snapshot: &Snapshot,
        client: &ClientSpec,
        issued: &mut super::Issued,
        subject: &str,
        authentication: &Authentication,
        nonce: Option<&str>,
    ) -> Result<(), FlowError> {
        let sid = issued.session_id.ok_or_else(|| {
            FlowError::internal(crate::store::StoreError::Corrupt(
                "a session without an id".into(),
            ))
        })?;
        let now = self.clock.now_ms();
        let id_token = self.sign_id_token(
            snapshot,
            client,
            subject,
            sid,
            authentication,
            nonce,
            &issued.access_token,
            now,
        )?;
        issued.id_token = Some(id_token);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn sign_id_token(
        &self,
        snapshot: &Snapshot,
        client: &ClientSpec,
        subject: &str,
        sid: Uuid,
        authentication: &Authentication,
        nonce: Option<&str>,
        access_token: &str,
        now: UnixMs,
    ) -> Result<String, FlowError> {
        let key = id_token_key(&snapshot.keys, client, now)?;
        let iat = now.div_euclid(1000);
        let ttl = duration_ms(snapshot.config.sso.id_token_ttl) / 1000;
        let claims = IdClaims {
            iss: &snapshot.config.issuer,
            sub: subject,
            aud: &client.id,
            exp: iat.saturating_add(ttl),
            iat,
            auth_time: authentication.auth_time,
            nonce,
            at_hash: at_hash(access_token),
            azp: &client.id,
            amr: &authentication.amr,
            sid: sid.to_string(),
        };
        let payload = serde_json::to_vec(&claims).map_err(FlowError::internal)?;
        key.sign_id_token(&payload).map_err(FlowError::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_is_the_left_half_of_sha256() {
        // Computed apart with Python's hashlib: b64url(sha256(token)[:16]).
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNEhcr8Twm"),
            "i3dY1O9FUF64khoGEpVumA"
        );
        assert!(wants_id_token("a openid b"));
        assert!(!wants_id_token("openidx"));
    }
}
