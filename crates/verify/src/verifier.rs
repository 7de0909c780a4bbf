//! The verifier: header checks, the key from the JWKS, then the signature and the claims.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::claims::Claims;
use crate::error::{ErrorKind, VerifyError};
use crate::jwks::{CacheSettings, JwksCache, Source};

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verifies access tokens of one issuer for one or more audiences. Cheap to clone; clones share
/// the JWKS cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    audiences: Vec<String>,
    leeway: Duration,
    cache: Arc<JwksCache>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.issuer)
            .field("audiences", &self.inner.audiences)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`Verifier`]; every one has a sensible default.
pub struct VerifierBuilder {
    issuer: String,
    audiences: Vec<String>,
    source: BuilderSource,
    leeway: Duration,
    unknown_kid_cooldown: Duration,
    default_max_age: Duration,
    max_max_age: Duration,
    default_stale_if_error: Duration,
    http_timeout: Duration,
    client: Option<reqwest::Client>,
}

enum BuilderSource {
    Discovery,
    JwksUrl(String),
    Fixed(Vec<u8>),
}

/// The JOSE header fields this crate reads (RFC 7515 §4.1). Anything else is ignored, and in
/// particular `jku`, `x5u` and an embedded `jwk` are never used to find a key.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

impl Verifier {
    /// A verifier for the issuer at `issuer` (its `iss`), finding the JWKS through the
    /// issuer's RFC 8414 metadata, accepting tokens whose `aud` holds `audience`.
    pub fn from_issuer(issuer: &str, audience: &str) -> VerifierBuilder {
        VerifierBuilder::new(issuer, audience, BuilderSource::Discovery)
    }

    /// A verifier that fetches the JWKS from `jwks_url` directly.
    pub fn from_jwks_url(jwks_url: &str, issuer: &str, audience: &str) -> VerifierBuilder {
        VerifierBuilder::new(
            issuer,
            audience,
            BuilderSource::JwksUrl(jwks_url.to_owned()),
        )
    }

    /// A verifier with a fixed JWKS document that is never refetched (the issuer's own view of
    /// its keys, tests, air-gapped services).
    pub fn from_jwks(jwks: &[u8], issuer: &str, audience: &str) -> VerifierBuilder {
        VerifierBuilder::new(issuer, audience, BuilderSource::Fixed(jwks.to_vec()))
    }

    /// Shorthand for `from_jwks(jwks, issuer, audience).build()`.
    pub fn from_static_jwks(
        jwks: &[u8],
        issuer: &str,
        audience: &str,
    ) -> Result<Verifier, VerifyError> {
        Verifier::from_jwks(jwks, issuer, audience).build()
    }

    /// How many times the JWKS (or discovery) has been fetched: for metrics and tests.
    pub fn jwks_fetches(&self) -> u64 {
        self.inner.cache.fetches()
    }

    /// Verifies `token` at the current system time and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        self.verify_at(token, SystemTime::now()).await
    }

    /// Verifies `token` as of `now`: expiry, not-before and the JWKS cache's freshness are all
    /// judged against it, so callers with their own clock (and tests) never depend on the wall
    /// clock.
    pub async fn verify_at(&self, token: &str, now: SystemTime) -> Result<Claims, VerifyError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::new(
                ErrorKind::Malformed,
                "the token is too long",
            ));
        }
        let (signed, signature) = token
            .rsplit_once('.')
            .ok_or_else(|| VerifyError::new(ErrorKind::Malformed, "not a compact JWS"))?;
        let (header, payload) = signed
            .split_once('.')
            .ok_or_else(|| VerifyError::new(ErrorKind::Malformed, "not a compact JWS"))?;
        let header = parse_header(header)?;
        let alg = match header.alg.parse::<Algorithm>() {
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => {
                return Err(VerifyError::new(
                    ErrorKind::UnsupportedAlgorithm,
                    "HMAC-signed tokens are refused",
                ));
            }
            Ok(alg) => alg,
            // `none` and anything unknown.
            Err(_) => {
                return Err(VerifyError::new(
                    ErrorKind::UnsupportedAlgorithm,
                    "the token's alg is not an asymmetric signature algorithm",
                ));
            }
        };
        // RFC 7515 §4.1.11: extensions listed as critical must be understood; this crate
        // understands none, so any `crit` is refused.
        if header.crit.is_some() {
            return Err(VerifyError::new(
                ErrorKind::CriticalHeader,
                "the token lists critical header extensions",
            ));
        }
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(VerifyError::new(ErrorKind::WrongType, "typ is not at+jwt"));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| VerifyError::new(ErrorKind::Malformed, "the token has no kid"))?;
        let key = self.inner.cache.key(kid, now).await?;
        // The algorithm comes from the key; the header only has to agree with it.
        if alg != key.alg {
            return Err(VerifyError::new(
                ErrorKind::AlgorithmMismatch,
                "the token's alg differs from its key's alg",
            ));
        }
        // The signature first: nothing of the payload is read before it is authenticated.
        let signature = B64.decode(signature).map_err(|_| {
            VerifyError::new(ErrorKind::Malformed, "the signature is not base64url")
        })?;
        key.key
            .verify_sig(signed.as_bytes(), &signature)
            .map_err(|_| {
                VerifyError::new(ErrorKind::InvalidSignature, "the signature does not verify")
            })?;
        let payload = B64
            .decode(payload)
            .map_err(|_| VerifyError::new(ErrorKind::Malformed, "the payload is not base64url"))?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|e| {
            if e.to_string().starts_with("missing field") {
                VerifyError::new(
                    ErrorKind::MissingClaim,
                    "a required claim (exp, iss, aud, sub) is missing",
                )
            } else {
                VerifyError::new(ErrorKind::Malformed, "the claims are malformed")
            }
        })?;
        self.check_claims(&claims, now)?;
        Ok(claims)
    }

    /// `iss`, `aud`, `exp` and `nbf` (with the leeway), as RFC 9068 §4 asks.
    fn check_claims(&self, claims: &Claims, now: SystemTime) -> Result<(), VerifyError> {
        if claims.iss != self.inner.issuer {
            return Err(VerifyError::new(
                ErrorKind::WrongIssuer,
                "unexpected issuer",
            ));
        }
        if !claims
            .aud
            .iter()
            .any(|a| self.inner.audiences.iter().any(|expected| a == expected))
        {
            return Err(VerifyError::new(
                ErrorKind::WrongAudience,
                "unexpected audience",
            ));
        }
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let leeway = i64::try_from(self.inner.leeway.as_secs()).unwrap_or(0);
        if now.saturating_sub(leeway) >= claims.exp {
            return Err(VerifyError::new(
                ErrorKind::Expired,
                "the token has expired",
            ));
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(leeway))
        {
            return Err(VerifyError::new(
                ErrorKind::NotYetValid,
                "the token is not valid yet",
            ));
        }
        Ok(())
    }
}

fn parse_header(encoded: &str) -> Result<Header, VerifyError> {
    let malformed = || VerifyError::new(ErrorKind::Malformed, "the token header is malformed");
    let bytes = B64.decode(encoded).map_err(|_| malformed())?;
    serde_json::from_slice(&bytes).map_err(|_| malformed())
}

impl VerifierBuilder {
    fn new(issuer: &str, audience: &str, source: BuilderSource) -> Self {
        VerifierBuilder {
            issuer: issuer.trim_end_matches('/').to_owned(),
            audiences: vec![audience.to_owned()],
            source,
            leeway: Duration::from_secs(30),
            unknown_kid_cooldown: Duration::from_secs(30),
            default_max_age: Duration::from_secs(300),
            max_max_age: Duration::from_secs(86_400),
            default_stale_if_error: Duration::from_secs(3600),
            http_timeout: Duration::from_secs(5),
            client: None,
        }
    }

    /// Accepts tokens for `audience` as well (a token passes when its `aud` holds any of them).
    pub fn also_audience(mut self, audience: &str) -> Self {
        if !self.audiences.iter().any(|a| a == audience) {
            self.audiences.push(audience.to_owned());
        }
        self
    }

    /// Clock skew tolerated on `exp` and `nbf` (default 30 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// At most one refetch per this interval for tokens with an unknown `kid` (default 30 s).
    pub fn unknown_kid_cooldown(mut self, cooldown: Duration) -> Self {
        self.unknown_kid_cooldown = cooldown;
        self
    }

    /// Cache lifetime when the JWKS response names none (default 5 min).
    pub fn default_max_age(mut self, max_age: Duration) -> Self {
        self.default_max_age = max_age;
        self
    }

    /// How long a cached JWKS may keep serving past its max-age while the issuer is down, when
    /// the response names no `stale-if-error` (default 1 h).
    pub fn default_stale_if_error(mut self, stale: Duration) -> Self {
        self.default_stale_if_error = stale;
        self
    }

    /// Timeout of each fetch (default 5 s).
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = timeout;
        self
    }

    /// Use this HTTP client (its own timeouts and TLS settings) for every fetch.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the verifier. Nothing is fetched until the first verification; a fixed JWKS is
    /// parsed now.
    pub fn build(self) -> Result<Verifier, VerifyError> {
        let cache = match self.source {
            BuilderSource::Fixed(jwks) => JwksCache::fixed(&jwks)?,
            source => {
                let client = match self.client {
                    Some(client) => client,
                    None => default_client(self.http_timeout)?,
                };
                let source = match source {
                    BuilderSource::JwksUrl(url) => Source::Jwks(url),
                    _ => Source::Issuer(self.issuer.clone()),
                };
                JwksCache::new(
                    source,
                    self.issuer.clone(),
                    client,
                    CacheSettings {
                        unknown_kid_cooldown: self.unknown_kid_cooldown,
                        default_max_age: self.default_max_age,
                        max_max_age: self.max_max_age,
                        default_stale_if_error: self.default_stale_if_error,
                    },
                )
            }
        };
        Ok(Verifier {
            inner: Arc::new(Inner {
                issuer: self.issuer,
                audiences: self.audiences,
                leeway: self.leeway,
                cache: Arc::new(cache),
            }),
        })
    }
}

fn default_client(timeout: Duration) -> Result<reqwest::Client, VerifyError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| VerifyError::new(ErrorKind::Configuration, format!("HTTP client: {e}")))
}
