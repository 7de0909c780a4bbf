//! DPoP at the token endpoints (RFC 9449 §5): the proof a token request carries is checked with
//! `latchkey-verify` (the same checks resource servers make), its `jti` is remembered so it
//! cannot be replayed, and a client that asks for it must put a fresh server nonce in its
//! proofs (§8). What a proof binds is decided by the flows: the access token always, the
//! refresh family of a public client too (`docs/dpop.md`).

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey_verify::dpop::{self, ProofContext, ReplayCache};
use latchkey_verify::{ErrorKind, VerifyError};

use super::{FlowError, Flows, PresentedAccess};
use crate::clock::UnixMs;
use crate::config::{ClientSpec, DpopSettings};
use crate::state::Snapshot;
use crate::store::{SharedCounters, SharedStore};

/// The `DPoP` headers of a token request and the endpoint they were sent to.
#[derive(Clone, Copy, Debug, Default)]
pub struct DpopPresented<'a> {
    /// Every `DPoP` header of the request (more than one is refused).
    pub proofs: &'a [&'a str],
    /// The endpoint's path (`/oauth/token`): `htu` must be the issuer's URL with it.
    pub path: &'a str,
    /// The client's address: its proofs are counted against its share of the replay memory.
    pub ip: &'a str,
}

/// What DPoP needs beyond the config: the replay memory and the nonce key.
pub(super) struct DpopGuard {
    replays: Replays,
    nonces: NonceKey,
}

enum Replays {
    /// Every instance on the store shares it (Redis): one `SET NX` with expiry per proof.
    Shared(Arc<dyn SharedCounters>),
    /// The store serves one process: a bounded memory, shared out by client address (the
    /// addresses hashed under this process's random key, so none can be aimed at another's
    /// count).
    Local(ReplayCache, RandomState),
}

impl DpopGuard {
    pub(super) fn new(store: &SharedStore, settings: &DpopSettings) -> Result<Self, FlowError> {
        let replays = match store.shared_counters() {
            Some(counters) => Replays::Shared(counters),
            None => Replays::Local(
                ReplayCache::new(settings.max_remembered_proofs),
                RandomState::new(),
            ),
        };
        Ok(DpopGuard {
            replays,
            nonces: NonceKey::new(settings)?,
        })
    }
}

/// Server nonces (§8) without state: the current time window, authenticated with a key every
/// instance shares (`dpop.nonce_secret_file`) or this process drew. A nonce is accepted during
/// its window and the next one.
struct NonceKey {
    key: hmac::Key,
}

impl NonceKey {
    fn new(settings: &DpopSettings) -> Result<Self, FlowError> {
        let secret = match &settings.nonce_secret_file {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    FlowError::InvalidRequest(
                        format!("dpop.nonce_secret_file {}: {e}", path.display()).into(),
                    )
                })?;
                let secret = bytes.trim_ascii().to_vec();
                if secret.len() < 32 {
                    return Err(FlowError::InvalidRequest(
                        "dpop.nonce_secret_file: needs at least 32 bytes".into(),
                    ));
                }
                secret
            }
            None => {
                let mut secret = vec![0u8; 32];
                SystemRandom::new()
                    .fill(&mut secret)
                    .map_err(|_| FlowError::Internal("no randomness for DPoP nonces".into()))?;
                secret
            }
        };
        Ok(NonceKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    fn nonce_for(&self, window: u64) -> String {
        let tag = hmac::sign(&self.key, &window.to_be_bytes());
        let mut raw = window.to_be_bytes().to_vec();
        raw.extend_from_slice(&tag.as_ref()[..16]);
        B64.encode(raw)
    }

    fn window(lifetime: Duration, now: UnixMs) -> u64 {
        let lifetime_ms = u64::try_from(lifetime.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        u64::try_from(now).unwrap_or(0) / lifetime_ms
    }

    fn current(&self, lifetime: Duration, now: UnixMs) -> String {
        self.nonce_for(Self::window(lifetime, now))
    }

    fn accepts(&self, nonce: &str, lifetime: Duration, now: UnixMs) -> bool {
        let Ok(raw) = B64.decode(nonce) else {
            return false;
        };
        let Some(window) = raw
            .get(..8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_be_bytes)
        else {
            return false;
        };
        let current = Self::window(lifetime, now);
        (window == current || window.saturating_add(1) == current)
            && verify_slices_are_equal(self.nonce_for(window).as_bytes(), nonce.as_bytes()).is_ok()
    }
}

impl Flows {
    /// The current nonce for a client that wants them, to send as `DPoP-Nonce`.
    pub fn dpop_nonce(&self, snapshot: &Snapshot, client: &ClientSpec) -> Option<String> {
        client.dpop_nonce.then(|| {
            self.dpop
                .nonces
                .current(snapshot.config.dpop.nonce_lifetime, self.clock.now_ms())
        })
    }

    /// Checks a token request's proof. Returns the thumbprint of its key (what the tokens are
    /// bound to), or `None` when the request carries no proof and `client` (if known yet) does
    /// not require one. Runs before anything else of the request is looked at.
    pub(super) async fn check_dpop(
        &self,
        snapshot: &Snapshot,
        client: Option<&ClientSpec>,
        presented: &DpopPresented<'_>,
    ) -> Result<Option<String>, FlowError> {
        let proof = match self.single_proof(presented.proofs)? {
            Some(proof) => proof,
            None if client.is_some_and(|c| c.require_dpop) => {
                self.metrics.dpop_proof("invalid");
                return Err(FlowError::InvalidDpopProof(
                    "this client must send a DPoP proof".into(),
                ));
            }
            None => return Ok(None),
        };
        let proof = self.verify_at_issuer(snapshot, proof, "POST", presented.path, None)?;
        if client.is_some_and(|c| c.dpop_nonce) {
            let now = self.clock.now_ms();
            let lifetime = snapshot.config.dpop.nonce_lifetime;
            let fresh = proof
                .nonce
                .as_deref()
                .is_some_and(|n| self.dpop.nonces.accepts(n, lifetime, now));
            if !fresh {
                self.metrics.dpop_proof("nonce_required");
                return Err(FlowError::UseDpopNonce {
                    nonce: self.dpop.nonces.current(lifetime, now),
                });
            }
        }
        self.remember_proof(snapshot, &proof, presented.ip).await?;
        Ok(Some(proof.jkt))
    }

    /// Checks the proof that accompanies an access token bound to `jkt` at one of the issuer's
    /// own protected endpoints: `ath` included, and signed by that key.
    pub(super) async fn check_resource_proof(
        &self,
        presented: &PresentedAccess<'_>,
        jkt: &str,
    ) -> Result<(), FlowError> {
        let Some(proof) = self.single_proof(presented.proofs)? else {
            self.metrics.dpop_proof("invalid");
            return Err(FlowError::InvalidDpopProof(
                "a DPoP proof is required".into(),
            ));
        };
        let snapshot = self.snapshot();
        let proof = self.verify_at_issuer(
            &snapshot,
            proof,
            presented.method,
            presented.path,
            Some(presented.token),
        )?;
        if proof.jkt != jkt {
            self.metrics.dpop_proof("invalid");
            return Err(FlowError::InvalidDpopProof(
                "the DPoP proof is not signed by the key the token is bound to".into(),
            ));
        }
        self.remember_proof(&snapshot, &proof, presented.ip).await
    }

    /// Every check of `proof` but replay, for `method` on the issuer's `path`, now.
    fn verify_at_issuer(
        &self,
        snapshot: &Snapshot,
        proof: &str,
        method: &str,
        path: &str,
        access_token: Option<&str>,
    ) -> Result<dpop::VerifiedProof, FlowError> {
        let url = format!("{}{path}", snapshot.config.issuer);
        let context = ProofContext {
            method,
            url: &url,
            access_token,
        };
        let freshness = snapshot.config.dpop.freshness();
        dpop::verify_proof(proof, &context, &freshness, self.clock.now_system_time())
            .map_err(|e| self.refused_proof(e))
    }

    /// The request's one proof, if any: two `DPoP` headers are refused (RFC 9449 §4.3).
    fn single_proof<'a>(&self, proofs: &[&'a str]) -> Result<Option<&'a str>, FlowError> {
        match proofs {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => {
                self.metrics.dpop_proof("invalid");
                Err(FlowError::InvalidDpopProof(
                    "more than one DPoP header".into(),
                ))
            }
        }
    }

    /// Refuses a proof seen before; remembers it otherwise, for as long as it is fresh. Called
    /// only once the request passed its throttles, so a refused request plants nothing. On the
    /// embedded store a client address past its share of the memory is refused (429) before
    /// the memory fills for everyone.
    async fn remember_proof(
        &self,
        snapshot: &Snapshot,
        proof: &dpop::VerifiedProof,
        ip: &str,
    ) -> Result<(), FlowError> {
        let window = snapshot.config.dpop.freshness().replay_window();
        let seen = match &self.dpop.replays {
            Replays::Local(cache, keyed) => {
                let source = keyed.hash_one(crate::limits::ip_bucket(ip));
                let now = self.clock.now_system_time();
                match cache.check_from(source, proof.replay_key(), now, window) {
                    dpop::Seen::SourceFull => {
                        tracing::warn!(
                            event = "dpop.source_full",
                            %ip,
                            "DPoP proofs refused: this address holds its share of the replay memory"
                        );
                        self.metrics.dpop_proof("throttled");
                        return Err(FlowError::Throttled {
                            retry_after_secs: window.as_secs().max(1),
                        });
                    }
                    seen => seen,
                }
            }
            Replays::Shared(counters) => {
                let key = format!("dpop:{}", B64.encode(proof.replay_key()));
                let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
                if counters.claim(&key, window_ms).await? {
                    dpop::Seen::First
                } else {
                    dpop::Seen::Again
                }
            }
        };
        dpop::refuse_replay(seen).map_err(|e| self.refused_proof(e))?;
        self.metrics.dpop_proof("accepted");
        Ok(())
    }

    /// Counts a refused proof and says why, as the flows say it.
    fn refused_proof(&self, e: VerifyError) -> FlowError {
        match (e.kind(), e.dpop_fault()) {
            (ErrorKind::ReplayMemoryFull, _) => FlowError::Overloaded,
            (_, Some(dpop::ProofFault::Replayed)) => {
                tracing::warn!(event = "dpop.replayed", "a DPoP proof was presented again");
                self.metrics.dpop_proof("replayed");
                FlowError::InvalidDpopProof(e.to_string().into())
            }
            _ => {
                self.metrics.dpop_proof("invalid");
                FlowError::InvalidDpopProof(e.to_string().into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_lives_its_window_and_the_next_and_only_with_its_key() {
        let settings = DpopSettings {
            proof_max_age: Duration::from_secs(60),
            proof_leeway: Duration::from_secs(5),
            nonce_lifetime: Duration::from_secs(300),
            nonce_secret_file: None,
            max_remembered_proofs: 10,
        };
        let key = NonceKey::new(&settings).unwrap();
        let other = NonceKey::new(&settings).unwrap();
        let life = settings.nonce_lifetime;
        let t = 1_700_000_000_000;
        let nonce = key.current(life, t);
        assert!(key.accepts(&nonce, life, t));
        assert!(key.accepts(&nonce, life, t + 300_000));
        assert!(!key.accepts(&nonce, life, t + 600_000));
        assert!(!other.accepts(&nonce, life, t));
        assert!(!key.accepts("not-a-nonce", life, t));
    }
}
