//! EdDSA (Ed25519, RFC 8037) signing keys: a key OpenSSL made signs access tokens, the JWKS
//! publishes it as an `OKP` key, and verifiers written by others accept its tokens with no
//! custom code: `jose` in Node, jsonwebtoken in Rust, and latchkey-verify.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, PASSWORD, spawn_app_with, text};
use crate::keys::openssl;

#[tokio::test]
async fn eddsa_keys_sign_tokens_that_independent_verifiers_accept() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ed.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "ED25519",
        "-out",
        &key.display().to_string(),
    ]);
    let mut issuer = String::new();
    let app = spawn_app_with(Backend::Embedded, |c| {
        issuer = c.issuer_on_own_port();
        // A later not_before than the suite's ES256 key: this one signs now.
        c.text.push_str(&format!(
            "\n[[keys]]\nkid = \"ed\"\nalg = \"EdDSA\"\npath = \"{}\"\nnot_before = \"2024-01-01T00:00:00Z\"\nnot_after = \"2100-01-01T00:00:00Z\"\n",
            key.display()
        ));
    })
    .await;
    app.add_user("alice", PASSWORD).await;

    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "ed")
        .unwrap()
        .clone();
    assert_eq!(
        (&jwk["kty"], &jwk["crv"], &jwk["alg"], &jwk["use"]),
        (
            &"OKP".into(),
            &"Ed25519".into(),
            &"EdDSA".into(),
            &"sig".into()
        )
    );
    assert_eq!(jwk["x"].as_str().unwrap().len(), 43, "32 bytes, base64url");
    assert!(jwk.get("d").is_none(), "no private part");
    let metadata: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        metadata["access_token_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&"EdDSA".into())
    );

    let access = text(&app.login_ok("alice").await, "access_token");
    let header = jsonwebtoken::decode_header(&access).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some("ed"));
    // The issuer checks its own tokens.
    let userinfo = app
        .client
        .get(app.url("/auth/userinfo"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), StatusCode::OK);

    // jsonwebtoken, from the JWKS.
    let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[&issuer]);
    validation.set_audience(&["api"]);
    let claims = jsonwebtoken::decode::<Value>(
        &access,
        &DecodingKey::from_jwk(set.find("ed").unwrap()).unwrap(),
        &validation,
    )
    .expect("jsonwebtoken verifies it")
    .claims;

    // latchkey-verify, from the issuer's metadata.
    let verifier = latchkey_verify::Verifier::from_issuer(&issuer, "api")
        .build()
        .unwrap();
    assert_eq!(
        verifier.verify(&access).await.unwrap().sub,
        claims["sub"].as_str().unwrap()
    );

    // jose, as a Node resource server would.
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/openid-client");
    assert!(
        std::path::Path::new(folder)
            .join("node_modules/jose")
            .exists(),
        "jose must be installed: npm ci --prefix tests/fixtures/openid-client (.ci/run does)"
    );
    let output = tokio::process::Command::new("node")
        .arg(format!("{folder}/verify_jose.mjs"))
        .args([issuer.as_str(), "api", access.as_str()])
        .output()
        .await
        .expect("node");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verified: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(verified["header"]["alg"], "EdDSA");
    assert_eq!(verified["claims"]["sub"], claims["sub"]);

    // A token with a changed payload is refused by jose too (a character mid-payload: every
    // one of its bits is data, unlike the signature's last).
    let at = access.find('.').unwrap() + 10;
    let mut tampered = access.clone().into_bytes();
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let output = tokio::process::Command::new("node")
        .arg(format!("{folder}/verify_jose.mjs"))
        .args([issuer.as_str(), "api", tampered.as_str()])
        .output()
        .await
        .expect("node");
    assert!(!output.status.success());

    // PyJWT, as a Python resource server would (the example in docs/resource-servers.md).
    let pyjwt = |token: String| {
        let issuer = issuer.clone();
        async move {
            tokio::process::Command::new("python3")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/fixtures/python/verify_pyjwt.py"
                ))
                .args([issuer.as_str(), "api", token.as_str()])
                .output()
                .await
                .expect("python3 with PyJWT and cryptography (.ci/run installs them)")
        }
    };
    let output = pyjwt(access.clone()).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verified: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(verified["header"]["alg"], "EdDSA");
    assert_eq!(verified["claims"]["sub"], claims["sub"]);
    // PyJWT reads the payload's JSON first: a bad signature is what shows it checks the key.
    let mid_signature = access.rfind('.').unwrap() + 20;
    let mut forged = access.clone().into_bytes();
    forged[mid_signature] = if forged[mid_signature] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let output = pyjwt(String::from_utf8(forged).unwrap()).await;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("InvalidSignatureError"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An Ed25519 key encrypted by OpenSSL (PBES2) loads with its passphrase from the environment.
#[test]
fn an_encrypted_ed25519_key_loads_with_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    openssl(&["genpkey", "-algorithm", "ED25519", "-out", &d("plain.pem")]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-in",
        &d("plain.pem"),
        "-out",
        &d("ed.pem"),
        "-passout",
        "pass:s3cret",
        "-v2",
        "aes-256-cbc",
    ]);
    let config = dir.path().join("latchkey.toml");
    std::fs::write(
        &config,
        "issuer = \"http://127.0.0.1\"\nlisten = \"127.0.0.1:0\"\n[[keys]]\nkid = \"ed\"\nalg = \"EdDSA\"\npath = \"ed.pem\"\nnot_before = \"2020-01-01T00:00:00Z\"\nnot_after = \"2100-01-01T00:00:00Z\"\npassphrase_env = \"ED_KEY_PASS\"\n",
    )
    .unwrap();
    let check = |pass: &str| {
        let mut command = crate::helpers::latchkey(&["config", "check"], &config);
        command.env("ED_KEY_PASS", pass);
        crate::helpers::run_with_stdin(command, "")
    };
    let ok = check("s3cret");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("signed now by ed (EdDSA)"),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let wrong = check("wrong");
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("ed"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

/// The Python example in `docs/resource-servers.md` is the file the suite runs.
#[test]
fn the_documented_pyjwt_example_is_the_one_tested() {
    let root = env!("CARGO_MANIFEST_DIR");
    let script =
        std::fs::read_to_string(format!("{root}/tests/fixtures/python/verify_pyjwt.py")).unwrap();
    let page = std::fs::read_to_string(format!("{root}/docs/resource-servers.md")).unwrap();
    assert!(
        page.contains(&format!("```python\n{script}```")),
        "docs/resource-servers.md's PyJWT example differs from verify_pyjwt.py"
    );
}

/// The Node example in `docs/resource-servers.md` is the file the suite runs.
#[test]
fn the_documented_jose_example_is_the_one_tested() {
    let root = env!("CARGO_MANIFEST_DIR");
    let script = std::fs::read_to_string(format!(
        "{root}/tests/fixtures/openid-client/verify_jose.mjs"
    ))
    .unwrap();
    let code: String = script
        .lines()
        .filter(|l| !l.starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let page = std::fs::read_to_string(format!("{root}/docs/resource-servers.md")).unwrap();
    assert!(
        page.contains(&format!("```js\n{code}```")),
        "docs/resource-servers.md's jose example differs from verify_jose.mjs"
    );
}
