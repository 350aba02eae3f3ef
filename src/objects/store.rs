//! Object-store shards: actix actors that hold object bytes and wake whoever waits for them.
//!
//! A node's store is split into shards by object id so that puts and gets for different objects
//! proceed in parallel; each shard is a single-threaded actor owning its map, so there is no
//! locking. Values are `Bytes`: handing one to a reader is a reference-count bump, never a copy.
//! A waiter is a channel: readers (blocking `get`, async `.await`, the raylet's dependency
//! resolution) send [`Fetch`] and receive each object as soon as it is present.

use crate::ids::{IdMap, ObjectId};
pub(crate) use crate::protocol::refs::Stored;
use actix::prelude::*;
use std::sync::Arc;

/// A reply channel: each fetched object is sent with the caller's slot number.
pub(crate) use crate::objects::reply::FetchReply;

/// The slot of the marker a shard sends, when asked, after every object it already holds: the
/// reader then knows it has seen everything that was present when the shard answered.
pub(crate) const PRESENT_SENT: u32 = u32::MAX;

/// Stores a value (objects are immutable: a second put of the same id is ignored).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Put {
    pub(crate) id: ObjectId,
    pub(crate) value: Stored,
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
#[derive(Default)]
pub(crate) struct StoreShard {
    objects: IdMap<ObjectId, Stored>,
    waiters: IdMap<ObjectId, Vec<(u32, FetchReply)>>,
    bytes: usize,
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
            for (slot, tx) in waiters {
                let _ = tx.send((slot, msg.value.clone()));
            }
        }
        self.bytes += msg.value.size();
        self.objects.insert(msg.id, msg.value);
    }
}

impl Handler<Fetch> for StoreShard {
    type Result = ();
    fn handle(&mut self, msg: Fetch, _: &mut Context<Self>) {
        for (slot, id) in msg.wants {
            match self.objects.get(&id) {
                Some(v) => {
                    let _ = msg.reply.send((slot, v.clone()));
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
            if let Some(v) = self.objects.remove(&id) {
                self.bytes -= v.size();
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

/// The addresses of a node's shards, and the routing of ids to shards.
#[derive(Clone)]
pub(crate) struct StoreClient {
    shards: Arc<[Addr<StoreShard>]>,
}

impl StoreClient {
    pub(crate) fn new(shards: Vec<Addr<StoreShard>>) -> Self {
        StoreClient {
            shards: shards.into(),
        }
    }

    fn shard(&self, id: ObjectId) -> &Addr<StoreShard> {
        &self.shards[id.shard(self.shards.len())]
    }

    pub(crate) fn put(&self, id: ObjectId, value: Stored) {
        self.shard(id).do_send(Put { id, value });
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
        let shard = StoreShard::default().start();
        let client = StoreClient::new(vec![shard.clone()]);
        let id = ObjectId::for_put();
        let rx = client.fetch(&[id]);
        assert!(rx.try_recv().is_err());
        client.put(id, Stored::Value(Bytes::from_static(b"ok")));
        let (slot, v) = rx.recv_async().await.unwrap();
        assert_eq!(slot, 0);
        assert!(matches!(v, Stored::Value(b) if &b[..] == b"ok"));
        // A second put of the same id is ignored: objects are immutable.
        client.put(id, Stored::Value(Bytes::from_static(b"changed")));
        let (_, v) = client.fetch(&[id]).recv_async().await.unwrap();
        assert!(matches!(v, Stored::Value(b) if &b[..] == b"ok"));
        client.free(id);
        let st = client.stats().await;
        assert_eq!((st.objects, st.bytes), (0, 0));
    }

    #[actix_rt::test]
    async fn abandoned_waiters_are_pruned() {
        let shard = StoreShard::default().start();
        let client = StoreClient::new(vec![shard]);
        let id = ObjectId::for_put();
        for _ in 0..10 {
            drop(client.fetch(&[id]));
        }
        let _keep = client.fetch(&[id]);
        assert_eq!(client.stats().await.waiting, 1);
    }
}
