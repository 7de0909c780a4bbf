//! Passwords: argon2id hashing and verification on a small pool of dedicated threads, never on
//! an actix worker.
//!
//! An unknown user is checked against a dummy hash, so "no such user" and "wrong password" give
//! the same answer in the same time. After a cost change the stored hashes have several costs;
//! the dummies follow that population (see [`PasswordHasher::follow_population`]), and a correct
//! password on an old-cost hash is re-hashed at the configured cost, so the population converges. The pool is fixed at
//! `max_concurrent` threads rather than tokio's elastic blocking pool: each hash takes
//! `memory_kib` from its thread's malloc arena, and arenas keep what they were given, so a
//! login burst spread over many threads would leave that much memory resident on each.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use tokio::sync::{Semaphore, oneshot};

use crate::config::PasswordSettings;
use crate::metrics::HashingMetrics;

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
    /// The queue of checks waiting for a hashing thread is full: answer 503 now rather than
    /// grow memory and latency without bound.
    #[error("too many password checks are waiting")]
    Busy,
}

/// Checks that may wait for a hashing thread, per thread. Beyond that a check is refused at
/// once: at ~50 ms a hash, the last one admitted already waits over a second per thread.
const QUEUE_PER_THREAD: usize = 32;

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
                        let job = queue
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .recv_timeout(IDLE_RELEASE);
                        match job {
                            Ok(job) => job(),
                            Err(RecvTimeoutError::Timeout) => release_working_memory(),
                            // Every sender is gone: the hasher was dropped.
                            Err(RecvTimeoutError::Disconnected) => return,
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

/// A dummy hash, verified for unknown users, and how many stored hashes share its cost.
struct Dummy {
    weight: u64,
    hash: Arc<str>,
}

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// Real hashes of a random password, one per cost the stored hashes have (at first only the
    /// configured one).
    dummies: Arc<RwLock<Vec<Dummy>>>,
    /// argon2 holds `memory_kib` per hash: a flood queues here instead of exhausting memory.
    pool: Arc<HashingPool>,
    /// Checks waiting for a thread now, and the most that may.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    metrics: HashingMetrics,
}

/// One waiting check; leaving the queue (a thread taken, or the caller gone) counts it out.
struct InQueue<'a>(&'a PasswordHasher);

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        let left = self.0.waiting.fetch_sub(1, Ordering::Relaxed) - 1;
        self.0.metrics.waiting.set(left as i64);
    }
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
        let dummy_hash = hash_with(&params, &crate::tokens::new_jti());
        // This thread is no hashing thread: it keeps no working memory.
        release_working_memory();
        let dummy_hash = dummy_hash?;
        Ok(PasswordHasher {
            params,
            dummies: Arc::new(RwLock::new(vec![Dummy {
                weight: 1,
                hash: dummy_hash.into(),
            }])),
            pool: Arc::new(HashingPool::new(settings.max_concurrent.max(1))?),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting: settings.max_concurrent.max(1) * QUEUE_PER_THREAD,
            metrics: HashingMetrics::default(),
        })
    }

    /// Reports the queue's depth and waits to `metrics`.
    pub fn reporting_to(mut self, metrics: HashingMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Whether `stored` was hashed with other parameters than the configured ones, so a correct
    /// password should be re-hashed.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        cost_of(stored).is_some_and(|cost| cost != cost_label(&self.params))
    }

    /// Makes the dummies follow the costs of `stored_hashes` (the user base): one dummy per cost
    /// among the most common few, weighted by how many hashes have it. An unknown username is
    /// then checked at a cost real accounts have, chosen by the name, so repeated probes of one
    /// name always take the time of the same class of real account.
    pub async fn follow_population<'a>(
        &self,
        stored_hashes: impl Iterator<Item = &'a str>,
    ) -> Result<(), CredentialError> {
        let mut costs: BTreeMap<String, (u64, Params)> = BTreeMap::new();
        for hash in stored_hashes {
            if let (Some(label), Some(params)) = (cost_of(hash), params_of(hash)) {
                costs.entry(label).or_insert((0, params)).0 += 1;
            }
        }
        let mut ranked: Vec<(u64, Params)> = costs.into_values().collect();
        ranked.sort_by_key(|(count, _)| std::cmp::Reverse(*count));
        ranked.truncate(MAX_DUMMIES);
        if ranked.is_empty() {
            ranked.push((1, self.params.clone()));
        }
        let mut dummies = Vec::with_capacity(ranked.len());
        for (weight, params) in ranked {
            let hash = self
                .run(move || hash_with(&params, &crate::tokens::new_jti()))
                .await??;
            dummies.push(Dummy {
                weight,
                hash: hash.into(),
            });
        }
        *self.dummies.write().unwrap_or_else(PoisonError::into_inner) = dummies;
        Ok(())
    }

    /// The dummy an unknown `username` is checked against: stable per name, spread over the
    /// dummies by their weights.
    fn dummy_for(&self, username: &str) -> Arc<str> {
        let dummies = self.dummies.read().unwrap_or_else(PoisonError::into_inner);
        let total: u64 = dummies.iter().map(|d| d.weight).sum();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, username.as_bytes());
        let mut pick = [0u8; 8];
        pick.copy_from_slice(&digest.as_ref()[..8]);
        let mut at = u64::from_le_bytes(pick) % total.max(1);
        for dummy in dummies.iter() {
            if at < dummy.weight {
                return Arc::clone(&dummy.hash);
            }
            at -= dummy.weight;
        }
        dummies
            .first()
            .map_or_else(|| Arc::from(""), |d| Arc::clone(&d.hash))
    }

    /// Hashes `password` into a PHC string (`$argon2id$v=19$m=…`).
    pub async fn hash(&self, password: &Password) -> Result<String, CredentialError> {
        let params = self.params.clone();
        let password = password.clone();
        self.run(move || hash_with(&params, password.expose()))
            .await?
    }

    /// Checks `password` against `stored`, or, when there is no such user, against the dummy for
    /// `username`: the same answer, in the time of a real account. An error is an unusable
    /// stored hash or a broken pool, never a wrong password.
    #[tracing::instrument(name = "verify_password", skip_all)]
    pub async fn verify(
        &self,
        stored: Option<&str>,
        username: &str,
        password: &Password,
    ) -> Result<bool, CredentialError> {
        let known = stored.is_some();
        let hash: Arc<str> = stored.map_or_else(|| self.dummy_for(username), Arc::from);
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
        let queued = InQueue(self);
        let depth = self.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.waiting.set(depth as i64);
        if depth > self.max_waiting {
            return Err(CredentialError::Busy);
        }
        let started = std::time::Instant::now();
        let _permit = self
            .pool
            .permits
            .acquire()
            .await
            .map_err(|_| CredentialError::Pool)?;
        drop(queued);
        self.metrics.wait.0.observe(started.elapsed().as_secs_f64());
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
    let encoded =
        SaltString::encode_b64(&salt).map_err(|e| CredentialError::Hash(e.to_string()))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let failed = |e: argon2::password_hash::Error| CredentialError::Hash(e.to_string());
    // In the thread's working memory, as verifications are: argon2's own allocation would be
    // freed below glibc's mmap threshold and stay resident in the thread's arena.
    let output = Output::init_with(
        params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN),
        |out| {
            with_working_memory(params.block_count(), |memory| {
                argon2.hash_password_into_with_memory(password.as_bytes(), &salt, out, memory)
            })?;
            Ok(())
        },
    )
    .map_err(failed)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(failed)?,
        salt: Some(encoded.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Distinct costs the dummies follow at most (the most common ones).
const MAX_DUMMIES: usize = 4;

/// `m=…,t=…,p=…` of a PHC string, the class a hash's verification time belongs to.
fn cost_of(hash: &str) -> Option<String> {
    params_of(hash).map(|p| cost_label(&p))
}

fn params_of(hash: &str) -> Option<Params> {
    PasswordHash::new(hash)
        .ok()
        .and_then(|parsed| Params::try_from(&parsed).ok())
        .filter(|p| p.m_cost() <= MAX_MEMORY_KIB)
}

fn cost_label(p: &Params) -> String {
    format!("m={},t={},p={}", p.m_cost(), p.t_cost(), p.p_cost())
}

/// The largest argon2 memory cost a stored hash may ask for: the config's own bound, so a corrupt
/// or hostile record cannot make a login allocate without bound.
const MAX_MEMORY_KIB: u32 = crate::config::MAX_ARGON2_MEMORY_KIB;

/// A hashing thread idle this long gives its working memory back.
const IDLE_RELEASE: Duration = Duration::from_secs(30);

/// Working memory is reserved at least this large (in 1 KiB argon2 blocks: 33 MiB), of which
/// only the blocks a hash uses are touched (resident). glibc always maps allocations over
/// 32 MiB with `mmap`, and unmaps them when freed, so a released buffer really returns to the
/// OS instead of staying in the thread's arena.
const MMAP_BLOCKS: usize = 33 * 1024;

/// Runs `hash` on `blocks` of this thread's working memory, grown (reserved past glibc's mmap
/// threshold) when too small.
fn with_working_memory<T>(blocks: usize, hash: impl FnOnce(&mut [Block]) -> T) -> T {
    WORKING_MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            let mut fresh = Vec::with_capacity(blocks.max(MMAP_BLOCKS));
            fresh.resize(blocks, Block::default());
            *memory = fresh;
        }
        hash(&mut memory[..blocks])
    })
}

fn release_working_memory() {
    WORKING_MEMORY.with_borrow_mut(|memory| *memory = Vec::new());
}

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
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    with_working_memory(blocks, |memory| {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory)
    })
    .map_err(|e| CredentialError::Hash(e.to_string()))?;
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
        // A standard PHC string: the argon2 crate's own verifier agrees.
        use argon2::password_hash::PasswordVerifier as _;
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            hasher
                .verify(Some(&hash), "u", &Password::new("correct horse".into()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(Some(&hash), "u", &Password::new("wrong".into()))
                .await
                .unwrap()
        );
        assert!(
            hasher
                .verify(Some("not a hash"), "u", &Password::new("x".into()))
                .await
                .is_err(),
            "an unusable stored hash is an error, not a wrong password"
        );
        let huge = "$argon2id$v=19$m=2000000,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
        assert!(
            hasher
                .verify(Some(huge), "u", &Password::new("x".into()))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn unknown_user_is_checked_against_the_dummy_and_fails() {
        let hasher = PasswordHasher::new(&cheap()).unwrap();
        assert!(
            !hasher
                .verify(None, "nobody", &Password::new(String::new()))
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
                        .verify(Some(&hash), "u", &Password::new(password.into()))
                        .await
                        .unwrap(),
                )
            });
        }
        for (i, matched) in burst.join_all().await {
            assert_eq!(matched, i % 2 == 0);
        }
    }

    #[tokio::test]
    async fn dummies_follow_the_costs_of_the_stored_hashes() {
        let old = PasswordHasher::new(&cheap()).unwrap();
        let stored = old.hash(&Password::new("pw".into())).await.unwrap();
        // The cost is raised: every stored hash still has the old one.
        let raised = PasswordSettings {
            memory_kib: 128,
            ..cheap()
        };
        let hasher = PasswordHasher::new(&raised).unwrap();
        assert!(hasher.needs_rehash(&stored));
        assert!(!hasher.needs_rehash(&hasher.hash(&Password::new("x".into())).await.unwrap()));
        assert_eq!(
            cost_of(&hasher.dummy_for("ghost")).unwrap(),
            "m=128,t=1,p=1"
        );

        hasher
            .follow_population([stored.as_str(), stored.as_str()].into_iter())
            .await
            .unwrap();

        // An unknown name is now checked at the cost real accounts have.
        for name in ["ghost", "nobody", "x"] {
            assert_eq!(cost_of(&hasher.dummy_for(name)).unwrap(), "m=64,t=1,p=1");
        }
        // Stable per name, spread by weight when costs are mixed.
        let fresh = hasher.hash(&Password::new("y".into())).await.unwrap();
        let mixed: Vec<&str> = vec![&stored, &fresh, &fresh, &fresh];
        hasher.follow_population(mixed.into_iter()).await.unwrap();
        let costs: Vec<String> = (0..200)
            .map(|i| cost_of(&hasher.dummy_for(&format!("probe{i}"))).unwrap())
            .collect();
        let old_cost = costs
            .iter()
            .filter(|c| c.as_str() == "m=64,t=1,p=1")
            .count();
        assert!(
            (20..=80).contains(&old_cost),
            "{old_cost} of 200 at the old cost"
        );
        assert_eq!(hasher.dummy_for("probe7"), hasher.dummy_for("probe7"));
    }

    #[test]
    fn passwords_stay_out_of_debug() {
        assert!(!format!("{:?}", Password::new("hunter2".into())).contains("hunter2"));
    }
}
