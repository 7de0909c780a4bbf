//! `[users]`: self-registration and the password policy.

use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
#[serde(default)]
pub(super) struct RawUsers {
    pub(super) allow_registration: bool,
    pub(super) min_password_length: u32,
}

impl Default for RawUsers {
    fn default() -> Self {
        RawUsers {
            allow_registration: false,
            min_password_length: 8,
        }
    }
}

/// Accounts: self-registration and the password policy (NIST SP 800-63B: a minimum length, a
/// maximum of 1,024 bytes, no composition rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSettings {
    /// `POST /auth/register` is served.
    pub allow_registration: bool,
    /// In characters (Unicode scalar values).
    pub min_password_length: u32,
}

pub(super) fn validate(raw: RawUsers, problems: &mut Vec<String>) -> UserSettings {
    let users = UserSettings {
        allow_registration: raw.allow_registration,
        min_password_length: raw.min_password_length,
    };
    if !(1..=256).contains(&users.min_password_length) {
        problems.push("users.min_password_length: must be 1..=256".into());
    }
    users
}
