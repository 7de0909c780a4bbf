//! Account operations shared by the CLI and HTTP: create a user, change a password, disable an
//! account, end every session of a user. They need the store and the hasher, not the keys, so
//! the CLI can run them on a machine that holds no signing key.

use super::FlowError;
use crate::clock::Clock;
use crate::config::clients::valid_scope_token;
use crate::credentials::{Password, PasswordHasher};
use crate::store::{
    LogNote, RevocationReason, Session, SharedStore, StoreError, User, UserAttributes,
};

pub use crate::usernames::MAX_USERNAME_CHARS;

/// The one spelling of a username ([`crate::usernames::normalize`]): trimmed, NFKC,
/// case-folded; invisible characters and mixed-script look-alikes refused.
pub fn normalize_username(raw: &str) -> Result<String, FlowError> {
    crate::usernames::normalize(raw).map_err(|e| FlowError::InvalidRequest(e.to_string().into()))
}

/// A change to a user's profile: `None` leaves a field as it is, `Some("")` clears it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProfileChange<'a> {
    pub email: Option<&'a str>,
    /// Only operators vouch for an email; a new email without it is unverified.
    pub email_verified: Option<bool>,
    pub name: Option<&'a str>,
    /// Only operators set it: relying parties that key on it would trust a name users chose.
    pub preferred_username: Option<&'a str>,
}

impl ProfileChange<'_> {
    pub fn apply(&self, a: &mut UserAttributes) -> Result<(), FlowError> {
        let set = |value: &str| (!value.is_empty()).then(|| value.to_owned());
        if let Some(email) = self.email.map(set)
            && email != a.email
        {
            a.email = email;
            a.email_verified = false;
        }
        if let Some(name) = self.name {
            a.name = set(name);
        }
        if let Some(preferred) = self.preferred_username {
            a.preferred_username = set(preferred);
        }
        if let Some(verified) = self.email_verified {
            if verified && a.email.is_none() {
                return Err(FlowError::InvalidRequest(
                    "email_verified: the user has no email to verify".into(),
                ));
            }
            a.email_verified = verified;
        }
        Ok(())
    }
}

/// Scopes must be RFC 6749 scope tokens; email and names are bounded, single-line text.
fn check_attributes(a: &UserAttributes) -> Result<(), FlowError> {
    if let Some(bad) = a.scopes.iter().find(|s| !valid_scope_token(s)) {
        return Err(FlowError::InvalidRequest(
            format!("scope: {bad:?} is not a scope token").into(),
        ));
    }
    for (field, value) in [
        ("email", &a.email),
        ("name", &a.name),
        ("preferred_username", &a.preferred_username),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.chars().count() > 256 || v.chars().any(char::is_control))
        {
            return Err(FlowError::InvalidRequest(
                format!("{field}: at most 256 characters on one line").into(),
            ));
        }
    }
    Ok(())
}

#[derive(Clone)]
pub struct Accounts {
    store: SharedStore,
    hasher: PasswordHasher,
    clock: Clock,
    /// How long the revocation log keeps what these operations revoke
    /// ([`crate::config::Config::revocation_retention`]).
    retention: std::time::Duration,
}

impl Accounts {
    pub fn new(
        store: SharedStore,
        hasher: PasswordHasher,
        clock: Clock,
        retention: std::time::Duration,
    ) -> Accounts {
        Accounts {
            store,
            hasher,
            clock,
            retention,
        }
    }

    fn log_note(&self, reason: RevocationReason) -> LogNote {
        LogNote::new(&self.retention, reason, self.clock.now_ms())
    }

    pub async fn create_user(
        &self,
        username: &str,
        password: &Password,
        attributes: UserAttributes,
    ) -> Result<User, FlowError> {
        let username = &normalize_username(username)?;
        check_attributes(&attributes)?;
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_owned(),
            password_hash: self.hasher.hash(password).await?,
            disabled: false,
            created_at: self.clock.now_ms(),
            epoch: 0,
            scopes: attributes.scopes,
            email_verified: attributes.email_verified && attributes.email.is_some(),
            email: attributes.email,
            name: attributes.name,
            preferred_username: attributes.preferred_username,
        };
        match self.store.create_user(&user).await {
            Err(StoreError::Conflict) => Err(FlowError::UserExists(username.to_owned())),
            Err(StoreError::LookAlike) => Err(FlowError::UserLooksAlike(username.to_owned())),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(user),
        }
    }

    pub(super) fn store(&self) -> &SharedStore {
        &self.store
    }

    pub(super) fn now(&self) -> crate::clock::UnixMs {
        self.clock.now_ms()
    }

    pub async fn find(&self, username: &str) -> Result<User, FlowError> {
        let username = &normalize_username(username)?;
        self.store
            .user_by_name(username)
            .await?
            .ok_or_else(|| FlowError::NoSuchUser(username.to_owned()))
    }

    /// Records every user's look-alike key (users from before it was kept) and returns the
    /// groups of existing names that look alike: each group's first name holds the key, and
    /// the others can still log in but should be renamed or removed.
    pub async fn look_alikes(&self) -> Result<Vec<Vec<String>>, FlowError> {
        let users = self.store.list_users().await?;
        let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for user in &users {
            let _ = self.store.index_look_alike(user).await?;
            groups
                .entry(crate::usernames::look_alike_key(&user.username))
                .or_default()
                .push(user.username.clone());
        }
        Ok(groups.into_values().filter(|g| g.len() > 1).collect())
    }

    pub async fn list(&self) -> Result<Vec<User>, FlowError> {
        Ok(self.store.list_users().await?)
    }

    /// Sets a new password and ends every session the old one allowed, in one atomic step: once
    /// this returns, no session of the user (a login in flight included) can refresh. Returns
    /// how many sessions ended.
    pub async fn set_password(
        &self,
        username: &str,
        password: &Password,
    ) -> Result<usize, FlowError> {
        let user = self.find(username).await?;
        let hash = self.hasher.hash(password).await?;
        self.store
            .set_password(
                &user.id,
                &hash,
                &self.log_note(RevocationReason::PasswordChanged),
            )
            .await?
            .ok_or_else(|| FlowError::NoSuchUser(username.to_owned()))
    }

    /// Disables the account and ends every session, with the same guarantee as
    /// [`Accounts::set_password`]. Returns how many sessions ended.
    pub async fn disable(&self, username: &str) -> Result<usize, FlowError> {
        let user = self.find(username).await?;
        self.store
            .set_disabled(
                &user.id,
                true,
                &self.log_note(RevocationReason::UserDisabled),
            )
            .await?
            .ok_or_else(|| FlowError::NoSuchUser(username.to_owned()))
    }

    /// Gives `scopes` to the user (kept in the order first granted). Sessions carry them from
    /// the next login; they are not added to sessions that exist.
    pub async fn grant(&self, username: &str, scopes: &[String]) -> Result<User, FlowError> {
        self.change_attributes(username, |a| {
            for scope in scopes {
                if !a.scopes.contains(scope) {
                    a.scopes.push(scope.clone());
                }
            }
            Ok(())
        })
        .await
    }

    /// Takes `scopes` away: no token issued from now on carries them, refreshes of existing
    /// sessions included.
    pub async fn ungrant(&self, username: &str, scopes: &[String]) -> Result<User, FlowError> {
        self.change_attributes(username, |a| {
            a.scopes.retain(|s| !scopes.contains(s));
            Ok(())
        })
        .await
    }

    /// Changes the optional profile claims (email, its verification, names).
    pub async fn set_profile(
        &self,
        username: &str,
        change: ProfileChange<'_>,
    ) -> Result<User, FlowError> {
        self.change_attributes(username, |a| change.apply(a)).await
    }

    async fn change_attributes(
        &self,
        username: &str,
        change: impl FnOnce(&mut UserAttributes) -> Result<(), FlowError>,
    ) -> Result<User, FlowError> {
        let mut user = self.find(username).await?;
        let mut attributes = UserAttributes {
            scopes: user.scopes.clone(),
            email: user.email.clone(),
            email_verified: user.email_verified,
            name: user.name.clone(),
            preferred_username: user.preferred_username.clone(),
        };
        change(&mut attributes)?;
        check_attributes(&attributes)?;
        if !self
            .store
            .set_user_attributes(&user.id, &attributes)
            .await?
        {
            return Err(FlowError::NoSuchUser(username.to_owned()));
        }
        user.scopes = attributes.scopes;
        user.email = attributes.email;
        user.email_verified = attributes.email_verified;
        user.name = attributes.name;
        user.preferred_username = attributes.preferred_username;
        Ok(user)
    }

    /// Enables a disabled account (the epoch moves on; no session survived the disable).
    pub async fn enable(&self, username: &str) -> Result<(), FlowError> {
        let user = self.find(username).await?;
        self.store
            .set_disabled(
                &user.id,
                false,
                &self.log_note(RevocationReason::UserEnabled),
            )
            .await?
            .map(|_| ())
            .ok_or_else(|| FlowError::NoSuchUser(username.to_owned()))
    }

    /// Removes the user and every session; the name can be taken again, inheriting nothing.
    /// Returns how many sessions ended.
    pub async fn delete(&self, username: &str) -> Result<usize, FlowError> {
        let user = self.find(username).await?;
        self.store
            .delete_user(&user.id, &self.log_note(RevocationReason::UserDeleted))
            .await?
            .ok_or_else(|| FlowError::NoSuchUser(username.to_owned()))
    }

    /// The user's live sessions, newest first.
    pub async fn sessions(&self, username: &str) -> Result<Vec<Session>, FlowError> {
        let user = self.find(username).await?;
        Ok(self
            .store
            .sessions_of(&user.id, self.clock.now_ms())
            .await?)
    }

    /// Ends every session of the user. Returns how many.
    pub async fn end_all_sessions(&self, user_id: &str) -> Result<usize, FlowError> {
        let ended = self
            .store
            .revoke_user_sessions(user_id, &self.log_note(RevocationReason::AdminLogout))
            .await?;
        super::sso::end_all_sign_ons(&self.store, user_id, self.clock.now_ms()).await?;
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_username() {
        for same in ["alice", "Alice", "  ALICE\t", "alice\u{0020}"] {
            assert_eq!(normalize_username(same).unwrap(), "alice", "{same:?}");
        }
        // Composed and decomposed é are one name.
        assert_eq!(
            normalize_username("Jos\u{00E9}").unwrap(),
            normalize_username("Jose\u{0301}").unwrap()
        );
        for bad in [
            "",
            "   ",
            "al\u{200B}ice",
            "al\u{FEFF}ice",
            "a\u{202E}b",
            "a\u{0007}b",
        ] {
            assert!(normalize_username(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_username(&"x".repeat(MAX_USERNAME_CHARS + 1)).is_err());
    }
}
