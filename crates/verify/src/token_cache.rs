//! An optional, bounded cache of verified access tokens (Envoy's `jwt_cache_config` is the
//! precedent): a hit skips the signature, never the checks that can change. Every hit checks
//! expiry and not-before again, that the token's `kid` is still published, and the revocation
//! set, so the cache never lets a token live longer than it would without it. DPoP proofs are
//! never cached: they are checked on every request.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use aws_lc_rs::digest::{SHA256, digest};

use crate::claims::Claims;

pub(crate) struct TokenCache {
    capacity: usize,
    entries: RwLock<HashMap<[u8; 32], Cached>>,
}

#[derive(Clone)]
pub(crate) struct Cached {
    pub(crate) claims: Claims,
    pub(crate) kid: String,
}

/// Tokens are keyed by their SHA-256: the cache holds no token a memory dump could replay.
pub(crate) fn key_of(token: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    key
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, key: &[u8; 32]) -> Option<Cached> {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Keeps `entry` unless the cache is full of tokens still alive at `now` (seconds):
    /// expired ones make room first, and nothing is evicted that might be asked for again.
    pub(crate) fn put(&self, key: [u8; 32], entry: Cached, now: i64) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.claims.exp > now);
        }
        if entries.len() < self.capacity {
            entries.insert(key, entry);
        }
    }

    pub(crate) fn remove(&self, key: &[u8; 32]) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}
