//! Hot reload: the config and key ring in force, swapped whole, on SIGHUP or when the config
//! file or a key file changes. A config that fails to load, names an unreadable key or leaves no
//! key signing now is refused with a log line, and the running one stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::issuer::Issuer;
use crate::keys::schedule::schedule_warnings;
use crate::keys::{KeyError, KeyRing};

/// The config and the keys it names, always swapped together.
#[derive(Debug)]
pub struct Live {
    pub config: Arc<Config>,
    pub keys: KeyRing,
}

#[derive(Debug)]
pub struct LiveHandle(RwLock<Arc<Live>>);

impl LiveHandle {
    pub fn new(config: Config, keys: KeyRing) -> Self {
        LiveHandle(RwLock::new(Arc::new(Live {
            config: Arc::new(config),
            keys,
        })))
    }

    pub fn current(&self) -> Arc<Live> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn replace(&self, live: Live) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(live);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Keys(#[from] KeyError),
    #[error("no key would sign now")]
    NoActiveKey,
}

/// Loads `path`, checks it and swaps it in. Returns the schedule warnings of the new config.
pub async fn reload(issuer: &Issuer, path: &Path) -> Result<Vec<String>, ReloadError> {
    let mut config = Config::load(path)?;
    let running = issuer.live.current();
    let mut warnings = keep_restart_only_fields(&running.config, &mut config);
    let keys = KeyRing::load(&config)?;
    if keys.active(issuer.clock.now_ms()).is_none() {
        return Err(ReloadError::NoActiveKey);
    }
    issuer.live.replace(Live {
        config: Arc::new(config),
        keys,
    });
    warnings.extend(publish_and_check(issuer).await);
    Ok(warnings)
}

/// Fields a running server cannot change: a new value is reported and the running one kept.
fn keep_restart_only_fields(running: &Config, new: &mut Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut keep = |field: &str, changed: bool| {
        if changed {
            warnings.push(format!("{field} changed: it takes effect after a restart"));
        }
    };
    keep("issuer", running.issuer != new.issuer);
    keep("listen", running.listen != new.listen);
    keep("store.url", running.store.url != new.store.url);
    keep("passwords", running.passwords != new.passwords);
    new.issuer.clone_from(&running.issuer);
    new.listen = running.listen;
    new.store = running.store.clone();
    new.passwords = running.passwords.clone();
    warnings
}

/// Records in the store that each configured key is published (so every instance and
/// `config check` share one history), then checks the schedule against that history.
pub async fn publish_and_check(issuer: &Issuer) -> Vec<String> {
    let live = issuer.live.current();
    let now = issuer.clock.now_ms();
    let mut warnings = Vec::new();
    for spec in live.config.keys.iter().filter(|k| !k.revoked) {
        let until = live.keys.publish_until(spec);
        if let Err(e) = issuer
            .store
            .record_key_publication(&spec.kid, now, until)
            .await
        {
            warnings.push(format!(
                "keys {}: cannot record its publication: {e}",
                spec.kid
            ));
        }
    }
    match issuer.store.key_publications().await {
        Ok(history) => warnings.extend(schedule_warnings(&live.config, &history, now)),
        Err(e) => warnings.push(format!("keys: cannot read the publication history: {e}")),
    }
    warnings
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
pub async fn watch(issuer: actix_web::web::Data<Issuer>, path: PathBuf, poll: Duration) {
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
        let current = fingerprint(&path);
        if !forced && current == last {
            continue;
        }
        last = current;
        match reload(&issuer, &path).await {
            Ok(warnings) => {
                let live = issuer.live.current();
                let now = issuer.clock.now_ms();
                tracing::info!(
                    keys = live.config.keys.len(),
                    signing = live.keys.active(now).map(|k| k.kid()).unwrap_or("-"),
                    "config reloaded"
                );
                for warning in warnings {
                    tracing::warn!("{warning}");
                }
            }
            Err(e) => {
                for line in e.to_string().lines() {
                    tracing::error!("config reload refused, the running config stays: {line}");
                }
            }
        }
    }
}
