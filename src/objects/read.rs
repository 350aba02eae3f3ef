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
use crate::objects::reply;
use crate::objects::store::FetchReply;
use crate::protocol::owner::{Fetched, GetObject};
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

/// Asks the owner of `raw` for it: `Some` with its content once ready (or `ObjectLost` saying
/// why the owner could not be asked), `None` when it is larger than `inline_max` bytes.
pub(crate) async fn ask_owner(net: Arc<Net>, raw: RawRef, inline_max: u64) -> Option<Stored> {
    let owner = raw.owner.addr;
    let reply = net.target::<svc::Owner>(owner).send(GetObject {
        id: raw.id,
        inline_max,
    });
    match reply.await {
        Ok(Fetched::Here(v)) => Some(v),
        Ok(Fetched::TooLarge(_)) => None,
        Err(e) => Some(Stored::Error(Error::OwnerDied {
            object: raw.id.to_string(),
            owner: owner.to_string(),
            reason: format!("it could not be reached: {e}"),
        })),
    }
}

/// Asks each ref's owner for it, in parallel; each answer goes to `tx` with its slot (`None`:
/// larger than `inline_max`).
pub(crate) fn ask_owners(
    net: &Arc<Net>,
    wants: Vec<(usize, RawRef)>,
    inline_max: u64,
    tx: flume::Sender<(u32, Option<Stored>)>,
) {
    for (slot, raw) in wants {
        let (net2, tx) = (net.clone(), tx.clone());
        net.runtime().spawn(async move {
            let v = ask_owner(net2, raw, inline_max).await;
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
            Lookup::Elsewhere | Lookup::Unknown => remote.push((slot, raw)),
        }
    }
    if !via_store.is_empty() {
        table.store().fetch_into(via_store, tx.clone());
    }
    if !remote.is_empty() {
        let (otx, orx) = flume::unbounded();
        let n = remote.len();
        ask_owners(table.net(), remote, u64::MAX, otx);
        let tx = tx.clone();
        table.net().runtime().spawn(async move {
            for _ in 0..n {
                match orx.recv_async().await {
                    Ok((slot, Some(v))) => {
                        let _ = tx.send((slot, v));
                    }
                    Ok((_, None)) => {}
                    Err(_) => break,
                }
            }
        });
    }
}

/// The owner's side of a read: the object's content once it is ready.
pub(crate) async fn read_owned(table: Arc<RefTable>, id: ObjectId) -> Stored {
    if !table.contains(id) {
        return Stored::Error(Error::ObjectLost {
            object: id.to_string(),
            reason: "its owner no longer holds it: every reference to it was dropped".into(),
        });
    }
    let (tx, rx) = reply::channel();
    match table.lookup_or_wait(id, 0, &tx, true) {
        Lookup::Ready(v) => return v,
        Lookup::Waiting => {}
        Lookup::Elsewhere | Lookup::Unknown => table.store().fetch_into([(0, id)], tx),
    }
    drop(table);
    match rx.recv_async().await {
        Ok((_, v)) => v,
        Err(_) => Stored::Error(Error::shutdown("reading an object from its owner")),
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
