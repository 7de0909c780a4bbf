//! Test fixtures: a private `redis-server` per test, and the real issuer on a random port.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use latchkey::clock::Clock;
use latchkey::config::Config;
use latchkey::credentials::{Password, PasswordHasher};
use latchkey::keys::files;
use latchkey::startup::Application;
use latchkey::store::{self, SharedStore, User};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery staple";

/// A `redis-server` of this test's own: loopback, a free port, a temporary directory, no
/// persistence. Killed on drop; `kill` and `restart` simulate outages.
pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        // The port is free when picked but could be taken before redis binds it: retry, bounded.
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                dir: tempfile::tempdir().unwrap(),
                child: None,
            };
            if server.launch() {
                return server;
            }
        }
        panic!("could not start redis-server; is it installed?");
    }

    fn launch(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut conn) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port (empty: persistence is off).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.launch(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// SIGSTOP / SIGCONT: a stalled server keeps its connections but answers nothing.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Redis,
    /// Three masters of a Redis Cluster of the test's own.
    RedisCluster,
}

/// A Redis Cluster of the test's own: `masters` servers with `--cluster-enabled yes` on free
/// loopback ports under 55535 (each one's bus listens on port + 10000), joined by
/// `redis-cli --cluster create`. Killed on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    _dir: TempDir,
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..200 {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let candidate = 20_000 + port % 25_000;
        if TcpListener::bind(("127.0.0.1", candidate)).is_ok()
            && TcpListener::bind(("127.0.0.1", candidate + 10_000)).is_ok()
        {
            return candidate;
        }
    }
    panic!("no free port pair for a cluster node");
}

impl RedisCluster {
    pub fn start(masters: usize) -> RedisCluster {
        Self::start_with_replicas(masters, 0)
    }

    /// `masters` masters, each with `replicas` replicas.
    pub fn start_with_replicas(masters: usize, replicas: usize) -> RedisCluster {
        let nodes_total = masters * (1 + replicas);
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            children: Vec::new(),
            _dir: dir,
        };
        for _ in 0..nodes_total {
            let port = free_cluster_port();
            let node_dir = cluster._dir.path().join(port.to_string());
            std::fs::create_dir(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be on PATH");
            cluster.ports.push(port);
            cluster.children.push(child);
        }
        for port in &cluster.ports {
            wait_for_ping(*port);
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli must be on PATH");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        // Every node must agree the cluster is up (slots assigned, gossip settled).
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in &cluster.ports {
            loop {
                let info: String = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                    .unwrap()
                    .get_connection()
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query(&mut c))
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not come up");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// The port of a node that is a replica now.
    pub fn a_replica(&self) -> u16 {
        *self
            .ports
            .iter()
            .find(|port| {
                let role: Vec<redis::Value> =
                    redis::Client::open(format!("redis://127.0.0.1:{port}"))
                        .unwrap()
                        .get_connection()
                        .and_then(|mut c| redis::cmd("ROLE").query(&mut c))
                        .unwrap_or_default();
                matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"slave")
            })
            .expect("no replica in the cluster")
    }

    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

fn wait_for_ping(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            && let Ok(mut conn) = client.get_connection()
            && redis::cmd("PING").query::<String>(&mut conn).is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a test may change in the generated config before the app starts.
pub struct TestConfig {
    pub text: String,
    pub dir: PathBuf,
}

impl TestConfig {
    /// Listens on a free port of its own and makes `http://127.0.0.1:PORT` the issuer, for tests
    /// whose clients follow the URLs discovery gives (browsers, relying-party libraries).
    /// Returns the issuer URL.
    pub fn issuer_on_own_port(&mut self) -> String {
        let port = free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        self.text = self
            .text
            .replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            )
            .replace(
                "issuer = \"http://127.0.0.1\"",
                &format!("issuer = \"{issuer}\""),
            );
        issuer
    }

    /// Sets `key = value` (given as one line) in `[section]`, replacing the key's line if any.
    pub fn set(&mut self, section: &str, line: &str) {
        let header = format!("[{section}]\n");
        let start = self.text.find(&header).unwrap() + header.len();
        let end = self.text[start..]
            .find("\n[")
            .map_or(self.text.len(), |i| start + i + 1);
        let key = line.split('=').next().unwrap().trim();
        let body: Vec<&str> = self.text[start..end]
            .lines()
            .filter(|l| l.split('=').next().unwrap().trim() != key)
            .collect();
        let replaced = format!("{line}\n{}\n", body.join("\n"));
        self.text.replace_range(start..end, &replaced);
    }

    /// Appends a [[keys]] entry, generating its key file unless it exists.
    pub fn add_key(
        &mut self,
        kid: &str,
        alg: &str,
        not_before: &str,
        not_after: &str,
        extra: &str,
    ) {
        let path = self.dir.join(format!("{kid}.pem"));
        if !path.exists() {
            let alg = latchkey::config::Alg::parse(alg).unwrap();
            files::write_private_pem(&path, &files::generate(alg, 2048).unwrap()).unwrap();
        }
        self.text.push_str(&format!(
            "\n[[keys]]\nkid = \"{kid}\"\nalg = \"{alg}\"\npath = \"{}\"\nnot_before = \"{not_before}\"\nnot_after = \"{not_after}\"\n{extra}\n",
            path.display()
        ));
    }
}

pub fn base_config(dir: &Path, store_url: &str) -> TestConfig {
    let text = format!(
        r#"issuer = "http://127.0.0.1"
listen = "127.0.0.1:0"

[tokens]
access_ttl = "15m"
refresh_ttl = "30d"
refresh_idle_ttl = "7d"
reuse_grace = "10s"
leeway = "30s"
audience = ["api"]

[store]
url = "{store_url}"

[jwks]
max_age = "5m"

[passwords]
memory_kib = 64
iterations = 1
parallelism = 1

[limits]
# Tests refuse many tokens from one address; the limit has tests of its own.
failed_token_requests_per_ip = 1000000

[metrics]
# Off by default; the tests scrape the main listener unless they test the metrics listener.
on_main_listener = true
"#
    );
    let mut config = TestConfig {
        text,
        dir: dir.to_owned(),
    };
    config.add_key(
        "test-es",
        "ES256",
        "2020-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "",
    );
    config
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: Clock,
    /// A second handle on the same store, for arranging and inspecting.
    pub store: SharedStore,
    pub hasher: PasswordHasher,
    pub config_text: String,
    pub redis: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
    pub dir: TempDir,
    /// The config file the server watches (reloads within ~100 ms of a change).
    pub config_path: PathBuf,
    pub flows: actix_web::web::Data<latchkey::flows::Flows>,
    /// `http://127.0.0.1:PORT` of the metrics listener, when `[metrics] listen` is set.
    pub metrics_address: Option<String>,
    handle: actix_web::dev::ServerHandle,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Backend::Embedded, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut TestConfig)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let redis = (backend == Backend::Redis).then(RedisServer::start);
    let cluster = (backend == Backend::RedisCluster).then(|| RedisCluster::start(3));
    let url = match (&redis, &cluster) {
        (Some(r), _) => r.url(),
        (_, Some(c)) => c.url(),
        _ => format!("sqlite://{}", dir.path().join("latchkey.db").display()),
    };
    let mut config = base_config(dir.path(), &url);
    tweak(&mut config);
    let mut app = start(config.text, dir, redis, Clock::system()).await;
    app.cluster = cluster;
    app
}

/// Starts the issuer from config text, on a random port, with the given clock.
pub async fn start(
    text: String,
    dir: TempDir,
    redis: Option<RedisServer>,
    clock: Clock,
) -> TestApp {
    latchkey::telemetry::init_captured(tracing::level_filters::LevelFilter::WARN);
    let config = Config::parse(&text, |_| None).unwrap();
    let config_path = dir.path().join("latchkey.toml");
    std::fs::write(&config_path, &text).unwrap();
    let app = Application::build(config.clone(), clock.clone())
        .await
        .unwrap()
        .watch_config(config_path.clone(), Duration::from_millis(100));
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = app
        .metrics_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    let handle = app.handle();
    let flows = app.flows();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        clock,
        store: store::open(&config.store.url).await.unwrap(),
        hasher: PasswordHasher::new(&config.passwords).unwrap(),
        config_text: text,
        redis,
        cluster: None,
        dir,
        config_path,
        flows,
        metrics_address,
        handle,
    }
}

impl TestApp {
    /// Stops the server, keeping its store (file or Redis) and directory for a restart.
    pub async fn stop(self) -> (String, TempDir, Option<RedisServer>, Clock) {
        self.handle.stop(true).await;
        (self.config_text, self.dir, self.redis, self.clock)
    }

    /// Reloads the server's config file now, as SIGHUP would.
    pub async fn reload(&self) -> Result<Vec<String>, latchkey::reload::ReloadError> {
        latchkey::reload::reload(
            self.flows.state(),
            self.flows.store().as_ref(),
            self.flows.clock(),
            &self.config_path,
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A user holding `scopes`.
    pub async fn add_user_with_scopes(&self, username: &str, scopes: &[&str]) -> User {
        let user = self.add_user(username, PASSWORD).await;
        let attributes = latchkey::store::UserAttributes {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(
            self.store
                .set_user_attributes(&user.id, &attributes)
                .await
                .unwrap()
        );
        User {
            scopes: attributes.scopes,
            ..user
        }
    }

    pub async fn add_user(&self, username: &str, password: &str) -> User {
        let user = self.user_record(username, password).await;
        self.store.create_user(&user).await.unwrap();
        user
    }

    /// A new user's record, with `password` hashed as the server expects, not yet stored.
    pub async fn user_record(&self, username: &str, password: &str) -> User {
        User {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_owned(),
            password_hash: self
                .hasher
                .hash(&Password::new(password.into()))
                .await
                .unwrap(),
            disabled: false,
            created_at: self.clock.now_ms(),
            epoch: 0,
            scopes: Vec::new(),
            email: None,
            email_verified: false,
            name: None,
            preferred_username: None,
        }
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.post_json(
            "/auth/login",
            &json!({"username": username, "password": password}),
        )
        .await
    }

    /// Logs in and returns the token response; panics unless 200.
    pub async fn login_ok(&self, username: &str) -> Value {
        let response = self.login(username, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/auth/refresh", &json!({"refresh_token": refresh_token}))
            .await
    }

    pub async fn logout(&self, refresh_token: &str) -> Response {
        self.post_json("/auth/logout", &json!({"refresh_token": refresh_token}))
            .await
    }

    pub async fn userinfo(&self, access_token: &str) -> Response {
        self.client
            .get(self.url("/auth/userinfo"))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }
}

/// An argon2id hash of `secret` at the tests' cheap cost, for `secret_hash` in `[[clients]]`.
pub async fn hash(secret: &str) -> String {
    let hasher = PasswordHasher::new(&latchkey::config::PasswordSettings {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
        max_concurrent: 1,
    })
    .unwrap();
    hasher.hash(&Password::new(secret.into())).await.unwrap()
}

/// Asserts an RFC 6749 error body with `code` and the given status.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}

pub fn text(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
        .to_owned()
}

/// The claims of a JWT, decoded without verification.
pub fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Signs `claims` under `header` with the issuer's own key file `test-es.pem`: a token the
/// issuer could have issued, with whatever claims a test needs.
pub fn sign_with_issuer_key(
    app: &TestApp,
    header: &jsonwebtoken::Header,
    claims: &Value,
) -> String {
    let der = files::read_private_der(&app.dir.path().join("test-es.pem"), None).unwrap();
    jsonwebtoken::encode(
        header,
        claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&der),
    )
    .unwrap()
}

/// Signs `claims` under an arbitrary JSON `header` (fields jsonwebtoken's Header cannot carry)
/// with the issuer's ES256 key.
pub fn sign_raw_with_issuer_key(app: &TestApp, header: &Value, claims: &Value) -> String {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let der = files::read_private_der(&app.dir.path().join("test-es.pem"), None).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).unwrap();
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = pair
        .sign(&aws_lc_rs::rand::SystemRandom::new(), signed.as_bytes())
        .unwrap();
    format!("{signed}.{}", b64(signature.as_ref()))
}

/// An RFC 9068 header (`typ: at+jwt`) with `alg` and `kid`.
pub fn at_header(alg: jsonwebtoken::Algorithm, kid: &str) -> jsonwebtoken::Header {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.into());
    header.typ = Some("at+jwt".into());
    header
}

/// `latchkey serve` as a real process (the binary under test), on a free loopback port.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub address: String,
}

impl ServeProcess {
    /// Starts and waits until `/readyz` answers 200. A port taken between picking and binding
    /// makes the process exit; then another port is tried (bounded).
    pub async fn start(config: &Path) -> ServeProcess {
        Self::start_logging(config, "warn", None).await
    }

    /// As [`ServeProcess::start`], logging at `filter` (`LATCHKEY_LOG`) into `log` (appended to
    /// across start attempts) when given.
    pub async fn start_logging(config: &Path, filter: &str, log: Option<&Path>) -> ServeProcess {
        Self::start_with_env(config, filter, log, &[]).await
    }

    /// As [`ServeProcess::start_logging`], with these environment variables set.
    pub async fn start_with_env(
        config: &Path,
        filter: &str,
        log: Option<&Path>,
        env: &[(&str, &str)],
    ) -> ServeProcess {
        for _ in 0..3 {
            let port = free_port();
            let stderr = match log {
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .unwrap(),
                ),
                None => Stdio::null(),
            };
            let mut child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
                .args(["serve", "-c"])
                .arg(config)
                .env("LATCHKEY_LISTEN", format!("127.0.0.1:{port}"))
                .env("LATCHKEY_LOG", filter)
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap();
            let address = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(r) = reqwest::get(format!("{address}/readyz")).await
                    && r.status() == StatusCode::OK
                {
                    return ServeProcess { child, address };
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "latchkey serve did not become ready"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("latchkey serve exited at start three times");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush or finish anything.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGHUP: reload the config now.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `latchkey` binary with `args` and `-c config`, quiet logs.
pub fn latchkey(args: &[&str], config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command
        .args(args)
        .arg("-c")
        .arg(config)
        .env("LATCHKEY_LOG", "warn");
    command
}

/// Runs `command` with `stdin` written to it, collecting its output.
pub fn run_with_stdin(mut command: Command, stdin: &str) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Logins (as `alice`) and refreshes by `clients` clients at once until `until`: a 503 must carry
/// `Retry-After` and is retried with the same token; a refusal starts over with a login. Every
/// status seen, counted.
pub async fn burst(
    app: &std::sync::Arc<TestApp>,
    clients: usize,
    until: Instant,
) -> std::collections::BTreeMap<u16, usize> {
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let app = app.clone();
        running.spawn(async move {
            let mut seen: std::collections::BTreeMap<u16, usize> =
                std::collections::BTreeMap::new();
            let mut token: Option<String> = None;
            for _ in 0..5_000 {
                if Instant::now() > until {
                    break;
                }
                let response = match &token {
                    Some(t) => app.refresh(t).await,
                    None => app.login("alice", PASSWORD).await,
                };
                let status = response.status();
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    assert!(
                        response.headers().contains_key("retry-after"),
                        "503 without Retry-After"
                    );
                }
                *seen.entry(status.as_u16()).or_default() += 1;
                token = match status {
                    StatusCode::OK => response
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .map(|v| text(&v, "refresh_token")),
                    // Retry the same token after an outage; start over after a refusal.
                    StatusCode::SERVICE_UNAVAILABLE => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        token
                    }
                    _ => None,
                };
            }
            seen
        });
    }
    let mut all = std::collections::BTreeMap::new();
    for seen in running.join_all().await {
        for (status, n) in seen {
            *all.entry(status).or_default() += n;
        }
    }
    all
}

/// A revocation-log note for a revocation a test makes directly on the store, at the wall
/// clock's now, kept for 15 minutes.
pub fn note(reason: latchkey::store::RevocationReason) -> latchkey::store::LogNote {
    let at = latchkey::clock::system_ms();
    latchkey::store::LogNote {
        reason,
        at,
        keep_until: at + 15 * 60 * 1000,
    }
}
