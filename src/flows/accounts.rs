//! Account operations shared by the CLI and HTTP: create a user, change a password, disable an
//! account, end every session of a user. They need the store and the hasher, not the keys, so
//! the CLI can run them on a machine that holds no signing key.

use super::FlowError;
use crate::clock::Clock;
use crate::credentials::{Password, PasswordHasher};
use crate::store::{SharedStore, StoreError, User};

pub const MAX_USERNAME_CHARS: usize = 128;

pub fn validate_username(username: &str) -> Result<(), FlowError> {
    let chars = username.chars().count();
    if chars == 0 || chars > MAX_USERNAME_CHARS || username.chars().any(char::is_control) {
        return Err(FlowError::InvalidRequest(
            format!("username: 1-{MAX_USERNAME_CHARS} characters, no control characters").into(),
        ));
    }
    Ok(())
}

#[derive(Clone)]
pub struct Accounts {
    store: SharedStore,
    hasher: PasswordHasher,
    clock: Clock,
}

impl Accounts {
    pub fn new(store: SharedStore, hasher: PasswordHasher, clock: Clock) -> Accounts {
        Accounts {
            store,
            hasher,
            clock,
        }
    }

    pub async fn create_user(
        &self,
        username: &str,
        password: &Password,
    ) -> Result<User, FlowError> {
        validate_username(username)?;
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_owned(),
            password_hash: self.hasher.hash(password).await?,
            disabled: false,
            created_at: self.clock.now_ms(),
            epoch: 0,
        };
        match self.store.create_user(&user).await {
            Err(StoreError::Conflict) => Err(FlowError::UserExists(username.to_owned())),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(user),
        }
    }

    pub async fn find(&self, username: &str) -> Result<User, FlowError> {
        self.store
            .user_by_name(username)
            .await?
            .ok_or_else(|| FlowError::NoSuchUser(username.to_owned()))
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
            .set_password(&user.id, &hash)
            .await?
            .ok_or_else(|| FlowError::NoSuchUser(username.to_owned()))
    }

    /// Disables the account and ends every session, with the same guarantee as
    /// [`Accounts::set_password`]. Returns how many sessions ended.
    pub async fn disable(&self, username: &str) -> Result<usize, FlowError> {
        let user = self.find(username).await?;
        self.store
            .set_disabled(&user.id, true)
            .await?
            .ok_or_else(|| FlowError::NoSuchUser(username.to_owned()))
    }

    /// Ends every session of the user. Returns how many.
    pub async fn end_all_sessions(&self, user_id: &str) -> Result<usize, FlowError> {
        Ok(self.store.revoke_user_sessions(user_id).await?)
    }
}
