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
    /// RFC 6749 §4.1 with PKCE (RFC 7636): the browser signs in on the hosted pages.
    AuthorizationCode,
}

impl GrantType {
    pub const ALL: [GrantType; 4] = [
        GrantType::Password,
        GrantType::RefreshToken,
        GrantType::ClientCredentials,
        GrantType::AuthorizationCode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::Password => "password",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::AuthorizationCode => "authorization_code",
        }
    }

    pub fn parse(s: &str) -> Option<GrantType> {
        GrantType::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// When the hosted pages ask the user to allow a client its scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consent {
    /// Never: a first-party app the user signs in to is trusted with what it asks for.
    Skip,
    /// The first time, and again for scopes not allowed before (third-party apps).
    Once,
    /// At every authorization request.
    Always,
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
    /// Where the authorization endpoint may send the browser back (exact strings).
    pub redirect_uris: Vec<String>,
    /// RFC 8252 §7.3: a native app's loopback redirect URI matches on any port.
    pub loopback_any_port: bool,
    /// An authorization request must carry a PKCE challenge (RFC 7636); `false` only for
    /// confidential clients.
    pub require_pkce: bool,
    pub consent: Consent,
    /// Shown to users on the hosted pages.
    pub name: Option<String>,
    /// The algorithm of its ID tokens (OIDC Dynamic Registration §2); absent: RS256 when a key
    /// signs ID tokens in it, else the access-token key's.
    pub id_token_signed_response_alg: Option<super::Alg>,
    /// Where the end-session endpoint may send the browser after a sign-out (exact strings).
    pub post_logout_redirect_uris: Vec<String>,
    /// Where a logout token is POSTed when a session of this client's ends (OIDC Back-Channel
    /// Logout 1.0).
    pub backchannel_logout_uri: Option<String>,
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
            redirect_uris: Vec::new(),
            loopback_any_port: false,
            require_pkce: true,
            consent: Consent::Skip,
            name: None,
            id_token_signed_response_alg: None,
            post_logout_redirect_uris: Vec::new(),
            backchannel_logout_uri: None,
        }
    }

    /// What users see the client called: its `name`, else its id.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// Whether `uri` is one of the client's redirect URIs: the exact string, or for
    /// `loopback_any_port` the same loopback URI on another port (RFC 8252 §7.3).
    pub fn redirect_uri_registered(&self, uri: &str) -> bool {
        if self.redirect_uris.iter().any(|r| r == uri) {
            return true;
        }
        self.loopback_any_port
            && loopback_without_port(uri).is_some_and(|presented| {
                self.redirect_uris
                    .iter()
                    .any(|r| loopback_without_port(r).as_deref() == Some(presented.as_str()))
            })
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
    #[serde(default)]
    pub(super) redirect_uris: Vec<String>,
    #[serde(default)]
    pub(super) loopback_any_port: bool,
    #[serde(default)]
    pub(super) require_pkce: Option<bool>,
    #[serde(default)]
    pub(super) consent: Option<String>,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) id_token_signed_response_alg: Option<String>,
    #[serde(default)]
    pub(super) post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    pub(super) backchannel_logout_uri: Option<String>,
}

/// The longest redirect URI accepted, in the config and in requests.
pub const MAX_REDIRECT_URI_LEN: usize = 2000;

/// Whether `host` (of an `http` URI, without port) is a loopback host.
/// Why the issuer may not POST to `uri` (a back-channel logout or a revocation-feed push
/// target), if it may not: it must be https, or http on loopback, with no fragment, wildcard or
/// user information.
pub(super) fn server_uri_problem(uri: &str) -> Option<&'static str> {
    if uri.starts_with("https://") || uri.starts_with("http://") {
        redirect_uri_problem(uri)
    } else {
        Some("the issuer POSTs to it: an https URI (http only on loopback)")
    }
}

fn loopback_host(host: &str) -> bool {
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `scheme://host[:port]` and the rest of an absolute `http(s)` URI, split.
fn authority_and_rest(uri: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = uri.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some((scheme, &rest[..end], &rest[end..]))
}

/// An `http` loopback URI with its port removed (for [`ClientSpec::redirect_uri_registered`]).
fn loopback_without_port(uri: &str) -> Option<String> {
    let (scheme, authority, rest) = authority_and_rest(uri)?;
    if scheme != "http" {
        return None;
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    loopback_host(host).then(|| format!("http://{host}{rest}"))
}

/// Why `uri` cannot be a redirect URI (RFC 6749 §3.1.2, RFC 8252 §7, RFC 9700 §2.1): `None`
/// when it can.
pub fn redirect_uri_problem(uri: &str) -> Option<&'static str> {
    if uri.len() > MAX_REDIRECT_URI_LEN {
        return Some("longer than 2000 characters");
    }
    if !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("only printable ASCII without spaces");
    }
    if uri.contains('#') {
        return Some("a redirect URI has no fragment (RFC 6749 3.1.2)");
    }
    if uri.contains('*') {
        return Some("no wildcards: redirect URIs are compared as exact strings");
    }
    let Some((scheme, _)) = uri.split_once(':') else {
        return Some("must be an absolute URI");
    };
    match scheme {
        "https" | "http" => {
            let Some((_, authority, _)) = authority_and_rest(uri) else {
                return Some("must be an absolute URI");
            };
            let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
            if host.is_empty() || authority.contains('@') {
                return Some("needs a host, without user information");
            }
            if scheme == "http" && !loopback_host(host) {
                return Some("http only on loopback (127.0.0.1, [::1], localhost); use https");
            }
            None
        }
        // RFC 8252 §7.1: a native app's private-use scheme, in reverse domain order.
        s if s.contains('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-')) =>
        {
            None
        }
        _ => Some("use https, http on loopback, or a private-use scheme like com.example.app"),
    }
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
                    "{at}.grants: unknown grant {g:?}; use password, refresh_token, client_credentials or authorization_code"
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
        for uri in &c.redirect_uris {
            if let Some(why) = redirect_uri_problem(uri) {
                problems.push(format!("{at}.redirect_uris: {uri:?}: {why}"));
            }
        }
        for uri in &c.post_logout_redirect_uris {
            if let Some(why) = redirect_uri_problem(uri) {
                problems.push(format!("{at}.post_logout_redirect_uris: {uri:?}: {why}"));
            }
        }
        if let Some(uri) = &c.backchannel_logout_uri
            && let Some(why) = server_uri_problem(uri)
        {
            problems.push(format!("{at}.backchannel_logout_uri: {uri:?}: {why}"));
        }
        if grants.contains(&GrantType::AuthorizationCode) {
            if c.redirect_uris.is_empty() {
                problems.push(format!(
                    "{at}.redirect_uris: the authorization_code grant needs the exact URIs to \
                     send the browser back to"
                ));
            }
            if refresh_delivery == RefreshDelivery::Cookie {
                problems.push(format!(
                    "{at}.grants: authorization_code delivers tokens in the token response; a \
                     cookie client signs in with /auth/login"
                ));
            }
        }
        let require_pkce = c.require_pkce.unwrap_or(true);
        if !require_pkce && kind == ClientKind::Public {
            problems.push(format!(
                "{at}.require_pkce: a public client must use PKCE (RFC 9700 2.1.1)"
            ));
        }
        if c.loopback_any_port && kind != ClientKind::Public {
            problems.push(format!(
                "{at}.loopback_any_port: for native (public) clients only (RFC 8252 7.3)"
            ));
        }
        let consent = match c.consent.as_deref() {
            None | Some("skip") => Consent::Skip,
            Some("once") => Consent::Once,
            Some("always") => Consent::Always,
            Some(other) => {
                problems.push(format!(
                    "{at}.consent: {other:?} must be skip, once or always"
                ));
                Consent::Skip
            }
        };
        if let Some(name) = &c.name
            && (name.trim().is_empty()
                || name.chars().count() > 100
                || name.chars().any(char::is_control))
        {
            problems.push(format!(
                "{at}.name: 1-100 characters, no control characters"
            ));
        }
        let id_token_signed_response_alg =
            c.id_token_signed_response_alg.as_deref().and_then(|a| {
                let alg = super::Alg::parse(a);
                if alg.is_none() {
                    problems.push(format!(
                        "{at}.id_token_signed_response_alg: {a:?} must be RS256, ES256 or EdDSA"
                    ));
                }
                alg
            });
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
            redirect_uris: c.redirect_uris,
            loopback_any_port: c.loopback_any_port,
            require_pkce,
            consent,
            name: c.name,
            id_token_signed_response_alg,
            post_logout_redirect_uris: c.post_logout_redirect_uris,
            backchannel_logout_uri: c.backchannel_logout_uri,
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
    let mut found = Vec::new();
    for c in clients {
        if c.may(GrantType::Password) {
            found.push(format!(
                "clients {}: the password grant is enabled; RFC 9700 2.4 forbids it in new \
                 designs (first-party apps use /auth/login)",
                c.id
            ));
        }
        if c.may(GrantType::AuthorizationCode) && !c.require_pkce {
            found.push(format!(
                "clients {}: require_pkce = false; PKCE also stops code injection, so keep it \
                 unless the client cannot send it (RFC 9700 2.1.1)",
                c.id
            ));
        }
    }
    found
}
