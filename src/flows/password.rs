//! Changing one's own password, and self-registration, under the password policy of NIST SP
//! 800-63B: a minimum length (`users.min_password_length`), at most 1,024 bytes, no composition
//! rules, and a new password that differs from the current one.

use super::{Authenticated, FlowError, Flows, RequestMeta, normalize_username};
use crate::config::UserSettings;
use crate::credentials::{MAX_PASSWORD_BYTES, Password};
use crate::limits::UserLock;
use crate::metrics::RevokeCause;
use crate::store::User;

/// The password policy; the error names the field and the rule that failed.
pub fn check_password_policy(
    field: &str,
    password: &Password,
    settings: &UserSettings,
) -> Result<(), FlowError> {
    let chars = password.expose().chars().count();
    if chars < settings.min_password_length as usize {
        return Err(FlowError::InvalidRequest(
            format!(
                "{field}: at least {} characters",
                settings.min_password_length
            )
            .into(),
        ));
    }
    if password.expose().len() > MAX_PASSWORD_BYTES {
        return Err(FlowError::InvalidRequest(
            format!("{field}: at most {MAX_PASSWORD_BYTES} bytes").into(),
        ));
    }
    Ok(())
}

impl Flows {
    /// Checks the current password (throttled like logins), applies the policy, stores the new
    /// hash and ends every session of the user, the current one included, in one atomic step:
    /// whoever holds a stolen refresh token is cut off too. A refused change ends nothing.
    /// Returns how many sessions ended.
    pub async fn change_password(
        &self,
        auth: &Authenticated,
        current: &Password,
        new: &Password,
        meta: &RequestMeta,
    ) -> Result<usize, FlowError> {
        let snapshot = self.snapshot();
        check_password_policy("new_password", new, &snapshot.config.users)?;
        if current.expose().len() > MAX_PASSWORD_BYTES {
            return Err(FlowError::InvalidRequest(
                format!("current_password: at most {MAX_PASSWORD_BYTES} bytes").into(),
            ));
        }
        if aws_lc_rs::constant_time::verify_slices_are_equal(
            current.expose().as_bytes(),
            new.expose().as_bytes(),
        )
        .is_ok()
        {
            return Err(FlowError::InvalidRequest(
                "new_password: must differ from the current password".into(),
            ));
        }
        let limits = &snapshot.config.limits;
        let username = &auth.user.username;
        let lock = self
            .limiter
            .check(limits, &meta.ip, username, self.clock.now_ms())
            .await?
            .map_err(|t| FlowError::Throttled {
                retry_after_secs: t.retry_after_secs,
            })?;
        if let UserLock::Locked { retry_after_secs } = lock {
            // The caller holds a live session; from where it is used, the lock does not apply.
            if !self.is_known_ip(&auth.user.id, &meta.ip).await? {
                return Err(FlowError::Throttled { retry_after_secs });
            }
        }
        // The record as it is now, not as the token saw it.
        let user = self
            .store
            .user_by_id(&auth.user.id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(FlowError::InvalidToken(
                "the user is gone or disabled".into(),
            ))?;
        if !self
            .hasher
            .verify(Some(&user.password_hash), username, current)
            .await?
        {
            self.limiter
                .record_failure(limits, username, &meta.ip, self.clock.now_ms())
                .await?;
            return Err(FlowError::WrongPassword);
        }
        let hash = self.hasher.hash(new).await?;
        let to_notify = self.sessions_to_notify(&snapshot, &user.id).await?;
        let ended = self
            .store
            .set_password(
                &user.id,
                &hash,
                &crate::store::LogNote::new(
                    &snapshot.config.revocation_retention(),
                    crate::store::RevocationReason::PasswordChanged,
                    self.clock.now_ms(),
                ),
            )
            .await?
            .ok_or(FlowError::InvalidToken("the user is gone".into()))?;
        tracing::info!(event = "password.changed", user_id = %user.id, ip = %meta.ip, "password changed");
        self.revoked(RevokeCause::Password, ended, None);
        self.notify_ended(&snapshot, &to_notify);
        Ok(ended)
    }

    /// `POST /auth/register`, when `users.allow_registration` is on: throttled per client IP,
    /// the same policy. A taken name is the one thing it reveals.
    pub async fn register(
        &self,
        username: &str,
        password: &Password,
        meta: &RequestMeta,
    ) -> Result<User, FlowError> {
        let snapshot = self.snapshot();
        if !snapshot.config.users.allow_registration {
            return Err(FlowError::NotFound("no such endpoint"));
        }
        let username = normalize_username(username)?;
        check_password_policy("password", password, &snapshot.config.users)?;
        self.limiter
            .check(
                &snapshot.config.limits,
                &meta.ip,
                "\u{0}register",
                self.clock.now_ms(),
            )
            .await?
            .map_err(|t| FlowError::Throttled {
                retry_after_secs: t.retry_after_secs,
            })?;
        self.accounts
            .create_user(&username, password, Default::default())
            .await
    }
}
