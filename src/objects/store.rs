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
use crate::objects::spill::{MemoryStats, Slot, StoreLimits, StoreMemory};
pub(crate) use crate::protocol::refs::Stored;
use actix::prelude::*;
use std::sync::Arc;

/// A reply channel: each fetched object is sent with the caller's slot number.
pub(crate) use crate::objects::reply::FetchReply;

/// The slot of the marker a shard sends, when asked, after every object it already holds: the
/// reader then knows it has seen everything that was present when the shard answered.
pub(crate) const PRESENT_SENT: u32 = u32::MAX;

/// What a shard holds for an object: its bytes (admitted to the store's memory) or the error
/// it holds.
pub(crate) enum Entry {
    Bytes(Arc<Slot>),
    Error(Error),
}

impl Entry {
    fn size(&self) -> usize {
        match self {
            Entry::Bytes(slot) => slot.size() as usize,
            Entry::Error(_) => 0,
        }
    }
}

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
}

impl StoreShard {
    pub(crate) fn new(memory: Arc<StoreMemory>) -> Self {
        StoreShard {
            objects: IdMap::default(),
            waiters: IdMap::default(),
            bytes: 0,
            memory,
        }
    }

    /// An object's content for a reader: shared from memory, or read back from disk.
    fn read(&self, entry: &Entry) -> Stored {
        match entry {
            Entry::Error(e) => Stored::Error(e.clone()),
            Entry::Bytes(slot) => match self.memory.read(slot) {
                Ok(b) => Stored::Value(b),
                Err(e) => Stored::Error(e),
            },
        }
    }
}

impl Actor for StoreShard {
    type Context = Context<Self>;
}

impl Handler<Put> for StoreShard {
    type Result = ();
    fn handle(&mut self, msg: Put, _: &mut Context<Self>) {
        if self.objects.contains_key(&msg.id) {
            return;
        }
        if let Some(waiters) = self.waiters.remove(&msg.id) {
            let value = self.read(&msg.entry);
            for (slot, tx) in waiters {
                let _ = tx.send((slot, value.clone()));
            }
        }
        self.bytes += msg.entry.size();
        self.objects.insert(msg.id, msg.entry);
    }
}

impl Handler<Fetch> for StoreShard {
    type Result = ();
    fn handle(&mut self, msg: Fetch, _: &mut Context<Self>) {
        for (slot, id) in msg.wants {
            match self.objects.get(&id) {
                Some(entry) => {
                    let _ = msg.reply.send((slot, self.read(entry)));
                }
                None => {
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

impl Handler<Free> for StoreShard {
    type Result = ();
    fn handle(&mut self, msg: Free, _: &mut Context<Self>) {
        for id in msg.ids {
            if let Some(entry) = self.objects.remove(&id) {
                self.bytes -= entry.size();
                if let Entry::Bytes(_) = entry {
                    self.memory.forget(id);
                }
            }
            // Nobody holds a reference any more: nobody may wait for it either.
            self.waiters.remove(&id);
        }
    }
}

impl Handler<Stats> for StoreShard {
    type Result = ShardStats;
    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> ShardStats {
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
}

impl StoreClient {
    /// Starts `n` shards, each on its own arbiter, sharing one memory held to `limits`.
    pub(crate) fn start(n: usize, limits: StoreLimits) -> Self {
        let memory = Arc::new(StoreMemory::new(limits));
        let shards = (0..n.max(1))
            .map(|_| {
                let memory = memory.clone();
                StoreShard::start_in_arbiter(&Arbiter::new().handle(), |_| StoreShard::new(memory))
            })
            .collect::<Vec<_>>();
        StoreClient {
            shards: shards.into(),
            memory,
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
        let client = StoreClient::start(1, StoreLimits::unlimited());
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
        let client = StoreClient::start(1, StoreLimits::unlimited());
        let id = ObjectId::for_put();
        for _ in 0..10 {
            drop(client.fetch(&[id]));
        }
        let _keep = client.fetch(&[id]);
        assert_eq!(client.stats().await.waiting, 1);
    }
}
