//! The `ActorHost` actix actor: one per actor, in the worker that hosts it.
//!
//! It runs the constructor, then takes calls in each caller's order (see
//! [`Ordering`](crate::actors::caller::Ordering)) and routes each to its concurrency group (the
//! call's override, else the method's group, else the default group; an unknown name fails the
//! call). A serial actor's default group runs inline, one call at a time in mailbox order. Async
//! and threaded groups are their own actix actors (see [`groups`](crate::actors::groups)). A
//! call's result is sent to its owner exactly once: by the call, or, if the host stops before
//! running it, by the call's guard with `ActorDied`.

use crate::actors::caller::Ordering;
use crate::actors::groups::{Group, RunCall};
use crate::actors::pooled::{self, PooledContext};
use crate::context::{with_exec, ExecContext};
use crate::error::Error;
use crate::events;
use crate::ids::{ActorId, NodeId, ObjectId, TaskId};
use crate::invoke::{self, locate, panic_error};
use crate::objects::codec;
use crate::protocol::events::TaskType;
use crate::protocol::gcs::{ActorFailed, ActorStarted};
use crate::protocol::raylet::ActorReady;
use crate::protocol::refs::Stored;
use crate::protocol::svc;
use crate::protocol::task::{TaskArg, TaskKind, TaskSpec};
use crate::protocol::worker::ActorCall;
use crate::registry::{self, ActorClass, ActorState, Args, Outcome};
use crate::transport::net::{Net, Target};
use actix::prelude::*;
use std::borrow::Cow;
use std::net::SocketAddr;
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

/// Sends a call's outcome to its owner exactly once.
pub(crate) struct CallGuard {
    net: Arc<Net>,
    owner: SocketAddr,
    task_id: TaskId,
    return_id: ObjectId,
    actor_id: ActorId,
    /// The actor's type, for error messages.
    class: Cow<'static, str>,
    done: bool,
}

impl CallGuard {
    /// Records that the call (of the method at `path`) starts running on `node`.
    pub(crate) fn running(&self, node: NodeId, path: &'static str) {
        events::running(
            self.task_id,
            0,
            node,
            Cow::Borrowed(path),
            TaskType::ActorTask,
        );
    }

    /// Sends the call's outcome to its owner.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.send(outcome);
    }

    fn send(&self, outcome: Outcome) {
        events::ended(self.task_id, 0, outcome.as_ref().err());
        invoke::send_result(
            &self.net,
            self.owner,
            self.task_id,
            self.return_id,
            Some(self.actor_id),
            outcome,
            None,
        );
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.done {
            let error = Error::ActorDied {
                actor: self.actor_id.to_string(),
                class: self.class.to_string(),
                reason:
                    "the actor stopped (killed, or every handle dropped) before running this call"
                        .into(),
            };
            self.send(Err(error));
        }
    }
}

/// One call of an actor method, released in its caller's order.
pub(crate) struct ActorTask {
    pub(crate) args: Vec<TaskArg>,
    pub(crate) guard: CallGuard,
}

/// An actor host in this process.
#[derive(Clone)]
pub(crate) struct LocalHost {
    pub(crate) addr: Addr<ActorHost>,
}

impl LocalHost {
    /// Starts the host of the actor `spec` creates, on the shared pool (its constructor runs
    /// on [`construct`](Self::construct)).
    pub(crate) fn start(spec: Arc<TaskSpec>, gpu_ids: Vec<u32>, site: HostSite) -> LocalHost {
        LocalHost {
            addr: pooled::start(ActorHost::new(spec, gpu_ids, site)),
        }
    }

    /// Runs the constructor with its resolved arguments. Calls may come from the moment it
    /// succeeds: the host must be findable before this is called.
    pub(crate) fn construct(&self, resolved: Vec<Option<Stored>>) {
        self.addr.do_send(Construct { resolved });
    }

    /// Posts a call; gives it back if the host is gone.
    pub(crate) fn post(&self, call: ActorCall) -> Option<ActorCall> {
        events::queued(call.task_id);
        match self.addr.try_send(call) {
            Ok(()) => None,
            Err(SendError::Full(call)) | Err(SendError::Closed(call)) => Some(call),
        }
    }
}

/// Where a host runs: its node's components and this process's switchboard and event loop.
#[derive(Clone)]
pub(crate) struct HostSite {
    pub(crate) node: NodeId,
    pub(crate) net: Arc<Net>,
    pub(crate) raylet: Target<svc::Raylet>,
    pub(crate) gcs: Target<svc::Gcs>,
    pub(crate) executor: tokio::runtime::Handle,
}

/// Hosts one actor.
pub(crate) struct ActorHost {
    spec: Arc<TaskSpec>,
    actor_id: ActorId,
    site: HostSite,
    gpu_ids: Vec<u32>,
    class: Option<&'static ActorClass>,
    state: Option<ActorState>,
    /// Where calls without a group run.
    default_group: Group,
    /// The declared concurrency groups.
    groups: Vec<(&'static str, Group)>,
    /// Each caller's calls, released in the caller's order.
    ordering: Ordering<ActorCall>,
}

impl ActorHost {
    pub(crate) fn new(spec: Arc<TaskSpec>, gpu_ids: Vec<u32>, site: HostSite) -> Self {
        let actor_id = match &spec.kind {
            TaskKind::ActorCreation(c) => c.actor_id,
            TaskKind::Normal { .. } => ActorId(0),
        };
        ActorHost {
            spec,
            actor_id,
            site,
            gpu_ids,
            class: None,
            state: None,
            default_group: Group::Inline,
            groups: Vec::new(),
            ordering: Ordering::default(),
        }
    }

    fn exec(&self, task_id: TaskId, in_async: bool) -> ExecContext {
        ExecContext {
            task_id: Some(task_id),
            actor_id: Some(self.actor_id),
            gpu_ids: self.gpu_ids.clone(),
            lends_cpu: false,
            holder: None,
            in_async,
            captured: crate::context::captured_by(&self.spec),
        }
    }

    fn class_name(&self) -> Cow<'static, str> {
        self.spec.function.path.clone()
    }

    fn construct(
        &self,
        resolved: Vec<Option<Stored>>,
    ) -> Result<(&'static ActorClass, ActorState), Error> {
        let spec = &self.spec;
        let path = &spec.function.path;
        let class = registry::class(spec.function.id, path)?;
        let node = self.site.node;
        let run = || -> Result<ActorState, Error> {
            let args = invoke::resolve_blocking(&spec.args, resolved)?;
            events::running(
                spec.task_id,
                spec.attempt,
                node,
                Cow::Borrowed(class.path),
                TaskType::ActorCreation,
            );
            (class.construct)(Args::new(args, class.path))
        };
        let made = match std::panic::catch_unwind(AssertUnwindSafe(|| {
            with_exec(self.exec(spec.task_id, false), run)
        })) {
            Ok(r) => r.map(|s| (class, s)).map_err(|e| locate(e, path, node)),
            Err(p) => Err(panic_error(&format!("{path}::new"), p, node)),
        };
        events::ended(spec.task_id, spec.attempt, made.as_ref().err());
        made
    }

    /// Runs one call in its concurrency group.
    fn run(&mut self, call: ActorCall) {
        let guard = CallGuard {
            net: self.site.net.clone(),
            owner: call.owner.addr,
            task_id: call.task_id,
            return_id: call.return_id,
            actor_id: self.actor_id,
            class: self.class_name(),
            done: false,
        };
        let (Some(class), Some(state)) = (self.class, self.state.clone()) else {
            return guard.finish(Err(Error::ActorDied {
                actor: self.actor_id.to_string(),
                class: self.class_name().to_string(),
                reason: "the actor was never constructed".into(),
            }));
        };
        let Some(method) = class.methods.get(call.method as usize) else {
            return guard.finish(Err(Error::invalid(format!(
                "actor type {} has no method #{}; are caller and actor the same build?",
                class.path, call.method
            ))));
        };
        let span = tracing::debug_span!("actor_call", call = %call.task_id, actor = %self.actor_id,
            method = method.path, node = %self.site.node);
        let _enter = span.enter();
        let group = match call.group.as_deref().or(method.group) {
            None => &self.default_group,
            Some(name) => match self.groups.iter().find(|(n, _)| *n == name) {
                Some((_, g)) => g,
                None => {
                    let mut names: Vec<&str> = self.groups.iter().map(|(n, _)| *n).collect();
                    names.sort_unstable();
                    return guard.finish(Err(Error::invalid(format!(
                        "{} has no concurrency group {name:?}; its groups: {}",
                        class.path,
                        if names.is_empty() {
                            "none besides the default group".to_string()
                        } else {
                            names.join(", ")
                        }
                    ))));
                }
            },
        };
        let exec = self.exec(call.task_id, false);
        group.run(RunCall {
            task: ActorTask {
                args: call.args,
                guard,
            },
            method,
            state,
            exec,
            node: self.site.node,
        });
    }
}

impl Actor for ActorHost {
    type Context = PooledContext<Self>;
}

impl Handler<Construct> for ActorHost {
    type Result = ();
    fn handle(&mut self, msg: Construct, ctx: &mut PooledContext<Self>) {
        let span = tracing::debug_span!("actor_create", task = %self.spec.task_id,
            job = %self.spec.job_id, actor = %self.actor_id, class = %self.spec.function.path,
            node = %self.site.node);
        let _enter = span.enter();
        let spec = self.spec.clone();
        match self.construct(msg.resolved) {
            Ok((class, state)) => {
                self.class = Some(class);
                self.state = Some(state);
                // The default group: 1000 for async actors, else 1, resized by max_concurrency.
                let max = match &spec.kind {
                    TaskKind::ActorCreation(c) => c.max_concurrency,
                    TaskKind::Normal { .. } => None,
                };
                let default = max.unwrap_or(if class.is_async { 1000 } else { 1 });
                // A serial actor with no other groups runs calls inline (one hop fewer); with
                // named groups, its default group gets its own thread so that a busy default
                // call never holds up the others. One thread keeps calls in mailbox order.
                self.default_group = if class.is_async || default > 1 || !class.groups.is_empty() {
                    Group::start(default, class.is_async, &self.site.executor)
                } else {
                    Group::Inline
                };
                self.groups = class
                    .groups
                    .iter()
                    .map(|(name, size)| {
                        (
                            *name,
                            Group::start(*size, class.is_async, &self.site.executor),
                        )
                    })
                    .collect();
                let done = codec::encode("()", &());
                invoke::send_result(
                    &self.site.net,
                    spec.owner.addr,
                    spec.task_id,
                    spec.return_id,
                    None,
                    done,
                    None,
                );
                self.site.gcs.do_send(ActorStarted {
                    actor_id: self.actor_id,
                    node_id: self.site.node,
                    host: self.site.net.addr(),
                });
                self.site.raylet.do_send(ActorReady {
                    actor_id: self.actor_id,
                    ok: true,
                });
            }
            Err(e) => {
                let error = Error::ActorDied {
                    actor: self.actor_id.to_string(),
                    class: spec.function.path.to_string(),
                    reason: format!("its constructor failed: {e}"),
                };
                invoke::fail(&self.site.net, &spec, error.clone());
                self.site.gcs.do_send(ActorFailed {
                    actor_id: self.actor_id,
                    error,
                });
                self.site.raylet.do_send(ActorReady {
                    actor_id: self.actor_id,
                    ok: false,
                });
                ctx.stop();
            }
        }
    }
}

impl Handler<ActorCall> for ActorHost {
    type Result = ();
    fn handle(&mut self, msg: ActorCall, _: &mut PooledContext<Self>) {
        match self.ordering.arrive(msg.caller, msg.seq, msg.skip_to, msg) {
            Ok(ready) => {
                for call in ready {
                    self.run(call);
                }
            }
            Err(call) => {
                let reason = format!(
                    "call #{} from {} arrived after the host had already taken that number (a \
                     duplicate, or calls out of order): refused rather than run twice",
                    call.seq, call.caller
                );
                tracing::warn!(actor = %self.actor_id, "{reason}");
                let error = Error::ActorDied {
                    actor: self.actor_id.to_string(),
                    class: self.class_name().to_string(),
                    reason,
                };
                invoke::send_result(
                    &self.site.net,
                    call.owner.addr,
                    call.task_id,
                    call.return_id,
                    Some(self.actor_id),
                    Err(error),
                    None,
                );
            }
        }
    }
}

impl Handler<StopHost> for ActorHost {
    type Result = ();
    fn handle(&mut self, _: StopHost, ctx: &mut PooledContext<Self>) {
        ctx.stop();
    }
}
