//! `[dpop]`: DPoP proofs at the token endpoints (RFC 9449): freshness, server nonces, and the
//! embedded store's replay memory.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawDpop {
    /// How old a proof's `iat` may be.
    pub(super) proof_max_age: String,
    /// Clock skew tolerated on a proof's `iat`, either way.
    pub(super) proof_leeway: String,
    /// How long a server nonce stays acceptable.
    pub(super) nonce_lifetime: String,
    /// A file of at least 32 random bytes shared by every instance, from which nonces are
    /// derived; absent: each process draws its own (a client then needs a new nonce whenever
    /// its requests move to another instance).
    pub(super) nonce_secret_file: Option<PathBuf>,
    /// Embedded store: proofs remembered at most (about 60 bytes each); a client address holds
    /// at most a quarter of them.
    pub(super) max_remembered_proofs: usize,
}

impl Default for RawDpop {
    fn default() -> Self {
        RawDpop {
            proof_max_age: "60s".into(),
            proof_leeway: "5s".into(),
            nonce_lifetime: "5m".into(),
            nonce_secret_file: None,
            max_remembered_proofs: 200_000,
        }
    }
}

/// DPoP proofs at the token endpoints (RFC 9449): how fresh they must be, and server nonces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpopSettings {
    pub proof_max_age: Duration,
    pub proof_leeway: Duration,
    pub nonce_lifetime: Duration,
    pub nonce_secret_file: Option<PathBuf>,
    /// The embedded store's replay memory: proofs remembered at most.
    pub max_remembered_proofs: usize,
}

impl DpopSettings {
    pub fn freshness(&self) -> latchkey_verify::dpop::Freshness {
        latchkey_verify::dpop::Freshness {
            max_age: self.proof_max_age,
            leeway: self.proof_leeway,
        }
    }
}

pub(super) fn validate(raw: RawDpop, problems: &mut Vec<String>) -> DpopSettings {
    let dpop = DpopSettings {
        proof_max_age: duration(problems, "dpop.proof_max_age", &raw.proof_max_age, false),
        proof_leeway: duration(problems, "dpop.proof_leeway", &raw.proof_leeway, false),
        nonce_lifetime: duration(problems, "dpop.nonce_lifetime", &raw.nonce_lifetime, false),
        nonce_secret_file: raw.nonce_secret_file,
        max_remembered_proofs: raw.max_remembered_proofs,
    };
    if dpop.proof_max_age > Duration::from_secs(600) {
        problems.push("dpop.proof_max_age: at most 10m; proofs are meant to be fresh".into());
    }
    if !(1..=10_000_000).contains(&dpop.max_remembered_proofs) {
        problems.push("dpop.max_remembered_proofs: must be 1..=10000000".into());
    }
    dpop
}
