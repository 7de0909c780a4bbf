//! The signing-key ring: which key signs now, which keys are published, and the JWKS bytes.
//!
//! Every decision is a pure function of the config and `now`, so instances reading the same
//! config agree without talking to each other. Private keys are parsed once, at load.

mod encrypted;
pub mod files;
pub mod pkcs11;
pub mod schedule;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey_verify::Verifier;
use serde_json::json;

use crate::clock::UnixMs;
use crate::config::{Alg, Config, KeySpec};
use files::KeyFileError;

pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    File(#[from] KeyFileError),
    #[error("key {kid}: {reason}")]
    Invalid { kid: String, reason: String },
}

enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Ed(Ed25519KeyPair),
    /// A key in an HSM: the token signs.
    Hsm(pkcs11::HsmSigner),
}

/// One configured, non-revoked key with its private half parsed and its public half prepared.
pub struct LoadedKey {
    pub spec: KeySpec,
    signer: Signer,
    /// `base64url({"alg","kid","typ":"at+jwt"})`, prepared once.
    header_b64: String,
    /// `base64url({"alg","kid","typ":"JWT"})`: an ID token's header (OIDC Core §2 names no
    /// type; `JWT` keeps it from ever passing as an access token, RFC 8725 §3.11).
    id_header_b64: String,
    /// `base64url({"alg","kid","typ":"logout+jwt"})`: a back-channel logout token's header
    /// (OIDC Back-Channel Logout 1.0 §2.4, explicit typing).
    logout_header_b64: String,
    /// `base64url({"alg","kid","typ":"secevent+jwt"})`: a Security Event Token's header
    /// (RFC 8417 §2.3), for the revocation feed.
    set_header_b64: String,
    jwk: serde_json::Value,
    /// Published until then ([`KeySpec::published_until`]).
    pub publish_until: UnixMs,
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedKey")
            .field("kid", &self.spec.kid)
            .field("alg", &self.spec.alg)
            .field("key", &"<hidden>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("signing failed")]
pub struct SignError;

impl LoadedKey {
    fn load(spec: &KeySpec, publish_tail: Duration) -> Result<LoadedKey, KeyError> {
        let invalid = |reason: String| KeyError::Invalid {
            kid: spec.kid.clone(),
            reason,
        };
        if let Some(hsm) = &spec.pkcs11 {
            let (signer, jwk) = pkcs11::load(spec.alg, hsm).map_err(invalid)?;
            return Ok(Self::prepared(spec, Signer::Hsm(signer), jwk, publish_tail));
        }
        let passphrase = match &spec.passphrase_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                invalid(format!(
                    "passphrase_env: environment variable {var} is not set"
                ))
            })?),
            None => None,
        };
        let der = files::read_private_der(&spec.path, passphrase.as_deref().map(str::as_bytes))?;
        let (signer, jwk) = match spec.alg {
            Alg::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(|e| invalid(format!("not a P-256 PKCS#8 key ({e})")))?;
                // Uncompressed SEC1 point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                if point.len() != 65 {
                    return Err(invalid("unexpected P-256 public key encoding".into()));
                }
                let (x, y) = (B64.encode(&point[1..33]), B64.encode(&point[33..65]));
                let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
                (Signer::Ec(pair), jwk)
            }
            Alg::RS256 => {
                // aws-lc refuses moduli outside 2048-8192 bits at parse time already.
                let pair = RsaKeyPair::from_pkcs8(&der).map_err(|e| {
                    invalid(format!(
                        "not an RSA PKCS#8 key of {MIN_RSA_BITS} to 8192 bits ({e})"
                    ))
                })?;
                let bits = pair.public_modulus_len() * 8;
                if bits < MIN_RSA_BITS {
                    return Err(invalid(format!(
                        "RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"
                    )));
                }
                let public = pair.public_key();
                let n = public.modulus().big_endian_without_leading_zero().to_vec();
                let e = public.exponent().big_endian_without_leading_zero().to_vec();
                let jwk = json!({"kty": "RSA", "n": B64.encode(&n), "e": B64.encode(&e)});
                (Signer::Rsa(pair), jwk)
            }
            Alg::EdDSA => {
                // PKCS#8 v1 (OpenSSL's) or v2 (with the public key, checked to match).
                let pair = Ed25519KeyPair::from_pkcs8(&der)
                    .map_err(|e| invalid(format!("not an Ed25519 PKCS#8 key ({e})")))?;
                let x = B64.encode(pair.public_key().as_ref());
                let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x});
                (Signer::Ed(pair), jwk)
            }
        };
        Ok(Self::prepared(spec, signer, jwk, publish_tail))
    }

    /// The key with its headers and JWK prepared once.
    fn prepared(
        spec: &KeySpec,
        signer: Signer,
        mut jwk: serde_json::Value,
        publish_tail: Duration,
    ) -> LoadedKey {
        jwk["kid"] = json!(spec.kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(spec.alg.as_str());
        let header = |typ: &str| {
            B64.encode(json!({"alg": spec.alg.as_str(), "typ": typ, "kid": spec.kid}).to_string())
        };
        LoadedKey {
            spec: spec.clone(),
            signer,
            header_b64: header("at+jwt"),
            id_header_b64: header("JWT"),
            logout_header_b64: header("logout+jwt"),
            set_header_b64: header("secevent+jwt"),
            jwk,
            publish_until: spec.published_until(publish_tail),
        }
    }

    pub fn kid(&self) -> &str {
        &self.spec.kid
    }

    pub fn alg(&self) -> Alg {
        self.spec.alg
    }

    /// The public JWK (RFC 7517); it never holds a private member.
    pub fn jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// Signs `payload` (JSON claims) into a compact JWS with this key's prepared access-token
    /// header.
    pub fn sign_jws(&self, payload: &[u8]) -> Result<String, SignError> {
        self.sign_with(&self.header_b64, payload)
    }

    /// Signs ID-token claims (header `typ: JWT`).
    pub fn sign_id_token(&self, payload: &[u8]) -> Result<String, SignError> {
        self.sign_with(&self.id_header_b64, payload)
    }

    /// Signs back-channel logout claims (header `typ: logout+jwt`).
    pub fn sign_logout_token(&self, payload: &[u8]) -> Result<String, SignError> {
        self.sign_with(&self.logout_header_b64, payload)
    }

    /// Signs Security Event Token claims (header `typ: secevent+jwt`).
    pub fn sign_security_event(&self, payload: &[u8]) -> Result<String, SignError> {
        self.sign_with(&self.set_header_b64, payload)
    }

    fn sign_with(&self, header_b64: &str, payload: &[u8]) -> Result<String, SignError> {
        let mut out = String::with_capacity(header_b64.len() + payload.len() * 4 / 3 + 360);
        out.push_str(header_b64);
        out.push('.');
        B64.encode_string(payload, &mut out);
        let signature = match &self.signer {
            Signer::Ec(pair) => pair
                .sign(&SystemRandom::new(), out.as_bytes())
                .map_err(|_| SignError)?
                .as_ref()
                .to_vec(),
            Signer::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    out.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| SignError)?;
                sig
            }
            Signer::Ed(pair) => pair.sign(out.as_bytes()).as_ref().to_vec(),
            Signer::Hsm(hsm) => hsm.sign(out.as_bytes())?,
        };
        out.push('.');
        B64.encode_string(signature, &mut out);
        Ok(out)
    }

    fn published_at(&self, now: UnixMs) -> bool {
        now < self.publish_until
    }

    /// Whether `signature` over `signing_input` is this key's (an ID token presented back as
    /// `id_token_hint`).
    pub fn verifies(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
        };
        match &self.signer {
            Signer::Ec(pair) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
                    .verify(signing_input, signature)
                    .is_ok()
            }
            Signer::Rsa(pair) => {
                UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pair.public_key().as_ref())
                    .verify(signing_input, signature)
                    .is_ok()
            }
            Signer::Ed(pair) => UnparsedPublicKey::new(&ED25519, pair.public_key().as_ref())
                .verify(signing_input, signature)
                .is_ok(),
            Signer::Hsm(hsm) => hsm.verifies(signing_input, signature),
        }
    }
}

/// A key's state at one instant, as `keys list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not yet signing.
    Upcoming,
    /// The key that signs now.
    Active,
    /// Published, no longer signing: tokens it signed may still be live.
    Retiring,
    /// Past its publication; dropped from the JWKS.
    Expired,
    /// Pulled by the admin: unpublished, its tokens rejected.
    Revoked,
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyState::Upcoming => "upcoming",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Expired => "expired",
            KeyState::Revoked => "revoked",
        })
    }
}

/// The JWKS document prepared once and served as bytes until the key set next changes, with the
/// verifier the issuer checks its own tokens with: built from these very bytes, so the issuer
/// accepts exactly what a resource server reading this document would.
#[derive(Debug)]
pub struct JwksDocument {
    pub body: Vec<u8>,
    /// Quoted strong validator for `If-None-Match`.
    pub etag: String,
    /// `None` only if the document failed to parse back, which would be a bug.
    pub verifier: Option<Verifier>,
    /// The first instant at which a key leaves the set and the document must be rebuilt.
    valid_until: UnixMs,
}

/// What the issuer's own verifier checks besides the signature: the config's `iss`, its
/// audiences and its leeway.
#[derive(Debug)]
struct VerifierSettings {
    issuer: String,
    audiences: Vec<String>,
    leeway: Duration,
}

/// Every configured key, loaded, plus the schedule rules.
#[derive(Debug)]
pub struct KeyRing {
    /// Non-revoked keys, ordered by `not_before`.
    keys: Vec<LoadedKey>,
    /// Every configured key, revoked ones included, for `state`.
    specs: Vec<KeySpec>,
    publish_tail: Duration,
    verifier: VerifierSettings,
    jwks: Mutex<Option<Arc<JwksDocument>>>,
}

impl KeyRing {
    /// Loads every non-revoked key named in `config`. Revoked keys are not read at all.
    pub fn load(config: &Config) -> Result<KeyRing, KeyError> {
        let publish_tail = config.publish_tail();
        let mut keys = config
            .keys
            .iter()
            .filter(|k| !k.revoked)
            .map(|spec| LoadedKey::load(spec, publish_tail))
            .collect::<Result<Vec<_>, _>>()?;
        keys.sort_by_key(|k| k.spec.not_before);
        Ok(KeyRing {
            keys,
            specs: config.keys.clone(),
            publish_tail,
            verifier: VerifierSettings {
                issuer: config.issuer.clone(),
                // Every audience this config issues tokens for, client overrides included.
                audiences: config
                    .tokens
                    .audience
                    .iter()
                    .chain(
                        config
                            .clients
                            .iter()
                            .flat_map(|c| c.audience.iter().flatten()),
                    )
                    .cloned()
                    .collect(),
                leeway: config.tokens.leeway,
            },
            jwks: Mutex::new(None),
        })
    }

    /// The key that signs access tokens at `now`: its window holds `now`, and the latest
    /// `not_before` wins.
    pub fn active(&self, now: UnixMs) -> Option<&LoadedKey> {
        let kid = &scheduled_signer(&self.specs, now)?.kid;
        self.keys.iter().find(|k| &k.spec.kid == kid)
    }

    /// The key that signs ID tokens in `alg` at `now` (see [`id_token_signer`]).
    pub fn id_token_key(&self, alg: Alg, now: UnixMs) -> Option<&LoadedKey> {
        let kid = &id_token_signer(&self.specs, alg, now)?.kid;
        self.keys.iter().find(|k| &k.spec.kid == kid)
    }

    /// A key that verifies at `now`: published and not revoked.
    pub fn verifying(&self, kid: &str, now: UnixMs) -> Option<&LoadedKey> {
        self.keys
            .iter()
            .find(|k| k.spec.kid == kid && k.published_at(now))
    }

    pub fn state(&self, spec: &KeySpec, now: UnixMs) -> KeyState {
        key_state(&self.specs, self.publish_tail, spec, now)
    }

    pub fn specs(&self) -> &[KeySpec] {
        &self.specs
    }

    pub fn publish_until(&self, spec: &KeySpec) -> UnixMs {
        spec.published_until(self.publish_tail)
    }

    /// The JWKS at `now`, rebuilt only when a key has left the set since the last build.
    pub fn jwks(&self, now: UnixMs) -> Arc<JwksDocument> {
        let mut cached = self.jwks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(doc) = cached.as_ref().filter(|d| now < d.valid_until) {
            return Arc::clone(doc);
        }
        let published: Vec<&LoadedKey> = self.keys.iter().filter(|k| k.published_at(now)).collect();
        let body = json!({"keys": published.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
            .to_string()
            .into_bytes();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
        let doc = Arc::new(JwksDocument {
            etag: format!("\"{}\"", crate::encoding::hex(&digest.as_ref()[..16])),
            verifier: self.build_verifier(&body),
            valid_until: published
                .iter()
                .map(|k| k.publish_until)
                .min()
                .unwrap_or(UnixMs::MAX),
            body,
        });
        *cached = Some(Arc::clone(&doc));
        doc
    }

    fn build_verifier(&self, jwks: &[u8]) -> Option<Verifier> {
        let settings = &self.verifier;
        let first = settings.audiences.first().map_or("", String::as_str);
        let builder = settings
            .audiences
            .iter()
            .fold(
                Verifier::from_jwks(jwks, &settings.issuer, first),
                |b, a| b.also_audience(a),
            )
            .leeway(settings.leeway);
        match builder.build() {
            Ok(verifier) => Some(verifier),
            Err(e) => {
                tracing::error!(error = %e, "the JWKS document does not parse back");
                None
            }
        }
    }
}

/// The key that signs access tokens at `now` under `specs`: of the non-revoked keys that sign
/// access tokens, the one whose window holds `now`, the latest `not_before` winning.
/// [`KeyRing::active`] applies the same rule to loaded keys.
pub fn scheduled_signer(specs: &[KeySpec], now: UnixMs) -> Option<&KeySpec> {
    specs
        .iter()
        .filter(|k| k.signs_access_tokens && in_window(k, now))
        .max_by_key(|k| k.not_before)
}

/// The key that signs ID tokens in `alg` at `now`: the same rule among the keys of that
/// algorithm that sign ID tokens, where a key that signs both kinds (the default) counts only
/// while it is the access-token signer. So a key kept for ID tokens alone (`signs =
/// ["id_tokens"]`) has its own schedule, pre-publication and retirement in its algorithm (an
/// RS256 key for ID tokens beside an ES256 one for access tokens, say), and a one-key config
/// signs both with its one key, exactly as before.
pub fn id_token_signer(specs: &[KeySpec], alg: Alg, now: UnixMs) -> Option<&KeySpec> {
    let access = scheduled_signer(specs, now).map(|k| k.kid.as_str());
    specs
        .iter()
        .filter(|k| {
            k.alg == alg
                && k.signs_id_tokens
                && in_window(k, now)
                && (!k.signs_access_tokens || access == Some(k.kid.as_str()))
        })
        .max_by_key(|k| k.not_before)
}

/// What signs what at `now`, one line each, for `config check`.
pub fn signing_summary(specs: &[KeySpec], now: UnixMs) -> Vec<String> {
    let named = |k: Option<&KeySpec>| match k {
        Some(k) => format!("{} ({})", k.kid, k.alg),
        None => "no key (tokens cannot be issued)".to_owned(),
    };
    let access = scheduled_signer(specs, now);
    let mut lines = vec![format!("access tokens are signed now by {}", named(access))];
    for alg in [Alg::RS256, Alg::ES256, Alg::EdDSA] {
        if let Some(key) = id_token_signer(specs, alg, now) {
            lines.push(format!(
                "{alg} ID tokens are signed now by {}",
                named(Some(key))
            ));
        }
    }
    if id_token_signer(specs, Alg::RS256, now).is_none() {
        lines.push(format!(
            "ID tokens of clients without id_token_signed_response_alg are signed by {} (no \
             RS256 key signs ID tokens now)",
            named(access)
        ));
    }
    lines
}

fn in_window(k: &KeySpec, now: UnixMs) -> bool {
    !k.revoked && k.not_before <= now && now < k.not_after
}

/// A key's state at `now`, from the config alone (no key file is read).
pub fn key_state(
    specs: &[KeySpec],
    publish_tail: Duration,
    spec: &KeySpec,
    now: UnixMs,
) -> KeyState {
    if spec.revoked {
        KeyState::Revoked
    } else if now >= spec.published_until(publish_tail) {
        KeyState::Expired
    } else if scheduled_signer(specs, now).is_some_and(|a| a.kid == spec.kid)
        || id_token_signer(specs, spec.alg, now).is_some_and(|a| a.kid == spec.kid)
    {
        KeyState::Active
    } else if now < spec.not_before {
        KeyState::Upcoming
    } else {
        KeyState::Retiring
    }
}

/// For `serve` with the dev config: generates each missing key file marked `generate_if_missing`.
/// Returns the kids generated, so the caller can warn loudly.
pub fn generate_missing(config: &Config) -> Result<Vec<String>, KeyFileError> {
    let mut generated = Vec::new();
    for spec in config
        .keys
        .iter()
        .filter(|k| k.generate_if_missing && !k.revoked && k.pkcs11.is_none())
    {
        if !spec.path.exists() {
            files::write_private_pem(&spec.path, &files::generate(spec.alg, MIN_RSA_BITS)?)?;
            generated.push(spec.kid.clone());
        }
    }
    Ok(generated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config_with(dir: &Path, keys: &[(&str, Alg, &str, &str, bool)]) -> Config {
        let mut text = String::from(
            "issuer = \"http://localhost\"\nlisten = \"127.0.0.1:0\"\n[tokens]\naccess_ttl = \"10m\"\nleeway = \"1m\"\n",
        );
        for (kid, alg, nb, na, revoked) in keys {
            let path = dir.join(format!("{kid}.pem"));
            if !path.exists() {
                files::write_private_pem(&path, &files::generate(*alg, 2048).unwrap()).unwrap();
            }
            text.push_str(&format!(
                "[[keys]]\nkid = \"{kid}\"\nalg = \"{alg}\"\npath = \"{}\"\nnot_before = \"{nb}\"\nnot_after = \"{na}\"\nrevoked = {revoked}\n",
                path.display()
            ));
        }
        Config::parse(&text, |_| None).unwrap()
    }

    fn at(s: &str) -> UnixMs {
        crate::config::parse_timestamp("t", s).unwrap()
    }

    #[test]
    fn schedule_picks_latest_started_key_and_publishes_until_tail() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with(
            dir.path(),
            &[
                (
                    "old",
                    Alg::ES256,
                    "2026-01-01T00:00:00Z",
                    "2026-03-01T00:00:00Z",
                    false,
                ),
                (
                    "new",
                    Alg::RS256,
                    "2026-02-01T00:00:00Z",
                    "2026-06-01T00:00:00Z",
                    false,
                ),
                (
                    "gone",
                    Alg::ES256,
                    "2026-01-01T00:00:00Z",
                    "2026-06-01T00:00:00Z",
                    true,
                ),
            ],
        );
        let ring = KeyRing::load(&config).unwrap();
        assert_eq!(
            ring.active(at("2026-01-15T00:00:00Z")).unwrap().kid(),
            "old"
        );
        // Overlap: the later not_before wins.
        assert_eq!(
            ring.active(at("2026-02-15T00:00:00Z")).unwrap().kid(),
            "new"
        );
        assert!(ring.active(at("2025-12-31T00:00:00Z")).is_none());

        let old = &config.keys[0];
        // Published up to not_after + 10m + 1m, not a moment longer.
        assert_eq!(
            ring.state(old, at("2026-03-01T00:10:59Z")),
            KeyState::Retiring
        );
        assert_eq!(
            ring.state(old, at("2026-03-01T00:11:00Z")),
            KeyState::Expired
        );
        assert_eq!(
            ring.state(&config.keys[1], at("2026-01-15T00:00:00Z")),
            KeyState::Upcoming
        );
        assert_eq!(
            ring.state(&config.keys[2], at("2026-01-15T00:00:00Z")),
            KeyState::Revoked
        );
        assert!(ring.verifying("gone", at("2026-01-15T00:00:00Z")).is_none());
        assert!(ring.verifying("old", at("2026-03-01T00:10:59Z")).is_some());
        assert!(ring.verifying("old", at("2026-03-01T00:11:00Z")).is_none());
    }

    #[test]
    fn jwks_lists_published_public_keys_and_rebuilds_when_one_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with(
            dir.path(),
            &[
                (
                    "old",
                    Alg::ES256,
                    "2026-01-01T00:00:00Z",
                    "2026-03-01T00:00:00Z",
                    false,
                ),
                (
                    "new",
                    Alg::RS256,
                    "2026-02-01T00:00:00Z",
                    "2026-06-01T00:00:00Z",
                    false,
                ),
            ],
        );
        let ring = KeyRing::load(&config).unwrap();
        let before = ring.jwks(at("2026-02-15T00:00:00Z"));
        let doc: serde_json::Value = serde_json::from_slice(&before.body).unwrap();
        let keys = doc["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        for k in keys {
            assert_eq!(k["use"], "sig");
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(k.get(private).is_none());
            }
        }
        let after = ring.jwks(at("2026-03-02T00:00:00Z"));
        let doc: serde_json::Value = serde_json::from_slice(&after.body).unwrap();
        assert_eq!(doc["keys"].as_array().unwrap().len(), 1);
        assert_ne!(before.etag, after.etag);
    }

    #[tokio::test]
    async fn signatures_verify_with_the_rings_own_verifier() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with(
            dir.path(),
            &[
                (
                    "e",
                    Alg::ES256,
                    "2026-01-01T00:00:00Z",
                    "2027-01-01T00:00:00Z",
                    false,
                ),
                (
                    "r",
                    Alg::RS256,
                    "2026-01-01T00:00:00Z",
                    "2027-01-01T00:00:00Z",
                    false,
                ),
            ],
        );
        let ring = KeyRing::load(&config).unwrap();
        let now = at("2026-06-01T00:00:00Z");
        let verifier = ring.jwks(now).verifier.clone().unwrap();
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(now as u64);
        for kid in ["e", "r"] {
            let key = ring.verifying(kid, now).unwrap();
            let claims = json!({"iss": "http://localhost", "sub": "x", "aud": "api",
                "exp": now / 1000 + 60, "nbf": now / 1000});
            let jws = key.sign_jws(claims.to_string().as_bytes()).unwrap();
            let verified = verifier.verify_at(&jws, when).await.unwrap();
            assert_eq!(verified.sub, "x");
            let header: serde_json::Value =
                serde_json::from_slice(&B64.decode(jws.split('.').next().unwrap()).unwrap())
                    .unwrap();
            assert_eq!(header["kid"], kid);
            assert_eq!(header["typ"], "at+jwt");
        }
    }
}
