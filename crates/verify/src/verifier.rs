//! The verifier: header checks, the key from the JWKS, then the signature and the claims.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::claims::Claims;
use crate::dpop::{self, Freshness, ProofContext, ProofFault, ReplayCache};
use crate::error::{ErrorKind, VerifyError};
use crate::jwks::{CacheSettings, JwksCache, Source};
use crate::revocations::Revocations;
use crate::token_cache;

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
    dpop_freshness: Freshness,
    dpop_replays: ReplayCache,
    public_base_url: Option<String>,
    /// What the revocation feed says is revoked (empty and idle unless subscribed).
    revocations: Arc<Revocations>,
    /// For the revocation feed's requests.
    client: reqwest::Client,
    /// Verified tokens, when enabled ([`VerifierBuilder::token_cache`]).
    token_cache: Option<token_cache::TokenCache>,
}

/// The credentials of one HTTP request, as a resource server received them: what
/// [`Verifier::verify_request`] checks.
#[derive(Clone, Copy, Debug)]
pub struct RequestCredentials<'a> {
    /// The `Authorization` header, if there is one.
    pub authorization: Option<&'a str>,
    /// Every `DPoP` header of the request (more than one is refused).
    pub dpop: &'a [&'a str],
    /// The request's method.
    pub method: &'a str,
    /// The URL the client sent the request to (scheme, host, path).
    pub url: &'a str,
}

/// How a request presented its access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer` (RFC 6750).
    Bearer,
    /// `Authorization: DPoP`, with a `DPoP` proof (RFC 9449 §7.1).
    DPoP,
}

/// The scheme and token of an `Authorization` header, if it is one this crate reads.
pub fn parse_authorization(value: &str) -> Option<(Scheme, &str)> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((Scheme::Bearer, token))
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Some((Scheme::DPoP, token))
    } else {
        None
    }
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
    dpop_freshness: Freshness,
    dpop_replay_capacity: usize,
    public_base_url: Option<String>,
    token_cache: Option<usize>,
}

enum BuilderSource {
    Discovery,
    JwksUrl(String),
    Fixed(Vec<u8>),
}

/// Which kind of JWT a signature path expects (explicit typing, RFC 8725 §3.11).
#[derive(Clone, Copy)]
enum TokenType {
    Access,
    SecurityEvent,
}

impl TokenType {
    fn name(self) -> &'static str {
        match self {
            TokenType::Access => "at+jwt",
            TokenType::SecurityEvent => "secevent+jwt",
        }
    }
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

    /// The base URL set with [`VerifierBuilder::public_base_url`].
    pub fn public_base_url(&self) -> Option<&str> {
        self.inner.public_base_url.as_deref()
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
        let Some(cache) = &self.inner.token_cache else {
            return self.verify_uncached(token, now).await;
        };
        let key = token_cache::key_of(token);
        if let Some(hit) = cache.get(&key) {
            // Everything that can change since the token was verified is checked again.
            let checked = async {
                self.check_claims(&hit.claims, now)?;
                self.inner.cache.key(&hit.kid, now).await?;
                self.inner.revocations.check(&hit.claims, now)
            };
            return match checked.await {
                Ok(()) => Ok(hit.claims),
                Err(e) => {
                    cache.remove(&key);
                    Err(e)
                }
            };
        }
        let claims = self.verify_uncached(token, now).await?;
        if let Some(kid) = token_kid(token) {
            let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            cache.put(
                key,
                token_cache::Cached {
                    claims: claims.clone(),
                    kid,
                },
                i64::try_from(now_s).unwrap_or(i64::MAX),
            );
        }
        Ok(claims)
    }

    async fn verify_uncached(&self, token: &str, now: SystemTime) -> Result<Claims, VerifyError> {
        let payload = self.verified_payload(token, TokenType::Access, now).await?;
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
        self.inner.revocations.check(&claims, now)?;
        Ok(claims)
    }

    /// A Security Event Token of this issuer for `audience` (RFC 8417, SSF 1.0 §4.1): typed
    /// `secevent+jwt`, signed by a key of the same JWKS, with no `exp` and no `sub`.
    pub(crate) async fn verify_security_event(
        &self,
        token: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<serde_json::Value, VerifyError> {
        let payload = self
            .verified_payload(token, TokenType::SecurityEvent, now)
            .await?;
        let claims: serde_json::Value = serde_json::from_slice(&payload)
            .map_err(|_| VerifyError::new(ErrorKind::Malformed, "the SET is malformed"))?;
        if claims["iss"].as_str() != Some(self.inner.issuer.as_str()) {
            return Err(VerifyError::new(
                ErrorKind::WrongIssuer,
                "unexpected issuer",
            ));
        }
        let aud_ok = match &claims["aud"] {
            serde_json::Value::String(a) => a == audience,
            serde_json::Value::Array(all) => all.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(VerifyError::new(
                ErrorKind::WrongAudience,
                "unexpected audience",
            ));
        }
        // A SET is not an access token and must never pass as one (RFC 8417 §2.2).
        if claims.get("exp").is_some() || claims.get("sub").is_some() {
            return Err(VerifyError::new(
                ErrorKind::Malformed,
                "a SET carries neither exp nor sub",
            ));
        }
        Ok(claims)
    }

    /// The authenticated payload of a compact JWS of `typ`, signed by a key of the issuer's
    /// JWKS with that key's algorithm. Nothing of the payload is read before the signature.
    async fn verified_payload(
        &self,
        token: &str,
        typ: TokenType,
        now: SystemTime,
    ) -> Result<Vec<u8>, VerifyError> {
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
        let expected = typ.name();
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(expected)
                || t.strip_prefix("application/")
                    .is_some_and(|t| t.eq_ignore_ascii_case(expected))
        });
        if !typ_ok {
            return Err(VerifyError::new(
                ErrorKind::WrongType,
                format!("typ is not {expected}"),
            ));
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
        B64.decode(payload)
            .map_err(|_| VerifyError::new(ErrorKind::Malformed, "the payload is not base64url"))
    }

    /// The issuer this verifier trusts.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    pub(crate) fn revocations(&self) -> &Arc<Revocations> {
        &self.inner.revocations
    }

    pub(crate) fn http_client(&self) -> &reqwest::Client {
        &self.inner.client
    }

    /// Verifies the access token of a request at the current system time: a bearer token
    /// that is not DPoP-bound, or a DPoP-bound token with its proof (RFC 9449 §7).
    pub async fn verify_request(
        &self,
        request: &RequestCredentials<'_>,
    ) -> Result<(Scheme, Claims), VerifyError> {
        self.verify_request_at(request, SystemTime::now()).await
    }

    /// As [`Verifier::verify_request`], as of `now`.
    pub async fn verify_request_at(
        &self,
        request: &RequestCredentials<'_>,
        now: SystemTime,
    ) -> Result<(Scheme, Claims), VerifyError> {
        let (scheme, token) = request
            .authorization
            .and_then(parse_authorization)
            .ok_or_else(|| {
                VerifyError::new(ErrorKind::MissingToken, "an access token is required")
            })?;
        let claims = self.verify_at(token, now).await?;
        let Some(jkt) = claims.dpop_jkt() else {
            return match scheme {
                Scheme::Bearer => Ok((scheme, claims)),
                Scheme::DPoP => Err(VerifyError::new(
                    ErrorKind::NotDpopBound,
                    "the token is not DPoP-bound: present it as a bearer token",
                )),
            };
        };
        if scheme == Scheme::Bearer {
            return Err(VerifyError::new(
                ErrorKind::BoundTokenAsBearer,
                "the token is DPoP-bound: present it with the DPoP scheme and a proof",
            ));
        }
        let proof = match request.dpop {
            [one] => *one,
            [] => {
                return Err(VerifyError::dpop(
                    ProofFault::Malformed,
                    "a DPoP proof is required",
                ));
            }
            _ => {
                return Err(VerifyError::dpop(
                    ProofFault::MultipleProofs,
                    "more than one DPoP header",
                ));
            }
        };
        let context = ProofContext {
            method: request.method,
            url: request.url,
            access_token: Some(token),
        };
        let proof = dpop::verify_proof(proof, &context, &self.inner.dpop_freshness, now)?;
        if proof.jkt != jkt {
            return Err(VerifyError::dpop(
                ProofFault::WrongKey,
                "the DPoP proof is not signed by the key the token is bound to",
            ));
        }
        let window = self.inner.dpop_freshness.replay_window();
        dpop::refuse_replay(
            self.inner
                .dpop_replays
                .check(proof.replay_key(), now, window),
        )?;
        Ok((scheme, claims))
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

/// The `kid` of a token that verified (its header parsed once already).
fn token_kid(token: &str) -> Option<String> {
    parse_header(token.split('.').next()?).ok()?.kid
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
            dpop_freshness: Freshness::default(),
            dpop_replay_capacity: 100_000,
            public_base_url: None,
            token_cache: None,
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

    /// How fresh a DPoP proof must be (default: `iat` at most 60 s old, 5 s leeway).
    pub fn dpop_freshness(mut self, freshness: Freshness) -> Self {
        self.dpop_freshness = freshness;
        self
    }

    /// How many recent DPoP proofs are remembered to refuse replays (default 100,000, about
    /// 5 MiB). When that many live proofs are remembered, new ones answer 503 until some age
    /// out: size it above your peak DPoP requests per freshness window.
    pub fn dpop_replay_capacity(mut self, capacity: usize) -> Self {
        self.dpop_replay_capacity = capacity;
        self
    }

    /// The scheme and host clients use to reach this resource server (`https://api.example.com`)
    /// when it differs from what requests show, behind a TLS-terminating proxy: the extractors
    /// check DPoP proofs' `htu` against it. Without it they use the request's own scheme and
    /// `Host`; forwarding headers are never trusted for this.
    pub fn public_base_url(mut self, base: &str) -> Self {
        self.public_base_url = Some(base.trim_end_matches('/').to_owned());
        self
    }

    /// Keeps up to `capacity` verified tokens, so a token presented again skips its signature
    /// check (off by default). A hit still checks expiry, that the token's key is still
    /// published, and the revocation feed: the cache never extends a token's life. DPoP proofs
    /// are always checked. Each entry holds the claims (a few hundred bytes).
    pub fn token_cache(mut self, capacity: usize) -> Self {
        self.token_cache = (capacity > 0).then_some(capacity);
        self
    }

    /// Builds the verifier. Nothing is fetched until the first verification; a fixed JWKS is
    /// parsed now.
    pub fn build(self) -> Result<Verifier, VerifyError> {
        let client = match self.client {
            Some(client) => client,
            None => default_client(self.http_timeout)?,
        };
        let cache = match self.source {
            BuilderSource::Fixed(jwks) => JwksCache::fixed(&jwks)?,
            source => {
                let client = client.clone();
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
                dpop_freshness: self.dpop_freshness,
                dpop_replays: ReplayCache::new(self.dpop_replay_capacity),
                public_base_url: self.public_base_url,
                revocations: Arc::default(),
                client,
                token_cache: self.token_cache.map(token_cache::TokenCache::new),
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
