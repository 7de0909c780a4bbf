//! Passwords: argon2id hashing and verification on the blocking pool, never on an actix worker.
//!
//! An unknown user is checked against a dummy hash of the same cost, so "no such user" and
//! "wrong password" take the same time and give the same answer.

use std::fmt;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use tokio::sync::Semaphore;

use crate::config::PasswordSettings;

/// Longest password accepted, in bytes: bounds the work one request can ask for.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A password in memory. Never printed.
#[derive(Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn new(s: String) -> Password {
        Password(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the hashing pool is gone")]
    Pool,
}

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// A real hash of a random password with the same cost, verified for unknown users.
    dummy_hash: Arc<str>,
    /// argon2 holds `memory_kib` per hash: a flood queues here instead of exhausting memory.
    permits: Arc<Semaphore>,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    pub fn new(settings: &PasswordSettings) -> Result<PasswordHasher, CredentialError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| CredentialError::Params(e.to_string()))?;
        let dummy_password = crate::tokens::new_jti();
        let dummy_hash = hash_with(&params, &dummy_password)?;
        Ok(PasswordHasher {
            params,
            dummy_hash: dummy_hash.into(),
            permits: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
        })
    }

    /// Hashes `password` into a PHC string (`$argon2id$v=19$m=…`).
    pub async fn hash(&self, password: &Password) -> Result<String, CredentialError> {
        let params = self.params.clone();
        let password = password.clone();
        self.run(move || hash_with(&params, password.expose()))
            .await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no user.
    /// Takes the same time either way.
    #[tracing::instrument(name = "verify_password", skip_all)]
    pub async fn verify(&self, stored: Option<&str>, password: &Password) -> bool {
        let known = stored.is_some();
        let hash: Arc<str> = stored.map_or_else(|| Arc::clone(&self.dummy_hash), Arc::from);
        let password = password.clone();
        let matched = self
            .run(move || verify_with(&hash, password.expose()))
            .await
            .unwrap_or(false);
        known && matched
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CredentialError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| CredentialError::Pool)?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .await
            .map_err(|_| CredentialError::Pool)
    }
}

fn hash_with(params: &Params, password: &str) -> Result<String, CredentialError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| CredentialError::Hash("randomness unavailable".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| CredentialError::Hash(e.to_string()))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CredentialError::Hash(e.to_string()))
}

/// Verifies with the parameters recorded in the hash itself, so raising the cost later keeps
/// old hashes valid. The comparison inside is constant-time.
fn verify_with(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordSettings {
        PasswordSettings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 2,
        }
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = PasswordHasher::new(&cheap()).unwrap();
        let hash = hasher
            .hash(&Password::new("correct horse".into()))
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(
            hasher
                .verify(Some(&hash), &Password::new("correct horse".into()))
                .await
        );
        assert!(
            !hasher
                .verify(Some(&hash), &Password::new("wrong".into()))
                .await
        );
        assert!(
            !hasher
                .verify(Some("not a hash"), &Password::new("x".into()))
                .await
        );
    }

    #[tokio::test]
    async fn unknown_user_is_checked_against_the_dummy_and_fails() {
        let hasher = PasswordHasher::new(&cheap()).unwrap();
        assert!(!hasher.verify(None, &Password::new(String::new())).await);
    }

    #[test]
    fn passwords_stay_out_of_debug() {
        assert!(!format!("{:?}", Password::new("hunter2".into())).contains("hunter2"));
    }
}
