//! Reaching Redis as operators run it: TLS (`rediss://`) with a CA made here, and ACL users with
//! the password out of the URL (from a file or the environment), never logged.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tempfile::TempDir;

use crate::helpers::{PASSWORD, TestApp, base_config, free_port, start};

/// A `redis-server` with the given arguments on a free loopback port, killed on drop.
struct Redis {
    port: u16,
    child: Child,
    dir: TempDir,
}

impl Redis {
    fn start(args: impl Fn(&Path, u16) -> Vec<String>) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .args(args(dir.path(), port))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be on PATH");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Redis { port, child, dir };
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be on PATH (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA, and a server certificate it signed for `san`.
fn certificates(dir: &Path, san: &str) -> (PathBuf, PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=latchkey test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=redis",
        ],
    );
    std::fs::write(dir.join("ext"), format!("subjectAltName={san}\n")).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

fn tls_redis(san: &str) -> (Redis, PathBuf) {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path(), san);
    let redis = tls_server(&ca, &cert, &key, false);
    // The CA outlives the certificate directory: the config names it.
    let kept = redis.dir.path().join("ca.crt");
    std::fs::copy(&ca, &kept).unwrap();
    (redis, kept)
}

/// `redis-server` on TLS only, with this certificate, trusting `ca` for client certificates
/// (required when `auth_clients`).
fn tls_server(ca: &Path, cert: &Path, key: &Path, auth_clients: bool) -> Redis {
    Redis::start(|_, port| {
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca.to_str().unwrap(),
            "--tls-auth-clients",
            if auth_clients { "yes" } else { "no" },
        ]
        .map(str::to_owned)
        .to_vec()
    })
}

async fn app_on(url: &str, store_lines: &[String]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path(), url);
    for line in store_lines {
        config.set("store", line);
    }
    start(config.text, dir, None, latchkey::clock::Clock::system()).await
}

async fn wait_ready(app: &TestApp) -> StatusCode {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let status = app.get("/readyz").await.status();
        if status == StatusCode::OK || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_serves_and_refuses_a_certificate_for_another_name() {
    let (redis, ca) = tls_redis("IP:127.0.0.1,DNS:localhost");
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    let app = app_on(&url, &[format!("tls_ca_file = \"{}\"", ca.display())]).await;
    assert_eq!(wait_ready(&app).await, StatusCode::OK);
    // The test's own handle connects the same way, to arrange a user.
    let mut settings = latchkey::config::StoreSettings::clone(&app.flows.snapshot().config.store);
    settings.url = url.clone();
    let store = latchkey::store::open_configured(&settings).await.unwrap();
    store
        .create_user(&app.user_record("alice", PASSWORD).await)
        .await
        .unwrap();
    let tokens = app.login_ok("alice").await;
    let refreshed = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status(), StatusCode::OK);

    // A server whose certificate names someone else is not trusted: never ready, 503s.
    let (other, other_ca) = tls_redis("DNS:other.example");
    let app = app_on(
        &format!("rediss://127.0.0.1:{}/0", other.port),
        &[format!("tls_ca_file = \"{}\"", other_ca.display())],
    )
    .await;
    assert_eq!(wait_ready(&app).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        app.login("alice", PASSWORD).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Nor one signed by a CA latchkey was not given (the system's roots do not know it).
    let app = app_on(&format!("rediss://127.0.0.1:{}/0", redis.port), &[]).await;
    assert_eq!(wait_ready(&app).await, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_with_its_password_from_a_file_or_the_environment() {
    const SECRET: &str = "redis-acl-secret-never-logged";
    let redis = Redis::start(|_, port| {
        [
            "--port".to_owned(),
            port.to_string(),
            "--user".to_owned(),
            "default".to_owned(),
            "off".to_owned(),
            "--user".to_owned(),
            "latchkey".to_owned(),
            "on".to_owned(),
            format!(">{SECRET}"),
            "~lk:*".to_owned(),
            "+@all".to_owned(),
        ]
        .to_vec()
    });
    let url = format!("redis://latchkey@127.0.0.1:{}/0", redis.port);
    let secret_file = redis.dir.path().join("redis-password");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();

    let app = app_on(
        &url,
        &[format!("password_file = \"{}\"", secret_file.display())],
    )
    .await;
    assert_eq!(wait_ready(&app).await, StatusCode::OK);
    let settings = app.flows.snapshot().config.store.clone();
    let store = latchkey::store::open_configured(&settings).await.unwrap();
    store
        .create_user(&app.user_record("alice", PASSWORD).await)
        .await
        .unwrap();
    assert_eq!(app.login("alice", PASSWORD).await.status(), StatusCode::OK);
    // The settings never print the password.
    assert!(!format!("{settings:?}").contains(SECRET));

    // From the environment, as LATCHKEY_STORE_PASSWORD sets it.
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path(), &url);
    let from_env = latchkey::config::Config::parse(&config.text, |name| {
        (name == "LATCHKEY_STORE_PASSWORD").then(|| SECRET.to_owned())
    })
    .unwrap();
    assert!(!format!("{from_env:?}").contains(SECRET));
    let store = latchkey::store::open_configured(&from_env.store)
        .await
        .unwrap();
    assert!(store.user_by_name("alice").await.unwrap().is_some());

    // A wrong password: not ready, and the error names no secret.
    let wrong = app_on(&url, &["password = \"wrong\"".to_owned()]).await;
    assert_eq!(wait_ready(&wrong).await, StatusCode::SERVICE_UNAVAILABLE);
    let error = latchkey::store::open_configured(&latchkey::config::StoreSettings {
        redis: latchkey::config::RedisOptions {
            password: Some("wrong".into()),
            ..Default::default()
        },
        ..settings
    })
    .await
    .unwrap()
    .ping()
    .await
    .unwrap_err();
    assert!(!error.to_string().contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_client_certificate_where_the_server_requires_one() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path(), "IP:127.0.0.1");
    // A client certificate from the same CA.
    openssl(
        certs.path(),
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=latchkey",
        ],
    );
    // X.509 v3 (extensions make it one): TLS libraries refuse v1 certificates.
    std::fs::write(
        certs.path().join("client.ext"),
        "extendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        certs.path(),
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.crt",
            "-days",
            "2",
            "-extfile",
            "client.ext",
        ],
    );
    let redis = tls_server(&ca, &cert, &key, true);
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    let with_certificate = app_on(
        &url,
        &[
            format!("tls_ca_file = \"{}\"", ca.display()),
            format!(
                "tls_cert_file = \"{}\"",
                certs.path().join("client.crt").display()
            ),
            format!(
                "tls_key_file = \"{}\"",
                certs.path().join("client.key").display()
            ),
        ],
    )
    .await;
    assert_eq!(wait_ready(&with_certificate).await, StatusCode::OK);
    let without = app_on(&url, &[format!("tls_ca_file = \"{}\"", ca.display())]).await;
    assert_eq!(wait_ready(&without).await, StatusCode::SERVICE_UNAVAILABLE);
}
