//! Object-store shards: actix actors that hold object bytes and wake whoever waits for them.
//!
//! A node's store is split into shards by object id so that puts and gets for different objects
//! proceed in parallel; each shard is a single-threaded actor owning its map, so there is no
//! locking. Values are `Bytes`: handing one to a reader is a reference-count bump, never a copy.
//! What the shards hold counts against the store's capacity, and makes room by spilling
//! ([`spill`](crate::objects::spill)): a value is admitted by the thread that stores it, before
//! it reaches its shard, so a put that cannot fit becomes an object holding
//! `Error::ObjectStoreFull`. A waiter is a channel: readers (blocking `get`, async `.await`, the raylet's dependency
//! resolution) send [`Fetch`] and receive each object as soon as it is present.

use crate::error::Error;
use crate::ids::{IdMap, ObjectId};
use crate::objects::pull;
use crate::objects::shm::{self, ShareKey};
use crate::objects::spill::{MemoryStats, Slot, StoreLimits, StoreMemory};
use crate::protocol::owner::{Fetched, FreeCopies, HeldCopy};
pub(crate) use crate::protocol::refs::Stored;
use crate::protocol::svc;
use crate::transport::net::Net;
use actix::prelude::*;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

/// A reply channel: each fetched object is sent with the caller's slot number.
pub(crate) use crate::objects::reply::FetchReply;

/// The slot of the marker a shard sends, when asked, after every object it already holds: the
/// reader then knows it has seen everything that was present when the shard answered.
pub(crate) const PRESENT_SENT: u32 = u32::MAX;

/// What a shard holds for an object: its bytes (admitted to the store's memory), the error it
/// holds, or where its bytes are kept (a result that stayed in the process that made it).
pub(crate) enum Entry {
    Bytes(Arc<Slot>),
    Error(Error),
    Remote(Box<Remote>),
}

/// An object kept by another process: pulled from there when read, and the pulled copy kept
/// here (within the store's memory) for the next reader.
pub(crate) struct Remote {
    copy: HeldCopy,
    local: Option<Arc<Slot>>,
    /// Readers waiting for the pull in flight (one pull per object at a time).
    pulling: Vec<(u32, FetchReply)>,
}

impl Entry {
    /// Bytes this store keeps of it.
    fn size(&self) -> usize {
        match self {
            Entry::Bytes(slot) => slot.size() as usize,
            Entry::Error(_) => 0,
            Entry::Remote(r) => r.local.as_ref().map_or(0, |s| s.size() as usize),
        }
    }

    /// A kept copy of the object elsewhere.
    pub(crate) fn remote(copy: HeldCopy) -> Self {
        Entry::Remote(Box::new(Remote {
            copy,
            local: None,
            pulling: Vec::new(),
        }))
    }
}

/// A pull finished: the value (or why it could not be read) for the readers waiting on it.
#[derive(Message)]
#[rtype(result = "()")]
struct Pulled {
    id: ObjectId,
    value: Stored,
    /// The keeper could not be read (gone, or without the copy): the object is lost there.
    lost: bool,
}

/// Drops what this store knows of an object kept elsewhere whose copy was lost, keeping its
/// readers waiting for it to be stored again (rebuilt) or failed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Forget {
    pub(crate) id: ObjectId,
}

/// Objects whose keeper could not be read, and where they were kept: for the owner to rebuild.
pub(crate) type LostCopies = flume::Receiver<(ObjectId, HeldCopy, String)>;

/// Stores a value (objects are immutable: a second put of the same id is ignored).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Put {
    pub(crate) id: ObjectId,
    pub(crate) entry: Entry,
}

/// Asks for objects; each is sent on `reply` when present.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Fetch {
    pub(crate) wants: Vec<(u32, ObjectId)>,
    pub(crate) reply: FetchReply,
    /// Send [`PRESENT_SENT`] after the objects already present.
    pub(crate) mark: bool,
}

/// Drops objects whose last reference is gone (and any reader still waiting for one).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Free {
    pub(crate) ids: Vec<ObjectId>,
}

/// Counts of what a shard holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, MessageResponse)]
pub(crate) struct ShardStats {
    pub(crate) objects: usize,
    pub(crate) bytes: usize,
    pub(crate) waiting: usize,
}

/// Reports [`ShardStats`].
#[derive(Message)]
#[rtype(result = "ShardStats")]
pub(crate) struct Stats;

/// One shard of a node's object store.
pub(crate) struct StoreShard {
    objects: IdMap<ObjectId, Entry>,
    waiters: IdMap<ObjectId, Vec<(u32, FetchReply)>>,
    bytes: usize,
    memory: Arc<StoreMemory>,
    /// The process's switchboard, to pull objects kept elsewhere and free their copies.
    net: Weak<Net>,
    /// Where copies that could not be read are reported.
    lost: flume::Sender<(ObjectId, HeldCopy, String)>,
}

impl StoreShard {
    pub(crate) fn new(
        memory: Arc<StoreMemory>,
        net: Weak<Net>,
        lost: flume::Sender<(ObjectId, HeldCopy, String)>,
    ) -> Self {
        StoreShard {
            objects: IdMap::default(),
            waiters: IdMap::default(),
            bytes: 0,
            memory,
            net,
            lost,
        }
    }

    fn read_slot(&self, slot: &Slot) -> Stored {
        match self.memory.read(slot) {
            Ok(b) => Stored::Value(b),
            Err(e) => Stored::Error(e),
        }
    }

    /// Sends object `id` to a reader: what this shard holds at once; an object kept elsewhere
    /// once pulled (or, for a reader that only asks what is ready now, `mark`, as ready).
    fn deliver(
        &mut self,
        id: ObjectId,
        slot: u32,
        reply: &FetchReply,
        mark: bool,
        ctx: &mut Context<Self>,
    ) -> bool {
        let value = match self.objects.get_mut(&id) {
            None => return false,
            Some(Entry::Error(e)) => Stored::Error(e.clone()),
            Some(Entry::Bytes(s)) => {
                let s = s.clone();
                self.read_slot(&s)
            }
            Some(Entry::Remote(r)) => match &r.local {
                // Evicted to make room: pulled again.
                Some(s) if s.evicted() => {
                    self.bytes -= s.size() as usize;
                    r.local = None;
                    return self.deliver(id, slot, reply, mark, ctx);
                }
                Some(s) => {
                    let s = s.clone();
                    self.read_slot(&s)
                }
                // Ready, but not here: a reader that only looks is told so at once.
                None if mark => Stored::Value(bytes::Bytes::new()),
                None => {
                    r.pulling.push((slot, reply.clone()));
                    if r.pulling.len() == 1 {
                        let copy = r.copy;
                        self.pull(id, copy, ctx);
                    }
                    return true;
                }
            },
        };
        let _ = reply.send((slot, value));
        true
    }

    /// Reads object `id` from the process that keeps it; the answer comes back as [`Pulled`].
    fn pull(&self, id: ObjectId, copy: HeldCopy, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let Some(net) = self.net.upgrade() else {
            me.do_send(Pulled {
                id,
                value: Stored::Error(Error::shutdown("pulling an object")),
                lost: false,
            });
            return;
        };
        let runtime = net.runtime().clone();
        let memory = self.memory.clone();
        runtime.spawn(async move {
            let (value, lost) = match pull::ask_copy(&net, id, copy, &[], Some(&memory)).await {
                Ok(Fetched::Here(Stored::Error(Error::ObjectLost { reason, .. }))) => (
                    Stored::Error(Error::ObjectLost {
                        object: id.to_string(),
                        reason,
                    }),
                    true,
                ),
                Ok(Fetched::Here(v)) => (v, false),
                Ok(Fetched::TooLarge(_) | Fetched::Kept(..) | Fetched::Shared(_)) => (
                    Stored::Error(Error::ObjectLost {
                        object: id.to_string(),
                        reason: "the process keeping it answered with no value".into(),
                    }),
                    true,
                ),
                Err(e) => (
                    Stored::Error(Error::ObjectLost {
                        object: id.to_string(),
                        reason: format!(
                            "the process keeping it on node {} ({}) could not be reached: {e}",
                            copy.node, copy.holder
                        ),
                    }),
                    true,
                ),
            };
            me.do_send(Pulled { id, value, lost });
        });
    }
}

impl Handler<Pulled> for StoreShard {
    type Result = ();
    fn handle(&mut self, msg: Pulled, _: &mut Context<Self>) {
        let Some(Entry::Remote(r)) = self.objects.get_mut(&msg.id) else {
            return;
        };
        if msg.lost && r.local.is_none() {
            // Its readers wait for the owner to rebuild it (or fail it) and store it again.
            let copy = r.copy;
            let waiting = std::mem::take(&mut r.pulling);
            self.objects.remove(&msg.id);
            self.waiters.entry(msg.id).or_default().extend(waiting);
            let reason = match msg.value {
                Stored::Error(e) => e.to_string(),
                Stored::Value(_) => String::new(),
            };
            let _ = self.lost.send((msg.id, copy, reason));
            return;
        }
        let waiting = std::mem::take(&mut r.pulling);
        if let (Stored::Value(b), None) = (&msg.value, &r.local) {
            // Kept for the next reader when it fits (a secondary copy: evicted, not spilled,
            // under pressure); a pulled copy is never worth refusing for.
            if let Ok(slot) = self.memory.admit_secondary(msg.id, b.clone()) {
                self.bytes += slot.size() as usize;
                r.local = Some(slot);
            }
        }
        for (slot, tx) in waiting {
            let _ = tx.send((slot, msg.value.clone()));
        }
    }
}

impl Actor for StoreShard {
    type Context = Context<Self>;
}

impl Handler<Put> for StoreShard {
    type Result = ();
    fn handle(&mut self, msg: Put, ctx: &mut Context<Self>) {
        match self.objects.get(&msg.id) {
            // A secondary copy evicted since: the new copy takes its place.
            Some(Entry::Bytes(s)) if s.evicted() => {
                self.bytes -= s.size() as usize;
                self.objects.remove(&msg.id);
            }
            Some(_) => return,
            None => {}
        }
        self.bytes += msg.entry.size();
        self.objects.insert(msg.id, msg.entry);
        if let Some(waiters) = self.waiters.remove(&msg.id) {
            for (slot, tx) in waiters {
                self.deliver(msg.id, slot, &tx, false, ctx);
            }
        }
    }
}

impl Handler<Fetch> for StoreShard {
    type Result = ();
    fn handle(&mut self, msg: Fetch, ctx: &mut Context<Self>) {
        for (slot, id) in msg.wants {
            match self.deliver(id, slot, &msg.reply, msg.mark, ctx) {
                true => {}
                false => {
                    let list = self.waiters.entry(id).or_default();
                    // Readers that gave up (wait with a timeout) leave closed channels behind.
                    list.retain(|(_, tx)| !tx.is_disconnected());
                    list.push((slot, msg.reply.clone()));
                }
            }
        }
        if msg.mark {
            let _ = msg
                .reply
                .send((PRESENT_SENT, Stored::Value(bytes::Bytes::new())));
        }
    }
}

impl Handler<Forget> for StoreShard {
    type Result = ();
    fn handle(&mut self, msg: Forget, _: &mut Context<Self>) {
        if let Some(Entry::Remote(r)) = self.objects.remove(&msg.id) {
            if let Some(slot) = &r.local {
                self.bytes -= slot.size() as usize;
                self.memory.forget(msg.id);
            }
            self.waiters.entry(msg.id).or_default().extend(r.pulling);
        }
    }
}

impl Handler<Free> for StoreShard {
    type Result = ();
    fn handle(&mut self, msg: Free, _: &mut Context<Self>) {
        let mut elsewhere: IdMap<SocketAddr, Vec<ObjectId>> = IdMap::default();
        for id in msg.ids {
            if let Some(entry) = self.objects.remove(&id) {
                self.bytes -= entry.size();
                match entry {
                    Entry::Bytes(_) => self.memory.forget(id),
                    Entry::Remote(r) => {
                        if r.local.is_some() {
                            self.memory.forget(id);
                        }
                        elsewhere.entry(r.copy.holder).or_default().push(id);
                    }
                    Entry::Error(_) => {}
                }
            }
            // Nobody holds a reference any more: nobody may wait for it either.
            self.waiters.remove(&id);
        }
        if let Some(net) = self.net.upgrade() {
            for (holder, ids) in elsewhere {
                net.target::<svc::Owner>(holder).do_send(FreeCopies { ids });
            }
        }
    }
}

impl Handler<Stats> for StoreShard {
    type Result = ShardStats;
    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> ShardStats {
        // Secondary copies evicted since: no longer held here.
        let mut gone = Vec::new();
        for (id, entry) in self.objects.iter_mut() {
            match entry {
                Entry::Bytes(s) if s.evicted() => gone.push(*id),
                Entry::Remote(r) if r.local.as_ref().is_some_and(|s| s.evicted()) => {
                    self.bytes -= r.local.take().map_or(0, |s| s.size() as usize);
                }
                _ => {}
            }
        }
        for id in gone {
            if let Some(entry) = self.objects.remove(&id) {
                self.bytes -= entry.size();
            }
        }
        ShardStats {
            objects: self.objects.len(),
            bytes: self.bytes,
            waiting: self.waiters.values().map(Vec::len).sum(),
        }
    }
}

/// The addresses of a node's shards, the routing of ids to shards, and the store's memory.
#[derive(Clone)]
pub(crate) struct StoreClient {
    shards: Arc<[Addr<StoreShard>]>,
    memory: Arc<StoreMemory>,
    lost: LostCopies,
}

impl StoreClient {
    /// Starts `n` shards, each on its own arbiter, sharing one memory held to `limits`; `net`
    /// reaches the processes that keep objects this store only knows the place of.
    pub(crate) fn start(n: usize, limits: StoreLimits, net: Weak<Net>) -> Self {
        let memory = Arc::new(StoreMemory::new(limits));
        let (lost_tx, lost) = flume::unbounded();
        let shards = (0..n.max(1))
            .map(|_| {
                let (memory, net, lost) = (memory.clone(), net.clone(), lost_tx.clone());
                StoreShard::start_in_arbiter(&Arbiter::new().handle(), |_| {
                    StoreShard::new(memory, net, lost)
                })
            })
            .collect::<Vec<_>>();
        StoreClient {
            shards: shards.into(),
            memory,
            lost,
        }
    }

    fn shard(&self, id: ObjectId) -> &Addr<StoreShard> {
        &self.shards[id.shard(self.shards.len())]
    }

    /// Stores `value` as `id`. A value that cannot fit even after spilling is stored as the
    /// `ObjectStoreFull` error instead, which is also returned.
    pub(crate) fn put(&self, id: ObjectId, value: Stored) -> Result<(), Error> {
        let (entry, refused) = match value {
            Stored::Error(e) => (Entry::Error(e), None),
            Stored::Value(bytes) => match self.memory.admit(id, bytes) {
                Ok(slot) => (Entry::Bytes(slot), None),
                Err(e) => {
                    tracing::warn!(object = %id, error = %e, "an object did not fit in the store");
                    (Entry::Error(e.clone()), Some(e))
                }
            },
        };
        self.shard(id).do_send(Put { id, entry });
        refused.map_or(Ok(()), Err)
    }

    /// Keeps `bytes`, a copy of object `id` read from the process that keeps it, while there is
    /// room: evicted rather than spilled under pressure (read it with
    /// [`read_secondary`](Self::read_secondary), which says when it is gone).
    pub(crate) fn put_secondary(&self, id: ObjectId, bytes: bytes::Bytes) -> Result<(), Error> {
        let slot = self.memory.admit_secondary(id, bytes)?;
        self.shard(id).do_send(Put {
            id,
            entry: Entry::Bytes(slot),
        });
        Ok(())
    }

    /// The bytes of secondary copy `id` (see [`put_secondary`](Self::put_secondary)) if this
    /// store still has them.
    pub(crate) fn read_secondary(&self, id: ObjectId) -> Option<bytes::Bytes> {
        self.memory.read_secondary(id)
    }

    /// Records that object `id` is kept by another process (`copy`): readers here pull it.
    pub(crate) fn put_remote(&self, id: ObjectId, copy: HeldCopy) {
        self.shard(id).do_send(Put {
            id,
            entry: Entry::remote(copy),
        });
    }

    /// Forgets an object kept elsewhere whose copy was lost (its readers keep waiting).
    pub(crate) fn forget(&self, id: ObjectId) {
        self.shard(id).do_send(Forget { id });
    }

    /// Objects this store could not pull because their keeper lost them.
    pub(crate) fn lost_copies(&self) -> LostCopies {
        self.lost.clone()
    }

    /// Reads object `id` where `copy` (and `others`) say it is kept, into this store (see
    /// [`pull::ask_copy`]).
    pub(crate) async fn ask_copy(
        &self,
        net: &Arc<Net>,
        id: ObjectId,
        copy: HeldCopy,
        others: &[HeldCopy],
    ) -> Result<Fetched, Error> {
        pull::ask_copy(net, id, copy, others, Some(&self.memory)).await
    }

    /// Places this store on `node` (see [`StoreMemory::set_node`]).
    pub(crate) fn set_node(&self, node: crate::ids::NodeId) {
        self.memory.set_node(node);
    }

    /// The key to read with from a process on `node`, when it shares memory with this one.
    pub(crate) fn share_key(&self, node: crate::ids::NodeId) -> Option<ShareKey> {
        self.memory.share_key(node)
    }

    /// What to answer a reader of object `id` (whose value is `value`) that asked with
    /// `share`: the value's shared-memory segment when the reader is on this node and it is
    /// large, else the value itself.
    pub(crate) fn answer(&self, id: ObjectId, value: Stored, share: Option<ShareKey>) -> Fetched {
        if let Some(h) = self.shared(id, &value, share) {
            return Fetched::Shared(h);
        }
        if let Stored::Value(b) = &value {
            self.memory.sent(b.len() as u64);
        }
        Fetched::Here(value)
    }

    /// The shared-memory handle to answer a reader that asked with `share` with, if it may map
    /// `value` (object `id`, large and in this store).
    pub(crate) fn shared(
        &self,
        id: ObjectId,
        value: &Stored,
        share: Option<ShareKey>,
    ) -> Option<shm::ShmHandle> {
        match (share, value) {
            (Some(key), Stored::Value(b)) if b.len() >= shm::SHARE_MIN => {
                self.memory.share(id, key)
            }
            _ => None,
        }
    }

    /// The ids of secondary copies this store evicts, as it evicts them.
    pub(crate) fn evictions(&self) -> flume::Receiver<ObjectId> {
        self.memory.evictions()
    }

    /// Whether this store holds object `id`'s bytes (in memory or spilled).
    pub(crate) fn holds(&self, id: ObjectId) -> bool {
        self.memory.holds(id)
    }

    /// Secondary copy `id` becomes one this store keeps for its owner (see
    /// [`StoreMemory::promote`]).
    pub(crate) fn promote(&self, id: ObjectId) -> bool {
        self.memory.promote(id)
    }

    /// The store's memory: capacity, bytes in memory and spilled.
    pub(crate) fn memory(&self) -> MemoryStats {
        self.memory.stats()
    }

    pub(crate) fn free(&self, id: ObjectId) {
        self.shard(id).do_send(Free { ids: vec![id] });
    }

    /// Starts fetching `ids`; slot `i` of the replies is `ids[i]`.
    #[cfg(test)]
    pub(crate) fn fetch(&self, ids: &[ObjectId]) -> flume::Receiver<(u32, Stored)> {
        let (tx, rx) = crate::objects::reply::channel();
        self.fetch_into(ids.iter().copied().enumerate(), tx);
        rx
    }

    /// Like [`fetch`](Self::fetch), and each shard asked also sends [`PRESENT_SENT`] once it has
    /// sent what it holds. Returns how many markers to expect.
    pub(crate) fn fetch_marked(&self, ids: &[ObjectId]) -> (flume::Receiver<(u32, Stored)>, usize) {
        let (tx, rx) = crate::objects::reply::channel();
        let n = self.send_fetches(ids.iter().copied().enumerate(), tx, true);
        (rx, n)
    }

    /// What the store holds of `ids` right now (slot `i` is `ids[i]`; `None`: not here), without
    /// waiting for the others to arrive.
    pub(crate) async fn present(&self, ids: &[ObjectId]) -> Vec<Option<Stored>> {
        let mut out = vec![None; ids.len()];
        if ids.is_empty() {
            return out;
        }
        let (rx, mut markers) = self.fetch_marked(ids);
        while markers > 0 {
            match rx.recv_async().await {
                Ok((PRESENT_SENT, _)) => markers -= 1,
                Ok((slot, v)) => out[slot as usize] = Some(v),
                Err(_) => break,
            }
        }
        out
    }

    /// Fetches `(slot, id)` pairs into an existing reply channel.
    pub(crate) fn fetch_into(
        &self,
        ids: impl IntoIterator<Item = (usize, ObjectId)>,
        tx: FetchReply,
    ) {
        self.send_fetches(ids, tx, false);
    }

    /// Fetches `(slot, id)` pairs into `tx`; with `mark`, each shard asked also sends
    /// [`PRESENT_SENT`] after what it holds. Returns how many shards were asked.
    pub(crate) fn send_fetches(
        &self,
        ids: impl IntoIterator<Item = (usize, ObjectId)>,
        tx: FetchReply,
        mark: bool,
    ) -> usize {
        let n = self.shards.len();
        if n == 1 {
            let wants = ids.into_iter().map(|(i, id)| (i as u32, id)).collect();
            self.shards[0].do_send(Fetch {
                wants,
                reply: tx,
                mark,
            });
            return 1;
        }
        let mut per: Vec<Vec<(u32, ObjectId)>> = vec![Vec::new(); n];
        for (i, id) in ids {
            per[id.shard(n)].push((i as u32, id));
        }
        let mut sent = 0;
        for (s, wants) in per.into_iter().enumerate() {
            if !wants.is_empty() {
                sent += 1;
                self.shards[s].do_send(Fetch {
                    wants,
                    reply: tx.clone(),
                    mark,
                });
            }
        }
        sent
    }

    /// Sums the shards' stats.
    pub(crate) async fn stats(&self) -> ShardStats {
        let mut total = ShardStats::default();
        for s in self.shards.iter() {
            if let Ok(st) = s.send(Stats).await {
                total.objects += st.objects;
                total.bytes += st.bytes;
                total.waiting += st.waiting;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[actix_rt::test]
    async fn fetch_waits_for_put_and_free_drops() {
        let client = StoreClient::start(1, StoreLimits::unlimited(), Weak::new());
        let id = ObjectId::for_put();
        let rx = client.fetch(&[id]);
        assert!(rx.try_recv().is_err());
        client
            .put(id, Stored::Value(Bytes::from_static(b"ok")))
            .unwrap();
        let (slot, v) = rx.recv_async().await.unwrap();
        assert_eq!(slot, 0);
        assert!(matches!(v, Stored::Value(b) if &b[..] == b"ok"));
        // A second put of the same id is ignored: objects are immutable.
        client
            .put(id, Stored::Value(Bytes::from_static(b"changed")))
            .unwrap();
        let (_, v) = client.fetch(&[id]).recv_async().await.unwrap();
        assert!(matches!(v, Stored::Value(b) if &b[..] == b"ok"));
        client.free(id);
        let st = client.stats().await;
        assert_eq!((st.objects, st.bytes), (0, 0));
    }

    #[actix_rt::test]
    async fn abandoned_waiters_are_pruned() {
        let client = StoreClient::start(1, StoreLimits::unlimited(), Weak::new());
        let id = ObjectId::for_put();
        for _ in 0..10 {
            drop(client.fetch(&[id]));
        }
        let _keep = client.fetch(&[id]);
        assert_eq!(client.stats().await.waiting, 1);
    }
}
