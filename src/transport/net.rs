//! The switchboard of one process: where its components register the messages they take, and
//! how a message reaches a component wherever it lives.
//!
//! A component's address is a [`Target`]: the process it lives in (the address that process's
//! endpoint listens on) and the kind of component ([`Service`]). Sending to a target in this
//! process is a plain call of the handler the component registered (for an actix actor, its
//! `do_send`/`send`); sending to one in another process serializes the same message type with
//! rmp-serde and carries it over QUIC, where the other process's switchboard hands it to its
//! handler. Nothing above this module knows which happened.
//!
//! Each message type that may travel implements [`Wire`]: a tag unique among all messages, the
//! kind of component that takes it, and (through actix's `Message`) the type of its reply. A
//! process registers a handler per message type it takes ([`Net::serve`], or
//! [`Net::serve_actor`] for an actix actor); a message for which this process registered nothing
//! is refused with an error that says so, never dropped silently.
//!
//! A process without an endpoint (an embedded runtime) has a switchboard too: every component is
//! in it, so every target is local.

use crate::error::Error;
use crate::transport::{Conn, Delivery, Inbound, Transport, TransportConfig};
use actix::dev::ToEnvelope;
use actix::prelude::*;
use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};

/// A kind of component: the GCS, a raylet, a worker, an object owner.
pub(crate) trait Service: 'static {
    /// Its name, for messages.
    const NAME: &'static str;
}

/// A message that may cross processes.
pub(crate) trait Wire:
    Message<Result: Serialize + DeserializeOwned + Send + 'static>
    + Serialize
    + DeserializeOwned
    + Send
    + 'static
{
    /// The message's tag on the wire: unique among all messages (below [`MAX_TAGS`]).
    const TAG: u16;
    /// The kind of component that takes it.
    type To: Service;
}

/// Tags are below this.
pub(crate) const MAX_TAGS: usize = 128;

/// The address a process without an endpoint goes by: no other process can reach it.
pub(crate) const IN_PROCESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// The answer to a request, as the handler produces it.
pub(crate) type Reply<M> = BoxFuture<'static, Result<<M as Message>::Result, Error>>;

/// How a process handles one message type.
struct Handlers<M: Message> {
    /// A one-way message.
    tell: Box<dyn Fn(M) + Send + Sync>,
    /// A request.
    ask: Box<dyn Fn(M) -> Reply<M> + Send + Sync>,
}

/// Decodes an incoming message of one type and hands it to its handlers.
type Inbound_ = fn(&Arc<Net>, &(dyn Any + Send + Sync), &[u8], Option<(Conn, u64)>);

/// One registered message type.
struct Slot {
    /// Its `Handlers<M>`.
    handlers: Box<dyn Any + Send + Sync>,
    /// Decodes and dispatches it when it comes from another process.
    inbound: Inbound_,
}

/// Called when the connection to a process is lost: its address and why.
pub(crate) type LostObserver = Arc<dyn Fn(SocketAddr, &str) + Send + Sync>;

/// The switchboard of one process (see the module docs).
pub(crate) struct Net {
    addr: SocketAddr,
    endpoint: Option<Arc<Transport>>,
    runtime: tokio::runtime::Handle,
    slots: Box<[OnceLock<Slot>]>,
    lost: RwLock<Vec<LostObserver>>,
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Net")
            .field("addr", &self.addr)
            .field("endpoint", &self.endpoint.is_some())
            .finish_non_exhaustive()
    }
}

/// Hands what the endpoint receives to the switchboard, once it exists.
struct Switch(OnceLock<Weak<Net>>);

impl Inbound for Switch {
    fn deliver(&self, conn: Conn, delivery: Delivery) {
        if let Some(net) = self.0.get().and_then(Weak::upgrade) {
            net.deliver(conn, delivery);
        }
    }

    fn connection_lost(&self, peer: SocketAddr, reason: &str) {
        if let Some(net) = self.0.get().and_then(Weak::upgrade) {
            net.peer_lost(peer, reason);
        }
    }
}

fn empty_slots() -> Box<[OnceLock<Slot>]> {
    (0..MAX_TAGS).map(|_| OnceLock::new()).collect()
}

impl Net {
    /// A switchboard with no endpoint: every component it reaches is in this process.
    pub(crate) fn in_process(runtime: tokio::runtime::Handle) -> Arc<Net> {
        Arc::new(Net {
            addr: IN_PROCESS,
            endpoint: None,
            runtime,
            slots: empty_slots(),
            lost: RwLock::new(Vec::new()),
        })
    }

    /// A switchboard with a QUIC endpoint bound per `config`. Must be called inside a tokio
    /// multi-thread runtime, which then runs the endpoint's tasks.
    pub(crate) fn bind(config: TransportConfig) -> Result<Arc<Net>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::Connection {
            peer: config.bind.to_string(),
            reason: "the endpoint must be started inside a tokio runtime".into(),
        })?;
        let switch = Arc::new(Switch(OnceLock::new()));
        let endpoint = Transport::bind(config, switch.clone())?;
        let net = Arc::new(Net {
            addr: endpoint.local_addr(),
            endpoint: Some(endpoint),
            runtime,
            slots: empty_slots(),
            lost: RwLock::new(Vec::new()),
        });
        let _ = switch.0.set(Arc::downgrade(&net));
        Ok(net)
    }

    /// The address this process goes by: where its endpoint listens ([`IN_PROCESS`] without one).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether `addr` is this process.
    pub(crate) fn is_here(&self, addr: SocketAddr) -> bool {
        addr == self.addr
    }

    /// The event loop the switchboard answers requests on.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// The component of kind `S` in the process at `addr`.
    pub(crate) fn target<S: Service>(self: &Arc<Self>, addr: SocketAddr) -> Target<S> {
        Target {
            net: self.clone(),
            to: addr,
            _s: PhantomData,
        }
    }

    /// Registers how this process handles `M`: `tell` for one-way messages, `ask` for requests.
    /// A message type is handled by one component per process: a second registration is refused.
    pub(crate) fn serve<M: Wire>(
        &self,
        tell: impl Fn(M) + Send + Sync + 'static,
        ask: impl Fn(M) -> Reply<M> + Send + Sync + 'static,
    ) -> Result<(), Error> {
        let slot = Slot {
            handlers: Box::new(Handlers::<M> {
                tell: Box::new(tell),
                ask: Box::new(ask),
            }),
            inbound: inbound::<M>,
        };
        let cell = self
            .slots
            .get(M::TAG as usize)
            .ok_or_else(|| Error::invalid(format!("message tag {} is out of range", M::TAG)))?;
        cell.set(slot).map_err(|_| {
            Error::invalid(format!(
                "{} is already handled in this process",
                short_name::<M>()
            ))
        })
    }

    /// Registers an actix actor as this process's handler of `M`.
    pub(crate) fn serve_actor<M, A>(&self, addr: &Addr<A>) -> Result<(), Error>
    where
        M: Wire,
        A: Actor + Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let (tell, ask) = (addr.clone(), addr.clone());
        self.serve::<M>(
            move |m| tell.do_send(m),
            move |m| {
                let reply = ask.send(m);
                Box::pin(async move {
                    reply.await.map_err(|_| {
                        Error::shutdown(format!(
                            "the {} that handles {} stopped",
                            M::To::NAME,
                            short_name::<M>()
                        ))
                    })
                })
            },
        )
    }

    /// Calls `observer` whenever the connection to another process is lost.
    pub(crate) fn on_lost(&self, observer: LostObserver) {
        self.lost.write().push(observer);
    }

    /// Whether this process has a handler for the message with `tag`.
    #[cfg(test)]
    pub(crate) fn serves(&self, tag: u16) -> bool {
        self.slots
            .get(tag as usize)
            .is_some_and(|s| s.get().is_some())
    }

    fn handlers<M: Wire>(&self) -> Option<&Handlers<M>> {
        self.slots
            .get(M::TAG as usize)?
            .get()?
            .handlers
            .downcast_ref::<Handlers<M>>()
    }

    fn not_here<M: Wire>(&self) -> Error {
        Error::invalid(format!(
            "this process ({}) runs no {} to take {}",
            self.addr,
            M::To::NAME,
            short_name::<M>()
        ))
    }

    /// Sends a one-way message to the process at `to`. Called outside any tokio runtime, it may
    /// wait while the connection's queue is at its soft limit (see the transport's module docs on
    /// backpressure).
    pub(crate) fn tell<M: Wire>(&self, to: SocketAddr, msg: M) {
        if to == self.addr {
            match self.handlers::<M>() {
                Some(h) => (h.tell)(msg),
                None => {
                    tracing::warn!(error = %self.not_here::<M>(), "message not delivered")
                }
            }
            return;
        }
        match (&self.endpoint, encode(&msg)) {
            (Some(endpoint), Ok(bytes)) => endpoint.send(to, bytes),
            (None, _) => tracing::warn!(%to, message = short_name::<M>(),
                "message not delivered: this process has no network endpoint"),
            (_, Err(e)) => tracing::warn!(%to, error = %e, "message not sent"),
        }
    }

    /// Sends a request to the process at `to`; the future resolves with the reply. The request
    /// is on its way when this returns: it keeps its place among the messages sent before and
    /// after it (outside any tokio runtime, this may first wait for room, like
    /// [`tell`](Self::tell)).
    pub(crate) fn ask<M: Wire>(
        &self,
        to: SocketAddr,
        msg: M,
    ) -> impl std::future::Future<Output = Result<M::Result, Error>> + Send + 'static {
        let pending: Result<Reply<M>, Error> = if to == self.addr {
            match self.handlers::<M>() {
                Some(h) => Ok((h.ask)(msg)),
                None => Err(self.not_here::<M>()),
            }
        } else {
            match (&self.endpoint, encode(&msg)) {
                (Some(endpoint), Ok(bytes)) => {
                    let reply = endpoint.request(to, bytes);
                    Ok(Box::pin(
                        async move { decode_reply::<M>(to, &reply.await?) },
                    ))
                }
                (None, _) => Err(Error::connection(
                    to,
                    "this process has no network endpoint: it cannot reach other processes",
                )),
                (_, Err(e)) => Err(e),
            }
        };
        async move { pending?.await }
    }

    /// Pins the certificate expected at `addr`.
    pub(crate) fn pin(&self, addr: SocketAddr, fingerprint: [u8; 32]) {
        if let Some(e) = &self.endpoint {
            e.pin(addr, fingerprint);
        }
    }

    /// blake3 of the endpoint's certificate (zeros without an endpoint).
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        self.endpoint.as_ref().map_or([0; 32], |e| e.fingerprint())
    }

    /// How many new peers the endpoint asked to prove their address (0 without an endpoint).
    pub(crate) fn address_checks(&self) -> u64 {
        self.endpoint.as_ref().map_or(0, |e| e.address_checks())
    }

    /// The endpoint's live connections and the bytes it moved (zero without an endpoint).
    pub(crate) fn traffic(&self) -> crate::transport::Traffic {
        self.endpoint
            .as_ref()
            .map_or_else(Default::default, |e| e.traffic())
    }

    /// Closes the endpoint, if any: every peer learns this process left.
    pub(crate) fn close(&self) {
        if let Some(e) = &self.endpoint {
            e.close();
        }
    }

    /// After [`close`](Self::close): waits (at most `limit`) until the peers have been told.
    pub(crate) async fn wait_closed(&self, limit: std::time::Duration) {
        if let Some(e) = &self.endpoint {
            e.wait_closed(limit).await;
        }
    }

    fn deliver(self: Arc<Self>, conn: Conn, delivery: Delivery) {
        let (reply, payload) = match delivery {
            Delivery::Message(p) => (None, p),
            Delivery::Request { id, payload } => (Some((conn.clone(), id)), payload),
        };
        let refuse = |reason: String| {
            tracing::warn!(peer = %conn.peer(), "refused a message: {reason}");
            if let Some((conn, id)) = &reply {
                conn.reply(
                    *id,
                    encode_reply::<()>(&Err(Error::Serialization {
                        what: "a cluster message".into(),
                        reason,
                    })),
                );
            }
        };
        let Some((tag, body)) = split_tag(&payload) else {
            return refuse(format!(
                "a message of {} bytes is too short to carry a tag",
                payload.len()
            ));
        };
        match self.slots.get(tag as usize).and_then(OnceLock::get) {
            Some(slot) => (slot.inbound)(&self, slot.handlers.as_ref(), body, reply),
            None if (tag as usize) < MAX_TAGS => refuse(format!(
                "this process ({}) takes no message with tag {tag}",
                self.addr
            )),
            None => refuse(format!("unknown message tag {tag}")),
        }
    }

    fn peer_lost(&self, peer: SocketAddr, reason: &str) {
        tracing::debug!(%peer, reason, "connection lost");
        let observers: Vec<LostObserver> = self.lost.read().clone();
        for o in observers {
            o(peer, reason);
        }
    }
}

/// Decodes an incoming `M` and hands it to its handlers (a request's reply goes back on `reply`).
fn inbound<M: Wire>(
    net: &Arc<Net>,
    handlers: &(dyn Any + Send + Sync),
    body: &[u8],
    reply: Option<(Conn, u64)>,
) {
    let Some(h) = handlers.downcast_ref::<Handlers<M>>() else {
        return;
    };
    let msg: M = match rmp_serde::from_slice(body) {
        Ok(m) => m,
        Err(e) => {
            let reason = format!("malformed {}: {e}", short_name::<M>());
            tracing::warn!("refused a message: {reason}");
            if let Some((conn, id)) = reply {
                conn.reply(
                    id,
                    encode_reply::<()>(&Err(Error::Serialization {
                        what: "a cluster message".into(),
                        reason,
                    })),
                );
            }
            return;
        }
    };
    match reply {
        None => (h.tell)(msg),
        Some((conn, id)) => {
            let answer = (h.ask)(msg);
            net.runtime.spawn(async move {
                let r = answer.await;
                let (payload, tail) = encode_reply_parts(&r);
                conn.reply_with_tail(id, payload, tail);
            });
        }
    }
}

/// The type's name without its module path.
fn short_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    full.rsplit("::").next().unwrap_or(full)
}

fn split_tag(payload: &[u8]) -> Option<(u16, &[u8])> {
    let (tag, body) = payload.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*tag), body))
}

/// A message as it travels: its tag, then its rmp-serde encoding.
pub(crate) fn encode<M: Wire>(msg: &M) -> Result<Bytes, Error> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&M::TAG.to_be_bytes());
    rmp_serde::encode::write(&mut buf, msg).map_err(|e| Error::Serialization {
        what: short_name::<M>().into(),
        reason: e.to_string(),
    })?;
    Ok(Bytes::from(buf))
}

/// Encodes the reply to a request.
fn encode_reply<T: Serialize>(reply: &Result<T, Error>) -> Bytes {
    match rmp_serde::to_vec(reply) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            let err: Result<(), Error> = Err(Error::Serialization {
                what: "a reply".into(),
                reason: e.to_string(),
            });
            Bytes::from(rmp_serde::to_vec(&err).unwrap_or_default())
        }
    }
}

/// Encodes the reply to a request as a payload and a tail: a large value that the reply ends
/// with ([`attached_bytes`]) is the tail, sent from where it is instead of copied (the peer
/// receives the two as one payload and decodes it as usual).
fn encode_reply_parts<T: Serialize>(reply: &Result<T, Error>) -> (Bytes, Bytes) {
    if reply.is_err() {
        return (encode_reply(reply), Bytes::new());
    }
    ATTACHED.with(|a| a.borrow_mut().collecting = true);
    // As `rmp_serde::to_vec` starts: most replies fit without growing.
    let mut w = TailWriter {
        head: Vec::with_capacity(128),
        tail: None,
    };
    let written = rmp_serde::encode::write(&mut w, reply);
    ATTACHED.with(|a| {
        let mut a = a.borrow_mut();
        a.collecting = false;
        a.values.clear();
    });
    match written {
        Ok(()) => (Bytes::from(w.head), w.tail.unwrap_or_default()),
        Err(_) => (encode_reply(reply), Bytes::new()),
    }
}

/// Values at least this large may travel as a reply's tail.
const ATTACH_MIN: usize = 1 << 20;

#[derive(Default)]
struct Attached {
    collecting: bool,
    values: Vec<Bytes>,
}

thread_local! {
    /// Large values serialized (with [`attached_bytes`]) by the reply being encoded here.
    static ATTACHED: std::cell::RefCell<Attached> = std::cell::RefCell::default();
}

/// Serializes `bytes` as a byte string; in a reply being encoded, a large one is noted so that
/// it can travel as the reply's tail without a copy. For `#[serde(serialize_with = "...")]`.
pub(crate) fn attached_bytes<S: serde::Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    if bytes.len() >= ATTACH_MIN {
        ATTACHED.with(|a| {
            let mut a = a.borrow_mut();
            if a.collecting {
                a.values.push(bytes.clone());
            }
        });
    }
    s.serialize_bytes(bytes)
}

/// Collects an encoding: everything in `head`, except a noted value written last, kept as the
/// `tail` (a noted value followed by more bytes is copied into `head` after all).
#[derive(Default)]
struct TailWriter {
    head: Vec<u8>,
    tail: Option<Bytes>,
}

impl std::io::Write for TailWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(t) = self.tail.take() {
            self.head.extend_from_slice(&t);
        }
        if buf.len() >= ATTACH_MIN {
            let noted = ATTACHED.with(|a| {
                a.borrow()
                    .values
                    .iter()
                    .find(|v| v.as_ptr() == buf.as_ptr() && v.len() == buf.len())
                    .cloned()
            });
            if let Some(v) = noted {
                self.tail = Some(v);
                return Ok(buf.len());
            }
        }
        self.head.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn decode_reply<M: Wire>(from: SocketAddr, bytes: &Bytes) -> Result<M::Result, Error> {
    let decoded: Result<M::Result, Error> = reading_from(bytes, || rmp_serde::from_slice(bytes))
        .map_err(|e| Error::Serialization {
            what: format!("the reply to {} from {from}", short_name::<M>()),
            reason: e.to_string(),
        })?;
    decoded
}

thread_local! {
    /// The payload being decoded on this thread, for [`shared_bytes`] to share instead of copy.
    static SOURCE: std::cell::RefCell<Option<Bytes>> = const { std::cell::RefCell::new(None) };
}

/// Runs `decode` with `payload` as the bytes that [`shared_bytes`] fields may share.
fn reading_from<R>(payload: &Bytes, decode: impl FnOnce() -> R) -> R {
    let before = SOURCE.with(|s| s.replace(Some(payload.clone())));
    let r = decode();
    SOURCE.with(|s| *s.borrow_mut() = before);
    r
}

/// Deserializes a byte string as `Bytes` that share the payload being decoded (a reply's large
/// value is then not copied out of the buffer it arrived in); a copy when it is not part of it.
/// For `#[serde(deserialize_with = "...")]`.
pub(crate) fn shared_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Bytes;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(SOURCE.with(|s| {
                let s = s.borrow();
                match &*s {
                    Some(src) if within(src, v) => src.slice_ref(v),
                    _ => Bytes::copy_from_slice(v),
                }
            }))
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(Bytes::from(out))
        }
    }
    d.deserialize_bytes(Visit)
}

/// Whether `part` lies inside `whole`'s memory.
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len() && !part.is_empty()
}

/// The address of a component of kind `S`: the process it lives in. Sending to it is a plain
/// call when that process is this one, a message over QUIC otherwise.
pub(crate) struct Target<S: Service> {
    net: Arc<Net>,
    to: SocketAddr,
    _s: PhantomData<fn() -> S>,
}

impl<S: Service> Clone for Target<S> {
    fn clone(&self) -> Self {
        Target {
            net: self.net.clone(),
            to: self.to,
            _s: PhantomData,
        }
    }
}

impl<S: Service> fmt::Debug for Target<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", S::NAME, self.to)
    }
}

impl<S: Service> PartialEq for Target<S> {
    fn eq(&self, other: &Self) -> bool {
        self.to == other.to
    }
}

impl<S: Service> Target<S> {
    /// The process the component lives in.
    pub(crate) fn process(&self) -> SocketAddr {
        self.to
    }

    /// Sends a one-way message.
    pub(crate) fn do_send<M: Wire<To = S>>(&self, msg: M) {
        self.net.tell(self.to, msg)
    }

    /// Sends a request; the future resolves with the reply (or why there is none).
    pub(crate) fn send<M: Wire<To = S>>(
        &self,
        msg: M,
    ) -> impl std::future::Future<Output = Result<M::Result, Error>> + Send + 'static {
        self.net.ask(self.to, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Token;
    use serde::Deserialize;
    use std::time::Duration;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum Answer {
        Value(#[serde(serialize_with = "attached_bytes", deserialize_with = "shared_bytes")] Bytes),
    }

    #[test]
    fn a_large_value_ending_a_reply_travels_and_decodes_without_a_copy() {
        let big = Bytes::from(vec![7u8; ATTACH_MIN + 5]);
        let (head, tail) = encode_reply_parts::<Answer>(&Ok(Answer::Value(big.clone())));
        assert_eq!(tail.as_ptr(), big.as_ptr(), "the tail is the value itself");
        assert!(head.len() < 64, "{} bytes", head.len());
        let whole = Bytes::from([&head[..], &tail[..]].concat());
        let back: Result<Answer, Error> =
            reading_from(&whole, || rmp_serde::from_slice(&whole)).expect("decodes");
        let Ok(Answer::Value(b)) = back else {
            panic!("not a value")
        };
        assert_eq!(b, big);
        assert!(within(&whole, &b), "shares the received buffer");
        // Decoded elsewhere, the same bytes are copied.
        let copied: Result<Answer, Error> = rmp_serde::from_slice(&whole).expect("decodes");
        assert!(matches!(copied, Ok(Answer::Value(c)) if !within(&whole, &c)));
        // Small values, and large ones that something follows, go in the payload.
        let small = encode_reply_parts::<Answer>(&Ok(Answer::Value(Bytes::from_static(b"x"))));
        assert!(small.1.is_empty());
        let pair = Ok((Answer::Value(big.clone()), 5u32));
        let (head, tail) = encode_reply_parts(&pair);
        assert!(tail.is_empty());
        let back: Result<(Answer, u32), Error> = rmp_serde::from_slice(&head).expect("decodes");
        assert_eq!(back.ok(), Some((Answer::Value(big), 5)));
    }

    struct Echo;
    impl Service for Echo {
        const NAME: &'static str = "echo service";
    }

    #[derive(Message, Serialize, Deserialize, Debug, PartialEq)]
    #[rtype(result = "String")]
    struct Shout(String);
    impl Wire for Shout {
        const TAG: u16 = MAX_TAGS as u16 - 1;
        type To = Echo;
    }

    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "()")]
    struct Note(u32);
    impl Wire for Note {
        const TAG: u16 = MAX_TAGS as u16 - 2;
        type To = Echo;
    }

    struct Loud {
        notes: flume::Sender<u32>,
    }
    impl Actor for Loud {
        type Context = Context<Self>;
    }
    impl Handler<Shout> for Loud {
        type Result = String;
        fn handle(&mut self, m: Shout, _: &mut Context<Self>) -> String {
            m.0.to_uppercase()
        }
    }
    impl Handler<Note> for Loud {
        type Result = ();
        fn handle(&mut self, m: Note, _: &mut Context<Self>) {
            let _ = self.notes.send(m.0);
        }
    }

    fn serve_loud(net: &Net) -> flume::Receiver<u32> {
        let (tx, rx) = flume::unbounded();
        let addr = Loud { notes: tx }.start();
        net.serve_actor::<Shout, _>(&addr).unwrap();
        net.serve_actor::<Note, _>(&addr).unwrap();
        rx
    }

    #[actix_rt::test]
    async fn a_local_target_is_a_plain_call() {
        let net = Net::in_process(tokio::runtime::Handle::current());
        let notes = serve_loud(&net);
        let t: Target<Echo> = net.target(net.addr());
        assert_eq!(t.send(Shout("hi".into())).await.unwrap(), "HI");
        t.do_send(Note(7));
        assert_eq!(notes.recv_async().await.unwrap(), 7);
        // A second handler for the same message is refused.
        let again = Loud {
            notes: flume::unbounded().0,
        }
        .start();
        assert!(net.serve_actor::<Shout, _>(&again).is_err());
        // Elsewhere is unreachable without an endpoint, and says so.
        let far: Target<Echo> = net.target("127.0.0.1:9".parse().unwrap());
        let e = far.send(Shout("x".into())).await.unwrap_err();
        assert!(e.to_string().contains("no network endpoint"), "{e}");
    }

    #[actix_rt::test]
    async fn a_message_nobody_here_takes_is_refused_with_a_reason() {
        let net = Net::in_process(tokio::runtime::Handle::current());
        let t: Target<Echo> = net.target(net.addr());
        let e = t.send(Shout("x".into())).await.unwrap_err();
        assert!(e.to_string().contains("runs no echo service"), "{e}");
    }

    #[test]
    fn the_same_message_reaches_a_component_in_another_process() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let system = actix_rt::System::new();
        let token = Token::random();
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let (a, b) = {
            let _g = rt.enter();
            (
                Net::bind(TransportConfig::new(local, token.clone())).unwrap(),
                Net::bind(TransportConfig::new(local, token)).unwrap(),
            )
        };
        system.block_on(async {
            let notes = serve_loud(&b);
            let t: Target<Echo> = a.target(b.addr());
            let reply = rt
                .spawn(t.send(Shout("far".into())))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(reply, "FAR");
            t.do_send(Note(3));
            let got = tokio::time::timeout(Duration::from_secs(20), notes.recv_async())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, 3);
            // What B does not take is refused with its reason.
            let back: Target<Echo> = b.target(a.addr());
            let e = rt
                .spawn(back.send(Shout("x".into())))
                .await
                .unwrap()
                .unwrap_err();
            assert!(e.to_string().contains("takes no message with tag"), "{e}");
        });
        a.close();
        b.close();
    }
}
