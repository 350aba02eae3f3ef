//! The `Raylet` actix actor: admission, dispatch, the worker pool and the actors hosted here.

use crate::actors::host::{ActorHost, Construct, StopHost};
use crate::error::Error;
use crate::ids::{ActorId, NodeId, TaskId};
use crate::node::dispatch::DispatchQueue;
use crate::node::executor::{self, Ready};
use crate::node::worker::{Execute, Retire, Worker};
use crate::objects::store::{StoreClient, Stored};
use crate::placement::policy::{pick_node, NodeView, Placement};
use crate::resources::{Grant, NodeResources, ResourceSet};
use crate::system::gcs::{ActorFailed, Gcs, RegisterNode};
use crate::task::{TaskKind, TaskSpec};
use actix::prelude::*;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Queue a task (or actor creation) on this node.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SubmitTask {
    pub(crate) spec: Arc<TaskSpec>,
}

/// A task finished; its worker (if any) is free again.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TaskDone {
    pub(crate) task_id: TaskId,
    pub(crate) worker: Option<Addr<Worker>>,
}

/// A running task blocked in `get`: lend its CPU to other tasks.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TaskBlocked {
    pub(crate) task_id: TaskId,
}

/// The blocked task's objects arrived: it gets its CPU back (`reply` fires when it has).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TaskUnblocked {
    pub(crate) task_id: TaskId,
    pub(crate) reply: flume::Sender<()>,
}

/// An actor's constructor finished (`ok`) or failed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ActorReady {
    pub(crate) actor_id: ActorId,
    pub(crate) ok: bool,
}

/// Stop an actor hosted here (or about to be) and free its resources.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct KillActor {
    pub(crate) actor_id: ActorId,
}

/// The node's total and available resources.
#[derive(Message)]
#[rtype(result = "ResourceSnapshot")]
pub(crate) struct GetResources;

/// What [`GetResources`] answers.
#[derive(Debug, Clone, MessageResponse)]
pub(crate) struct ResourceSnapshot {
    pub(crate) available: ResourceSet,
    /// Queued requests that do not fit now: each resource shape with how many wait for it.
    pub(crate) demands: Vec<(ResourceSet, usize)>,
    /// Tasks waiting for their arguments.
    pub(crate) waiting_for_args: usize,
}

struct Running {
    grant: Grant,
    blocked: bool,
}

struct Hosted {
    host: Addr<ActorHost>,
    arbiter: ArbiterHandle,
    grant: Grant,
    lifetime: ResourceSet,
}

/// The raylet of one node.
pub(crate) struct Raylet {
    node_id: NodeId,
    resources: NodeResources,
    gcs: Addr<Gcs>,
    store: StoreClient,
    executor: tokio::runtime::Handle,
    queue: DispatchQueue<Ready>,
    waiting_for_args: usize,
    running: HashMap<TaskId, Running>,
    unblock: VecDeque<(TaskId, flume::Sender<()>)>,
    idle: Vec<Addr<Worker>>,
    /// Every live worker. An actix actor stops once no `Addr` to it remains, so the raylet keeps
    /// one for each worker for as long as the worker should live, busy or idle.
    workers: Vec<Addr<Worker>>,
    max_idle: usize,
    actors: HashMap<ActorId, Hosted>,
    killed: HashSet<ActorId>,
    spread_cursor: usize,
}

impl Raylet {
    pub(crate) fn new(
        node_id: NodeId,
        total: ResourceSet,
        gcs: Addr<Gcs>,
        store: StoreClient,
        executor: tokio::runtime::Handle,
    ) -> Self {
        let cpus = total.get(&crate::resources::Resource::Cpu).whole_units() as usize;
        Raylet {
            node_id,
            resources: NodeResources::new(total),
            gcs,
            store,
            executor,
            queue: DispatchQueue::default(),
            waiting_for_args: 0,
            running: HashMap::new(),
            unblock: VecDeque::new(),
            idle: Vec::new(),
            workers: Vec::new(),
            max_idle: cpus.max(1) + 2,
            actors: HashMap::new(),
            killed: HashSet::new(),
            spread_cursor: 0,
        }
    }

    fn view(&self) -> NodeView {
        NodeView {
            id: self.node_id,
            alive: true,
            total: self.resources.total().clone(),
            available: self.resources.available().clone(),
        }
    }

    /// Fails a task that no node may run.
    fn fail(&mut self, spec: &Arc<TaskSpec>, reason: String) {
        let path = spec.function.path.to_string();
        let error = match &spec.kind {
            TaskKind::ActorCreation(c) => {
                let e = Error::ActorUnschedulable {
                    actor: c.actor_id.to_string(),
                    class: path,
                    reason,
                };
                self.gcs.do_send(ActorFailed {
                    actor_id: c.actor_id,
                    error: e.clone(),
                });
                e
            }
            TaskKind::Normal { .. } => Error::TaskUnschedulable {
                function: path,
                reason,
            },
        };
        executor::finish(spec, Err(error));
    }

    fn enqueue(&mut self, ready: Ready, ctx: &mut Context<Self>) {
        let class = ready.spec.resources.clone();
        self.queue.push(&class, ready);
        self.dispatch(ctx);
    }

    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        while let Some((task_id, _)) = self.unblock.front() {
            let ok = match self.running.get_mut(task_id) {
                Some(run) if run.blocked => {
                    if self.resources.try_reacquire_cpu(&run.grant) {
                        run.blocked = false;
                        true
                    } else {
                        false
                    }
                }
                _ => true,
            };
            if !ok {
                // Unblocking tasks get CPU before anything new starts.
                return;
            }
            if let Some((_, reply)) = self.unblock.pop_front() {
                let _ = reply.send(());
            }
        }
        for (ready, grant) in self.queue.take_dispatchable(&mut self.resources) {
            self.launch(ready, grant, ctx);
        }
    }

    fn launch(&mut self, ready: Ready, grant: Grant, ctx: &mut Context<Self>) {
        let spec = ready.spec.clone();
        match &spec.kind {
            TaskKind::Normal { is_async: false } => {
                let worker = match self.idle.pop() {
                    Some(w) => w,
                    None => self.spawn_worker(ctx),
                };
                self.running.insert(
                    spec.task_id,
                    Running {
                        grant: grant.clone(),
                        blocked: false,
                    },
                );
                worker.do_send(Execute { ready, grant });
            }
            TaskKind::Normal { is_async: true } => {
                self.running.insert(
                    spec.task_id,
                    Running {
                        grant: grant.clone(),
                        blocked: false,
                    },
                );
                executor::spawn_async(&self.executor, ready, grant, ctx.address(), self.node_id);
            }
            TaskKind::ActorCreation(creation) => {
                let actor_id = creation.actor_id;
                if self.killed.remove(&actor_id) {
                    self.resources.release(&grant);
                    executor::finish(
                        &spec,
                        Err(Error::ActorDied {
                            actor: actor_id.to_string(),
                            class: spec.function.path.to_string(),
                            reason: "killed before it was created".into(),
                        }),
                    );
                    return;
                }
                let arbiter = Arbiter::new();
                let handle = arbiter.handle();
                let (raylet, gcs, node) = (ctx.address(), self.gcs.clone(), self.node_id);
                let exec = self.executor.clone();
                let gpus = grant.gpu_ids();
                let spec2 = spec.clone();
                let host = ActorHost::start_in_arbiter(&handle, move |_| {
                    ActorHost::new(spec2, node, gpus, raylet, gcs, exec)
                });
                host.do_send(Construct {
                    resolved: ready.resolved,
                });
                self.actors.insert(
                    actor_id,
                    Hosted {
                        host,
                        arbiter: handle,
                        grant,
                        lifetime: creation.lifetime_resources.clone(),
                    },
                );
            }
        }
    }

    fn spawn_worker(&mut self, ctx: &mut Context<Self>) -> Addr<Worker> {
        let (node, raylet) = (self.node_id, ctx.address());
        let w =
            Worker::start_in_arbiter(&Arbiter::new().handle(), move |_| Worker { node, raylet });
        self.workers.push(w.clone());
        w
    }
}

impl Actor for Raylet {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.gcs.do_send(RegisterNode {
            node_id: self.node_id,
            address: "embedded".into(),
            total: self.resources.total().clone(),
            raylet: ctx.address(),
        });
    }
}

impl Handler<SubmitTask> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: SubmitTask, ctx: &mut Context<Self>) {
        let spec = msg.spec;
        let views = [self.view()];
        let random = (spec.task_id.0 >> 16) as u64;
        match pick_node(
            &views,
            self.node_id,
            &spec.resources,
            &spec.strategy,
            random,
            &mut self.spread_cursor,
        ) {
            Placement::Unschedulable(reason) => return self.fail(&spec, reason),
            Placement::Infeasible => {
                tracing::warn!(task = %spec.task_id, function = %spec.function.path,
                    resources = ?spec.resources,
                    "no node can ever fit this request; it stays queued as a demand");
            }
            Placement::Node(_) => {}
        }
        let deps: Vec<_> = spec.dependencies().collect();
        if deps.is_empty() {
            return self.enqueue(
                Ready {
                    spec,
                    resolved: Vec::new(),
                },
                ctx,
            );
        }
        // Wait for the top-level ref arguments without blocking the raylet.
        let (tx, rx) = flume::unbounded();
        let n = deps.len();
        self.store.fetch_into(deps, tx);
        self.waiting_for_args += 1;
        let nargs = spec.args.len();
        let fut = async move {
            let mut resolved: Vec<Option<Stored>> = vec![None; nargs];
            for _ in 0..n {
                match rx.recv_async().await {
                    Ok((slot, v)) => resolved[slot as usize] = Some(v),
                    Err(_) => break,
                }
            }
            resolved
        };
        ctx.spawn(fut.into_actor(self).map(move |resolved, act, ctx| {
            act.waiting_for_args -= 1;
            act.enqueue(Ready { spec, resolved }, ctx);
        }));
    }
}

impl Handler<TaskDone> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: TaskDone, ctx: &mut Context<Self>) {
        if let Some(run) = self.running.remove(&msg.task_id) {
            if run.blocked {
                // Its CPU is already lent out; return the rest.
                let mut rest = run.grant.clone();
                rest.resources.set(
                    crate::resources::Resource::Cpu,
                    crate::resources::Amount::ZERO,
                );
                self.resources.release(&rest);
            } else {
                self.resources.release(&run.grant);
            }
        }
        if let Some(w) = msg.worker {
            if self.idle.len() < self.max_idle {
                self.idle.push(w);
            } else {
                self.workers.retain(|x| *x != w);
                w.do_send(Retire);
            }
        }
        self.dispatch(ctx);
    }
}

impl Handler<TaskBlocked> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: TaskBlocked, ctx: &mut Context<Self>) {
        if let Some(run) = self.running.get_mut(&msg.task_id) {
            if !run.blocked {
                run.blocked = true;
                self.resources.release_cpu(&run.grant);
            }
        }
        self.dispatch(ctx);
    }
}

impl Handler<TaskUnblocked> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: TaskUnblocked, ctx: &mut Context<Self>) {
        self.unblock.push_back((msg.task_id, msg.reply));
        self.dispatch(ctx);
    }
}

impl Handler<ActorReady> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: ActorReady, ctx: &mut Context<Self>) {
        if !msg.ok {
            if let Some(h) = self.actors.remove(&msg.actor_id) {
                self.resources.release(&h.grant);
                h.arbiter.stop();
            }
        } else if let Some(h) = self.actors.get_mut(&msg.actor_id) {
            // Placed with its placement resources; it keeps only its lifetime resources.
            if h.lifetime != h.grant.resources {
                self.resources.release(&h.grant);
                h.grant = Grant::default();
            }
        }
        self.dispatch(ctx);
    }
}

impl Handler<KillActor> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: KillActor, ctx: &mut Context<Self>) {
        if let Some(h) = self.actors.remove(&msg.actor_id) {
            h.host.do_send(StopHost);
            h.arbiter.stop();
            self.resources.release(&h.grant);
        } else {
            // Not created yet: drop it from the queue, or refuse it when it arrives.
            let id = msg.actor_id;
            let dropped = self.queue.remove_where(
                |r| matches!(&r.spec.kind, TaskKind::ActorCreation(c) if c.actor_id == id),
            );
            if dropped.is_empty() {
                self.killed.insert(id);
            }
            for r in dropped {
                executor::finish(
                    &r.spec,
                    Err(Error::ActorDied {
                        actor: id.to_string(),
                        class: r.spec.function.path.to_string(),
                        reason: "killed before it was created".into(),
                    }),
                );
            }
        }
        self.dispatch(ctx);
    }
}

impl Handler<GetResources> for Raylet {
    type Result = ResourceSnapshot;
    fn handle(&mut self, _: GetResources, _: &mut Context<Self>) -> ResourceSnapshot {
        ResourceSnapshot {
            available: self.resources.available().clone(),
            demands: self.queue.demands(),
            waiting_for_args: self.waiting_for_args,
        }
    }
}
