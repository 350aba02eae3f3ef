//! The `Raylet` actix actor: a node's resources, admission and dispatch, spillback of tasks to
//! other nodes, and the executors that run what it admits.
//!
//! Embedded, the raylet hands admitted work to a [`WorkerPool`] in its own process. On a cluster
//! it hands it to the job's worker process on this node (started on first use from the job's
//! executable, see [`processes`](crate::node::processes)), and forwards tasks that another node
//! should run to that node's raylet, using the resource view the GCS broadcasts.

use crate::error::Error;
use crate::ids::{ActorId, JobId, NodeId, ObjectId, PlacementGroupId, TaskId, WorkerId};
use crate::node::dispatch::DispatchQueue;
use crate::node::executor::Ready;
use crate::node::pool::{Executors, Finished, Launch};
use crate::node::processes::{JobWorkers, WorkerExited, WorkerStartFailed};
use crate::objects::owner::{self, NodeDied, TasksPlaced};
use crate::objects::ownership::RefTable;
use crate::objects::store::{StoreClient, Stored};
use crate::placement::group::committed_resources;
use crate::placement::policy::{pick_node, NodeView, Placement};
use crate::placement::SchedulingStrategy;
use crate::resources::{Grant, NodeResources, ResourceSet};
use crate::system::gcs::{ActorFailed, ActorLost, Gcs, Heartbeat, PeerLost, RegisterNode};
use crate::system::placement_groups::{CancelBundles, CommitBundles, PrepareBundles};
use crate::task::{TaskKind, TaskSpec};
use crate::transport::wire::{Body, Remote, Target};
use crate::transport::Transport;
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How many times a task may be forwarded between raylets before it queues where it is.
const MAX_HOPS: u8 = 3;

/// Queue a task (or actor creation) on this node; `hops` counts forwards so far (an actor
/// creation placed by the GCS arrives with 1).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct SubmitTask {
    pub(crate) spec: Arc<TaskSpec>,
    pub(crate) hops: u8,
}

/// A task finished; its resources are free again.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct TaskDone {
    pub(crate) task_id: TaskId,
}

/// A running task blocked in `get`: lend its CPU to other tasks.
#[derive(Message, Serialize, Deserialize)]
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

/// [`TaskUnblocked`] from a worker process: answered when the task has its CPU back.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct TaskUnblockedWire {
    pub(crate) task_id: TaskId,
}

/// An actor's constructor finished (`ok`) or failed.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct ActorReady {
    pub(crate) actor_id: ActorId,
    pub(crate) ok: bool,
}

/// Stop an actor hosted here (or about to be) and free its resources.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct KillActor {
    pub(crate) actor_id: ActorId,
}

/// The node's total and available resources.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "ResourceSnapshot")]
pub(crate) struct GetResources;

/// What [`GetResources`] answers.
#[derive(Debug, Clone, MessageResponse, Serialize, Deserialize)]
pub(crate) struct ResourceSnapshot {
    pub(crate) available: ResourceSet,
    /// Queued requests that do not fit now: each resource shape with how many wait for it.
    pub(crate) demands: Vec<(ResourceSet, usize)>,
    /// Tasks waiting for their arguments.
    pub(crate) waiting_for_args: usize,
}

/// One node in the GCS's resource view.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ViewEntry {
    pub(crate) node_id: NodeId,
    pub(crate) address: SocketAddr,
    pub(crate) alive: bool,
    pub(crate) total: ResourceSet,
    pub(crate) available: ResourceSet,
}

/// The GCS's view of every node, broadcast to each raylet.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct ClusterView {
    pub(crate) nodes: Vec<ViewEntry>,
}

/// A job's worker process on this node is up and listens at `address`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct RegisterWorker {
    pub(crate) job_id: JobId,
    pub(crate) worker_id: WorkerId,
    pub(crate) address: SocketAddr,
    pub(crate) pid: u32,
}

/// A job's driver is gone: stop its worker process here.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct JobEnded {
    pub(crate) job_id: JobId,
}

struct Running {
    grant: Grant,
    blocked: bool,
    spec: Arc<TaskSpec>,
}

struct HostedActor {
    grant: Grant,
    lifetime: ResourceSet,
    job: JobId,
    detached: bool,
    /// The placement group it was scheduled into.
    group: Option<PlacementGroupId>,
    /// Its type, for error messages.
    class: String,
}

/// A placement-group bundle reserved on this node.
struct BundleHold {
    /// The node resources set aside for it.
    grant: Grant,
    /// Once committed: the group resources it added to the node.
    committed: Option<ResourceSet>,
}

fn group_of(spec: &TaskSpec) -> Option<PlacementGroupId> {
    match &spec.strategy {
        SchedulingStrategy::PlacementGroup { group, .. } => Some(*group),
        _ => None,
    }
}

/// Where admitted work runs.
pub(crate) enum Runner {
    /// Executors in this process, owned by the raylet (embedded cluster).
    Local(Box<Executors>),
    /// One worker process per job (a cluster node).
    Processes(Box<JobWorkers>),
}

/// How a raylet takes part in a cluster.
pub(crate) struct ClusterLink {
    pub(crate) net: Arc<Transport>,
    pub(crate) heartbeat: Duration,
}

/// The raylet of one node.
pub(crate) struct Raylet {
    node_id: NodeId,
    resources: NodeResources,
    gcs: Target<Gcs>,
    store: StoreClient,
    executor: tokio::runtime::Handle,
    queue: DispatchQueue<Ready>,
    waiting_for_args: usize,
    running: HashMap<TaskId, Running>,
    unblock: VecDeque<(TaskId, flume::Sender<()>)>,
    runner: Option<Runner>,
    actors: HashMap<ActorId, HostedActor>,
    killed: HashSet<ActorId>,
    spread_cursor: usize,
    link: Option<ClusterLink>,
    /// The other nodes, as the GCS last reported them.
    view: Vec<ViewEntry>,
    /// Tasks queued here since the last report, by owner: owners retry them if this node dies.
    placed: HashMap<(SocketAddr, NodeId), Vec<ObjectId>>,
    /// Placement-group bundles reserved here, by group and bundle index.
    bundles: HashMap<(PlacementGroupId, u32), BundleHold>,
    /// Embedded: the one process's owner table, where small objects live (not in the store).
    owner_table: Option<Arc<RefTable>>,
}

impl Raylet {
    pub(crate) fn new(
        node_id: NodeId,
        total: ResourceSet,
        gcs: Target<Gcs>,
        store: StoreClient,
        executor: tokio::runtime::Handle,
        link: Option<ClusterLink>,
    ) -> Self {
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
            runner: None,
            actors: HashMap::new(),
            killed: HashSet::new(),
            spread_cursor: 0,
            link,
            view: Vec::new(),
            placed: HashMap::new(),
            bundles: HashMap::new(),
            owner_table: None,
        }
    }

    /// Embedded: resolve arguments from the process's owner table (small objects live only
    /// there), then the store.
    pub(crate) fn with_owner_table(mut self, refs: Arc<RefTable>) -> Self {
        self.owner_table = Some(refs);
        self
    }

    /// Notes that a task of a remote owner is queued on `node` (this one, or the one it was
    /// just forwarded to).
    fn note_placed(&mut self, spec: &TaskSpec, node: NodeId) {
        if let (Some(link), Some(owner)) = (&self.link, spec.owner.addr) {
            if owner != link.net.local_addr() {
                self.placed
                    .entry((owner, node))
                    .or_default()
                    .push(spec.return_id);
            }
        }
    }

    /// Tells owners where their tasks are queued.
    fn flush_placed(&mut self) {
        let Some(link) = &self.link else { return };
        for ((owner, node), returns) in self.placed.drain() {
            // Tasks queued here: the owner may send more like them straight here.
            let raylet = (node == self.node_id).then(|| link.net.local_addr());
            Remote {
                net: link.net.clone(),
                addr: owner,
            }
            .send_body(Body::TasksPlaced(TasksPlaced {
                node,
                returns,
                raylet,
            }));
        }
    }

    /// Sets where admitted work runs (before the raylet starts).
    pub(crate) fn with_runner(mut self, runner: Runner) -> Self {
        self.runner = Some(runner);
        self
    }

    fn address(&self) -> String {
        match &self.link {
            Some(l) => l.net.local_addr().to_string(),
            None => "embedded".into(),
        }
    }

    fn own_view(&self) -> NodeView {
        NodeView {
            id: self.node_id,
            alive: true,
            total: self.resources.total().clone(),
            available: self.resources.available().clone(),
        }
    }

    /// This node as it is now, and the others as last reported.
    fn views(&self) -> Vec<NodeView> {
        let mut v = vec![self.own_view()];
        v.extend(
            self.view
                .iter()
                .filter(|e| e.node_id != self.node_id)
                .map(|e| NodeView {
                    id: e.node_id,
                    alive: e.alive,
                    total: e.total.clone(),
                    available: e.available.clone(),
                }),
        );
        v.sort_by_key(|n| n.id);
        v
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
        self.report(spec, Err(error));
    }

    fn report(&self, spec: &Arc<TaskSpec>, outcome: Result<bytes::Bytes, Error>) {
        owner::report(self.link.as_ref().map(|l| &l.net), spec, outcome);
    }

    /// Sends a task to another node's raylet.
    fn forward(
        &mut self,
        node: NodeId,
        spec: Arc<TaskSpec>,
        hops: u8,
    ) -> Result<(), Arc<TaskSpec>> {
        if self.link.is_none() {
            return Err(spec);
        }
        let Some(entry) = self.view.iter_mut().find(|e| e.node_id == node) else {
            return Err(spec);
        };
        // Count it against that node until its next report, so a burst spreads.
        let _ = entry.available.checked_sub(&spec.resources);
        tracing::debug!(task = %spec.task_id, to = %node, "forwarding task");
        let address = entry.address;
        // The owner hears where it went, so the task is retried if that node dies before the
        // node itself reports it.
        self.note_placed(&spec, node);
        if let Some(link) = &self.link {
            Target::<Raylet>::remote(&link.net, address).do_send(SubmitTask { spec, hops });
        }
        Ok(())
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
            TaskKind::Normal { .. } => {
                self.running.insert(
                    spec.task_id,
                    Running {
                        grant: grant.clone(),
                        blocked: false,
                        spec: spec.clone(),
                    },
                );
            }
            TaskKind::ActorCreation(creation) => {
                let actor_id = creation.actor_id;
                if self.killed.remove(&actor_id) {
                    self.resources.release(&grant);
                    self.report(
                        &spec,
                        Err(Error::ActorDied {
                            actor: actor_id.to_string(),
                            class: spec.function.path.to_string(),
                            reason: "killed before it was created".into(),
                        }),
                    );
                    return;
                }
                self.actors.insert(
                    actor_id,
                    HostedActor {
                        grant: grant.clone(),
                        lifetime: creation.lifetime_resources.clone(),
                        job: spec.job_id,
                        detached: creation.detached,
                        group: group_of(&spec),
                        class: spec.function.path.to_string(),
                    },
                );
            }
        }
        let launch = Launch {
            spec: ready.spec,
            resolved: ready.resolved,
            grant,
        };
        match &mut self.runner {
            Some(Runner::Local(exec)) => exec.launch(launch, ctx.address().recipient()),
            Some(Runner::Processes(workers)) => {
                let me = ctx.address();
                workers.launch(launch, &self.gcs, &self.executor, me);
            }
            None => tracing::error!("a raylet without executors cannot run tasks"),
        }
    }

    /// Aborts every running task whose spec `matches`, with the error `error` makes from the
    /// task's function path.
    fn abort_running_where(
        &mut self,
        matches: impl Fn(&TaskSpec) -> bool,
        error: impl Fn(String) -> Error,
    ) {
        let hit: Vec<(TaskId, String)> = self
            .running
            .iter()
            .filter(|(_, r)| matches(&r.spec))
            .map(|(id, r)| (*id, r.spec.function.path.to_string()))
            .collect();
        for (task_id, function) in hit {
            self.abort_running(task_id, error(function));
        }
    }

    /// Releases what a task holds and tells its owner it failed.
    fn abort_running(&mut self, task_id: TaskId, error: Error) {
        if let Some(run) = self.running.remove(&task_id) {
            self.release_running(&run);
            self.report(&run.spec, Err(error));
        }
    }

    fn release_running(&mut self, run: &Running) {
        if run.blocked {
            // Its CPU is already lent out; return the rest.
            self.resources.release(&run.grant.without_cpu());
        } else {
            self.resources.release(&run.grant);
        }
    }

    /// An actor hosted here died with its process: free it and tell the GCS (which restarts it
    /// if its policy allows).
    fn actor_lost(&mut self, actor_id: ActorId, reason: &str) {
        if let Some(h) = self.actors.remove(&actor_id) {
            self.resources.release(&h.grant);
            self.gcs.do_send(ActorLost {
                actor_id,
                error: Error::ActorDied {
                    actor: actor_id.to_string(),
                    class: h.class.clone(),
                    reason: reason.to_string(),
                },
            });
        }
    }

    fn stop_actor(&mut self, actor_id: ActorId, job: JobId) {
        match &mut self.runner {
            Some(Runner::Local(exec)) => exec.stop_actor(actor_id),
            Some(Runner::Processes(workers)) => workers.stop_actor(job, actor_id),
            None => {}
        }
    }

    /// Tasks queued here that this node can never run, forwarded to a node that can, now that
    /// the view changed.
    fn respill(&mut self) {
        if self.link.is_none() {
            return;
        }
        let total = self.resources.total().clone();
        let views = self.views();
        let me = self.node_id;
        let stuck = self.queue.remove_where(|r| {
            !r.spec.resources.is_subset_of(&total)
                && views
                    .iter()
                    .any(|v| v.alive && v.id != me && v.feasible(&r.spec.resources))
        });
        for ready in stuck {
            let target = views
                .iter()
                .find(|v| v.alive && v.id != me && v.feasible(&ready.spec.resources))
                .map(|v| v.id);
            let spec = ready.spec.clone();
            let back = match target {
                Some(node) => self.forward(node, spec, 1).err(),
                None => Some(spec),
            };
            if back.is_some() {
                let class = ready.spec.resources.clone();
                self.queue.push(&class, ready);
            }
        }
    }
}

impl Actor for Raylet {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let local = matches!(self.gcs, Target::Local(_));
        let msg = RegisterNode {
            node_id: self.node_id,
            address: self.address(),
            total: self.resources.total().clone(),
            raylet: local.then(|| ctx.address()),
        };
        match &self.gcs {
            Target::Local(gcs) => gcs.do_send(msg),
            Target::Remote(_) => {
                let gcs = self.gcs.clone();
                let node = self.node_id;
                ctx.spawn(
                    async move { gcs.send(msg).await.and_then(|r| r) }
                        .into_actor(self)
                        .map(move |r, _, _| {
                            if let Err(e) = r {
                                tracing::error!(node = %node, error = %e, "node registration failed");
                            }
                        }),
                );
            }
        }
        if self.link.is_some() {
            ctx.run_interval(Duration::from_millis(20), |act, _| act.flush_placed());
        }
        let period = self
            .link
            .as_ref()
            .map_or(Duration::from_millis(200), |l| l.heartbeat);
        {
            ctx.run_interval(period, |act, _| {
                act.gcs.do_send(Heartbeat {
                    node_id: act.node_id,
                    available: act.resources.available().clone(),
                    total: act.resources.total().clone(),
                });
            });
        }
    }
}

impl Handler<SubmitTask> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: SubmitTask, ctx: &mut Context<Self>) {
        let SubmitTask { spec, hops } = msg;
        let locally_feasible = spec.resources.is_subset_of(self.resources.total());
        let views = self.views();
        let random = (spec.task_id.0 >> 16) as u64;
        let pinned_elsewhere = matches!(&spec.strategy,
            SchedulingStrategy::NodeAffinity { node_id, .. } if *node_id != self.node_id);
        let placement = if hops > 0 && locally_feasible && !pinned_elsewhere {
            // Placed here by another raylet or the GCS: run here.
            Placement::Node(self.node_id)
        } else {
            pick_node(
                &views,
                self.node_id,
                &spec.resources,
                &spec.strategy,
                random,
                &mut self.spread_cursor,
            )
        };
        let spec = match placement {
            Placement::Unschedulable(reason) => return self.fail(&spec, reason),
            Placement::Node(node) if node != self.node_id && hops < MAX_HOPS => {
                match self.forward(node, spec, hops + 1) {
                    Ok(()) => return,
                    Err(spec) => spec,
                }
            }
            Placement::Node(_) => spec,
            Placement::Infeasible => {
                tracing::warn!(task = %spec.task_id, function = %spec.function.path,
                    resources = ?spec.resources,
                    "no node can ever fit this request; it stays queued as a demand");
                spec
            }
        };
        self.note_placed(&spec, self.node_id);
        let deps = spec.dependency_refs();
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
        self.waiting_for_args += 1;
        let nargs = spec.args.len();
        let n = deps.len();
        let Some(link) = &self.link else {
            let (tx, rx) = flume::unbounded();
            let wants = deps.into_iter().map(|(i, r)| (i, r.id));
            match &self.owner_table {
                Some(refs) => owner::fetch_owned(refs, &self.store, wants, &tx),
                None => self.store.fetch_into(wants, tx),
            }
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
            return;
        };
        // On a cluster, values above RAYLET_INLINE_MAX are left for the executing worker to
        // fetch from their owner, so they cross the network once.
        let (tx, rx) = flume::unbounded();
        owner::fetch_remote_upto(
            &link.net,
            &self.executor,
            deps,
            owner::RAYLET_INLINE_MAX,
            tx,
        );
        let fut = async move {
            let mut resolved: Vec<Option<Stored>> = vec![None; nargs];
            for _ in 0..n {
                match rx.recv_async().await {
                    Ok((slot, v)) => resolved[slot as usize] = v,
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
            self.release_running(&run);
        }
        self.dispatch(ctx);
    }
}

impl Handler<Finished> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: Finished, ctx: &mut Context<Self>) {
        if let Some(run) = self.running.remove(&msg.task_id) {
            self.release_running(&run);
        }
        if let Some(Runner::Local(exec)) = &mut self.runner {
            exec.worker_free(msg.worker);
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

impl Handler<TaskUnblockedWire> for Raylet {
    type Result = ResponseFuture<Result<(), Error>>;
    fn handle(&mut self, msg: TaskUnblockedWire, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = flume::bounded(1);
        self.unblock.push_back((msg.task_id, tx));
        self.dispatch(ctx);
        Box::pin(async move {
            rx.recv_async()
                .await
                .map_err(|_| Error::shutdown("waiting for a CPU"))
        })
    }
}

impl Handler<ActorReady> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: ActorReady, ctx: &mut Context<Self>) {
        if !msg.ok {
            if let Some(h) = self.actors.remove(&msg.actor_id) {
                self.resources.release(&h.grant);
                self.stop_actor(msg.actor_id, h.job);
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
            self.stop_actor(msg.actor_id, h.job);
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
                self.report(
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

impl Handler<ClusterView> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: ClusterView, _: &mut Context<Self>) {
        self.view = msg.nodes;
        self.respill();
    }
}

impl Handler<RegisterWorker> for Raylet {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: RegisterWorker, _: &mut Context<Self>) -> Self::Result {
        match &mut self.runner {
            Some(Runner::Processes(workers)) => {
                workers.registered(msg.job_id, msg.address, msg.pid);
                Ok(())
            }
            _ => Err(Error::invalid(
                "this node runs tasks in its own process and takes no worker processes",
            )),
        }
    }
}

impl Handler<WorkerStartFailed> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: WorkerStartFailed, ctx: &mut Context<Self>) {
        tracing::error!(job = %msg.job_id, error = %msg.error, "cannot start a worker process");
        let queued = match &mut self.runner {
            Some(Runner::Processes(workers)) => workers.failed(msg.job_id),
            _ => Vec::new(),
        };
        let reason = format!("its worker process could not start: {}", msg.error);
        for launch in queued {
            match &launch.spec.kind {
                TaskKind::ActorCreation(c) => {
                    let actor_id = c.actor_id;
                    self.actor_lost(actor_id, &reason);
                    self.report(
                        &launch.spec,
                        Err(Error::ActorDied {
                            actor: actor_id.to_string(),
                            class: launch.spec.function.path.to_string(),
                            reason: reason.clone(),
                        }),
                    );
                }
                TaskKind::Normal { .. } => self.abort_running(
                    launch.spec.task_id,
                    Error::WorkerDied {
                        function: launch.spec.function.path.to_string(),
                        reason: reason.clone(),
                    },
                ),
            }
        }
        self.dispatch(ctx);
    }
}

impl Handler<WorkerExited> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: WorkerExited, ctx: &mut Context<Self>) {
        let current = match &mut self.runner {
            Some(Runner::Processes(workers)) => workers.exited(msg.job_id, msg.pid),
            _ => false,
        };
        if !current {
            return;
        }
        tracing::warn!(job = %msg.job_id, pid = msg.pid, status = %msg.status, "worker process exited");
        let reason = format!(
            "its worker process (pid {}) exited: {}",
            msg.pid, msg.status
        );
        let job = msg.job_id;
        self.abort_running_where(
            |spec| spec.job_id == job,
            |function| Error::WorkerDied {
                function,
                reason: reason.clone(),
            },
        );
        let actors: Vec<ActorId> = self
            .actors
            .iter()
            .filter(|(_, h)| h.job == msg.job_id)
            .map(|(id, _)| *id)
            .collect();
        for actor_id in actors {
            self.actor_lost(actor_id, &reason);
        }
        self.dispatch(ctx);
    }
}

impl Handler<JobEnded> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: JobEnded, _: &mut Context<Self>) {
        let keeps_detached = self
            .actors
            .values()
            .any(|h| h.job == msg.job_id && h.detached);
        if keeps_detached {
            return;
        }
        if let Some(Runner::Processes(workers)) = &mut self.runner {
            workers.kill(msg.job_id);
        }
    }
}

impl Handler<NodeDied> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: NodeDied, _: &mut Context<Self>) {
        // Worker processes here own tasks too: pass it on.
        if let Some(Runner::Processes(workers)) = &self.runner {
            workers.broadcast(&msg);
        }
    }
}

impl Handler<PeerLost> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: PeerLost, _: &mut Context<Self>) {
        // A worker process whose connection closed is as good as dead.
        if let Some(Runner::Processes(workers)) = &mut self.runner {
            workers.kill_at(msg.addr);
        }
    }
}

impl Raylet {
    /// Stops what uses `group` here (its bundles are going): actors are killed, tasks failed
    /// (queued ones at once; running ones are reported failed to their owners).
    fn evict_group(&mut self, group: PlacementGroupId) {
        let reason = "its placement group was removed";
        let actors: Vec<ActorId> = self
            .actors
            .iter()
            .filter(|(_, h)| h.group == Some(group))
            .map(|(id, _)| *id)
            .collect();
        for actor_id in actors {
            if let Some(h) = self.actors.remove(&actor_id) {
                self.stop_actor(actor_id, h.job);
                self.resources.release(&h.grant);
                self.gcs.do_send(ActorFailed {
                    actor_id,
                    error: Error::ActorDied {
                        actor: actor_id.to_string(),
                        class: h.class.clone(),
                        reason: reason.into(),
                    },
                });
            }
        }
        let queued = self
            .queue
            .remove_where(|r| group_of(&r.spec) == Some(group));
        for r in queued {
            let error = Error::Cancelled {
                task: r.spec.function.path.to_string(),
                reason: reason.into(),
            };
            let error = match &r.spec.kind {
                TaskKind::ActorCreation(c) => {
                    let e = Error::ActorUnschedulable {
                        actor: c.actor_id.to_string(),
                        class: r.spec.function.path.to_string(),
                        reason: "its placement group was removed".into(),
                    };
                    self.gcs.do_send(ActorFailed {
                        actor_id: c.actor_id,
                        error: e.clone(),
                    });
                    e
                }
                TaskKind::Normal { .. } => error,
            };
            self.report(&r.spec, Err(error));
        }
        self.abort_running_where(
            |spec| group_of(spec) == Some(group),
            |task| Error::Cancelled {
                task,
                reason: reason.into(),
            },
        );
    }
}

impl Handler<PrepareBundles> for Raylet {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: PrepareBundles, ctx: &mut Context<Self>) -> Self::Result {
        let mut taken: Vec<(u32, Grant)> = Vec::new();
        for (index, bundle) in &msg.bundles {
            if self.bundles.contains_key(&(msg.group, *index)) {
                continue;
            }
            match self.resources.try_acquire(bundle) {
                Some(g) => taken.push((*index, g)),
                None => {
                    for (_, g) in &taken {
                        self.resources.release(g);
                    }
                    return Err(Error::invalid(format!(
                        "node {} cannot reserve bundle {index} ({bundle:?}) now: it has {:?} free",
                        self.node_id,
                        self.resources.available()
                    )));
                }
            }
        }
        for (index, grant) in taken {
            self.bundles.insert(
                (msg.group, index),
                BundleHold {
                    grant,
                    committed: None,
                },
            );
        }
        if msg.commit {
            self.commit_group(msg.group, ctx);
        }
        Ok(())
    }
}

impl Handler<CommitBundles> for Raylet {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: CommitBundles, ctx: &mut Context<Self>) -> Self::Result {
        self.commit_group(msg.group, ctx);
        Ok(())
    }
}

impl Raylet {
    /// Phase two: the prepared bundles of `group` become the group's resources.
    fn commit_group(&mut self, group: PlacementGroupId, ctx: &mut Context<Self>) {
        for ((g, index), hold) in self.bundles.iter_mut() {
            if *g == group && hold.committed.is_none() {
                let extra = committed_resources(*g, *index, &hold.grant.resources);
                self.resources.add_capacity(&extra);
                hold.committed = Some(extra);
            }
        }
        self.dispatch(ctx);
    }
}

impl Handler<CancelBundles> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: CancelBundles, ctx: &mut Context<Self>) {
        let keys: Vec<(PlacementGroupId, u32)> = self
            .bundles
            .keys()
            .filter(|(g, i)| *g == msg.group && msg.indices.as_ref().is_none_or(|v| v.contains(i)))
            .copied()
            .collect();
        if msg.indices.is_none() {
            // The group is gone: what waits for it here (even without its bundles) goes too.
            self.evict_group(msg.group);
        }
        for key in keys {
            if let Some(hold) = self.bundles.remove(&key) {
                if let Some(extra) = &hold.committed {
                    self.resources.remove_capacity(extra);
                }
                self.resources.release(&hold.grant);
            }
        }
        self.dispatch(ctx);
    }
}
