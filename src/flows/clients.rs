//! Client authentication at the OAuth endpoints (RFC 6749 §2.3): a confidential client proves
//! its secret (`client_secret_basic` or `client_secret_post`), a public client names itself.
//!
//! A secret is checked against its argon2id hash once; after that a keyed digest of it (under a
//! key that lives only in this process) answers, so a service fetching client-credentials tokens
//! costs one signature per token, not one argon2 hash. A wrong secret never enters the cache,
//! and every comparison is constant-time.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use super::{FlowError, Flows};
use crate::config::{ClientKind, ClientSpec};
use crate::credentials::Password;
use crate::state::Snapshot;

/// How the request authenticated its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `Authorization: Basic` (RFC 6749 §2.3.1).
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
    /// `client_id` alone: a public client.
    None,
}

/// A client as the request identified it.
#[derive(Debug)]
pub struct ClientCredentials {
    pub id: String,
    pub secret: Option<Password>,
    pub method: AuthMethod,
}

/// Digests of secrets that verified, by client id, with the hash they verified against (a
/// changed `secret_hash` in the config invalidates the entry).
pub(super) struct VerifiedSecrets {
    key: hmac::Key,
    by_client: Mutex<HashMap<String, (String, Vec<u8>)>>,
}

impl VerifiedSecrets {
    pub(super) fn new() -> Result<VerifiedSecrets, FlowError> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| FlowError::Internal("randomness unavailable".into()))?;
        Ok(VerifiedSecrets {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            by_client: Mutex::new(HashMap::new()),
        })
    }

    fn digest(&self, secret: &Password) -> Vec<u8> {
        hmac::sign(&self.key, secret.expose().as_bytes())
            .as_ref()
            .to_vec()
    }

    /// `Some(matches)` when a verified secret of this client (under this hash) is on record.
    fn check(&self, client: &ClientSpec, hash: &str, secret: &Password) -> Option<bool> {
        let by_client = self
            .by_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (known_hash, digest) = by_client.get(&client.id)?;
        if known_hash != hash {
            return None;
        }
        Some(
            aws_lc_rs::constant_time::verify_slices_are_equal(digest, &self.digest(secret)).is_ok(),
        )
    }

    fn remember(&self, client: &ClientSpec, hash: &str, secret: &Password) {
        let digest = self.digest(secret);
        self.by_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(client.id.clone(), (hash.to_owned(), digest));
    }
}

impl Flows {
    /// The client the request names, authenticated as its type requires. Every failure is
    /// `invalid_client`, throttled per (client, IP) like logins.
    pub async fn authenticate_client(
        &self,
        snapshot: &Snapshot,
        credentials: ClientCredentials,
        ip: &str,
    ) -> Result<ClientSpec, FlowError> {
        let limits = &snapshot.config.limits;
        let key = credentials.id.clone();
        let now = self.clock.now_ms();
        self.limiter
            .check_pair(limits, ip, &key, now)
            .await?
            .map_err(|t| FlowError::Throttled {
                retry_after_secs: t.retry_after_secs,
            })?;
        let result = self.check_client(snapshot, &credentials).await;
        match &result {
            Err(FlowError::InvalidClient(_)) => {
                self.limiter
                    .record_pair_failure(limits, &key, ip, now)
                    .await?;
            }
            Ok(_) => self.limiter.forget_client_failures(&key, ip),
            Err(_) => {}
        }
        result
    }

    async fn check_client(
        &self,
        snapshot: &Snapshot,
        credentials: &ClientCredentials,
    ) -> Result<ClientSpec, FlowError> {
        let client = snapshot.config.client(&credentials.id);
        match (client, &credentials.secret) {
            (Some(client), None) if client.kind == ClientKind::Public => Ok(client.clone()),
            (Some(client), None) => {
                let _ = client;
                Err(FlowError::InvalidClient(
                    "this client is confidential: authenticate with its secret",
                ))
            }
            (Some(client), Some(secret)) if client.kind == ClientKind::Confidential => {
                let hash = client.secret_hash.as_deref().unwrap_or("");
                let matched = match self.secrets.check(client, hash, secret) {
                    Some(matched) => matched,
                    None => {
                        let matched = self.hasher.verify(Some(hash), &client.id, secret).await?;
                        if matched {
                            self.secrets.remember(client, hash, secret);
                        }
                        matched
                    }
                };
                if matched {
                    Ok(client.clone())
                } else {
                    Err(FlowError::InvalidClient("client authentication failed"))
                }
            }
            (Some(_), Some(_)) => Err(FlowError::InvalidClient(
                "a public client has no secret to present",
            )),
            (None, secret) => {
                // The same work as a real check, so an unknown id cannot be told by its timing.
                if let Some(secret) = secret {
                    let _ = self.hasher.verify(None, &credentials.id, secret).await?;
                }
                Err(FlowError::InvalidClient("client authentication failed"))
            }
        }
    }
}
