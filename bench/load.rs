//! Load tool: drives login and refresh-rotation loops (or client-credentials token requests)
//! against a running latchkey on loopback and reports throughput and latency percentiles (and the
//! server's memory, given its pid).
//!
//! ```sh
//! printf 'load-test-password\n' | latchkey users add load -c CONFIG
//! cargo run --release --example load -- --url http://127.0.0.1:8080 --user load \
//!     --password load-test-password --concurrency 32 --seconds 20 --pid "$(pgrep -f 'latchkey serve')"
//! ```
//!
//! Every run is bounded by `--seconds` and `--max-requests`, and refuses non-loopback targets.
//! All clients come from one IP: raise `LATCHKEY_LIMITS_LOGIN_ATTEMPTS_PER_IP` on the server when
//! running more clients than its per-minute login allowance.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Base URL of the issuer; loopback only.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value = "load")]
    user: String,
    #[arg(long, default_value = "load-test-password")]
    password: String,
    /// Concurrent clients; each logs in once, then refreshes in a loop.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Hard cap on requests, whatever the time.
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: usize,
    /// The server's pid, to report its memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Instead of logins and refreshes: client-credentials tokens for this confidential client
    /// (its secret in --client-secret), one POST /oauth/token per request.
    #[arg(long)]
    client_id: Option<String>,
    #[arg(long, default_value = "")]
    client_secret: String,
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .strip_prefix("http://")
        .unwrap_or("")
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn memory(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    format!("RSS {} (peak {})", field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(name: &str, mut latencies: Vec<Duration>, elapsed: Duration) {
    latencies.sort_unstable();
    println!(
        "{name:<8} {:>8} requests {:>9.0}/s   p50 {:>6.2} ms   p90 {:>6.2} ms   p99 {:>6.2} ms",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(
        is_loopback(&args.url),
        "refusing a non-loopback target: {}",
        args.url
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .unwrap();
    if let Some(pid) = args.pid {
        println!("server before: {}", memory(pid));
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let budget = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(args.max_requests));
    let mut workers = tokio::task::JoinSet::new();
    // Login-and-refresh workers, unless client-credentials mode asks for its own below.
    let refresh_workers = if args.client_id.is_some() {
        0
    } else {
        args.concurrency
    };
    for _ in 0..refresh_workers {
        let (client, args_url) = (client.clone(), args.url.clone());
        let (user, password, budget) = (args.user.clone(), args.password.clone(), budget.clone());
        workers.spawn(async move {
            let take = || {
                budget
                    .fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |b| b.checked_sub(1),
                    )
                    .is_ok()
            };
            let (mut logins, mut refreshes) = (Vec::new(), Vec::new());
            let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
            let mut token: Option<String> = None;
            while Instant::now() < deadline && take() {
                let t = Instant::now();
                let (path, body) = match &token {
                    None => (
                        "/auth/login",
                        json!({"username": user, "password": password}),
                    ),
                    Some(rt) => ("/auth/refresh", json!({"refresh_token": rt})),
                };
                let response = client
                    .post(format!("{args_url}{path}"))
                    .json(&body)
                    .send()
                    .await;
                let outcome = match response {
                    Ok(r) if r.status().is_success() => {
                        r.json::<Value>().await.map_err(|e| e.to_string())
                    }
                    Ok(r) => Err(format!("{path} {}", r.status().as_u16())),
                    Err(e) if e.is_timeout() => Err(format!("{path} timeout")),
                    Err(_) => Err(format!("{path} connection")),
                };
                match outcome {
                    Ok(body) => {
                        if token.is_none() {
                            logins.push(t.elapsed())
                        } else {
                            refreshes.push(t.elapsed())
                        }
                        token = body["refresh_token"].as_str().map(str::to_owned);
                    }
                    Err(kind) => {
                        *errors.entry(kind).or_default() += 1;
                        token = None;
                        // Back off: a throttled or failing server is not hammered in a loop.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            (logins, refreshes, errors)
        });
    }
    if let Some(client_id) = &args.client_id {
        for _ in 0..args.concurrency {
            let (client, url, budget) = (client.clone(), args.url.clone(), budget.clone());
            let (id, secret) = (client_id.clone(), args.client_secret.clone());
            workers.spawn(async move {
                let mut tokens = Vec::new();
                let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
                while Instant::now() < deadline
                    && budget
                        .fetch_update(
                            std::sync::atomic::Ordering::Relaxed,
                            std::sync::atomic::Ordering::Relaxed,
                            |b| b.checked_sub(1),
                        )
                        .is_ok()
                {
                    let t = Instant::now();
                    let response = client
                        .post(format!("{url}/oauth/token"))
                        .basic_auth(&id, Some(&secret))
                        .form(&[("grant_type", "client_credentials")])
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            tokens.push(t.elapsed());
                        }
                        Ok(r) => {
                            *errors
                                .entry(format!("token {}", r.status().as_u16()))
                                .or_default() += 1
                        }
                        Err(_) => *errors.entry("token connection".into()).or_default() += 1,
                    }
                }
                (Vec::new(), tokens, errors)
            });
        }
    }
    let (mut logins, mut refreshes) = (Vec::new(), Vec::new());
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    for (l, r, e) in workers.join_all().await {
        logins.extend(l);
        refreshes.extend(r);
        for (kind, n) in e {
            *errors.entry(kind).or_default() += n;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{} clients for {:.1} s against {}",
        args.concurrency,
        elapsed.as_secs_f64(),
        args.url
    );
    report("login", logins, elapsed);
    let name = if args.client_id.is_some() {
        "tokens"
    } else {
        "refresh"
    };
    report(name, refreshes, elapsed);
    println!(
        "errors   {}",
        if errors.is_empty() {
            "0".to_string()
        } else {
            format!("{errors:?}")
        }
    );
    if let Some(pid) = args.pid {
        println!("server after: {}", memory(pid));
    }
}
