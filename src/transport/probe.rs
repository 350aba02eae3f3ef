//! Misbehaving clients, for tests of how a node refuses them. Not a public API (re-exported
//! doc-hidden as `lumen::__probe` for integration tests).
//!
//! Each function is synchronous: it builds its own small tokio runtime, binds a client
//! endpoint on `127.0.0.1:0`, does its one thing against the node at `addr` and reports what
//! the node answered. None waits longer than [`PROBE_TIMEOUT`] for the node.

use super::{
    describe_connection_error, frame, handshake, quic_transport_config, random_bytes, tls, Token,
    TransportConfig, PROTOCOL_VERSION,
};
use crate::error::Error;
use parking_lot::Mutex;
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

/// Longest a probe waits for the node to answer or close.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// An [`Error::Connection`] for the node at `addr`.
fn error(addr: SocketAddr, reason: impl Into<String>) -> Error {
    Error::Connection {
        peer: addr.to_string(),
        reason: reason.into(),
    }
}

/// Runs `f` on a fresh single-threaded runtime, bounded by [`PROBE_TIMEOUT`] (twice: connect,
/// then wait).
pub(crate) fn run<T>(
    addr: SocketAddr,
    f: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| error(addr, format!("cannot start the probe's runtime: {e}")))?;
    runtime.block_on(async {
        tokio::time::timeout(2 * PROBE_TIMEOUT, f)
            .await
            .unwrap_or_else(|_| Err(error(addr, "the probe timed out")))
    })
}

/// A client endpoint and a TLS-level connection to `addr` (no lumen handshake yet), with the
/// fingerprint of the certificate the node presented.
pub(crate) async fn connect(
    addr: SocketAddr,
) -> Result<(quinn::Endpoint, quinn::Connection, [u8; 32]), Error> {
    let local: SocketAddr = ([127, 0, 0, 1], 0).into();
    let endpoint = quinn::Endpoint::client(local)
        .map_err(|e| error(addr, format!("cannot bind the probe's endpoint: {e}")))?;
    let quic = Arc::new(quic_transport_config(&TransportConfig::new(
        local,
        Token([0; 32]),
    ))?);
    let seen = Arc::new(Mutex::new(tls::Seen::default()));
    let config = tls::client_config(None, seen.clone(), quic)?;
    let connecting = endpoint
        .connect_with(config, addr, tls::SERVER_NAME)
        .map_err(|e| error(addr, format!("cannot start a QUIC connection: {e}")))?;
    let conn = tokio::time::timeout(PROBE_TIMEOUT, connecting)
        .await
        .map_err(|_| error(addr, "no QUIC handshake within the probe timeout"))?
        .map_err(|e| error(addr, describe_connection_error(&e, None)))?;
    let fingerprint = seen
        .lock()
        .fingerprint
        .ok_or_else(|| error(addr, "the node presented no certificate"))?;
    Ok((endpoint, conn, fingerprint))
}

/// Waits for the node to close `conn` and returns the reason it gave.
pub(crate) async fn node_close_reason(
    addr: SocketAddr,
    conn: &quinn::Connection,
) -> Result<String, Error> {
    match tokio::time::timeout(PROBE_TIMEOUT, conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
            Ok(String::from_utf8_lossy(&close.reason).into_owned())
        }
        Ok(other) => Err(error(addr, describe_connection_error(&other, None))),
        Err(_) => Err(error(
            addr,
            "the node did not close the connection within the probe timeout",
        )),
    }
}

/// Sends the lumen hello (with `token`, or a zero proof) and checks the node's answer.
async fn authenticate(
    addr: SocketAddr,
    conn: &quinn::Connection,
    fingerprint: &[u8; 32],
    token: Option<&Token>,
    version: u32,
) -> Result<(), Error> {
    let nonce = random_bytes()?;
    let mut hello = handshake::make_hello(token.map(|t| &t.0), fingerprint, None, nonce);
    hello.version = version;
    let answer = handshake::exchange(conn, &hello)
        .await
        .map_err(|reason| error(addr, reason))?;
    let key = token.map_or([0; 32], |t| t.0);
    handshake::check_answer(&answer, &key, fingerprint, &nonce)
        .map_err(|reason| error(addr, reason))
}

/// Closes the probe's connection politely and lets the close reach the node.
async fn finish(endpoint: &quinn::Endpoint, conn: &quinn::Connection) {
    conn.close(super::CLOSE_NORMAL, b"probe done");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// Sends UDP datagrams of random bytes (some shaped like a QUIC initial packet) to `addr`.
pub fn send_garbage_udp(addr: SocketAddr) -> std::io::Result<()> {
    let socket = UdpSocket::bind(("127.0.0.1", 0))?;
    for size in [1usize, 7, 100, 1200, 1350, 1500] {
        let mut datagram = vec![0u8; size];
        getrandom::getrandom(&mut datagram).map_err(|e| std::io::Error::other(e.to_string()))?;
        socket.send_to(&datagram, addr)?;
        if size >= 5 {
            // A long-header packet claiming QUIC v1, with garbage after it.
            datagram[0] = 0xc3;
            datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
            socket.send_to(&datagram, addr)?;
        }
    }
    Ok(())
}

/// A full client handshake with the token given as hex (`None`: no token, a zero proof).
/// Returns `Ok` if the node accepted it, else the refusal as [`Error::Connection`] carrying
/// the node's reason.
pub fn handshake_with_token(addr: SocketAddr, token_hex: Option<&str>) -> Result<(), Error> {
    let token = token_hex.map(Token::parse).transpose()?;
    run(addr, async move {
        let (endpoint, conn, fingerprint) = connect(addr).await?;
        let result =
            authenticate(addr, &conn, &fingerprint, token.as_ref(), PROTOCOL_VERSION).await;
        finish(&endpoint, &conn).await;
        result
    })
}

/// Completes TLS, then writes garbage on the hello stream; returns the reason the node gave
/// when it closed the connection.
pub fn garbage_hello(addr: SocketAddr) -> Result<String, Error> {
    run(addr, async move {
        let (endpoint, conn, _) = connect(addr).await?;
        let (mut send, _recv) = conn
            .open_bi()
            .await
            .map_err(|e| error(addr, describe_connection_error(&e, None)))?;
        let garbage: [u8; 200] = random_bytes()?;
        send.write_all(&garbage)
            .await
            .map_err(|e| error(addr, format!("cannot write the garbage hello: {e}")))?;
        let _ = send.finish();
        let reason = node_close_reason(addr, &conn).await;
        finish(&endpoint, &conn).await;
        reason
    })
}

/// Authenticates with `token_hex`, then opens a control stream and writes a frame header
/// announcing `announced_len` payload bytes; returns the reason the node gave when it closed
/// the connection.
pub fn oversized_frame(
    addr: SocketAddr,
    token_hex: &str,
    announced_len: u32,
) -> Result<String, Error> {
    let token = Token::parse(token_hex)?;
    run(addr, async move {
        let (endpoint, conn, fingerprint) = connect(addr).await?;
        authenticate(addr, &conn, &fingerprint, Some(&token), PROTOCOL_VERSION).await?;
        let mut stream = conn
            .open_uni()
            .await
            .map_err(|e| error(addr, describe_connection_error(&e, None)))?;
        let mut bytes = vec![frame::STREAM_CONTROL];
        bytes.extend_from_slice(&frame::encode_header(frame::KIND_MESSAGE, 0, announced_len));
        stream
            .write_all(&bytes)
            .await
            .map_err(|e| error(addr, format!("cannot write the frame header: {e}")))?;
        let reason = node_close_reason(addr, &conn).await;
        finish(&endpoint, &conn).await;
        reason
    })
}

/// Sends a hello (with a valid proof) claiming protocol version `PROTOCOL_VERSION + 1`;
/// returns the reason the node gave when it refused and closed the connection.
pub fn version_mismatch(addr: SocketAddr, token_hex: &str) -> Result<String, Error> {
    let token = Token::parse(token_hex)?;
    run(addr, async move {
        let (endpoint, conn, fingerprint) = connect(addr).await?;
        match authenticate(
            addr,
            &conn,
            &fingerprint,
            Some(&token),
            PROTOCOL_VERSION + 1,
        )
        .await
        {
            Ok(()) => {
                finish(&endpoint, &conn).await;
                Err(error(
                    addr,
                    format!(
                        "the node accepted a hello for protocol v{}",
                        PROTOCOL_VERSION + 1
                    ),
                ))
            }
            Err(_) => {
                let reason = node_close_reason(addr, &conn).await;
                finish(&endpoint, &conn).await;
                reason
            }
        }
    })
}
