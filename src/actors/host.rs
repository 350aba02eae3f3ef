//! The `ActorHost` actix actor: one per actor, on its own arbiter (thread).
//!
//! It runs the constructor, then the calls. A serial actor runs calls one at a time in mailbox
//! order, which is each caller's submission order. An async actor (any `async fn` method) runs
//! calls on the node's event loop, at most `max_concurrency` at once (default 1000). A call's
//! result object is completed exactly once: by the call, or, if the host stops before running it,
//! by the call's guard with `ActorDied`.

use crate::api::context::{ExecContext, WithExec};
use crate::error::Error;
use crate::ids::{ActorId, NodeId, ObjectId, TaskId};
use crate::node::executor::{
    self, build_args, fetch_args_async, fetch_args_blocking, in_context, locate, panic_message,
};
use crate::node::raylet::{ActorReady, Raylet};
use crate::objects::codec;
use crate::objects::store::Stored;
use crate::registry::{self, ActorClass, ActorState, Args, MethodInvoke, Outcome};
use crate::runtime;
use crate::system::gcs::{ActorFailed, ActorStarted, Gcs};
use crate::task::{TaskArg, TaskKind, TaskSpec};
use actix::prelude::*;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// Runs the actor's constructor with its resolved arguments.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Construct {
    pub(crate) resolved: Vec<Option<Stored>>,
}

/// Stops the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopHost;

/// Completes a call's result object exactly once.
pub(crate) struct CallGuard {
    pub(crate) return_id: ObjectId,
    pub(crate) pinned: Vec<ObjectId>,
    pub(crate) actor_id: ActorId,
    done: bool,
}

impl CallGuard {
    pub(crate) fn new(return_id: ObjectId, pinned: Vec<ObjectId>, actor_id: ActorId) -> Self {
        CallGuard {
            return_id,
            pinned,
            actor_id,
            done: false,
        }
    }

    /// Stores the call's outcome and unpins its arguments.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.complete(outcome);
    }

    fn complete(&self, outcome: Outcome) {
        runtime::with_current(|rt| {
            let (value, contained) = match outcome {
                Ok(enc) => (Stored::Value(enc.bytes), enc.contained),
                Err(e) => (Stored::Error(e), Vec::new()),
            };
            rt.refs.complete(self.return_id, value, &contained);
            rt.refs.unpin(&self.pinned);
        });
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.done {
            self.complete(Err(Error::ActorDied {
                actor: self.actor_id.to_string(),
                class: String::new(),
                reason:
                    "the actor stopped (killed, or every handle dropped) before running this call"
                        .into(),
            }));
        }
    }
}

/// One call of an actor method.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ActorTask {
    pub(crate) task_id: TaskId,
    pub(crate) method: u32,
    pub(crate) args: Vec<TaskArg>,
    #[allow(dead_code)]
    pub(crate) group: Option<String>,
    pub(crate) guard: CallGuard,
}

/// Hosts one actor.
pub(crate) struct ActorHost {
    spec: Arc<TaskSpec>,
    actor_id: ActorId,
    node: NodeId,
    gpu_ids: Vec<u32>,
    raylet: Addr<Raylet>,
    gcs: Addr<Gcs>,
    executor: tokio::runtime::Handle,
    class: Option<&'static ActorClass>,
    state: Option<ActorState>,
    limit: Option<Arc<tokio::sync::Semaphore>>,
}

impl ActorHost {
    pub(crate) fn new(
        spec: Arc<TaskSpec>,
        node: NodeId,
        gpu_ids: Vec<u32>,
        raylet: Addr<Raylet>,
        gcs: Addr<Gcs>,
        executor: tokio::runtime::Handle,
    ) -> Self {
        let actor_id = match &spec.kind {
            TaskKind::ActorCreation(c) => c.actor_id,
            TaskKind::Normal { .. } => ActorId(0),
        };
        ActorHost {
            spec,
            actor_id,
            node,
            gpu_ids,
            raylet,
            gcs,
            executor,
            class: None,
            state: None,
            limit: None,
        }
    }

    fn exec(&self, task_id: TaskId, in_async: bool) -> ExecContext {
        ExecContext {
            task_id: Some(task_id),
            actor_id: Some(self.actor_id),
            gpu_ids: self.gpu_ids.clone(),
            lends_cpu: false,
            in_async,
        }
    }

    fn construct(
        &self,
        resolved: Vec<Option<Stored>>,
    ) -> Result<(&'static ActorClass, ActorState), Error> {
        let spec = &self.spec;
        let path = &spec.function.path;
        let class = registry::class(spec.function.id, path)?;
        let args = build_args(&spec.args, resolved)?;
        let run = || (class.construct)(Args::new(args, class.path));
        match std::panic::catch_unwind(AssertUnwindSafe(|| {
            in_context(self.exec(spec.task_id, false), run)
        })) {
            Ok(r) => r
                .map(|s| (class, s))
                .map_err(|e| locate(e, path, self.node)),
            Err(p) => Err(Error::Task {
                function: format!("{path}::new"),
                message: panic_message(p),
                node: self.node.to_string(),
            }),
        }
    }
}

impl Actor for ActorHost {
    type Context = Context<Self>;
}

impl Handler<Construct> for ActorHost {
    type Result = ();
    fn handle(&mut self, msg: Construct, ctx: &mut Context<Self>) {
        let span = tracing::debug_span!("actor_create", actor = %self.actor_id, class = %self.spec.function.path);
        let _enter = span.enter();
        match self.construct(msg.resolved) {
            Ok((class, state)) => {
                self.class = Some(class);
                self.state = Some(state);
                if class.is_async {
                    let n = match &self.spec.kind {
                        TaskKind::ActorCreation(c) => c.max_concurrency.unwrap_or(1000),
                        TaskKind::Normal { .. } => 1000,
                    };
                    self.limit = Some(Arc::new(tokio::sync::Semaphore::new(n.max(1))));
                }
                executor::finish(&self.spec, codec::encode("()", &()));
                self.gcs.do_send(ActorStarted {
                    actor_id: self.actor_id,
                    node_id: self.node,
                    host: ctx.address(),
                });
                self.raylet.do_send(ActorReady {
                    actor_id: self.actor_id,
                    ok: true,
                });
            }
            Err(e) => {
                let error = Error::ActorDied {
                    actor: self.actor_id.to_string(),
                    class: self.spec.function.path.to_string(),
                    reason: format!("its constructor failed: {e}"),
                };
                executor::finish(&self.spec, Err(error.clone()));
                self.gcs.do_send(ActorFailed {
                    actor_id: self.actor_id,
                    error,
                });
                self.raylet.do_send(ActorReady {
                    actor_id: self.actor_id,
                    ok: false,
                });
                ctx.stop();
            }
        }
    }
}

impl Handler<ActorTask> for ActorHost {
    type Result = ();
    fn handle(&mut self, msg: ActorTask, _: &mut Context<Self>) {
        let (Some(class), Some(state)) = (self.class, self.state.clone()) else {
            return msg.guard.finish(Err(Error::ActorDied {
                actor: self.actor_id.to_string(),
                class: self.spec.function.path.to_string(),
                reason: "the actor was never constructed".into(),
            }));
        };
        let Some(method) = class.methods.get(msg.method as usize) else {
            return msg.guard.finish(Err(Error::invalid(format!(
                "actor type {} has no method #{}; are caller and actor the same build?",
                class.path, msg.method
            ))));
        };
        let node = self.node;
        let span = tracing::debug_span!("actor_call", actor = %self.actor_id, method = method.path);
        let _enter = span.enter();
        if let Some(limit) = &self.limit {
            // Async actor: run on the event loop, bounded by max_concurrency.
            let limit = limit.clone();
            let (exec_async, exec_sync) =
                (self.exec(msg.task_id, true), self.exec(msg.task_id, false));
            self.executor.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let outcome = match fetch_args_async(&msg.args).await {
                    Err(e) => Err(e),
                    Ok(args) => match method.invoke {
                        MethodInvoke::Async(f) => {
                            let fut = f(state, Args::new(args, method.path));
                            WithExec::new(exec_async, AssertUnwindSafe(fut).catch_unwind())
                                .await
                                .unwrap_or_else(|p| Err(panic_error(method.path, p, node)))
                        }
                        MethodInvoke::Sync(f) => tokio::task::block_in_place(|| {
                            in_context(exec_sync, || call_sync(f, &state, args, method.path, node))
                        }),
                    },
                };
                msg.guard
                    .finish(outcome.map_err(|e| locate(e, method.path, node)));
            });
            return;
        }
        let exec = self.exec(msg.task_id, false);
        let outcome = in_context(exec, || {
            let args = fetch_args_blocking(&msg.args)?;
            match method.invoke {
                MethodInvoke::Sync(f) => call_sync(f, &state, args, method.path, node),
                MethodInvoke::Async(_) => Err(Error::invalid(format!(
                    "{} is async but its actor was not started as an async actor",
                    method.path
                ))),
            }
        });
        msg.guard
            .finish(outcome.map_err(|e| locate(e, method.path, node)));
    }
}

fn call_sync(
    f: fn(&ActorState, Args) -> Outcome,
    state: &ActorState,
    args: Vec<bytes::Bytes>,
    path: &'static str,
    node: NodeId,
) -> Outcome {
    std::panic::catch_unwind(AssertUnwindSafe(|| f(state, Args::new(args, path))))
        .unwrap_or_else(|p| Err(panic_error(path, p, node)))
}

fn panic_error(path: &str, p: Box<dyn std::any::Any + Send>, node: NodeId) -> Error {
    Error::Task {
        function: path.to_string(),
        message: panic_message(p),
        node: node.to_string(),
    }
}

impl Handler<StopHost> for ActorHost {
    type Result = ();
    fn handle(&mut self, _: StopHost, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
