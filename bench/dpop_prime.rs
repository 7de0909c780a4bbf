//! Prepares a DPoP refresh benchmark: logs in N sessions bound to one ES256 key (a proof per
//! login), writes their refresh tokens one per line, then writes M fresh proofs for
//! `POST {issuer}/auth/refresh`, one per line, for `bench/wrk/refresh.lua` (its PROOFS_FILE). Proofs are signed
//! here, before the run, so the load tool spends no CPU on them during it; they stay fresh for
//! the issuer's `dpop.proof_max_age` (60 s by default).
//!
//! ```sh
//! cargo run --release --example dpop_prime -- --url http://127.0.0.1:8080 --user bench \
//!     --password 'bench passphrase for load tests' --sessions 36 --proofs 200000 \
//!     --tokens tokens.txt --proof-file proofs.txt
//! ```
//! Loopback targets only; every loop is bounded by `--sessions` and `--proofs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Base URL of the issuer (its configured `issuer`); loopback only.
    #[arg(long)]
    url: String,
    #[arg(long)]
    user: String,
    #[arg(long)]
    password: String,
    #[arg(long, default_value_t = 36)]
    sessions: usize,
    #[arg(long, default_value_t = 100_000)]
    proofs: usize,
    #[arg(long)]
    tokens: String,
    #[arg(long)]
    proof_file: String,
}

struct Key {
    pair: EcdsaKeyPair,
    header: String,
    rng: SystemRandom,
}

impl Key {
    fn new() -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])});
        let header = B64.encode(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}).to_string());
        Key { pair, header, rng }
    }

    fn proof(&self, url: &str, n: usize) -> String {
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({"jti": format!("{}-{n}", uuid::Uuid::new_v4()), "htm": "POST", "htu": url, "iat": iat});
        let signed = format!("{}.{}", self.header, B64.encode(claims.to_string()));
        let signature = self.pair.sign(&self.rng, signed.as_bytes()).unwrap();
        format!("{signed}.{}", B64.encode(signature.as_ref()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let host = args
        .url
        .strip_prefix("http://")
        .unwrap_or("")
        .split(['/', ':'])
        .next();
    assert!(
        matches!(host, Some("127.0.0.1" | "localhost")),
        "dpop_prime: loopback targets only"
    );
    let key = Key::new();
    let client = reqwest::Client::new();
    let mut tokens = Vec::new();
    for n in 0..args.sessions {
        let response = client
            .post(format!("{}/auth/login", args.url))
            .header("DPoP", key.proof(&format!("{}/auth/login", args.url), n))
            .json(&json!({"username": args.user, "password": args.password}))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["token_type"], "DPoP", "{body}");
        tokens.push(body["refresh_token"].as_str().unwrap().to_owned());
    }
    std::fs::write(&args.tokens, tokens.join("\n") + "\n").unwrap();
    let refresh = format!("{}/auth/refresh", args.url);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args.proof_file).unwrap());
    for n in 0..args.proofs {
        writeln!(out, "{}", key.proof(&refresh, n)).unwrap();
    }
    out.flush().unwrap();
}
