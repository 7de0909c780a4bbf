//! Signing keys in an HSM over PKCS#11, against SoftHSM2 (Debian `softhsm2`; `.ci/run` installs
//! it): a key generated inside a fresh token signs what resource servers verify, a wrong PIN or
//! a missing key stops the start with a message naming the key, and rotating from a file key to
//! the HSM key and back under load fails no verification. Each test has a token directory and
//! processes of its own (`SOFTHSM2_CONF` is read once per process).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, ServeProcess, TestConfig, base_config, claims_of, free_port, latchkey,
    run_with_stdin, text,
};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "246810";

/// A SoftHSM2 token directory with one initialized token, `latchkey`.
struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    fn new() -> SoftHsm {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 must be installed (Debian: softhsm2; .ci/run installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let hsm = SoftHsm { dir };
        let init = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", "latchkey"])
            .args(["--so-pin", "13579135", "--pin", PIN])
            .env("SOFTHSM2_CONF", hsm.conf())
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        hsm
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// The environment a process using the token needs.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SOFTHSM2_CONF", self.conf().display().to_string()),
            ("HSM_PIN", PIN.to_owned()),
        ]
    }

    /// `latchkey keys generate-hsm`: a key pair made inside the token.
    fn generate(&self, alg: &str, kid: &str) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
        command.args([
            "keys",
            "generate-hsm",
            "--alg",
            alg,
            "--kid",
            kid,
            "--module",
            MODULE,
            "--token",
            "latchkey",
            "--pin-env",
            "HSM_PIN",
        ]);
        command.envs(self.env());
        let out = run_with_stdin(command, "");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("[keys.pkcs11]"));
    }
}

/// A `[[keys]]` entry for an HSM key.
fn hsm_key(kid: &str, alg: &str, not_before: &str, not_after: &str, extra: &str) -> String {
    format!(
        "\n[[keys]]\nkid = \"{kid}\"\nalg = \"{alg}\"\nnot_before = \"{not_before}\"\nnot_after = \"{not_after}\"\n{extra}\n\
         [keys.pkcs11]\nmodule = \"{MODULE}\"\ntoken = \"latchkey\"\nkey_label = \"{kid}\"\npin_env = \"HSM_PIN\"\n"
    )
}

/// The tests' config without its file key, on an embedded store, with a short JWKS max-age.
fn config_without_keys(dir: &Path) -> TestConfig {
    let store = format!("sqlite://{}", dir.join("latchkey.db").display());
    let mut config = base_config(dir, &store);
    let cut = config.text.find("\n[[keys]]").unwrap();
    config.text.truncate(cut);
    config.set("jwks", "max_age = \"1s\"");
    // One address logs in many times.
    config.set("limits", "login_attempts_per_ip = 100000000");
    config
}

fn write_and_add_user(dir: &Path, config: &TestConfig) -> PathBuf {
    let path = dir.join("latchkey.toml");
    std::fs::write(&path, &config.text).unwrap();
    if !dir.join("latchkey.db").exists() {
        let added = run_with_stdin(latchkey(&["users", "add", "alice"], &path), PASSWORD);
        assert!(
            added.status.success(),
            "{}",
            String::from_utf8_lossy(&added.stderr)
        );
    }
    path
}

async fn serve(path: &Path, hsm: &SoftHsm) -> ServeProcess {
    let env = hsm.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ServeProcess::start_with_env(path, "warn", None, &env).await
}

async fn log_in(client: &reqwest::Client, base: &str) -> String {
    let answer = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    text(&answer.json::<Value>().await.unwrap(), "access_token")
}

#[tokio::test]
async fn a_key_made_in_an_hsm_signs_what_resource_servers_verify() {
    let hsm = SoftHsm::new();
    hsm.generate("ES256", "hsm-es");
    hsm.generate("RS256", "hsm-rs");
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_without_keys(dir.path());
    let port = free_port();
    config.text = config.text.replace(
        "issuer = \"http://127.0.0.1\"",
        &format!("issuer = \"http://127.0.0.1:{port}\""),
    );
    config.text.push_str(&hsm_key(
        "hsm-es",
        "ES256",
        "2020-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "",
    ));
    // The RS256 HSM key signs ID tokens (RS256 is what relying parties expect).
    config.text.push_str(&hsm_key(
        "hsm-rs",
        "RS256",
        "2020-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "signs = [\"id_tokens\"]",
    ));
    let path = write_and_add_user(dir.path(), &config);
    let env = hsm.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command
        .args(["serve", "-c"])
        .arg(&path)
        .env("LATCHKEY_LISTEN", format!("127.0.0.1:{port}"))
        .env("LATCHKEY_LOG", "warn")
        .envs(env.iter().copied());
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map_or(true, |r| r.status() != StatusCode::OK)
    {
        assert!(started.elapsed() < Duration::from_secs(20), "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let access = log_in(&client, &base).await;
    let header = jsonwebtoken::decode_header(&access).unwrap();
    assert_eq!(header.kid.as_deref(), Some("hsm-es"));
    let jwks: Value = client
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "{jwks}");
    assert!(kids.contains(&"hsm-es") && kids.contains(&"hsm-rs"));
    // latchkey-verify from the issuer's metadata, and jsonwebtoken from the JWK alone.
    let verifier = latchkey_verify::Verifier::from_issuer(&base, "api")
        .build()
        .unwrap();
    let claims = verifier.verify(&access).await.unwrap();
    assert_eq!(claims.sub, claims_of(&access)["sub"].as_str().unwrap());
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["api"]);
    jsonwebtoken::decode::<Value>(
        &access,
        &jsonwebtoken::DecodingKey::from_jwk(set.find("hsm-es").unwrap()).unwrap(),
        &validation,
    )
    .expect("jsonwebtoken verifies the HSM's signature");
    // Many signatures at once, each a valid one (the key's sessions are shared).
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, base) = (client.clone(), base.clone());
        logins.spawn(async move { log_in(&client, &base).await });
    }
    for token in logins.join_all().await {
        verifier.verify(&token).await.unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // A wrong PIN, and a key the token does not hold: the start stops, naming the key.
    let start_fails = |pin: &str, config: &Path| {
        let mut command = latchkey(&["serve"], config);
        command
            .env("SOFTHSM2_CONF", hsm.conf())
            .env("HSM_PIN", pin)
            .env("LATCHKEY_LISTEN", format!("127.0.0.1:{}", free_port()));
        let out = run_with_stdin(command, "");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let wrong_pin = start_fails("999999", &path);
    assert!(
        wrong_pin.contains("hsm-es") && wrong_pin.contains("wrong PIN"),
        "{wrong_pin}"
    );
    let missing = dir.path().join("missing.toml");
    std::fs::write(
        &missing,
        config
            .text
            .replace("key_label = \"hsm-es\"", "key_label = \"gone\""),
    )
    .unwrap();
    let no_key = start_fails(PIN, &missing);
    assert!(
        no_key.contains("hsm-es") && no_key.contains("no private key labelled \"gone\""),
        "{no_key}"
    );
    // The PIN is never taken from the config itself.
    let in_config = dir.path().join("pin.toml");
    std::fs::write(
        &in_config,
        config
            .text
            .replacen("pin_env = \"HSM_PIN\"", "pin = \"246810\"", 1),
    )
    .unwrap();
    let refused = start_fails(PIN, &in_config);
    assert!(refused.contains("pin"), "{refused}");
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Rotation from a file key to an HSM key and back, under a steady load of logins whose tokens a
/// resource server verifies: every token verifies, and tokens of all three keys were seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_between_a_file_key_and_an_hsm_key_under_load_fails_no_verification() {
    let hsm = SoftHsm::new();
    hsm.generate("ES256", "hsm-es");
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_without_keys(dir.path());
    let now = SystemTime::now();
    config.add_key(
        "file-1",
        "ES256",
        "2020-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "",
    );
    let path = write_and_add_user(dir.path(), &config);
    let server = serve(&path, &hsm).await;
    let base = server.address.clone();
    let client = reqwest::Client::new();

    // Three windows, each published before it signs (the JWKS max-age is 1 s): file-1 until
    // T1, the HSM key until T2, then a new file key.
    let t1 = now + Duration::from_secs(4);
    let t2 = now + Duration::from_secs(8);
    let end = now + Duration::from_secs(11);
    let mut rotated = config_without_keys(dir.path());
    rotated.add_key("file-1", "ES256", "2020-01-01T00:00:00Z", &rfc3339(t1), "");
    rotated
        .text
        .push_str(&hsm_key("hsm-es", "ES256", &rfc3339(t1), &rfc3339(t2), ""));
    rotated.add_key("file-2", "ES256", &rfc3339(t2), "2100-01-01T00:00:00Z", "");
    std::fs::write(&path, &rotated.text).unwrap();
    server.hangup();

    let verifier = latchkey_verify::Verifier::from_jwks_url(
        &format!("{base}/.well-known/jwks.json"),
        "http://127.0.0.1",
        "api",
    )
    .build()
    .unwrap();
    let mut seen = std::collections::BTreeMap::new();
    let mut failures = Vec::new();
    let mut logins = 0;
    while SystemTime::now() < end && logins < 10_000 {
        // A steady load, not a flood: every window gets its share.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let token = log_in(&client, &base).await;
        logins += 1;
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        match verifier.verify(&token).await {
            Ok(_) => *seen.entry(kid).or_insert(0) += 1,
            Err(e) => failures.push(format!("{kid}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        ["file-1", "file-2", "hsm-es"],
        "every key signed in its window: {seen:?} ({logins} logins)"
    );
}
