//! Messages the issuer sends to other servers: back-channel logout tokens (OpenID Connect
//! Back-Channel Logout 1.0 §2.5), POSTed to the `backchannel_logout_uri` of each client whose
//! session ended.
//!
//! A sign-out never waits for a relying party: notices go to a bounded queue and one task
//! delivers them, a few at a time, each with a timeout and a bounded number of retries (on a
//! network error, 429 or 5xx). A full queue drops the notice with a warning and a count
//! (`latchkey_backchannel_logouts_total{outcome="dropped"}`) rather than hold memory without
//! bound. The targets are only URIs an operator registered in the config, and redirects are
//! never followed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::metrics::Metrics;

/// Notices waiting for delivery at most; more are dropped.
const QUEUE: usize = 1024;
/// Deliveries in flight at once.
const PARALLEL: usize = 16;
/// Tries per notice: the first and three retries.
const ATTEMPTS: u32 = 4;
/// Before the first retry; doubled for each next one.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// One delivery's limit, connecting included.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A logout token on its way to a client.
#[derive(Debug)]
pub struct LogoutNotice {
    pub client_id: String,
    pub uri: String,
    pub logout_token: String,
}

/// How a notice ended, as the metric counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// The client answered 4xx (not 429): retrying would not help.
    Refused,
    GaveUp,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Refused => "refused",
            Outcome::GaveUp => "gave_up",
        }
    }
}

/// The sending side, held by the flows; [`Outbox::deliver_forever`] runs the queue.
pub struct Outbox {
    sender: mpsc::Sender<LogoutNotice>,
    receiver: Mutex<Option<mpsc::Receiver<LogoutNotice>>>,
    stop: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Outbox {
    pub fn new(metrics: Arc<Metrics>) -> Outbox {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Outbox {
            sender,
            receiver: Mutex::new(Some(receiver)),
            stop: Arc::new(Notify::new()),
            metrics,
        }
    }

    /// Queues a notice without waiting; a full queue drops it (counted and logged).
    pub fn send(&self, notice: LogoutNotice) {
        if let Err(e) = self.sender.try_send(notice) {
            let notice = match e {
                mpsc::error::TrySendError::Full(n) | mpsc::error::TrySendError::Closed(n) => n,
            };
            self.metrics.backchannel_logout("dropped");
            tracing::warn!(
                event = "backchannel_logout.dropped",
                client_id = %notice.client_id,
                "back-channel logout queue full: notice dropped"
            );
        }
    }

    /// Delivers queued notices until [`Outbox::finish`]; then delivers what is left. Runs once
    /// per process (a second call returns at once).
    pub async fn deliver_forever(&self) {
        let Some(mut receiver) = self.receiver.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let Some(client) = http_client() else { return };
        let slots = Arc::new(Semaphore::new(PARALLEL));
        let mut running = JoinSet::new();
        loop {
            let notice = tokio::select! {
                notice = receiver.recv() => notice,
                () = self.stop.notified() => None,
            };
            let Some(notice) = notice else { break };
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let (client, metrics) = (client.clone(), Arc::clone(&self.metrics));
            running.spawn(async move {
                let outcome = deliver(&client, &notice).await;
                metrics.backchannel_logout(outcome.label());
                drop(slot);
            });
            while running.try_join_next().is_some() {}
        }
        receiver.close();
        while let Some(notice) = receiver.recv().await {
            let (client, metrics) = (client.clone(), Arc::clone(&self.metrics));
            running.spawn(async move {
                metrics.backchannel_logout(deliver(&client, &notice).await.label());
            });
        }
        while running.join_next().await.is_some() {}
    }

    /// Asks [`Outbox::deliver_forever`] to deliver what is queued and return.
    pub fn finish(&self) {
        self.stop.notify_one();
    }
}

/// Delivers `notices` at once (for the CLI, which ends sessions apart from a server), waiting
/// for every retry. Returns how many were delivered.
pub async fn deliver_now(notices: Vec<LogoutNotice>) -> usize {
    let Some(client) = http_client() else {
        return 0;
    };
    let mut running = JoinSet::new();
    for notice in notices {
        let client = client.clone();
        running.spawn(async move { deliver(&client, &notice).await });
    }
    let mut delivered = 0;
    while let Some(outcome) = running.join_next().await {
        delivered += usize::from(matches!(outcome, Ok(Outcome::Delivered)));
    }
    delivered
}

/// The client for every request the issuer makes to another server: bounded in time, and never
/// following a redirect (the target is only ever a URL an operator registered).
pub(crate) fn http_client() -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("latchkey/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(
            |e| tracing::error!(error = %e, "no HTTP client: back-channel logouts and feed pushes are not sent"),
        )
        .ok()
}

/// One notice, tried up to [`ATTEMPTS`] times.
async fn deliver(client: &reqwest::Client, notice: &LogoutNotice) -> Outcome {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        // A JWT is base64url and dots: nothing in it needs form encoding.
        let sent = client
            .post(&notice.uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cache-control", "no-store")
            .body(format!("logout_token={}", notice.logout_token))
            .send()
            .await;
        let why = match sent {
            Ok(response) if response.status().is_success() => return Outcome::Delivered,
            Ok(response)
                if response.status().as_u16() == 429 || response.status().is_server_error() =>
            {
                format!("answered {}", response.status().as_u16())
            }
            Ok(response) => {
                tracing::warn!(
                    event = "backchannel_logout.refused",
                    client_id = %notice.client_id,
                    status = response.status().as_u16(),
                    "the client refused a back-channel logout"
                );
                return Outcome::Refused;
            }
            // The error names the URI and the cause, never the token (it is in the body).
            Err(e) => e.without_url().to_string(),
        };
        tracing::warn!(
            event = "backchannel_logout.retry",
            client_id = %notice.client_id,
            attempt,
            why = %why,
            "a back-channel logout did not go through"
        );
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    Outcome::GaveUp
}
