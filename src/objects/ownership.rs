//! Ownership and reference counting: the table of the objects this process owns or borrows.
//!
//! [`RefCounts`] is the pure core (Ray's reference counter, NSDI'21 ownership): per object,
//! `local` (live `ObjectRef` handles in this process), `pinned` (tasks in flight whose arguments
//! mention it, stored objects that contain it) and, for objects owned here, `borrowers` (other
//! processes holding refs, each named). When all reach zero the entry goes, and the core returns
//! what must follow as [`Effect`]s: free the stored copy, tell the owner this process stopped
//! borrowing, unpin what the value contained, tell the GCS an actor is out of scope. It does no
//! IO and reads no clock, so its rules are unit-tested directly and several cores can be wired
//! together in a test (owner and borrowers) to check the protocol between them.
//!
//! [`RefTable`] is the process's table: the core plus the process's switchboard, store and GCS,
//! which carry out the effects. A result lands through [`RefCounts::complete`]: it is kept only if
//! someone still holds a reference, and the check and the keeping happen under the entry's lock,
//! so a result can never be stored after its object was freed.

use crate::error::Error;
use crate::ids::{ActorId, IdDashMap, IdHasher, NodeId, ObjectId};
use crate::objects::store::{FetchReply, StoreClient};
use crate::protocol::gcs::ActorOutOfScope;
use crate::protocol::owner::{Borrow, CopyGone, CopyHere, FreeCopies, HeldCopy, KeepCopy};
use crate::protocol::owner::{ObjectEntry, ObjectState};
use crate::protocol::refs::{RawRef, Stored};
use crate::protocol::svc;
use crate::protocol::task::TaskSpec;
use crate::transport::net::{Net, Target};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One object's counts and state, in the owner's table or, for a ref borrowed from another
/// process, in the borrower's.
#[derive(Default)]
struct RefEntry {
    local: u32,
    pinned: u32,
    /// The value is present: inline below when small, else in the store.
    stored: bool,
    /// The value went to the store (so freeing must drop it there).
    in_store: bool,
    /// A reader has been handed the value (or error): a failed object freed unread is reported
    /// as an unhandled error.
    read: bool,
    /// The task that makes this object, kept by its owner for re-execution.
    #[allow(dead_code)]
    lineage: Option<Arc<TaskSpec>>,
    /// A small value (or an error), kept by the owner so that reading it needs no message to
    /// the store (Ray's in-process memory store). Small values never go to the store.
    inline: Option<Stored>,
    /// Readers waiting for this (owned, pending) object: handed the value when it completes.
    waiters: Vec<(u32, FetchReply)>,
    /// What few objects have, out of line: most entries are a task's result or a `put`,
    /// owned here, holding no refs and shared with no one, and a table of them stays small.
    rare: Option<Box<Rare>>,
}

/// The parts of a [`RefEntry`] that most objects do not have.
#[derive(Default)]
struct Rare {
    /// For a ref owned by another process: its owner, told when this process lets go.
    borrowed_from: Option<SocketAddr>,
    /// Objects referenced from inside this object's value.
    contains: Vec<ObjectId>,
    /// This object anchors an actor's handles: when it goes, the actor is out of scope.
    actor: Option<ActorId>,
    /// Other processes holding refs to this owned object, one entry per start notice.
    borrowers: Vec<SocketAddr>,
}

impl RefEntry {
    fn unreferenced(&self) -> bool {
        self.local == 0 && self.pinned == 0 && self.borrowers().is_empty()
    }

    /// The rare parts, made when first needed.
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    fn borrowers(&self) -> &[SocketAddr] {
        self.rare.as_ref().map_or(&[], |r| &r.borrowers)
    }

    fn borrowed_from(&self) -> Option<SocketAddr> {
        self.rare.as_ref().and_then(|r| r.borrowed_from)
    }

    /// The rare parts for an entry made with `contains` inside its value (none when empty).
    fn rare_with_contains(contains: Vec<ObjectId>) -> Option<Box<Rare>> {
        (!contains.is_empty()).then(|| {
            Box::new(Rare {
                contains,
                ..Default::default()
            })
        })
    }
}

/// What [`RefCounts::peek`] can tell.
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
    /// Ask the store (or, for an object owned elsewhere, its owner).
    Elsewhere,
    /// This process holds no reference to it.
    Unknown,
}

/// What must happen because the counts changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Drop the object's copy from the store.
    Free(ObjectId),
    /// Tell `owner` this process started (`add`) or stopped borrowing `id`.
    Notify {
        owner: SocketAddr,
        id: ObjectId,
        add: bool,
    },
    /// Every handle to the actor is gone.
    OutOfScope(ActorId),
    /// A failed object went unread: nobody was handed its error before its last reference
    /// went (or before it failed, if its references went first). `error` is the error's text.
    Unhandled { id: ObjectId, error: String },
}

/// Whether dropping this error unread is worth telling the user: not a cancellation they asked
/// for, nor a shutdown in progress.
fn unhandled(id: ObjectId, value: &Stored) -> Option<Effect> {
    match value {
        Stored::Error(Error::Cancelled { .. } | Error::Shutdown { .. }) | Stored::Value(_) => None,
        Stored::Error(e) => Some(Effect::Unhandled {
            id,
            error: e.to_string(),
        }),
    }
}

/// What [`RefCounts::complete`] did, and what must follow: the value to put in the store, then
/// the readers to hand it to, then the effects.
pub(crate) struct Completed {
    pub(crate) kept: bool,
    pub(crate) to_store: Option<Stored>,
    pub(crate) waiters: Vec<(u32, FetchReply, Stored)>,
    pub(crate) effects: Vec<Effect>,
}

/// Values up to this size are kept inline in the owner's table instead of the store.
pub(crate) const INLINE_MAX: usize = 64 * 1024;

/// Whether a value is kept inline by its owner (small values and errors) or goes to the store.
fn is_inline(value: &Stored) -> bool {
    match value {
        Stored::Value(b) => b.len() <= INLINE_MAX,
        Stored::Error(_) => true,
    }
}

/// The reference counts of one process (see the module docs).
pub(crate) struct RefCounts {
    /// This process: refs owned here are counted, not borrowed.
    here: SocketAddr,
    map: IdDashMap<ObjectId, RefEntry>,
    /// Values kept inline, and their bytes (they count as stored in `memory_summary`).
    inline_objects: AtomicUsize,
    inline_bytes: AtomicUsize,
}

impl RefCounts {
    pub(crate) fn new(here: SocketAddr) -> Self {
        RefCounts {
            here,
            map: IdDashMap::with_hasher_and_shard_amount(IdHasher::default(), 64),
            inline_objects: AtomicUsize::new(0),
            inline_bytes: AtomicUsize::new(0),
        }
    }

    /// Keeps `value` inline when it is small (counting it), else returns it for the store.
    fn keep(&self, value: Stored) -> (Option<Stored>, Option<Stored>) {
        if is_inline(&value) {
            self.inline_objects.fetch_add(1, Ordering::Relaxed);
            self.inline_bytes.fetch_add(value.size(), Ordering::Relaxed);
            (Some(value), None)
        } else {
            (None, Some(value))
        }
    }

    /// Up to `limit` of the objects this process holds a reference to, as `list_objects`
    /// shows them (the size of a value in the store is left for the caller to ask it).
    pub(crate) fn snapshot(&self, limit: usize) -> Vec<ObjectEntry> {
        self.map
            .iter()
            .take(limit)
            .map(|e| {
                let r = e.value();
                ObjectEntry {
                    id: *e.key(),
                    owner: r.borrowed_from(),
                    local: r.local,
                    pinned: r.pinned,
                    borrowers: r.borrowers().len() as u32,
                    actor_handle: r.rare.as_ref().is_some_and(|x| x.actor.is_some()),
                    state: match (&r.inline, r.stored) {
                        (Some(Stored::Error(_)), _) => ObjectState::Failed,
                        (_, true) => ObjectState::Ready,
                        _ => ObjectState::Pending,
                    },
                    size: r.inline.as_ref().map(|v| v.size() as u64),
                    in_store: r.in_store,
                    kept_on: None,
                    copies_on: Vec::new(),
                }
            })
            .collect()
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
                rare: Some(Box::new(Rare {
                    actor: Some(actor),
                    ..Default::default()
                })),
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

    /// Registers a value made by `put`: one local ref. `contains` are pins on the refs inside it,
    /// now the object's. Returns the value if it belongs in the store.
    pub(crate) fn add_put(
        &self,
        id: ObjectId,
        value: Stored,
        contains: &[RawRef],
    ) -> Option<Stored> {
        let (inline, to_store) = self.keep(value);
        self.map.insert(
            id,
            RefEntry {
                local: 1,
                stored: true,
                in_store: to_store.is_some(),
                rare: RefEntry::rare_with_contains(contains.iter().map(|r| r.id).collect()),
                inline,
                ..Default::default()
            },
        );
        to_store
    }

    /// A handle deserialized (from a task argument or a stored value): one more local ref. The
    /// first ref this process holds to another process's object makes it a borrower, which the
    /// owner hears of (it keeps the object until this process lets go).
    pub(crate) fn add_borrowed(&self, raw: &RawRef) -> Option<Effect> {
        let mut e = self.map.entry(raw.id).or_insert_with(|| RefEntry {
            stored: true,
            ..Default::default()
        });
        e.local += 1;
        self.start_borrowing(&mut e, raw)
    }

    fn start_borrowing(&self, e: &mut RefEntry, raw: &RawRef) -> Option<Effect> {
        let owner = raw.owner.addr;
        // The owner first: a ref owned here (most refs) leaves the entry's borrow state alone.
        if owner == self.here || e.borrowed_from().is_some() {
            return None;
        }
        e.rare().borrowed_from = Some(owner);
        Some(Effect::Notify {
            owner,
            id: raw.id,
            add: true,
        })
    }

    /// Another process started (`add`) or stopped borrowing an object owned here.
    pub(crate) fn borrower(&self, id: ObjectId, from: SocketAddr, add: bool) -> Vec<Effect> {
        let release = match self.map.get_mut(&id) {
            Some(mut e) if add => {
                e.rare().borrowers.push(from);
                false
            }
            Some(mut e) => {
                if let Some(i) = e.borrowers().iter().position(|b| *b == from) {
                    e.rare().borrowers.swap_remove(i);
                }
                e.unreferenced()
            }
            None => false,
        };
        if release {
            self.release(id)
        } else {
            Vec::new()
        }
    }

    /// The process `gone` died: whatever it borrowed from this one is no longer borrowed.
    pub(crate) fn drop_borrower(&self, gone: SocketAddr) -> Vec<Effect> {
        let mut freed = Vec::new();
        for mut e in self.map.iter_mut() {
            if e.borrowers().contains(&gone) {
                e.rare().borrowers.retain(|b| *b != gone);
                if e.unreferenced() {
                    freed.push(*e.key());
                }
            }
        }
        freed.into_iter().flat_map(|id| self.release(id)).collect()
    }

    /// A local handle was dropped.
    pub(crate) fn remove_local(&self, id: ObjectId) -> Vec<Effect> {
        let release = match self.map.get_mut(&id) {
            Some(mut e) => {
                e.local = e.local.saturating_sub(1);
                e.unreferenced()
            }
            None => false,
        };
        if release {
            self.release(id)
        } else {
            Vec::new()
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

    /// Pins refs found inside a value another process made (a result's `contains`): this process
    /// keeps each alive (borrowing it from its owner if need be) for as long as the value lives.
    pub(crate) fn adopt(&self, raws: &[RawRef]) -> Vec<Effect> {
        let mut out = Vec::new();
        for raw in raws {
            let mut e = self.map.entry(raw.id).or_insert_with(|| RefEntry {
                stored: true,
                ..Default::default()
            });
            e.pinned += 1;
            out.extend(self.start_borrowing(&mut e, raw));
        }
        out
    }

    /// Undoes [`pin`](Self::pin).
    pub(crate) fn unpin(&self, ids: &[ObjectId]) -> Vec<Effect> {
        let mut out = Vec::new();
        for id in ids {
            let release = match self.map.get_mut(id) {
                Some(mut e) => {
                    e.pinned = e.pinned.saturating_sub(1);
                    e.unreferenced()
                }
                None => false,
            };
            if release {
                out.extend(self.release(*id));
            }
        }
        out
    }

    /// Stores a task's result if the object is still referenced. `contains` are pins (already
    /// taken) on the objects inside the value: kept with the object, or released if it is
    /// discarded.
    pub(crate) fn complete(
        &self,
        id: ObjectId,
        value: Stored,
        contains: Vec<ObjectId>,
    ) -> Completed {
        self.settle(id, Some(value), contains)
    }

    /// Records that a task's result is ready and kept by the process that made it (in this
    /// store only as its place): like [`complete`](Self::complete), and the waiting readers get
    /// an empty arrival, to be replaced by a read of the store for those that want the value.
    pub(crate) fn complete_elsewhere(&self, id: ObjectId, contains: Vec<ObjectId>) -> Completed {
        self.settle(id, None, contains)
    }

    fn settle(&self, id: ObjectId, value: Option<Stored>, contains: Vec<ObjectId>) -> Completed {
        let mut dropped = false;
        let kept = match self.map.get_mut(&id) {
            Some(mut e) if !e.stored => {
                e.stored = true;
                if !contains.is_empty() {
                    e.rare().contains = contains.clone();
                }
                let waiters = std::mem::take(&mut e.waiters);
                let (inline, to_store) = match &value {
                    Some(v) => self.keep(v.clone()),
                    None => (None, None),
                };
                e.inline = inline;
                e.in_store = to_store.is_some() || value.is_none();
                Some((to_store, waiters))
            }
            // Completed already (a duplicate of the same result).
            Some(_) => None,
            None => {
                dropped = true;
                None
            }
        };
        let empty = Stored::Value(Bytes::new());
        match kept {
            Some((to_store, waiters)) => Completed {
                kept: true,
                to_store,
                waiters: waiters
                    .into_iter()
                    .map(|(s, tx)| {
                        let v = tx.arrival(value.as_ref().unwrap_or(&empty));
                        (s, tx, v)
                    })
                    .collect(),
                effects: Vec::new(),
            },
            None => {
                let mut effects = self.unpin(&contains);
                if let Some(value) = &value {
                    effects.extend(unhandled(id, value).filter(|_| dropped));
                }
                Completed {
                    kept: false,
                    to_store: None,
                    waiters: Vec::new(),
                    effects,
                }
            }
        }
    }

    /// Makes a completed object pending again (its value was lost and is being rebuilt): readers
    /// wait for it as for a task in flight.
    pub(crate) fn reset(&self, id: ObjectId) {
        if let Some(mut e) = self.map.get_mut(&id) {
            e.stored = false;
            e.in_store = false;
            e.inline = None;
        }
    }

    /// Removes entries whose counts are zero and what only they kept alive.
    fn release(&self, first: ObjectId) -> Vec<Effect> {
        let mut out = Vec::new();
        let mut work = vec![first];
        while let Some(id) = work.pop() {
            let Some((_, e)) = self.map.remove_if(&id, |_, e| e.unreferenced()) else {
                continue;
            };
            match &e.inline {
                Some(v) => {
                    self.inline_objects.fetch_sub(1, Ordering::Relaxed);
                    self.inline_bytes.fetch_sub(v.size(), Ordering::Relaxed);
                    out.extend(unhandled(id, v).filter(|_| !e.read));
                }
                None if e.in_store => out.push(Effect::Free(id)),
                None => {}
            }
            let rare = e.rare.map(|r| *r).unwrap_or_default();
            if let Some(owner) = rare.borrowed_from {
                out.push(Effect::Notify {
                    owner,
                    id,
                    add: false,
                });
            }
            if let Some(actor_id) = rare.actor {
                out.push(Effect::OutOfScope(actor_id));
            }
            for inner in rare.contains {
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
        out
    }

    /// For a reader: the inline value; or, for an object still pending in this process, register
    /// `tx` to receive it (as `slot`) when it completes; or else, look elsewhere (or nowhere: an
    /// object this process holds no reference to). `reading`: the caller will hand the value to
    /// code (a `get`, a task's argument), so an error it gets counts as handled; a `wait` only
    /// looks.
    pub(crate) fn lookup_or_wait(
        &self,
        id: ObjectId,
        slot: u32,
        tx: &FetchReply,
        reading: bool,
    ) -> Lookup {
        let Some(mut e) = self.map.get_mut(&id) else {
            return Lookup::Unknown;
        };
        e.read |= reading;
        if let Some(v) = &e.inline {
            return Lookup::Ready(v.clone());
        }
        if e.stored {
            return Lookup::Elsewhere;
        }
        // Readers that are done (a `wait` that took others, a timeout) leave closed channels
        // behind: swept before the list would grow, so it stays within twice the live readers
        // without a sweep per read.
        if e.waiters.len() == e.waiters.capacity() {
            e.waiters.retain(|(_, w)| !w.is_disconnected());
        }
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
    /// pending here (owned and not made yet), or unknown.
    pub(crate) fn peek(&self, id: ObjectId) -> Peek {
        match self.map.get(&id) {
            Some(e) if e.inline.is_some() => Peek::Ready,
            Some(e) if !e.stored => Peek::Pending,
            _ => Peek::Unknown,
        }
    }

    /// The value of a small object, if it is ready and kept inline, for a reader that hands it
    /// to code (an error it gets counts as handled).
    #[inline]
    pub(crate) fn inline(&self, id: ObjectId) -> Option<Stored> {
        let entry = self.map.get(&id)?;
        match entry.inline.as_ref()? {
            // Only an error's reading matters; a value's is not recorded (no write lock, and
            // the value is cloned straight out of the entry).
            Stored::Error(_) => {
                drop(entry);
                self.mark_read(id);
                self.inline_unread(id)
            }
            value => Some(value.clone()),
        }
    }

    /// Records that a reader was handed the object (off the path of values).
    #[cold]
    fn mark_read(&self, id: ObjectId) {
        if let Some(mut e) = self.map.get_mut(&id) {
            e.read = true;
        }
    }

    /// The value of a small object, if it is ready and kept inline, for a `wait` (which only
    /// looks: an error it sees is not handled yet).
    #[inline]
    pub(crate) fn inline_unread(&self, id: ObjectId) -> Option<Stored> {
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

    /// The processes borrowing `id` (for tests and status).
    #[cfg(test)]
    pub(crate) fn borrowers_of(&self, id: ObjectId) -> Vec<SocketAddr> {
        self.map
            .get(&id)
            .map(|e| e.borrowers().to_vec())
            .unwrap_or_default()
    }
}

/// Sends the pending borrow notices, one message per owner, in order. The lock is held while
/// they are queued on their connections, so notices never overtake each other.
fn send_borrows(net: &Arc<Net>, outbox: &parking_lot::Mutex<Vec<(SocketAddr, ObjectId, bool)>>) {
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
    let from = net.addr();
    for (owner, changes) in per_owner {
        net.target::<svc::Owner>(owner)
            .do_send(Borrow { from, changes });
    }
}

/// The reference table of this process: [`RefCounts`] and the parts that carry out its effects.
pub(crate) struct RefTable {
    counts: RefCounts,
    /// The node this process is on (where the copies it keeps are).
    node: NodeId,
    store: StoreClient,
    net: Arc<Net>,
    gcs: Target<svc::Gcs>,
    /// Borrow notices not sent yet, in order (see [`notify`](Self::notify)).
    outbox: Arc<parking_lot::Mutex<Vec<(SocketAddr, ObjectId, bool)>>>,
    /// Results this process made and keeps for their owners, by owner.
    copies: parking_lot::Mutex<HashMap<SocketAddr, Vec<ObjectId>>>,
    /// Where the objects this process owns that other processes keep are.
    kept: IdDashMap<ObjectId, HeldCopy>,
    /// The task that made each kept object, to run again if its copy is lost (lineage); its
    /// arguments stay pinned while the object lives.
    lineage: IdDashMap<ObjectId, Arc<TaskSpec>>,
    /// Objects of other owners whose value this process read from elsewhere and keeps in its
    /// store (secondary copies), with their owners: freed when the owner frees the object (it
    /// knows of the copy) or is gone.
    secondary: IdDashMap<ObjectId, SocketAddr>,
    /// For objects owned here: the other processes keeping copies of them, and their nodes:
    /// readers pull from them too, one takes the place of a lost kept copy, and they are told
    /// to free them with the object.
    copies_at: IdDashMap<ObjectId, Vec<(SocketAddr, NodeId)>>,
}

impl std::ops::Deref for RefTable {
    type Target = RefCounts;
    fn deref(&self) -> &RefCounts {
        &self.counts
    }
}

impl RefTable {
    /// Up to `limit` of the objects this process holds references to, with the size of each
    /// value found in the store.
    pub(crate) async fn held(&self, limit: usize) -> Vec<ObjectEntry> {
        let mut objects = self.snapshot(limit);
        for o in objects.iter_mut() {
            if let Some(copy) = self.kept_at(o.id) {
                o.size = Some(copy.size);
                o.kept_on = Some(copy.node);
            }
            if let Some(at) = self.copies_at.get(&o.id) {
                o.copies_on = at.iter().map(|(_, node)| *node).collect();
            }
        }
        let stored: Vec<ObjectId> = objects
            .iter()
            .filter(|o| o.in_store && o.size.is_none())
            .map(|o| o.id)
            .collect();
        for (id, value) in stored.iter().zip(self.store.present(&stored).await) {
            if let (Some(v), Some(o)) = (value, objects.iter_mut().find(|o| o.id == *id)) {
                o.size = Some(v.size() as u64);
            }
        }
        objects
    }

    pub(crate) fn new(
        store: StoreClient,
        net: Arc<Net>,
        gcs: Target<svc::Gcs>,
        node: NodeId,
    ) -> Self {
        store.set_node(node);
        RefTable {
            node,
            counts: RefCounts::new(net.addr()),
            store,
            net,
            gcs,
            outbox: Arc::default(),
            copies: Default::default(),
            kept: IdDashMap::default(),
            lineage: IdDashMap::default(),
            secondary: IdDashMap::default(),
            copies_at: IdDashMap::default(),
        }
    }

    /// Carries out what a change of counts requires.
    pub(crate) fn apply(&self, effects: impl IntoIterator<Item = Effect>) {
        for e in effects {
            match e {
                Effect::Free(id) => {
                    self.kept.remove(&id);
                    self.store.free(id);
                    if let Some((_, at)) = self.copies_at.remove(&id) {
                        for (addr, _) in at {
                            self.net
                                .target::<svc::Owner>(addr)
                                .do_send(FreeCopies { ids: vec![id] });
                        }
                    }
                    if let Some((_, spec)) = self.lineage.remove(&id) {
                        self.unpin(&spec.pinned);
                    }
                }
                Effect::Notify { owner, id, add } => self.notify(owner, id, add),
                Effect::OutOfScope(actor_id) => self.gcs.do_send(ActorOutOfScope { actor_id }),
                Effect::Unhandled { id, error } => report_unhandled(id, &error),
            }
        }
    }

    /// Tells `owner` that this process started (`add`) or stopped borrowing `id`. Notices are
    /// coalesced into one message per owner: a start met while decoding goes out when the
    /// decode ends, before anything this thread sends afterwards (so an owner hears of a
    /// borrower before, say, the result of the task that received the ref); a stop goes out
    /// shortly after, from the event loop (a late stop only keeps the object a moment longer).
    fn notify(&self, owner: SocketAddr, id: ObjectId, add: bool) {
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
            let (outbox, net) = (self.outbox.clone(), self.net.clone());
            self.net
                .runtime()
                .spawn(async move { send_borrows(&net, &outbox) });
        }
    }

    /// Sends every pending borrow notice now.
    pub(crate) fn flush_borrows(&self) {
        send_borrows(&self.net, &self.outbox);
    }

    /// See [`RefCounts::add_put`]; a large value goes to the store (which may refuse it: the
    /// object then holds `ObjectStoreFull`, returned here too).
    pub(crate) fn put(
        &self,
        id: ObjectId,
        value: Stored,
        contains: &[RawRef],
    ) -> Result<(), Error> {
        match self.counts.add_put(id, value, contains) {
            Some(v) => self.store.put(id, v),
            None => Ok(()),
        }
    }

    /// See [`RefCounts::add_borrowed`].
    pub(crate) fn add_borrowed(&self, raw: &RawRef) {
        let e = self.counts.add_borrowed(raw);
        self.apply(e);
    }

    /// See [`RefCounts::borrower`].
    pub(crate) fn borrower(&self, id: ObjectId, from: SocketAddr, add: bool) {
        let e = self.counts.borrower(id, from, add);
        self.apply(e);
    }

    /// See [`RefCounts::drop_borrower`].
    pub(crate) fn drop_borrower(&self, gone: SocketAddr) {
        let e = self.counts.drop_borrower(gone);
        self.apply(e);
    }

    /// See [`RefCounts::remove_local`].
    pub(crate) fn remove_local(&self, id: ObjectId) {
        let e = self.counts.remove_local(id);
        self.apply(e);
    }

    /// See [`RefCounts::unpin`].
    pub(crate) fn unpin(&self, ids: &[ObjectId]) {
        let e = self.counts.unpin(ids);
        self.apply(e);
    }

    /// Pins the objects of `refs`.
    pub(crate) fn pin_refs(&self, refs: &[RawRef]) {
        let ids: Vec<ObjectId> = refs.iter().map(|r| r.id).collect();
        self.counts.pin(&ids);
    }

    /// Unpins the objects of `refs`.
    pub(crate) fn unpin_refs(&self, refs: &[RawRef]) {
        let ids: Vec<ObjectId> = refs.iter().map(|r| r.id).collect();
        self.unpin(&ids);
    }

    /// See [`RefCounts::adopt`].
    pub(crate) fn adopt(&self, refs: &[RawRef]) {
        let e = self.counts.adopt(refs);
        self.apply(e);
    }

    /// Stores a result (see [`RefCounts::complete`]); whether it was kept.
    pub(crate) fn complete(&self, id: ObjectId, value: Stored, contains: Vec<ObjectId>) -> bool {
        let done = self.counts.complete(id, value, contains);
        // Stored before any reader hears of it, so whoever reads it next finds it in the store;
        // a value the store refused is that error for every reader, waiting or not.
        let refused = done.to_store.and_then(|v| self.store.put(id, v).err());
        for (slot, tx, v) in done.waiters {
            let v = match &refused {
                Some(e) => Stored::Error(e.clone()),
                None => v,
            };
            let _ = tx.send((slot, v));
        }
        self.apply(done.effects);
        done.kept
    }

    /// Records a result kept by the process that made it (see
    /// [`RefCounts::complete_elsewhere`]); whether it was kept (if not, its copy is freed).
    pub(crate) fn complete_held(
        &self,
        id: ObjectId,
        copy: HeldCopy,
        contains: Vec<ObjectId>,
    ) -> bool {
        let done = self.counts.complete_elsewhere(id, contains);
        if done.kept {
            // Known to the store before any reader hears of it.
            self.kept.insert(id, copy);
            self.store.put_remote(id, copy);
        } else {
            self.net
                .target::<svc::Owner>(copy.holder)
                .do_send(FreeCopies { ids: vec![id] });
        }
        for (slot, tx, v) in done.waiters {
            if tx.wants_values() {
                self.store.fetch_into([(slot as usize, id)], tx);
            } else {
                let _ = tx.send((slot, v));
            }
        }
        self.apply(done.effects);
        done.kept
    }

    /// Keeps `spec`, the task that made kept object `id`, to run again if the copy is lost; its
    /// arguments stay pinned until the object is freed.
    pub(crate) fn keep_lineage(&self, id: ObjectId, spec: Arc<TaskSpec>) {
        self.lineage.insert(id, spec);
    }

    /// Whether object `id` has lineage kept (its arguments' pins are the lineage's).
    pub(crate) fn drop_lineage(&self, id: ObjectId) -> bool {
        self.lineage.remove(&id).is_some()
    }

    /// The objects owned here that are kept on `node`.
    pub(crate) fn kept_on(&self, node: NodeId) -> Vec<(ObjectId, HeldCopy)> {
        self.kept
            .iter()
            .filter(|e| e.value().node == node)
            .map(|e| (*e.key(), *e.value()))
            .collect()
    }

    /// Object `id`'s copy (`copy`) was lost: it becomes pending again, its readers waiting, and
    /// the task that made it is returned to run again. `None` if it is no longer kept there
    /// (freed, or already being rebuilt). `Some(None)`: no lineage to rebuild it from.
    pub(crate) fn begin_rebuild(
        &self,
        id: ObjectId,
        copy: HeldCopy,
    ) -> Option<Option<Arc<TaskSpec>>> {
        self.kept.remove_if(&id, |_, c| *c == copy)?;
        self.counts.reset(id);
        self.store.forget(id);
        // The old keeper may still be alive (a reader could not reach it): it frees its copy.
        self.net
            .target::<svc::Owner>(copy.holder)
            .do_send(FreeCopies { ids: vec![id] });
        Some(self.lineage.get(&id).map(|s| s.clone()))
    }

    /// Fails object `id` (pending after [`begin_rebuild`](Self::begin_rebuild)) with `error`,
    /// for readers waiting here and in the store, and lets its lineage go.
    pub(crate) fn fail_lost(&self, id: ObjectId, error: Error) {
        self.complete(id, Stored::Error(error.clone()), Vec::new());
        let _ = self.store.put(id, Stored::Error(error));
        if let Some((_, spec)) = self.lineage.remove(&id) {
            self.unpin(&spec.pinned);
        }
    }

    /// Keeps a copy of object `id` (owned by `owner`), whose value this process read from
    /// elsewhere, for its next reads here (if the store has room): the owner hears of it and
    /// frees it with the object, as Ray's owners track secondary copies.
    pub(crate) fn keep_secondary(&self, id: ObjectId, owner: SocketAddr, bytes: Bytes) {
        if self.secondary.contains_key(&id) {
            return;
        }
        if self.store.put_secondary(id, bytes).is_ok() {
            self.secondary.insert(id, owner);
            self.net.target::<svc::Owner>(owner).do_send(CopyHere {
                id,
                at: self.net.addr(),
                node: self.node,
            });
        }
    }

    /// Process `at` keeps a copy of object `id`, owned here: freed there with the object (at
    /// once if the object is gone already).
    pub(crate) fn copy_at(&self, id: ObjectId, at: SocketAddr, node: NodeId) {
        if self.counts.contains(id) {
            {
                let mut list = self.copies_at.entry(id).or_default();
                if !list.iter().any(|(a, _)| *a == at) {
                    list.push((at, node));
                }
            }
            // Freed meanwhile: the free did not see this copy.
            if !self.counts.contains(id) && self.copies_at.remove(&id).is_some() {
                self.net
                    .target::<svc::Owner>(at)
                    .do_send(FreeCopies { ids: vec![id] });
            }
        } else {
            self.net
                .target::<svc::Owner>(at)
                .do_send(FreeCopies { ids: vec![id] });
        }
    }

    /// The copy of borrowed object `id` this process keeps (see
    /// [`keep_secondary`](Self::keep_secondary)), unless it has none or it was evicted to make
    /// room (then it is read from elsewhere again, and may be kept again).
    pub(crate) fn copy_here(&self, id: ObjectId) -> Option<Bytes> {
        if !self.secondary.contains_key(&id) {
            return None;
        }
        let bytes = self.store.read_secondary(id);
        if bytes.is_none() {
            self.copy_evicted(id);
        }
        bytes
    }

    /// A copy of `size` bytes kept by this process, on its node.
    pub(crate) fn held_here(&self, size: u64) -> HeldCopy {
        HeldCopy {
            holder: self.net.addr(),
            node: self.node,
            size,
        }
    }

    /// The copies of object `id` (owned here, `size` bytes) that processes which read it keep.
    pub(crate) fn copies_of(&self, id: ObjectId, size: u64) -> Vec<HeldCopy> {
        self.copies_at.get(&id).map_or_else(Vec::new, |at| {
            at.iter()
                .map(|(holder, node)| HeldCopy {
                    holder: *holder,
                    node: *node,
                    size,
                })
                .collect()
        })
    }

    /// The kept copy `lost` of object `id` (owned here) is gone: another process's copy of it,
    /// if one is known, takes its place (told with [`KeepCopy`] to keep it for this owner), and
    /// readers here read it there. Returns that copy; `None` when there is none (rebuild the
    /// object) or `lost` is not where it is kept any more (moved or rebuilt already).
    pub(crate) fn move_kept(&self, id: ObjectId, lost: HeldCopy) -> Option<HeldCopy> {
        let mut kept = self.kept.get_mut(&id)?;
        if *kept != lost {
            return None;
        }
        let next = {
            let mut at = self.copies_at.get_mut(&id)?;
            at.retain(|(holder, _)| *holder != lost.holder);
            if at.is_empty() {
                return None;
            }
            let (holder, node) = at.remove(0);
            HeldCopy {
                holder,
                node,
                size: lost.size,
            }
        };
        *kept = next;
        drop(kept);
        // Readers waiting for the lost copy wait again, and pull from the new place.
        self.store.forget(id);
        self.store.put_remote(id, next);
        self.net
            .target::<svc::Owner>(next.holder)
            .do_send(KeepCopy {
                id,
                owner: self.net.addr(),
            });
        Some(next)
    }

    /// This process's store evicted its copy of object `id`: if it was a borrowed object's copy,
    /// its owner hears that it is gone.
    pub(crate) fn copy_evicted(&self, id: ObjectId) {
        // Kept again since (read once more): that copy stays.
        if self.store.holds(id) {
            return;
        }
        if let Some((_, owner)) = self.secondary.remove(&id) {
            self.net.target::<svc::Owner>(owner).do_send(CopyGone {
                id,
                at: self.net.addr(),
            });
        }
    }

    /// Process `at` no longer keeps its copy of object `id` (owned here).
    pub(crate) fn copy_gone(&self, id: ObjectId, at: SocketAddr) {
        if let Some(mut list) = self.copies_at.get_mut(&id) {
            list.retain(|(a, _)| *a != at);
        }
        self.copies_at.remove_if(&id, |_, list| list.is_empty());
    }

    /// The copies of objects owned here that processes on `node` (or the process at `peer`)
    /// kept are gone with them.
    pub(crate) fn copies_gone(&self, node: Option<NodeId>, peer: Option<SocketAddr>) {
        for mut at in self.copies_at.iter_mut() {
            at.retain(|(a, n)| Some(*n) != node && Some(*a) != peer);
        }
        self.copies_at.retain(|_, at| !at.is_empty());
    }

    /// The owner at `owner` lost the copy of object `id` it kept elsewhere: this process's copy
    /// of it (if it still has it) is kept for that owner from now on, no longer evictable.
    pub(crate) fn keep_for(&self, id: ObjectId, owner: SocketAddr) {
        if self.secondary.remove(&id).is_none() {
            return;
        }
        if self.store.promote(id) {
            tracing::debug!(object = %id, %owner, "a secondary copy is now the kept one");
            self.copies.lock().entry(owner).or_default().push(id);
        }
    }

    /// Where another process keeps object `id` (owned here), if it does.
    pub(crate) fn kept_at(&self, id: ObjectId) -> Option<HeldCopy> {
        self.kept.get(&id).map(|c| *c)
    }

    /// Keeps `bytes`, the result `id` this process made for the owner at `owner`, in this
    /// process's store; where it is kept, or `None` (send the value instead) if the store cannot
    /// take it.
    pub(crate) fn keep_copy(
        &self,
        owner: SocketAddr,
        id: ObjectId,
        bytes: Bytes,
    ) -> Option<HeldCopy> {
        let size = bytes.len() as u64;
        self.store.put(id, Stored::Value(bytes)).ok()?;
        self.copies.lock().entry(owner).or_default().push(id);
        Some(HeldCopy {
            holder: self.net.addr(),
            node: self.node,
            size,
        })
    }

    /// The owner let go of copies this process keeps for it.
    pub(crate) fn free_copies(&self, ids: &[ObjectId]) {
        let mut copies = self.copies.lock();
        for list in copies.values_mut() {
            list.retain(|id| !ids.contains(id));
        }
        copies.retain(|_, list| !list.is_empty());
        drop(copies);
        for id in ids {
            self.secondary.remove(id);
            self.store.free(*id);
        }
    }

    /// What this process's store holds, for `lumen memory`.
    pub(crate) async fn store_usage(&self) -> crate::protocol::owner::StoreUsage {
        let shards = self.store.stats().await;
        let memory = self.store.memory();
        crate::protocol::owner::StoreUsage {
            capacity: memory.capacity,
            objects: shards.objects,
            bytes: shards.bytes as u64,
            memory_bytes: memory.used,
            spilled_objects: memory.spilled_objects,
            spilled_bytes: memory.spilled_bytes,
            kept_copies: self.copies.lock().values().map(Vec::len).sum(),
        }
    }

    /// The process at `owner` is gone: nobody can read the copies kept for it any more, and the
    /// copies of its objects read here go too (an object shares its owner's fate: reads now
    /// say `OwnerDied`).
    pub(crate) fn owner_gone(&self, owner: SocketAddr) {
        let copies: Vec<ObjectId> = self
            .secondary
            .iter()
            .filter(|e| *e.value() == owner)
            .map(|e| *e.key())
            .collect();
        for id in copies {
            if self.secondary.remove(&id).is_some() {
                self.store.free(id);
            }
        }
        let ids = self.copies.lock().remove(&owner).unwrap_or_default();
        if !ids.is_empty() {
            tracing::debug!(owner = %owner, objects = ids.len(), "freeing copies kept for an owner that is gone");
        }
        for id in ids {
            self.store.free(id);
        }
    }

    /// The store this table's large objects live in.
    pub(crate) fn store(&self) -> &StoreClient {
        &self.store
    }

    /// The switchboard of this process.
    pub(crate) fn net(&self) -> &Arc<Net> {
        &self.net
    }
}

static CURRENT: ArcSwapOption<RefTable> = ArcSwapOption::const_empty();

/// Makes `table` this process's reference table (refs made and dropped count there).
/// How many printed unhandled errors [`unhandled_printed`] remembers.
const UNHANDLED_KEPT: usize = 1000;

/// The unhandled errors this process printed last, oldest first (for tests).
static UNHANDLED_PRINTED: parking_lot::Mutex<std::collections::VecDeque<String>> =
    parking_lot::Mutex::new(std::collections::VecDeque::new());

/// The texts of the last unhandled errors this process printed (see [`Effect::Unhandled`]),
/// oldest first, at most [`UNHANDLED_KEPT`].
pub(crate) fn unhandled_printed() -> Vec<String> {
    UNHANDLED_PRINTED.lock().iter().cloned().collect()
}

/// Whether the value of `LUMEN_IGNORE_UNHANDLED_ERRORS` asks for silence: set, to anything but
/// nothing or `0`.
fn ignore_unhandled(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// Tells the user, on stderr, that a failed object was dropped without anyone reading its
/// error (as Ray's driver does), unless `LUMEN_IGNORE_UNHANDLED_ERRORS` asks for silence.
fn report_unhandled(id: ObjectId, error: &str) {
    tracing::warn!(object = %id, %error, "a failed object was dropped unread");
    if ignore_unhandled(std::env::var_os("LUMEN_IGNORE_UNHANDLED_ERRORS").as_deref()) {
        return;
    }
    eprintln!(
        "lumen: Unhandled error (suppress with LUMEN_IGNORE_UNHANDLED_ERRORS=1): {error} \
         (object {id} was dropped without being read)"
    );
    let mut printed = UNHANDLED_PRINTED.lock();
    if printed.len() == UNHANDLED_KEPT {
        printed.pop_front();
    }
    printed.push_back(error.to_string());
}

pub(crate) fn install(table: Arc<RefTable>) {
    CURRENT.store(Some(table));
}

/// This process no longer counts references (its runtime stopped).
pub(crate) fn uninstall() {
    CURRENT.store(None);
}

/// Runs `f` on this process's reference table, if there is one.
#[inline]
pub(crate) fn with_current<R>(f: impl FnOnce(&Arc<RefTable>) -> R) -> Option<R> {
    let guard = CURRENT.load();
    guard.as_ref().map(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeId, WorkerId};
    use crate::protocol::refs::OwnerAddress;
    use bytes::Bytes;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn raw(id: ObjectId, owner: SocketAddr) -> RawRef {
        RawRef {
            id,
            owner: OwnerAddress {
                worker: WorkerId(1 << 16),
                node: NodeId(1 << 16),
                addr: owner,
            },
        }
    }

    fn small() -> Stored {
        Stored::Value(Bytes::from_static(b"ok"))
    }

    #[test]
    fn readers_that_are_done_leave_a_bounded_list_behind() {
        let t = RefCounts::new(addr(1));
        let id = ObjectId::for_put();
        t.add_pending(id, None);
        // A thousand `wait`s that took other objects and went.
        for slot in 0..1000 {
            let (tx, rx) = crate::objects::reply::channel();
            assert!(matches!(
                t.lookup_or_wait(id, slot, &tx, true),
                Lookup::Waiting
            ));
            drop(rx);
        }
        let (live, _rx) = crate::objects::reply::channel();
        t.lookup_or_wait(id, 7777, &live, true);
        let kept = t.map.get(&id).map_or(0, |e| e.waiters.len());
        assert!(kept <= 4, "{kept} readers kept for one live one");
        let done = t.complete(id, small(), Vec::new());
        assert!(done.waiters.iter().any(|(slot, _, _)| *slot == 7777));
    }

    #[test]
    fn an_object_lives_while_any_handle_or_pin_does() {
        let t = RefCounts::new(addr(1));
        let id = ObjectId::for_put();
        assert!(
            t.add_put(id, small(), &[]).is_none(),
            "small values stay inline"
        );
        t.pin(&[id]);
        assert!(t.remove_local(id).is_empty());
        assert!(t.contains(id));
        assert!(t.unpin(&[id]).is_empty(), "an inline value needs no free");
        assert!(!t.contains(id));
        assert_eq!(t.inline_stats(), (0, 0));
        // A large one goes to the store and is freed there.
        let big = ObjectId::for_put();
        let v = Stored::Value(Bytes::from(vec![0u8; INLINE_MAX + 1]));
        assert!(t.add_put(big, v, &[]).is_some());
        assert_eq!(t.remove_local(big), vec![Effect::Free(big)]);
    }

    #[test]
    fn a_result_for_a_dropped_ref_is_discarded_and_releases_its_contents() {
        let t = RefCounts::new(addr(1));
        let inner = ObjectId::for_put();
        t.add_put(inner, small(), &[]);
        t.pin(&[inner]); // the result's pin on what it contains
        let id = ObjectId::for_put();
        t.add_pending(id, None);
        assert!(t.remove_local(id).is_empty());
        t.remove_local(inner);
        assert!(!t.complete(id, small(), vec![inner]).kept);
        assert!(!t.contains(inner), "the discarded value's pin was released");
    }

    fn failed(why: &str) -> Stored {
        Stored::Error(Error::Task {
            function: "f".into(),
            message: why.into(),
            node: "n".into(),
        })
    }

    fn unhandled_of(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Unhandled { error, .. } => Some(error.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_failed_object_freed_unread_is_reported_once_and_a_read_one_never() {
        let t = RefCounts::new(addr(1));
        let made = |why: &str| {
            let id = ObjectId::for_put();
            t.add_pending(id, None);
            assert!(t.complete(id, failed(why), Vec::new()).kept);
            id
        };
        // Unread: reported when its last ref goes (not while a pin keeps it).
        let unread = made("unread");
        t.pin(&[unread]);
        assert!(unhandled_of(&t.remove_local(unread)).is_empty());
        let freed = t.unpin(&[unread]);
        assert_eq!(unhandled_of(&freed).len(), 1);
        assert!(unhandled_of(&freed)[0].ends_with(": unread"), "{freed:?}");
        // Only looked at (a `wait`): still unhandled.
        let looked = made("looked at");
        let (tx, _rx) = crate::objects::reply::channel();
        assert!(t.inline_unread(looked).is_some());
        assert!(matches!(
            t.lookup_or_wait(looked, 0, &tx, false),
            Lookup::Ready(_)
        ));
        assert_eq!(unhandled_of(&t.remove_local(looked)).len(), 1);
        // Read by `get` (inline), or by a reader that registered while it was pending: handled.
        let got = made("got");
        assert!(t.inline(got).is_some());
        assert!(unhandled_of(&t.remove_local(got)).is_empty());
        let waited = ObjectId::for_put();
        t.add_pending(waited, None);
        assert!(matches!(
            t.lookup_or_wait(waited, 0, &tx, true),
            Lookup::Waiting
        ));
        assert_eq!(
            t.complete(waited, failed("waited"), Vec::new())
                .waiters
                .len(),
            1
        );
        assert!(unhandled_of(&t.remove_local(waited)).is_empty());
        // A value is never reported, nor a cancellation the user asked for.
        let fine = ObjectId::for_put();
        t.add_pending(fine, None);
        t.complete(fine, small(), Vec::new());
        assert!(unhandled_of(&t.remove_local(fine)).is_empty());
        let cancelled = ObjectId::for_put();
        t.add_pending(cancelled, None);
        let why = Stored::Error(Error::Cancelled {
            task: "t".into(),
            reason: "asked".into(),
        });
        t.complete(cancelled, why, Vec::new());
        assert!(unhandled_of(&t.remove_local(cancelled)).is_empty());
    }

    #[test]
    fn a_failure_arriving_after_every_ref_went_is_reported_and_a_duplicate_is_not() {
        let t = RefCounts::new(addr(1));
        let id = ObjectId::for_put();
        t.add_pending(id, None);
        assert!(t.remove_local(id).is_empty());
        let late = t.complete(id, failed("late"), Vec::new());
        assert!(!late.kept);
        assert_eq!(unhandled_of(&late.effects).len(), 1);
        // The same result twice (a retried task's): the second is not news.
        let twice = ObjectId::for_put();
        t.add_pending(twice, None);
        assert!(t.complete(twice, failed("twice"), Vec::new()).kept);
        let again = t.complete(twice, failed("twice"), Vec::new());
        assert!(!again.kept && unhandled_of(&again.effects).is_empty());
        assert_eq!(unhandled_of(&t.remove_local(twice)).len(), 1);
    }

    #[test]
    fn the_ignore_variable_silences_unless_empty_or_zero() {
        use std::ffi::OsStr;
        assert!(!ignore_unhandled(None));
        assert!(!ignore_unhandled(Some(OsStr::new(""))));
        assert!(!ignore_unhandled(Some(OsStr::new("0"))));
        assert!(ignore_unhandled(Some(OsStr::new("1"))));
        assert!(ignore_unhandled(Some(OsStr::new("yes"))));
    }

    #[test]
    fn freeing_an_object_unpins_what_it_contains_transitively() {
        let t = RefCounts::new(addr(1));
        let (a, b, c) = (
            ObjectId::for_put(),
            ObjectId::for_put(),
            ObjectId::for_put(),
        );
        t.add_put(c, small(), &[]);
        t.pin(&[c]);
        t.add_put(b, small(), &[raw(c, addr(1))]);
        t.pin(&[b]);
        t.add_put(a, small(), &[raw(b, addr(1))]);
        t.remove_local(c);
        t.remove_local(b);
        assert!(t.contains(b) && t.contains(c));
        t.remove_local(a);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_first_borrowed_ref_tells_the_owner_and_the_last_one_too() {
        let t = RefCounts::new(addr(2));
        let id = ObjectId::for_put();
        let r = raw(id, addr(1));
        let start = Effect::Notify {
            owner: addr(1),
            id,
            add: true,
        };
        assert_eq!(t.add_borrowed(&r), Some(start));
        assert_eq!(t.add_borrowed(&r), None, "once per process");
        assert!(t.remove_local(id).is_empty());
        let stop = Effect::Notify {
            owner: addr(1),
            id,
            add: false,
        };
        assert_eq!(t.remove_local(id), vec![stop]);
        // A ref to an object owned here is no borrow.
        let mine = raw(ObjectId::for_put(), addr(2));
        assert_eq!(t.add_borrowed(&mine), None);
    }

    #[test]
    fn an_actor_anchor_going_puts_the_actor_out_of_scope() {
        let t = RefCounts::new(addr(1));
        let id = ObjectId::for_put();
        let actor = ActorId::fresh();
        t.add_pending(id, None);
        // (add_pending_actor needs a spec; the effect is the same rule.)
        t.map.get_mut(&id).unwrap().rare().actor = Some(actor);
        assert_eq!(t.remove_local(id), vec![Effect::OutOfScope(actor)]);
    }

    /// Owner and borrowers as separate cores, their notices delivered by hand.
    struct Process {
        addr: SocketAddr,
        counts: RefCounts,
    }

    fn deliver(procs: &[Process], from: SocketAddr, effects: Vec<Effect>) -> Vec<ObjectId> {
        let mut freed = Vec::new();
        for e in effects {
            match e {
                Effect::Notify { owner, id, add } => {
                    let p = procs.iter().find(|p| p.addr == owner).expect("owner");
                    let more = p.counts.borrower(id, from, add);
                    freed.extend(deliver(procs, owner, more));
                }
                Effect::Free(id) => freed.push(id),
                Effect::OutOfScope(_) | Effect::Unhandled { .. } => {}
            }
        }
        freed
    }

    #[test]
    fn simulated_owner_and_borrowers_free_only_when_every_process_let_go() {
        let procs: Vec<Process> = (1..=3)
            .map(|i| Process {
                addr: addr(i),
                counts: RefCounts::new(addr(i)),
            })
            .collect();
        let (owner, b1, b2) = (&procs[0], &procs[1], &procs[2]);
        let id = ObjectId::for_put();
        let big = Stored::Value(Bytes::from(vec![1u8; INLINE_MAX + 10]));
        assert!(owner.counts.add_put(id, big, &[]).is_some());
        let r = raw(id, owner.addr);
        // Two processes receive the ref (as a task argument, say).
        let e = b1.counts.add_borrowed(&r).into_iter().collect();
        assert!(deliver(&procs, b1.addr, e).is_empty());
        let e = b2.counts.add_borrowed(&r).into_iter().collect();
        assert!(deliver(&procs, b2.addr, e).is_empty());
        assert_eq!(owner.counts.borrowers_of(id).len(), 2);
        // The owner drops its own handle: the borrowers keep it alive.
        assert!(deliver(&procs, owner.addr, owner.counts.remove_local(id)).is_empty());
        assert!(owner.counts.contains(id));
        // One borrower lets go; the other dies without a word.
        assert!(deliver(&procs, b1.addr, b1.counts.remove_local(id)).is_empty());
        assert!(owner.counts.contains(id));
        let freed = deliver(&procs, owner.addr, owner.counts.drop_borrower(b2.addr));
        assert_eq!(freed, vec![id], "freed once the dead borrower is forgotten");
        assert!(!owner.counts.contains(id));
    }

    #[test]
    fn adopted_refs_keep_foreign_objects_borrowed_until_their_container_goes() {
        let t = RefCounts::new(addr(1));
        let foreign = raw(ObjectId::for_put(), addr(9));
        let effects = t.adopt(std::slice::from_ref(&foreign));
        assert_eq!(
            effects,
            vec![Effect::Notify {
                owner: addr(9),
                id: foreign.id,
                add: true
            }]
        );
        let outer = ObjectId::for_put();
        t.add_pending(outer, None);
        assert!(t.complete(outer, small(), vec![foreign.id]).kept);
        let effects = t.remove_local(outer);
        assert_eq!(
            effects,
            vec![Effect::Notify {
                owner: addr(9),
                id: foreign.id,
                add: false
            }]
        );
    }
}
