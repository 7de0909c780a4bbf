//! Single sign-on: the issuer's own session in the browser, started by a login on the hosted
//! page and carried by a cookie, so that the next app's authorization request needs no password
//! (`docs/sign-in-by-redirect.md`).
//!
//! The cookie holds 256 random bits; the store keeps only their SHA-256, under
//! `sso:<digest>`. A sign-on ends when it is unused for `sso.session_idle`, at
//! `sso.session_max` after its login, when its user's credentials or status change (the user's
//! epoch, as for refresh families), and at a logout everywhere (a per-user cutoff record).

use serde::{Deserialize, Serialize};

use super::{FlowError, Flows};
use crate::clock::{UnixMs, duration_ms};
use crate::state::Snapshot;
use crate::store::{SharedStore, StoreError, User};

/// How long the cutoff of a logout everywhere is remembered: longer than any sign-on lives.
const CUTOFF_KEPT_MS: i64 = 366 * 24 * 3600 * 1000;

/// A live sign-on, as the store keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignOn {
    pub user_id: String,
    /// When the user last entered a password (seconds, OIDC `auth_time`).
    pub auth_time: i64,
    /// How the user authenticated (RFC 8176): `pwd`.
    pub amr: Vec<String>,
    /// The user's epoch at the login: a password change or `users disable` ends the sign-on.
    pub user_epoch: u64,
    pub created_at: UnixMs,
    /// The last time it was used; with `session_idle` it sets the expiry.
    pub last_used_at: UnixMs,
    /// The digest of its cookie: what the families it starts are filed under.
    #[serde(skip)]
    pub digest: String,
}

/// The store key of the sign-on whose cookie holds `cookie`.
fn sign_on_key(cookie: &str) -> String {
    format!("sso:{}", super::authorize::digest_hex(cookie))
}

/// Where the sessions (refresh families) a sign-on started are listed, for a logout that ends
/// them with it.
fn families_key(digest: &str) -> String {
    format!("sso-families:{digest}")
}

/// At most this many families are listed per sign-on (the oldest fall off).
const MAX_FAMILIES: usize = 64;

/// Swaps one filing may take to merge concurrent ones. Each round learns at least one session
/// filed meanwhile, so it takes at most one per concurrent filing.
const MERGE_ROUNDS: usize = MAX_FAMILIES;

/// A family a sign-on started, and whether it outlives the sign-on (`offline_access`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct StartedFamily {
    pub(super) sid: uuid::Uuid,
    pub(super) offline: bool,
}

fn cutoff_key(user_id: &str) -> String {
    format!("sso-cutoff:{user_id}")
}

/// Ends every sign-on of the user started until now (a logout everywhere, from the API or the
/// CLI).
pub async fn end_all_sign_ons(
    store: &SharedStore,
    user_id: &str,
    now: UnixMs,
) -> Result<(), StoreError> {
    store
        .put_record(&cutoff_key(user_id), &now.to_string(), now + CUTOFF_KEPT_MS)
        .await
}

impl SignOn {
    fn expires_at(&self, snapshot: &Snapshot) -> UnixMs {
        let sso = &snapshot.config.sso;
        (self.last_used_at + duration_ms(sso.session_idle))
            .min(self.created_at + duration_ms(sso.session_max))
    }
}

impl Flows {
    /// Starts a sign-on for `user`, who has just entered a password, in place of the one
    /// `previous` names (rotated at every login). Returns the new cookie's value.
    pub(super) async fn start_sign_on(
        &self,
        snapshot: &Snapshot,
        user: &User,
        previous: Option<&str>,
    ) -> Result<(String, SignOn), FlowError> {
        if let Some(previous) = previous {
            self.store.delete_record(&sign_on_key(previous)).await?;
        }
        let now = self.clock.now_ms();
        let sign_on = SignOn {
            user_id: user.id.clone(),
            auth_time: now.div_euclid(1000),
            amr: vec!["pwd".into()],
            user_epoch: user.epoch,
            created_at: now,
            last_used_at: now,
            digest: String::new(),
        };
        let cookie = super::authorize::random_token()?;
        let sign_on = SignOn {
            digest: super::authorize::digest_hex(&cookie),
            ..sign_on
        };
        self.put_sign_on(snapshot, &cookie, &sign_on).await?;
        // The list its sessions are filed in exists from the start, so that filing is a swap.
        let until = sign_on.created_at + duration_ms(snapshot.config.sso.session_max);
        self.store
            .put_record(&families_key(&sign_on.digest), "[]", until)
            .await?;
        Ok((cookie, sign_on))
    }

    async fn put_sign_on(
        &self,
        snapshot: &Snapshot,
        cookie: &str,
        sign_on: &SignOn,
    ) -> Result<(), FlowError> {
        let value = serde_json::to_string(sign_on).map_err(FlowError::internal)?;
        self.store
            .put_record(&sign_on_key(cookie), &value, sign_on.expires_at(snapshot))
            .await?;
        Ok(())
    }

    /// The live sign-on the cookie names, with its user; touched so that use keeps it alive.
    pub(super) async fn sign_on(
        &self,
        snapshot: &Snapshot,
        cookie: Option<&str>,
    ) -> Result<Option<(SignOn, User)>, FlowError> {
        let Some(cookie) = cookie.filter(|c| c.len() <= 64) else {
            return Ok(None);
        };
        let now = self.clock.now_ms();
        let Some(stored) = self.store.record(&sign_on_key(cookie), now).await? else {
            return Ok(None);
        };
        let Ok(mut sign_on) = serde_json::from_str::<SignOn>(&stored) else {
            return Ok(None);
        };
        sign_on.digest = super::authorize::digest_hex(cookie);
        if sign_on.expires_at(snapshot) <= now {
            return Ok(None);
        }
        let user = match self.store.user_by_id(&sign_on.user_id).await? {
            Some(user) if !user.disabled && user.epoch == sign_on.user_epoch => user,
            _ => return Ok(None),
        };
        let cutoff = self
            .store
            .record(&cutoff_key(&user.id), now)
            .await?
            .and_then(|c| c.parse::<UnixMs>().ok());
        if cutoff.is_some_and(|cutoff| sign_on.created_at <= cutoff) {
            return Ok(None);
        }
        // Touched at most once a minute: a burst of authorizations costs one write.
        if now - sign_on.last_used_at > 60_000 {
            sign_on.last_used_at = now;
            self.put_sign_on(snapshot, cookie, &sign_on).await?;
        }
        Ok(Some((sign_on, user)))
    }

    /// Files session `sid`, just started from the sign-on `digest` (which lives until `until`),
    /// under it.
    pub(super) async fn file_family(
        &self,
        digest: &str,
        until: UnixMs,
        family: StartedFamily,
    ) -> Result<(), FlowError> {
        let key = families_key(digest);
        let now = self.clock.now_ms();
        let parse = |s: Option<String>| -> Vec<StartedFamily> {
            s.and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default()
        };
        let mut known = parse(self.store.record(&key, now).await?);
        known.push(family);
        // Concurrent exchanges from one browser file at once: each swap hands back what it
        // replaced, and whatever another filed meanwhile is merged and swapped in again, so no
        // session is left out of the sign-on's logout.
        for _ in 0..MERGE_ROUNDS {
            let kept = &known[known.len().saturating_sub(MAX_FAMILIES)..];
            let value = serde_json::to_string(kept).map_err(FlowError::internal)?;
            let Some(replaced) = self.store.swap_record(&key, &value, now).await? else {
                // A sign-on from before the list was created with it.
                self.store
                    .put_record(&key, &value, until.max(now + 1))
                    .await?;
                return Ok(());
            };
            let missing: Vec<StartedFamily> = parse(Some(replaced))
                .into_iter()
                .filter(|r| !known.iter().any(|k| k.sid == r.sid))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            known.splice(0..0, missing);
        }
        tracing::warn!(
            event = "sso.file_contended",
            "a session may be missing from its sign-on's list"
        );
        Ok(())
    }

    /// Ends the sign-on the cookie names and the sessions it started, except those granted
    /// `offline_access` (OIDC Core §11: they are meant to outlive the login). Returns the user
    /// it was, if it was live.
    pub(super) async fn end_sign_on_and_families(
        &self,
        snapshot: &Snapshot,
        cookie: &str,
    ) -> Result<Option<String>, FlowError> {
        let signed_on = self.sign_on(snapshot, Some(cookie)).await?;
        let digest = super::authorize::digest_hex(cookie);
        let key = families_key(&digest);
        let families: Vec<StartedFamily> = self
            .store
            .record(&key, self.clock.now_ms())
            .await?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let now = self.clock.now_ms();
        let mut to_notify = Vec::new();
        let mut ended = 0;
        for family in &families {
            // Every client of the sign-on hears that it ended, those kept offline too
            // (Back-Channel Logout 1.0 §2.7: they keep their refresh tokens, not the login).
            if super::back_channel::wanted(snapshot)
                && let Some(session) = self.store.session(family.sid, now).await?
            {
                to_notify.push(session);
            }
            let note = crate::store::LogNote::new(
                &snapshot.config.revocation_retention(),
                crate::store::RevocationReason::Logout,
                now,
            );
            if !family.offline && self.store.revoke_session(family.sid, &note).await? {
                ended += 1;
            }
        }
        self.revoked(crate::metrics::RevokeCause::Logout, ended, None);
        self.notify_ended(snapshot, &to_notify);
        self.store.delete_record(&key).await?;
        self.store.delete_record(&sign_on_key(cookie)).await?;
        Ok(signed_on.map(|(_, user)| user.id))
    }
}
