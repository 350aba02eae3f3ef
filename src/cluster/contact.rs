//! How a process finds and reaches a cluster: its address (`HOST:PORT` or `auto`), its token,
//! the local address facing it, and a [`Builder`] for a process that joins it.

use crate::cluster::builder::Builder;
use crate::cluster::session;
use crate::error::{Error, Result};
use crate::node::processes::env;
use crate::transport::{Token, TransportConfig};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Resolves `HOST:PORT` (or `auto`: the head started on this machine).
pub(crate) fn resolve_address(address: &str) -> Result<SocketAddr> {
    let text = if address == "auto" {
        session::local_head().ok_or_else(|| {
            Error::connection(
                "auto",
                "no cluster is running on this machine (start one with `lumen start --head`)",
            )
        })?
    } else {
        address.to_string()
    };
    text.to_socket_addrs()
        .map_err(|e| Error::connection(&text, format!("not a HOST:PORT address: {e}")))?
        .next()
        .ok_or_else(|| Error::connection(&text, "the address resolves to nothing"))
}

/// The cluster token: given, else `LUMEN_TOKEN`, else the session folder of a local head.
pub(crate) fn find_token(given: Option<&str>, address: &str) -> Result<Token> {
    if let Some(t) = given {
        return Token::parse(t);
    }
    if let Ok(t) = std::env::var(env::TOKEN) {
        if !t.trim().is_empty() {
            return Token::parse(&t);
        }
    }
    match session::local_token(Some(address)) {
        Some(t) => Token::parse(&t),
        None => Err(Error::connection(
            address,
            "no cluster token: set LUMEN_TOKEN (or Config::token, or --token) to the token \
             `lumen start --head` printed; on the head's machine it is found automatically",
        )),
    }
}

impl Builder {
    /// A process that joins the cluster whose GCS is at `gcs_addr` with `token` (a driver, or a
    /// client such as `lumen status`): its endpoint faces the GCS, and a head started on this
    /// machine is pinned to exactly its certificate.
    pub(crate) fn towards(
        name: &'static str,
        threads: usize,
        gcs_addr: SocketAddr,
        token: Token,
    ) -> Builder {
        let mut b = Builder::new(name, threads);
        b.endpoint = Some(TransportConfig::new(
            SocketAddr::new(local_ip_towards(gcs_addr), 0),
            token,
        ));
        if let Some(fp) = session::local_fingerprint(gcs_addr) {
            b.pins.push((gcs_addr, fp));
        }
        b.gcs_at = Some(gcs_addr);
        b
    }
}

/// The local IP address that reaches `peer` (what this process advertises to it).
pub(crate) fn local_ip_towards(peer: SocketAddr) -> IpAddr {
    if peer.ip().is_loopback() {
        return peer.ip();
    }
    let probe = std::net::UdpSocket::bind(("0.0.0.0", 0)).and_then(|s| {
        s.connect(peer)?;
        s.local_addr()
    });
    probe.map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip())
}
