//! The issuer's per-request crypto: signing an access token with the key ring's pre-parsed keys
//! (ES256, RS256, EdDSA), and the refresh-token work of one rotation (generate the successor, derive
//! the presented token's lookup id and seal key, seal). Compare with `openssl speed` on the same
//! machine: see bench/REPORT.md. With `LATCHKEY_BENCH_HSM_TOKEN` naming a SoftHSM2 token that
//! holds the keys `hsm-es` and `hsm-rs` (bench/run.sh makes it, with `SOFTHSM2_CONF` and the PIN
//! in `LATCHKEY_BENCH_HSM_PIN`), the same signatures through PKCS#11 too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey::config::{Alg, Config};
use latchkey::keys::{KeyRing, files};
use latchkey::tokens::RefreshToken;
use serde_json::json;

fn ring(dir: &std::path::Path) -> KeyRing {
    let mut text = String::from("issuer = \"https://issuer.example\"\nlisten = \"127.0.0.1:0\"\n");
    for (kid, alg) in [("es", Alg::ES256), ("rs", Alg::RS256), ("ed", Alg::EdDSA)] {
        let path = dir.join(format!("{kid}.pem"));
        files::write_private_pem(&path, &files::generate(alg, 2048).unwrap()).unwrap();
        text.push_str(&format!(
            "[[keys]]\nkid = \"{kid}\"\nalg = \"{alg}\"\npath = \"{}\"\nnot_before = \"2020-01-01T00:00:00Z\"\nnot_after = \"2100-01-01T00:00:00Z\"\n",
            path.display()
        ));
    }
    if let Ok(token) = std::env::var("LATCHKEY_BENCH_HSM_TOKEN") {
        for (kid, alg) in [("hsm-es", Alg::ES256), ("hsm-rs", Alg::RS256)] {
            text.push_str(&format!(
                "[[keys]]\nkid = \"{kid}\"\nalg = \"{alg}\"\nnot_before = \"2020-01-01T00:00:00Z\"\nnot_after = \"2100-01-01T00:00:00Z\"\nsigns = [\"id_tokens\"]\n\
                 [keys.pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken = \"{token}\"\nkey_label = \"{kid}\"\npin_env = \"LATCHKEY_BENCH_HSM_PIN\"\n"
            ));
        }
    }
    KeyRing::load(&Config::parse(&text, |_| None).unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ring = ring(dir.path());
    let now = latchkey::clock::system_ms();
    let claims = serde_json::to_vec(&json!({
        "iss": "https://issuer.example", "sub": "8f14e45f-ceea-467a-9e1a-8b1c2d3e4f50", "aud": "api",
        "exp": now / 1000 + 900, "iat": now / 1000, "nbf": now / 1000,
        "jti": "0f8fad5bd9cb469fa16570867728950e", "client_id": "web",
        "sid": "1c7d1b2a-3f4e-4d5c-8b6a-7e9f0a1b2c3d"
    }))
    .unwrap();

    let mut group = c.benchmark_group("sign");
    for kid in ["es", "rs", "ed"] {
        let key = ring.verifying(kid, now).unwrap();
        group.bench_function(key.alg().as_str(), |b| {
            b.iter(|| key.sign_jws(&claims).unwrap())
        });
    }
    for kid in ["hsm-es", "hsm-rs"] {
        if let Some(key) = ring.verifying(kid, now) {
            group.bench_function(format!("{} (SoftHSM2)", key.alg().as_str()), |b| {
                b.iter(|| key.sign_jws(&claims).unwrap())
            });
        }
    }
    group.finish();

    let sid = uuid::Uuid::new_v4();
    let presented = RefreshToken::generate(sid).unwrap();
    c.bench_function("refresh_token/rotation_crypto", |b| {
        b.iter(|| {
            let parsed = RefreshToken::parse(presented.as_str()).unwrap();
            let successor = RefreshToken::generate(sid).unwrap();
            let sealed = parsed.seal(&successor).unwrap();
            (successor.id(), sealed)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
