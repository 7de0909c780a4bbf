//! A whole key rotation across three `latchkey serve` processes sharing one config and one
//! Redis: the new key is published, starts signing, the old one retires and is dropped. Resource
//! servers cache the JWKS exactly as its Cache-Control allows and never refetch on an unknown
//! kid, so any token they cannot verify is a schedule the issuer got wrong.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use latchkey::config::format_timestamp;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, RedisServer, ServeProcess, TestConfig, base_config, text};

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

fn at(secs: u64) -> String {
    format_timestamp(i64::try_from(secs * 1000).unwrap())
}

/// A resource server's view of one instance's JWKS: cached for max-age, never refreshed early.
struct ResourceServer {
    jwks_url: String,
    cached: Option<(Instant, Duration, JwkSet)>,
    fetches: usize,
}

impl ResourceServer {
    async fn keys(&mut self, client: &reqwest::Client) -> &JwkSet {
        let fresh =
            matches!(&self.cached, Some((fetched, max_age, _)) if fetched.elapsed() < *max_age);
        if !fresh {
            let response = client.get(&self.jwks_url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let cache_control = response.headers()["cache-control"]
                .to_str()
                .unwrap()
                .to_owned();
            let max_age = cache_control
                .split(',')
                .find_map(|d| d.trim().strip_prefix("max-age="))
                .unwrap()
                .parse()
                .unwrap();
            self.cached = Some((
                Instant::now(),
                Duration::from_secs(max_age),
                response.json().await.unwrap(),
            ));
            self.fetches += 1;
        }
        &self.cached.as_ref().unwrap().2
    }

    /// Verifies with the cached JWKS only; the kid of a valid token, or why it failed.
    async fn verify(&mut self, client: &reqwest::Client, token: &str) -> Result<String, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.ok_or("no kid")?;
        let jwks = self.keys(client).await;
        let jwk = jwks
            .find(&kid)
            .ok_or_else(|| format!("kid {kid} not in the cached JWKS"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let alg = jwk.common.key_algorithm.ok_or("JWK without alg")?;
        let mut validation = Validation::new(alg.to_string().parse().map_err(|_| "alg")?);
        validation.set_audience(&["api"]);
        validation.set_issuer(&["http://127.0.0.1"]);
        validation.leeway = 1;
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| format!("{kid}: {e}"))?;
        Ok(kid)
    }
}

fn write_config(path: &Path, base: &TestConfig, keys: &[(&str, u64, u64)]) {
    let mut text = base.text.clone();
    for (kid, not_before, not_after) in keys {
        text.push_str(&format!(
            "\n[[keys]]\nkid = \"{kid}\"\nalg = \"{}\"\npath = \"{}\"\nnot_before = \"{}\"\nnot_after = \"{}\"\n",
            if kid.ends_with("rs") { "RS256" } else { "ES256" },
            base.dir.join(format!("{kid}.pem")).display(),
            at(*not_before),
            at(*not_after)
        ));
    }
    // Write-then-rename, so an instance polling the file never reads half of it.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_rotate_keys_with_zero_failed_verifications() {
    // Arrange: "old-es" signs until T+6, where "new-rs" takes over; "new-rs" is added to the
    // config at T, 6 s ahead of its first signature. access_ttl 2s + leeway 1s: "old-es" must
    // stay published until T+9; it is dropped from the config at T+10. Traffic (and so cached
    // JWKS documents) starts before T.
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut base = base_config(dir.path(), &redis.url());
    base.set("tokens", "access_ttl = \"2s\"");
    base.set("tokens", "leeway = \"1s\"");
    base.set("tokens", "refresh_idle_ttl = \"1h\"");
    base.set("tokens", "reuse_grace = \"2s\"");
    base.set("jwks", "max_age = \"1s\"");
    let test_key_block = base.text.find("\n[[keys]]").unwrap();
    base.text.truncate(test_key_block);
    base.add_key(
        "old-es",
        "ES256",
        "2020-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "",
    );
    base.add_key(
        "new-rs",
        "RS256",
        "2020-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "",
    );
    base.text.truncate(test_key_block);
    let t = unix_now().as_secs() + 6;
    let config = dir.path().join("latchkey.toml");
    write_config(&config, &base, &[("old-es", t - 100, t + 6)]);

    let instances = vec![
        ServeProcess::start(&config).await,
        ServeProcess::start(&config).await,
        ServeProcess::start(&config).await,
    ];
    let add = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["users", "add", "alice", "-c"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut add = add;
        add.stdin
            .take()
            .unwrap()
            .write_all(PASSWORD.as_bytes())
            .unwrap();
        assert!(add.wait().unwrap().success());
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut refresh_tokens = Vec::new();
    for instance in &instances {
        let login = client
            .post(format!("{}/auth/login", instance.address))
            .json(&json!({"username": "alice", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), StatusCode::OK);
        refresh_tokens.push(text(&login.json().await.unwrap(), "refresh_token"));
    }
    let mut resource_servers: Vec<ResourceServer> = instances
        .iter()
        .map(|i| ResourceServer {
            jwks_url: format!("{}/.well-known/jwks.json", i.address),
            cached: None,
            fetches: 0,
        })
        .collect();
    assert!(
        unix_now().as_secs() + 1 < t,
        "instances took too long to start"
    );

    // Act: drive refreshes through every instance and verify each token at every resource
    // server, now and again shortly before it expires, while the config changes under them.
    let (mut published_new, mut dropped_old) = (false, false);
    let mut pending: Vec<(Instant, String)> = Vec::new();
    let mut signed_by: HashMap<String, usize> = HashMap::new();
    let (mut verifications, mut failures, mut refused) = (0usize, Vec::new(), 0usize);
    let started = Instant::now();
    let mut round = 0usize;
    while unix_now().as_secs() < t + 12
        && started.elapsed() < Duration::from_secs(25)
        && round < 30_000
    {
        round += 1;
        let elapsed = unix_now().as_secs_f64() - t as f64;
        if !published_new && elapsed >= 0.0 {
            write_config(
                &config,
                &base,
                &[("old-es", t - 100, t + 6), ("new-rs", t + 6, t + 10_000)],
            );
            instances.iter().for_each(ServeProcess::hangup);
            published_new = true;
        }
        if !dropped_old && elapsed >= 10.0 {
            write_config(&config, &base, &[("new-rs", t + 6, t + 10_000)]);
            instances.iter().for_each(ServeProcess::hangup);
            dropped_old = true;
        }

        let i = round % instances.len();
        let response = client
            .post(format!("{}/auth/refresh", instances[i].address))
            .json(&json!({"refresh_token": refresh_tokens[i]}))
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::OK {
            refused += 1;
            continue;
        }
        let body: Value = response.json().await.unwrap();
        refresh_tokens[i] = text(&body, "refresh_token");
        let access = text(&body, "access_token");
        for rs in resource_servers.iter_mut() {
            verifications += 1;
            match rs.verify(&client, &access).await {
                Ok(kid) => *signed_by.entry(kid).or_default() += 1,
                Err(e) => failures.push(format!("t+{elapsed:.2}s fresh: {e}")),
            }
        }
        pending.push((Instant::now() + Duration::from_millis(1700), access));
        let due: Vec<String> = pending
            .iter()
            .filter(|(when, _)| *when <= Instant::now())
            .map(|(_, token)| token.clone())
            .collect();
        pending.retain(|(when, _)| *when > Instant::now());
        for token in due {
            for rs in resource_servers.iter_mut() {
                verifications += 1;
                if let Err(e) = rs.verify(&client, &token).await {
                    failures.push(format!("t+{elapsed:.2}s aged: {e}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }

    // Assert: the rotation happened, nothing was refused, every verification passed.
    assert!(
        dropped_old,
        "the test did not run to the end of the rotation"
    );
    assert_eq!(refused, 0, "requests were refused during the rotation");
    assert!(
        failures.is_empty(),
        "{} of {verifications} verifications failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        signed_by.get("old-es").copied().unwrap_or(0) > 10,
        "{signed_by:?}"
    );
    assert!(
        signed_by.get("new-rs").copied().unwrap_or(0) > 10,
        "{signed_by:?}"
    );
    for rs in &mut resource_servers {
        rs.cached = None;
        let kids: Vec<String> = rs
            .keys(&client)
            .await
            .keys
            .iter()
            .filter_map(|k| k.common.key_id.clone())
            .collect();
        assert_eq!(kids, ["new-rs"], "the old key must be dropped everywhere");
        assert!(
            rs.fetches > 3,
            "resource servers refetched as max-age allows"
        );
    }
}
