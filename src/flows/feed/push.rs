//! Push delivery (RFC 8935): each instance pushes the events of push streams to their receivers'
//! URLs, one `POST` per Security Event Token (`Content-Type: application/secevent+jwt`). A
//! stream is pushed by one instance at a time (a lease on the shared store); its events are
//! acknowledged by a 202 and stay due otherwise, so a receiver that is down gets them when it is
//! back, for as long as the revocation log keeps them. Targets are only URLs listed in
//! `[feed] push_endpoints`, and redirects are never followed.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::{PUSH_STREAMS, Stream, StreamStatus, acknowledge, stream_key};
use crate::flows::Flows;

/// Events pushed per stream per round.
const BATCH: usize = 100;
/// Push streams served per round, at most.
const MAX_STREAMS: usize = 1000;
/// How often due events are looked for when no revocation wakes the pusher (retries).
const ROUND: Duration = Duration::from_secs(2);
/// A stream's lease: longer than a round of `BATCH` pushes can take with `outbound`'s timeout.
const LEASE_MS: i64 = 30_000;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How one push went.
enum Pushed {
    /// 202 (or another 2xx): acknowledged.
    Delivered,
    /// 400: the receiver refused this event for good (RFC 8935 §2.3); it is not sent again.
    Refused,
    /// Anything else: the stream waits and tries again.
    Failed,
}

impl Flows {
    /// Pushes due events forever, while the config lists push endpoints.
    pub async fn push_forever(&self) {
        let Some(client) = crate::outbound::http_client() else {
            return;
        };
        let mut backoff: HashMap<String, (Instant, Duration)> = HashMap::new();
        let mut latest = None;
        loop {
            if self.snapshot().config.feed.push_endpoints.is_empty() {
                latest = None;
                tokio::time::sleep(ROUND).await;
                continue;
            }
            // Subscribed only while pushing: the log watch reads the log while anyone listens.
            let watch = latest.get_or_insert_with(|| self.log_watch.latest.subscribe());
            if let Err(e) = self.push_round(&client, &mut backoff).await {
                tracing::debug!(error = %e, "revocation feed push round failed");
            }
            tokio::select! {
                _ = watch.changed() => {}
                _ = tokio::time::sleep(ROUND) => {}
            }
        }
    }

    async fn push_round(
        &self,
        client: &reqwest::Client,
        backoff: &mut HashMap<String, (Instant, Duration)>,
    ) -> Result<(), crate::flows::FlowError> {
        let now = self.clock.now_ms();
        let ids: Vec<String> = self
            .store
            .record(PUSH_STREAMS, now)
            .await?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        backoff.retain(|id, _| ids.contains(id));
        for id in ids.into_iter().take(MAX_STREAMS) {
            if backoff
                .get(&id)
                .is_some_and(|(until, _)| *until > Instant::now())
            {
                continue;
            }
            let lease = format!("ssf:push-lease:{id}");
            let counters = self.store.shared_counters();
            if let Some(counters) = &counters
                && !counters.claim(&lease, LEASE_MS).await?
            {
                continue;
            }
            let result = self.push_stream(client, &id).await;
            if let Some(counters) = &counters {
                let _ = counters.remove(&lease).await;
            }
            match result {
                Ok(true) => {
                    backoff.remove(&id);
                }
                Ok(false) => {
                    let wait = backoff
                        .get(&id)
                        .map_or(FIRST_BACKOFF, |(_, w)| (*w * 2).min(MAX_BACKOFF));
                    backoff.insert(id, (Instant::now() + wait, wait));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Pushes one stream's due events; `false` when its receiver failed and it must wait.
    async fn push_stream(
        &self,
        client: &reqwest::Client,
        id: &str,
    ) -> Result<bool, crate::flows::FlowError> {
        let Some(raw) = self
            .store
            .record(&stream_key(id), self.clock.now_ms())
            .await?
        else {
            return Ok(true);
        };
        let mut stream: Stream =
            serde_json::from_str(&raw).map_err(crate::flows::FlowError::internal)?;
        let Some(target) = stream.push.clone() else {
            return Ok(true);
        };
        if stream.status != StreamStatus::Enabled {
            return Ok(true);
        }
        let snapshot = self.snapshot();
        // A target the config no longer allows gets nothing.
        if !snapshot.config.feed.allows_push_to(&target.endpoint_url) {
            return Ok(true);
        }
        let (outgoing, _, mut changed) = self.collect(&mut stream, BATCH).await?;
        let mut healthy = true;
        for event in outgoing {
            let token = self.sign_event(&snapshot, &stream, &event)?;
            let mut request = client
                .post(&target.endpoint_url)
                .header("content-type", "application/secevent+jwt")
                .header("accept", "application/json")
                .body(token);
            if let Some(header) = &target.authorization_header {
                request = request.header("authorization", header);
            }
            let pushed = match request.send().await {
                Ok(answer) if answer.status().is_success() => Pushed::Delivered,
                Ok(answer) if answer.status() == reqwest::StatusCode::BAD_REQUEST => {
                    // RFC 8935 §2.4: `{"err", "description"}`; logged, never echoed further.
                    let body = answer.text().await.unwrap_or_default();
                    let err = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["err"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    tracing::warn!(event = "feed.push_refused", receiver = %stream.receiver, stream_id = %id, jti = %event.jti, err = %err.chars().take(64).collect::<String>(), "a receiver refused a pushed event");
                    Pushed::Refused
                }
                Ok(answer) => {
                    tracing::info!(event = "feed.push_failed", receiver = %stream.receiver, stream_id = %id, status = answer.status().as_u16(), "a push was not accepted; retrying later");
                    Pushed::Failed
                }
                Err(e) => {
                    tracing::info!(event = "feed.push_failed", receiver = %stream.receiver, stream_id = %id, error = %crate::telemetry::error_chain(&e), "a push did not reach its receiver; retrying later");
                    Pushed::Failed
                }
            };
            match pushed {
                Pushed::Delivered => {
                    self.metrics.feed_push("delivered");
                    changed |= acknowledge(&mut stream, &event.jti);
                }
                Pushed::Refused => {
                    self.metrics.feed_push("refused");
                    changed |= acknowledge(&mut stream, &event.jti);
                }
                Pushed::Failed => {
                    self.metrics.feed_push("failed");
                    healthy = false;
                    break;
                }
            }
        }
        // Moves the cursor past what is now acknowledged (nothing is collected for sending).
        let (_, _, moved) = self.collect(&mut stream, 0).await?;
        if changed || moved {
            self.save_stream(&stream).await?;
        }
        Ok(healthy)
    }
}
