//! The signing-key lifecycle: hot reload (applied, refused), revocation, encrypted key files,
//! and the `keys list` / `config check` commands.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use latchkey::keys::files;
use latchkey::reload::ReloadError;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, PASSWORD, TestApp, assert_error, spawn_app_with, text};

async fn published_kids(app: &TestApp) -> Vec<String> {
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (bounded) until the JWKS publishes exactly `kids`.
async fn wait_for_kids(app: &TestApp, kids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = published_kids(app).await;
        if now == kids {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "JWKS still publishes {now:?}, expected {kids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn key_entry(dir: &Path, kid: &str, alg: &str, not_before: &str, extra: &str) -> String {
    let path = dir.join(format!("{kid}.pem"));
    if !path.exists() {
        let alg = latchkey::config::Alg::parse(alg).unwrap();
        files::write_private_pem(&path, &files::generate(alg, 2048).unwrap()).unwrap();
    }
    format!(
        "\n[[keys]]\nkid = \"{kid}\"\nalg = \"{alg}\"\npath = \"{}\"\nnot_before = \"{not_before}\"\nnot_after = \"2100-01-01T00:00:00Z\"\n{extra}\n",
        path.display()
    )
}

#[tokio::test]
async fn a_changed_config_file_is_applied_without_a_restart() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    let before = app.get("/.well-known/jwks.json").await;
    let etag = before.headers()["etag"].to_str().unwrap().to_owned();

    let next = key_entry(
        app.dir.path(),
        "next-rs",
        "RS256",
        "2099-01-01T00:00:00Z",
        "",
    );
    std::fs::write(&app.config_path, format!("{}{next}", app.config_text)).unwrap();

    wait_for_kids(&app, &["test-es", "next-rs"]).await;
    let after = app.get("/.well-known/jwks.json").await;
    assert_ne!(after.headers()["etag"].to_str().unwrap(), etag);
}

#[tokio::test]
async fn a_bad_config_is_refused_and_the_running_one_stays() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let dir = app.dir.path();
    let missing = format!(
        "{}\n[[keys]]\nkid = \"ghost\"\nalg = \"ES256\"\npath = \"{}\"\nnot_before = \"2099-01-01T00:00:00Z\"\nnot_after = \"2100-01-01T00:00:00Z\"\n",
        app.config_text,
        dir.join("ghost.pem").display()
    );
    let only_future = app
        .config_text
        .replace("2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z");
    let cases = [
        ("not TOML", "issuer = [".to_string()),
        (
            "unknown field",
            format!("{}\nsurprise = 1\n", app.config_text),
        ),
        ("unreadable key file", missing),
        ("no key signing now", only_future),
    ];
    for (what, text) in cases {
        std::fs::write(&app.config_path, &text).unwrap();

        let refused = app.reload().await;

        assert!(refused.is_err(), "{what}: accepted");
        if what == "no key signing now" {
            assert!(matches!(refused, Err(ReloadError::NoActiveKey)));
        }
        // Give the file watcher several polls to (wrongly) apply it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(published_kids(&app).await, ["test-es"], "{what}");
        assert_eq!(
            app.login("alice", PASSWORD).await.status(),
            StatusCode::OK,
            "{what}"
        );
    }

    // A good config afterwards is applied.
    let next = key_entry(dir, "next-es", "ES256", "2099-01-01T00:00:00Z", "");
    std::fs::write(&app.config_path, format!("{}{next}", app.config_text)).unwrap();
    wait_for_kids(&app, &["test-es", "next-es"]).await;
}

#[tokio::test]
async fn a_revoked_key_leaves_the_jwks_and_its_tokens_stop_verifying() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    app.add_user("alice", PASSWORD).await;
    let old_access = text(&app.login_ok("alice").await, "access_token");

    // Emergency: a replacement that signs from now on, and the old key pulled.
    let replacement = key_entry(
        app.dir.path(),
        "fresh-es",
        "ES256",
        "2021-01-01T00:00:00Z",
        "",
    );
    let pulled = app.config_text.replace(
        "not_after = \"2100-01-01T00:00:00Z\"\n",
        "not_after = \"2100-01-01T00:00:00Z\"\nrevoked = true\n",
    );
    std::fs::write(&app.config_path, format!("{pulled}{replacement}")).unwrap();
    wait_for_kids(&app, &["fresh-es"]).await;

    assert_error(
        app.userinfo(&old_access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let new_access = text(&app.login_ok("alice").await, "access_token");
    let header = jsonwebtoken::decode_header(&new_access).unwrap();
    assert_eq!(header.kid.as_deref(), Some("fresh-es"));
    assert_eq!(app.userinfo(&new_access).await.status(), StatusCode::OK);
}

pub(crate) fn openssl(args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .status()
        .expect("openssl must be installed");
    assert!(status.success(), "openssl {args:?}");
}

#[test]
fn encrypted_pkcs8_keys_decrypt_to_what_openssl_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &d("ec.pem"),
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &d("rsa.pem"),
    ]);
    let variants: [(&str, &[&str]); 4] = [
        ("ec.pem", &["-v2", "aes-256-cbc"]),
        ("ec.pem", &["-v2", "aes-128-cbc", "-v2prf", "hmacWithSHA1"]),
        (
            "ec.pem",
            &[
                "-v2",
                "aes-192-cbc",
                "-v2prf",
                "hmacWithSHA512",
                "-iter",
                "5000",
            ],
        ),
        (
            "rsa.pem",
            &["-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA256"],
        ),
    ];
    for (i, (plain, options)) in variants.iter().enumerate() {
        let encrypted = d(&format!("enc{i}.pem"));
        let source = d(plain);
        let mut args = vec![
            "pkcs8",
            "-topk8",
            "-in",
            &source,
            "-out",
            &encrypted,
            "-passout",
            "pass:s3cret",
        ];
        args.extend_from_slice(options);
        openssl(&args);
        let expected = files::read_private_der(&dir.path().join(plain), None).unwrap();

        let decrypted = files::read_private_der(Path::new(&encrypted), Some(b"s3cret")).unwrap();

        assert_eq!(decrypted, expected, "variant {options:?}");
        let wrong = files::read_private_der(Path::new(&encrypted), Some(b"wrong"));
        assert!(wrong.is_err() || wrong.unwrap() != expected);
        assert!(files::read_private_der(Path::new(&encrypted), None).is_err());
    }
    // scrypt is refused with a reason rather than misread.
    let scrypt = d("scrypt.pem");
    openssl(&[
        "pkcs8",
        "-topk8",
        "-in",
        &d("ec.pem"),
        "-out",
        &scrypt,
        "-passout",
        "pass:s3cret",
        "-scrypt",
    ]);
    let err = files::read_private_der(Path::new(&scrypt), Some(b"s3cret")).unwrap_err();
    assert!(err.to_string().contains("scrypt"), "{err}");
}

fn latchkey_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn config_check_and_keys_list_report_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let enc = dir.path().join("enc.pem").display().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-aes-256-cbc",
        "-pass",
        "pass:pw",
        "-out",
        &enc,
    ]);
    let mut config = crate::helpers::base_config(dir.path(), &format!("sqlite://{}", db.display()));
    config.text.push_str(&format!(
        "\n[[keys]]\nkid = \"sealed\"\nalg = \"ES256\"\npath = \"{enc}\"\nnot_before = \"2099-01-01T00:00:00Z\"\nnot_after = \"2100-02-01T00:00:00Z\"\npassphrase_env = \"LATCHKEY_TEST_SEALED_PASS\"\n"
    ));
    let path = dir.path().join("latchkey.toml");
    std::fs::write(&path, &config.text).unwrap();
    let path = path.display().to_string();

    let missing_env = latchkey_cli(&["config", "check", "-c", &path]);
    assert!(!missing_env.status.success());
    assert!(String::from_utf8_lossy(&missing_env.stderr).contains("LATCHKEY_TEST_SEALED_PASS"));

    let ok = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["config", "check", "-c", &path])
        .env("LATCHKEY_TEST_SEALED_PASS", "pw")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let list = latchkey_cli(&["keys", "list", "-c", &path]);
    assert!(list.status.success());
    let list = String::from_utf8_lossy(&list.stdout);
    let row = |kid: &str| {
        list.lines()
            .find(|l| l.starts_with(kid))
            .unwrap()
            .to_owned()
    };
    assert!(row("test-es").contains(" active "), "{list}");
    assert!(row("sealed").contains(" upcoming "), "{list}");

    // A gap in the schedule is a warning: the config serves fine, so the check passes with a
    // `warning:` line naming the gap; --strict (for CI pipelines) makes it fail.
    let gap = config
        .text
        .replace("2100-01-01T00:00:00Z", "2098-01-01T00:00:00Z");
    std::fs::write(&path, gap).unwrap();
    let check = |strict: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
        command.args(["config", "check", "-c", &path]);
        if strict {
            command.arg("--strict");
        }
        command
            .env("LATCHKEY_TEST_SEALED_PASS", "pw")
            .output()
            .unwrap()
    };
    let lenient = check(false);
    let stderr = String::from_utf8_lossy(&lenient.stderr);
    assert!(lenient.status.success(), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains(
            "warning: keys: no key signs from 2098-01-01T00:00:00Z to 2099-01-01T00:00:00Z"
        )),
        "{stderr}"
    );
    let strict = check(true);
    assert!(!strict.status.success());
    assert!(String::from_utf8_lossy(&strict.stderr).contains("refused with --strict"));

    // Unknown fields are refused with the field's name.
    std::fs::write(&path, format!("{}\nbogus = true\n", config.text)).unwrap();
    let bad = latchkey_cli(&["config", "check", "-c", &path]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bogus"));
}

#[test]
fn keys_generate_writes_a_0600_key_and_a_snippet() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().display().to_string();
    for alg in ["ES256", "RS256", "EdDSA"] {
        let out = latchkey_cli(&[
            "keys",
            "generate",
            "--alg",
            alg,
            "--kid",
            &format!("k-{alg}"),
            "--dir",
            &keys,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("[[keys]]") && stdout.contains(&format!("alg = \"{alg}\"")),
            "{stdout}"
        );
        let path = dir.path().join(format!("k-{alg}.pem"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(files::read_private_der(&path, None).is_ok());
    }
    // Never overwrites.
    let again = latchkey_cli(&[
        "keys", "generate", "--alg", "ES256", "--kid", "k-ES256", "--dir", &keys,
    ]);
    assert!(!again.status.success());
}

#[test]
fn an_rsa_key_under_2048_bits_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let weak = dir.path().join("weak.pem").display().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        &weak,
    ]);
    let mut config = crate::helpers::base_config(
        dir.path(),
        &format!("sqlite://{}", dir.path().join("l.db").display()),
    );
    config.text.push_str(&format!(
        "\n[[keys]]\nkid = \"weak\"\nalg = \"RS256\"\npath = \"{weak}\"\nnot_before = \"2099-01-01T00:00:00Z\"\nnot_after = \"2100-02-01T00:00:00Z\"\n"
    ));
    let path = dir.path().join("latchkey.toml");
    std::fs::write(&path, &config.text).unwrap();

    let checked = latchkey_cli(&["config", "check", "-c", &path.display().to_string()]);

    assert!(!checked.status.success());
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(
        stderr.contains("key weak") && stderr.contains("2048"),
        "{stderr}"
    );
}

#[tokio::test]
async fn reload_reports_the_schedule_warnings() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.add_key(
            "second-es",
            "ES256",
            "2020-06-01T00:00:00Z",
            "2100-01-01T00:00:00Z",
            "",
        );
    })
    .await;
    // Publications are recorded at start (asynchronously): wait until both keys are on record.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.store.key_publications().await.unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "publications were not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Remove "second-es" while tokens it signed may still be valid: applied, with a warning.
    let without: String = {
        let at = app.config_text.rfind("\n[[keys]]").unwrap();
        app.config_text[..at].to_string()
    };
    std::fs::write(&app.config_path, &without).unwrap();
    let warnings = app.reload().await.unwrap();

    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("keys second-es: removed from the config")),
        "{warnings:?}"
    );
    // Changing what needs a restart is reported too, and the running value kept.
    let moved = without.replace(
        "issuer = \"http://127.0.0.1\"",
        "issuer = \"http://127.0.0.2\"",
    );
    std::fs::write(&app.config_path, &moved).unwrap();
    let warnings = app.reload().await.unwrap();
    assert!(
        warnings.iter().any(|w| w.starts_with("issuer changed")),
        "{warnings:?}"
    );
    assert_eq!(app.flows.snapshot().config.issuer, "http://127.0.0.1");
}

#[tokio::test]
async fn an_edited_limits_section_applies_without_a_restart() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.set("limits", "window = \"1m\"");
        c.set("limits", "login_attempts_per_ip = 100");
        c.set("limits", "failed_logins_per_user = 100");
    })
    .await;
    app.add_user("alice", PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(app.login("alice", PASSWORD).await.status(), StatusCode::OK);
    }

    // Tightened to 2 attempts per IP and minute: the 3 already made are over it.
    let tight = app
        .config_text
        .replace("login_attempts_per_ip = 100", "login_attempts_per_ip = 2");
    std::fs::write(&app.config_path, tight).unwrap();
    let warnings = app.reload().await.unwrap();

    assert!(
        !warnings.iter().any(|w| w.contains("limits")),
        "limits reload without a restart: {warnings:?}"
    );
    assert_eq!(app.flows.snapshot().config.limits.login_attempts_per_ip, 2);
    assert_error(
        app.login("alice", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "slow_down",
    )
    .await;
}

#[tokio::test]
async fn config_check_names_restart_only_fields_that_differ_from_the_running_server() {
    let app = spawn_app_with(Backend::Embedded, |_| {}).await;
    // The server records what it runs with at start (asynchronously).
    let deadline = Instant::now() + Duration::from_secs(10);
    while app
        .store
        .get_meta(latchkey::state::RUNNING_VALUES_META)
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "running values were not recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = app.config_path.display().to_string();
    let unchanged = latchkey_cli(&["config", "check", "-c", &path]);
    assert!(unchanged.status.success());
    assert!(
        !String::from_utf8_lossy(&unchanged.stderr).contains("restart"),
        "{}",
        String::from_utf8_lossy(&unchanged.stderr)
    );

    let edited = app
        .config_text
        .replace("memory_kib = 64", "memory_kib = 128")
        .replace("access_ttl = \"15m\"", "access_ttl = \"10m\"");
    std::fs::write(&app.config_path, edited).unwrap();
    let checked = latchkey_cli(&["config", "check", "-c", &path]);

    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{stderr}");
    let restart_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("restart")).collect();
    assert_eq!(restart_lines.len(), 1, "{stderr}");
    assert!(
        restart_lines[0].contains("warning: passwords differs from the running server's"),
        "{stderr}"
    );
}

/// A file as committed, not as a walk-through may have edited it in the work tree (`git show`);
/// the work tree's copy only where there is no repository (a source archive).
fn committed(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shown = Command::new("git")
        .args(["show", &format!("HEAD:{path}")])
        .current_dir(root)
        .output();
    match shown {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout).unwrap(),
        _ => std::fs::read_to_string(root.join(path)).unwrap(),
    }
}

#[test]
fn the_shipped_dev_config_serves_the_demo_the_readme_advertises() {
    let config =
        latchkey::config::Config::parse(&committed("config/latchkey.toml"), |_| None).unwrap();
    assert!(config.demo.enabled);
    let client = config.client(&config.demo.client_id).unwrap();
    assert!(client.allowed_origins.contains(&config.issuer));
}

/// The rotation procedure of the README and docs/configuration.md, followed from the shipped
/// development config: generate the next key with the config named, paste what it prints, end
/// the current key's window where it says. The schedule is then sound: no warning at all.
#[test]
fn the_documented_rotation_works_from_the_shipped_dev_config() {
    let root = tempfile::tempdir().unwrap();
    let config_dir = root.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let shipped = committed("config/latchkey.toml");
    let config_path = config_dir.join("latchkey.toml");
    std::fs::write(&config_path, &shipped).unwrap();
    // The dev keys `serve` would generate on first start.
    for (name, alg) in [
        ("dev-es256", latchkey::config::Alg::ES256),
        ("dev-rs256", latchkey::config::Alg::RS256),
    ] {
        files::write_private_pem(
            &root.path().join(format!("keys/{name}.pem")),
            &files::generate(alg, 2048).unwrap(),
        )
        .unwrap();
    }
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(args)
            .current_dir(root.path())
            .output()
            .unwrap()
    };

    // 1. Generate the next key, naming the config.
    let generated = run(&[
        "keys",
        "generate",
        "--alg",
        "ES256",
        "--kid",
        "next-es",
        "--dir",
        "keys",
        "-c",
        "config/latchkey.toml",
    ]);
    assert!(generated.status.success());
    let printed = String::from_utf8_lossy(&generated.stdout).into_owned();
    // 2. Paste the snippet; end the current key's window where it says.
    let snippet = &printed[printed.find("[[keys]]").unwrap()..];
    assert!(
        snippet.contains("path = \"../keys/next-es.pem\""),
        "{printed}"
    );
    let instruction = printed
        .lines()
        .find(|l| l.contains("set not_after = "))
        .unwrap_or_else(|| panic!("no instruction in {printed}"));
    assert!(instruction.contains("\"dev-es256\""), "{printed}");
    let handover = instruction.split('"').nth(3).unwrap();
    let edited = shipped.replace(
        "not_after = \"2036-01-01T00:00:00Z\"",
        &format!("not_after = \"{handover}\""),
    ) + "\n"
        + snippet;
    std::fs::write(&config_path, edited).unwrap();

    // 3. (The config is deployed where the store exists: a server has run, a user was added.)
    let mut add = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["users", "add", "alice", "-c", "config/latchkey.toml"])
        .current_dir(root.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut add.stdin.take().unwrap(),
        b"correct horse battery staple\n",
    )
    .unwrap();
    assert!(add.wait().unwrap().success());
    // 4. The schedule is sound: a clean check, even with --strict, and the new key upcoming.
    let checked = run(&["config", "check", "-c", "config/latchkey.toml", "--strict"]);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let list = run(&["keys", "list", "-c", "config/latchkey.toml"]);
    let list = String::from_utf8_lossy(&list.stdout);
    let row = |kid: &str| {
        list.lines()
            .find(|l| l.starts_with(kid))
            .unwrap()
            .to_owned()
    };
    assert!(row("dev-es256").contains(" active "), "{list}");
    assert!(row("next-es").contains(" upcoming "), "{list}");
}
