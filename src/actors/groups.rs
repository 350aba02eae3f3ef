//! Concurrency groups: each an actix actor (on the shared pool, see
//! [`pooled`](crate::actors::pooled)) bounding how many of its calls run at once.
//!
//! - [`AsyncGroup`]: for async actors. The group and its calls run on the node's event loop; a
//!   semaphore of the group's size bounds how many are in flight. Sync methods of an async actor run there too,
//!   inside `block_in_place`, so they may block without stalling the loop.
//! - [`ThreadedGroup`]: for threaded actors. Up to the group's size of its calls run at once,
//!   each on a pool thread it holds only while calls wait.
//! - A serial actor with no named groups needs no group actor: the host runs its calls inline,
//!   one at a time, in mailbox order, which is what keeps each submitter's calls in submission
//!   order. With named groups, its default group is a `ThreadedGroup` of one, still in order,
//!   so that a busy default call never holds up the other groups.
//!
//! Whatever the group, `&self` methods may overlap and `&mut self` methods run alone: the
//! actor's state sits behind a read-write lock that every trampoline takes.

use crate::actors::host::ActorTask;
use crate::actors::pooled::{self, PooledContext, ThreadPool};
use crate::context::{with_exec, ExecContext, WithExec};
use crate::error::Error;
use crate::ids::NodeId;
use crate::invoke::{
    announce_method, call_sync, locate, panic_error, resolve_async, resolve_blocking,
};
use crate::registry::{ActorMethod, ActorState, Args, MethodInvoke};
use actix::prelude::*;
use futures::FutureExt;
use parking_lot::Mutex;
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
    /// On pool threads, bounded.
    Threaded(Addr<ThreadedGroup>),
}

impl Group {
    /// A group of `size` for an actor that is async or not.
    pub(crate) fn start(size: usize, is_async: bool, executor: &tokio::runtime::Handle) -> Group {
        let size = size.max(1);
        if is_async {
            let limit = Arc::new(tokio::sync::Semaphore::new(size));
            // At home on the loop its calls run on: starting them wakes no other thread.
            let group = AsyncGroup {
                limit,
                executor: executor.clone(),
            };
            Group::Async(pooled::start_on(group, executor.clone()))
        } else {
            Group::Threaded(pooled::start(ThreadedGroup::new(size)))
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
        let args = resolve_blocking(&task.args, Vec::new())?;
        task.guard.running(node, method.path);
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
    let outcome = match resolve_async(&task.args, Vec::new()).await {
        Err(e) => Err(e),
        Ok(args) => match method.invoke {
            MethodInvoke::Async(f) => {
                announce_method(method.path);
                task.guard.running(node, method.path);
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
                task.guard.running(node, method.path);
                with_exec(exec, || call_sync(f, &state, args, method.path, node))
            }),
        },
    };
    task.guard
        .finish(outcome.map_err(|e| locate(e, method.path, node)));
}

/// An async concurrency group.
pub(crate) struct AsyncGroup {
    limit: Arc<tokio::sync::Semaphore>,
    executor: tokio::runtime::Handle,
}

impl Actor for AsyncGroup {
    type Context = PooledContext<Self>;
}

impl Handler<RunCall> for AsyncGroup {
    type Result = ();
    fn handle(&mut self, call: RunCall, _: &mut PooledContext<Self>) {
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

/// A threaded concurrency group: at most `size` of its calls run at once, the others wait in
/// order. Each running slot is a pool job that takes the group's next waiting call when its own
/// is done, so a busy group's calls go from one to the next without a message between them.
pub(crate) struct ThreadedGroup {
    slots: Arc<Mutex<Slots>>,
}

/// The calls a threaded group has waiting, and how many of its jobs run.
struct Slots {
    size: usize,
    running: usize,
    queued: std::collections::VecDeque<RunCall>,
}

impl ThreadedGroup {
    fn new(size: usize) -> Self {
        ThreadedGroup {
            slots: Arc::new(Mutex::new(Slots {
                size,
                running: 0,
                queued: std::collections::VecDeque::new(),
            })),
        }
    }
}

/// A running slot: runs calls until none waits.
fn serve_slot(slots: Arc<Mutex<Slots>>, mut call: RunCall) {
    loop {
        // A panic is the call's alone (its guard reports it); the slot goes on.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| run_sync(call)));
        // Each call counts as progress for the pool's watchdog (the slot is one long job).
        ThreadPool::shared().progressed();
        let mut s = slots.lock();
        match s.queued.pop_front() {
            Some(next) => call = next,
            None => {
                s.running -= 1;
                return;
            }
        }
    }
}

impl Actor for ThreadedGroup {
    type Context = PooledContext<Self>;
}

impl Handler<RunCall> for ThreadedGroup {
    type Result = ();
    fn handle(&mut self, call: RunCall, _: &mut PooledContext<Self>) {
        let mut s = self.slots.lock();
        if s.running < s.size {
            s.running += 1;
            drop(s);
            let slots = self.slots.clone();
            ThreadPool::shared().spawn(move || serve_slot(slots, call));
        } else {
            s.queued.push_back(call);
        }
    }
}
