//! The `ActorHost` actix actor: one per actor, on its own arbiter (thread).
//!
//! It runs the constructor, then routes each call to its concurrency group (the call's override,
//! else the method's group, else the default group; an unknown name fails the call). A serial
//! actor's default group runs inline, one call at a time in mailbox order, which is each caller's
//! submission order. Async and threaded groups are their own actix actors (see
//! [`groups`](crate::actors::groups)). A call's result object is completed exactly once: by the
//! call, or, if the host stops before running it, by the call's guard with `ActorDied`.

use crate::actors::groups::{Group, RunCall};
use crate::api::context::{with_exec, ExecContext};
use crate::doorbell::Doorbell;
use crate::error::Error;
use crate::ids::{ActorId, NodeId, ObjectId, TaskId};
use crate::node::executor::{self, build_args, locate, panic_message};
use crate::node::raylet::{ActorReady, Raylet};
use crate::objects::codec;
use crate::objects::object_ref::OwnerAddress;
use crate::objects::owner;
use crate::objects::store::Stored;
use crate::registry::{self, ActorClass, ActorState, Args, Outcome};
use crate::runtime;
use crate::system::gcs::{ActorFailed, ActorStarted, ActorStartedWire, Gcs, HostRef};
use crate::task::{TaskArg, TaskKind, TaskSpec};
use crate::transport::wire::Target;
use actix::prelude::*;
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

/// Completes a call's result object exactly once.
pub(crate) struct CallGuard {
    pub(crate) return_id: ObjectId,
    pub(crate) pinned: Vec<ObjectId>,
    pub(crate) actor_id: ActorId,
    /// The call's task and owner, when the owner is another process: the outcome is sent there.
    pub(crate) owner: Option<(TaskId, OwnerAddress)>,
    /// The actor's type, for error messages.
    pub(crate) class: std::borrow::Cow<'static, str>,
    done: bool,
}

impl CallGuard {
    pub(crate) fn new(return_id: ObjectId, pinned: Vec<ObjectId>, actor_id: ActorId) -> Self {
        CallGuard {
            return_id,
            pinned,
            actor_id,
            owner: None,
            class: std::borrow::Cow::Borrowed(""),
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
            if let (Some((task_id, owner)), Some(net)) = (self.owner, &rt.net) {
                if let Some(addr) = owner.addr {
                    owner::send_result(rt, net, addr, task_id, self.return_id, outcome);
                }
                return;
            }
            owner::store_result(rt, self.return_id, &self.pinned, outcome);
        });
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.done {
            self.complete(Err(Error::ActorDied {
                actor: self.actor_id.to_string(),
                class: self.class.to_string(),
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
    /// A per-call concurrency group, overriding the method's.
    pub(crate) group: Option<String>,
    pub(crate) guard: CallGuard,
}

/// An actor host in this process: its address, and the doorbell its thread lingers on.
#[derive(Clone)]
pub(crate) struct LocalHost {
    pub(crate) addr: Addr<ActorHost>,
    pub(crate) bell: Arc<Doorbell>,
}

impl LocalHost {
    /// Posts a call; gives it back if the host is gone.
    pub(crate) fn post(&self, task: ActorTask) -> Option<ActorTask> {
        if !self.addr.connected() {
            return Some(task);
        }
        // Ring first: the host may handle the call before this thread runs another instruction,
        // and its answer must follow the ring.
        self.bell.ring();
        self.addr.do_send(task);
        None
    }
}

/// Hosts one actor.
pub(crate) struct ActorHost {
    spec: Arc<TaskSpec>,
    actor_id: ActorId,
    node: NodeId,
    gpu_ids: Vec<u32>,
    raylet: Target<Raylet>,
    gcs: Target<Gcs>,
    executor: tokio::runtime::Handle,
    /// Where other processes reach this host (none when embedded).
    listen: Option<SocketAddr>,
    class: Option<&'static ActorClass>,
    state: Option<ActorState>,
    /// Where calls without a group run.
    default_group: Group,
    /// The declared concurrency groups.
    groups: Vec<(&'static str, Group)>,
    /// Rung by whoever posts a call here (see [`doorbell`](crate::doorbell)).
    bell: Arc<Doorbell>,
}

/// Where a host runs: its node's components and this process's event loop and address.
pub(crate) struct HostSite {
    pub(crate) node: NodeId,
    pub(crate) raylet: Target<Raylet>,
    pub(crate) gcs: Target<Gcs>,
    pub(crate) executor: tokio::runtime::Handle,
    /// Where other processes reach this host (none when embedded).
    pub(crate) listen: Option<SocketAddr>,
}

impl ActorHost {
    pub(crate) fn new(
        spec: Arc<TaskSpec>,
        gpu_ids: Vec<u32>,
        bell: Arc<Doorbell>,
        site: HostSite,
    ) -> Self {
        let HostSite {
            node,
            raylet,
            gcs,
            executor,
            listen,
        } = site;
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
            listen,
            class: None,
            state: None,
            default_group: Group::Inline,
            groups: Vec::new(),
            bell,
        }
    }

    fn exec(&self, task_id: TaskId, in_async: bool) -> ExecContext {
        ExecContext {
            task_id: Some(task_id),
            actor_id: Some(self.actor_id),
            gpu_ids: self.gpu_ids.clone(),
            lends_cpu: false,
            in_async,
            captured: crate::api::context::captured_by(&self.spec.strategy),
        }
    }

    fn construct(
        &self,
        resolved: Vec<Option<Stored>>,
    ) -> Result<(&'static ActorClass, ActorState), Error> {
        let spec = &self.spec;
        let path = &spec.function.path;
        let class = registry::class(spec.function.id, path)?;
        let resolved = executor::complete_blocking(&spec.args, resolved)?;
        let args = build_args(&spec.args, resolved)?;
        let run = || (class.construct)(Args::new(args, class.path));
        match std::panic::catch_unwind(AssertUnwindSafe(|| {
            with_exec(self.exec(spec.task_id, false), run)
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
                // The default group: 1000 for async actors, else 1, resized by max_concurrency.
                let max = match &self.spec.kind {
                    TaskKind::ActorCreation(c) => c.max_concurrency,
                    TaskKind::Normal { .. } => None,
                };
                let default = max.unwrap_or(if class.is_async { 1000 } else { 1 });
                // A serial actor with no other groups runs calls inline (one hop fewer); with
                // named groups, its default group gets its own thread so that a busy default
                // call never holds up the others. One thread keeps calls in mailbox order.
                self.default_group = if class.is_async || default > 1 || !class.groups.is_empty() {
                    Group::start(default, class.is_async, &self.executor)
                } else {
                    Group::Inline
                };
                self.groups = class
                    .groups
                    .iter()
                    .map(|(name, size)| {
                        (*name, Group::start(*size, class.is_async, &self.executor))
                    })
                    .collect();
                executor::finish(&self.spec, codec::encode("()", &()));
                match (&self.gcs, self.listen) {
                    (Target::Local(gcs), None) => gcs.do_send(ActorStarted {
                        actor_id: self.actor_id,
                        node_id: self.node,
                        host: HostRef::Local(LocalHost {
                            addr: ctx.address(),
                            bell: self.bell.clone(),
                        }),
                    }),
                    (gcs, Some(listen)) => gcs.do_send(ActorStartedWire {
                        actor_id: self.actor_id,
                        node_id: self.node,
                        host: listen,
                    }),
                    (Target::Remote(_), None) => {
                        tracing::error!(actor = %self.actor_id, "an actor host with a remote GCS has no address of its own");
                    }
                }
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
        self.bell.answer();
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
        let span = tracing::debug_span!("actor_call", actor = %self.actor_id, method = method.path);
        let _enter = span.enter();
        let group = match msg.group.as_deref().or(method.group) {
            None => &self.default_group,
            Some(name) => match self.groups.iter().find(|(n, _)| *n == name) {
                Some((_, g)) => g,
                None => {
                    let mut names: Vec<&str> = self.groups.iter().map(|(n, _)| *n).collect();
                    names.sort_unstable();
                    return msg.guard.finish(Err(Error::invalid(format!(
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
        let exec = self.exec(msg.task_id, false);
        group.run(RunCall {
            task: msg,
            method,
            state,
            exec,
            node: self.node,
        });
    }
}

impl Handler<StopHost> for ActorHost {
    type Result = ();
    fn handle(&mut self, _: StopHost, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
