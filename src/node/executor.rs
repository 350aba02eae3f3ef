//! Running task bodies, and handing outcomes to the owner.
//!
//! Shared by the worker actor (sync tasks), the event loop (async tasks) and actor hosts: build
//! the argument list (inline values and resolved refs; a failed upstream object fails this task
//! with the same error), run the registered function with panics caught, and finish: the owner
//! either resubmits the task (retries left and the failure is retryable) or stores the outcome and
//! unpins the arguments.

use crate::api::context::{ExecContext, WithExec};
use crate::error::Error;
use crate::ids::NodeId;
use crate::node::raylet::{Raylet, TaskDone};
use crate::objects::object_ref::RawRef;
use crate::objects::owner;
use crate::objects::ownership::Lookup;
use crate::objects::store::Stored;
use crate::registry::{self, Args, Invoke, Outcome};
use crate::resources::Grant;
use crate::runtime::{self, Runtime};
use crate::task::{TaskArg, TaskSpec};
use crate::transport::wire::Target;
use bytes::Bytes;
use futures::FutureExt;
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// A task whose top-level ref arguments have been fetched.
pub(crate) struct Ready {
    pub(crate) spec: Arc<TaskSpec>,
    /// The value of each ref argument, by argument index (`None` for inline values).
    pub(crate) resolved: Vec<Option<Stored>>,
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

/// Fills in where a user error happened.
pub(crate) fn locate(error: Error, function: &str, node: NodeId) -> Error {
    match error {
        Error::Task {
            function: f,
            message,
            node: n,
        } if f.is_empty() || n.is_empty() => Error::Task {
            function: if f.is_empty() {
                function.to_string()
            } else {
                f
            },
            message,
            node: if n.is_empty() { node.to_string() } else { n },
        },
        other => other,
    }
}

/// The argument bytes of a task, in order. A failed upstream object is this task's failure.
pub(crate) fn build_args(
    args: &[TaskArg],
    resolved: Vec<Option<Stored>>,
) -> Result<Vec<Bytes>, Error> {
    let mut resolved = resolved.into_iter();
    let mut out = Vec::with_capacity(args.len());
    for arg in args {
        let value = resolved.next().flatten();
        match (arg, value) {
            (TaskArg::Value(b), _) => out.push(b.clone()),
            (TaskArg::Ref(_), Some(Stored::Value(b))) => out.push(b),
            (TaskArg::Ref(_), Some(Stored::Error(e))) => return Err(e),
            (TaskArg::Ref(r), None) => {
                return Err(Error::ObjectLost {
                    object: r.id.to_string(),
                    reason: "an argument was not resolved before the task ran".into(),
                })
            }
        }
    }
    Ok(out)
}

fn missing_refs(args: &[TaskArg], resolved: &[Option<Stored>]) -> Vec<(usize, RawRef)> {
    args.iter()
        .enumerate()
        .filter_map(|(i, a)| match a {
            TaskArg::Ref(r) if resolved.get(i).is_none_or(|v| v.is_none()) => Some((i, r.clone())),
            _ => None,
        })
        .collect()
}

/// Arguments still to fetch: the channel their values arrive on, and how many.
type Pending = (flume::Receiver<(u32, Stored)>, usize);

/// Starts fetching the ref arguments the raylet left unresolved (large values, on a cluster)
/// from their owners; `None` when nothing is missing.
fn start_missing(
    args: &[TaskArg],
    resolved: &mut Vec<Option<Stored>>,
) -> Result<Option<Pending>, Error> {
    let missing = missing_refs(args, resolved);
    if missing.is_empty() {
        return Ok(None);
    }
    resolved.resize(args.len(), None);
    let rt = runtime::current()?;
    let (tx, rx) = flume::unbounded();
    let n = missing.len();
    owner::fetch_into(&rt, missing, tx);
    Ok(Some((rx, n)))
}

fn lost_args(_: flume::RecvError) -> Error {
    Error::shutdown("fetching a task's arguments")
}

/// Fetches the ref arguments the raylet left unresolved, blocking this thread.
pub(crate) fn complete_blocking(
    args: &[TaskArg],
    mut resolved: Vec<Option<Stored>>,
) -> Result<Vec<Option<Stored>>, Error> {
    if let Some((rx, n)) = start_missing(args, &mut resolved)? {
        for _ in 0..n {
            let (i, v) = rx.recv().map_err(lost_args)?;
            resolved[i as usize] = Some(v);
        }
    }
    Ok(resolved)
}

/// [`complete_blocking`] without blocking a thread.
pub(crate) async fn complete_async(
    args: &[TaskArg],
    mut resolved: Vec<Option<Stored>>,
) -> Result<Vec<Option<Stored>>, Error> {
    if let Some((rx, n)) = start_missing(args, &mut resolved)? {
        for _ in 0..n {
            let (i, v) = rx.recv_async().await.map_err(lost_args)?;
            resolved[i as usize] = Some(v);
        }
    }
    Ok(resolved)
}

/// Resolves ref arguments by fetching them (blocking), for callers that did not pre-resolve.
pub(crate) fn fetch_args_blocking(args: &[TaskArg]) -> Result<Vec<Bytes>, Error> {
    let resolved = fetch_resolution(args)?;
    match resolved {
        None => build_args(args, Vec::new()),
        Some((rx, n, mut slots)) => {
            for _ in 0..n {
                let (i, v) = rx
                    .recv()
                    .map_err(|_| Error::shutdown("resolving the arguments of an actor call"))?;
                slots[i as usize] = Some(v);
            }
            build_args(args, slots)
        }
    }
}

/// Resolves ref arguments by fetching them, without blocking a thread.
pub(crate) async fn fetch_args_async(args: &[TaskArg]) -> Result<Vec<Bytes>, Error> {
    match fetch_resolution(args)? {
        None => build_args(args, Vec::new()),
        Some((rx, n, mut slots)) => {
            for _ in 0..n {
                let (i, v) = rx
                    .recv_async()
                    .await
                    .map_err(|_| Error::shutdown("resolving the arguments of an actor call"))?;
                slots[i as usize] = Some(v);
            }
            build_args(args, slots)
        }
    }
}

type Resolution = (flume::Receiver<(u32, Stored)>, usize, Vec<Option<Stored>>);

/// Starts resolving the ref arguments: from the owner's table when this process owns them (small
/// values are there already), else from the store. Returns the channel, how many replies are
/// still to come, and the slots filled so far.
fn fetch_resolution(args: &[TaskArg]) -> Result<Option<Resolution>, Error> {
    if !args.iter().any(|a| matches!(a, TaskArg::Ref(_))) {
        return Ok(None);
    }
    let rt = runtime::current()?;
    let (tx, rx) = flume::unbounded();
    let mut slots = vec![None; args.len()];
    let mut pending = 0;
    let mut via_store = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let TaskArg::Ref(r) = a else { continue };
        match rt.refs.lookup_or_wait(r.id, i as u32, &tx) {
            Lookup::Ready(v) => slots[i] = Some(v),
            Lookup::Waiting => pending += 1,
            Lookup::InStore => via_store.push((i, r.clone())),
        }
    }
    pending += via_store.len();
    if !via_store.is_empty() {
        owner::fetch_into(&rt, via_store, tx);
    }
    Ok(Some((rx, pending, slots)))
}

/// Runs a sync task to completion on this thread.
pub(crate) fn run_sync(spec: &TaskSpec, resolved: Vec<Option<Stored>>, node: NodeId) -> Outcome {
    let path = &spec.function.path;
    let f = registry::function(spec.function.id, path)?;
    let resolved = complete_blocking(&spec.args, resolved)?;
    let args = build_args(&spec.args, resolved)?;
    let Invoke::Sync(invoke) = f.invoke else {
        return Err(Error::invalid(format!(
            "{path} is async and cannot run on a worker thread"
        )));
    };
    match std::panic::catch_unwind(AssertUnwindSafe(|| invoke(Args::new(args, f.path)))) {
        Ok(outcome) => outcome.map_err(|e| locate(e, path, node)),
        Err(p) => Err(Error::Task {
            function: path.to_string(),
            message: panic_message(p),
            node: node.to_string(),
        }),
    }
}

/// Runs an async task on the node's event loop; tells the raylet when it is done.
pub(crate) fn spawn_async(
    executor: &tokio::runtime::Handle,
    ready: Ready,
    grant: Grant,
    raylet: Target<Raylet>,
    node: NodeId,
) {
    let spec = ready.spec;
    let ctx = ExecContext {
        task_id: Some(spec.task_id),
        actor_id: None,
        gpu_ids: grant.gpu_ids(),
        lends_cpu: false,
        in_async: true,
        captured: crate::api::context::captured_by(&spec.strategy),
    };
    executor.spawn(async move {
        let path = spec.function.path.to_string();
        let resolved = complete_async(&spec.args, ready.resolved).await;
        let started = registry::function(spec.function.id, &path).and_then(|f| {
            let args = build_args(&spec.args, resolved?)?;
            match f.invoke {
                Invoke::Async(invoke) => Ok(invoke(Args::new(args, f.path))),
                Invoke::Sync(_) => Err(Error::invalid(format!("{path} is not async"))),
            }
        });
        let outcome = match started {
            Ok(fut) => match WithExec::new(ctx, AssertUnwindSafe(fut).catch_unwind()).await {
                Ok(outcome) => outcome.map_err(|e| locate(e, &path, node)),
                Err(p) => Err(Error::Task {
                    function: path.clone(),
                    message: panic_message(p),
                    node: node.to_string(),
                }),
            },
            Err(e) => Err(e),
        };
        finish(&spec, outcome);
        raylet.do_send(TaskDone {
            task_id: spec.task_id,
        });
    });
}

/// Hands a finished attempt to the task's owner: this process (retry, or store the outcome and
/// unpin the arguments), or the owner's process over the transport.
pub(crate) fn finish(spec: &Arc<TaskSpec>, outcome: Outcome) {
    runtime::with_current(|rt| match (spec.owner.addr, &rt.net) {
        (Some(addr), Some(net)) if addr != net.local_addr() => {
            owner::send_result(rt, net, addr, spec.task_id, spec.return_id, outcome);
        }
        _ => owner_finish(rt, spec, outcome),
    });
}

/// The owner's side of a finished attempt: retry, or store the outcome and unpin the arguments.
pub(crate) fn owner_finish(rt: &Arc<Runtime>, spec: &Arc<TaskSpec>, outcome: Outcome) {
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
    owner::store_result(rt, spec.return_id, &spec.pinned, outcome);
}
