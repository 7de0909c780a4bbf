//! `[[clients]]`: the OAuth clients latchkey issues tokens to (RFC 6749 §2), validated into
//! [`ClientSpec`]s. A login without `client_id` belongs to the implicit first-party client
//! [`DEFAULT_CLIENT_ID`], unless the file defines a client with that id.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{parse_duration, valid_identifier};

/// The client of `/auth/login` requests that name none: public, refresh tokens in the body.
pub const DEFAULT_CLIENT_ID: &str = "latchkey";

/// RFC 6749 §2.1 client types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// Cannot keep a secret (a browser or mobile app): identifies itself by `client_id` alone.
    Public,
    /// Authenticates with a secret at `/oauth/*`.
    Confidential,
}

/// The grant types a client may use at `/oauth/token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GrantType {
    /// RFC 6749 §4.3, legacy (RFC 9700 §2.4 forbids it in new designs).
    Password,
    /// RFC 6749 §6.
    RefreshToken,
    /// RFC 6749 §4.4: the client's own token, no user.
    ClientCredentials,
}

impl GrantType {
    pub const ALL: [GrantType; 3] = [
        GrantType::Password,
        GrantType::RefreshToken,
        GrantType::ClientCredentials,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::Password => "password",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
        }
    }

    pub fn parse(s: &str) -> Option<GrantType> {
        GrantType::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// How a client receives its refresh tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshDelivery {
    /// In the token response's body.
    Body,
    /// Only in an HttpOnly cookie (browser apps).
    Cookie,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSpec {
    pub id: String,
    pub kind: ClientKind,
    pub grants: Vec<GrantType>,
    /// The scopes the client may carry; `None`: no restriction beyond what its users hold
    /// (and nothing for its own client-credentials tokens).
    pub scopes: Option<Vec<String>>,
    /// argon2id PHC string of the secret (confidential clients).
    pub secret_hash: Option<String>,
    pub refresh_delivery: RefreshDelivery,
    /// Origins (`scheme://host[:port]`) a browser client runs on.
    pub allowed_origins: Vec<String>,
    /// Overrides `tokens.access_ttl` for this client's access tokens.
    pub access_ttl: Option<Duration>,
    /// Overrides `tokens.audience` for this client's access tokens.
    pub audience: Option<Vec<String>>,
    /// Every token request must carry a DPoP proof (RFC 9449).
    pub require_dpop: bool,
    /// DPoP proofs must carry a server nonce (RFC 9449 §8): a proof without a current one is
    /// answered `use_dpop_nonce` with a fresh `DPoP-Nonce`.
    pub dpop_nonce: bool,
    /// May introspect tokens (RFC 7662): what they carry, whose they are. A confidential
    /// client's own tokens do not need it; no other client's may be read without it.
    pub introspect: bool,
}

impl ClientSpec {
    /// The implicit first-party client.
    pub fn default_client() -> ClientSpec {
        ClientSpec {
            id: DEFAULT_CLIENT_ID.to_owned(),
            kind: ClientKind::Public,
            grants: vec![GrantType::RefreshToken],
            scopes: None,
            secret_hash: None,
            refresh_delivery: RefreshDelivery::Body,
            allowed_origins: Vec::new(),
            access_ttl: None,
            audience: None,
            require_dpop: false,
            dpop_nonce: false,
            introspect: false,
        }
    }

    pub fn may(&self, grant: GrantType) -> bool {
        self.grants.contains(&grant)
    }

    /// Whether the client may carry `scope`.
    pub fn allows_scope(&self, scope: &str) -> bool {
        self.scopes
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|s| s == scope))
    }
}

#[derive(Deserialize, Serialize)]
pub(super) struct RawClient {
    pub(super) id: String,
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) grants: Vec<String>,
    #[serde(default)]
    pub(super) scopes: Option<Vec<String>>,
    #[serde(default)]
    pub(super) secret_hash: Option<String>,
    #[serde(default)]
    pub(super) refresh_delivery: Option<String>,
    #[serde(default)]
    pub(super) allowed_origins: Vec<String>,
    #[serde(default)]
    pub(super) access_ttl: Option<String>,
    #[serde(default)]
    pub(super) audience: Option<Vec<String>>,
    #[serde(default)]
    pub(super) require_dpop: bool,
    #[serde(default)]
    pub(super) dpop_nonce: bool,
    #[serde(default)]
    pub(super) introspect: bool,
}

/// A web origin as browsers send it in `Origin` (RFC 6454): `scheme://host[:port]`.
pub fn valid_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' ', '@'])
        && origin.is_ascii()
}

/// A scope token per RFC 6749 §3.3: printable ASCII but space, `"` and `\`.
pub fn valid_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Validates every `[[clients]]` entry; problems name the entry and field.
pub(super) fn validate(raw: Vec<RawClient>, problems: &mut Vec<String>) -> Vec<ClientSpec> {
    let mut ids = HashSet::new();
    let mut clients = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        let at = format!("clients[{i}]");
        if !valid_identifier(&c.id) {
            problems.push(format!(
                "{at}.id: {:?} must be 1-64 characters of A-Z a-z 0-9 . _ -",
                c.id
            ));
        } else if !ids.insert(c.id.clone()) {
            problems.push(format!("{at}.id: {:?} appears twice", c.id));
        }
        let kind = match c.kind.as_str() {
            "public" => ClientKind::Public,
            "confidential" => ClientKind::Confidential,
            other => {
                problems.push(format!(
                    "{at}.type: {other:?} must be public or confidential"
                ));
                ClientKind::Public
            }
        };
        let mut grants = Vec::new();
        for g in &c.grants {
            match GrantType::parse(g) {
                Some(grant) if !grants.contains(&grant) => grants.push(grant),
                Some(_) => problems.push(format!("{at}.grants: {g:?} appears twice")),
                None => problems.push(format!(
                    "{at}.grants: unknown grant {g:?}; use password, refresh_token or client_credentials"
                )),
            }
        }
        if kind == ClientKind::Public && grants.contains(&GrantType::ClientCredentials) {
            problems.push(format!(
                "{at}.grants: a public client cannot use client_credentials: it has no secret"
            ));
        }
        match (kind, &c.secret_hash) {
            (ClientKind::Confidential, None) => problems.push(format!(
                "{at}.secret_hash: a confidential client needs one (latchkey hash-secret)"
            )),
            (ClientKind::Public, Some(_)) => problems.push(format!(
                "{at}.secret_hash: a public client has no secret; make it confidential or drop it"
            )),
            (_, Some(hash)) if !hash.starts_with("$argon2id$") => problems.push(format!(
                "{at}.secret_hash: expected an argon2id PHC string from latchkey hash-secret"
            )),
            _ => {}
        }
        if let Some(scopes) = &c.scopes
            && let Some(bad) = scopes.iter().find(|s| !valid_scope_token(s))
        {
            problems.push(format!("{at}.scopes: {bad:?} is not a scope token"));
        }
        let refresh_delivery = match c.refresh_delivery.as_deref() {
            None | Some("body") => RefreshDelivery::Body,
            Some("cookie") => RefreshDelivery::Cookie,
            Some(other) => {
                problems.push(format!(
                    "{at}.refresh_delivery: {other:?} must be body or cookie"
                ));
                RefreshDelivery::Body
            }
        };
        for origin in &c.allowed_origins {
            if !valid_origin(origin) {
                problems.push(format!(
                    "{at}.allowed_origins: {origin:?} must be scheme://host[:port], without a path"
                ));
            }
        }
        if refresh_delivery == RefreshDelivery::Cookie {
            if kind != ClientKind::Public {
                problems.push(format!(
                    "{at}.refresh_delivery: cookie delivery is for public (browser) clients"
                ));
            }
            if c.allowed_origins.is_empty() {
                problems.push(format!(
                    "{at}.allowed_origins: a cookie client needs the origins its pages run on"
                ));
            }
            if !grants.contains(&GrantType::RefreshToken) {
                problems.push(format!("{at}.grants: a cookie client needs refresh_token"));
            }
        }
        let access_ttl = c.access_ttl.as_deref().and_then(|v| {
            parse_duration(&format!("{at}.access_ttl"), v)
                .map_err(|p| problems.push(p))
                .ok()
        });
        if access_ttl.is_some_and(|d| d.is_zero()) {
            problems.push(format!("{at}.access_ttl: must be greater than zero"));
        }
        if c.audience
            .as_ref()
            .is_some_and(|a| a.is_empty() || a.iter().any(|x| x.trim().is_empty()))
        {
            problems.push(format!(
                "{at}.audience: needs at least one non-empty audience"
            ));
        }
        clients.push(ClientSpec {
            id: c.id,
            kind,
            grants,
            scopes: c.scopes,
            secret_hash: c.secret_hash,
            refresh_delivery,
            allowed_origins: c.allowed_origins,
            access_ttl,
            audience: c.audience,
            require_dpop: c.require_dpop,
            dpop_nonce: c.dpop_nonce,
            introspect: c.introspect,
        });
        if c.introspect && kind != ClientKind::Confidential {
            problems.push(format!(
                "clients[{i}].introspect: only a confidential client may introspect"
            ));
        }
    }
    clients
}

/// Findings that do not stop a config from serving, for `config check` and the start log.
pub(super) fn warnings(clients: &[ClientSpec]) -> Vec<String> {
    clients
        .iter()
        .filter(|c| c.may(GrantType::Password))
        .map(|c| {
            format!(
                "clients {}: the password grant is enabled; RFC 9700 2.4 forbids it in new \
                 designs (first-party apps use /auth/login)",
                c.id
            )
        })
        .collect()
}
