//! `[[keys]]`: the signing keys and their schedule (`crate::keys`).

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{parse_timestamp, valid_identifier};
use crate::clock::UnixMs;

#[derive(Deserialize, Serialize)]
pub(super) struct RawKey {
    pub(super) kid: String,
    pub(super) alg: String,
    /// The key file; absent for a key held in an HSM (`pkcs11`).
    #[serde(default)]
    pub(super) path: Option<PathBuf>,
    pub(super) not_before: String,
    pub(super) not_after: String,
    #[serde(default)]
    pub(super) revoked: bool,
    #[serde(default)]
    pub(super) generate_if_missing: bool,
    #[serde(default)]
    pub(super) passphrase_env: Option<String>,
    /// What the key signs: `access_tokens`, `id_tokens`, or both (the default).
    #[serde(default)]
    pub(super) signs: Option<Vec<String>>,
    /// A key held in an HSM, instead of `path`.
    #[serde(default)]
    pub(super) pkcs11: Option<RawPkcs11>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPkcs11 {
    pub(super) module: PathBuf,
    pub(super) token: String,
    pub(super) key_label: String,
    #[serde(default)]
    pub(super) pin_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) pin_env: Option<String>,
}

/// Where an HSM key is: the PKCS#11 module, the token's label and the key's label (its private
/// and public objects share it), and where the user PIN is read from (never the config itself).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pkcs11Key {
    pub module: PathBuf,
    pub token: String,
    pub key_label: String,
    pub pin: PinSource,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PinSource {
    File(PathBuf),
    Env(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    ES256,
    RS256,
    /// Ed25519 (RFC 8037).
    EdDSA,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::ES256),
            "RS256" => Some(Alg::RS256),
            "EdDSA" => Some(Alg::EdDSA),
            _ => None,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct KeySpec {
    pub kid: String,
    pub alg: Alg,
    /// The key file (empty for a key in an HSM).
    pub path: PathBuf,
    /// Set for a key held in an HSM: the private key never enters the process.
    pub pkcs11: Option<Pkcs11Key>,
    /// Starts signing at (inclusive).
    pub not_before: UnixMs,
    /// Stops signing at (exclusive).
    pub not_after: UnixMs,
    /// Emergency switch: unpublished at once, its tokens stop verifying.
    pub revoked: bool,
    /// Dev convenience: a missing file is generated at start, with a loud warning.
    pub generate_if_missing: bool,
    /// The environment variable holding the passphrase of an encrypted key file.
    pub passphrase_env: Option<String>,
    /// Signs access tokens (one key at a time does: see `crate::keys::scheduled_signer`).
    pub signs_access_tokens: bool,
    /// Signs ID tokens (one key per algorithm at a time does).
    pub signs_id_tokens: bool,
}

impl KeySpec {
    /// The one rule for how long a key stays in the JWKS: `not_after + publish_tail`, where the
    /// tail is `access_ttl + leeway` ([`Config::publish_tail`]): a token signed at the last
    /// instant of the key's window stays verifiable until it expires.
    pub fn published_until(&self, publish_tail: Duration) -> UnixMs {
        self.not_after
            .saturating_add(crate::clock::duration_ms(publish_tail))
    }
}

/// An HSM key's settings, checked: ES256 or RS256, one PIN source, nothing file-only.
fn hsm_key(
    at: &str,
    alg: Alg,
    raw: RawPkcs11,
    file_only: bool,
    problems: &mut Vec<String>,
) -> Pkcs11Key {
    if alg == Alg::EdDSA {
        problems.push(format!(
            "{at}.alg: an HSM key signs ES256 or RS256 (PKCS#11 modules rarely offer Ed25519)"
        ));
    }
    if file_only {
        problems.push(format!(
            "{at}: generate_if_missing and passphrase_env are for key files, not HSM keys"
        ));
    }
    if raw.token.is_empty() || raw.key_label.is_empty() {
        problems.push(format!(
            "{at}.pkcs11: token and key_label must not be empty"
        ));
    }
    let pin = match (raw.pin_file, raw.pin_env) {
        (Some(file), None) => PinSource::File(file),
        (None, Some(var)) => PinSource::Env(var),
        _ => {
            problems.push(format!(
                "{at}.pkcs11: the PIN comes from pin_file or pin_env (exactly one), never from \
                 the config itself"
            ));
            PinSource::Env(String::new())
        }
    };
    Pkcs11Key {
        module: raw.module,
        token: raw.token,
        key_label: raw.key_label,
        pin,
    }
}

pub(super) fn validate(raw: Vec<RawKey>, problems: &mut Vec<String>) -> Vec<KeySpec> {
    let mut keys = Vec::new();
    let mut kids = HashSet::new();
    for (i, k) in raw.into_iter().enumerate() {
        let at = format!("keys[{i}]");
        if !valid_identifier(&k.kid) {
            problems.push(format!(
                "{at}.kid: {:?} must be 1-64 characters of A-Z a-z 0-9 . _ -",
                k.kid
            ));
        } else if !kids.insert(k.kid.clone()) {
            problems.push(format!("{at}.kid: {:?} appears twice", k.kid));
        }
        let alg = Alg::parse(&k.alg).unwrap_or_else(|| {
            problems.push(format!(
                "{at}.alg: {:?} must be ES256, RS256 or EdDSA",
                k.alg
            ));
            Alg::ES256
        });
        let not_before = parse_timestamp(&format!("{at}.not_before"), &k.not_before)
            .unwrap_or_else(|p| {
                problems.push(p);
                0
            });
        let not_after =
            parse_timestamp(&format!("{at}.not_after"), &k.not_after).unwrap_or_else(|p| {
                problems.push(p);
                0
            });
        if not_after <= not_before {
            problems.push(format!("{at}.not_after: must be later than not_before"));
        }
        let (mut signs_access_tokens, mut signs_id_tokens) = (true, true);
        if let Some(signs) = &k.signs {
            signs_access_tokens = signs.iter().any(|s| s == "access_tokens");
            signs_id_tokens = signs.iter().any(|s| s == "id_tokens");
            if let Some(bad) = signs
                .iter()
                .find(|s| *s != "access_tokens" && *s != "id_tokens")
            {
                problems.push(format!(
                    "{at}.signs: {bad:?}; a key signs access_tokens, id_tokens, or both"
                ));
            } else if signs.is_empty() {
                problems.push(format!(
                    "{at}.signs: empty; a key signs access_tokens, id_tokens, or both"
                ));
            }
        }
        let file_only = k.generate_if_missing || k.passphrase_env.is_some();
        let pkcs11 = match (&k.path, k.pkcs11) {
            (Some(_), None) => None,
            (None, Some(p)) => Some(hsm_key(&at, alg, p, file_only, problems)),
            (Some(_), Some(_)) => {
                problems.push(format!(
                    "{at}: a key is a file (path) or in an HSM (pkcs11), not both"
                ));
                None
            }
            (None, None) => {
                problems.push(format!(
                    "{at}: path (a key file) or [keys.pkcs11] (a key in an HSM) is required"
                ));
                None
            }
        };
        keys.push(KeySpec {
            kid: k.kid,
            alg,
            path: k.path.unwrap_or_default(),
            pkcs11,
            not_before,
            not_after,
            revoked: k.revoked,
            generate_if_missing: k.generate_if_missing,
            passphrase_env: k.passphrase_env,
            signs_access_tokens,
            signs_id_tokens,
        });
    }
    if keys.iter().all(|k| k.revoked) {
        problems.push("keys: at least one [[keys]] entry that is not revoked is needed".into());
    } else if !keys.iter().any(|k| !k.revoked && k.signs_access_tokens) {
        problems.push("keys: no key signs access_tokens (signs = [\"access_tokens\"])".into());
    }
    keys
}
