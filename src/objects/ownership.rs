//! The owner's reference table: reference counts, lineage and containment of the objects this
//! process owns or borrows.
//!
//! Counts per object: `local` (live `ObjectRef` handles in this process) and `pinned` (tasks in
//! flight whose arguments mention the object, and stored objects that contain it). When both
//! reach zero the entry is removed, the stored copy freed, and the objects it contained unpinned.
//!
//! The table is also where a task's result lands ([`RefTable::complete`]): the result is stored
//! only if someone still holds a reference, and the check and the store send happen under the
//! entry's lock, so a result can never be stored after its object was freed.

use crate::ids::{ActorId, ObjectId};
use crate::objects::codec::Encoded;
use crate::objects::object_ref::RawRef;
use crate::objects::owner::Borrow;
use crate::objects::store::{FetchReply, StoreClient, Stored};
use crate::system::gcs::{ActorOutOfScope, Gcs};
use crate::task::TaskSpec;
use crate::transport::wire::{Body, Remote, Target};
use crate::transport::Transport;
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct RefEntry {
    local: u32,
    pinned: u32,
    /// The value is present: inline below when small, else in a store.
    stored: bool,
    /// This table put the value in the store (so freeing must drop it there).
    in_store: bool,
    /// Objects referenced from inside this object's value.
    contains: Vec<ObjectId>,
    /// The task that makes this object, kept by its owner for re-execution.
    #[allow(dead_code)]
    lineage: Option<Arc<TaskSpec>>,
    /// This object anchors an actor's handles: when it goes, the actor is out of scope.
    actor: Option<ActorId>,
    /// A small value (or an error), kept only by the owner so that reading it needs no message
    /// to the store (Ray's in-process memory store). Small values never go to the store.
    inline: Option<Stored>,
    /// Readers waiting for this (owned, pending) object: handed the value when it completes.
    waiters: Vec<(u32, FetchReply)>,
    /// Other processes holding refs to this owned object (each registered once per process).
    borrowers: u32,
    /// For a ref owned by another process: its owner, told when this process lets go.
    borrowed_from: Option<SocketAddr>,
}

impl RefEntry {
    fn unreferenced(&self) -> bool {
        self.local == 0 && self.pinned == 0 && self.borrowers == 0
    }
}

/// What [`RefTable::peek`] can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peek {
    Ready,
    Pending,
    Unknown,
}

/// Where a reader finds an object.
pub(crate) enum Lookup {
    /// Here it is.
    Ready(Stored),
    /// Pending in this process: the reader's channel will get it when it completes.
    Waiting,
    /// Ask the store.
    InStore,
}

/// Values up to this size are kept inline in the owner's table instead of the store.
const INLINE_MAX: usize = 64 * 1024;

/// Whether a value is kept inline by its owner (small values and errors) or goes to the store.
fn is_inline(value: &Stored) -> bool {
    match value {
        Stored::Value(b) => b.len() <= INLINE_MAX,
        Stored::Error(_) => true,
    }
}

/// Sends the pending borrow notices, one message per owner, in order. The lock is held while
/// they are queued on their connections, so notices never overtake each other.
fn send_borrows(
    net: &Arc<Transport>,
    outbox: &parking_lot::Mutex<Vec<(SocketAddr, ObjectId, bool)>>,
) {
    let mut out = outbox.lock();
    if out.is_empty() {
        return;
    }
    let mut per_owner: Vec<(SocketAddr, Vec<(ObjectId, bool)>)> = Vec::new();
    for (owner, id, add) in out.drain(..) {
        match per_owner.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, changes)) => changes.push((id, add)),
            None => per_owner.push((owner, vec![(id, add)])),
        }
    }
    for (owner, changes) in per_owner {
        Remote {
            net: net.clone(),
            addr: owner,
        }
        .send_body(Body::Borrow(Borrow { changes }));
    }
}

fn stored_size(value: &Stored) -> usize {
    match value {
        Stored::Value(b) => b.len(),
        Stored::Error(_) => 0,
    }
}

/// Reference counts and lineage of objects, per process.
pub(crate) struct RefTable {
    map: DashMap<ObjectId, RefEntry>,
    store: StoreClient,
    gcs: Target<Gcs>,
    held: parking_lot::Mutex<Vec<ObjectId>>,
    /// This process's endpoint, on a cluster (borrowers talk to owners).
    net: Option<Arc<Transport>>,
    /// Values kept inline, and their bytes (they count as stored in [`memory_summary`]).
    ///
    /// [`memory_summary`]: crate::memory_summary
    inline_objects: AtomicUsize,
    inline_bytes: AtomicUsize,
    /// Borrow notices not sent yet, in order (see [`notify_owner`](Self::notify_owner)).
    outbox: Arc<parking_lot::Mutex<Vec<(SocketAddr, ObjectId, bool)>>>,
}

impl RefTable {
    pub(crate) fn new(store: StoreClient, gcs: Target<Gcs>, net: Option<Arc<Transport>>) -> Self {
        RefTable {
            map: DashMap::with_shard_amount(64),
            store,
            gcs,
            held: parking_lot::Mutex::new(Vec::new()),
            net,
            inline_objects: AtomicUsize::new(0),
            inline_bytes: AtomicUsize::new(0),
            outbox: Arc::default(),
        }
    }

    /// Tells `owner` that this process started (`add`) or stopped borrowing `id`. Notices are
    /// coalesced into one message per owner: a start met while decoding goes out when the
    /// decode ends, before anything this thread sends afterwards (so an owner hears of a
    /// borrower before, say, the result of the task that received the ref); a stop goes out
    /// shortly after, from the event loop (a late stop only keeps the object a moment longer).
    fn notify_owner(&self, owner: SocketAddr, id: ObjectId, add: bool) {
        let Some(net) = &self.net else {
            return;
        };
        let was_empty = {
            let mut out = self.outbox.lock();
            out.push((owner, id, add));
            out.len() == 1
        };
        if add {
            if !crate::objects::codec::defer_borrows() {
                self.flush_borrows();
            }
        } else if was_empty {
            let (outbox, net2) = (self.outbox.clone(), net.clone());
            net.runtime()
                .spawn(async move { send_borrows(&net2, &outbox) });
        }
    }

    /// Sends every pending borrow notice now.
    pub(crate) fn flush_borrows(&self) {
        if let Some(net) = &self.net {
            send_borrows(net, &self.outbox);
        }
    }

    /// Keeps `value` inline when it is small (counting it), else returns it for the store.
    fn keep(&self, value: Stored) -> (Option<Stored>, Option<Stored>) {
        if is_inline(&value) {
            self.inline_objects.fetch_add(1, Ordering::Relaxed);
            self.inline_bytes
                .fetch_add(stored_size(&value), Ordering::Relaxed);
            (Some(value), None)
        } else {
            (None, Some(value))
        }
    }

    /// Objects kept inline here and their bytes.
    pub(crate) fn inline_stats(&self) -> (usize, usize) {
        (
            self.inline_objects.load(Ordering::Relaxed),
            self.inline_bytes.load(Ordering::Relaxed),
        )
    }

    /// Registers the creation object of an actor: the anchor of its handles.
    pub(crate) fn add_pending_actor(&self, id: ObjectId, lineage: Arc<TaskSpec>, actor: ActorId) {
        self.map.insert(
            id,
            RefEntry {
                local: 1,
                lineage: Some(lineage),
                actor: Some(actor),
                ..Default::default()
            },
        );
    }

    /// Registers the return object of a task just submitted: one local ref, not yet stored.
    pub(crate) fn add_pending(&self, id: ObjectId, lineage: Option<Arc<TaskSpec>>) {
        self.map.insert(
            id,
            RefEntry {
                local: 1,
                lineage,
                ..Default::default()
            },
        );
    }

    /// Registers and stores a value made by `put`: one local ref. The value's pins become the
    /// object's: held until it is freed.
    pub(crate) fn add_put(&self, id: ObjectId, value: Encoded) {
        let (bytes, contains) = value.into_parts();
        let (inline, to_store) = self.keep(Stored::Value(bytes));
        self.map.insert(
            id,
            RefEntry {
                local: 1,
                stored: true,
                in_store: to_store.is_some(),
                contains,
                inline,
                ..Default::default()
            },
        );
        if let Some(value) = to_store {
            self.store.put(id, value);
        }
    }

    /// A handle deserialized from a task argument or a stored value.
    pub(crate) fn add_borrowed(&self, raw: &RawRef) {
        let mut e = self.map.entry(raw.id).or_insert_with(|| RefEntry {
            stored: true,
            ..Default::default()
        });
        e.local += 1;
        // The first ref this process holds to another process's object: tell the owner, which
        // keeps the object until this process lets go (Ray's borrowers).
        if let (Some(net), Some(owner)) = (&self.net, raw.owner.addr) {
            if e.borrowed_from.is_none() && owner != net.local_addr() {
                e.borrowed_from = Some(owner);
                // Queued under the entry's lock, so a stop can never be queued before it.
                self.notify_owner(owner, raw.id, true);
            }
        }
    }

    /// Another process started (`add`) or stopped borrowing an object owned here.
    pub(crate) fn borrower(&self, id: ObjectId, add: bool) {
        let release = match self.map.get_mut(&id) {
            Some(mut e) if add => {
                e.borrowers += 1;
                false
            }
            Some(mut e) => {
                e.borrowers = e.borrowers.saturating_sub(1);
                e.unreferenced()
            }
            None => false,
        };
        if release {
            self.release(id);
        }
    }

    /// A local handle was dropped.
    pub(crate) fn remove_local(&self, id: ObjectId) {
        let release = match self.map.get_mut(&id) {
            Some(mut e) => {
                e.local = e.local.saturating_sub(1);
                e.unreferenced()
            }
            None => false,
        };
        if release {
            self.release(id);
        }
    }

    /// Pins objects mentioned by a task's arguments or a stored value.
    pub(crate) fn pin(&self, ids: &[ObjectId]) {
        for id in ids {
            let mut e = self.map.entry(*id).or_insert_with(|| RefEntry {
                stored: true,
                ..Default::default()
            });
            e.pinned += 1;
        }
    }

    /// Keeps pins taken for a value that was sent to another process (a result containing refs):
    /// they are held for as long as this process lives.
    pub(crate) fn hold(&self, pins: Vec<ObjectId>) {
        if !pins.is_empty() {
            self.held.lock().extend(pins);
        }
    }

    /// Undoes [`pin`](Self::pin).
    pub(crate) fn unpin(&self, ids: &[ObjectId]) {
        for id in ids {
            let release = match self.map.get_mut(id) {
                Some(mut e) => {
                    e.pinned = e.pinned.saturating_sub(1);
                    e.unreferenced()
                }
                None => false,
            };
            if release {
                self.release(*id);
            }
        }
    }

    /// Stores a task's result if the object is still referenced. `contains` are pins (already
    /// taken) on the objects inside the value: kept with the object, or released if it is
    /// discarded. Returns whether it was stored.
    pub(crate) fn complete(&self, id: ObjectId, value: Stored, contains: Vec<ObjectId>) -> bool {
        let stored = match self.map.get_mut(&id) {
            Some(mut e) if !e.stored => {
                e.stored = true;
                e.contains = contains.clone();
                // Stored (and counted) before any reader hears of it, so that whoever reads it
                // next sees it in the store's statistics too.
                let (inline, to_store) = self.keep(value.clone());
                e.inline = inline;
                e.in_store = to_store.is_some();
                if let Some(stored) = to_store {
                    self.store.put(id, stored);
                }
                // Readers in this process get the value straight from the owner.
                for (slot, tx) in e.waiters.drain(..) {
                    let _ = tx.send((slot, value.clone()));
                }
                true
            }
            _ => false,
        };
        if !stored {
            self.unpin(&contains);
        }
        stored
    }

    /// Removes entries whose counts are zero, freeing their values and what they contain.
    fn release(&self, first: ObjectId) {
        let mut work = vec![first];
        while let Some(id) = work.pop() {
            let Some((_, e)) = self.map.remove_if(&id, |_, e| e.unreferenced()) else {
                continue;
            };
            match &e.inline {
                Some(v) => {
                    self.inline_objects.fetch_sub(1, Ordering::Relaxed);
                    self.inline_bytes
                        .fetch_sub(stored_size(v), Ordering::Relaxed);
                }
                None if e.in_store => self.store.free(id),
                None => {}
            }
            if let Some(owner) = e.borrowed_from {
                self.notify_owner(owner, id, false);
            }
            if let Some(actor_id) = e.actor {
                self.gcs.do_send(ActorOutOfScope { actor_id });
            }
            for inner in e.contains {
                let release = match self.map.get_mut(&inner) {
                    Some(mut ie) => {
                        ie.pinned = ie.pinned.saturating_sub(1);
                        ie.unreferenced()
                    }
                    None => false,
                };
                if release {
                    work.push(inner);
                }
            }
        }
    }

    /// For a reader: the inline value; or, for an object still pending in this process, register
    /// `tx` to receive it (as `slot`) when it completes; or else, ask the store.
    pub(crate) fn lookup_or_wait(&self, id: ObjectId, slot: u32, tx: &FetchReply) -> Lookup {
        let Some(mut e) = self.map.get_mut(&id) else {
            return Lookup::InStore;
        };
        if let Some(v) = &e.inline {
            return Lookup::Ready(v.clone());
        }
        if e.stored {
            return Lookup::InStore;
        }
        // Readers that gave up (timeouts) leave closed channels behind.
        e.waiters.retain(|(_, w)| !w.is_disconnected());
        e.waiters.push((slot, tx.clone()));
        Lookup::Waiting
    }

    /// Drops every waiting reader's channel, so blocked reads end (at shutdown).
    pub(crate) fn drop_waiters(&self) {
        for mut e in self.map.iter_mut() {
            e.waiters.clear();
        }
    }

    /// What this process can tell about an object without waiting: ready here (kept inline),
    /// pending here (owned and not made yet), or unknown (ask the store or its owner).
    pub(crate) fn peek(&self, id: ObjectId) -> Peek {
        match self.map.get(&id) {
            Some(e) if e.inline.is_some() => Peek::Ready,
            Some(e) if !e.stored => Peek::Pending,
            _ => Peek::Unknown,
        }
    }

    /// The value of a small object, if it is ready and kept inline.
    pub(crate) fn inline(&self, id: ObjectId) -> Option<Stored> {
        self.map.get(&id).and_then(|e| e.inline.clone())
    }

    /// Number of objects this process holds references to.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the object is still referenced.
    pub(crate) fn contains(&self, id: ObjectId) -> bool {
        self.map.contains_key(&id)
    }
}
