//! Hot reload: a new [`Snapshot`] of config and keys, swapped in on SIGHUP or when the config file
//! or a key file changes. A config that fails to load, names an unreadable key or leaves no key
//! signing now is refused with a log line, and the running one stays. Restart-only fields
//! (listed in [`crate::state`]) keep their running values and are reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::keys::schedule::schedule_warnings;
use crate::keys::{KeyError, KeyRing};
use crate::state::{LiveState, ReloadChanges, Snapshot, keep_restart_only_fields};
use crate::store::{LogNote, RevocationReason, SharedStore, Store};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Keys(#[from] KeyError),
    #[error("no key would sign now")]
    NoActiveKey,
}

/// Loads `path`, checks it and swaps it in. Returns the warnings of the new config: restart-only
/// fields it changed, and the key schedule checked against the shared publication history.
pub async fn reload(
    state: &LiveState,
    store: &dyn Store,
    clock: &Clock,
    path: &Path,
) -> Result<Vec<String>, ReloadError> {
    let (changes, warnings) = reload_changes(state, store, clock, path).await?;
    let mut all = changes.warnings();
    all.extend(warnings);
    Ok(all)
}

/// As [`reload`], saying which settings it applied and which it kept for a restart, apart from
/// the warnings of the schedule check. The files are read off the async runtime.
pub async fn reload_changes(
    state: &LiveState,
    store: &dyn Store,
    clock: &Clock,
    path: &Path,
) -> Result<(ReloadChanges, Vec<String>), ReloadError> {
    let running = state.current();
    let path = path.to_owned();
    let loaded = tokio::task::spawn_blocking(move || -> Result<_, ReloadError> {
        let mut config = Config::load(&path)?;
        let changes = keep_restart_only_fields(&running.config, &mut config);
        let keys = KeyRing::load(&config)?;
        Ok((config, keys, changes))
    })
    .await
    .map_err(|e| ReloadError::Config(ConfigError::one(format!("reading the config: {e}"))))?;
    let (config, keys, changes) = loaded?;
    if keys.active(clock.now_ms()).is_none() {
        return Err(ReloadError::NoActiveKey);
    }
    let running = state.current();
    let removed: Vec<String> = running
        .config
        .clients
        .iter()
        .filter(|c| config.client(&c.id).is_none())
        .map(|c| c.id.clone())
        .collect();
    let retention = config.revocation_retention();
    state.replace(Snapshot::new(config, keys));
    let mut warnings = publish_and_check(state, store, clock).await.warnings;
    for client_id in removed {
        let note = LogNote::new(&retention, RevocationReason::ClientRemoved, clock.now_ms());
        match store.revoke_client_sessions(&client_id, &note).await {
            Ok(ended) => tracing::info!(
                event = "family.revoked",
                %client_id,
                count = ended,
                cause = "client_removed",
                "sessions of a client removed from the config ended"
            ),
            // Its sessions cannot refresh anyway; each is revoked when its token is presented.
            Err(e) => warnings.push(format!(
                "the sessions of the removed client {client_id:?} could not be ended now ({}); \
                 each ends when its refresh token is next presented",
                crate::telemetry::error_chain(&e)
            )),
        }
    }
    Ok((changes, warnings))
}

/// What [`publish_and_check`] found.
#[derive(Debug)]
pub struct Published {
    pub warnings: Vec<String>,
    /// Every key's publication is on record and the schedule was checked against the history;
    /// `false` when the store did not answer (try again).
    pub complete: bool,
}

/// Records in the store that each configured key is published (so every instance and
/// `config check` share one history), then checks the schedule against that history.
pub async fn publish_and_check(state: &LiveState, store: &dyn Store, clock: &Clock) -> Published {
    let snapshot = state.current();
    let now = clock.now_ms();
    let mut warnings = Vec::new();
    let mut complete = true;
    for spec in snapshot.config.keys.iter().filter(|k| !k.revoked) {
        let until = snapshot.config.published_until(spec);
        if let Err(e) = store.record_key_publication(&spec.kid, now, until).await {
            complete = false;
            warnings.push(format!(
                "keys {}: cannot record its publication: {e}",
                spec.kid
            ));
        }
    }
    match store.key_publications().await {
        Ok(history) => warnings.extend(schedule_warnings(&snapshot.config, &history, now)),
        Err(e) => {
            complete = false;
            warnings.push(format!("keys: cannot read the publication history: {e}"));
        }
    }
    Published { warnings, complete }
}

/// What a change of the config or of any key file it names changes.
fn fingerprint(path: &Path) -> Vec<u8> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&std::fs::read(path).unwrap_or_default());
    if let Ok(config) = Config::load(path) {
        for key in &config.keys {
            ctx.update(key.path.as_os_str().as_encoded_bytes());
            ctx.update(&std::fs::read(&key.path).unwrap_or_default());
        }
    }
    ctx.finish().as_ref().to_vec()
}

/// Reloads on SIGHUP, and when a poll every `poll` finds the config or a key file changed.
pub async fn watch(
    state: Arc<LiveState>,
    store: SharedStore,
    clock: Clock,
    path: PathBuf,
    poll: Duration,
) {
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file changes only");
            None
        }
    };
    let mut last = fingerprint(&path);
    loop {
        #[cfg(unix)]
        let forced = match hangup.as_mut() {
            Some(hangup) => tokio::select! {
                _ = hangup.recv() => true,
                () = tokio::time::sleep(poll) => false,
            },
            None => {
                tokio::time::sleep(poll).await;
                false
            }
        };
        #[cfg(not(unix))]
        let forced = {
            tokio::time::sleep(poll).await;
            false
        };
        // Reading and hashing the files is blocking work: off the async runtime.
        let watched = path.clone();
        let Ok(current) = tokio::task::spawn_blocking(move || fingerprint(&watched)).await else {
            continue;
        };
        if !forced && current == last {
            continue;
        }
        last = current;
        match reload_changes(&state, store.as_ref(), &clock, &path).await {
            Ok((changes, warnings)) => {
                let snapshot = state.current();
                let now = clock.now_ms();
                let clients: Vec<&str> = snapshot
                    .config
                    .clients
                    .iter()
                    .map(|c| c.id.as_str())
                    .collect();
                tracing::info!(
                    event = "config.reloaded",
                    applied = %changes.applied.join(", "),
                    waiting_for_restart = %changes.kept.join(", "),
                    keys = snapshot.config.keys.len(),
                    signing = snapshot.keys.active(now).map(|k| k.kid()).unwrap_or("-"),
                    clients = %clients.join(", "),
                    "config reloaded"
                );
                for warning in changes.warnings() {
                    tracing::warn!(event = "config.restart_needed", "{warning}");
                }
                for warning in warnings {
                    tracing::warn!(event = "keys.schedule_warning", "{warning}");
                }
            }
            Err(e) => {
                for line in e.to_string().lines() {
                    tracing::error!(
                        event = "config.reload_refused",
                        "config reload refused, the running config stays: {line}"
                    );
                }
            }
        }
    }
}
