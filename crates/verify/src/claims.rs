//! The claims of a verified access token (RFC 9068 §2.2).

use serde::{Deserialize, Deserializer, Serialize};

/// The claims of a verified access token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer.
    pub iss: String,
    /// The user's stable id, or the client id for a client-credentials token.
    pub sub: String,
    /// The audiences (a single string in the token is read as a list of one).
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    #[serde(default)]
    pub iat: Option<i64>,
    /// Not before, seconds since the epoch.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// The token's unique id.
    #[serde(default)]
    pub jti: Option<String>,
    /// The client the token was issued to.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: Option<String>,
    /// The login session (refresh family) the token belongs to.
    #[serde(default)]
    pub sid: Option<String>,
    /// The key the token is bound to (RFC 7800 `cnf`; RFC 9449 `jkt` for DPoP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// Every other claim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The `cnf` claim: what a presenter must prove to use the token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The RFC 7638 SHA-256 thumbprint of the DPoP key the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// Every other confirmation method.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Claims {
    /// The DPoP key thumbprint the token is bound to, if it is.
    pub fn dpop_jkt(&self) -> Option<&str> {
        self.cnf.as_ref().and_then(|c| c.jkt.as_deref())
    }

    /// The granted scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.as_deref().unwrap_or("").split_whitespace()
    }

    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_may_be_a_string_or_a_list_and_scopes_split() {
        let one: Claims = serde_json::from_str(
            r#"{"iss":"i","sub":"s","aud":"api","exp":1,"scope":"a b","custom":true}"#,
        )
        .unwrap();
        assert_eq!(one.aud, vec!["api"]);
        assert!(one.has_scope("b") && !one.has_scope("c"));
        assert_eq!(one.extra["custom"], true);
        let many: Claims =
            serde_json::from_str(r#"{"iss":"i","sub":"s","aud":["a","b"],"exp":1}"#).unwrap();
        assert_eq!(many.aud, vec!["a", "b"]);
        assert_eq!(many.scopes().count(), 0);
    }
}
