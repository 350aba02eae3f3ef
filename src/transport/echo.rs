//! The transport alone, for measuring what it costs: an [`Echo`] is a lumen transport that
//! answers every request with the request's own payload, and sends requests of its own from
//! the calling thread. Two of them in two processes give the round trip that every call
//! between processes pays at least — one request and one reply over QUIC, framed and
//! authenticated as lumen's are, with no actor, scheduler or object store in between — which
//! is the floor under the microbenchmark's cross-process rows. Not a public API (re-exported
//! doc-hidden as `lumen::__echo` for the microbenchmark and tests).

use super::{Conn, Delivery, Inbound, Token, Transport, TransportConfig};
use crate::error::Error;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;

/// Answers each request with its payload; drops one-way messages.
struct Mirror;

impl Inbound for Mirror {
    fn deliver(&self, conn: Conn, delivery: Delivery) {
        if let Delivery::Request { id, payload } = delivery {
            conn.reply(id, payload);
        }
    }
}

/// A transport bound to `127.0.0.1` on a runtime of its own, that echoes what it is asked.
///
/// ```no_run
/// # fn main() -> lumen::Result<()> {
/// let far = lumen::__echo::Echo::start(None, 2)?;
/// let near = lumen::__echo::Echo::start(Some(&far.token_hex()), 2)?;
/// assert_eq!(&near.round_trip(far.addr(), b"ok")?[..], b"ok");
/// # Ok(()) }
/// ```
pub struct Echo {
    transport: Arc<Transport>,
    token_hex: String,
    /// Kept last: the transport's tasks run here, so it goes after the transport closes.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Echo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Echo")
            .field("addr", &self.transport.local_addr())
            .finish()
    }
}

impl Echo {
    /// Binds one on `127.0.0.1:0` with the cluster token given as 64 hex digits (a fresh one
    /// when `None`), on a multi-thread runtime of `threads` workers (as a node's event loop).
    pub fn start(token_hex: Option<&str>, threads: usize) -> Result<Echo, Error> {
        let token = match token_hex {
            Some(hex) => Token::parse(hex)?,
            None => Token::random(),
        };
        let token_hex = token.to_hex();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("lumen-echo")
            .enable_all()
            .build()
            .map_err(|e| Error::invalid(format!("cannot start the echo's runtime: {e}")))?;
        let transport = {
            let _in_runtime = runtime.enter();
            let config = TransportConfig::new(([127, 0, 0, 1], 0).into(), token);
            Transport::bind(config, Arc::new(Mirror))?
        };
        Ok(Echo {
            transport,
            token_hex,
            runtime: Some(runtime),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// Its cluster token, as 64 hex digits (for the echo at the other end).
    pub fn token_hex(&self) -> String {
        self.token_hex.clone()
    }

    /// Sends `payload` as a request to the echo at `to` and waits, on the calling thread
    /// (which must not be one of a tokio runtime's), for the reply: the payload back. The first
    /// call to a peer also dials and authenticates.
    pub fn round_trip(&self, to: SocketAddr, payload: &[u8]) -> Result<Bytes, Error> {
        futures::executor::block_on(self.transport.request(to, Bytes::copy_from_slice(payload)))
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.transport.close();
        if let Some(runtime) = self.runtime.take() {
            runtime.block_on(
                self.transport
                    .wait_closed(std::time::Duration::from_secs(1)),
            );
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_comes_back_as_it_went() {
        let far = Echo::start(None, 1).unwrap();
        let near = Echo::start(Some(&far.token_hex()), 1).unwrap();
        for payload in [&b""[..], b"ok", &[7u8; 100_000][..]] {
            assert_eq!(&near.round_trip(far.addr(), payload).unwrap()[..], payload);
        }
    }

    #[test]
    fn another_clusters_echo_is_refused_with_why() {
        let far = Echo::start(None, 1).unwrap();
        let stranger = Echo::start(None, 1).unwrap();
        let e = stranger.round_trip(far.addr(), b"ok").unwrap_err();
        assert!(
            matches!(e, Error::Connection { .. }) && e.to_string().contains("token"),
            "{e}"
        );
    }
}
