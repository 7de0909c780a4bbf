//! The top-level settings: the issuer URL (`iss`, and the base of every URL in discovery), the
//! address to listen on, and the proxies in front of it that report client addresses.

use std::net::SocketAddr;

/// Which header a trusted proxy reports the client's address in. Only one is read: a proxy
/// that appends to one passes the other through as the client wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx, HAProxy, cloud load balancers).
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// The validated top-level settings.
pub(super) struct Server {
    pub(super) issuer: String,
    pub(super) listen: SocketAddr,
    pub(super) trusted_proxies: Vec<ipnet::IpNet>,
    pub(super) forwarded_header: ForwardedHeader,
}

pub(super) fn validate(raw: &super::raw::RawConfig, problems: &mut Vec<String>) -> Server {
    let issuer = raw.issuer.trim_end_matches('/').to_owned();
    if !(issuer.starts_with("https://") || issuer.starts_with("http://"))
        || issuer.contains(['?', '#', ' '])
    {
        problems.push(format!(
            "issuer: {issuer:?} must be an http(s) URL without query or fragment"
        ));
    }
    if issuer.starts_with("http://") && !raw.allow_insecure_issuer && !is_loopback_url(&issuer) {
        problems.push(format!(
            "issuer: {issuer:?} is not https; tokens and cookies would travel in clear. Use the \
             public https URL (TLS may end at a proxy), or set allow_insecure_issuer = true"
        ));
    }
    let listen = match raw.listen.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            problems.push(format!(
                "listen: {:?} must be IP:PORT, e.g. \"127.0.0.1:8080\"",
                raw.listen
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };

    let mut trusted_proxies = Vec::new();
    for (i, cidr) in raw.trusted_proxies.iter().enumerate() {
        // A bare address is a /32 (or /128).
        let parsed = cidr
            .parse::<ipnet::IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => problems.push(format!(
                "trusted_proxies[{i}]: {cidr:?} is not an IP address or CIDR (e.g. \"10.0.0.0/8\")"
            )),
        }
    }

    let forwarded_header = match raw.forwarded_header.to_ascii_lowercase().as_str() {
        "x-forwarded-for" => ForwardedHeader::XForwardedFor,
        "forwarded" => ForwardedHeader::Forwarded,
        other => {
            problems.push(format!(
                "forwarded_header: {other:?} must be x-forwarded-for or forwarded (RFC 7239)"
            ));
            ForwardedHeader::XForwardedFor
        }
    };

    Server {
        issuer,
        listen,
        trusted_proxies,
        forwarded_header,
    }
}

/// `http://localhost…`, `http://127.x.x.x…`, `http://[::1]…`: development on one machine.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
