//! Passwords: argon2id hashing and verification on a small pool of dedicated threads, never on
//! an actix worker.
//!
//! An unknown user is checked against a dummy hash of the same cost, so "no such user" and
//! "wrong password" take the same time and give the same answer. The pool is fixed at
//! `max_concurrent` threads rather than tokio's elastic blocking pool: each hash takes
//! `memory_kib` from its thread's malloc arena, and arenas keep what they were given, so a
//! login burst spread over many threads would leave that much memory resident on each.

use std::fmt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use tokio::sync::{Semaphore, oneshot};

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

type Job = Box<dyn FnOnce() + Send>;

/// `threads` OS threads running hashing jobs. Admission takes one of `threads` permits and the
/// queue holds `threads` jobs, so a job admitted always fits in the queue, however many
/// workers are between jobs.
struct HashingPool {
    jobs: SyncSender<Job>,
    permits: Semaphore,
}

impl HashingPool {
    fn new(threads: usize) -> Result<HashingPool, CredentialError> {
        let (jobs, queue) = sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue: Arc<Mutex<Receiver<Job>>> = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("latchkey-argon2-{i}"))
                .spawn(move || {
                    loop {
                        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        match job {
                            Ok(job) => job(),
                            // Every sender is gone: the hasher was dropped.
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|_| CredentialError::Pool)?;
        }
        Ok(HashingPool {
            jobs,
            permits: Semaphore::new(threads),
        })
    }
}

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// A real hash of a random password with the same cost, verified for unknown users.
    dummy_hash: Arc<str>,
    /// argon2 holds `memory_kib` per hash: a flood queues here instead of exhausting memory.
    pool: Arc<HashingPool>,
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
            pool: Arc::new(HashingPool::new(settings.max_concurrent.max(1))?),
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
    /// Takes the same time either way. An error is a broken pool, never a wrong password.
    #[tracing::instrument(name = "verify_password", skip_all)]
    pub async fn verify(
        &self,
        stored: Option<&str>,
        password: &Password,
    ) -> Result<bool, CredentialError> {
        let known = stored.is_some();
        let hash: Arc<str> = stored.map_or_else(|| Arc::clone(&self.dummy_hash), Arc::from);
        let password = password.clone();
        let matched = self
            .run(move || verify_with(&hash, password.expose()))
            .await??;
        Ok(known && matched)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CredentialError> {
        let _permit = self
            .pool
            .permits
            .acquire()
            .await
            .map_err(|_| CredentialError::Pool)?;
        let span = tracing::Span::current();
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(span.in_scope(work));
        });
        // The permit guarantees room in the queue, so this never blocks the caller's thread.
        self.pool
            .jobs
            .try_send(job)
            .map_err(|_| CredentialError::Pool)?;
        result.await.map_err(|_| CredentialError::Pool)
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

/// The largest argon2 memory cost a stored hash may ask for: the config's own bound, so a corrupt
/// or hostile record cannot make a login allocate without bound.
const MAX_MEMORY_KIB: u32 = crate::config::MAX_ARGON2_MEMORY_KIB;

thread_local! {
    /// argon2's working memory, kept by each hashing thread and reused by every verification
    /// on it, so resident memory stays at one buffer per thread.
    static WORKING_MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Verifies with the parameters recorded in the hash itself, so raising the cost later keeps
/// old hashes valid. The comparison is constant-time. `Ok(false)` means a wrong password and
/// nothing else: a stored hash that cannot be checked (unreadable, or asking for more than
/// [`MAX_MEMORY_KIB`]) is an error, so it is answered and logged as one instead of passing for a
/// bad credential.
fn verify_with(hash: &str, password: &str) -> Result<bool, CredentialError> {
    let unusable = |why: &str| CredentialError::Hash(format!("stored hash unusable: {why}"));
    let parsed = PasswordHash::new(hash).map_err(|_| unusable("not a PHC string"))?;
    let algorithm =
        Algorithm::try_from(parsed.algorithm).map_err(|_| unusable("not an argon2 hash"))?;
    let params = Params::try_from(&parsed).map_err(|_| unusable("bad argon2 parameters"))?;
    let version = match parsed.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return Err(unusable("unknown argon2 version")),
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(unusable("no salt or no hash"));
    };
    let mut salt_buf = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_buf)
        .map_err(|_| unusable("bad salt"))?;
    if params.m_cost() > MAX_MEMORY_KIB {
        return Err(unusable("memory cost above 1 GiB"));
    }
    let mut out = vec![0u8; expected.len()];
    let computed = WORKING_MEMORY.with_borrow_mut(|memory| {
        let blocks = params.block_count();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        Argon2::new(algorithm, version, params).hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut out,
            &mut memory[..blocks],
        )
    });
    computed.map_err(|e| CredentialError::Hash(e.to_string()))?;
    Ok(aws_lc_rs::constant_time::verify_slices_are_equal(&out, expected.as_bytes()).is_ok())
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
                .unwrap()
        );
        assert!(
            !hasher
                .verify(Some(&hash), &Password::new("wrong".into()))
                .await
                .unwrap()
        );
        assert!(
            hasher
                .verify(Some("not a hash"), &Password::new("x".into()))
                .await
                .is_err(),
            "an unusable stored hash is an error, not a wrong password"
        );
        let huge = "$argon2id$v=19$m=2000000,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
        assert!(
            hasher
                .verify(Some(huge), &Password::new("x".into()))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn unknown_user_is_checked_against_the_dummy_and_fails() {
        let hasher = PasswordHasher::new(&cheap()).unwrap();
        assert!(
            !hasher
                .verify(None, &Password::new(String::new()))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_burst_larger_than_the_pool_queues_and_every_check_completes() {
        let hasher = PasswordHasher::new(&cheap()).unwrap();
        let hash = hasher.hash(&Password::new("pw".into())).await.unwrap();
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..64 {
            let (hasher, hash) = (hasher.clone(), hash.clone());
            burst.spawn(async move {
                let password = if i % 2 == 0 { "pw" } else { "nope" };
                (
                    i,
                    hasher
                        .verify(Some(&hash), &Password::new(password.into()))
                        .await
                        .unwrap(),
                )
            });
        }
        for (i, matched) in burst.join_all().await {
            assert_eq!(matched, i % 2 == 0);
        }
    }

    #[test]
    fn passwords_stay_out_of_debug() {
        assert!(!format!("{:?}", Password::new("hunter2".into())).contains("hunter2"));
    }
}
