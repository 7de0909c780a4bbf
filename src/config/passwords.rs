//! `[passwords]`: the argon2id cost of password and client-secret hashes, and how many are
//! computed at once.

use serde::{Deserialize, Serialize};

/// The largest argon2 memory cost accepted (1 GiB), in the config and in stored hashes.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawPasswords {
    pub(super) memory_kib: u32,
    pub(super) iterations: u32,
    pub(super) parallelism: u32,
    /// Absent: one less than the cores available, at least one.
    pub(super) max_concurrent: Option<usize>,
}

impl Default for RawPasswords {
    fn default() -> Self {
        RawPasswords {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            max_concurrent: None,
        }
    }
}

/// argon2id cost. The defaults are OWASP's (19 MiB, 2 passes, 1 lane); tests lower them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; the rest queue, so a login flood cannot exhaust memory.
    pub max_concurrent: usize,
}

impl Default for PasswordSettings {
    fn default() -> Self {
        let raw = RawPasswords::default();
        PasswordSettings {
            memory_kib: raw.memory_kib,
            iterations: raw.iterations,
            parallelism: raw.parallelism,
            max_concurrent: default_hashing_threads(),
        }
    }
}

/// One hashing thread per core but one: a login storm keeps a core free for refreshes and the
/// rest of the API, and resident memory stays at `memory_kib` per thread.
pub fn default_hashing_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

pub(super) fn validate(raw: RawPasswords, problems: &mut Vec<String>) -> PasswordSettings {
    let p = raw;
    let before = problems.len();
    // Bounded so a typo cannot abort the server or make every login allocate gigabytes.
    let mut bounded = |field: &str, value: u64, min: u64, max: u64| {
        if !(min..=max).contains(&value) {
            problems.push(format!(
                "passwords.{field}: {value} is outside {min}..={max}"
            ));
        }
    };
    bounded(
        "memory_kib",
        u64::from(p.memory_kib),
        8 * u64::from(p.parallelism.max(1)),
        u64::from(MAX_ARGON2_MEMORY_KIB),
    );
    bounded("iterations", u64::from(p.iterations), 1, 64);
    bounded("parallelism", u64::from(p.parallelism), 1, 16);
    let max_concurrent = p.max_concurrent.unwrap_or_else(default_hashing_threads);
    bounded("max_concurrent", max_concurrent as u64, 1, 256);
    // Within the bounds, argon2 itself has the last word on the combination.
    if problems.len() == before
        && let Err(e) = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None)
    {
        problems.push(format!("passwords: invalid argon2 parameters: {e}"));
    }
    PasswordSettings {
        memory_kib: p.memory_kib,
        iterations: p.iterations,
        parallelism: p.parallelism,
        max_concurrent,
    }
}
