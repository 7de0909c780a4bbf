//! Authorization codes (RFC 6749 §4.1.2, §4.1.3; PKCE per RFC 7636): issued by the
//! authorization endpoint, exchanged once at `/oauth/token`.
//!
//! A code is `lk_ac_` and the base64url of the session id it will create (16 bytes) and 256
//! random bits. The store keeps its record under the SHA-256 of the whole code. Exchange swaps
//! the record for a "used" marker in one atomic step, so one presentation wins; a second
//! presentation finds the marker and revokes the session the first one created (RFC 6749
//! §4.1.2: "SHOULD revoke all tokens previously issued based on that authorization code"). The
//! marker is kept ten minutes past the code's expiry.

use aws_lc_rs::rand::SecureRandom;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::authorize::{AuthorizationRequest, digest_hex};
use super::login::NewFamily;
use super::sso::SignOn;
use super::{DpopPresented, FlowError, Flows, Issued, RequestMeta, id_tokens};
use crate::clock::{UnixMs, duration_ms};
use crate::config::{ClientSpec, GrantType};
use crate::metrics::RevokeCause;
use crate::state::Snapshot;
use crate::store::User;
use crate::tokens::new_session_id;

const CODE_PREFIX: &str = "lk_ac_";
/// How long a used code's marker outlives the code: a replay within it revokes.
const USED_MARKER_KEPT_MS: i64 = 10 * 60 * 1000;
const USED: &str = "used";

/// What a code stands for.
#[derive(Debug, Serialize, Deserialize)]
struct CodeRecord {
    client_id: String,
    redirect_uri: String,
    redirect_uri_given: bool,
    code_challenge: Option<String>,
    user_id: String,
    user_epoch: u64,
    scope: String,
    auth_time: i64,
    amr: Vec<String>,
    nonce: Option<String>,
    expires_at: UnixMs,
    /// The sign-on it came from (its cookie's digest) and until when that lives: the family
    /// the code starts is filed under it, for a logout that ends both.
    #[serde(default)]
    sign_on: Option<String>,
    #[serde(default)]
    sign_on_until: UnixMs,
}

fn code_key(code: &str) -> String {
    format!("code:{}", digest_hex(code))
}

/// The session id a well-formed code names.
fn session_of(code: &str) -> Option<Uuid> {
    let raw = B64.decode(code.strip_prefix(CODE_PREFIX)?).ok()?;
    (raw.len() == 48).then(|| Uuid::from_slice(&raw[..16]).ok())?
}

/// RFC 7636 §4.1: 43-128 characters of `[A-Z a-z 0-9 - . _ ~]`.
fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// RFC 7636 §4.6: BASE64URL(SHA256(verifier)) equals the challenge, compared in constant time.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    aws_lc_rs::constant_time::verify_slices_are_equal(
        B64.encode(digest.as_ref()).as_bytes(),
        challenge.as_bytes(),
    )
    .is_ok()
}

/// A code exchange as the token endpoint received it.
#[derive(Debug)]
pub struct CodeExchange<'a> {
    pub code: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
    pub meta: &'a RequestMeta,
    pub dpop: &'a DpopPresented<'a>,
}

impl Flows {
    /// A new code for `user` signed on as `sign_on`, for `request`, granting `scope`.
    pub(super) async fn issue_code(
        &self,
        snapshot: &Snapshot,
        client: &ClientSpec,
        request: &AuthorizationRequest,
        user: &User,
        sign_on: &SignOn,
        scope: &str,
    ) -> Result<String, FlowError> {
        let sid = new_session_id(&user.id).map_err(FlowError::internal)?;
        let mut raw = [0u8; 48];
        raw[..16].copy_from_slice(sid.as_bytes());
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut raw[16..])
            .map_err(|_| FlowError::internal(crate::tokens::RandomError))?;
        let code = format!("{CODE_PREFIX}{}", B64.encode(raw));
        let now = self.clock.now_ms();
        let expires_at = now + duration_ms(snapshot.config.sso.code_ttl);
        let record = CodeRecord {
            client_id: client.id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            redirect_uri_given: request.redirect_uri_given,
            code_challenge: request.code_challenge.clone(),
            user_id: user.id.clone(),
            user_epoch: user.epoch,
            scope: scope.to_owned(),
            auth_time: sign_on.auth_time,
            amr: sign_on.amr.clone(),
            nonce: request.nonce.clone(),
            expires_at,
            sign_on: Some(sign_on.digest.clone()).filter(|d| !d.is_empty()),
            sign_on_until: sign_on.created_at + duration_ms(snapshot.config.sso.session_max),
        };
        let value = serde_json::to_string(&record).map_err(FlowError::internal)?;
        self.store
            .put_record(&code_key(&code), &value, expires_at + USED_MARKER_KEPT_MS)
            .await?;
        Ok(code)
    }

    /// `grant_type=authorization_code` (RFC 6749 §4.1.3) for an authenticated `client`: the
    /// code is consumed whatever follows, then checked against the client, the redirect URI
    /// and the PKCE verifier; a new session (refresh family) starts with the id the code named.
    pub async fn authorization_code_grant(
        &self,
        snapshot: &Snapshot,
        client: &ClientSpec,
        exchange: CodeExchange<'_>,
    ) -> Result<Issued, FlowError> {
        if !client.may(GrantType::AuthorizationCode) {
            return Err(FlowError::UnauthorizedClient(
                "this client may not use the authorization code grant",
            ));
        }
        let invalid = |why: &'static str| {
            self.metrics.code_exchange("invalid");
            tracing::info!(event = "code.refused", client_id = %client.id, why, "code exchange refused");
            FlowError::InvalidGrant(why)
        };
        let code = exchange.code;
        let Some(sid) = session_of(code) else {
            return Err(invalid("the code is malformed"));
        };
        let now = self.clock.now_ms();
        let Some(stored) = self.store.swap_record(&code_key(code), USED, now).await? else {
            return Err(invalid("the code is unknown or expired"));
        };
        if stored == USED {
            // A second presentation: whatever the first one obtained is revoked.
            self.metrics.code_exchange("reused");
            let session = match super::back_channel::wanted(snapshot) {
                true => self.store.session(sid, now).await?,
                false => None,
            };
            let note = crate::store::LogNote::new(
                &snapshot.config.revocation_retention(),
                crate::store::RevocationReason::CodeReused,
                now,
            );
            let revoked = self.store.revoke_session(sid, &note).await?;
            if revoked && let Some(session) = session {
                self.notify_ended(snapshot, &[session]);
            }
            tracing::warn!(event = "code.reused", client_id = %client.id, %sid, revoked, "authorization code presented twice");
            if revoked {
                self.revoked(RevokeCause::CodeReuse, 1, Some(sid));
            }
            return Err(FlowError::InvalidGrant("the code was already used"));
        }
        let record: CodeRecord = serde_json::from_str(&stored)
            .map_err(|e| FlowError::internal(crate::store::StoreError::Corrupt(e.to_string())))?;
        if record.expires_at <= now {
            return Err(invalid("the code expired"));
        }
        if record.client_id != client.id {
            return Err(invalid("the code was issued to another client"));
        }
        match exchange.redirect_uri {
            Some(uri) if uri != record.redirect_uri => {
                return Err(invalid(
                    "redirect_uri differs from the authorization request's",
                ));
            }
            None if record.redirect_uri_given => {
                return Err(invalid(
                    "redirect_uri is required: the authorization request named one",
                ));
            }
            _ => {}
        }
        match (&record.code_challenge, exchange.code_verifier) {
            (Some(_), None) => return Err(invalid("code_verifier is required")),
            (Some(_), Some(v)) if !valid_verifier(v) => {
                return Err(invalid(
                    "code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~",
                ));
            }
            (Some(challenge), Some(v)) if !pkce_matches(v, challenge) => {
                return Err(invalid("code_verifier does not match the code_challenge"));
            }
            // RFC 9700 §2.1.1: a verifier for a code issued without a challenge is refused.
            (None, Some(_)) => {
                return Err(invalid("the authorization request had no code_challenge"));
            }
            _ => {}
        }
        let user = match self.store.user_by_id(&record.user_id).await? {
            Some(user) if !user.disabled && user.epoch == record.user_epoch => user,
            _ => return Err(invalid("the user changed since the code was issued")),
        };
        let jkt = self
            .check_dpop(snapshot, Some(client), exchange.dpop)
            .await?;
        let meta = exchange.meta;
        let family = NewFamily {
            user: &user,
            sid,
            scope: &record.scope,
            meta,
            jkt: jkt.as_deref(),
        };
        let Some(mut issued) = self.open_family(snapshot, client, family).await? else {
            return Err(invalid("the user changed since the code was issued"));
        };
        if let Some(digest) = &record.sign_on {
            let offline = record.scope.split(' ').any(|s| s == "offline_access");
            self.file_family(
                digest,
                record.sign_on_until,
                super::sso::StartedFamily { sid, offline },
            )
            .await?;
        }
        self.metrics.code_exchange("issued");
        self.metrics.issued("authorization_code", &client.id);
        tracing::info!(event = "code.exchanged", user_id = %user.id, client_id = %client.id, ip = %meta.ip, %sid, "authorization code exchanged");
        if id_tokens::wants_id_token(&record.scope) {
            let authentication = id_tokens::Authentication {
                auth_time: record.auth_time,
                amr: record.amr,
            };
            let family_end = now + duration_ms(snapshot.config.tokens.refresh_ttl);
            self.remember_authentication(sid, &authentication, family_end)
                .await?;
            self.add_id_token(
                snapshot,
                client,
                &mut issued,
                &user.id,
                &authentication,
                record.nonce.as_deref(),
            )?;
        }
        Ok(issued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7636_example_verifier_matches_its_challenge() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(valid_verifier(verifier));
        assert!(pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        assert!(!valid_verifier("short"));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn a_code_names_its_session() {
        let sid = Uuid::from_bytes([7; 16]);
        let mut raw = [1u8; 48];
        raw[..16].copy_from_slice(sid.as_bytes());
        let code = format!("{CODE_PREFIX}{}", B64.encode(raw));
        assert_eq!(session_of(&code), Some(sid));
        assert_eq!(session_of("lk_ac_AAAA"), None);
        assert_eq!(session_of(&code[1..]), None);
    }
}
