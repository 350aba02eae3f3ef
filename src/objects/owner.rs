//! The owner's side of work done in other processes: results of tasks and actor calls that ran
//! elsewhere ([`TaskResult`]), reads of owned objects by other processes ([`GetObject`]), and
//! [`report`], which hands an outcome to a task's owner wherever it lives.

use crate::error::Error;
use crate::ids::{NodeId, ObjectId, TaskId};
use crate::node::executor;
use crate::objects::codec::Encoded;
use crate::objects::object_ref::RawRef;
use crate::objects::ownership::{Lookup, RefTable};
use crate::objects::store::{FetchReply, StoreClient, Stored};
use crate::runtime::Runtime;
use crate::task::TaskSpec;
use crate::transport::wire::{Body, Remote};
use crate::transport::Transport;
use actix::prelude::*;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The outcome of a task or actor call that ran in another process, sent to its owner.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct TaskResult {
    pub(crate) task_id: TaskId,
    pub(crate) return_id: ObjectId,
    pub(crate) outcome: Result<Bytes, Error>,
}

/// A raylet queued these tasks (by return object) of this owner: if its node dies, the owner
/// retries them.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct TasksPlaced {
    pub(crate) node: NodeId,
    pub(crate) returns: Vec<ObjectId>,
    /// The reporting raylet's address, when the tasks are queued on its own node.
    pub(crate) raylet: Option<std::net::SocketAddr>,
}

/// A node died: tasks this owner had there are lost.
#[derive(Message, Serialize, Deserialize, Clone)]
#[rtype(result = "()")]
pub(crate) struct NodeDied {
    pub(crate) node: NodeId,
    pub(crate) reason: String,
}

/// A process starts (`true`) or stops holding refs to objects this process owns, in order.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct Borrow {
    pub(crate) changes: Vec<(ObjectId, bool)>,
}

/// Records where the raylets queued this owner's tasks.
pub(crate) fn on_tasks_placed(rt: &Arc<Runtime>, msg: TasksPlaced) {
    let mut learned = false;
    for id in msg.returns {
        // A result may have arrived first: only tasks still in flight are recorded.
        if let Some(mut e) = rt.inflight.get_mut(&id) {
            e.1 = Some(msg.node);
            // Where one task of a kind was queued, the next ones go directly.
            if let (Some(raylet), false) = (msg.raylet, learned) {
                learned = rt.routes.learn(&e.0, msg.node, raylet);
            }
        }
    }
    // The node may have died before this report arrived.
    let dead = rt.dead_nodes.lock().get(&msg.node).cloned();
    if let Some(reason) = dead {
        fail_lost(rt, msg.node, &reason);
    }
}

/// Fails (or retries, per `max_retries`) every task in flight on a node that died.
pub(crate) fn on_node_died(rt: &Arc<Runtime>, msg: NodeDied) {
    rt.dead_nodes.lock().insert(msg.node, msg.reason.clone());
    rt.routes.forget(msg.node);
    fail_lost(rt, msg.node, &msg.reason);
}

/// Fails (or retries) the tasks in flight on a dead node.
fn fail_lost(rt: &Arc<Runtime>, node: NodeId, reason: &str) {
    let msg = NodeDied {
        node,
        reason: reason.to_string(),
    };
    let lost: Vec<ObjectId> = rt
        .inflight
        .iter()
        .filter(|e| e.value().1 == Some(msg.node))
        .map(|e| *e.key())
        .collect();
    for id in lost {
        if let Some((_, (spec, _))) = rt.inflight.remove(&id) {
            tracing::warn!(task = %spec.task_id, node = %msg.node, "task lost with its node");
            let error = Error::WorkerDied {
                function: spec.function.path.to_string(),
                reason: format!("its node {} died: {}", msg.node, msg.reason),
            };
            executor::owner_finish(rt, &spec, Err(error));
        }
    }
}

/// Another process reads an object this process owns: answered when the object is ready, with
/// its value if it is at most `inline_max` bytes.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Fetched")]
pub(crate) struct GetObject {
    pub(crate) id: ObjectId,
    pub(crate) inline_max: u64,
}

/// The answer to [`GetObject`].
#[derive(Serialize, Deserialize, MessageResponse)]
pub(crate) enum Fetched {
    /// The value (or the error the object holds).
    Here(Stored),
    /// Ready, but larger than asked for: the reader that needs it fetches it itself.
    TooLarge(u64),
}

/// Raylets pass values up to this size along with the task; larger ones the executing worker
/// fetches from the owner itself, so they cross the network once.
pub(crate) const RAYLET_INLINE_MAX: u64 = 1 << 20;

/// Hands the outcome of `spec` to its owner: this process's runtime if it is the owner, else a
/// [`TaskResult`] over `net`.
pub(crate) fn report(
    net: Option<&Arc<Transport>>,
    spec: &Arc<TaskSpec>,
    outcome: Result<Bytes, Error>,
) {
    match (spec.owner.addr, net) {
        (Some(addr), Some(net)) if addr != net.local_addr() => {
            Remote {
                net: net.clone(),
                addr,
            }
            .send_body(Body::TaskResult(TaskResult {
                task_id: spec.task_id,
                return_id: spec.return_id,
                outcome,
            }));
        }
        _ => executor::finish(spec, outcome.map(Encoded::from_bytes)),
    }
}

/// Sends the outcome of a task or call that ran here to its owner at `addr`. Objects referenced
/// inside the result stay pinned here (their owner may be this process) while this process
/// lives.
pub(crate) fn send_result(
    rt: &Runtime,
    net: &Arc<Transport>,
    addr: std::net::SocketAddr,
    task_id: TaskId,
    return_id: ObjectId,
    outcome: crate::registry::Outcome,
) {
    let outcome = outcome.map(|enc| {
        let (bytes, pins) = enc.into_parts();
        rt.refs.hold(pins);
        bytes
    });
    Remote {
        net: net.clone(),
        addr,
    }
    .send_body(Body::TaskResult(TaskResult {
        task_id,
        return_id,
        outcome,
    }));
}

/// The owner stores a result (its contained refs' pins go with it) and unpins the arguments.
pub(crate) fn store_result(
    rt: &Runtime,
    return_id: ObjectId,
    pinned: &[ObjectId],
    outcome: crate::registry::Outcome,
) {
    let (value, contains) = match outcome {
        Ok(enc) => {
            let (bytes, pins) = enc.into_parts();
            (Stored::Value(bytes), pins)
        }
        Err(e) => (Stored::Error(e), Vec::new()),
    };
    rt.refs.complete(return_id, value, contains);
    rt.refs.unpin(pinned);
}

/// A result arrived from the process that ran the task or call.
pub(crate) fn on_task_result(rt: &Arc<Runtime>, msg: TaskResult) {
    let outcome = msg.outcome.map(Encoded::from_bytes);
    if let Some(guard) = rt.actors.take_remote_call(msg.return_id) {
        guard.finish(outcome);
        return;
    }
    if let Some((_, (spec, _))) = rt.inflight.remove(&msg.return_id) {
        executor::owner_finish(rt, &spec, outcome);
        return;
    }
    tracing::debug!(task = %msg.task_id, "result of a task this process no longer tracks");
}

/// Answers another process's read of an object owned here, once the object is ready.
pub(crate) async fn on_get_object(rt: Arc<Runtime>, id: ObjectId, inline_max: u64) -> Fetched {
    match read_owned(rt, id).await {
        Stored::Value(b) if b.len() as u64 > inline_max => Fetched::TooLarge(b.len() as u64),
        v => Fetched::Here(v),
    }
}

async fn read_owned(rt: Arc<Runtime>, id: ObjectId) -> Stored {
    if !rt.refs.contains(id) {
        return Stored::Error(Error::ObjectLost {
            object: id.to_string(),
            reason: "its owner no longer holds it: every reference to it was dropped".into(),
        });
    }
    let (tx, rx) = flume::bounded(1);
    match rt.refs.lookup_or_wait(id, 0, &tx) {
        Lookup::Ready(v) => return v,
        Lookup::Waiting => {}
        Lookup::InStore => rt.store.fetch_into([(0, id)], tx),
    }
    match rx.recv_async().await {
        Ok((_, v)) => v,
        Err(_) => Stored::Error(Error::shutdown("reading an object from its owner")),
    }
}

/// Starts fetching objects owned by other processes: each value is sent on `tx` with its slot.
/// A failed fetch delivers `ObjectLost` naming the owner and why.
pub(crate) fn fetch_remote(
    net: &Arc<Transport>,
    executor: &tokio::runtime::Handle,
    wants: Vec<(usize, RawRef)>,
    tx: flume::Sender<(u32, Stored)>,
) {
    let (otx, orx) = flume::unbounded();
    let n = wants.len();
    fetch_remote_upto(net, executor, wants, u64::MAX, otx);
    executor.spawn(async move {
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

/// Like [`fetch_remote`], but values above `inline_max` bytes are not sent: their slot gets
/// `None` once the object is ready.
pub(crate) fn fetch_remote_upto(
    net: &Arc<Transport>,
    executor: &tokio::runtime::Handle,
    wants: Vec<(usize, RawRef)>,
    inline_max: u64,
    tx: flume::Sender<(u32, Option<Stored>)>,
) {
    for (slot, raw) in wants {
        let Some(addr) = raw.owner.addr else {
            let _ = tx.send((
                slot as u32,
                Some(Stored::Error(Error::ObjectLost {
                    object: raw.id.to_string(),
                    reason: "its owner is an embedded runtime in another process".into(),
                })),
            ));
            continue;
        };
        let remote = Remote {
            net: net.clone(),
            addr,
        };
        let tx = tx.clone();
        executor.spawn(async move {
            let msg = GetObject {
                id: raw.id,
                inline_max,
            };
            let v = match remote.request(msg).await {
                Ok(Fetched::Here(v)) => Some(v),
                Ok(Fetched::TooLarge(_)) => None,
                Err(e) => Some(Stored::Error(Error::ObjectLost {
                    object: raw.id.to_string(),
                    reason: format!("its owner at {addr} could not be reached: {e}"),
                })),
            };
            let _ = tx.send((slot as u32, v));
        });
    }
}

/// Whether an object's owner is this process (or an embedded runtime, which is every owner).
pub(crate) fn owned_here(rt: &Runtime, raw: &RawRef) -> bool {
    match (&rt.net, raw.owner.addr) {
        (Some(net), Some(addr)) => addr == net.local_addr(),
        _ => true,
    }
}

/// Sends each `(slot, id)` of an object owned in this process to `tx`: a small value from the
/// owner's table at once, a pending one when it completes, a large one from the store.
pub(crate) fn fetch_owned(
    refs: &RefTable,
    store: &StoreClient,
    wants: impl IntoIterator<Item = (usize, ObjectId)>,
    tx: &FetchReply,
) {
    let mut via_store = Vec::new();
    for (slot, id) in wants {
        match refs.lookup_or_wait(id, slot as u32, tx) {
            Lookup::Ready(v) => {
                let _ = tx.send((slot as u32, v));
            }
            Lookup::Waiting => {}
            Lookup::InStore => via_store.push((slot, id)),
        }
    }
    if !via_store.is_empty() {
        store.fetch_into(via_store, tx.clone());
    }
}

/// Sends each `(slot, ref)` to `tx`: from the owner's table or local store when owned here,
/// else from the owner's process.
pub(crate) fn fetch_into(
    rt: &Runtime,
    wants: Vec<(usize, RawRef)>,
    tx: flume::Sender<(u32, Stored)>,
) {
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for (slot, raw) in wants {
        if owned_here(rt, &raw) {
            local.push((slot, raw.id));
        } else {
            remote.push((slot, raw));
        }
    }
    if !local.is_empty() {
        fetch_owned(&rt.refs, &rt.store, local, &tx);
    }
    if let (Some(net), false) = (&rt.net, remote.is_empty()) {
        fetch_remote(net, &rt.executor, remote, tx);
    }
}
