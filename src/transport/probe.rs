//! Misbehaving clients, for tests of how a node refuses them. Not a public API (re-exported
//! doc-hidden as `lumen::__probe` for integration tests).
//!
//! Each function is synchronous: it builds its own small tokio runtime, binds a client
//! endpoint on `127.0.0.1:0`, does its one thing against the node at `addr` and reports what
//! the node answered. None waits longer than [`PROBE_TIMEOUT`] for the node.
//!
//! [`DeafPeer`] is the other way round: a server on its own thread, for a node to dial, that
//! completes the lumen handshake and then never reads what it is sent.

use super::{
    describe_connection_error, frame, handshake, quic_transport_config, random_bytes, tls, Token,
    TransportConfig, CLOSE_NORMAL, PROTOCOL_VERSION,
};
use crate::error::Error;
use parking_lot::Mutex;
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

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

/// Runs `work` to completion on a thread named `name` with a single-threaded runtime of its
/// own (what the probes that outlive one call run on); errors name `addr`.
fn on_own_thread(
    addr: SocketAddr,
    name: &str,
    work: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<()>, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| error(addr, format!("cannot start {name}'s runtime: {e}")))?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runtime.block_on(work))
        .map_err(|e| error(addr, format!("cannot start {name}'s thread: {e}")))
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

/// Flow-control window a [`DeafPeer`] grants per stream, and four times that per connection:
/// small, so a node's sends stall after little data.
const DEAF_WINDOW: u32 = 256 << 10;

/// Close reason a [`DeafPeer`] gives when it stops.
pub const DEAF_PEER_STOPPED: &str = "the deaf peer stopped";

/// A lumen peer that never reads: it listens on `127.0.0.1`, accepts connections and completes
/// the lumen handshake (with the cluster token), then leaves every stream unread, so QUIC flow
/// control stalls whoever sends to it once a small window is full. Runs on its own thread
/// (with its own runtime) until [`close`](DeafPeer::close) or drop.
#[derive(Debug)]
pub struct DeafPeer {
    /// Where it listens.
    addr: SocketAddr,
    /// Why each connection to it ended, as it saw it (filled in as they end).
    closes: Arc<Mutex<Vec<String>>>,
    /// Tells its thread to stop.
    stop: Option<oneshot::Sender<()>>,
    /// Its thread.
    thread: Option<JoinHandle<()>>,
}

impl DeafPeer {
    /// Starts one that knows the cluster token given as 64 hex digits.
    pub fn start(token_hex: &str) -> Result<DeafPeer, Error> {
        let token = Token::parse(token_hex)?;
        let local: SocketAddr = ([127, 0, 0, 1], 0).into();
        let (stop, stopped) = oneshot::channel();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let closes = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let closes = closes.clone();
            on_own_thread(local, "lumen-deaf-peer", async move {
                match deaf_endpoint(local) {
                    Ok((endpoint, fingerprint)) => {
                        let _ = ready_tx.send(endpoint.local_addr().map_err(|e| {
                            error(local, format!("cannot read the bound address: {e}"))
                        }));
                        serve_deaf(endpoint, token, fingerprint, closes, stopped).await
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?
        };
        let addr = match ready.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(error(local, "the deaf peer's thread died while starting")),
        };
        Ok(DeafPeer {
            addr,
            closes,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Why the connections to it that have ended did, as it saw it (the node's close reason
    /// for those the node closed).
    pub fn close_reasons(&self) -> Vec<String> {
        self.closes.lock().clone()
    }

    /// Closes every connection (orderly, with [`DEAF_PEER_STOPPED`]), lets the closes reach the
    /// nodes (for at most a second) and stops.
    pub fn close(mut self) {
        self.stop_thread();
    }

    /// Tells the thread to stop (once) and waits for it.
    fn stop_thread(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for DeafPeer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// A server endpoint on `local` with a fresh identity and small receive windows, and the
/// fingerprint of its certificate.
fn deaf_endpoint(local: SocketAddr) -> Result<(quinn::Endpoint, [u8; 32]), Error> {
    let identity = tls::Identity::generate()?;
    let mut quic = quic_transport_config(&TransportConfig::new(local, Token([0; 32])))?;
    quic.stream_receive_window(quinn::VarInt::from_u32(DEAF_WINDOW))
        .receive_window(quinn::VarInt::from_u32(4 * DEAF_WINDOW));
    let config = identity.server_config(Arc::new(quic))?;
    let endpoint = quinn::Endpoint::server(config, local)
        .map_err(|e| error(local, format!("cannot bind the deaf peer's socket: {e}")))?;
    Ok((endpoint, identity.fingerprint()))
}

/// Accepts and authenticates connections until `stopped`, reading nothing after the
/// handshake; records why each ended; on stop closes them all.
async fn serve_deaf(
    endpoint: quinn::Endpoint,
    token: Token,
    fingerprint: [u8; 32],
    closes: Arc<Mutex<Vec<String>>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let token = Arc::new(token);
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = &mut stopped => None,
        };
        let Some(incoming) = incoming else { break };
        let (token, closes) = (token.clone(), closes.clone());
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            if handshake::accept(&conn, &token.0, &fingerprint)
                .await
                .is_err()
            {
                return;
            }
            // Holds the connection (and so its unread streams) until it ends.
            let e = conn.closed().await;
            closes.lock().push(describe_connection_error(&e, None));
        });
    }
    endpoint.close(CLOSE_NORMAL, DEAF_PEER_STOPPED.as_bytes());
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// What [`Squatters`] managed.
#[derive(Clone, Debug, Default)]
pub struct SquatReport {
    /// Connections that completed TLS (each then never authenticated).
    pub connections: u64,
    /// Unidirectional streams the node let them open.
    pub uni_streams: u64,
    /// Bytes handed to those streams.
    pub bytes_written: u64,
    /// Why the node closed each connection that it closed.
    pub close_reasons: Vec<String>,
}

/// Zeros to send.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Unidirectional streams each squatting connection tries to open.
const SQUAT_STREAMS: usize = 64;

/// Peers that never authenticate and push as much as the node lets them: `n` connections that
/// complete TLS, start a hello that never ends, and open as many unidirectional streams as the
/// node allows, writing zeros into each until flow control stops them. A connection the node
/// closes (its hello timeout) is replaced at once, so there are `n` of them until
/// [`stop`](Squatters::stop). Runs on its own thread.
#[derive(Debug)]
pub struct Squatters {
    addr: SocketAddr,
    report: Arc<Mutex<SquatReport>>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Squatters {
    /// Starts `n` against the node at `addr`; returns once each has its first connection up.
    pub fn start(addr: SocketAddr, n: usize) -> Result<Squatters, Error> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let report = Arc::new(Mutex::new(SquatReport::default()));
        let thread = {
            let report = report.clone();
            on_own_thread(addr, "lumen-squatters", async move {
                let mut slots = tokio::task::JoinSet::new();
                for _ in 0..n {
                    let (report, stopped, ready) =
                        (report.clone(), stopped.clone(), ready_tx.clone());
                    slots.spawn(squat_slot(addr, report, stopped, ready));
                }
                drop(ready_tx);
                while slots.join_next().await.is_some() {}
            })?
        };
        let mut squatters = Squatters {
            addr,
            report,
            stop: Some(stop),
            thread: Some(thread),
        };
        for _ in 0..n {
            match ready.recv_timeout(PROBE_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    squatters.stop_thread();
                    return Err(error(addr, "the squatters could not connect in time"));
                }
            }
        }
        Ok(squatters)
    }

    /// What they managed so far.
    pub fn report(&self) -> SquatReport {
        self.report.lock().clone()
    }

    /// Closes every connection and stops; what they managed.
    pub fn stop(mut self) -> SquatReport {
        self.stop_thread();
        self.report()
    }

    fn stop_thread(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!(addr = %self.addr, "the squatters' thread panicked");
            }
        }
    }
}

impl Drop for Squatters {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// One squatting connection after another until stopped; the first one's setup is reported on
/// `ready`.
async fn squat_slot(
    addr: SocketAddr,
    report: Arc<Mutex<SquatReport>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    ready: std::sync::mpsc::Sender<Result<(), Error>>,
) {
    let mut ready = Some(ready);
    while !*stopped.borrow() {
        let (endpoint, conn) = match connect(addr).await {
            Ok((endpoint, conn, _)) => (endpoint, conn),
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                // The node is busy refusing: try again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        report.lock().connections += 1;
        // A hello that never ends: two bytes of its length prefix (kept open until the end).
        let _hello = match conn.open_bi().await {
            Ok((mut send, recv)) => {
                let _ = send.write_all(&[0, 0]).await;
                Some((send, recv))
            }
            Err(_) => None,
        };
        let mut streams = tokio::task::JoinSet::new();
        for _ in 0..SQUAT_STREAMS {
            let (conn, report) = (conn.clone(), report.clone());
            streams.spawn(async move {
                let Ok(mut s) = conn.open_uni().await else {
                    return;
                };
                report.lock().uni_streams += 1;
                while s
                    .write_chunk(bytes::Bytes::from_static(&ZEROS))
                    .await
                    .is_ok()
                {
                    report.lock().bytes_written += ZEROS.len() as u64;
                }
            });
        }
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        }
        tokio::select! {
            e = conn.closed() => {
                report.lock().close_reasons.push(describe_connection_error(&e, None));
            }
            _ = stopped.changed() => {}
        }
        streams.abort_all();
        finish(&endpoint, &conn).await;
    }
}
