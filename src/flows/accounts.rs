//! Account operations shared by the CLI and HTTP: create a user, change a password, disable an
//! account, end every session of a user. They need the store and the hasher, not the keys, so
//! the CLI can run them on a machine that holds no signing key.

use super::FlowError;
use crate::clock::Clock;
use crate::credentials::{Password, PasswordHasher};
use crate::store::{SharedStore, StoreError, User};

pub const MAX_USERNAME_CHARS: usize = 128;

/// The one spelling of a username: surrounding white space trimmed, Unicode NFC, lower case.
/// So `Alice`, ` alice ` and `alice` (or `José` typed composed or decomposed) are one account,
/// and names that look the same cannot be two. Control characters and invisible ones (zero-width
/// spaces, joiners, bidirectional marks: Unicode's default-ignorable code points) are refused.
pub fn normalize_username(raw: &str) -> Result<String, FlowError> {
    use unicode_normalization::UnicodeNormalization;
    let name: String = raw
        .trim()
        .nfc()
        .collect::<String>()
        .to_lowercase()
        .nfc()
        .collect();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_USERNAME_CHARS {
        return Err(FlowError::InvalidRequest(
            format!("username: 1-{MAX_USERNAME_CHARS} characters").into(),
        ));
    }
    if name.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(FlowError::InvalidRequest(
            "username: no control or invisible characters".into(),
        ));
    }
    Ok(name)
}

/// Unicode's Default_Ignorable_Code_Point set: characters that render as nothing.
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
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
        let username = &normalize_username(username)?;
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
        let username = &normalize_username(username)?;
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
