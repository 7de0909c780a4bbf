//! Verification throughput, ES256, RS256 and EdDSA, with the JWKS already cached (the steady
//! state of a resource server). Compare with `openssl speed -seconds 3 ecdsap256 rsa2048
//! ed25519` on the same machine: see bench/REPORT.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{Criterion, criterion_group, criterion_main};
use latchkey_verify::Verifier;
use serde_json::json;

const ISSUER: &str = "https://issuer.example";

fn claims() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({
        "iss": ISSUER, "sub": "8f14e45f-ceea-467a-9e1a-8b1c2d3e4f50", "aud": "api",
        "exp": now + 3600, "iat": now, "nbf": now, "jti": "0f8fad5bd9cb469fa16570867728950e",
        "client_id": "web", "sid": "1c7d1b2a-3f4e-4d5c-8b6a-7e9f0a1b2c3d"
    })
    .to_string()
}

fn jws(header: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(claims()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", B64.encode(signature))
}

fn bench(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let ed = Ed25519KeyPair::generate().unwrap();
    let point = ec.public_key().as_ref();
    let public = rsa.public_key();
    let jwks = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "es", "alg": "ES256", "use": "sig",
         "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])},
        {"kty": "RSA", "kid": "rs", "alg": "RS256", "use": "sig",
         "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
         "e": B64.encode(public.exponent().big_endian_without_leading_zero())},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "alg": "EdDSA", "use": "sig",
         "x": B64.encode(ed.public_key().as_ref())},
    ]});
    let verifier = Verifier::from_static_jwks(jwks.to_string().as_bytes(), ISSUER, "api").unwrap();
    // The same keys with the verified-token cache: a token seen before skips its signature.
    let cached = Verifier::from_jwks(jwks.to_string().as_bytes(), ISSUER, "api")
        .token_cache(10_000)
        .build()
        .unwrap();
    let es_token = jws(r#"{"alg":"ES256","typ":"at+jwt","kid":"es"}"#, |m| {
        ec.sign(&rng, m).unwrap().as_ref().to_vec()
    });
    let rs_token = jws(r#"{"alg":"RS256","typ":"at+jwt","kid":"rs"}"#, |m| {
        let mut sig = vec![0; rsa.public_modulus_len()];
        rsa.sign(&RSA_PKCS1_SHA256, &rng, m, &mut sig).unwrap();
        sig
    });
    let ed_token = jws(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"ed"}"#, |m| {
        ed.sign(m).as_ref().to_vec()
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(verifier.verify(&es_token)).unwrap();
    runtime.block_on(verifier.verify(&rs_token)).unwrap();
    runtime.block_on(verifier.verify(&ed_token)).unwrap();

    let mut group = c.benchmark_group("verify");
    group.bench_function("ES256", |b| {
        b.iter(|| runtime.block_on(verifier.verify(&es_token)).unwrap())
    });
    group.bench_function("RS256", |b| {
        b.iter(|| runtime.block_on(verifier.verify(&rs_token)).unwrap())
    });
    group.bench_function("EdDSA", |b| {
        b.iter(|| runtime.block_on(verifier.verify(&ed_token)).unwrap())
    });
    runtime.block_on(cached.verify(&es_token)).unwrap();
    group.bench_function("ES256, token cache hit", |b| {
        b.iter(|| runtime.block_on(cached.verify(&es_token)).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
