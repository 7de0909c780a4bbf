//! Scopes (RFC 6749 §3.3): what a request asks for, what its client may carry, what is granted.

use super::FlowError;
use crate::config::ClientSpec;
use crate::config::clients::valid_scope_token;

/// The account API's own scope (`/auth/sessions`, `/auth/logout-all`, `/auth/password`): a token
/// a resource server received for its own use does not carry it, so it cannot list or end the
/// user's sessions. Users do not hold it; a client may carry it when it lists it, or when it
/// has no scope list (a first-party client), and then gets it on a login that asks for no
/// particular scope.
pub const ACCOUNT: &str = "account";

/// OpenID Connect's scopes (Core §5.4, §11): they name claims and offline access, not
/// permissions, so users never hold them; a client that may carry one may ask for it for anyone.
pub const CLAIM_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Whether the user must hold `scope` to be granted it: not the issuer's own scopes.
fn held_by_users(scope: &str) -> bool {
    scope != ACCOUNT && !CLAIM_SCOPES.contains(&scope)
}

/// The scope parameter as distinct tokens in request order; `None` when absent or empty
/// (RFC 6749 §3.1: a parameter without a value is treated as omitted).
pub fn parse(raw: Option<&str>) -> Result<Option<Vec<String>>, FlowError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if raw.len() > 2048 {
        return Err(FlowError::InvalidRequest(
            "scope: at most 2048 characters".into(),
        ));
    }
    let mut scopes: Vec<String> = Vec::new();
    for token in raw.split(' ').filter(|t| !t.is_empty()) {
        if !valid_scope_token(token) {
            return Err(FlowError::InvalidScope(format!("{token:?} is not a scope")));
        }
        if !scopes.iter().any(|s| s == token) {
            scopes.push(token.to_owned());
        }
    }
    Ok((!scopes.is_empty()).then_some(scopes))
}

/// For a user's token: every requested scope must be one the client may carry (else
/// `invalid_scope`); the grant is what was requested that the user holds, or, with no request,
/// everything the user holds that the client may carry. Space-separated.
pub fn for_user(
    client: &ClientSpec,
    requested: Option<&[String]>,
    held: &[String],
) -> Result<String, FlowError> {
    let granted: Vec<&str> = match requested {
        Some(requested) => {
            if let Some(denied) = requested.iter().find(|s| !client.allows_scope(s)) {
                return Err(FlowError::InvalidScope(format!(
                    "the client may not request {denied:?}"
                )));
            }
            requested
                .iter()
                .filter(|s| held.contains(s) || !held_by_users(s))
                .map(String::as_str)
                .collect()
        }
        None => held
            .iter()
            .filter(|s| client.allows_scope(s) && held_by_users(s))
            .map(String::as_str)
            .chain(client.allows_scope(ACCOUNT).then_some(ACCOUNT))
            .collect(),
    };
    Ok(granted.join(" "))
}

/// For a client's own token: the requested scopes, all of which the client must have, or with
/// no request all it has.
pub fn for_client(client: &ClientSpec, requested: Option<&[String]>) -> Result<String, FlowError> {
    let own: &[String] = client.scopes.as_deref().unwrap_or(&[]);
    match requested {
        None => Ok(own.join(" ")),
        Some(requested) => match requested.iter().find(|s| !own.contains(s)) {
            Some(denied) => Err(FlowError::InvalidScope(format!(
                "the client has no scope {denied:?}"
            ))),
            None => Ok(requested.join(" ")),
        },
    }
}

/// The part of a session's scope still granted: held by the user now and allowed to the client.
pub fn still_granted(session_scope: &str, held: &str, client: &ClientSpec) -> String {
    let held: Vec<&str> = held.split(' ').filter(|s| !s.is_empty()).collect();
    session_scope
        .split(' ')
        .filter(|s| {
            !s.is_empty() && (held.contains(s) || !held_by_users(s)) && client.allows_scope(s)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// On refresh: a narrower scope may be asked for (RFC 6749 §6); nothing beyond the session's.
pub fn narrowed(session_scope: &str, requested: Option<&[String]>) -> Result<String, FlowError> {
    match requested {
        None => Ok(session_scope.to_owned()),
        Some(requested) => {
            let held: Vec<&str> = session_scope.split(' ').filter(|s| !s.is_empty()).collect();
            match requested.iter().find(|s| !held.contains(&s.as_str())) {
                Some(denied) => Err(FlowError::InvalidScope(format!(
                    "{denied:?} was not granted to this session"
                ))),
                None => Ok(requested.join(" ")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(scopes: Option<&[&str]>) -> ClientSpec {
        ClientSpec {
            scopes: scopes.map(|s| s.iter().map(|x| x.to_string()).collect()),
            ..ClientSpec::default_client()
        }
    }

    fn scopes(s: &str) -> Vec<String> {
        parse(Some(s)).unwrap().unwrap()
    }

    #[test]
    fn parsing_deduplicates_and_refuses_what_is_not_a_scope() {
        assert_eq!(scopes("a  b a"), vec!["a", "b"]);
        assert_eq!(parse(Some("")).unwrap(), None);
        assert_eq!(parse(None).unwrap(), None);
        assert!(matches!(
            parse(Some("a\"b")),
            Err(FlowError::InvalidScope(_))
        ));
    }

    #[test]
    fn users_get_what_they_hold_that_the_client_may_carry() {
        let held = scopes("read write admin");
        let limited = client(Some(&["read", "write"]));
        assert_eq!(for_user(&limited, None, &held).unwrap(), "read write");
        assert_eq!(
            for_user(&limited, Some(&scopes("read")), &held).unwrap(),
            "read"
        );
        assert!(for_user(&limited, Some(&scopes("admin")), &held).is_err());
        // Asking for a scope the user does not hold narrows the grant (RFC 6749 3.3).
        assert_eq!(
            for_user(&client(None), Some(&scopes("read other")), &held).unwrap(),
            "read"
        );
    }

    #[test]
    fn the_account_scope_is_the_issuers_not_a_users() {
        let held = scopes("read");
        // A first-party client gets it with everything else when asking for nothing...
        assert_eq!(
            for_user(&client(None), None, &held).unwrap(),
            "read account"
        );
        // ...and only what it asks for otherwise: a token for an API need not carry it.
        assert_eq!(
            for_user(&client(None), Some(&scopes("read")), &held).unwrap(),
            "read"
        );
        // A client with a scope list gets it only if listed.
        let third_party = client(Some(&["read"]));
        assert_eq!(for_user(&third_party, None, &held).unwrap(), "read");
        assert!(for_user(&third_party, Some(&scopes("account")), &held).is_err());
        let listed = client(Some(&["read", "account"]));
        assert_eq!(for_user(&listed, None, &held).unwrap(), "read account");
        // A refresh keeps it while the client may carry it, though no user holds it.
        assert_eq!(
            still_granted("read account", "read", &client(None)),
            "read account"
        );
        assert_eq!(still_granted("read account", "read", &third_party), "read");
    }

    #[test]
    fn clients_get_their_own_scopes_and_refreshes_only_narrow() {
        let billing = client(Some(&["billing:read", "billing:write"]));
        assert_eq!(
            for_client(&billing, None).unwrap(),
            "billing:read billing:write"
        );
        assert_eq!(
            for_client(&billing, Some(&scopes("billing:read"))).unwrap(),
            "billing:read"
        );
        assert!(for_client(&billing, Some(&scopes("admin"))).is_err());
        assert_eq!(for_client(&client(None), None).unwrap(), "");
        assert_eq!(narrowed("a b", Some(&scopes("b"))).unwrap(), "b");
        assert!(narrowed("a b", Some(&scopes("c"))).is_err());
        assert_eq!(narrowed("a b", None).unwrap(), "a b");
    }
}
