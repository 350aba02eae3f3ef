//! Concurrency groups: each an actix actor bounding how many of its calls run at once.
//!
//! - [`AsyncGroup`]: for async actors. Calls run on the node's event loop; a semaphore of the
//!   group's size bounds how many are in flight. Sync methods of an async actor run there too,
//!   inside `block_in_place`, so they may block without stalling the loop.
//! - [`GroupThread`]: for threaded actors. A `SyncArbiter` with one thread per unit of the
//!   group's size; each thread runs one call at a time.
//! - A serial actor with no named groups needs no group actor: the host runs its calls inline,
//!   one at a time, in mailbox order, which is what keeps each submitter's calls in submission
//!   order. With named groups, its default group is a one-thread `GroupThread`, still in order,
//!   so that a busy default call never holds up the other groups.
//!
//! Whatever the group, `&self` methods may overlap and `&mut self` methods run alone: the
//! actor's state sits behind a read-write lock that every trampoline takes.

use crate::actors::host::ActorTask;
use crate::api::context::{with_exec, ExecContext, WithExec};
use crate::error::Error;
use crate::ids::NodeId;
use crate::node::executor::{fetch_args_async, fetch_args_blocking, locate, panic_message};
use crate::registry::{ActorMethod, ActorState, Args, MethodInvoke, Outcome};
use actix::prelude::*;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// One call, routed to the group that runs it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RunCall {
    pub(crate) task: ActorTask,
    pub(crate) method: &'static ActorMethod,
    pub(crate) state: ActorState,
    /// The call's context (`in_async` is set by the runner).
    pub(crate) exec: ExecContext,
    pub(crate) node: NodeId,
}

/// Where a group's calls run.
pub(crate) enum Group {
    /// In the host itself, one at a time (a serial actor's default group).
    Inline,
    /// On the event loop, bounded.
    Async(Addr<AsyncGroup>),
    /// On a pool of threads.
    Threaded(Addr<GroupThread>),
}

impl Group {
    /// A group of `size` for an actor that is async or not.
    pub(crate) fn start(size: usize, is_async: bool, executor: &tokio::runtime::Handle) -> Group {
        let size = size.max(1);
        if is_async {
            let limit = Arc::new(tokio::sync::Semaphore::new(size));
            let executor = executor.clone();
            Group::Async(AsyncGroup { limit, executor }.start())
        } else {
            Group::Threaded(SyncArbiter::start(size, || GroupThread))
        }
    }

    pub(crate) fn run(&self, call: RunCall) {
        match self {
            Group::Inline => run_sync(call),
            Group::Async(a) => a.do_send(call),
            Group::Threaded(t) => t.do_send(call),
        }
    }
}

/// Runs a call on the current thread (blocking for its arguments).
pub(crate) fn run_sync(call: RunCall) {
    let RunCall {
        task,
        method,
        state,
        exec,
        node,
    } = call;
    let outcome = with_exec(exec, || {
        let args = fetch_args_blocking(&task.args)?;
        match method.invoke {
            MethodInvoke::Sync(f) => call_sync(f, &state, args, method.path, node),
            MethodInvoke::Async(_) => Err(Error::invalid(format!(
                "{} is async but its actor was not started as an async actor",
                method.path
            ))),
        }
    });
    task.guard
        .finish(outcome.map_err(|e| locate(e, method.path, node)));
}

/// Runs a call on the event loop.
async fn run_async(call: RunCall) {
    let RunCall {
        task,
        method,
        state,
        exec,
        node,
    } = call;
    let outcome = match fetch_args_async(&task.args).await {
        Err(e) => Err(e),
        Ok(args) => match method.invoke {
            MethodInvoke::Async(f) => {
                let fut = f(state, Args::new(args, method.path));
                let exec = ExecContext {
                    in_async: true,
                    ..exec
                };
                WithExec::new(exec, AssertUnwindSafe(fut).catch_unwind())
                    .await
                    .unwrap_or_else(|p| Err(panic_error(method.path, p, node)))
            }
            MethodInvoke::Sync(f) => tokio::task::block_in_place(|| {
                with_exec(exec, || call_sync(f, &state, args, method.path, node))
            }),
        },
    };
    task.guard
        .finish(outcome.map_err(|e| locate(e, method.path, node)));
}

pub(crate) fn call_sync(
    f: fn(&ActorState, Args) -> Outcome,
    state: &ActorState,
    args: Vec<bytes::Bytes>,
    path: &'static str,
    node: NodeId,
) -> Outcome {
    std::panic::catch_unwind(AssertUnwindSafe(|| f(state, Args::new(args, path))))
        .unwrap_or_else(|p| Err(panic_error(path, p, node)))
}

pub(crate) fn panic_error(path: &str, p: Box<dyn std::any::Any + Send>, node: NodeId) -> Error {
    Error::Task {
        function: path.to_string(),
        message: panic_message(p),
        node: node.to_string(),
    }
}

/// An async concurrency group.
pub(crate) struct AsyncGroup {
    limit: Arc<tokio::sync::Semaphore>,
    executor: tokio::runtime::Handle,
}

impl Actor for AsyncGroup {
    type Context = Context<Self>;
}

impl Handler<RunCall> for AsyncGroup {
    type Result = ();
    fn handle(&mut self, call: RunCall, _: &mut Context<Self>) {
        let limit = self.limit.clone();
        self.executor.spawn(async move {
            // Closed only when the group is dropped, and then the call's guard reports it.
            let Ok(_permit) = limit.acquire_owned().await else {
                return;
            };
            run_async(call).await;
        });
    }
}

/// One thread of a threaded concurrency group.
pub(crate) struct GroupThread;

impl Actor for GroupThread {
    type Context = SyncContext<Self>;
}

impl Handler<RunCall> for GroupThread {
    type Result = ();
    fn handle(&mut self, call: RunCall, _: &mut SyncContext<Self>) {
        run_sync(call);
    }
}
