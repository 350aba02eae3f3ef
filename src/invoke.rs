//! Running the body of a task, actor constructor or actor method, and handing its outcome to
//! the owner of its result.
//!
//! Shared by every executor (worker threads, the event loop, actor hosts and their concurrency
//! groups): build the argument list (inline values and resolved refs; a failed upstream object
//! fails this task with the same error, and refs the raylet left unresolved are fetched here),
//! run the registered function with panics caught, locate user errors (which function, which
//! node), and send the outcome to its owner wherever that is.

use crate::context::{ExecContext, WithExec};
use crate::error::Error;
use crate::events;
use crate::ids::{ActorId, NodeId, ObjectId, TaskId};
use crate::objects::ownership;
use crate::objects::read;
use crate::protocol::events::TaskType;
use crate::protocol::output;
use crate::protocol::owner::{HeldCopy, TaskResult};
use crate::protocol::refs::{RawRef, Stored};
use crate::protocol::svc;
use crate::protocol::task::{TaskArg, TaskSpec};
use crate::registry::{self, ActorState, Args, Invoke, Outcome};
use crate::transport::net::Net;
use bytes::Bytes;
use futures::FutureExt;
use std::any::Any;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tracing::Instrument;

/// The text of a panic payload.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    // Where it happened, as the panic hook saw it on this thread (the thread that caught it).
    let at = crate::supervise::take_panic_location()
        .map(|at| format!(" at {at}"))
        .unwrap_or_default();
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked{at}: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked{at}: {s}")
    } else {
        format!("panicked{at}")
    }
}

/// A panic in `path` on `node`, as a task error.
pub(crate) fn panic_error(path: &str, p: Box<dyn Any + Send>, node: NodeId) -> Error {
    Error::Task {
        function: path.to_string(),
        message: panic_message(p),
        node: node.to_string(),
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

/// Arguments still to fetch: the channel their values arrive on, and how many.
type Pending = (flume::Receiver<(u32, Stored)>, usize);

/// Starts fetching the ref arguments not resolved yet (values the raylet left for the executor
/// to fetch itself, or every ref of an actor call); `None` when nothing is missing.
fn start_missing(
    args: &[TaskArg],
    resolved: &mut Vec<Option<Stored>>,
) -> Result<Option<Pending>, Error> {
    let missing: Vec<(usize, RawRef)> = args
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a {
            TaskArg::Ref(r) if resolved.get(i).is_none_or(|v| v.is_none()) => Some((i, r.clone())),
            _ => None,
        })
        .collect();
    if missing.is_empty() {
        return Ok(None);
    }
    resolved.resize(args.len(), None);
    let (tx, rx) = crate::objects::reply::channel();
    let n = missing.len();
    ownership::with_current(|t| read::fetch_into(t, missing, &tx)).ok_or(Error::NotInitialized)?;
    Ok(Some((rx, n)))
}

fn lost_args(_: flume::RecvError) -> Error {
    Error::shutdown("fetching a task's arguments")
}

/// Fetches the ref arguments not resolved yet, blocking this thread.
pub(crate) fn resolve_blocking(
    args: &[TaskArg],
    mut resolved: Vec<Option<Stored>>,
) -> Result<Vec<Bytes>, Error> {
    if let Some((rx, n)) = start_missing(args, &mut resolved)? {
        for _ in 0..n {
            let (i, v) = rx.recv().map_err(lost_args)?;
            resolved[i as usize] = Some(v);
        }
    }
    build_args(args, resolved)
}

/// [`resolve_blocking`] without blocking a thread.
pub(crate) async fn resolve_async(
    args: &[TaskArg],
    mut resolved: Vec<Option<Stored>>,
) -> Result<Vec<Bytes>, Error> {
    if let Some((rx, n)) = start_missing(args, &mut resolved)? {
        for _ in 0..n {
            let (i, v) = rx.recv_async().await.map_err(lost_args)?;
            resolved[i as usize] = Some(v);
        }
    }
    build_args(args, resolved)
}

/// Whether this process writes name lines for the node reading its output (see
/// `protocol::output`), read once.
fn announcing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(output::ANNOUNCE_ENV).is_some())
}

/// The name this process announced last.
static ANNOUNCED: parking_lot::Mutex<&'static str> = parking_lot::Mutex::new("");

/// Tells the node reading this process's output that the function (or, for a `method`, the
/// actor type) at `path` runs from now on, on both streams, if that is news.
fn announce(path: &'static str, method: bool) {
    if !announcing() {
        return;
    }
    let name = output::short_name(path, method);
    let mut last = ANNOUNCED.lock();
    if *last == name {
        return;
    }
    *last = name;
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{}{name}", output::NAME_MARK);
    let _ = writeln!(std::io::stderr().lock(), "{}{name}", output::NAME_MARK);
}

/// Runs a sync task to completion on this thread.
pub(crate) fn run_sync(spec: &TaskSpec, resolved: Vec<Option<Stored>>, node: NodeId) -> Outcome {
    let span = task_span(spec, node);
    let _entered = span.enter();
    let outcome = run_sync_inner(spec, resolved, node);
    events::ended(spec.task_id, spec.attempt, outcome.as_ref().err());
    outcome
}

fn run_sync_inner(spec: &TaskSpec, resolved: Vec<Option<Stored>>, node: NodeId) -> Outcome {
    let path = &spec.function.path;
    let f = registry::function(spec.function.id, path)?;
    announce(f.path, false);
    let waits = waits_for_args(spec, &resolved);
    if waits {
        events::waiting_for_args(spec.task_id, spec.attempt, node);
    }
    let args = resolve_blocking(&spec.args, resolved)?;
    running(spec, node, f.path);
    let Invoke::Sync(invoke) = f.invoke else {
        return Err(Error::invalid(format!(
            "{path} is async and cannot run on a worker thread"
        )));
    };
    match std::panic::catch_unwind(AssertUnwindSafe(|| invoke(Args::new(args, f.path)))) {
        Ok(outcome) => outcome.map_err(|e| locate(e, path, node)),
        Err(p) => Err(panic_error(path, p, node)),
    }
}

/// The span a task runs in: its id, attempt, job and node (debug level: free unless enabled,
/// for example with `RUST_LOG=lumen=debug` on a node).
fn task_span(spec: &TaskSpec, node: NodeId) -> tracing::Span {
    tracing::debug_span!("task", task = %spec.task_id, attempt = spec.attempt,
        job = %spec.job_id, node = %node, function = %spec.function.path)
}

/// Records that the task `spec` (the function at `path`) starts running on `node`.
fn running(spec: &TaskSpec, node: NodeId, path: &'static str) {
    events::running(
        spec.task_id,
        spec.attempt,
        node,
        Cow::Borrowed(path),
        TaskType::Normal,
    );
}

/// Whether some ref argument of `spec` is not in hand yet (`resolved` holds those that are).
fn waits_for_args(spec: &TaskSpec, resolved: &[Option<Stored>]) -> bool {
    spec.args
        .iter()
        .enumerate()
        .any(|(i, a)| matches!(a, TaskArg::Ref(_)) && resolved.get(i).is_none_or(Option::is_none))
}

/// Runs an async task inside `ctx`.
pub(crate) async fn run_async(
    spec: Arc<TaskSpec>,
    resolved: Vec<Option<Stored>>,
    node: NodeId,
    ctx: ExecContext,
) -> Outcome {
    let span = task_span(&spec, node);
    run_async_inner(spec, resolved, node, ctx)
        .instrument(span)
        .await
}

async fn run_async_inner(
    spec: Arc<TaskSpec>,
    resolved: Vec<Option<Stored>>,
    node: NodeId,
    ctx: ExecContext,
) -> Outcome {
    let path = spec.function.path.to_string();
    if waits_for_args(&spec, &resolved) {
        events::waiting_for_args(spec.task_id, spec.attempt, node);
    }
    let args = resolve_async(&spec.args, resolved).await;
    let started = registry::function(spec.function.id, &path).and_then(|f| {
        let args = args?;
        announce(f.path, false);
        running(&spec, node, f.path);
        match f.invoke {
            Invoke::Async(invoke) => Ok(invoke(Args::new(args, f.path))),
            Invoke::Sync(_) => Err(Error::invalid(format!("{path} is not async"))),
        }
    });
    let outcome = match started {
        Ok(fut) => match WithExec::new(ctx, AssertUnwindSafe(fut).catch_unwind()).await {
            Ok(outcome) => outcome.map_err(|e| locate(e, &path, node)),
            Err(p) => Err(panic_error(&path, p, node)),
        },
        Err(e) => Err(e),
    };
    events::ended(spec.task_id, spec.attempt, outcome.as_ref().err());
    outcome
}

/// Runs a sync actor method with its decoded arguments, panics caught.
pub(crate) fn call_sync(
    f: fn(&ActorState, Args) -> Outcome,
    state: &ActorState,
    args: Vec<Bytes>,
    path: &'static str,
    node: NodeId,
) -> Outcome {
    announce(path, true);
    std::panic::catch_unwind(AssertUnwindSafe(|| f(state, Args::new(args, path))))
        .unwrap_or_else(|p| Err(panic_error(path, p, node)))
}

/// Announces an async actor method about to run (see [`announce`]).
pub(crate) fn announce_method(path: &'static str) {
    announce(path, true);
}

/// Sends the outcome of a task or actor call (`actor` names the actor of a call) to its owner
/// (the process at `owner`). Refs inside the value stay pinned here until the owner has taken
/// its own references to them.
pub(crate) fn send_result(
    net: &Arc<Net>,
    owner: SocketAddr,
    task_id: TaskId,
    return_id: ObjectId,
    actor: Option<ActorId>,
    outcome: Outcome,
    lease: Option<crate::protocol::owner::LeaseGrant>,
) {
    let target = net.target::<svc::Owner>(owner);
    let (outcome, pins, held) = match outcome {
        Ok(enc) => {
            let (bytes, pins) = enc.into_parts();
            match keep_here(net, owner, return_id, &bytes) {
                Some(copy) => (Ok(Bytes::new()), pins, Some(copy)),
                None => (Ok(bytes), pins, None),
            }
        }
        Err(e) => (Err(e), Vec::new(), None),
    };
    let msg = TaskResult {
        task_id,
        return_id,
        actor,
        outcome,
        contains: pins.clone(),
        lease,
        held,
    };
    if pins.is_empty() {
        return target.do_send(msg);
    }
    let stored = target.send(msg);
    net.runtime().spawn(async move {
        // Answered once the owner holds its own references (or never, if it is gone).
        let _ = stored.await;
        ownership::with_current(|t| t.unpin_refs(&pins));
    });
}

/// Task results larger than this stay in the process that made them (Ray's
/// `max_direct_call_object_size`); smaller ones go to their owner with the result.
pub(crate) const KEEP_MIN: usize = 100 * 1024;

/// Keeps a large task result in this process's store, on the node that made it, when its owner
/// is another process: the owner learns where it is, and readers pull it from here (a task
/// on this node reads it in place). The same for an actor call's result, kept by the actor's
/// process. `None`: send the value to the owner instead (small, owned here, or no room here).
fn keep_here(net: &Arc<Net>, owner: SocketAddr, id: ObjectId, bytes: &Bytes) -> Option<HeldCopy> {
    if bytes.len() <= KEEP_MIN || net.is_here(owner) {
        return None;
    }
    ownership::with_current(|t| t.keep_copy(owner, id, bytes.clone())).flatten()
}

/// Sends a failure (no value, no refs) to the owner of `spec`'s result.
pub(crate) fn fail(net: &Arc<Net>, spec: &TaskSpec, error: Error) {
    send_result(
        net,
        spec.owner.addr,
        spec.task_id,
        spec.return_id,
        None,
        Err(error),
        None,
    );
}
