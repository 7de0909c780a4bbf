//! `latchkey healthcheck [URL]`: one HTTP/1.1 GET to a loopback address, exit 0 on a 200. The
//! container image has no shell and no curl; its HEALTHCHECK runs this.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::CliError;

const TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(url: &str) -> Result<(), CliError> {
    let (addr, path) = parse(url)?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| CliError(format!("healthcheck: cannot connect to {addr}: {e}")))?;
    let io = |e: std::io::Error| CliError(format!("healthcheck: {addr}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    // The status line is all that matters; read at most a little.
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(io)?;
    let line = String::from_utf8_lossy(&head[..n]);
    match line.split(' ').nth(1) {
        Some("200") => Ok(()),
        Some(status) => Err(CliError(format!("healthcheck: {url} answered {status}"))),
        None => Err(CliError(format!("healthcheck: {url} sent no HTTP status"))),
    }
}

/// `http://IP:PORT/PATH` only: the probe runs beside the server, never across a network.
fn parse(url: &str) -> Result<(SocketAddr, String), CliError> {
    let bad = || CliError(format!("healthcheck: {url:?} is not http://IP:PORT/PATH"));
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = authority
        .replace("localhost", "127.0.0.1")
        .parse::<SocketAddr>()
        .map_err(|_| bad())?;
    Ok((addr, format!("/{path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_loopback_style_ip_port_and_path() {
        let (addr, path) = parse("http://127.0.0.1:8080/healthz").unwrap();
        assert_eq!((addr.port(), path.as_str()), (8080, "/healthz"));
        assert_eq!(parse("http://localhost:9/").unwrap().0.port(), 9);
        assert_eq!(parse("http://[::1]:80").unwrap().1, "/");
        for bad in [
            "https://x:1/",
            "http://example.com/healthz",
            "127.0.0.1:8080",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
