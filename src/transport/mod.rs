//! The process-to-process transport: authenticated, ordered messages and request/reply over
//! QUIC.
//!
//! A [`Transport`] owns one quinn endpoint that both accepts and dials connections, a cache of
//! connections by peer address, and the tasks that drive them. Each connection is
//! authenticated by the cluster [`Token`] (see `handshake.rs`), then each side opens one
//! unidirectional *control stream* for its frames (see `frame.rs`); payloads above the
//! `blob_threshold` travel on their own unidirectional *blob stream* while the control stream
//! carries a marker in their place, so delivery order per connection is the order of sending
//! whatever the sizes.
//!
//! Per connection there is one writer task (drains the connection's queue, batching whatever
//! is queued into one write), one reader task for the peer's control stream (delivers to
//! [`Inbound`] in order, resolves replies), one task per incoming blob, and one watcher that
//! cleans up when the connection ends: pending requests fail with [`Error::Connection`]
//! naming the peer and the reason, the cache entry goes, and [`Inbound::connection_lost`] is
//! called.
//!
//! # Backpressure
//!
//! A peer that stops reading (or a link slower than the sender) must not make this process's
//! memory grow without bound, so each connection counts the payload bytes queued for it —
//! messages, requests and replies, blobs included — from the moment they are queued until the
//! writer has handed them to quinn (a blob: until its last chunk is handed over, or it fails).
//! quinn itself buffers at most its send window per connection. Two limits apply to that count
//! (see [`TransportConfig::queue_soft_limit`] and [`TransportConfig::queue_hard_limit`]):
//!
//! - At the **soft limit** (64 MiB by default), a caller that may block — one on a thread
//!   outside any tokio runtime — waits in [`Transport::send`] / [`Transport::request`] (on a
//!   condition variable, woken as the writer drains) until the count is below the soft limit
//!   again, or the connection closes (then the message is dropped like the rest of the queue,
//!   and the request fails with the connection's reason). A caller inside a tokio runtime (the
//!   node's event loops, actix arbiters, blocking-pool threads) never waits: it queues anyway.
//!   Requests wait in their synchronous part, so sends and requests from one thread keep their
//!   order.
//! - At the **hard limit** (four times the soft limit by default), the peer is taken to be not
//!   reading: an item that would take the count over it, with at least the soft limit already
//!   queued, is not queued; instead the connection is closed with a reason naming the peer and
//!   the amounts, logged as a warning, and torn down as usual — pending requests fail with that
//!   reason and [`Inbound::connection_lost`] is called. (An item queued while less than the soft
//!   limit is queued is always accepted, so one payload larger than the limits can still
//!   travel; callers that wait at the soft limit therefore never trip the hard limit
//!   themselves.)
//!
//! The common path costs one atomic add when queuing and one atomic subtract per written batch;
//! locks are taken only by a caller that has to wait and by the writer when the count falls
//! back below the soft limit.

pub mod echo;
pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod net;
pub mod probe;
pub(crate) mod tls;

use crate::error::Error;
use bytes::{BufMut, Bytes, BytesMut};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use frame::{Frame, Kind};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, info_span, warn, Instrument};

/// Version of the lumen wire protocol; peers with another version are refused. Raised when a
/// message changes shape (v2: reads of objects may be answered with shared memory; v3: reads
/// of kept copies by range, from several holders, and copies moved to another holder).
pub(crate) const PROTOCOL_VERSION: u32 = 3;

/// Application close code: orderly close (the transport shut down).
pub(crate) const CLOSE_NORMAL: quinn::VarInt = quinn::VarInt::from_u32(0);
/// Application close code: the handshake was refused; the reason says why.
pub(crate) const CLOSE_REFUSED: quinn::VarInt = quinn::VarInt::from_u32(1);
/// Application close code: the peer broke the protocol (oversized or malformed frame, ...).
pub(crate) const CLOSE_PROTOCOL: quinn::VarInt = quinn::VarInt::from_u32(2);
/// Application close code: the peer did not read what was sent to it, and the queue for it
/// reached the hard limit; the reason gives the amounts.
pub(crate) const CLOSE_OVERLOAD: quinn::VarInt = quinn::VarInt::from_u32(3);

/// The writer stops batching once this many bytes are queued for one write.
const BATCH_BYTES: usize = 1 << 20;
/// Blob payloads are written in chunks of this size.
const BLOB_CHUNK: usize = 1 << 20;
/// What one queued item costs beyond its payload (the queue entry, the frame header), as the
/// queue limits count it.
const ITEM_OVERHEAD: usize = 64;
/// First allocation for an incoming blob, once its first bytes arrive.
const BLOB_PREALLOC: usize = BLOB_CHUNK;
/// Blobs up to this size get their whole buffer when their first bytes arrive.
const BLOB_EXACT: usize = 1 << 30;
/// Such a blob ends on a multiple of this in memory: a large value that ends a reply (its
/// tail) is then aligned for any element type when decoded in place, whatever the length of
/// the message before it (its length is a multiple of its element's size).
const BLOB_ALIGN: usize = 64;
/// What a peer may have in flight to this process, over all its streams, before its hello is
/// verified (a hello is at most [`handshake::MAX_HELLO`] bytes): an unauthenticated
/// connection costs this much buffer at most, not [`RECEIVE_WINDOW`].
const PRE_AUTH_WINDOW: u32 = 64 << 10;
/// The connection's receive window once the peer is authenticated, sized for large blobs.
const RECEIVE_WINDOW: u32 = 64 << 20;
/// Unidirectional streams a peer may have open at once once authenticated (none before).
const UNI_STREAMS: u32 = 1024;
/// Connections that have not yet proved the token, at most, per endpoint: more are refused.
/// Past half of it, a new peer must first prove its address (a QUIC retry), so that spoofed
/// source addresses cannot take the slots.
const MAX_UNAUTHENTICATED: usize = 64;
/// Close reason sent to every peer when the transport closes.
const SHUTDOWN_REASON: &str = "the lumen transport was closed";

/// Fills an array with random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|e| Error::Connection {
        peer: "local endpoint".into(),
        reason: format!("the operating system's random number generator failed: {e}"),
    })?;
    Ok(bytes)
}

/// The cluster secret: 32 random bytes, written as 64 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token(pub(crate) [u8; 32]);

impl Token {
    /// A fresh random token.
    ///
    /// # Panics
    /// If the operating system's random number generator fails: a guessable cluster secret is
    /// worse than no cluster.
    pub(crate) fn random() -> Token {
        match random_bytes() {
            Ok(bytes) => Token(bytes),
            Err(e) => panic!("cannot generate a cluster token: {e}"),
        }
    }

    /// The token as 64 lowercase hex digits.
    pub(crate) fn to_hex(&self) -> String {
        tls::fingerprint_hex(&self.0)
    }

    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub(crate) fn parse(s: &str) -> Result<Token, Error> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(Error::invalid(format!(
                "a cluster token is 64 hex digits (as printed by the head node), but the one \
                 given has {} characters",
                s.chars().count()
            )));
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => bytes[i] = (hi * 16 + lo) as u8,
                _ => {
                    return Err(Error::invalid(format!(
                        "a cluster token is 64 hex digits (0-9, a-f), but the one given has a \
                         non-hex character near position {}",
                        2 * i + 1
                    )))
                }
            }
        }
        Ok(Token(bytes))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Settings of a [`Transport`].
#[derive(Debug, Clone)]
pub(crate) struct TransportConfig {
    /// Address to bind the UDP socket to (port 0: any free port).
    pub(crate) bind: SocketAddr,
    /// The cluster secret every peer must prove it holds.
    pub(crate) token: Token,
    /// Largest control frame payload accepted; a frame announcing more closes the connection.
    pub(crate) max_frame: usize,
    /// Payloads above this travel on their own stream, in chunks.
    pub(crate) blob_threshold: usize,
    /// Largest blob accepted; a blob announcing more closes the connection.
    pub(crate) max_blob: u64,
    /// A connection with no traffic for this long is considered dead.
    pub(crate) idle_timeout: Duration,
    /// Interval of keep-alive packets on idle connections.
    pub(crate) keep_alive: Duration,
    /// Payload bytes queued for one connection at which a sender outside any tokio runtime
    /// waits for the writer to catch up (see the module docs on backpressure). Must not be 0.
    pub(crate) queue_soft_limit: usize,
    /// Payload bytes queued for one connection over which the connection is closed: its peer is
    /// not reading (see the module docs on backpressure). `None`: four times
    /// [`queue_soft_limit`](Self::queue_soft_limit). Must not be below the soft limit.
    pub(crate) queue_hard_limit: Option<usize>,
}

impl TransportConfig {
    /// The defaults: 8 MiB frames, 256 KiB blob threshold, 8 GiB blobs, 10 s idle timeout,
    /// 1 s keep-alive, queue limits of 64 MiB (soft) and 256 MiB (hard) per connection.
    pub(crate) fn new(bind: SocketAddr, token: Token) -> Self {
        TransportConfig {
            bind,
            token,
            max_frame: 8 << 20,
            blob_threshold: 256 << 10,
            max_blob: 8 << 30,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(1),
            queue_soft_limit: 64 << 20,
            queue_hard_limit: None,
        }
    }

    /// The queue limits these settings give, checked.
    fn queue_limits(&self) -> Result<QueueLimits, Error> {
        let soft = self.queue_soft_limit;
        let hard = self.queue_hard_limit.unwrap_or(soft.saturating_mul(4));
        if soft == 0 {
            return Err(Error::invalid(
                "the transport's queue soft limit is 0 bytes: senders would wait forever",
            ));
        }
        if hard < soft {
            return Err(Error::invalid(format!(
                "the transport's queue hard limit ({hard} bytes) is below its soft limit \
                 ({soft} bytes)"
            )));
        }
        Ok(QueueLimits { soft, hard })
    }
}

/// A connection's queue limits, in payload bytes (see the module docs on backpressure).
#[derive(Debug, Clone, Copy)]
struct QueueLimits {
    /// Senders outside a tokio runtime wait while this much is queued.
    soft: usize,
    /// The connection is closed when more than this would be queued.
    hard: usize,
}

/// Something a peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// A one-way message.
    Message(Bytes),
    /// A request: answer with [`Conn::reply`] and the same `id`.
    Request {
        /// Id to reply with.
        id: u64,
        /// The request's payload.
        payload: Bytes,
    },
}

/// Receives what peers send.
pub(crate) trait Inbound: Send + Sync + 'static {
    /// Called for every incoming message/request, in the order the peer sent them on that
    /// connection. Must not block.
    fn deliver(&self, conn: Conn, delivery: Delivery);

    /// A connection to/from `peer` closed (peer = the address it listens on, as announced in
    /// its handshake, else its remote address). Also called when a dial fails. Not called for
    /// connections closed by [`Transport::close`].
    fn connection_lost(&self, _peer: SocketAddr, _reason: &str) {}
}

/// Something queued for a connection's writer.
#[derive(Debug)]
enum Outgoing {
    /// A one-way message.
    Message(Bytes),
    /// A request registered in the link's pending map under `id`.
    Request { id: u64, payload: Bytes },
    /// The reply to the peer's request `id`: `payload` then `tail`, sent as one (the tail is a
    /// large value the reply ends with, sent from where it is instead of copied into the
    /// payload; usually empty).
    Reply {
        id: u64,
        payload: Bytes,
        tail: Bytes,
    },
}

impl Outgoing {
    /// What to frame: kind, id (0 for messages), payload and the tail that follows it.
    fn into_parts(self) -> (Kind, u64, Bytes, Bytes) {
        match self {
            Outgoing::Message(payload) => (Kind::Message, 0, payload, Bytes::new()),
            Outgoing::Request { id, payload } => (Kind::Request, id, payload, Bytes::new()),
            Outgoing::Reply { id, payload, tail } => (Kind::Reply, id, payload, tail),
        }
    }

    /// Just the payload (to retry a message or request on another connection).
    fn into_payload(self) -> Bytes {
        self.into_parts().2
    }

    /// Bytes counted against the queue limits: the payload and what queuing it costs besides
    /// ([`ITEM_OVERHEAD`]), so that a peer asking for many tiny replies it never reads trips
    /// the limits too.
    fn len(&self) -> usize {
        ITEM_OVERHEAD
            + match self {
                Outgoing::Message(payload) | Outgoing::Request { payload, .. } => payload.len(),
                Outgoing::Reply { payload, tail, .. } => payload.len() + tail.len(),
            }
    }
}

/// Why [`Link::push`] did not queue an item.
enum PushError {
    /// The writer is gone (the connection just ended): the item, to try on a new link.
    Gone(Outgoing),
    /// The link is closed — possibly just now, for going over the hard limit: why.
    Closed(String),
}

/// Where a request's reply (or its failure) goes.
type ReplySender = oneshot::Sender<Result<Bytes, Error>>;

/// Where a request's reply (or its failure) arrives.
type ReplyReceiver = oneshot::Receiver<Result<Bytes, Error>>;

#[derive(Default)]
struct LinkState {
    /// Requests sent on this connection and not answered yet.
    pending: HashMap<u64, ReplySender>,
    /// Set once the connection is gone (or could not be made): why.
    closed: Option<String>,
}

/// One connection (being dialed, or up) and its outgoing queue.
struct Link {
    /// Unique per transport (key in `Shared::links`).
    id: u64,
    /// Address the peer listens on (dialed address, announced address, or remote address).
    peer: SocketAddr,
    /// The transport, to tear the link down when it goes over the hard limit.
    shared: Weak<Shared>,
    /// The writer's queue. Unbounded as a channel; bounded by `queued` and `limits`.
    tx: mpsc::UnboundedSender<Outgoing>,
    /// Payload bytes queued and not yet handed to quinn (see the module docs on backpressure).
    queued: AtomicUsize,
    /// The soft and hard limits on `queued`.
    limits: QueueLimits,
    /// Held by a sender while it checks `queued` and starts waiting on `room`, and by whoever
    /// wakes it, so no wake-up is lost.
    room_lock: Mutex<()>,
    /// Senders waiting for `queued` to fall below the soft limit (or the link to close).
    room: Condvar,
    /// How many senders wait on `room` (for tests and diagnostics).
    waiting: AtomicUsize,
    /// Pending requests and whether the link is closed.
    state: Mutex<LinkState>,
    /// Id of the next request sent on this link.
    next_request: AtomicU64,
    /// The connection, once it is up.
    conn: OnceLock<quinn::Connection>,
    /// Fingerprint of the peer's certificate, for connections this side dialed.
    server_fp: OnceLock<[u8; 32]>,
    /// Why this side closed the connection, if it did.
    local_reason: Mutex<Option<String>>,
}

impl Link {
    /// A new, open link and the receiving end of its queue (for its writer).
    fn new(
        id: u64,
        peer: SocketAddr,
        shared: Weak<Shared>,
        limits: QueueLimits,
    ) -> (Arc<Link>, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            id,
            peer,
            shared,
            tx,
            queued: AtomicUsize::new(0),
            limits,
            room_lock: Mutex::new(()),
            room: Condvar::new(),
            waiting: AtomicUsize::new(0),
            state: Mutex::new(LinkState::default()),
            next_request: AtomicU64::new(1),
            conn: OnceLock::new(),
            server_fp: OnceLock::new(),
            local_reason: Mutex::new(None),
        });
        (link, rx)
    }

    /// Whether the connection is gone (or could not be made).
    fn is_closed(&self) -> bool {
        self.state.lock().closed.is_some()
    }

    /// Why the connection is gone, if it is.
    fn closed_reason(&self) -> Option<String> {
        self.state.lock().closed.clone()
    }

    /// Queues `item` for the writer under the queue limits (see the module docs on
    /// backpressure): a caller outside any tokio runtime first waits while the soft limit is
    /// reached; an item that would go over the hard limit closes the connection instead.
    fn push(self: &Arc<Self>, item: Outgoing) -> Result<(), PushError> {
        let len = item.len();
        // Relaxed is enough: `wait_for_room` and `release` synchronize through `room_lock`.
        if self.queued.load(Ordering::Relaxed) >= self.limits.soft
            && tokio::runtime::Handle::try_current().is_err()
        {
            self.wait_for_room().map_err(PushError::Closed)?;
        }
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        let after = before.saturating_add(len);
        if before >= self.limits.soft && after > self.limits.hard {
            self.release(len);
            return Err(PushError::Closed(self.overflow(after)));
        }
        self.tx.send(item).map_err(|mpsc::error::SendError(item)| {
            self.release(len);
            PushError::Gone(item)
        })
    }

    /// Blocks the calling thread until fewer than the soft limit's bytes are queued (`Ok`) or
    /// the link is closed (`Err`: why).
    fn wait_for_room(&self) -> Result<(), String> {
        let mut guard = self.room_lock.lock();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let result = loop {
            if let Some(reason) = self.closed_reason() {
                break Err(reason);
            }
            if self.queued.load(Ordering::Relaxed) < self.limits.soft {
                break Ok(());
            }
            self.room.wait(&mut guard);
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// Uncounts `len` queued bytes (handed to quinn, or dropped); wakes the waiting senders if
    /// that takes the count below the soft limit.
    fn release(&self, len: usize) {
        if len == 0 {
            return;
        }
        let before = self.queued.fetch_sub(len, Ordering::Relaxed);
        if before >= self.limits.soft && before - len < self.limits.soft {
            self.wake_all();
        }
    }

    /// Wakes every sender waiting for room (to recheck the count and whether the link closed).
    fn wake_all(&self) {
        let _guard = self.room_lock.lock();
        self.room.notify_all();
    }

    /// Closes the connection because `queued` bytes would be over the hard limit; returns the
    /// reason the link is closed with.
    fn overflow(self: &Arc<Self>, queued: usize) -> String {
        let reason = format!(
            "the peer at {} is not reading: {queued} bytes queued for it, over the limit of {} \
             bytes",
            self.peer, self.limits.hard
        );
        match self.shared.upgrade() {
            Some(shared) => shared.overflow(self, reason),
            None => reason,
        }
    }

    /// Drops what is left in the writer's queue once the writer is gone (or never started),
    /// uncounting it; later pushes fail and uncount themselves.
    async fn discard(&self, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
        rx.close();
        let mut dropped = 0;
        // After `close`, `recv` yields what was sent before it (waiting for a send under way)
        // and then `None`.
        while let Some(item) = rx.recv().await {
            dropped += item.len();
        }
        self.release(dropped);
    }

    /// An [`Error::Connection`] naming this link's peer.
    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Connection {
            peer: self.peer.to_string(),
            reason: reason.into(),
        }
    }

    /// Registers a pending request; fails if the link is already closed.
    fn register(&self) -> Result<(u64, oneshot::Receiver<Result<Bytes, Error>>), Error> {
        let mut state = self.state.lock();
        if let Some(reason) = &state.closed {
            return Err(self.error(reason.clone()));
        }
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        state.pending.insert(id, tx);
        Ok((id, rx))
    }

    /// Forgets pending request `id` (it was never sent).
    fn unregister(&self, id: u64) {
        self.state.lock().pending.remove(&id);
    }

    /// Hands reply `payload` to whoever waits for request `id`.
    fn resolve(&self, id: u64, payload: Bytes) {
        let waiter = self.state.lock().pending.remove(&id);
        match waiter {
            Some(tx) => {
                // The requester may have given up waiting; nothing to do then.
                let _ = tx.send(Ok(payload));
            }
            None => debug!(peer = %self.peer, id, "reply to an unknown request ignored"),
        }
    }

    /// Marks the link closed and takes its pending requests (to fail them). Returns `None` if
    /// it was already closed.
    fn mark_closed(&self, reason: &str) -> Option<Vec<ReplySender>> {
        let mut state = self.state.lock();
        if state.closed.is_some() {
            return None;
        }
        state.closed = Some(reason.to_string());
        Some(state.pending.drain().map(|(_, tx)| tx).collect())
    }

    /// Closes the connection because of something the peer did wrong.
    fn protocol_error(&self, conn: &quinn::Connection, reason: String) {
        warn!(peer = %self.peer, "closing the connection: {reason}");
        self.local_reason.lock().get_or_insert(reason.clone());
        conn.close(CLOSE_PROTOCOL, reason.as_bytes());
    }
}

/// Describes why a connection ended or could not be made, for error messages.
pub(crate) fn describe_connection_error(
    e: &quinn::ConnectionError,
    idle: Option<Duration>,
) -> String {
    use quinn::ConnectionError as E;
    match e {
        E::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason);
            if close.error_code == CLOSE_REFUSED {
                format!("refused by the peer: {reason}")
            } else if close.error_code == CLOSE_PROTOCOL {
                format!("the peer closed the connection because of a protocol violation: {reason}")
            } else if close.error_code == CLOSE_OVERLOAD {
                format!("the peer closed the connection because this node did not read: {reason}")
            } else if reason.is_empty() {
                "the peer closed the connection".to_string()
            } else {
                format!("the peer closed the connection: {reason}")
            }
        }
        E::ConnectionClosed(close) => {
            format!("the peer's QUIC stack aborted the connection: {close}")
        }
        E::TransportError(e) => format!("QUIC/TLS failure: {e}"),
        E::TimedOut => match idle {
            Some(idle) => format!(
                "no answer within the idle timeout ({} ms): nothing is listening there, the \
                 process died, or the network is unreachable",
                idle.as_millis()
            ),
            None => "no answer within the idle timeout: nothing is listening there, the process \
                     died, or the network is unreachable"
                .to_string(),
        },
        E::Reset => "the peer reset the connection (it probably restarted)".to_string(),
        E::LocallyClosed => "this node closed the connection".to_string(),
        E::VersionMismatch => "the peer speaks no QUIC version this node speaks".to_string(),
        E::CidsExhausted => "out of QUIC connection ids".to_string(),
    }
}

/// Whether a connection ended in an orderly way (the peer shut down or we did).
fn is_orderly(e: &quinn::ConnectionError) -> bool {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => close.error_code == CLOSE_NORMAL,
        quinn::ConnectionError::LocallyClosed => true,
        _ => false,
    }
}

/// Incoming blobs of one connection, by sequence number: whichever of the blob and its marker
/// arrives second completes the pair.
#[derive(Default)]
struct BlobSlots {
    slots: Mutex<HashMap<u64, Slot>>,
}

/// One blob sequence number's state: arrived first, or awaited by the control reader.
enum Slot {
    /// The blob arrived before its marker was read.
    Ready(Bytes),
    /// The control reader waits for the blob.
    Waiting(oneshot::Sender<Bytes>),
}

impl BlobSlots {
    /// Records blob `seq`'s bytes.
    fn complete(&self, seq: u64, bytes: Bytes) -> Result<(), String> {
        let mut slots = self.slots.lock();
        match slots.remove(&seq) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(bytes);
                Ok(())
            }
            Some(Slot::Ready(_)) => Err(format!("blob {seq} was sent twice")),
            None => {
                slots.insert(seq, Slot::Ready(bytes));
                Ok(())
            }
        }
    }

    /// Waits for blob `seq` (until the connection ends: `Ok(None)`).
    async fn wait(&self, seq: u64, conn: &quinn::Connection) -> Result<Option<Bytes>, String> {
        let rx = {
            let mut slots = self.slots.lock();
            match slots.remove(&seq) {
                Some(Slot::Ready(bytes)) => return Ok(Some(bytes)),
                Some(Slot::Waiting(_)) => return Err(format!("blob {seq} was announced twice")),
                None => {
                    let (tx, rx) = oneshot::channel();
                    slots.insert(seq, Slot::Waiting(tx));
                    rx
                }
            }
        };
        tokio::select! {
            bytes = rx => Ok(bytes.ok()),
            _ = conn.closed() => Ok(None),
        }
    }
}

/// State shared by the [`Transport`] handle and its tasks.
struct Shared {
    /// The one endpoint, server and client.
    endpoint: quinn::Endpoint,
    /// Runtime the transport's tasks run on (captured at bind).
    runtime: tokio::runtime::Handle,
    /// Bound address, announced to the peers this side dials.
    local_addr: SocketAddr,
    /// blake3 of this endpoint's certificate.
    fingerprint: [u8; 32],
    /// The cluster secret.
    token: Token,
    /// See [`TransportConfig::max_frame`].
    max_frame: usize,
    /// See [`TransportConfig::blob_threshold`].
    blob_threshold: usize,
    /// See [`TransportConfig::max_blob`].
    max_blob: u64,
    /// See [`TransportConfig::idle_timeout`].
    idle_timeout: Duration,
    /// See [`TransportConfig::queue_soft_limit`] and [`TransportConfig::queue_hard_limit`].
    queue_limits: QueueLimits,
    /// QUIC settings, for every connection either way.
    quic: Arc<quinn::TransportConfig>,
    /// Where deliveries go.
    inbound: Arc<dyn Inbound>,
    /// Connection to use for each peer address.
    peers: DashMap<SocketAddr, Arc<Link>>,
    /// Every live link, by id (including accepted ones not in `peers`).
    links: DashMap<u64, Arc<Link>>,
    /// Pinned certificate fingerprints, by address.
    pins: DashMap<SocketAddr, [u8; 32]>,
    /// Id of the next link.
    next_link: AtomicU64,
    /// Set by [`Transport::close`].
    closed: AtomicBool,
    /// Accepted connections whose peer has not proved the token yet.
    unauthenticated: AtomicUsize,
    /// New peers asked to prove their address first (QUIC retry), because many connections
    /// were waiting to authenticate.
    address_checks: AtomicU64,
    /// Where refused connections are logged.
    refusals: RefusalLog,
    /// UDP bytes sent and received by connections that are closed now.
    closed_sent: AtomicU64,
    closed_received: AtomicU64,
}

/// What a transport moved: its live connections, and the UDP bytes it sent and received over
/// its life (QUIC headers, acknowledgements and retransmissions included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    pub(crate) connections: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
}

/// The QUIC transport of this process: see the module docs.
pub(crate) struct Transport {
    shared: Arc<Shared>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("local_addr", &self.shared.local_addr)
            .field("connections", &self.shared.links.len())
            .finish_non_exhaustive()
    }
}

/// QUIC settings: idle timeout and keep-alive from `config`, windows sized for large blobs.
fn quic_transport_config(config: &TransportConfig) -> Result<quinn::TransportConfig, Error> {
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout).map_err(|_| {
        Error::invalid(format!(
            "transport idle timeout {:?} is too long",
            config.idle_timeout
        ))
    })?;
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(idle))
        .keep_alive_interval((!config.keep_alive.is_zero()).then_some(config.keep_alive))
        .stream_receive_window(quinn::VarInt::from_u32(16 << 20))
        // Until the handshake: see `open_up`.
        .receive_window(quinn::VarInt::from_u32(PRE_AUTH_WINDOW))
        .send_window(64 << 20)
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        // The handshake's one stream.
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(1));
    Ok(t)
}

/// Opens a connection up once its peer is authenticated: the full receive window and the
/// unidirectional streams (control and blobs) that were closed to it until then.
fn open_up(conn: &quinn::Connection) {
    conn.set_receive_window(quinn::VarInt::from_u32(RECEIVE_WINDOW));
    conn.set_max_concurrent_uni_streams(quinn::VarInt::from_u32(UNI_STREAMS));
}

/// Logs refused connections, one line each, but at most [`RefusalLog::PER_SECOND`] lines a
/// second: a flood of bad peers must not flood the log (the next line says how many were left
/// out).
#[derive(Debug)]
struct RefusalLog {
    /// Start of the current second, lines logged in it, refusals left out since the last line.
    window: Mutex<(Instant, u32, u64)>,
}

impl RefusalLog {
    const PER_SECOND: u32 = 10;

    fn new() -> RefusalLog {
        RefusalLog {
            window: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    fn refused(&self, remote: SocketAddr, reason: &str) {
        let mut w = self.window.lock();
        let now = Instant::now();
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0, w.2);
        }
        if w.1 >= Self::PER_SECOND {
            w.2 += 1;
            return;
        }
        w.1 += 1;
        let skipped = std::mem::take(&mut w.2);
        drop(w);
        if skipped > 0 {
            warn!(%remote, skipped, "refused a connection: {reason} ({skipped} more refused and not logged before it)");
        } else {
            warn!(%remote, "refused a connection: {reason}");
        }
    }
}

/// Counts a connection as not yet authenticated while it lives.
struct Unauthenticated<'a>(&'a AtomicUsize);

impl Drop for Unauthenticated<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Transport {
    /// Binds a quinn endpoint (server + client) on `config.bind`. Must be called inside a tokio
    /// multi-thread runtime; spawns its tasks there.
    pub(crate) fn bind(
        config: TransportConfig,
        inbound: Arc<dyn Inbound>,
    ) -> Result<Arc<Transport>, Error> {
        let bind_error = |reason: String| Error::Connection {
            peer: config.bind.to_string(),
            reason,
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            bind_error("the transport must be started inside a tokio runtime".to_string())
        })?;
        let queue_limits = config.queue_limits()?;
        let identity = tls::Identity::generate()?;
        let quic = Arc::new(quic_transport_config(&config)?);
        let server_config = identity.server_config(quic.clone())?;
        let endpoint = quinn::Endpoint::server(server_config, config.bind)
            .map_err(|e| bind_error(format!("cannot bind the UDP socket: {e}")))?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|e| bind_error(format!("cannot read the bound address: {e}")))?;
        let shared = Arc::new(Shared {
            endpoint,
            runtime,
            local_addr,
            fingerprint: identity.fingerprint(),
            token: config.token,
            max_frame: config.max_frame,
            blob_threshold: config.blob_threshold,
            max_blob: config.max_blob,
            idle_timeout: config.idle_timeout,
            queue_limits,
            quic,
            inbound,
            peers: DashMap::new(),
            links: DashMap::new(),
            pins: DashMap::new(),
            next_link: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            unauthenticated: AtomicUsize::new(0),
            address_checks: AtomicU64::new(0),
            refusals: RefusalLog::new(),
            closed_sent: AtomicU64::new(0),
            closed_received: AtomicU64::new(0),
        });
        let fingerprint = tls::fingerprint_hex(&shared.fingerprint);
        info!(addr = %local_addr, %fingerprint, "lumen transport listening");
        shared.runtime.spawn(shared.clone().accept_loop());
        Ok(Arc::new(Transport { shared }))
    }

    /// The address the endpoint is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// How many new peers were asked to prove their address (a QUIC retry) because many
    /// connections were waiting to authenticate.
    pub(crate) fn address_checks(&self) -> u64 {
        self.shared.address_checks.load(Ordering::Relaxed)
    }

    /// The live connections and the bytes moved so far.
    pub(crate) fn traffic(&self) -> Traffic {
        let shared = &self.shared;
        let mut t = Traffic {
            connections: 0,
            bytes_sent: shared.closed_sent.load(Ordering::Relaxed),
            bytes_received: shared.closed_received.load(Ordering::Relaxed),
        };
        for link in shared.links.iter() {
            if let Some(conn) = link.conn.get() {
                let stats = conn.stats();
                t.connections += 1;
                t.bytes_sent += stats.udp_tx.bytes;
                t.bytes_received += stats.udp_rx.bytes;
            }
        }
        t
    }

    /// blake3 of this endpoint's certificate DER.
    // Part of the transport's API (for pinning) even while no caller in the crate uses it.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        self.shared.fingerprint
    }

    /// One-way message to `to`. Dials on first use; all sends and requests to the same `to`
    /// are delivered in the order they were called. Called outside any tokio runtime, it waits
    /// while the connection's queue is at the soft limit; inside one it never blocks (see the
    /// module docs on backpressure). If the connection can't be made or is lost (or is closed
    /// at the hard limit), queued messages are dropped, a warning is logged and
    /// [`Inbound::connection_lost`] is called.
    pub(crate) fn send(&self, to: SocketAddr, payload: Bytes) {
        let mut item = Outgoing::Message(payload);
        // A second try covers a connection that ended between the lookup and the push.
        for _ in 0..2 {
            let link = match self.shared.link_for(to) {
                Ok(link) => link,
                Err(e) => {
                    debug!(%to, "message dropped: {e}");
                    return;
                }
            };
            match link.push(item) {
                Ok(()) => return,
                Err(PushError::Closed(reason)) => {
                    debug!(%to, "message dropped: {reason}");
                    return;
                }
                Err(PushError::Gone(back)) => {
                    item = back;
                    self.shared.forget(&link);
                }
            }
        }
        warn!(%to, "message dropped: the connection kept closing");
    }

    /// Request/reply. Fails with [`Error::Connection`] saying why (refused — wrong token or
    /// version mismatch —, unreachable, closed, not reading); never hangs if the peer refuses or
    /// dies (the idle timeout bounds it). The request is queued when this is called (not when
    /// the future is first polled), so it keeps its place among the sends made before and after
    /// it; like [`send`](Self::send), a call outside any tokio runtime first waits while the
    /// connection's queue is at the soft limit.
    pub(crate) fn request(
        &self,
        to: SocketAddr,
        payload: Bytes,
    ) -> impl std::future::Future<Output = Result<Bytes, Error>> + Send + 'static {
        let queued = self.queue_request(to, payload);
        async move {
            let (link, rx) = queued?;
            match rx.await {
                Ok(result) => result,
                Err(_) => Err(link.error("the connection was dropped")),
            }
        }
    }

    /// Queues a request; the receiver gets its reply.
    fn queue_request(
        &self,
        to: SocketAddr,
        payload: Bytes,
    ) -> Result<(Arc<Link>, ReplyReceiver), Error> {
        if payload.len() as u64 > self.shared.max_blob {
            return Err(Error::Connection {
                peer: to.to_string(),
                reason: format!(
                    "request of {} bytes exceeds the limit of {} bytes",
                    payload.len(),
                    self.shared.max_blob
                ),
            });
        }
        let mut payload = payload;
        for _ in 0..2 {
            let link = self.shared.link_for(to)?;
            let (id, rx) = link.register()?;
            match link.push(Outgoing::Request { id, payload }) {
                Ok(()) => return Ok((link, rx)),
                Err(PushError::Closed(reason)) => {
                    link.unregister(id);
                    return Err(link.error(reason));
                }
                Err(PushError::Gone(back)) => {
                    link.unregister(id);
                    self.shared.forget(&link);
                    payload = back.into_payload();
                }
            }
        }
        Err(Error::Connection {
            peer: to.to_string(),
            reason: "the connection kept closing before the request could be sent".into(),
        })
    }

    /// Expect the certificate with this fingerprint at `addr` (pinning): a different
    /// certificate fails the dial with a clear error. A cached connection to `addr` made to a
    /// different certificate is closed.
    pub(crate) fn pin(&self, addr: SocketAddr, fingerprint: [u8; 32]) {
        self.shared.pins.insert(addr, fingerprint);
        let stale = self
            .shared
            .peers
            .get(&addr)
            .map(|link| link.clone())
            .filter(|link| link.server_fp.get().is_some_and(|fp| *fp != fingerprint));
        if let Some(link) = stale {
            let reason = format!(
                "the certificate of the connection to {addr} differs from the fingerprint now \
                 pinned for it"
            );
            if let Some(conn) = link.conn.get() {
                link.local_reason.lock().get_or_insert(reason.clone());
                conn.close(CLOSE_NORMAL, reason.as_bytes());
            }
            self.shared.forget(&link);
        }
    }

    /// Closes every connection and the endpoint. Pending requests fail; later sends are
    /// dropped and later requests fail.
    pub(crate) fn close(&self) {
        let shared = &self.shared;
        if shared.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        info!(addr = %shared.local_addr, "closing the lumen transport");
        let links: Vec<Arc<Link>> = shared.links.iter().map(|e| e.value().clone()).collect();
        for link in links {
            shared.teardown(&link, SHUTDOWN_REASON.to_string(), true);
        }
        shared
            .endpoint
            .close(CLOSE_NORMAL, SHUTDOWN_REASON.as_bytes());
    }
}

impl Transport {
    /// The cached link to `to`, if any (for tests that watch its queue).
    #[cfg(test)]
    fn link_to(&self, to: SocketAddr) -> Option<Arc<Link>> {
        self.shared.peers.get(&to).map(|link| link.clone())
    }

    /// After [`close`](Self::close): waits (at most `limit`) until every peer has been told, so a
    /// process that stops right after does not leave peers to find out by idle timeout.
    pub(crate) async fn wait_closed(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.shared.endpoint.wait_idle()).await;
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.close();
    }
}

/// One connection, as seen by the code handling what arrived on it.
#[derive(Clone)]
pub(crate) struct Conn {
    link: Arc<Link>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.link.peer)
            .finish()
    }
}

impl Conn {
    /// Replies to request `id` on this connection (large replies go as blobs too), under the
    /// queue limits like [`Transport::send`]. Dropped (with a debug log) if the connection is
    /// gone.
    pub(crate) fn reply(&self, id: u64, payload: Bytes) {
        self.reply_with_tail(id, payload, Bytes::new());
    }

    /// Replies to request `id` with `payload` followed by `tail` (the peer receives them as
    /// one payload; the tail is sent from where it is, not copied).
    pub(crate) fn reply_with_tail(&self, id: u64, payload: Bytes, tail: Bytes) {
        if self
            .link
            .push(Outgoing::Reply { id, payload, tail })
            .is_err()
        {
            debug!(peer = %self.link.peer, id, "reply dropped: the connection is closed");
        }
    }

    /// One-way message back on this connection. Dropped (with a debug log) if the connection is
    /// gone.
    #[cfg(test)]
    pub(crate) fn send(&self, payload: Bytes) {
        if self.link.push(Outgoing::Message(payload)).is_err() {
            debug!(peer = %self.link.peer, "message dropped: the connection is closed");
        }
    }

    /// Listen address announced by the peer (or its remote address if it announced none).
    pub(crate) fn peer(&self) -> SocketAddr {
        self.link.peer
    }
}

impl Shared {
    /// The error for any operation after [`Transport::close`].
    fn closed_error(&self, to: SocketAddr) -> Error {
        Error::Connection {
            peer: to.to_string(),
            reason: SHUTDOWN_REASON.to_string(),
        }
    }

    /// A new link to `peer`, registered in `links` (not in `peers`).
    fn new_link(
        self: &Arc<Self>,
        peer: SocketAddr,
    ) -> (Arc<Link>, mpsc::UnboundedReceiver<Outgoing>) {
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        let (link, rx) = Link::new(id, peer, Arc::downgrade(self), self.queue_limits);
        self.links.insert(id, link.clone());
        (link, rx)
    }

    /// The link to use for `to`: the cached live one, or a new one being dialed.
    fn link_for(self: &Arc<Self>, to: SocketAddr) -> Result<Arc<Link>, Error> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(self.closed_error(to));
        }
        let (link, rx) = match self.peers.entry(to) {
            Entry::Occupied(e) if !e.get().is_closed() => return Ok(e.get().clone()),
            Entry::Occupied(mut e) => {
                let (link, rx) = self.new_link(to);
                e.insert(link.clone());
                (link, rx)
            }
            Entry::Vacant(e) => {
                let (link, rx) = self.new_link(to);
                e.insert(link.clone());
                (link, rx)
            }
        };
        self.runtime.spawn(self.clone().dial(link.clone(), rx));
        Ok(link)
    }

    /// Drops `link` from the cache (if it is still the cached one).
    fn forget(&self, link: &Arc<Link>) {
        self.peers
            .remove_if(&link.peer, |_, v| Arc::ptr_eq(v, link));
    }

    /// Cleans up after a connection that ended or could not be made.
    ///
    /// [`Inbound::connection_lost`] is called before the pending requests fail, so a caller
    /// seeing a request fail knows the loss has been reported.
    fn teardown(&self, link: &Arc<Link>, reason: String, orderly: bool) {
        let close = (CLOSE_NORMAL, SHUTDOWN_REASON);
        if let Some(pending) = self.detach(link, &reason, close) {
            self.report(link, reason, orderly, pending);
        }
    }

    /// The first half of [`teardown`](Self::teardown): marks `link` closed with `reason`, drops
    /// it from the caches, closes its connection (if it is up and not closed yet) with `close`'s
    /// code and reason, and wakes the senders waiting for room on it. Returns its pending
    /// requests, or `None` if it was already closed.
    fn detach(
        &self,
        link: &Arc<Link>,
        reason: &str,
        close: (quinn::VarInt, &str),
    ) -> Option<Vec<ReplySender>> {
        let pending = link.mark_closed(reason);
        self.forget(link);
        let live = self.links.remove(&link.id).is_some();
        if let Some(conn) = link.conn.get() {
            if live {
                let stats = conn.stats();
                self.closed_sent
                    .fetch_add(stats.udp_tx.bytes, Ordering::Relaxed);
                self.closed_received
                    .fetch_add(stats.udp_rx.bytes, Ordering::Relaxed);
            }
            conn.close(close.0, close.1.as_bytes());
        }
        link.wake_all();
        pending
    }

    /// The second half of [`teardown`](Self::teardown): logs the loss, reports it to the
    /// inbound, then fails the `pending` requests.
    fn report(&self, link: &Arc<Link>, reason: String, orderly: bool, pending: Vec<ReplySender>) {
        if !self.closed.load(Ordering::SeqCst) {
            if orderly {
                info!(peer = %link.peer, "connection closed: {reason}");
            } else {
                let peer = link.peer;
                warn!(%peer, "connection to {peer} lost (queued messages dropped): {reason}");
            }
            self.inbound.connection_lost(link.peer, &reason);
        }
        for tx in pending {
            let _ = tx.send(Err(link.error(reason.clone())));
        }
    }

    /// Closes `link`'s connection because its queue went over the hard limit; returns the
    /// reason the link is closed with (`reason`, or an earlier one if it was already closed).
    ///
    /// Called by whoever was queuing, maybe while holding locks of its own: the link is
    /// detached right away (so later sends dial afresh), and the loss is reported and pending
    /// requests fail on the runtime.
    fn overflow(self: &Arc<Self>, link: &Arc<Link>, reason: String) -> String {
        // Marked closed before the connection is, so the watcher's teardown finds it closed
        // with this reason.
        let Some(pending) = self.detach(link, &reason, (CLOSE_OVERLOAD, &reason)) else {
            return link.closed_reason().unwrap_or(reason);
        };
        let (shared, link, report) = (self.clone(), link.clone(), reason.clone());
        self.runtime
            .spawn(async move { shared.report(&link, report, false, pending) });
        reason
    }

    /// Connects `link` (bounded by the idle timeout plus the hello timeout), then runs it; on
    /// failure tears it down, dropping what was queued.
    async fn dial(self: Arc<Self>, link: Arc<Link>, rx: mpsc::UnboundedReceiver<Outgoing>) {
        let to = link.peer;
        let span = info_span!("lumen.connect", peer = %to);
        let limit = self.idle_timeout + handshake::HELLO_TIMEOUT;
        let result = tokio::time::timeout(limit, self.connect(&link))
            .instrument(span.clone())
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no lumen handshake within {} ms",
                    limit.as_millis()
                ))
            });
        match result {
            Ok(conn) => {
                span.in_scope(|| info!(peer = %to, "connected"));
                self.start(link, conn, rx);
            }
            Err(reason) => {
                span.in_scope(|| warn!(peer = %to, "cannot connect: {reason}"));
                self.teardown(&link, format!("cannot connect: {reason}"), false);
                link.discard(rx).await;
            }
        }
    }

    /// Dials `link.peer` and runs the client handshake.
    async fn connect(&self, link: &Link) -> Result<quinn::Connection, String> {
        let to = link.peer;
        let seen = Arc::new(Mutex::new(tls::Seen::default()));
        let pinned = self.pins.get(&to).map(|fp| *fp);
        let config = tls::client_config(pinned, seen.clone(), self.quic.clone())
            .map_err(|e| e.to_string())?;
        let connecting = self
            .endpoint
            .connect_with(config, to, tls::SERVER_NAME)
            .map_err(|e| format!("cannot start a QUIC connection: {e}"))?;
        let conn = match connecting.await {
            Ok(conn) => conn,
            Err(e) => {
                let seen = seen.lock();
                return Err(seen
                    .mismatch_reason(to)
                    .unwrap_or_else(|| describe_connection_error(&e, Some(self.idle_timeout))));
            }
        };
        let server_fp = seen
            .lock()
            .fingerprint
            .ok_or_else(|| "the peer presented no certificate".to_string())?;
        // A pin set while the dial was under way is enforced here.
        if let Some(pinned) = self.pins.get(&to).map(|fp| *fp) {
            if pinned != server_fp {
                let seen = tls::Seen {
                    fingerprint: Some(server_fp),
                    mismatch: Some((pinned, server_fp)),
                };
                let reason = seen
                    .mismatch_reason(to)
                    .unwrap_or_else(|| "certificate pinning failed".to_string());
                conn.close(CLOSE_REFUSED, reason.as_bytes());
                return Err(reason);
            }
        }
        let _ = link.server_fp.set(server_fp);
        let nonce = random_bytes().map_err(|e| e.to_string())?;
        let hello = handshake::make_hello(
            Some(&self.token.0),
            &server_fp,
            Some(self.local_addr),
            nonce,
        );
        let checked = match handshake::exchange(&conn, &hello).await {
            Ok(answer) => handshake::check_answer(&answer, &self.token.0, &server_fp, &nonce),
            Err(reason) => Err(reason),
        };
        if let Err(reason) = checked {
            conn.close(CLOSE_REFUSED, reason.as_bytes());
            return Err(reason);
        }
        open_up(&conn);
        Ok(conn)
    }

    /// Accepts incoming connections until the endpoint closes, each in its own task.
    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            if self.closed.load(Ordering::SeqCst) {
                incoming.refuse();
                continue;
            }
            let pending = self.unauthenticated.load(Ordering::Acquire);
            if pending >= MAX_UNAUTHENTICATED {
                self.refusals.refused(
                    incoming.remote_address(),
                    &format!("{pending} connections are already waiting to authenticate"),
                );
                incoming.refuse();
                continue;
            }
            if pending >= MAX_UNAUTHENTICATED / 2 && !incoming.remote_address_validated() {
                // Under load: the peer proves its address first (it comes back validated).
                match incoming.retry() {
                    Ok(()) => {
                        self.address_checks.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => e.into_incoming().refuse(),
                }
                continue;
            }
            self.unauthenticated.fetch_add(1, Ordering::AcqRel);
            self.runtime.spawn(self.clone().accept_one(incoming));
        }
        debug!(addr = %self.local_addr, "accept loop ended");
    }

    /// Completes TLS and the server handshake for one incoming connection, then runs it.
    async fn accept_one(self: Arc<Self>, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let span = info_span!("lumen.accept", remote = %remote);
        async move {
            let counted = Unauthenticated(&self.unauthenticated);
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    let reason = describe_connection_error(&e, None);
                    self.refusals
                        .refused(remote, &format!("its QUIC handshake failed: {reason}"));
                    return;
                }
            };
            let listen = match handshake::accept(&conn, &self.token.0, &self.fingerprint).await {
                Ok(listen) => listen,
                Err(reason) => {
                    self.refusals.refused(remote, &reason);
                    return;
                }
            };
            drop(counted);
            open_up(&conn);
            // An announced wildcard address means "the address you see me at"; IPv4-mapped
            // IPv6 addresses (seen on dual-stack sockets) are written as plain IPv4.
            let remote_ip = remote.ip().to_canonical();
            let peer = match listen {
                Some(addr) if addr.ip().is_unspecified() => SocketAddr::new(remote_ip, addr.port()),
                Some(addr) => SocketAddr::new(addr.ip().to_canonical(), addr.port()),
                None => SocketAddr::new(remote_ip, remote.port()),
            };
            let (link, rx) = self.new_link(peer);
            if listen.is_some() {
                match self.peers.entry(peer) {
                    Entry::Vacant(e) => {
                        e.insert(link.clone());
                    }
                    Entry::Occupied(mut e) if e.get().is_closed() => {
                        e.insert(link.clone());
                    }
                    Entry::Occupied(_) => {}
                }
            }
            info!(%peer, "accepted a connection");
            self.start(link, conn, rx);
        }
        .instrument(span)
        .await
    }

    /// Runs an authenticated connection: writer, stream acceptor and watcher tasks.
    fn start(
        self: &Arc<Self>,
        link: Arc<Link>,
        conn: quinn::Connection,
        rx: mpsc::UnboundedReceiver<Outgoing>,
    ) {
        let _ = link.conn.set(conn.clone());
        if link.is_closed() || self.closed.load(Ordering::SeqCst) {
            self.teardown(&link, SHUTDOWN_REASON.to_string(), true);
            conn.close(CLOSE_NORMAL, SHUTDOWN_REASON.as_bytes());
            self.runtime.spawn(async move { link.discard(rx).await });
            return;
        }
        let span = info_span!("lumen.conn", peer = %link.peer);
        {
            let (link, conn) = (link.clone(), conn.clone());
            let threshold = self.blob_threshold;
            let runtime = self.runtime.clone();
            self.runtime.spawn(
                async move {
                    let mut rx = rx;
                    if let Err(reason) =
                        write_loop(&conn, &link, &mut rx, threshold, &runtime).await
                    {
                        link.protocol_error(&conn, reason);
                    }
                    link.discard(rx).await;
                }
                .instrument(span.clone()),
            );
        }
        self.runtime.spawn(
            self.clone()
                .accept_streams(link.clone(), conn.clone())
                .instrument(span.clone()),
        );
        let shared = self.clone();
        self.runtime.spawn(
            async move {
                let e = conn.closed().await;
                let local = link.local_reason.lock().clone();
                let (reason, orderly) = match (&e, local) {
                    (quinn::ConnectionError::LocallyClosed, Some(local)) => {
                        (format!("this node closed the connection: {local}"), false)
                    }
                    _ => (
                        describe_connection_error(&e, Some(shared.idle_timeout)),
                        is_orderly(&e),
                    ),
                };
                shared.teardown(&link, reason, orderly);
            }
            .instrument(span),
        );
    }

    /// Accepts the peer's uni streams: its control stream and its blobs.
    async fn accept_streams(self: Arc<Self>, link: Arc<Link>, conn: quinn::Connection) {
        let blobs = Arc::new(BlobSlots::default());
        let control_seen = Arc::new(AtomicBool::new(false));
        while let Ok(recv) = conn.accept_uni().await {
            let (shared, link, conn, blobs, control_seen) = (
                self.clone(),
                link.clone(),
                conn.clone(),
                blobs.clone(),
                control_seen.clone(),
            );
            self.runtime.spawn(
                async move {
                    shared
                        .read_stream(&link, &conn, recv, &blobs, &control_seen)
                        .await
                }
                .in_current_span(),
            );
        }
    }

    /// Reads a uni stream's kind byte and hands it to the control or blob reader.
    async fn read_stream(
        &self,
        link: &Arc<Link>,
        conn: &quinn::Connection,
        mut recv: quinn::RecvStream,
        blobs: &BlobSlots,
        control_seen: &AtomicBool,
    ) {
        let mut tag = [0u8; 1];
        if let Err(e) = recv.read_exact(&mut tag).await {
            if conn.close_reason().is_none() {
                link.protocol_error(conn, format!("a stream ended before its kind byte: {e}"));
            }
            return;
        }
        match tag[0] {
            frame::STREAM_CONTROL if !control_seen.swap(true, Ordering::SeqCst) => {
                self.read_control(link, conn, recv, blobs).await
            }
            frame::STREAM_CONTROL => {
                link.protocol_error(conn, "the peer opened a second control stream".to_string())
            }
            frame::STREAM_BLOB => self.read_blob(link, conn, recv, blobs).await,
            other => link.protocol_error(conn, format!("unknown stream kind {other}")),
        }
    }

    /// Reads the peer's control frames and delivers them in order.
    async fn read_control(
        &self,
        link: &Arc<Link>,
        conn: &quinn::Connection,
        mut recv: quinn::RecvStream,
        blobs: &BlobSlots,
    ) {
        let mut buf = BytesMut::with_capacity(64 << 10);
        loop {
            loop {
                match frame::decode(&mut buf, self.max_frame) {
                    Ok(Some(frame)) => {
                        let (kind, id, payload) = match frame {
                            Frame::Message(payload) => (Kind::Message, 0, payload),
                            Frame::Request { id, payload } => (Kind::Request, id, payload),
                            Frame::Reply { id, payload } => (Kind::Reply, id, payload),
                            Frame::BlobMarker { inner, id, seq } => {
                                match blobs.wait(seq, conn).await {
                                    Ok(Some(payload)) => (inner, id, payload),
                                    Ok(None) => return,
                                    Err(reason) => return link.protocol_error(conn, reason),
                                }
                            }
                        };
                        self.dispatch(link, kind, id, payload);
                    }
                    Ok(None) => break,
                    Err(e) => return link.protocol_error(conn, e.to_string()),
                }
            }
            match recv.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    if !buf.is_empty() {
                        link.protocol_error(
                            conn,
                            format!(
                                "the control stream ended inside a frame ({} bytes left)",
                                buf.len()
                            ),
                        );
                    }
                    return;
                }
                Err(quinn::ReadError::ConnectionLost(_)) => return,
                Err(e) => return link.protocol_error(conn, format!("control stream failed: {e}")),
            }
        }
    }

    /// Delivers a message or request to the inbound, or resolves a reply.
    fn dispatch(&self, link: &Arc<Link>, kind: Kind, id: u64, payload: Bytes) {
        let conn = || Conn { link: link.clone() };
        match kind {
            Kind::Message => self.inbound.deliver(conn(), Delivery::Message(payload)),
            Kind::Request => self
                .inbound
                .deliver(conn(), Delivery::Request { id, payload }),
            Kind::Reply => link.resolve(id, payload),
        }
    }

    /// Reads one blob stream into memory and hands it to the control reader.
    async fn read_blob(
        &self,
        link: &Arc<Link>,
        conn: &quinn::Connection,
        mut recv: quinn::RecvStream,
        blobs: &BlobSlots,
    ) {
        let mut header = [0u8; frame::BLOB_HEADER_LEN];
        if let Err(e) = recv.read_exact(&mut header).await {
            if conn.close_reason().is_none() {
                link.protocol_error(conn, format!("a blob stream ended inside its header: {e}"));
            }
            return;
        }
        let (seq, len) = match frame::decode_blob_header(&header, self.max_blob) {
            Ok(parsed) => parsed,
            Err(e) => return link.protocol_error(conn, e.to_string()),
        };
        let Ok(expected) = usize::try_from(len) else {
            return link.protocol_error(
                conn,
                format!("blob of {len} bytes does not fit in this node's memory space"),
            );
        };
        // Allocated as the bytes arrive (a header alone costs nothing), at most doubling what
        // has arrived, never past the announced length.
        let mut data: Vec<u8> = Vec::new();
        // Leading bytes of `data` that are not the blob (see BLOB_ALIGN).
        let mut pad = 0;
        loop {
            match recv.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => {
                    let got = data.len() - pad;
                    if got + chunk.bytes.len() > expected {
                        return link.protocol_error(
                            conn,
                            format!("blob {seq} is longer than its announced {len} bytes"),
                        );
                    }
                    if data.capacity() - data.len() < chunk.bytes.len() {
                        // Up to BLOB_EXACT, the whole blob at once (reserved, not yet touched:
                        // its pages are faulted in as they are written, and nothing is copied
                        // again as it grows), placed to end on a BLOB_ALIGN boundary; beyond,
                        // at most doubling what has arrived.
                        let exact = expected <= BLOB_EXACT && data.is_empty();
                        let grow = if exact {
                            expected + BLOB_ALIGN
                        } else {
                            got.max(BLOB_PREALLOC)
                                .max(chunk.bytes.len())
                                .min(expected - got)
                        };
                        if data.try_reserve_exact(grow).is_err() {
                            return link.protocol_error(
                                conn,
                                format!("blob {seq} of {len} bytes does not fit in memory"),
                            );
                        }
                        if exact {
                            let end = data.as_ptr() as usize + expected;
                            pad = (BLOB_ALIGN - end % BLOB_ALIGN) % BLOB_ALIGN;
                            data.resize(pad, 0);
                        }
                    }
                    data.extend_from_slice(&chunk.bytes);
                }
                Ok(None) => break,
                Err(quinn::ReadError::ConnectionLost(_)) => return,
                Err(e) => return link.protocol_error(conn, format!("blob {seq} failed: {e}")),
            }
        }
        if data.len() - pad != expected {
            return link.protocol_error(
                conn,
                format!(
                    "blob {seq} ended after {} of its {len} bytes",
                    data.len() - pad
                ),
            );
        }
        if let Err(reason) = blobs.complete(seq, Bytes::from(data).slice(pad..)) {
            link.protocol_error(conn, reason);
        }
    }
}

/// Drains a connection's queue into its control stream, batching what is queued, and sends
/// large payloads as blobs; uncounts each batch from `link`'s queued bytes once it is handed
/// to quinn (each blob once its last chunk is). Returns when the connection ends (`Ok`) or a
/// stream fails while the connection is up (`Err`, the reason to close it with); what is left
/// in `rx` is the caller's to discard.
async fn write_loop(
    conn: &quinn::Connection,
    link: &Arc<Link>,
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    blob_threshold: usize,
    runtime: &tokio::runtime::Handle,
) -> Result<(), String> {
    let failed = |e: quinn::WriteError| match e {
        quinn::WriteError::ConnectionLost(_) => Ok(()),
        other => Err(format!("cannot write the control stream: {other}")),
    };
    let mut stream = match conn.open_uni().await {
        Ok(stream) => stream,
        Err(_) => return Ok(()),
    };
    if let Err(e) = stream.write_all(&[frame::STREAM_CONTROL]).await {
        return failed(e);
    }
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut blob_seq = 0u64;
    loop {
        let first = tokio::select! {
            item = rx.recv() => item,
            _ = conn.closed() => None,
        };
        let Some(first) = first else { break };
        let mut next = Some(first);
        // What this batch's frames count against the queue limits (payloads and per-item
        // overhead; blobs are uncounted by their own tasks).
        let mut framed = 0;
        while let Some(item) = next {
            let (kind, id, mut payload, tail) = item.into_parts();
            if payload.len() + tail.len() > blob_threshold {
                let seq = blob_seq;
                blob_seq += 1;
                frame::encode(
                    &Frame::BlobMarker {
                        inner: kind,
                        id,
                        seq,
                    },
                    &mut buf,
                );
                runtime.spawn(
                    send_blob(conn.clone(), link.clone(), seq, [payload, tail]).in_current_span(),
                );
            } else {
                if !tail.is_empty() {
                    let mut whole = BytesMut::with_capacity(payload.len() + tail.len());
                    whole.put_slice(&payload);
                    whole.put_slice(&tail);
                    payload = whole.freeze();
                }
                framed += ITEM_OVERHEAD + payload.len();
                let frame = match kind {
                    Kind::Message => Frame::Message(payload),
                    Kind::Request => Frame::Request { id, payload },
                    Kind::Reply => Frame::Reply { id, payload },
                };
                frame::encode(&frame, &mut buf);
            }
            next = if buf.len() < BATCH_BYTES {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let written = stream.write_chunk(buf.split().freeze()).await;
        link.release(framed);
        if let Err(e) = written {
            return failed(e);
        }
    }
    let _ = stream.finish();
    Ok(())
}

/// Sends one payload (its parts, one after the other) on its own uni stream: `[tag][seq][len]`
/// then the bytes, in chunks; then (or on failure) uncounts it from `link`'s queued bytes.
async fn send_blob(conn: quinn::Connection, link: Arc<Link>, seq: u64, parts: [Bytes; 2]) {
    let total: usize = parts.iter().map(Bytes::len).sum();
    let queued = ITEM_OVERHEAD + total;
    let result = async {
        let mut stream = conn.open_uni().await?;
        let mut header = BytesMut::with_capacity(1 + frame::BLOB_HEADER_LEN);
        header.put_slice(&frame::encode_blob_header(seq, total as u64));
        stream.write_chunk(header.freeze()).await?;
        for part in &parts {
            let mut offset = 0;
            while offset < part.len() {
                let end = (offset + BLOB_CHUNK).min(part.len());
                stream.write_chunk(part.slice(offset..end)).await?;
                offset = end;
            }
        }
        stream.finish().map_err(quinn::WriteError::from)?;
        Ok::<(), quinn::WriteError>(())
    }
    .await;
    link.release(queued);
    match result {
        Ok(()) => {}
        Err(quinn::WriteError::ConnectionLost(_)) => {}
        Err(e) => {
            // The peer's control reader waits for this blob: the connection cannot go on.
            let reason = format!("cannot send blob {seq}: {e}");
            warn!("{reason}");
            conn.close(CLOSE_PROTOCOL, reason.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Test inbound: echoes requests (except "hold", never answered), answers "ping" with
    /// "pong", and records everything.
    struct Recorder {
        deliveries: mpsc::UnboundedSender<(SocketAddr, Delivery)>,
        lost: Mutex<Vec<(SocketAddr, String)>>,
    }

    impl Inbound for Recorder {
        fn deliver(&self, conn: Conn, delivery: Delivery) {
            match &delivery {
                Delivery::Request { payload, .. } if payload.as_ref() == b"hold" => {}
                Delivery::Request { id, payload } => conn.reply(*id, payload.clone()),
                Delivery::Message(payload) if payload.as_ref() == b"ping" => {
                    conn.send(Bytes::from_static(b"pong"))
                }
                Delivery::Message(_) => {}
            }
            let _ = self.deliveries.send((conn.peer(), delivery));
        }

        fn connection_lost(&self, peer: SocketAddr, reason: &str) {
            self.lost.lock().push((peer, reason.to_string()));
        }
    }

    struct Node {
        transport: Arc<Transport>,
        rx: mpsc::UnboundedReceiver<(SocketAddr, Delivery)>,
        recorder: Arc<Recorder>,
    }

    impl Node {
        fn addr(&self) -> SocketAddr {
            self.transport.local_addr()
        }

        async fn next(&mut self) -> (SocketAddr, Delivery) {
            match tokio::time::timeout(Duration::from_secs(20), self.rx.recv()).await {
                Ok(Some(d)) => d,
                other => panic!("no delivery: {other:?}"),
            }
        }

        async fn next_message(&mut self) -> Bytes {
            match self.next().await {
                (_, Delivery::Message(p)) => p,
                (_, other) => panic!("expected a message, got {other:?}"),
            }
        }
    }

    fn local() -> SocketAddr {
        ([127, 0, 0, 1], 0).into()
    }

    fn node_with(token: &Token, tweak: impl FnOnce(&mut TransportConfig)) -> Node {
        let (tx, rx) = mpsc::unbounded_channel();
        let recorder = Arc::new(Recorder {
            deliveries: tx,
            lost: Mutex::new(Vec::new()),
        });
        let mut config = TransportConfig::new(local(), token.clone());
        tweak(&mut config);
        let transport = Transport::bind(config, recorder.clone()).unwrap();
        Node {
            transport,
            rx,
            recorder,
        }
    }

    fn node(token: &Token) -> Node {
        node_with(token, |_| {})
    }

    fn connection_reason(e: Error) -> String {
        match e {
            Error::Connection { reason, .. } => reason,
            other => panic!("expected Error::Connection, got {other:?}"),
        }
    }

    /// Polls `done` until it holds; panics (naming `what`) if it does not within 20 s.
    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Polls `get` until it gives something; panics (naming `what`) if it does not within 20 s.
    async fn wait_for<T>(what: &str, mut get: impl FnMut() -> Option<T>) -> T {
        let mut found = None;
        wait_until(what, || {
            found = get();
            found.is_some()
        })
        .await;
        found.expect("wait_until returned without a value")
    }

    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f).await.unwrap()
    }

    async fn echo(from: &Node, to: &Node, payload: &'static [u8]) {
        let reply = tokio::time::timeout(
            Duration::from_secs(20),
            from.transport
                .request(to.addr(), Bytes::from_static(payload)),
        )
        .await
        .expect("request hung")
        .unwrap();
        assert_eq!(reply.as_ref(), payload);
    }

    #[test]
    fn token_hex_parse_and_debug() {
        let t = Token::random();
        assert_ne!(t, Token::random());
        let hex = t.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(Token::parse(&format!("  {hex}\n")).unwrap(), t);
        assert_eq!(Token::parse(&hex.to_uppercase()).unwrap(), t);
        assert_eq!(format!("{t:?}"), "Token(…)");
        for bad in ["", "abc", &hex[..63], &format!("{}g", &hex[..63])] {
            match Token::parse(bad) {
                Err(Error::InvalidArgument { message }) => {
                    assert!(message.contains("64 hex digits"), "{message}")
                }
                other => panic!("{bad:?} parsed: {other:?}"),
            }
        }
        // Multi-byte characters do not panic.
        assert!(Token::parse(&"é".repeat(32)).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn messages_and_requests_both_ways() {
        let token = Token::random();
        let mut a = node(&token);
        let mut b = node(&token);

        a.transport.send(b.addr(), Bytes::from_static(b"hello"));
        let (from, delivery) = b.next().await;
        assert_eq!(from, a.addr(), "the peer is known by its listen address");
        assert_eq!(delivery, Delivery::Message(Bytes::from_static(b"hello")));

        a.transport.send(b.addr(), Bytes::from_static(b"ping"));
        assert_eq!(b.next_message().await.as_ref(), b"ping");
        let (from, pong) = a.next().await;
        assert_eq!(from, b.addr());
        assert_eq!(pong, Delivery::Message(Bytes::from_static(b"pong")));

        echo(&a, &b, b"question").await;
        assert!(matches!(b.next().await.1, Delivery::Request { .. }));
        // B reaches A on the connection A opened (registered under A's listen address).
        echo(&b, &a, b"answer").await;
        assert!(matches!(a.next().await.1, Delivery::Request { .. }));
        assert_eq!(a.transport.shared.links.len(), 1);
        assert_eq!(b.transport.shared.links.len(), 1);

        // Large request and reply (both as blobs).
        let big = Bytes::from((0..3_000_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let reply = a.transport.request(b.addr(), big.clone()).await.unwrap();
        assert_eq!(reply, big);

        // Many concurrent requests on one connection.
        let calls = (0..200u32).map(|i| {
            let t = a.transport.clone();
            let to = b.addr();
            async move { t.request(to, Bytes::from(i.to_be_bytes().to_vec())).await }
        });
        let replies = futures::future::join_all(calls).await;
        for (i, r) in replies.into_iter().enumerate() {
            assert_eq!(r.unwrap().as_ref(), (i as u32).to_be_bytes());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn ten_thousand_messages_arrive_in_order() {
        let token = Token::random();
        let a = node(&token);
        let mut b = node(&token);
        for i in 0..10_000u32 {
            a.transport
                .send(b.addr(), Bytes::from(i.to_be_bytes().to_vec()));
        }
        for i in 0..10_000u32 {
            assert_eq!(
                b.next_message().await.as_ref(),
                i.to_be_bytes(),
                "message {i}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_mib_payload_arrives_intact_and_in_order() {
        let token = Token::random();
        let a = node(&token);
        let mut b = node(&token);
        let big: Bytes = (0..50usize << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let started = Instant::now();
        a.transport.send(b.addr(), Bytes::from_static(b"before"));
        a.transport.send(b.addr(), big.clone());
        a.transport.send(b.addr(), Bytes::from_static(b"after"));
        // A second blob right behind the first, then a small message.
        a.transport.send(b.addr(), big.slice(..1 << 20));
        a.transport.send(b.addr(), Bytes::from_static(b"last"));
        assert_eq!(b.next_message().await.as_ref(), b"before");
        let got = b.next_message().await;
        assert_eq!(got.len(), big.len());
        assert!(got == big, "50 MiB payload corrupted");
        let end = got.as_ptr() as usize + got.len();
        assert_eq!(end % BLOB_ALIGN, 0, "a blob ends aligned, for its tail");
        assert_eq!(b.next_message().await.as_ref(), b"after");
        assert_eq!(b.next_message().await, big.slice(..1 << 20));
        assert_eq!(b.next_message().await.as_ref(), b"last");
        eprintln!("50 MiB + 1 MiB delivered in {:?}", started.elapsed());
        // Everything queued, frames and blobs, was uncounted again.
        let link = a.transport.link_to(b.addr()).expect("the link to B");
        wait_until("the queue is empty", || {
            link.queued.load(Ordering::Relaxed) == 0
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn wrong_or_missing_token_is_refused_and_others_still_served() {
        let token = Token::random();
        let a = node(&token);
        let b = node(&token);
        let stranger = node(&Token::random());

        let e = stranger
            .transport
            .request(b.addr(), Bytes::from_static(b"let me in"))
            .await
            .unwrap_err();
        let reason = connection_reason(e.clone());
        assert!(reason.contains("refused by the peer"), "{reason}");
        assert!(reason.contains("cluster token does not match"), "{reason}");
        assert!(e.to_string().contains(&b.addr().to_string()), "{e}");
        // The refused dial was reported to the stranger's inbound.
        assert!(stranger
            .recorder
            .lost
            .lock()
            .iter()
            .any(|(p, _)| *p == b.addr()));

        let addr = b.addr();
        let e = blocking(move || probe::handshake_with_token(addr, None))
            .await
            .unwrap_err();
        let reason = connection_reason(e);
        assert!(reason.contains("cluster token does not match"), "{reason}");

        let wrong = Token::random().to_hex();
        let e = blocking(move || probe::handshake_with_token(addr, Some(&wrong)))
            .await
            .unwrap_err();
        assert!(connection_reason(e).contains("LUMEN_TOKEN"));

        let good = token.to_hex();
        blocking(move || probe::handshake_with_token(addr, Some(&good)))
            .await
            .unwrap();
        echo(&a, &b, b"still here").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn version_mismatch_is_refused() {
        let token = Token::random();
        let a = node(&token);
        let b = node(&token);
        let (addr, hex) = (b.addr(), token.to_hex());
        let reason = blocking(move || probe::version_mismatch(addr, &hex))
            .await
            .unwrap();
        assert_eq!(
            reason,
            format!(
                "peer speaks lumen protocol v{}, this node speaks v{PROTOCOL_VERSION}",
                PROTOCOL_VERSION + 1
            )
        );
        echo(&a, &b, b"fine").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn garbage_is_refused() {
        let token = Token::random();
        let a = node(&token);
        let b = node(&token);
        let addr = b.addr();
        blocking(move || probe::send_garbage_udp(addr))
            .await
            .unwrap();
        let reason = blocking(move || probe::garbage_hello(addr)).await.unwrap();
        assert!(reason.starts_with("not a lumen handshake"), "{reason}");
        echo(&a, &b, b"fine").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn silent_client_is_dropped_after_the_hello_timeout() {
        let token = Token::random();
        let b = node(&token);
        let addr = b.addr();
        let started = Instant::now();
        let reason = blocking(move || {
            probe::run(addr, async move {
                let (endpoint, conn, _) = probe::connect(addr).await?;
                let reason = probe::node_close_reason(addr, &conn).await;
                drop(endpoint);
                reason
            })
        })
        .await
        .unwrap();
        assert!(reason.contains("no hello within 5 s"), "{reason}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn too_long_hello_is_refused() {
        let token = Token::random();
        let a = node(&token);
        let b = node(&token);
        let addr = b.addr();
        let reason = blocking(move || {
            probe::run(addr, async move {
                let (endpoint, conn, _) = probe::connect(addr).await?;
                let (mut send, _recv) = conn.open_bi().await.map_err(|e| Error::Connection {
                    peer: addr.to_string(),
                    reason: e.to_string(),
                })?;
                // A plausible length prefix, then far more than the limit, never finished.
                let mut bytes = 100u32.to_be_bytes().to_vec();
                bytes.resize(10_000, b'x');
                let _ = send.write_all(&bytes).await;
                let reason = probe::node_close_reason(addr, &conn).await;
                drop(endpoint);
                reason
            })
        })
        .await
        .unwrap();
        assert!(reason.contains("longer than 4096 bytes"), "{reason}");
        echo(&a, &b, b"fine").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn oversized_frame_closes_only_that_connection() {
        let token = Token::random();
        let mut a = node(&token);
        let b = node(&token);
        // A is connected to B before, and stays connected.
        echo(&a, &b, b"before").await;
        let (addr, hex) = (b.addr(), token.to_hex());
        let announced = 100 << 20;
        let reason = blocking(move || probe::oversized_frame(addr, &hex, announced))
            .await
            .unwrap();
        assert_eq!(
            reason,
            format!(
                "frame of {announced} bytes exceeds the limit of {} bytes",
                8 << 20
            )
        );
        echo(&a, &b, b"after").await;
        a.transport.send(b.addr(), Bytes::from_static(b"ping"));
        assert_eq!(a.next_message().await.as_ref(), b"pong");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn oversized_blob_is_refused() {
        let token = Token::random();
        let a = node_with(&token, |c| c.blob_threshold = 1024);
        let b = node_with(&token, |c| c.max_blob = 4096);
        let e = a
            .transport
            .request(b.addr(), Bytes::from(vec![1u8; 10_000]))
            .await
            .map(|reply| reply.len())
            .unwrap_err();
        let reason = connection_reason(e);
        assert!(
            reason.contains("blob of 10000 bytes exceeds the limit of 4096 bytes"),
            "{reason}"
        );
        // A new connection is dialed for the next request.
        echo(&a, &b, b"small").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn pinning_with_a_wrong_fingerprint_fails() {
        let token = Token::random();
        let a = node(&token);
        let b = node(&token);
        a.transport.pin(b.addr(), [7; 32]);
        let e = a
            .transport
            .request(b.addr(), Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        let reason = connection_reason(e);
        assert!(reason.contains("pinned"), "{reason}");
        assert!(
            reason.contains(&tls::fingerprint_hex(&b.transport.fingerprint())),
            "{reason}"
        );
        a.transport.pin(b.addr(), b.transport.fingerprint());
        echo(&a, &b, b"right certificate").await;
        // Re-pinning to something else drops the cached connection.
        a.transport.pin(b.addr(), [9; 32]);
        let e = a
            .transport
            .request(b.addr(), Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(connection_reason(e).contains("pinned"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn request_to_a_closed_peer_fails_quickly() {
        let token = Token::random();
        let a = node_with(&token, |c| c.idle_timeout = Duration::from_secs(2));
        let b = node(&token);
        let b_addr = b.addr();
        echo(&a, &b, b"alive").await;

        // A request in flight when the peer shuts down fails with the peer's reason.
        let pending = {
            let t = a.transport.clone();
            tokio::spawn(async move { t.request(b_addr, Bytes::from_static(b"hold")).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        b.transport.close();
        let e = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("pending request hung")
            .unwrap()
            .unwrap_err();
        let reason = connection_reason(e);
        assert!(reason.contains(SHUTDOWN_REASON), "{reason}");
        assert!(started.elapsed() < Duration::from_secs(3));

        // A new request to the dead address fails within the idle timeout.
        let started = Instant::now();
        let e = tokio::time::timeout(
            Duration::from_secs(10),
            a.transport.request(b_addr, Bytes::from_static(b"anyone?")),
        )
        .await
        .expect("request to a dead peer hung")
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
        let reason = connection_reason(e);
        assert!(reason.contains("cannot connect"), "{reason}");
        assert!(a.recorder.lost.lock().iter().any(|(p, _)| *p == b_addr));

        // Closing A fails its own requests immediately.
        a.transport.close();
        let e = a
            .transport
            .request(b_addr, Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(connection_reason(e).contains(SHUTDOWN_REASON));
    }

    #[test]
    fn queue_limits_are_checked() {
        let mut config = TransportConfig::new(local(), Token::random());
        let limits = config.queue_limits().unwrap();
        assert_eq!((limits.soft, limits.hard), (64 << 20, 256 << 20));
        config.queue_soft_limit = 1000;
        let limits = config.queue_limits().unwrap();
        assert_eq!((limits.soft, limits.hard), (1000, 4000));
        config.queue_hard_limit = Some(999);
        let e = config.queue_limits().unwrap_err().to_string();
        assert!(
            e.contains("hard limit (999 bytes) is below its soft limit"),
            "{e}"
        );
        config.queue_soft_limit = 0;
        let e = config.queue_limits().unwrap_err().to_string();
        assert!(e.contains("soft limit is 0 bytes"), "{e}");
    }

    /// Soft limit of the backpressure tests (hard limit: the default, four times it).
    const SOFT: usize = 1 << 20;
    /// Size of the messages the backpressure tests send.
    const MESSAGE: usize = 64 << 10;
    /// What one such message counts against the queue limits.
    const ITEM: usize = MESSAGE + ITEM_OVERHEAD;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_blocking_sender_waits_at_the_soft_limit_until_the_connection_closes() {
        let token = Token::random();
        let a = node_with(&token, |c| c.queue_soft_limit = SOFT);
        let deaf = probe::DeafPeer::start(&token.to_hex()).unwrap();
        let to = deaf.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        // A plain thread (outside any runtime) sends until told to stop.
        let sender = {
            let (t, stop, sent) = (a.transport.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let payload = Bytes::from(vec![7u8; MESSAGE]);
                while !stop.load(Ordering::SeqCst) {
                    t.send(to, payload.clone());
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let link = wait_for("the link to the deaf peer exists", || {
            a.transport.link_to(to)
        })
        .await;
        // Once the connection is up, the sender ends up waiting; the queue never holds more
        // than the soft limit plus one message.
        let mut most = 0;
        wait_until("the sender waits for room on the live connection", || {
            let queued = link.queued.load(Ordering::Relaxed);
            most = most.max(queued);
            assert!(queued <= SOFT + ITEM, "{queued} bytes queued");
            link.conn.get().is_some() && link.waiting.load(Ordering::Relaxed) == 1
        })
        .await;
        // It only waits once the soft limit is queued (every byte queued was sent).
        let blocked_at = sent.load(Ordering::SeqCst);
        assert!(blocked_at * ITEM >= SOFT, "only {blocked_at} messages sent");
        // The queue stays within bounds while the peer reads nothing.
        for _ in 0..100 {
            tokio::task::yield_now().await;
            let queued = link.queued.load(Ordering::Relaxed);
            most = most.max(queued);
            assert!(queued <= SOFT + ITEM, "{queued} bytes queued");
        }
        assert!(!link.is_closed());

        // The connection closing releases the sender and drains the queue.
        stop.store(true, Ordering::SeqCst);
        blocking(move || deaf.close()).await;
        wait_until("the sender is released", || sender.is_finished()).await;
        sender.join().unwrap();
        wait_until("the queue drains", || {
            link.queued.load(Ordering::Relaxed) == 0
        })
        .await;
        let reason = link.closed_reason().expect("the link is closed");
        assert!(reason.contains(probe::DEAF_PEER_STOPPED), "{reason}");
        assert_eq!(link.waiting.load(Ordering::Relaxed), 0);
        eprintln!("at most {most} bytes queued (soft limit {SOFT})");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_runtime_sender_never_waits_and_the_hard_limit_closes_the_connection() {
        const HARD: usize = 4 * SOFT;
        let token = Token::random();
        let a = node_with(&token, |c| c.queue_soft_limit = SOFT);
        let b = node(&token);
        let deaf = probe::DeafPeer::start(&token.to_hex()).unwrap();
        let to = deaf.addr();
        // A request the deaf peer will never answer; it dials the connection.
        let pending = tokio::spawn(a.transport.request(to, Bytes::from_static(b"anyone?")));
        let link = wait_for("the connection to the deaf peer is up", || {
            a.transport
                .link_to(to)
                .filter(|link| link.conn.get().is_some())
        })
        .await;
        // A runtime task sends until the connection is lost: it never waits, and the queue never
        // goes over the hard limit.
        let sender = {
            let (t, recorder, link) = (a.transport.clone(), a.recorder.clone(), link.clone());
            tokio::spawn(async move {
                let payload = Bytes::from(vec![7u8; MESSAGE]);
                let mut sent = 0usize;
                while recorder.lost.lock().is_empty() {
                    assert!(sent < 10_000, "the connection was never closed");
                    t.send(to, payload.clone());
                    sent += 1;
                    let queued = link.queued.load(Ordering::Relaxed);
                    assert!(queued <= HARD, "{queued} bytes queued");
                    if sent % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                sent
            })
        };
        let sent = tokio::time::timeout(Duration::from_secs(20), sender)
            .await
            .expect("the runtime sender blocked")
            .unwrap();
        // The connection was closed only once the hard limit was reached.
        assert!(sent * ITEM >= HARD - ITEM, "only {sent} messages sent");

        // The loss was reported, naming the peer and the amounts.
        let (peer, reason) = a.recorder.lost.lock()[0].clone();
        assert_eq!(peer, to);
        assert!(
            reason.starts_with(&format!("the peer at {to} is not reading: ")),
            "{reason}"
        );
        assert!(
            reason.ends_with(&format!(
                "bytes queued for it, over the limit of {HARD} bytes"
            )),
            "{reason}"
        );
        assert_eq!(link.closed_reason().as_deref(), Some(reason.as_str()));
        // The pending request failed with that reason.
        let e = tokio::time::timeout(Duration::from_secs(20), pending)
            .await
            .expect("the pending request hung")
            .unwrap()
            .unwrap_err();
        assert_eq!(connection_reason(e), reason);
        // The peer is disconnected (told why, unless quinn cannot send the close: see
        // quinn-rs/quinn#2785, fixed after quinn-proto 0.11.19), and the queue drains.
        wait_until("the deaf peer's connection ends", || {
            !deaf.close_reasons().is_empty()
        })
        .await;
        eprintln!("the deaf peer saw: {:?}", deaf.close_reasons());
        wait_until("the queue drains", || {
            link.queued.load(Ordering::Relaxed) == 0
        })
        .await;
        // A healthy peer is still reached, on a new connection.
        echo(&a, &b, b"still fine").await;
        blocking(move || deaf.close()).await;
    }
}
