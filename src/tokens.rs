//! Token formats: RFC 9068 access-token claims, and the opaque refresh token.
//!
//! A refresh token is `lk_rt_` + base64url(session id (16 bytes) || secret (32 bytes)). The
//! session id starts with its user's slot tag, so the store addresses the family's keys (one
//! Redis hash slot with its user) without a lookup;
//! the secret is 256 random bits. From the whole token two values are derived with HMAC-SHA256
//! under distinct labels: the *lookup id*, which the store keeps, and the *seal key*, which it
//! never sees. The successor handed out during the reuse grace window is stored only sealed
//! under the seal key, so the store alone can rebuild no token.

use std::fmt;

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const REFRESH_PREFIX: &str = "lk_rt_";
const SECRET_LEN: usize = 32;
const RAW_LEN: usize = 16 + SECRET_LEN;
/// `lk_rt_` plus 64 base64url characters.
pub const REFRESH_TOKEN_LEN: usize = REFRESH_PREFIX.len() + RAW_LEN.div_ceil(3) * 4;

/// Claims of an access token (RFC 9068 §2.2).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The DPoP key the token is bound to (RFC 9449 §6.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// `cnf` with the SHA-256 thumbprint of a DPoP key (RFC 7800, RFC 9449 §6.1).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Confirmation {
    pub jkt: String,
}

/// `aud` is a string when there is one audience and an array otherwise (RFC 7519 §4.1.3).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn from_list(list: &[String]) -> Audience {
        match list {
            [one] => Audience::One(one.clone()),
            many => Audience::Many(many.to_vec()),
        }
    }
}

/// The lookup id the store keys a refresh token by. Knowing it does not reveal the token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId(pub [u8; 32]);

impl TokenId {
    pub fn hex(&self) -> String {
        crate::encoding::hex(&self.0)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({}…)", &self.hex()[..8])
    }
}

/// A refresh token as handed to the client. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<hidden>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed refresh token")]
pub struct MalformedToken;

#[derive(Debug, thiserror::Error)]
#[error("randomness unavailable")]
pub struct RandomError;

/// What the server derives from a presented refresh token.
pub struct PresentedToken {
    pub session_id: Uuid,
    pub id: TokenId,
    seal_key: [u8; 32],
}

impl fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedToken")
            .field("session_id", &self.session_id)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl RefreshToken {
    /// A fresh token in the family `session_id`, with 256 bits from the system CSPRNG.
    pub fn generate(session_id: Uuid) -> Result<RefreshToken, RandomError> {
        let mut raw = [0u8; RAW_LEN];
        raw[..16].copy_from_slice(session_id.as_bytes());
        SystemRandom::new()
            .fill(&mut raw[16..])
            .map_err(|_| RandomError)?;
        Ok(RefreshToken(format!("{REFRESH_PREFIX}{}", B64.encode(raw))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Parses a presented token strictly: prefix, exact length, canonical base64url.
    pub fn parse(text: &str) -> Result<PresentedToken, MalformedToken> {
        if text.len() != REFRESH_TOKEN_LEN {
            return Err(MalformedToken);
        }
        let body = text.strip_prefix(REFRESH_PREFIX).ok_or(MalformedToken)?;
        let raw = B64.decode(body).map_err(|_| MalformedToken)?;
        let raw: [u8; RAW_LEN] = raw.try_into().map_err(|_| MalformedToken)?;
        let mut sid = [0u8; 16];
        sid.copy_from_slice(&raw[..16]);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &raw);
        Ok(PresentedToken {
            session_id: Uuid::from_bytes(sid),
            id: TokenId(derive(&key, b"latchkey refresh-token lookup v1")),
            seal_key: derive(&key, b"latchkey refresh-token seal v1"),
        })
    }

    /// The lookup id of a token the server has just generated.
    pub fn id(&self) -> TokenId {
        match RefreshToken::parse(&self.0) {
            Ok(p) => p.id,
            // Unreachable for generated tokens; a zero id matches nothing stored.
            Err(MalformedToken) => TokenId([0; 32]),
        }
    }
}

fn derive(key: &hmac::Key, label: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(key, label);
    let mut out = [0u8; 32];
    out.copy_from_slice(&tag.as_ref()[..32]);
    out
}

impl PresentedToken {
    /// Seals `successor` so that only a holder of this presented token can open it.
    pub fn seal(&self, successor: &RefreshToken) -> Result<Vec<u8>, RandomError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| RandomError)?;
        let mut data = successor.0.as_bytes().to_vec();
        self.cipher()
            .ok_or(RandomError)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.id.0),
                &mut data,
            )
            .map_err(|_| RandomError)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Opens a successor sealed by [`PresentedToken::seal`] for this same token.
    pub fn open(&self, sealed: &[u8]) -> Option<RefreshToken> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = self
            .cipher()?
            .open_in_place(nonce, Aad::from(self.id.0), &mut data)
            .ok()?;
        let text = String::from_utf8(plain.to_vec()).ok()?;
        RefreshToken::parse(&text).ok()?;
        Some(RefreshToken(text))
    }

    fn cipher(&self) -> Option<LessSafeKey> {
        // A 32-byte key always fits ChaCha20-Poly1305; `None` is unreachable in practice.
        UnboundKey::new(&CHACHA20_POLY1305, &self.seal_key)
            .ok()
            .map(LessSafeKey::new)
    }
}

/// A user's slot tag: the first 4 bytes of SHA-256 of the user id. Stores that shard by key
/// (Redis Cluster) keep everything of one user, its sessions included, under this tag.
pub fn user_slot_tag(user_id: &str) -> [u8; 4] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user_id.as_bytes());
    let mut tag = [0u8; 4];
    tag.copy_from_slice(&digest.as_ref()[..4]);
    tag
}

/// A new session (refresh family) id for `user_id`: its slot tag, then 96 random bits. A refresh
/// token carries the session id, so it names the slot of its user without a lookup.
pub fn new_session_id(user_id: &str) -> Result<Uuid, RandomError> {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&user_slot_tag(user_id));
    SystemRandom::new()
        .fill(&mut bytes[4..])
        .map_err(|_| RandomError)?;
    Ok(Uuid::from_bytes(bytes))
}

/// A random, unique `jti`.
pub fn new_jti() -> String {
    random_uuid().simple().to_string()
}

/// A version 4 UUID from the crypto backend's generator. `Uuid::new_v4` asks the kernel
/// (`getrandom`) each time, and access tokens and request ids need one per request.
pub fn random_uuid() -> Uuid {
    let mut bytes = [0u8; 16];
    match SystemRandom::new().fill(&mut bytes) {
        Ok(()) => uuid::Builder::from_random_bytes(bytes).into_uuid(),
        Err(_) => Uuid::new_v4(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_uuids_are_version_4_and_distinct() {
        let ids: std::collections::HashSet<Uuid> = (0..1000).map(|_| random_uuid()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.get_version(), Some(uuid::Version::Random));
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        assert_eq!(new_jti().len(), 32);
    }

    #[test]
    fn generated_tokens_have_the_prefix_256_random_bits_and_parse_back() {
        let sid = Uuid::new_v4();
        let a = RefreshToken::generate(sid).unwrap();
        let b = RefreshToken::generate(sid).unwrap();
        assert!(a.as_str().starts_with("lk_rt_"));
        assert_eq!(a.as_str().len(), REFRESH_TOKEN_LEN);
        assert_ne!(a, b);
        let p = RefreshToken::parse(a.as_str()).unwrap();
        assert_eq!(p.session_id, sid);
        assert_eq!(p.id, a.id());
        assert_ne!(p.id, b.id());
        assert!(!format!("{a:?}{p:?}").contains(&a.as_str()[6..]));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = RefreshToken::generate(Uuid::new_v4()).unwrap();
        for bad in [
            "",
            "lk_rt_",
            "lk_rt_abc",
            &good.as_str().replace("lk_rt_", "lk_xx_"),
            &format!("{}=", &good.as_str()[..good.as_str().len() - 1]),
            &"é".repeat(REFRESH_TOKEN_LEN / 2),
        ] {
            assert_eq!(
                RefreshToken::parse(bad).unwrap_err(),
                MalformedToken,
                "{bad}"
            );
        }
    }

    #[test]
    fn sealed_successor_opens_only_with_the_presented_token() {
        let sid = Uuid::new_v4();
        let presented = RefreshToken::generate(sid).unwrap();
        let other = RefreshToken::generate(sid).unwrap();
        let successor = RefreshToken::generate(sid).unwrap();
        let p = RefreshToken::parse(presented.as_str()).unwrap();
        let sealed = p.seal(&successor).unwrap();
        assert_eq!(p.open(&sealed), Some(successor.clone()));
        let o = RefreshToken::parse(other.as_str()).unwrap();
        assert_eq!(o.open(&sealed), None);
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert_eq!(p.open(&tampered), None);
        // The sealed bytes do not contain the successor in the clear.
        assert!(
            !sealed
                .windows(16)
                .any(|w| successor.as_str().as_bytes().windows(16).any(|s| s == w))
        );
    }

    #[test]
    fn session_ids_carry_their_users_slot_tag() {
        let a = new_session_id("user-a").unwrap();
        let b = new_session_id("user-a").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[..4], user_slot_tag("user-a"));
        assert_eq!(b.as_bytes()[..4], user_slot_tag("user-a"));
        assert_ne!(user_slot_tag("user-a"), user_slot_tag("user-b"));
    }

    #[test]
    fn lookup_id_differs_from_seal_key() {
        let t = RefreshToken::generate(Uuid::new_v4()).unwrap();
        let p = RefreshToken::parse(t.as_str()).unwrap();
        assert_ne!(p.id.0, p.seal_key);
    }
}
