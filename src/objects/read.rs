//! Reading objects: from this process's table when it owns them (small values are there, large
//! ones in its store), else from their owners, which answer [`GetObject`] when the object is
//! ready.
//!
//! Every reader goes through here: blocking and async `get`, a raylet resolving a task's
//! arguments, an executor fetching what the raylet left, and the owner answering other
//! processes.

use crate::error::{Error, Result};
use crate::ids::ObjectId;
use crate::objects::codec;
use crate::objects::ownership::{self, Lookup, RefTable};
use crate::objects::pull;
use crate::objects::reply;
use crate::objects::shm;
use crate::objects::store::FetchReply;
use crate::objects::store::StoreClient;
use crate::protocol::owner::{CopyLost, Fetched, GetObject, HeldCopy};
use crate::protocol::refs::{RawRef, Stored};
use crate::protocol::svc;
use crate::transport::net::Net;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Decodes an object's content as a `T` (or returns the error it holds).
pub(crate) fn decode<T: DeserializeOwned + 'static>(id: ObjectId, stored: Stored) -> Result<T> {
    match stored {
        Stored::Value(b) => codec::decode_shared(&format_args!("object {id}"), &b),
        Stored::Error(e) => Err(e),
    }
}

/// What an owner said of an object: its content (`None`: larger than asked for), and where it
/// is kept if the process that made it keeps it.
pub(crate) type Asked = (Option<Stored>, Option<HeldCopy>);

/// Asks the owner of `raw` for it: its content once ready (or `OwnerDied` if the owner could
/// not be asked), `None` when it is larger than `inline_max` bytes. An object kept by the
/// process that made it is read there: from `store` when that is this process.
pub(crate) async fn ask_owner(
    net: Arc<Net>,
    raw: RawRef,
    inline_max: u64,
    store: Option<StoreClient>,
) -> Asked {
    let owner = raw.owner.addr;
    // A copy that cannot be read where the owner said it is kept is reported, and the owner
    // asked again: it rebuilds the object (or fails it) and answers when that is done.
    // The owner may answer with shared memory when it is on this process's node.
    let mut share = store
        .as_ref()
        .filter(|_| !net.is_here(owner))
        .and_then(|s| s.share_key(raw.owner.node));
    for _ in 0..REBUILD_ASKS {
        let reply = net.target::<svc::Owner>(owner).send(GetObject {
            id: raw.id,
            inline_max,
            share,
        });
        let (copy, others) = match reply.await {
            Ok(Fetched::Here(v)) => return (Some(v), None),
            Ok(Fetched::Shared(h)) => match shm::open(&h) {
                Ok(b) => return (Some(Stored::Value(b)), None),
                Err(e) => {
                    tracing::debug!(object = %raw.id, %owner, error = %e, "cannot map a shared value");
                    share = None;
                    continue;
                }
            },
            Ok(Fetched::TooLarge(_)) => return (None, None),
            Ok(Fetched::Kept(copy, _)) if copy.size > inline_max => return (None, Some(copy)),
            Ok(Fetched::Kept(copy, others)) => (copy, others),
            Err(e) => {
                let died = Error::OwnerDied {
                    object: raw.id.to_string(),
                    owner: owner.to_string(),
                    reason: format!("it could not be reached: {e}"),
                };
                return (Some(Stored::Error(died)), None);
            }
        };
        match read_kept(&net, store.as_ref(), raw.id, copy, &others).await {
            Stored::Error(Error::ObjectLost { reason, .. }) => {
                net.target::<svc::Owner>(owner).do_send(CopyLost {
                    id: raw.id,
                    copy,
                    reason,
                });
            }
            v => return (Some(v), Some(copy)),
        }
    }
    let lost = Error::ObjectLost {
        object: raw.id.to_string(),
        reason: format!("its copy could not be read after {REBUILD_ASKS} rebuilds"),
    };
    (Some(Stored::Error(lost)), None)
}

/// How many times a reader asks an owner again after a kept copy could not be read.
const REBUILD_ASKS: usize = 4;

/// Reads object `id` where `copy` (and `others`, secondary copies) say it is kept: in this
/// process's `store`, or from the processes keeping it ([`pull`]).
pub(crate) async fn read_kept(
    net: &Arc<Net>,
    store: Option<&StoreClient>,
    id: ObjectId,
    copy: HeldCopy,
    others: &[HeldCopy],
) -> Stored {
    if let Some(store) = store.filter(|_| net.is_here(copy.holder)) {
        return read_copy(store, id).await;
    }
    let asked = match store {
        Some(s) => s.ask_copy(net, id, copy, others).await,
        None => pull::ask_copy(net, id, copy, others, None).await,
    };
    match asked {
        Ok(Fetched::Here(v)) => v,
        Ok(_) => Stored::Error(Error::ObjectLost {
            object: id.to_string(),
            reason: "the process keeping it answered with no value".into(),
        }),
        Err(e) => Stored::Error(Error::ObjectLost {
            object: id.to_string(),
            reason: format!(
                "the process keeping it on node {} ({}) could not be reached: {e}",
                copy.node, copy.holder
            ),
        }),
    }
}

/// Asks each ref's owner for it, in parallel; each answer goes to `tx` with its slot (`None`:
/// larger than `inline_max`). `store`: this process's, where objects it keeps are read.
pub(crate) fn ask_owners(
    net: &Arc<Net>,
    wants: Vec<(usize, RawRef)>,
    inline_max: u64,
    store: Option<&StoreClient>,
    tx: flume::Sender<(u32, Asked)>,
) {
    for (slot, raw) in wants {
        let (net2, tx, store) = (net.clone(), tx.clone(), store.cloned());
        net.runtime().spawn(async move {
            let v = ask_owner(net2, raw, inline_max, store).await;
            let _ = tx.send((slot as u32, v));
        });
    }
}

/// Sends each `(slot, ref)`'s content to `tx`: at once if this process keeps it, when it is
/// made if this process is making it, from the store if it is large and owned here, else from
/// its owner.
pub(crate) fn fetch_into(table: &RefTable, wants: Vec<(usize, RawRef)>, tx: &FetchReply) {
    let mut via_store = Vec::new();
    let mut remote = Vec::new();
    for (slot, raw) in wants {
        match table.lookup_or_wait(raw.id, slot as u32, tx, true) {
            Lookup::Ready(v) => {
                let _ = tx.send((slot as u32, v));
            }
            Lookup::Waiting => {}
            Lookup::Elsewhere | Lookup::Unknown if table.net().is_here(raw.owner.addr) => {
                via_store.push((slot, raw.id))
            }
            Lookup::Elsewhere | Lookup::Unknown => match table.copy_here(raw.id) {
                Some(b) => {
                    let _ = tx.send((slot as u32, Stored::Value(b)));
                }
                None => remote.push((slot, raw)),
            },
        }
    }
    if !via_store.is_empty() {
        table.store().fetch_into(via_store, tx.clone());
    }
    if !remote.is_empty() {
        let (otx, orx) = flume::unbounded();
        let n = remote.len();
        let ids: Vec<(usize, ObjectId, std::net::SocketAddr)> = remote
            .iter()
            .map(|(s, r)| (*s, r.id, r.owner.addr))
            .collect();
        ask_owners(table.net(), remote, u64::MAX, Some(table.store()), otx);
        let tx = tx.clone();
        let net = table.net().clone();
        table.net().runtime().spawn(async move {
            for _ in 0..n {
                match orx.recv_async().await {
                    Ok((slot, (Some(v), copy))) => {
                        // A large value read from another process stays here while this
                        // process borrows it (a secondary copy): the next read is local.
                        let read_here = copy.is_some_and(|c| net.is_here(c.holder));
                        if let (Stored::Value(b), false) = (&v, read_here) {
                            if b.len() > ownership::INLINE_MAX {
                                let found = ids.iter().find(|(s, _, _)| *s as u32 == slot);
                                if let Some((_, id, owner)) = found {
                                    ownership::with_current(|t| {
                                        t.keep_secondary(*id, *owner, b.clone())
                                    });
                                }
                            }
                        }
                        let _ = tx.send((slot, v));
                    }
                    Ok((_, (None, _))) => {}
                    Err(_) => break,
                }
            }
        });
    }
}

/// What the owner answers a reader: the object's content, or where it is kept.
pub(crate) enum OwnedRead {
    Value(Stored),
    /// Kept by the process that made it, and copies of it by these others.
    Kept(HeldCopy, Vec<HeldCopy>),
}

/// The owner's answer to [`GetObject`] `m`, once the object is ready: where it is kept (and the
/// copies of it elsewhere), in shared memory for a reader on this node, or its content. A
/// large value held here ([`pull::PULL_MIN`] bytes or more) is answered as a copy kept here,
/// so that the reader pulls it like any kept copy: within its store's room for pulls, and in
/// chunks from this process and the readers that keep copies of it.
pub(crate) async fn answer_get(table: Arc<RefTable>, m: GetObject) -> Fetched {
    let weak = Arc::downgrade(&table);
    let store = table.store().clone();
    match read_owned(table, m.id).await {
        OwnedRead::Kept(copy, others) => Fetched::Kept(copy, others),
        OwnedRead::Value(Stored::Value(b)) if b.len() as u64 > m.inline_max => {
            Fetched::TooLarge(b.len() as u64)
        }
        OwnedRead::Value(v) => {
            if let Some(h) = store.shared(m.id, &v, m.share) {
                return Fetched::Shared(h);
            }
            match (&v, weak.upgrade()) {
                (Stored::Value(b), Some(table)) if b.len() as u64 >= pull::PULL_MIN => {
                    let size = b.len() as u64;
                    Fetched::Kept(table.held_here(size), table.copies_of(m.id, size))
                }
                _ => store.answer(m.id, v, None),
            }
        }
    }
}

/// The owner's side of a read: once the object is ready, its content, or where the process that
/// made it keeps it (the reader goes there: the value does not pass through the owner).
pub(crate) async fn read_owned(table: Arc<RefTable>, id: ObjectId) -> OwnedRead {
    if !table.contains(id) {
        return OwnedRead::Value(Stored::Error(Error::ObjectLost {
            object: id.to_string(),
            reason: "its owner no longer holds it: every reference to it was dropped".into(),
        }));
    }
    let (tx, rx) = reply::readiness_channel();
    match table.lookup_or_wait(id, 0, &tx, true) {
        Lookup::Ready(v) => return OwnedRead::Value(v),
        Lookup::Waiting => {
            drop(tx);
            let weak = Arc::downgrade(&table);
            drop(table);
            if rx.recv_async().await.is_err() {
                return OwnedRead::Value(Stored::Error(Error::shutdown(
                    "reading an object from its owner",
                )));
            }
            let Some(t) = weak.upgrade() else {
                return OwnedRead::Value(Stored::Error(Error::shutdown(
                    "reading an object from its owner",
                )));
            };
            return read_ready(t, id).await;
        }
        Lookup::Elsewhere | Lookup::Unknown => {}
    }
    read_ready(table, id).await
}

/// [`read_owned`] of an object known to be ready.
async fn read_ready(table: Arc<RefTable>, id: ObjectId) -> OwnedRead {
    if let Some(copy) = table.kept_at(id) {
        return OwnedRead::Kept(copy, table.copies_of(id, copy.size));
    }
    if let Some(v) = table.inline(id) {
        return OwnedRead::Value(v);
    }
    let (tx, rx) = reply::channel();
    table.store().fetch_into([(0, id)], tx);
    drop(table);
    match rx.recv_async().await {
        Ok((_, v)) => OwnedRead::Value(v),
        Err(_) => OwnedRead::Value(Stored::Error(Error::shutdown(
            "reading an object from its owner",
        ))),
    }
}

/// A copy this process keeps for another owner (a result it made), for a reader elsewhere; an
/// error if it keeps none.
pub(crate) async fn read_copy(store: &StoreClient, id: ObjectId) -> Stored {
    match store.present(&[id]).await.pop().flatten() {
        Some(v) => v,
        None => Stored::Error(Error::ObjectLost {
            object: id.to_string(),
            reason: "the process that made it no longer keeps it".into(),
        }),
    }
}

/// Refuses objects this process holds no reference to: they can never arrive (a ref made before
/// `lumen::init()`, or kept across `shutdown()`).
pub(crate) fn check_known(table: &RefTable, ids: &[ObjectId]) -> Result<()> {
    match ids.iter().find(|id| !table.contains(**id)) {
        Some(id) => Err(unknown_ref(*id)),
        None => Ok(()),
    }
}

/// The error for a ref this process's table does not hold.
pub(crate) fn unknown_ref(id: ObjectId) -> Error {
    Error::ObjectLost {
        object: id.to_string(),
        reason: "this process holds no reference to it: the ref was made before lumen::init() \
                 or belongs to a runtime that was shut down"
            .into(),
    }
}

/// Awaits an object without blocking a thread (what `ref.await` does).
pub(crate) async fn get_async<T: DeserializeOwned + 'static>(raw: &RawRef) -> Result<T> {
    let table = ownership::with_current(Arc::clone).ok_or(Error::NotInitialized)?;
    let id = raw.id;
    check_known(&table, &[id])?;
    let (tx, rx) = reply::channel();
    fetch_into(&table, vec![(0, raw.clone())], &tx);
    drop(tx);
    drop(table);
    let (_, v) = rx
        .recv_async()
        .await
        .map_err(|_| Error::shutdown("awaiting an object"))?;
    decode(id, v)
}
