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
    pub(super) path: PathBuf,
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
    pub path: PathBuf,
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
        keys.push(KeySpec {
            kid: k.kid,
            alg,
            path: k.path,
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
