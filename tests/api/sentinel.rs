//! `redis+sentinel://`: a master, a replica and a Sentinel of the test's own. The master dies in
//! the middle of a refresh loop; the Sentinel promotes the replica; every answer meanwhile is
//! 200, 401 (a rotation the old master acknowledged but had not yet replicated) or 503 with
//! `Retry-After`, and service resumes by itself on the new master.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{PASSWORD, TestApp, base_config, burst, free_port, start, text};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_node(dir: &std::path::Path, port: u16, extra: &[&str]) -> Node {
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir).unwrap();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&node_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be on PATH");
    wait_for(port);
    Node(child)
}

fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn role(port: u16) -> String {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()
        .and_then(|c| c.get_connection().ok())
        .and_then(|mut c| redis::cmd("ROLE").query::<Vec<redis::Value>>(&mut c).ok())
        .and_then(|r| match r.first() {
            Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

/// A master, its replica and one Sentinel watching them, and latchkey on the Sentinel with the
/// user `alice`, whose account the replica has acknowledged.
struct Failover {
    master: Option<Node>,
    replica_port: u16,
    _replica: Node,
    _sentinel: Node,
    app: std::sync::Arc<TestApp>,
    _dir: tempfile::TempDir,
}

impl Failover {
    async fn start() -> Failover {
        let dir = tempfile::tempdir().unwrap();
        let (master_port, replica_port, sentinel_port) = (free_port(), free_port(), free_port());
        let master = redis_node(dir.path(), master_port, &[]);
        let replica = redis_node(
            dir.path(),
            replica_port,
            &["--replicaof", "127.0.0.1", &master_port.to_string()],
        );
        let sentinel_conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &sentinel_conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor lk 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds lk 1000\n\
                 sentinel failover-timeout lk 5000\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let sentinel = Node(
            Command::new("redis-server")
                .arg(&sentinel_conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for(sentinel_port);
        // The replica is in sync before the test relies on it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while role(replica_port) != "slave" {
            assert!(Instant::now() < deadline, "the replica did not attach");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let app_dir = tempfile::tempdir().unwrap();
        let url = format!("redis+sentinel://127.0.0.1:{sentinel_port}/lk");
        let mut config = base_config(app_dir.path(), &url);
        // The loops log in again after every lost session; only the store is under test here.
        config.set("limits", "login_attempts_per_ip = 1000000");
        let app = start(config.text, app_dir, None, latchkey::clock::Clock::system()).await;
        app.add_user("alice", PASSWORD).await;
        // The account is on the replica before the master dies (sessions may not be: that is
        // what asynchronous replication risks, and why a 401 is an allowed answer).
        let mut on_master = redis::Client::open(format!("redis://127.0.0.1:{master_port}"))
            .unwrap()
            .get_connection()
            .unwrap();
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(5_000)
            .query(&mut on_master)
            .unwrap();
        assert_eq!(acked, 1, "the replica did not acknowledge the account");
        Failover {
            master: Some(master),
            replica_port,
            _replica: replica,
            _sentinel: sentinel,
            app: std::sync::Arc::new(app),
            _dir: dir,
        }
    }

    /// SIGKILLs the master and waits until the Sentinel has promoted the replica.
    async fn kill_the_master(&mut self) {
        drop(self.master.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        while role(self.replica_port) != "master" {
            assert!(
                Instant::now() < deadline,
                "the sentinel did not promote the replica"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_during_refreshes_answers_only_200_401_or_503_and_resumes() {
    let mut failover = Failover::start().await;
    let app = failover.app.clone();

    let looping = tokio::spawn({
        let app = app.clone();
        async move { burst(&app, 1, Instant::now() + Duration::from_secs(12)).await }
    });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    failover.kill_the_master().await;
    let seen = looping.await.unwrap();
    assert!(
        seen.keys().all(|s| [200, 401, 503].contains(s)),
        "unexpected answers: {seen:?}"
    );
    assert!(
        seen.contains_key(&503),
        "the failover went unnoticed: {seen:?}"
    );
    // Resumed by itself on the new master.
    let tokens = app.login_ok("alice").await;
    assert_eq!(
        app.refresh(&text(&tokens, "refresh_token")).await.status(),
        StatusCode::OK
    );
}

/// After a failover the first requests may be logins only: the throttle's own connection must
/// find the new master too, not only the store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_alone_find_the_new_master_after_a_sentinel_failover() {
    let mut failover = Failover::start().await;
    let app = failover.app.clone();
    assert_eq!(app.login("alice", PASSWORD).await.status(), StatusCode::OK);
    failover.kill_the_master().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.login("alice", PASSWORD).await.status();
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            Instant::now() < deadline,
            "logins never reached the new master"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
