//! The JWKS cache: fetched as `Cache-Control` allows, refetched once per cooldown for an unknown
//! `kid` (single-flight: concurrent callers share one fetch), refreshed in the background when
//! stale, and served from cache within `stale-if-error` while the issuer is unreachable.
//!
//! Every decision takes the caller's `now`, so freshness is judged on the caller's clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use serde::Deserialize;

use crate::error::{ErrorKind, VerifyError};

/// A JWKS larger than this is refused: no issuer needs it, and it bounds what we read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One verification key, parsed once, with the algorithm its JWK names.
pub(crate) struct VerifyKey {
    pub alg: Algorithm,
    pub key: ParsedPublicKey,
}

pub(crate) struct KeySet {
    keys: HashMap<String, Arc<VerifyKey>>,
    fetched_at: SystemTime,
    max_age: Duration,
    stale_if_error: Duration,
}

/// Time from `then` to `now`; zero when the clock went backwards.
fn since(then: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

impl KeySet {
    fn is_stale(&self, now: SystemTime) -> bool {
        since(self.fetched_at, now) >= self.max_age
    }

    /// Too old to serve even while the issuer is down.
    fn is_expired(&self, now: SystemTime) -> bool {
        since(self.fetched_at, now) >= self.max_age.saturating_add(self.stale_if_error)
    }
}

pub(crate) enum Source {
    /// RFC 8414 discovery from the issuer URL.
    Issuer(String),
    Jwks(String),
    /// A fixed key set, never fetched (tests, benchmarks, air-gapped services).
    Static,
}

pub(crate) struct CacheSettings {
    pub unknown_kid_cooldown: Duration,
    /// Used when the JWKS response has no `max-age`.
    pub default_max_age: Duration,
    /// Upper bound on any `max-age`, so a key pulled by the issuer is dropped in time.
    pub max_max_age: Duration,
    /// Used when the JWKS response has no `stale-if-error`.
    pub default_stale_if_error: Duration,
}

pub(crate) struct JwksCache {
    source: Source,
    expected_issuer: String,
    /// Absent for a fixed key set, which never fetches.
    client: Option<reqwest::Client>,
    settings: CacheSettings,
    /// Never held across an `.await`.
    set: RwLock<Option<Arc<KeySet>>>,
    /// Held for the duration of one fetch: whoever waits on it shares that fetch's result.
    fetch_lock: tokio::sync::Mutex<()>,
    jwks_url: Mutex<Option<String>>,
    last_unknown_kid_fetch: Mutex<Option<SystemTime>>,
    background_refresh: AtomicBool,
    fetches: AtomicU64,
}

impl JwksCache {
    pub fn new(
        source: Source,
        expected_issuer: String,
        client: reqwest::Client,
        settings: CacheSettings,
    ) -> Self {
        JwksCache {
            source,
            expected_issuer,
            client: Some(client),
            settings,
            set: RwLock::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
            jwks_url: Mutex::new(None),
            last_unknown_kid_fetch: Mutex::new(None),
            background_refresh: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
        }
    }

    /// A cache that holds `jwks` forever and never fetches.
    pub fn fixed(jwks: &[u8]) -> Result<Self, VerifyError> {
        let keys = parse_jwks(jwks)?;
        Ok(JwksCache {
            source: Source::Static,
            expected_issuer: String::new(),
            client: None,
            settings: CacheSettings {
                unknown_kid_cooldown: Duration::MAX,
                default_max_age: Duration::MAX,
                max_max_age: Duration::MAX,
                default_stale_if_error: Duration::ZERO,
            },
            set: RwLock::new(Some(Arc::new(KeySet {
                keys,
                fetched_at: SystemTime::UNIX_EPOCH,
                max_age: Duration::MAX,
                stale_if_error: Duration::ZERO,
            }))),
            fetch_lock: tokio::sync::Mutex::new(()),
            jwks_url: Mutex::new(None),
            last_unknown_kid_fetch: Mutex::new(None),
            background_refresh: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
        })
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key for `kid` at `now`, fetching only when the cache cannot answer.
    pub async fn key(
        self: &Arc<Self>,
        kid: &str,
        now: SystemTime,
    ) -> Result<Arc<VerifyKey>, VerifyError> {
        let current = self.current();
        if let Some(set) = current.as_ref().filter(|s| !s.is_expired(now))
            && let Some(key) = set.keys.get(kid)
        {
            if set.is_stale(now) {
                self.refresh_in_background(set.fetched_at, now);
            }
            return Ok(Arc::clone(key));
        }
        let observed = current.as_ref().map(|s| s.fetched_at);
        let refetch_allowed = match current.as_ref() {
            // Nothing usable cached: fetching is the only way to answer.
            None => true,
            Some(set) if set.is_expired(now) || set.is_stale(now) => true,
            Some(_) => {
                let mut last = self
                    .last_unknown_kid_fetch
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let allowed =
                    last.is_none_or(|t| since(t, now) >= self.settings.unknown_kid_cooldown);
                if allowed {
                    *last = Some(now);
                }
                allowed
            }
        };
        if refetch_allowed {
            match self.refetch(observed, now).await {
                Ok(_) => {}
                // The issuer is down: a cached set still within stale-if-error keeps answering.
                Err(e) if current.as_ref().is_none_or(|s| s.is_expired(now)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS refetch failed; serving the cached keys")
                }
            }
        } else if !matches!(self.source, Source::Static) {
            // A fetch for an unknown kid ran recently: wait for it if it is still running.
            drop(self.fetch_lock.lock().await);
        }
        self.current()
            .filter(|s| !s.is_expired(now))
            .and_then(|s| s.keys.get(kid).cloned())
            .ok_or_else(|| {
                VerifyError::new(
                    ErrorKind::UnknownKey,
                    "no key with this kid in the issuer's JWKS",
                )
            })
    }

    fn refresh_in_background(self: &Arc<Self>, observed: SystemTime, now: SystemTime) {
        if matches!(self.source, Source::Static)
            || self.background_refresh.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = cache.refetch(Some(observed), now).await {
                tracing::warn!(error = %e, "background JWKS refresh failed; serving the cached keys");
            }
            cache.background_refresh.store(false, Ordering::Release);
        });
    }

    /// Fetches once for everyone waiting: a caller that queued behind a fetch which already
    /// replaced the set it saw returns that result instead of fetching again.
    async fn refetch(
        &self,
        observed: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<Arc<KeySet>, VerifyError> {
        if matches!(self.source, Source::Static) {
            return self
                .current()
                .ok_or_else(|| VerifyError::new(ErrorKind::JwksUnavailable, "no keys"));
        }
        let _fetching = self.fetch_lock.lock().await;
        if let Some(set) = self.current()
            && Some(set.fetched_at) != observed
        {
            return Ok(set);
        }
        let set = Arc::new(self.fetch(now).await?);
        *self.set.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&set));
        Ok(set)
    }

    async fn fetch(&self, now: SystemTime) -> Result<KeySet, VerifyError> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| VerifyError::new(ErrorKind::Configuration, "static key set"))?;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let url = self.jwks_url(client).await?;
        let response = client.get(&url).send().await.map_err(unavailable)?;
        if !response.status().is_success() {
            return Err(VerifyError::new(
                ErrorKind::JwksUnavailable,
                format!("JWKS answered {}", response.status()),
            ));
        }
        let cache_control = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = read_bounded(response).await?;
        let keys = parse_jwks(&body)?;
        let directive = |name: &str| directive_secs(&cache_control, name).map(Duration::from_secs);
        Ok(KeySet {
            keys,
            fetched_at: now,
            max_age: directive("max-age")
                .unwrap_or(self.settings.default_max_age)
                .min(self.settings.max_max_age),
            stale_if_error: directive("stale-if-error")
                .unwrap_or(self.settings.default_stale_if_error),
        })
    }

    async fn jwks_url(&self, client: &reqwest::Client) -> Result<String, VerifyError> {
        let issuer = match &self.source {
            Source::Jwks(url) => return Ok(url.clone()),
            Source::Issuer(issuer) => issuer,
            Source::Static => {
                return Err(VerifyError::new(ErrorKind::Configuration, "static key set"));
            }
        };
        if let Some(url) = self
            .jwks_url
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(url);
        }
        #[derive(Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: String,
        }
        let discovery = format!("{issuer}/.well-known/oauth-authorization-server");
        let response = client.get(&discovery).send().await.map_err(unavailable)?;
        if !response.status().is_success() {
            return Err(VerifyError::new(
                ErrorKind::JwksUnavailable,
                format!("discovery answered {}", response.status()),
            ));
        }
        let metadata: Metadata =
            serde_json::from_slice(&read_bounded(response).await?).map_err(|_| {
                VerifyError::new(ErrorKind::JwksUnavailable, "malformed discovery document")
            })?;
        // RFC 8414 §3.3: the metadata must name the issuer it was fetched for.
        if metadata.issuer != self.expected_issuer {
            return Err(VerifyError::new(
                ErrorKind::Configuration,
                format!(
                    "discovery names issuer {:?}, expected {:?}",
                    metadata.issuer, self.expected_issuer
                ),
            ));
        }
        *self.jwks_url.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(metadata.jwks_uri.clone());
        Ok(metadata.jwks_uri)
    }
}

fn unavailable(e: reqwest::Error) -> VerifyError {
    VerifyError::new(
        ErrorKind::JwksUnavailable,
        format!("cannot reach the issuer: {e}"),
    )
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, VerifyError> {
    let too_large = || VerifyError::new(ErrorKind::JwksUnavailable, "issuer response too large");
    if response
        .content_length()
        .is_some_and(|l| l > MAX_JWKS_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The value of `name=N` in a Cache-Control header.
fn directive_secs(header: &str, name: &str) -> Option<u64> {
    header.split(',').find_map(|d| {
        let (key, value) = d.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"').parse().ok())?
    })
}

/// Keeps the asymmetric signing keys that have a kid; skips everything else (and a key this
/// crate cannot read) rather than failing the whole set.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<VerifyKey>>, VerifyError> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body)
        .map_err(|_| VerifyError::new(ErrorKind::JwksUnavailable, "malformed JWKS"))?;
    let mut keys = HashMap::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let Some(alg) = signing_algorithm(&jwk) else {
            continue;
        };
        let Some(key) = parsed_public_key(&jwk, alg) else {
            continue;
        };
        keys.insert(kid, Arc::new(VerifyKey { alg, key }));
    }
    Ok(keys)
}

/// The algorithm a JWK verifies: its `alg` if asymmetric, else inferred from its type. Symmetric
/// (`oct`) keys are never used: a public JWKS holding one is an attack or a mistake.
fn signing_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let inferred = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        // Symmetric keys, and key types added to jsonwebtoken later.
        _ => return None,
    };
    let named = match jwk.common.key_algorithm {
        None => return Some(inferred),
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::ES384) => Algorithm::ES384,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::RS384) => Algorithm::RS384,
        Some(KeyAlgorithm::RS512) => Algorithm::RS512,
        Some(KeyAlgorithm::PS256) => Algorithm::PS256,
        Some(KeyAlgorithm::PS384) => Algorithm::PS384,
        Some(KeyAlgorithm::PS512) => Algorithm::PS512,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(_) => return None,
    };
    // The named alg must fit the key's type (an RSA key named ES256 is refused).
    let same_family = matches!(
        (inferred, named),
        (Algorithm::ES256, Algorithm::ES256)
            | (Algorithm::ES384, Algorithm::ES384)
            | (Algorithm::EdDSA, Algorithm::EdDSA)
            | (
                Algorithm::RS256,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            )
    );
    same_family.then_some(named)
}

/// The JWK's public key, parsed for `alg`: an uncompressed point for EC, `n` and `e` for RSA,
/// the raw key for Ed25519.
fn parsed_public_key(jwk: &Jwk, alg: Algorithm) -> Option<ParsedPublicKey> {
    let decode = |s: &str| B64.decode(s.trim_end_matches('=')).ok();
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => {
            let verification = match alg {
                Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
                Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
                _ => return None,
            };
            let mut point = vec![0x04];
            point.extend(decode(&p.x)?);
            point.extend(decode(&p.y)?);
            ParsedPublicKey::new(verification, point).ok()
        }
        AlgorithmParameters::RSA(p) => {
            let parameters = match alg {
                Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
                _ => return None,
            };
            RsaPublicKeyComponents {
                n: decode(&p.n)?,
                e: decode(&p.e)?,
            }
            .to_parsed_public_key(parameters)
            .ok()
        }
        AlgorithmParameters::OctetKeyPair(p) if alg == Algorithm::EdDSA => {
            ParsedPublicKey::new(&sig::ED25519, decode(&p.x)?).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_directives() {
        let h = "public, max-age=300, stale-if-error=86400";
        assert_eq!(directive_secs(h, "max-age"), Some(300));
        assert_eq!(directive_secs(h, "stale-if-error"), Some(86400));
        assert_eq!(directive_secs("no-cache", "max-age"), None);
        assert_eq!(directive_secs("max-age=\"60\"", "max-age"), Some(60));
        assert_eq!(directive_secs("max-age=oops", "max-age"), None);
    }

    #[test]
    fn only_asymmetric_signing_keys_with_a_kid_are_kept() {
        let jwks = br#"{"keys":[
            {"kty":"EC","crv":"P-256","kid":"ec","alg":"ES256","use":"sig",
             "x":"rZpztsMroZsN3rdl5dt1CIYBRVubGHY5l20wmW3YbI8","y":"6yWu59JjJHg1N4TKZayqjwWCF9Nzog2G2sIczca-v4Q"},
            {"kty":"EC","crv":"P-256","kid":"enc","use":"enc",
             "x":"rZpztsMroZsN3rdl5dt1CIYBRVubGHY5l20wmW3YbI8","y":"6yWu59JjJHg1N4TKZayqjwWCF9Nzog2G2sIczca-v4Q"},
            {"kty":"EC","crv":"P-256","kid":"lying","alg":"RS256",
             "x":"rZpztsMroZsN3rdl5dt1CIYBRVubGHY5l20wmW3YbI8","y":"6yWu59JjJHg1N4TKZayqjwWCF9Nzog2G2sIczca-v4Q"},
            {"kty":"EC","crv":"P-256",
             "x":"rZpztsMroZsN3rdl5dt1CIYBRVubGHY5l20wmW3YbI8","y":"6yWu59JjJHg1N4TKZayqjwWCF9Nzog2G2sIczca-v4Q"},
            {"kty":"oct","kid":"hmac","k":"c2VjcmV0","alg":"HS256"},
            {"kty":"XYZ","kid":"future"}
        ]}"#;
        let keys = parse_jwks(jwks).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["ec"]);
        assert_eq!(keys["ec"].alg, Algorithm::ES256);
        assert!(parse_jwks(b"not json").is_err());
    }
}
