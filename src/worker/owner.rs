//! The owner's side of this process: the messages an owner of objects takes, wherever they come
//! from (this process or another).
//!
//! Results of the tasks and actor calls it submitted arrive ([`TaskResult`]): it retries a task
//! whose failure allows it, else stores the outcome, takes its own references to the refs inside
//! it and lets the arguments' pins go. Other processes read its objects ([`GetObject`]), start
//! and stop borrowing them ([`Borrow`]), and the cluster tells it of dead nodes and actors, and
//! of the placement groups it waits for or created.

use crate::error::Error;
use crate::ids::{NodeId, ObjectId};
use crate::objects::{pull, read};
use crate::protocol::owner::*;
use crate::protocol::refs::{RawRef, Stored};
use crate::protocol::task::TaskSpec;
use crate::supervise;
use crate::transport::net::{Net, Reply, Wire};
use crate::worker::placement::ready_value;
use crate::worker::runtime::Runtime;
use bytes::Bytes;
use std::sync::{Arc, Weak};

const OWNER: &str = "object owner";

/// Registers this process's owner handlers in `net`.
pub(crate) fn serve(net: &Arc<Net>, rt: &Arc<Runtime>) -> Result<(), Error> {
    fn direct<M: Wire<Result = ()>>(
        net: &Net,
        rt: &Arc<Runtime>,
        f: fn(&Arc<Runtime>, M),
    ) -> Result<(), Error> {
        let (tell, ask) = (Arc::downgrade(rt), Arc::downgrade(rt));
        net.serve::<M>(
            move |m| {
                if let Some(rt) = tell.upgrade() {
                    let _h = supervise::handling_in::<M>(OWNER);
                    f(&rt, m);
                }
            },
            move |m| -> Reply<M> {
                if let Some(rt) = ask.upgrade() {
                    let _h = supervise::handling_in::<M>(OWNER);
                    f(&rt, m);
                }
                Box::pin(async { Ok(()) })
            },
        )
    }
    direct::<TaskResult>(net, rt, on_task_result)?;
    direct::<Borrow>(net, rt, |rt, m| {
        for (id, add) in m.changes {
            rt.refs.borrower(id, m.from, add);
        }
    })?;
    direct::<NodeDied>(net, rt, on_node_died)?;
    direct::<TasksPlaced>(net, rt, on_tasks_placed)?;
    direct::<TaskStarted>(net, rt, |rt, m| {
        rt.with_leases(|l, now| l.started(m.task_id, now))
    })?;
    direct::<TaskQueued>(net, rt, |rt, m| {
        rt.leases.lock().queued(m.task_id, m.attempt, m.raylet)
    })?;
    direct::<Unstarted>(net, rt, |rt, m| {
        let specs = m
            .returns
            .iter()
            .filter_map(|r| rt.inflight.remove(r).map(|(_, (spec, _))| spec))
            .collect();
        rt.with_leases(|l, now| l.unstarted(m.lease, specs, now))
    })?;
    direct::<Infeasible>(net, rt, |rt, m| rt.warn_infeasible(m))?;
    net.serve::<WorkerOutput>(
        |m| {
            // Nodes ask (below); a one-way message is printed if there is room, else dropped.
            let _ = printer().try_send((m, None));
        },
        |m| -> Reply<WorkerOutput> {
            // Answered once the batch is printed: a node sends its next batch only then, so a
            // slow terminal slows the printing worker, not this process's messages.
            let printer = printer();
            Box::pin(async move {
                let (done, printed) = tokio::sync::oneshot::channel();
                if printer.send_async((m, Some(done))).await.is_ok() {
                    let _ = printed.await;
                }
                Ok(())
            })
        },
    )?;
    direct::<GroupReady>(net, rt, |rt, m| {
        rt.refs
            .complete(m.object, ready_value(m.outcome), Vec::new());
    })?;
    direct::<GroupState>(net, rt, |rt, m| rt.groups.reported(m.id, m.state))?;
    direct::<ActorDead>(net, rt, |rt, m| {
        rt.actors.actor_died(m.actor_id, m.error, m.restarting)
    })?;
    let weak: Weak<Runtime> = Arc::downgrade(rt);
    net.serve::<ListObjects>(
        |_| tracing::warn!("a listing of objects sent as a one-way message was ignored"),
        move |m| -> Reply<ListObjects> {
            let rt = weak.upgrade();
            Box::pin(async move {
                let rt = rt.ok_or_else(|| Error::shutdown("listing objects"))?;
                let (node, job) = (rt.node_id, rt.job_id);
                let table = rt.refs.clone();
                drop(rt);
                Ok(ObjectsHeld {
                    node,
                    job,
                    pid: std::process::id(),
                    objects: table.held(m.limit as usize).await,
                    store: table.store_usage().await,
                })
            })
        },
    )?;
    let weak: Weak<Runtime> = Arc::downgrade(rt);
    net.serve::<GetObject>(
        |_| tracing::warn!("a read of an object sent as a one-way message was ignored"),
        move |m| -> Reply<GetObject> {
            let rt = weak.upgrade();
            Box::pin(async move {
                let rt = rt.ok_or_else(|| Error::shutdown("reading an object from its owner"))?;
                let table = rt.refs.clone();
                drop(rt);
                Ok(read::answer_get(table, m).await)
            })
        },
    )?;
    let weak: Weak<Runtime> = Arc::downgrade(rt);
    net.serve::<ReadCopy>(
        |_| tracing::warn!("a read of a kept copy sent as a one-way message was ignored"),
        move |m| -> Reply<ReadCopy> {
            let rt = weak.upgrade();
            Box::pin(async move {
                let rt = rt.ok_or_else(|| Error::shutdown("reading a kept copy"))?;
                let store = rt.refs.store().clone();
                drop(rt);
                let value = pull::slice(m.id, read::read_copy(&store, m.id).await, m.range);
                // A range is a chunk of a pull from several holders: sent, never mapped.
                let share = m.share.filter(|_| m.range.is_none());
                Ok(store.answer(m.id, value, share))
            })
        },
    )?;
    direct::<FreeCopies>(net, rt, |rt, m| rt.refs.free_copies(&m.ids))?;
    direct::<CopyLost>(net, rt, |rt, m| rebuild(rt, m.id, m.copy, &m.reason))?;
    direct::<CopyHere>(net, rt, |rt, m| rt.refs.copy_at(m.id, m.at, m.node))?;
    direct::<KeepCopy>(net, rt, |rt, m| rt.refs.keep_for(m.id, m.owner))?;
    direct::<CopyGone>(net, rt, |rt, m| rt.refs.copy_gone(m.id, m.at))?;
    // Copies of borrowed objects this process's store evicted: their owners hear of it.
    let evicted = rt.refs.store().evictions();
    let weak: Weak<Runtime> = Arc::downgrade(rt);
    net.runtime().spawn(async move {
        while let Ok(id) = evicted.recv_async().await {
            let Some(rt) = weak.upgrade() else { break };
            rt.refs.copy_evicted(id);
        }
    });
    // Objects this process's own reads could not pull: rebuilt the same way.
    let lost = rt.refs.store().lost_copies();
    let weak: Weak<Runtime> = Arc::downgrade(rt);
    net.runtime().spawn(async move {
        while let Ok((id, copy, reason)) = lost.recv_async().await {
            let Some(rt) = weak.upgrade() else { break };
            rebuild(&rt, id, copy, &reason);
        }
    });
    let weak: Weak<Runtime> = Arc::downgrade(rt);
    net.on_lost(Arc::new(move |peer, reason| {
        if let Some(rt) = weak.upgrade() {
            let _h = supervise::handling_in::<PeerGone>(OWNER);
            rt.actors.peer_lost(peer, reason);
            rt.refs.drop_borrower(peer);
            rt.refs.owner_gone(peer);
            rt.refs.copies_gone(None, Some(peer));
            let (running, steps) = rt
                .leases
                .lock()
                .worker_lost(peer, std::time::Instant::now());
            rt.carry_out(steps);
            fail_running(
                &rt,
                running,
                &format!("the connection to its worker was lost: {reason}"),
            );
        }
    }));
    Ok(())
}

/// Marks the handling of a lost connection, for the supervisor's report.
struct PeerGone;

/// A result arrived from the process that ran the task or call.
fn on_task_result(rt: &Arc<Runtime>, msg: TaskResult) {
    if let Some(actor_id) = msg.actor {
        // Refs inside are adopted before the value is visible, and let go again if the call
        // was not awaited any more (failed already, or the caller's table forgot the actor).
        rt.refs.adopt(&msg.contains);
        let contains: Vec<ObjectId> = msg.contains.iter().map(|r| r.id).collect();
        let outcome = msg.outcome.map(Stored::Value);
        if !rt
            .actors
            .finish(actor_id, msg.return_id, outcome, contains.clone(), msg.held)
        {
            rt.refs.unpin(&contains);
            if let Some(copy) = msg.held {
                // Nobody will read the copy its maker keeps.
                rt.net
                    .target::<crate::protocol::svc::Owner>(copy.holder)
                    .do_send(FreeCopies {
                        ids: vec![msg.return_id],
                    });
            }
            tracing::debug!(call = %msg.task_id, "result of a call this process no longer awaits");
        }
        return;
    }
    if let Some((_, (spec, _))) = rt.inflight.remove(&msg.return_id) {
        owner_finish(rt, &spec, msg.outcome, &msg.contains, msg.lease, msg.held);
        return;
    }
    if let Some(lease) = msg.lease {
        // A result that came too late still frees (or returns) its slot.
        rt.with_leases(|l, now| l.finished(msg.task_id, Some(lease), now));
    } else if let Err(Error::WorkerDied { reason, .. }) = &msg.outcome {
        // The raylet reports the task that became a lease: its slot died with its worker.
        let (running, steps) = rt
            .leases
            .lock()
            .lost(msg.task_id, std::time::Instant::now());
        rt.carry_out(steps);
        fail_running(rt, running, reason);
    }
    tracing::debug!(task = %msg.task_id, "result of a task this process no longer tracks");
}

/// Fails (or retries) the tasks that were running in leased slots that are gone.
fn fail_running(rt: &Arc<Runtime>, returns: Vec<ObjectId>, reason: &str) {
    for id in returns {
        if let Some((_, (spec, _))) = rt.inflight.remove(&id) {
            tracing::warn!(task = %spec.task_id, "task lost with its leased worker slot");
            let error = Error::WorkerDied {
                function: spec.function.path.to_string(),
                reason: reason.to_string(),
            };
            // Its process cannot say so: the owner does.
            crate::events::ended(spec.task_id, spec.attempt, Some(&error));
            owner_finish(rt, &spec, Err(error), &[], None, None);
        }
    }
}

/// The owner's side of a finished attempt: its slot (`lease`, when it is leased to this owner
/// now) takes the next task, then the attempt is retried, or its outcome stored (or, `held`,
/// where the process that made it keeps it) and its arguments unpinned.
pub(crate) fn owner_finish(
    rt: &Arc<Runtime>,
    spec: &Arc<TaskSpec>,
    outcome: Result<Bytes, Error>,
    contains: &[RawRef],
    lease: Option<LeaseGrant>,
    held: Option<HeldCopy>,
) {
    if spec.leasable() {
        rt.with_leases(|l, now| l.finished(spec.task_id, lease, now));
    }
    let retry = match &outcome {
        Err(Error::Task { .. }) => spec.retry_exceptions && spec.may_retry(),
        Err(Error::WorkerDied { .. }) => spec.may_retry() && spec.is_normal(),
        _ => false,
    };
    if retry {
        let mut next = (**spec).clone();
        next.attempt += 1;
        tracing::debug!(task = %spec.task_id, attempt = next.attempt, "retrying task");
        rt.submit(Arc::new(next));
        return;
    }
    // The sender keeps its own references to what the value contains until this returns.
    rt.refs.adopt(contains);
    if let (Ok(_), Some(copy)) = (&outcome, held) {
        // Its lineage (and its arguments' pins) stay while the object lives: a lost copy is
        // rebuilt by running the task again.
        rt.refs.keep_lineage(spec.return_id, spec.clone());
        let ids = contains.iter().map(|r| r.id).collect();
        if !rt.refs.complete_held(spec.return_id, copy, ids) && rt.refs.drop_lineage(spec.return_id)
        {
            rt.refs.unpin(&spec.pinned);
        }
        return;
    }
    // A rebuilt object that came back small (or failed) needs its lineage no more; its pins
    // are let go below.
    rt.refs.drop_lineage(spec.return_id);
    let value = match outcome {
        Ok(b) => Stored::Value(b),
        Err(e) => Stored::Error(e),
    };
    rt.refs.complete(
        spec.return_id,
        value,
        contains.iter().map(|r| r.id).collect(),
    );
    rt.refs.unpin(&spec.pinned);
}

/// Records where the raylets queued this owner's tasks.
fn on_tasks_placed(rt: &Arc<Runtime>, msg: TasksPlaced) {
    for id in msg.returns {
        // A result may have arrived first: only tasks still in flight are recorded.
        if let Some(mut e) = rt.inflight.get_mut(&id) {
            e.1 = Some(msg.node);
        }
    }
    // The node may have died before this report arrived.
    let dead = rt.dead_nodes.lock().get(&msg.node).cloned();
    if let Some(reason) = dead {
        fail_lost(rt, msg.node, &reason);
    }
}

/// Fails (or retries, per `max_retries`) every task in flight on a node that died.
fn on_node_died(rt: &Arc<Runtime>, msg: NodeDied) {
    {
        let mut dead = rt.dead_nodes.lock();
        dead.insert(msg.node, msg.reason.clone());
        // Bounded by what churn a cluster sees; the oldest reasons matter least.
        if dead.len() > 10_000 {
            let stale: Vec<NodeId> = dead.keys().take(dead.len() - 10_000).copied().collect();
            for n in stale {
                dead.remove(&n);
            }
        }
    }
    // What it kept for this process is lost: read from another copy, else rebuilt from
    // lineage, or failed.
    rt.refs.copies_gone(Some(msg.node), None);
    for (id, copy) in rt.refs.kept_on(msg.node) {
        rebuild(rt, id, copy, &format!("its node died: {}", msg.reason));
    }
    // Its slots are gone; the tasks running there are failed below with the rest.
    let (_, steps) = rt
        .leases
        .lock()
        .node_died(msg.node, std::time::Instant::now());
    rt.carry_out(steps);
    fail_lost(rt, msg.node, &msg.reason);
}

/// Rebuilds object `id`, whose copy kept by `copy.holder` is lost (`why`), by running the task
/// that made it again within its `max_retries` (Ray's lineage reconstruction); its arguments,
/// pinned by the lineage, are read (and rebuilt, if lost too) as for any task. An object with
/// no lineage or no retries left fails with `ObjectLost` saying why.
pub(crate) fn rebuild(rt: &Arc<Runtime>, id: ObjectId, copy: HeldCopy, why: &str) {
    if let Some(next) = rt.refs.move_kept(id, copy) {
        tracing::info!(object = %id, lost = %copy.holder, node = %next.node,
            "a lost copy is replaced by another process's copy ({why})");
        return;
    }
    let Some(lineage) = rt.refs.begin_rebuild(id, copy) else {
        return;
    };
    let lost = |reason: String| Error::ObjectLost {
        object: id.to_string(),
        reason,
    };
    match lineage {
        Some(spec) if spec.may_retry() => {
            let mut next = (*spec).clone();
            next.attempt += 1;
            tracing::info!(object = %id, task = %spec.task_id, attempt = next.attempt,
                node = %copy.node, "rebuilding a lost object by running its task again");
            rt.submit(Arc::new(next));
        }
        Some(spec) => rt.refs.fail_lost(
            id,
            lost(format!(
                "its only copy was kept on node {} ({}), lost ({why}), and the task that made \
                 it ({}) has no retries left to rebuild it (max_retries = {})",
                copy.node, copy.holder, spec.function.path, spec.max_retries
            )),
        ),
        // Kept results without lineage are those of actor calls.
        None => rt.refs.fail_lost(
            id,
            lost(format!(
                "its only copy was kept on node {} ({}), lost ({why}), and it was made by an \
                 actor call, which is not run again to rebuild it",
                copy.node, copy.holder
            )),
        ),
    }
}

/// Fails (or retries) the tasks in flight on a dead node.
fn fail_lost(rt: &Arc<Runtime>, node: NodeId, reason: &str) {
    let lost: Vec<ObjectId> = rt
        .inflight
        .iter()
        .filter(|e| e.value().1 == Some(node))
        .map(|e| *e.key())
        .collect();
    for id in lost {
        if let Some((_, (spec, _))) = rt.inflight.remove(&id) {
            tracing::warn!(task = %spec.task_id, node = %node, "task lost with its node");
            let error = Error::WorkerDied {
                function: spec.function.path.to_string(),
                reason: format!("its node {node} died: {reason}"),
            };
            crate::events::ended(spec.task_id, spec.attempt, Some(&error));
            owner_finish(rt, &spec, Err(error), &[], None, None);
        }
    }
}

/// Batches of output from this job's worker processes waiting to be printed.
const PRINT_QUEUE: usize = 64;

/// A batch to print, and whom to tell once it is printed.
type ToPrint = (WorkerOutput, Option<tokio::sync::oneshot::Sender<()>>);

/// Where this process's worker output goes to be printed: a thread of its own (started on first
/// use), so that a blocked stdout never stops the handling of messages.
fn printer() -> flume::Sender<ToPrint> {
    static PRINTER: std::sync::OnceLock<flume::Sender<ToPrint>> = std::sync::OnceLock::new();
    PRINTER
        .get_or_init(|| {
            let (tx, rx) = flume::bounded::<ToPrint>(PRINT_QUEUE);
            let started = std::thread::Builder::new()
                .name("lumen-output".into())
                .spawn(move || {
                    for (m, done) in rx.iter() {
                        crate::protocol::output::print(m.stderr, m.pid, m.node, &m.lines);
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                    }
                });
            if let Err(e) = started {
                tracing::warn!("cannot start the thread that prints worker output: {e}");
            }
            tx
        })
        .clone()
}
