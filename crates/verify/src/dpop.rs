//! DPoP proofs (RFC 9449): the checks both an issuer's token endpoint and a resource server make
//! on a `DPoP` header, the key thumbprint a bound token carries (RFC 7638), and a bounded replay
//! memory for proof `jti`s.
//!
//! A proof is a JWS whose header carries the public key that signs it. It is accepted when its
//! `typ` is `dpop+jwt`, its `alg` an asymmetric one this module verifies (ES256, RS256, PS256,
//! EdDSA; never `none` or HMAC), its `jwk` public (no private members) and matching the `alg`,
//! its signature verifies with that key, its `htm` and `htu` name this request (`htu` without
//! query and fragment, §4.3), its `iat` is fresh, and it has a `jti`; for a resource server also
//! `ath`, the hash of the access token it accompanies.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{self as sig, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{ErrorKind, VerifyError};

/// The `alg` values a proof may use, as discovery and `WWW-Authenticate` list them.
pub const SIGNING_ALGS: &[&str] = &["ES256", "RS256", "PS256", "EdDSA"];

/// The same, space-separated, as `WWW-Authenticate: DPoP algs="…"` wants it.
pub const SIGNING_ALGS_SPACED: &str = "ES256 RS256 PS256 EdDSA";

/// Proofs longer than this are refused before any parsing: an RSA-4096 proof is under 2 KiB.
const MAX_PROOF_BYTES: usize = 8 * 1024;

/// Longest `jti` and `nonce` accepted (RFC 9449 asks for at least 96 bits of randomness).
const MAX_ID_CHARS: usize = 256;

/// Why a proof was refused, for matching; [`VerifyError::dpop_fault`] says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProofFault {
    /// Not a compact JWS, or its header or claims do not parse, or a claim is missing.
    Malformed,
    /// `typ` is not `dpop+jwt`.
    WrongType,
    /// `alg` is `none`, HMAC, unknown, or does not fit the `jwk`.
    UnsupportedAlgorithm,
    /// The `jwk` holds private key material, or is not a key this module reads.
    BadKey,
    /// The signature does not verify with the header's key.
    InvalidSignature,
    /// `htm` is not the request's method.
    WrongMethod,
    /// `htu` is not the request's URL.
    WrongUrl,
    /// `iat` is older than the freshness window.
    Stale,
    /// `iat` is in the future (beyond the leeway).
    FromTheFuture,
    /// `ath` is missing, or is not the hash of the access token.
    WrongAccessTokenHash,
    /// This proof's `jti` was seen already.
    Replayed,
    /// The proof's key is not the key the token is bound to.
    WrongKey,
    /// The server wants a fresh nonce in the proof (`use_dpop_nonce`).
    NonceRequired,
    /// More than one `DPoP` header, or a proof where none can be checked.
    MultipleProofs,
}

/// What the request a proof accompanies looks like.
#[derive(Clone, Copy, Debug)]
pub struct ProofContext<'a> {
    /// The HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The URL the request was sent to, as the client saw it (scheme, host, path; query and
    /// fragment are ignored).
    pub url: &'a str,
    /// The access token the proof accompanies: its hash must be the proof's `ath`. `None` at a
    /// token endpoint, where no access token is presented.
    pub access_token: Option<&'a str>,
}

/// How fresh a proof must be.
#[derive(Clone, Copy, Debug)]
pub struct Freshness {
    /// Oldest accepted `iat`, before `now` (default 60 s).
    pub max_age: Duration,
    /// Clock skew tolerated on either side (default 5 s).
    pub leeway: Duration,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            max_age: Duration::from_secs(60),
            leeway: Duration::from_secs(5),
        }
    }
}

impl Freshness {
    /// How long a proof's `jti` must be remembered: as long as the proof could pass as fresh.
    pub fn replay_window(&self) -> Duration {
        self.max_age
            .saturating_add(self.leeway)
            .saturating_add(self.leeway)
    }
}

/// A proof that passed every check but the replay one, which needs memory: see
/// [`ReplayCache`] or the issuer's store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The RFC 7638 SHA-256 thumbprint of the proof's key, base64url: a bound token's
    /// `cnf.jkt`.
    pub jkt: String,
    /// The proof's unique id.
    pub jti: String,
    /// The proof's `iat`, seconds since the epoch.
    pub iat: i64,
    /// The server nonce the proof carries, if any.
    pub nonce: Option<String>,
}

impl VerifiedProof {
    /// A short fixed-size key for remembering this proof: the `jti` within its key, so two
    /// clients cannot collide on each other's ids.
    pub fn replay_key(&self) -> [u8; 16] {
        let d = digest(&SHA256, format!("{}\n{}", self.jkt, self.jti).as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&d.as_ref()[..16]);
        key
    }
}

#[derive(Deserialize)]
struct ProofHeader {
    typ: Option<String>,
    alg: String,
    jwk: Option<Map<String, Value>>,
    #[serde(default)]
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<Value>,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

fn fault(fault: ProofFault, detail: &'static str) -> VerifyError {
    VerifyError::dpop(fault, detail)
}

/// Checks `proof` for the request `context` at `now`: everything but replay (see
/// [`VerifiedProof`]).
pub fn verify_proof(
    proof: &str,
    context: &ProofContext<'_>,
    freshness: &Freshness,
    now: SystemTime,
) -> Result<VerifiedProof, VerifyError> {
    use ProofFault::*;
    if proof.len() > MAX_PROOF_BYTES {
        return Err(fault(Malformed, "the DPoP proof is too long"));
    }
    let mut parts = proof.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(fault(Malformed, "the DPoP proof is not a compact JWS"));
    };
    let header: ProofHeader = decode_json(header)
        .ok_or_else(|| fault(Malformed, "the DPoP proof's header is malformed"))?;
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
    {
        return Err(fault(WrongType, "the DPoP proof's typ is not dpop+jwt"));
    }
    if header.crit.is_some() {
        return Err(fault(Malformed, "the DPoP proof lists critical extensions"));
    }
    let jwk = header
        .jwk
        .ok_or_else(|| fault(BadKey, "the DPoP proof has no jwk"))?;
    let key = ProofKey::from_jwk(&jwk, &header.alg)?;
    let signature = B64
        .decode(signature)
        .map_err(|_| fault(Malformed, "the DPoP proof's signature is not base64url"))?;
    let signed = &proof[..header_and_payload_len(proof)];
    key.verify(signed.as_bytes(), &signature)?;

    let claims: ProofClaims = decode_json(payload)
        .ok_or_else(|| fault(Malformed, "the DPoP proof's claims are malformed"))?;
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= MAX_ID_CHARS)
        .ok_or_else(|| fault(Malformed, "the DPoP proof has no usable jti"))?;
    let htm = claims
        .htm
        .ok_or_else(|| fault(Malformed, "the DPoP proof has no htm"))?;
    if htm != context.method {
        return Err(fault(
            WrongMethod,
            "the DPoP proof's htm is not this request's method",
        ));
    }
    let htu = claims
        .htu
        .ok_or_else(|| fault(Malformed, "the DPoP proof has no htu"))?;
    match (normalize_htu(&htu), normalize_htu(context.url)) {
        (Some(a), Some(b)) if a == b => {}
        _ => {
            return Err(fault(
                WrongUrl,
                "the DPoP proof's htu is not this request's URL",
            ));
        }
    }
    // `iat` is a NumericDate: an integer, or a number with a fraction.
    let iat = match claims.iat {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        _ => None,
    }
    .ok_or_else(|| fault(Malformed, "the DPoP proof has no numeric iat"))?;
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4);
    if iat > now_secs.saturating_add(secs(freshness.leeway)) {
        return Err(fault(
            FromTheFuture,
            "the DPoP proof's iat is in the future",
        ));
    }
    if iat
        < now_secs
            .saturating_sub(secs(freshness.max_age))
            .saturating_sub(secs(freshness.leeway))
    {
        return Err(fault(Stale, "the DPoP proof is too old"));
    }
    if let Some(token) = context.access_token {
        let expected = access_token_hash(token);
        let matches = claims.ath.as_deref().is_some_and(|ath| {
            // Not secret, but compared in constant time anyway: it costs nothing.
            aws_lc_rs::constant_time::verify_slices_are_equal(ath.as_bytes(), expected.as_bytes())
                .is_ok()
        });
        if !matches {
            return Err(fault(
                WrongAccessTokenHash,
                "the DPoP proof's ath is missing or is not the access token's hash",
            ));
        }
    }
    let nonce = match claims.nonce {
        Some(n) if n.len() > MAX_ID_CHARS => {
            return Err(fault(Malformed, "the DPoP proof's nonce is too long"));
        }
        other => other,
    };
    Ok(VerifiedProof {
        jkt: key.thumbprint,
        jti,
        iat,
        nonce,
    })
}

fn header_and_payload_len(proof: &str) -> usize {
    proof.rfind('.').unwrap_or(0)
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Option<T> {
    let bytes = B64.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `ath`: the base64url SHA-256 of the access token's ASCII (RFC 9449 §4.2).
pub fn access_token_hash(token: &str) -> String {
    B64.encode(digest(&SHA256, token.as_bytes()))
}

/// `htu` and the request URL as RFC 9449 §4.3 compares them: without query and fragment, with
/// scheme and host in lower case and the scheme's default port dropped (RFC 3986 §6.2.2–6.2.3).
pub fn normalize_htu(url: &str) -> Option<String> {
    let url = url.split(['?', '#']).next().unwrap_or("");
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some(format!("{scheme}://{authority}{path}"))
}

/// The public key of a proof, with the algorithm its header names.
struct ProofKey {
    verify: Verify,
    thumbprint: String,
}

enum Verify {
    Ec(Vec<u8>),
    Rsa { n: Vec<u8>, e: Vec<u8>, pss: bool },
    Ed(Vec<u8>),
}

impl ProofKey {
    fn from_jwk(jwk: &Map<String, Value>, alg: &str) -> Result<ProofKey, VerifyError> {
        use ProofFault::*;
        // RFC 9449 §4.3: the key must not carry private members (RFC 7518 §6.2.2, 6.3.2, 6.4.1;
        // RFC 8037 §2).
        const PRIVATE: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
        if PRIVATE.iter().any(|m| jwk.contains_key(*m)) {
            return Err(fault(
                BadKey,
                "the DPoP proof's jwk holds private key material",
            ));
        }
        let member = |name: &str| -> Result<&str, VerifyError> {
            jwk.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| fault(BadKey, "the DPoP proof's jwk lacks a member its kty needs"))
        };
        let bytes = |name: &str| -> Result<Vec<u8>, VerifyError> {
            B64.decode(member(name)?)
                .map_err(|_| fault(BadKey, "the DPoP proof's jwk is not base64url"))
        };
        let kty = member("kty")?;
        let (verify, canonical) = match (alg, kty) {
            ("ES256", "EC") => {
                if member("crv")? != "P-256" {
                    return Err(fault(UnsupportedAlgorithm, "ES256 needs a P-256 key"));
                }
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(fault(BadKey, "a P-256 coordinate is not 32 bytes"));
                }
                let point = [&[4u8][..], &x, &y].concat();
                let canonical = format!(
                    r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                    member("x")?,
                    member("y")?
                );
                (Verify::Ec(point), canonical)
            }
            ("RS256" | "PS256", "RSA") => {
                let (n, e) = (bytes("n")?, bytes("e")?);
                let canonical = format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    member("e")?,
                    member("n")?
                );
                let pss = alg == "PS256";
                (Verify::Rsa { n, e, pss }, canonical)
            }
            ("EdDSA", "OKP") => {
                if member("crv")? != "Ed25519" {
                    return Err(fault(
                        UnsupportedAlgorithm,
                        "EdDSA proofs need an Ed25519 key",
                    ));
                }
                let x = bytes("x")?;
                if x.len() != 32 {
                    return Err(fault(BadKey, "an Ed25519 key is not 32 bytes"));
                }
                let canonical =
                    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, member("x")?);
                (Verify::Ed(x), canonical)
            }
            ("ES256" | "RS256" | "PS256" | "EdDSA", _) => {
                return Err(fault(
                    UnsupportedAlgorithm,
                    "the DPoP proof's alg does not fit its jwk",
                ));
            }
            _ => {
                return Err(fault(
                    UnsupportedAlgorithm,
                    "the DPoP proof's alg is not ES256, RS256, PS256 or EdDSA",
                ));
            }
        };
        // Members are checked to be plain base64url above, so `canonical` needs no escaping.
        let thumbprint = B64.encode(digest(&SHA256, canonical.as_bytes()));
        Ok(ProofKey { verify, thumbprint })
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        let result = match &self.verify {
            Verify::Ec(point) => UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature),
            Verify::Rsa { n, e, pss } => {
                let params = if *pss {
                    &sig::RSA_PSS_2048_8192_SHA256
                } else {
                    &sig::RSA_PKCS1_2048_8192_SHA256
                };
                RsaPublicKeyComponents { n, e }.verify(params, message, signature)
            }
            Verify::Ed(x) => UnparsedPublicKey::new(&sig::ED25519, x).verify(message, signature),
        };
        result.map_err(|_| {
            fault(
                ProofFault::InvalidSignature,
                "the DPoP proof's signature does not verify",
            )
        })
    }
}

/// A bounded memory of recently seen proofs, for one process: a resource server's replay check,
/// or an issuer on a store that serves one process. Entries live for the freshness window (a
/// proof older than that is refused as stale anyway); when the memory is full of live entries,
/// new proofs are refused rather than old ones forgotten.
///
/// Proofs may be counted by the source they came from ([`ReplayCache::check_from`]), so that one
/// source flooding the memory is refused before everyone is: a source may hold at most a
/// quarter of the memory, and once it is nine-tenths full a source holding more than a
/// hundredth of it is refused ([`Seen::SourceFull`]) while the others still get the rest.
pub struct ReplayCache {
    capacity: usize,
    inner: Mutex<ReplayInner>,
}

#[derive(Default)]
struct ReplayInner {
    seen: HashSet<[u8; 16]>,
    /// In insertion order, which is expiry order: every entry lives the same window.
    expiries: VecDeque<(SystemTime, [u8; 16], Option<u64>)>,
    /// Live entries per counted source.
    per_source: HashMap<u64, usize>,
}

/// What [`ReplayCache::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Never seen: now remembered.
    First,
    /// Seen before within the window.
    Again,
    /// The memory is full of live proofs: this one cannot be checked now.
    Full,
    /// This proof's source holds more than its share of the memory: refused until some of its
    /// proofs age out. Others are still served.
    SourceFull,
}

impl ReplayCache {
    /// A memory of at most `capacity` proofs.
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            capacity: capacity.max(1),
            inner: Mutex::new(ReplayInner::default()),
        }
    }

    /// Remembers `key` until `now + window`, or says it was already there.
    pub fn check(&self, key: [u8; 16], now: SystemTime, window: Duration) -> Seen {
        self.remember(None, key, now, window)
    }

    /// As [`ReplayCache::check`], counting the proof against `source` (a digest of the client's
    /// address, say): a source past its share is refused with [`Seen::SourceFull`].
    pub fn check_from(
        &self,
        source: u64,
        key: [u8; 16],
        now: SystemTime,
        window: Duration,
    ) -> Seen {
        self.remember(Some(source), key, now, window)
    }

    fn remember(
        &self,
        source: Option<u64>,
        key: [u8; 16],
        now: SystemTime,
        window: Duration,
    ) -> Seen {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((expires, old, owner)) = inner.expiries.front().copied() {
            if expires > now {
                break;
            }
            inner.expiries.pop_front();
            inner.seen.remove(&old);
            if let Some(owner) = owner
                && let Some(count) = inner.per_source.get_mut(&owner)
            {
                *count -= 1;
                if *count == 0 {
                    inner.per_source.remove(&owner);
                }
            }
        }
        if inner.seen.contains(&key) {
            return Seen::Again;
        }
        if let Some(source) = source {
            let held = inner.per_source.get(&source).copied().unwrap_or(0);
            let share = (self.capacity / 4).max(1);
            let heavy = (self.capacity / 100).max(1);
            let crowded = inner.seen.len() >= self.capacity - self.capacity / 10;
            if held >= share || (crowded && held >= heavy) {
                return Seen::SourceFull;
            }
        }
        if inner.seen.len() >= self.capacity {
            return Seen::Full;
        }
        inner.seen.insert(key);
        inner.expiries.push_back((now + window, key, source));
        if let Some(source) = source {
            *inner.per_source.entry(source).or_default() += 1;
        }
        Seen::First
    }

    /// How many proofs are remembered now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seen
            .len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Refuses a proof seen before; the issuer and the verifier both use it.
pub fn refuse_replay(seen: Seen) -> Result<(), VerifyError> {
    match seen {
        Seen::First => Ok(()),
        Seen::Again => Err(fault(
            ProofFault::Replayed,
            "the DPoP proof was used before",
        )),
        Seen::Full | Seen::SourceFull => Err(VerifyError::new(
            ErrorKind::ReplayMemoryFull,
            "too many recent DPoP proofs to check this one now",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_ignores_query_fragment_case_and_default_ports() {
        let n = |u| normalize_htu(u).unwrap();
        assert_eq!(
            n("HTTPS://Api.Example.com:443/token?x=1#f"),
            "https://api.example.com/token"
        );
        assert_eq!(n("http://h:80"), "http://h/");
        assert_eq!(n("http://h:8080/a"), "http://h:8080/a");
        assert_ne!(n("http://h/a"), n("http://h/A"));
        assert!(normalize_htu("ftp://h/").is_none());
        assert!(normalize_htu("https://user@h/").is_none());
        assert!(normalize_htu("/relative").is_none());
    }

    #[test]
    fn the_replay_memory_forgets_after_the_window_and_never_exceeds_its_capacity() {
        let cache = ReplayCache::new(2);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let w = Duration::from_secs(60);
        assert_eq!(cache.check([1; 16], t0, w), Seen::First);
        assert_eq!(cache.check([1; 16], t0, w), Seen::Again);
        assert_eq!(cache.check([2; 16], t0, w), Seen::First);
        assert_eq!(cache.check([3; 16], t0, w), Seen::Full);
        let later = t0 + Duration::from_secs(61);
        assert_eq!(cache.check([3; 16], later, w), Seen::First);
        assert_eq!(cache.check([1; 16], later, w), Seen::First);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn one_source_cannot_fill_the_memory_for_everyone() {
        let cache = ReplayCache::new(400);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let w = Duration::from_secs(60);
        let key = |source: u64, i: usize| {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&source.to_be_bytes());
            k[8..].copy_from_slice(&(i as u64).to_be_bytes());
            k
        };
        // A source may hold a quarter of the memory.
        for i in 0..100 {
            assert_eq!(cache.check_from(1, key(1, i), t0, w), Seen::First);
        }
        assert_eq!(cache.check_from(1, key(1, 100), t0, w), Seen::SourceFull);
        // Three more heavy sources bring it to nine-tenths full (360 of 400).
        for source in 2..=4 {
            let limit = if source == 4 { 60 } else { 100 };
            for i in 0..limit {
                assert_eq!(cache.check_from(source, key(source, i), t0, w), Seen::First);
            }
        }
        // Crowded: a heavy source is refused, a light one still gets in.
        assert_eq!(cache.check_from(4, key(4, 60), t0, w), Seen::SourceFull);
        assert_eq!(cache.check_from(9, key(9, 0), t0, w), Seen::First);
        assert_eq!(cache.check_from(9, key(9, 0), t0, w), Seen::Again);
        // Every count is released as its proofs age out.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(cache.check_from(1, key(1, 500), later, w), Seen::First);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn rfc_7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk: Map<String, Value> = serde_json::from_str(
            r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#,
        )
        .unwrap();
        let key = ProofKey::from_jwk(&jwk, "RS256").unwrap();
        assert_eq!(
            key.thumbprint,
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
