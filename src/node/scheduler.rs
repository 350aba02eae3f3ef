//! The raylet's deciding core: admission, dispatch, CPU lending, spillback, hosted actors and
//! placement-group bundles, as a pure state machine.
//!
//! Events come in (a task submitted, its arguments resolved, a task finished or blocked in
//! `get`, the GCS's view of the cluster, an actor killed, a bundle to prepare, a worker lost,
//! the clock) and the core answers with [`Action`]s for the raylet actor to carry out (run this
//! task with this grant, forward that one to another node, tell an owner its task failed, tell
//! the GCS an actor died). It holds no sockets, no actors and reads no clock, so every rule here
//! is tested by feeding events and looking at actions, and several cores can be wired together
//! (see the tests) to check spillback between nodes and node failure.

use crate::error::Error;
use crate::ids::{ActorId, IdMap, JobId, NodeId, ObjectId, PlacementGroupId, TaskId};
use crate::node::dispatch::DispatchQueue;
use crate::placement::group::committed_resources;
use crate::placement::policy::{claim, pick_node, NodeView, Placement};
use crate::placement::SchedulingStrategy;
use crate::protocol::raylet::{ResourceSnapshot, ViewEntry};
use crate::protocol::refs::{RawRef, Stored};
use crate::protocol::task::{TaskKind, TaskSpec, WorkerKey};
use crate::resources::{Grant, NodeResources, ResourceSet};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many times a task may be forwarded between raylets before it queues where it is.
pub(crate) const MAX_HOPS: u8 = 3;

/// How long a kill for an actor this node never saw is remembered (in case its creation
/// arrives after the kill).
pub(crate) const KILLED_TTL: Duration = Duration::from_secs(60);

/// A task whose top-level ref arguments have been fetched.
#[derive(Debug)]
pub(crate) struct Ready {
    pub(crate) spec: Arc<TaskSpec>,
    /// The value of each ref argument, by argument index (`None`: the worker fetches it).
    pub(crate) resolved: Vec<Option<Stored>>,
    /// Where the arguments the worker fetches itself are kept (by the processes that made
    /// them), and their bytes: the node holding most of them is where the task would rather
    /// run.
    pub(crate) kept: Vec<(NodeId, u64)>,
}

/// What the raylet must do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Run the task with these resources (on its job's worker).
    Launch(Ready, Grant),
    /// Fetch these arguments of a queued task, then report them with [`Scheduler::resolved`].
    Resolve(Arc<TaskSpec>, Vec<(usize, RawRef)>),
    /// Send the task to the raylet of `node`, whose process is `address`.
    Forward {
        address: SocketAddr,
        spec: Arc<TaskSpec>,
        hops: u8,
    },
    /// Tell the task's owner it failed.
    Report(Arc<TaskSpec>, Error),
    /// Tell the owner of a leasable task that it waits here for resources (it may take the
    /// task back for a slot of its own that frees first: [`Scheduler::take_back`]).
    Queued(Arc<TaskSpec>),
    /// Tell the task's owner that no node of the cluster fits it as it is now.
    Infeasible(Arc<TaskSpec>),
    /// Tell the GCS the actor died for good.
    ActorFailed(ActorId, Error),
    /// Tell the GCS the actor's process died (it may be restarted).
    ActorLost(ActorId, Error),
    /// Stop the actor in its worker (its job's, or the job's one for its environment).
    StopActor(WorkerKey, ActorId),
    /// The blocked task has its CPU back: answer its request.
    Unblocked(TaskId),
}

#[derive(Debug)]
struct Running {
    grant: Grant,
    blocked: bool,
    spec: Arc<TaskSpec>,
}

#[derive(Debug)]
struct HostedActor {
    grant: Grant,
    lifetime: ResourceSet,
    /// The worker process it lives in: its job's, or the job's one for its environment.
    worker: WorkerKey,
    detached: bool,
    /// The placement group it was scheduled into.
    group: Option<PlacementGroupId>,
    /// Its type, for error messages.
    class: String,
}

/// A placement-group bundle reserved on this node.
#[derive(Debug)]
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

/// Whether a task waiting for resources here may move to a node with them free: not when it is
/// pinned to this node or to a placement-group bundle reserved here.
fn movable(strategy: &SchedulingStrategy) -> bool {
    matches!(
        strategy,
        SchedulingStrategy::Default | SchedulingStrategy::Spread
    )
}

/// Whether `spec` is a detached actor's creation, which outlives the job that made it.
fn outlives_its_job(spec: &TaskSpec) -> bool {
    matches!(&spec.kind, TaskKind::ActorCreation(c) if c.detached)
}

/// The error of a task no node may run.
fn unschedulable(spec: &TaskSpec, reason: String) -> Error {
    let path = spec.function.path.to_string();
    match &spec.kind {
        TaskKind::ActorCreation(c) => Error::ActorUnschedulable {
            actor: c.actor_id.to_string(),
            class: path,
            reason,
        },
        TaskKind::Normal { .. } => Error::TaskUnschedulable {
            function: path,
            reason,
        },
    }
}

/// The deciding core of one node's raylet (see the module docs).
#[derive(Debug)]
pub(crate) struct Scheduler {
    node_id: NodeId,
    /// This node's process: tasks of owners elsewhere are reported to them when queued here.
    here: SocketAddr,
    resources: NodeResources,
    queue: DispatchQueue<Ready>,
    waiting_for_args: usize,
    /// The resources the tasks waiting for their arguments will ask for.
    resolving: ResourceSet,
    running: IdMap<TaskId, Running>,
    unblock: VecDeque<TaskId>,
    actors: HashMap<ActorId, HostedActor>,
    /// Kills of actors not created here (yet), with when they came.
    killed: HashMap<ActorId, Instant>,
    /// Jobs that ended, with when: their work still arriving (forwarded, or done fetching its
    /// arguments) is dropped instead of queued.
    ended: HashMap<JobId, Instant>,
    spread_cursor: usize,
    /// The other nodes, as the GCS last reported them.
    view: Vec<ViewEntry>,
    /// Tasks queued (or forwarded) since the last report, by owner and node.
    placed: HashMap<(SocketAddr, NodeId), Vec<ObjectId>>,
    /// Placement-group bundles reserved here, by group and bundle index.
    bundles: HashMap<(PlacementGroupId, u32), BundleHold>,
}

impl Scheduler {
    pub(crate) fn new(node_id: NodeId, here: SocketAddr, total: ResourceSet) -> Self {
        Scheduler {
            node_id,
            here,
            resources: NodeResources::new(total),
            queue: DispatchQueue::default(),
            waiting_for_args: 0,
            resolving: ResourceSet::new(),
            running: IdMap::default(),
            unblock: VecDeque::new(),
            actors: HashMap::new(),
            killed: HashMap::new(),
            ended: HashMap::new(),
            spread_cursor: 0,
            view: Vec::new(),
            placed: HashMap::new(),
            bundles: HashMap::new(),
        }
    }

    /// The node this core schedules for.
    pub(crate) fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The node's total resources.
    pub(crate) fn total(&self) -> &ResourceSet {
        self.resources.total()
    }

    /// The node's available resources.
    pub(crate) fn available(&self) -> &ResourceSet {
        self.resources.available()
    }

    /// What `GetResources` answers.
    pub(crate) fn snapshot(&self) -> ResourceSnapshot {
        ResourceSnapshot {
            available: self.resources.available().clone(),
            demands: self.queue.demands(),
            waiting_for_args: self.waiting_for_args,
        }
    }

    /// What waits here for resources: the queued tasks' requests and those of the tasks whose
    /// arguments are being fetched (what the heartbeat reports, and what the policy counts as
    /// this node's backlog).
    pub(crate) fn backlog(&self) -> ResourceSet {
        let mut sum = self.queue.backlog();
        sum.add(&self.resolving);
        sum
    }

    fn own_view(&self) -> NodeView {
        NodeView {
            id: self.node_id,
            alive: true,
            total: self.resources.total().clone(),
            available: self.resources.available().clone(),
            backlog: self.backlog(),
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
                    backlog: e.backlog.clone(),
                }),
        );
        v.sort_by_key(|n| n.id);
        v
    }

    /// Notes that a task of an owner elsewhere is queued on `node`.
    fn note_placed(&mut self, spec: &TaskSpec, node: NodeId) {
        if spec.owner.addr != self.here {
            self.placed
                .entry((spec.owner.addr, node))
                .or_default()
                .push(spec.return_id);
        }
    }

    /// How many tasks wait in the dispatch queue.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether queued tasks wait to be reported to their owners.
    pub(crate) fn has_placed(&self) -> bool {
        !self.placed.is_empty()
    }

    /// The tasks queued or forwarded since the last call, by owner and node.
    pub(crate) fn take_placed(&mut self) -> Vec<((SocketAddr, NodeId), Vec<ObjectId>)> {
        self.placed.drain().collect()
    }

    /// Fails a task that no node may run.
    fn fail(&mut self, spec: Arc<TaskSpec>, reason: String, out: &mut Vec<Action>) {
        let error = unschedulable(&spec, reason);
        if let TaskKind::ActorCreation(c) = &spec.kind {
            out.push(Action::ActorFailed(c.actor_id, error.clone()));
        }
        out.push(Action::Report(spec, error));
    }

    /// Sends a task to another node's raylet; gives it back if that node is not in the view.
    fn forward(
        &mut self,
        node: NodeId,
        spec: Arc<TaskSpec>,
        hops: u8,
        out: &mut Vec<Action>,
    ) -> Result<(), Arc<TaskSpec>> {
        let Some(entry) = self.view.iter_mut().find(|e| e.node_id == node) else {
            return Err(spec);
        };
        // Count it against that node until its next report, so a burst spreads.
        claim(&mut entry.available, &mut entry.backlog, &spec.resources);
        let address = entry.address;
        // The owner hears where it went, so the task is retried if that node dies before the
        // node itself reports it.
        self.note_placed(&spec, node);
        out.push(Action::Forward {
            address,
            spec,
            hops,
        });
        Ok(())
    }

    /// A task (or actor creation) arrives, forwarded `hops` times so far; `random` breaks ties.
    pub(crate) fn submit(&mut self, spec: Arc<TaskSpec>, hops: u8, random: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if self.orphaned(&spec) {
            return out;
        }
        let locally_feasible = spec.resources.is_subset_of(self.resources.total());
        let pinned_elsewhere = matches!(&spec.strategy,
            SchedulingStrategy::NodeAffinity { node_id, .. } if *node_id != self.node_id);
        let placement = if hops > 0 && locally_feasible && !pinned_elsewhere {
            // Placed here by another raylet or the GCS: run here.
            Placement::Node(self.node_id)
        } else {
            let views = self.views();
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
            Placement::Unschedulable(reason) => {
                self.fail(spec, reason, &mut out);
                return out;
            }
            Placement::Node(node) if node != self.node_id && hops < MAX_HOPS => {
                match self.forward(node, spec, hops + 1, &mut out) {
                    Ok(()) => return out,
                    Err(spec) => spec,
                }
            }
            Placement::Node(_) => spec,
            Placement::Infeasible => {
                tracing::warn!(task = %spec.task_id, function = %spec.function.path,
                    resources = ?spec.resources,
                    "no node can ever fit this request; it stays queued as a demand");
                // Work waiting for its placement group's reservation is not news.
                if group_of(&spec).is_none() {
                    out.push(Action::Infeasible(spec.clone()));
                }
                spec
            }
        };
        self.note_placed(&spec, self.node_id);
        let deps = spec.dependency_refs();
        if deps.is_empty() {
            self.enqueue(
                Ready {
                    kept: Vec::new(),
                    spec,
                    resolved: Vec::new(),
                },
                &mut out,
            );
        } else {
            // Its top-level ref arguments are fetched first, without blocking the raylet.
            self.waiting_for_args += 1;
            self.resolving.add(&spec.resources);
            out.push(Action::Resolve(spec, deps));
        }
        out
    }

    /// The arguments of a task this core asked to [`Action::Resolve`] are here.
    pub(crate) fn resolved(&mut self, ready: Ready) -> Vec<Action> {
        let mut out = Vec::new();
        self.waiting_for_args = self.waiting_for_args.saturating_sub(1);
        self.resolving.saturating_sub(&ready.spec.resources);
        if self.orphaned(&ready.spec) {
            return out;
        }
        if let Some(node) = self.nearer_to_arguments(&ready) {
            tracing::debug!(task = %ready.spec.task_id, node = %node,
                "sent where most of its arguments are");
            match self.forward(node, ready.spec, 1, &mut out) {
                Ok(()) => return out,
                Err(spec) => {
                    let ready = Ready { spec, ..ready };
                    self.enqueue(ready, &mut out);
                    return out;
                }
            }
        }
        self.enqueue(ready, &mut out);
        out
    }

    /// The node that keeps more of a task's argument bytes than this one, when the task may go
    /// there: Ray's locality-aware leasing, for tasks under the default strategy only (a
    /// strategy the user chose wins), to a live node that fits the task. If that node is busy
    /// the task queues there, and moves on if room frees elsewhere first (as any queued task).
    fn nearer_to_arguments(&self, ready: &Ready) -> Option<NodeId> {
        if ready.kept.is_empty()
            || !matches!(ready.spec.strategy, SchedulingStrategy::Default)
            || !ready.spec.is_normal()
        {
            return None;
        }
        let mut bytes: Vec<(NodeId, u64)> = Vec::new();
        for (node, size) in &ready.kept {
            match bytes.iter_mut().find(|(n, _)| n == node) {
                Some((_, b)) => *b += size,
                None => bytes.push((*node, *size)),
            }
        }
        let here = bytes
            .iter()
            .find(|(n, _)| *n == self.node_id)
            .map_or(0, |(_, b)| *b);
        let (best, most) = bytes
            .iter()
            .copied()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))?;
        if best == self.node_id || most <= here {
            return None;
        }
        let views = self.views();
        let view = views.iter().find(|v| v.id == best)?;
        view.feasible(&ready.spec.resources).then_some(best)
    }

    fn enqueue(&mut self, ready: Ready, out: &mut Vec<Action>) {
        let class = ready.spec.resources.clone();
        let leasable = ready.spec.leasable().then(|| ready.spec.clone());
        self.queue.push(&class, ready);
        self.dispatch(out);
        if let Some(spec) = leasable {
            if !self.running.contains_key(&spec.task_id) {
                out.push(Action::Queued(spec));
            }
        }
    }

    /// The owner of a queued task takes it back (to run it in a slot it holds): whether it was
    /// still queued here, so that this node will not run it.
    pub(crate) fn take_back(&mut self, task_id: TaskId) -> bool {
        !self
            .queue
            .remove_where(|r| r.spec.task_id == task_id)
            .is_empty()
    }

    /// Starts what fits: tasks taking their CPU back first, then queued tasks.
    fn dispatch(&mut self, out: &mut Vec<Action>) {
        while let Some(task_id) = self.unblock.front() {
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
            if let Some(task_id) = self.unblock.pop_front() {
                out.push(Action::Unblocked(task_id));
            }
        }
        for (ready, grant) in self.queue.take_dispatchable(&mut self.resources) {
            self.launch(ready, grant, out);
        }
    }

    fn launch(&mut self, ready: Ready, grant: Grant, out: &mut Vec<Action>) {
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
                if self.killed.remove(&actor_id).is_some() {
                    self.resources.release(&grant);
                    let error = Error::ActorDied {
                        actor: actor_id.to_string(),
                        class: spec.function.path.to_string(),
                        reason: "killed before it was created".into(),
                    };
                    out.push(Action::Report(spec, error));
                    return;
                }
                self.actors.insert(
                    actor_id,
                    HostedActor {
                        grant: grant.clone(),
                        lifetime: creation.lifetime_resources.clone(),
                        worker: spec.worker_key(),
                        detached: creation.detached,
                        group: group_of(&spec),
                        class: spec.function.path.to_string(),
                    },
                );
            }
        }
        out.push(Action::Launch(ready, grant));
    }

    fn release_running(&mut self, run: &Running) {
        if run.blocked {
            // Its CPU is already lent out; return the rest.
            self.resources.release(&run.grant.without_cpu());
        } else {
            self.resources.release(&run.grant);
        }
    }

    /// Releases what a task holds and tells its owner it failed.
    fn abort_running(&mut self, task_id: TaskId, error: Error, out: &mut Vec<Action>) {
        if let Some(run) = self.running.remove(&task_id) {
            self.release_running(&run);
            out.push(Action::Report(run.spec, error));
        }
    }

    /// Aborts every running task whose spec `matches`, with the error `error` makes from the
    /// task's function path.
    fn abort_running_where(
        &mut self,
        matches: impl Fn(&TaskSpec) -> bool,
        error: impl Fn(String) -> Error,
        out: &mut Vec<Action>,
    ) {
        let hit: Vec<(TaskId, String)> = self
            .running
            .iter()
            .filter(|(_, r)| matches(&r.spec))
            .map(|(id, r)| (*id, r.spec.function.path.to_string()))
            .collect();
        for (task_id, function) in hit {
            self.abort_running(task_id, error(function), out);
        }
    }

    /// A task finished: its resources are free.
    pub(crate) fn task_done(&mut self, task_id: TaskId) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(run) = self.running.remove(&task_id) {
            self.release_running(&run);
        }
        self.dispatch(&mut out);
        out
    }

    /// A running task blocked in `get`: its CPU is lent to other tasks.
    pub(crate) fn blocked(&mut self, task_id: TaskId) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(run) = self.running.get_mut(&task_id) {
            if !run.blocked {
                run.blocked = true;
                let grant = run.grant.clone();
                self.resources.release_cpu(&grant);
            }
        }
        self.dispatch(&mut out);
        out
    }

    /// A blocked task's objects arrived: it takes its CPU back before anything new starts
    /// ([`Action::Unblocked`] once it has).
    pub(crate) fn unblocked(&mut self, task_id: TaskId) -> Vec<Action> {
        let mut out = Vec::new();
        self.unblock.push_back(task_id);
        self.dispatch(&mut out);
        out
    }

    /// An actor's constructor finished (`ok`) or failed.
    pub(crate) fn actor_ready(&mut self, actor_id: ActorId, ok: bool) -> Vec<Action> {
        let mut out = Vec::new();
        if !ok {
            if let Some(h) = self.actors.remove(&actor_id) {
                self.resources.release(&h.grant);
                out.push(Action::StopActor(h.worker, actor_id));
            }
        } else if let Some(h) = self.actors.get_mut(&actor_id) {
            // Placed with its placement resources; it keeps only its lifetime resources.
            if h.lifetime != h.grant.resources {
                let grant = std::mem::take(&mut h.grant);
                self.resources.release(&grant);
            }
        }
        self.dispatch(&mut out);
        out
    }

    /// Stop an actor hosted here (or about to be) and free its resources.
    pub(crate) fn kill_hosted(&mut self, actor_id: ActorId, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(h) = self.actors.remove(&actor_id) {
            out.push(Action::StopActor(h.worker, actor_id));
            self.resources.release(&h.grant);
        } else {
            // Not created yet: drop it from the queue, or refuse it when it arrives.
            let dropped = self.queue.remove_where(
                |r| matches!(&r.spec.kind, TaskKind::ActorCreation(c) if c.actor_id == actor_id),
            );
            if dropped.is_empty() {
                self.killed.insert(actor_id, now);
            }
            for r in dropped {
                let error = Error::ActorDied {
                    actor: actor_id.to_string(),
                    class: r.spec.function.path.to_string(),
                    reason: "killed before it was created".into(),
                };
                out.push(Action::Report(r.spec, error));
            }
        }
        self.dispatch(&mut out);
        out
    }

    /// Forgets kills older than [`KILLED_TTL`]: a creation that never came will not come.
    pub(crate) fn tick(&mut self, now: Instant) {
        self.killed
            .retain(|_, at| now.saturating_duration_since(*at) < KILLED_TTL);
        self.ended
            .retain(|_, at| now.saturating_duration_since(*at) < KILLED_TTL);
    }

    /// Whether `spec` belongs to an ended job and is not a detached actor's creation (which
    /// outlives its job).
    fn orphaned(&self, spec: &TaskSpec) -> bool {
        self.ended.contains_key(&spec.job_id) && !outlives_its_job(spec)
    }

    /// The job ended: its queued tasks and actor creations (detached ones excepted) are dropped,
    /// so that its demands leave with it; its work still on the way is dropped as it comes.
    /// Returns how many were dropped.
    pub(crate) fn job_ended(&mut self, job: JobId, now: Instant) -> usize {
        self.ended.insert(job, now);
        self.queue
            .remove_where(|r| r.spec.job_id == job && !outlives_its_job(&r.spec))
            .len()
    }

    /// Kills remembered for actors not created here.
    #[cfg(test)]
    pub(crate) fn killed_len(&self) -> usize {
        self.killed.len()
    }

    /// The GCS's new view of the cluster. Queued tasks move to another node when this node can
    /// never run them and that node can, or (like Ray's spilling of waiting tasks) when they wait
    /// here for resources another node has free now and nothing pins them here.
    pub(crate) fn view(&mut self, nodes: Vec<ViewEntry>) -> Vec<Action> {
        let mut out = Vec::new();
        self.view = nodes;
        let total = self.resources.total().clone();
        let me = self.node_id;
        let mut others: Vec<NodeView> = self
            .views()
            .into_iter()
            .filter(|v| v.alive && v.id != me)
            .collect();
        // Where each removed task goes, in the order `remove_where` returns them.
        let mut targets = VecDeque::new();
        let moving = self.queue.remove_where(|r| {
            let req = &r.spec.resources;
            let target = if !req.is_subset_of(&total) {
                others.iter().find(|v| v.feasible(req)).map(|v| v.id)
            } else if movable(&r.spec.strategy) {
                others.iter_mut().find(|v| v.available_for(req)).map(|v| {
                    // Counted against that node so one free slot takes one task.
                    let _ = v.available.checked_sub(req);
                    v.id
                })
            } else {
                None
            };
            if let Some(node) = target {
                targets.push_back(node);
            }
            target.is_some()
        });
        for ready in moving {
            let spec = ready.spec.clone();
            let back = match targets.pop_front() {
                Some(node) => self.forward(node, spec, 1, &mut out).err(),
                None => Some(spec),
            };
            if back.is_some() {
                let class = ready.spec.resources.clone();
                self.queue.push(&class, ready);
            }
        }
        out
    }

    /// The job's worker could not start: what was launched for it fails.
    pub(crate) fn worker_start_failed(
        &mut self,
        launched: Vec<Arc<TaskSpec>>,
        reason: &str,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        for spec in launched {
            match &spec.kind {
                TaskKind::ActorCreation(c) => {
                    let actor_id = c.actor_id;
                    self.actor_lost(actor_id, reason, &mut out);
                    let error = Error::ActorDied {
                        actor: actor_id.to_string(),
                        class: spec.function.path.to_string(),
                        reason: reason.to_string(),
                    };
                    out.push(Action::Report(spec, error));
                }
                TaskKind::Normal { .. } => {
                    let error = Error::WorkerDied {
                        function: spec.function.path.to_string(),
                        reason: reason.to_string(),
                    };
                    self.abort_running(spec.task_id, error, &mut out)
                }
            }
        }
        self.dispatch(&mut out);
        out
    }

    /// A worker process died (the job's, or the job's one for an environment): its running
    /// tasks fail (their owners may retry them) and its actors are lost (the GCS may restart
    /// them).
    pub(crate) fn worker_exited(&mut self, key: WorkerKey, reason: &str) -> Vec<Action> {
        let mut out = Vec::new();
        self.abort_running_where(
            |spec| spec.worker_key() == key,
            |function| Error::WorkerDied {
                function,
                reason: reason.to_string(),
            },
            &mut out,
        );
        let actors: Vec<ActorId> = self
            .actors
            .iter()
            .filter(|(_, h)| h.worker == key)
            .map(|(id, _)| *id)
            .collect();
        for actor_id in actors {
            self.actor_lost(actor_id, reason, &mut out);
        }
        self.dispatch(&mut out);
        out
    }

    /// An actor hosted here died with its process.
    fn actor_lost(&mut self, actor_id: ActorId, reason: &str, out: &mut Vec<Action>) {
        if let Some(h) = self.actors.remove(&actor_id) {
            self.resources.release(&h.grant);
            out.push(Action::ActorLost(
                actor_id,
                Error::ActorDied {
                    actor: actor_id.to_string(),
                    class: h.class.clone(),
                    reason: reason.to_string(),
                },
            ));
        }
    }

    /// Whether a detached actor of `job` lives here (its worker must outlive the driver).
    pub(crate) fn keeps_detached(&self, job: JobId) -> bool {
        self.actors
            .values()
            .any(|h| h.worker.0 == job && h.detached)
    }

    /// Phase one of a reservation: set `bundles` aside, all or none.
    pub(crate) fn prepare_bundles(
        &mut self,
        group: PlacementGroupId,
        bundles: &[(u32, ResourceSet)],
    ) -> Result<(), Error> {
        let mut taken: Vec<(u32, Grant)> = Vec::new();
        for (index, bundle) in bundles {
            if self.bundles.contains_key(&(group, *index)) {
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
                (group, index),
                BundleHold {
                    grant,
                    committed: None,
                },
            );
        }
        Ok(())
    }

    /// Phase two: the prepared bundles of `group` become the group's resources.
    pub(crate) fn commit_group(&mut self, group: PlacementGroupId) -> Vec<Action> {
        let mut out = Vec::new();
        for ((g, index), hold) in self.bundles.iter_mut() {
            if *g == group && hold.committed.is_none() {
                let extra = committed_resources(*g, *index, &hold.grant.resources);
                self.resources.add_capacity(&extra);
                hold.committed = Some(extra);
            }
        }
        self.dispatch(&mut out);
        out
    }

    /// Returns bundles of `group` (`None`: all of them, and what uses the group here stops).
    pub(crate) fn cancel_bundles(
        &mut self,
        group: PlacementGroupId,
        indices: Option<&[u32]>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let keys: Vec<(PlacementGroupId, u32)> = self
            .bundles
            .keys()
            .filter(|(g, i)| *g == group && indices.is_none_or(|v| v.contains(i)))
            .copied()
            .collect();
        if indices.is_none() {
            // The group is gone: what waits for it here (even without its bundles) goes too.
            self.evict_group(group, &mut out);
        }
        for key in keys {
            if let Some(hold) = self.bundles.remove(&key) {
                if let Some(extra) = &hold.committed {
                    self.resources.remove_capacity(extra);
                }
                self.resources.release(&hold.grant);
            }
        }
        self.dispatch(&mut out);
        out
    }

    /// Stops what uses `group` here (its bundles are going): actors are killed, tasks failed
    /// (queued ones at once; running ones are reported failed to their owners).
    fn evict_group(&mut self, group: PlacementGroupId, out: &mut Vec<Action>) {
        let reason = "its placement group was removed";
        let actors: Vec<ActorId> = self
            .actors
            .iter()
            .filter(|(_, h)| h.group == Some(group))
            .map(|(id, _)| *id)
            .collect();
        for actor_id in actors {
            if let Some(h) = self.actors.remove(&actor_id) {
                out.push(Action::StopActor(h.worker, actor_id));
                self.resources.release(&h.grant);
                out.push(Action::ActorFailed(
                    actor_id,
                    Error::ActorDied {
                        actor: actor_id.to_string(),
                        class: h.class.clone(),
                        reason: reason.into(),
                    },
                ));
            }
        }
        let queued = self
            .queue
            .remove_where(|r| group_of(&r.spec) == Some(group));
        for r in queued {
            let error = match &r.spec.kind {
                TaskKind::ActorCreation(c) => {
                    let e = Error::ActorUnschedulable {
                        actor: c.actor_id.to_string(),
                        class: r.spec.function.path.to_string(),
                        reason: reason.into(),
                    };
                    out.push(Action::ActorFailed(c.actor_id, e.clone()));
                    e
                }
                TaskKind::Normal { .. } => Error::Cancelled {
                    task: r.spec.function.path.to_string(),
                    reason: reason.into(),
                },
            };
            out.push(Action::Report(r.spec, error));
        }
        self.abort_running_where(
            |spec| group_of(spec) == Some(group),
            |task| Error::Cancelled {
                task,
                reason: reason.into(),
            },
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::policy::tests::cpus;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn n(i: u128) -> NodeId {
        NodeId(i << 16)
    }

    fn task(cpu: u64, strategy: SchedulingStrategy, owner: SocketAddr) -> Arc<TaskSpec> {
        Arc::new(TaskSpec::for_test(cpus(cpu), strategy, owner))
    }

    /// The job of the (one) task running on `s`.
    fn running_job(s: &Scheduler) -> JobId {
        s.running
            .values()
            .next()
            .expect("a running task")
            .spec
            .job_id
    }

    fn launched(actions: &[Action]) -> Vec<TaskId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Launch(r, _) => Some(r.spec.task_id),
                _ => None,
            })
            .collect()
    }

    fn queued(actions: &[Action]) -> Vec<TaskId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Queued(spec) => Some(spec.task_id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn admission_never_overcommits_and_done_tasks_make_room() {
        let mut s = Scheduler::new(n(1), addr(1), cpus(2));
        let ts: Vec<_> = (0..3)
            .map(|_| task(1, SchedulingStrategy::Default, addr(1)))
            .collect();
        let mut started = Vec::new();
        for t in &ts {
            started.extend(launched(&s.submit(t.clone(), 0, 0)));
        }
        assert_eq!(started, vec![ts[0].task_id, ts[1].task_id]);
        assert_eq!(s.snapshot().demands.len(), 1);
        assert_eq!(launched(&s.task_done(ts[0].task_id)), vec![ts[2].task_id]);
        assert!(s.snapshot().demands.is_empty());
    }

    #[test]
    fn a_leasable_task_that_waits_is_reported_and_can_be_taken_back_until_it_starts() {
        let mut s = Scheduler::new(n(1), addr(1), cpus(1));
        let ts: Vec<_> = (0..3)
            .map(|_| task(1, SchedulingStrategy::Default, addr(1)))
            .collect();
        // The first starts at once (nothing to report); the others wait, and their owner hears.
        assert!(queued(&s.submit(ts[0].clone(), 0, 0)).is_empty());
        assert_eq!(queued(&s.submit(ts[1].clone(), 0, 0)), [ts[1].task_id]);
        assert_eq!(queued(&s.submit(ts[2].clone(), 0, 0)), [ts[2].task_id]);
        // Taken back: it never runs here, and the next one gets the CPU.
        assert!(s.take_back(ts[1].task_id));
        assert!(!s.take_back(ts[1].task_id), "only once");
        assert_eq!(launched(&s.task_done(ts[0].task_id)), [ts[2].task_id]);
        assert!(!s.take_back(ts[2].task_id), "a started task stays");
        assert!(s.snapshot().demands.is_empty());
        // A task that is not leasable (here: a placement strategy) is not reported.
        let spread = task(1, SchedulingStrategy::Spread, addr(1));
        assert!(queued(&s.submit(spread, 0, 0)).is_empty());
    }

    #[test]
    fn a_blocked_task_lends_its_cpu_and_takes_it_back_first() {
        let mut s = Scheduler::new(n(1), addr(1), cpus(1));
        let (a, b, c) = (
            task(1, SchedulingStrategy::Default, addr(1)),
            task(1, SchedulingStrategy::Default, addr(1)),
            task(1, SchedulingStrategy::Default, addr(1)),
        );
        s.submit(a.clone(), 0, 0);
        assert!(launched(&s.submit(b.clone(), 0, 0)).is_empty());
        // A waits for its children: B gets the CPU.
        assert_eq!(launched(&s.blocked(a.task_id)), vec![b.task_id]);
        assert!(launched(&s.submit(c.clone(), 0, 0)).is_empty());
        // A's objects arrive while B runs: A waits for the CPU, ahead of C.
        let out = s.unblocked(a.task_id);
        assert!(out.is_empty());
        let out = s.task_done(b.task_id);
        assert!(
            matches!(out[..], [Action::Unblocked(t)] if t == a.task_id),
            "{out:?}"
        );
        assert_eq!(launched(&s.task_done(a.task_id)), vec![c.task_id]);
    }

    #[test]
    fn work_waiting_for_its_group_is_not_reported_infeasible() {
        let mut s = Scheduler::new(n(1), addr(1), cpus(2));
        let group = crate::ids::PlacementGroupId::fresh();
        let spec = TaskSpec::for_test(
            crate::placement::group::request_in_group(&cpus(1), group, Some(0)),
            SchedulingStrategy::PlacementGroup {
                group,
                bundle_index: Some(0),
                capture_child_tasks: false,
            },
            addr(9),
        );
        let out = s.submit(Arc::new(spec), 0, 0);
        assert!(
            !out.iter().any(|a| matches!(a, Action::Infeasible(_))),
            "{out:?}"
        );
        assert_eq!(s.queued(), 1);
    }

    #[test]
    fn an_ended_jobs_queued_work_and_demands_go_with_it() {
        let mut s = Scheduler::new(n(1), addr(1), cpus(1));
        let now = Instant::now();
        let running = task(1, SchedulingStrategy::Default, addr(9));
        assert_eq!(launched(&s.submit(running, 0, 0)).len(), 1);
        let job = running_job(&s);
        for _ in 0..3 {
            s.submit(task(1, SchedulingStrategy::Default, addr(9)), 0, 0);
        }
        s.submit(task(8, SchedulingStrategy::Default, addr(9)), 0, 0);
        // Another job's task, and a detached actor's creation of the ending job, stay.
        let mut other = TaskSpec::for_test(cpus(1), SchedulingStrategy::Default, addr(8));
        other.job_id = JobId(job.0 + (1 << 16));
        s.submit(Arc::new(other), 0, 0);
        let mut detached = TaskSpec::for_test(cpus(1), SchedulingStrategy::Default, addr(9));
        detached.kind = TaskKind::ActorCreation(Box::new(crate::protocol::task::ActorCreation {
            actor_id: ActorId::fresh(),
            lifetime_resources: ResourceSet::new(),
            max_restarts: 0,
            max_task_retries: 0,
            max_concurrency: None,
            name: None,
            namespace: "ns".into(),
            detached: true,
        }));
        s.submit(Arc::new(detached), 0, 0);
        assert_eq!(s.queued(), 6);
        assert_eq!(s.job_ended(job, now), 4);
        assert_eq!(s.queued(), 2, "{:?}", s.snapshot().demands);
        assert!(!s.snapshot().demands.iter().any(|(r, _)| *r == cpus(8)));
        // Its work still on the way is dropped as it comes, until the memory of the job fades.
        assert!(s
            .submit(task(1, SchedulingStrategy::Default, addr(9)), 1, 0)
            .is_empty());
        assert_eq!(s.queued(), 2);
        s.tick(now + KILLED_TTL);
        s.submit(task(1, SchedulingStrategy::Default, addr(9)), 1, 0);
        assert_eq!(s.queued(), 3);
    }

    #[test]
    fn an_infeasible_task_spills_to_a_node_that_fits_when_one_appears() {
        let mut s = Scheduler::new(n(1), addr(1), cpus(2));
        let big = task(4, SchedulingStrategy::Default, addr(9));
        let out = s.submit(big.clone(), 0, 0);
        assert!(
            matches!(&out[..], [Action::Infeasible(a), Action::Queued(b)]
                if a.task_id == big.task_id && b.task_id == big.task_id),
            "waits as a demand, and its owner hears that no node fits it: {out:?}"
        );
        let out = s.view(vec![ViewEntry {
            node_id: n(2),
            address: addr(2),
            alive: true,
            total: cpus(8),
            available: cpus(8),
            backlog: ResourceSet::new(),
        }]);
        assert!(
            matches!(&out[..], [Action::Forward { address, spec, hops: 1 }]
                if *address == addr(2) && spec.task_id == big.task_id),
            "{out:?}"
        );
        // The owner (elsewhere) hears where it went.
        let placed = s.take_placed();
        assert!(placed
            .iter()
            .any(|((o, node), _)| *o == addr(9) && *node == n(2)));
    }

    #[test]
    fn tasks_waiting_for_resources_spill_to_free_room_elsewhere_unless_pinned() {
        let mut s = Scheduler::new(n(1), addr(1), cpus(1));
        let running = task(1, SchedulingStrategy::Default, addr(1));
        let pinned = task(
            1,
            SchedulingStrategy::NodeAffinity {
                node_id: n(1),
                soft: false,
            },
            addr(1),
        );
        let (w1, w2) = (
            task(1, SchedulingStrategy::Default, addr(1)),
            task(1, SchedulingStrategy::Default, addr(1)),
        );
        assert_eq!(launched(&s.submit(running.clone(), 0, 0)).len(), 1);
        for t in [&pinned, &w1, &w2] {
            assert!(launched(&s.submit((*t).clone(), 0, 0)).is_empty());
        }
        // Node 2 has room for one of them: the first movable waiter goes, nothing else.
        let out = s.view(vec![ViewEntry {
            node_id: n(2),
            address: addr(2),
            alive: true,
            total: cpus(1),
            available: cpus(1),
            backlog: ResourceSet::new(),
        }]);
        let moved: Vec<_> = out
            .iter()
            .filter_map(|a| match a {
                Action::Forward { spec, address, .. } if *address == addr(2) => Some(spec.task_id),
                _ => None,
            })
            .collect();
        assert_eq!(moved, vec![w1.task_id], "{out:?}");
        // The pinned one and the other waiter still run here, in order.
        assert_eq!(
            launched(&s.task_done(running.task_id)),
            vec![pinned.task_id]
        );
        assert_eq!(launched(&s.task_done(pinned.task_id)), vec![w2.task_id]);
    }

    #[test]
    fn a_task_goes_where_most_of_its_argument_bytes_are_kept() {
        let mut s = Scheduler::new(n(1), addr(1), cpus(2));
        let peer = |available: u64| ViewEntry {
            node_id: n(2),
            address: addr(2),
            alive: true,
            total: cpus(2),
            available: cpus(available),
            backlog: ResourceSet::new(),
        };
        s.view(vec![peer(2)]);
        let ready = |spec: Arc<TaskSpec>, kept: Vec<(NodeId, u64)>| Ready {
            spec,
            resolved: Vec::new(),
            kept,
        };
        let forwarded = |out: &[Action]| {
            out.iter()
                .any(|a| matches!(a, Action::Forward { address, .. } if *address == addr(2)))
        };
        // Most bytes on node 2: sent there.
        let t = task(1, SchedulingStrategy::Default, addr(1));
        let out = s.resolved(ready(t, vec![(n(2), 1 << 20), (n(1), 1 << 10)]));
        assert!(forwarded(&out), "{out:?}");
        // Most bytes here: runs here.
        let t = task(1, SchedulingStrategy::Default, addr(1));
        let out = s.resolved(ready(t.clone(), vec![(n(2), 1 << 10), (n(1), 1 << 20)]));
        assert_eq!(launched(&out), vec![t.task_id]);
        // A strategy the user chose wins over where the bytes are.
        let soft_here = SchedulingStrategy::NodeAffinity {
            node_id: n(1),
            soft: true,
        };
        let t = task(1, soft_here, addr(1));
        let out = s.resolved(ready(t.clone(), vec![(n(2), 1 << 20)]));
        assert_eq!(launched(&out), vec![t.task_id]);
        // A dead node cannot have it: it stays.
        let mut dead = peer(2);
        dead.alive = false;
        s.view(vec![dead]);
        let t = task(1, SchedulingStrategy::Default, addr(1));
        let out = s.resolved(ready(t, vec![(n(2), 1 << 20)]));
        assert!(!forwarded(&out), "{out:?}");
    }

    #[test]
    fn hard_affinity_to_a_missing_node_fails_at_once() {
        let mut s = Scheduler::new(n(1), addr(1), cpus(2));
        let t = task(
            1,
            SchedulingStrategy::NodeAffinity {
                node_id: n(7),
                soft: false,
            },
            addr(1),
        );
        let out = s.submit(t, 0, 0);
        assert!(
            matches!(
                &out[..],
                [Action::Report(_, Error::TaskUnschedulable { .. })]
            ),
            "{out:?}"
        );
    }

    #[test]
    fn kills_of_actors_never_created_here_are_forgotten_after_a_while() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(n(1), addr(1), cpus(2));
        s.kill_hosted(ActorId::fresh(), t0);
        assert_eq!(s.killed_len(), 1);
        s.tick(t0 + KILLED_TTL / 2);
        assert_eq!(s.killed_len(), 1);
        s.tick(t0 + KILLED_TTL);
        assert_eq!(s.killed_len(), 0);
    }

    #[test]
    fn a_dead_worker_of_an_environment_fails_only_the_work_it_ran() {
        use crate::protocol::task::TaskEnv;
        let mut s = Scheduler::new(n(1), addr(1), cpus(2));
        let plain = task(1, SchedulingStrategy::Default, addr(1));
        let mut with_env = TaskSpec::for_test(cpus(1), SchedulingStrategy::Default, addr(1));
        with_env.env = TaskEnv::overlay(None, &[("A".into(), "1".into())]).map(Arc::new);
        let with_env = Arc::new(with_env);
        assert_eq!(plain.worker_key().0, with_env.worker_key().0, "one job");
        assert_ne!(plain.worker_key(), with_env.worker_key());
        s.submit(plain.clone(), 0, 0);
        s.submit(with_env.clone(), 0, 0);
        assert_eq!(s.available(), &cpus(0));
        let out = s.worker_exited(with_env.worker_key(), "killed");
        assert!(
            matches!(&out[..], [Action::Report(spec, Error::WorkerDied { .. })]
                if spec.task_id == with_env.task_id),
            "{out:?}"
        );
        // The job's own worker and its task are untouched.
        assert_eq!(s.available(), &cpus(1));
        assert_eq!(s.running.len(), 1);
    }

    #[test]
    fn a_dead_worker_fails_its_running_tasks_and_frees_their_resources() {
        let mut s = Scheduler::new(n(1), addr(1), cpus(1));
        let t = task(1, SchedulingStrategy::Default, addr(1));
        s.submit(t.clone(), 0, 0);
        assert_eq!(s.available(), &cpus(0));
        let out = s.worker_exited(t.worker_key(), "killed");
        assert!(
            matches!(&out[..], [Action::Report(_, Error::WorkerDied { .. })]),
            "{out:?}"
        );
        assert_eq!(s.available(), &cpus(1));
    }

    /// Three raylet cores wired by hand: a burst submitted to node 1 spills to the others
    /// (through the view each gets), each forwarded task runs where it lands, then node 3 dies:
    /// its tasks are lost to it and the view moves new work elsewhere.
    #[test]
    fn simulated_three_nodes_spill_a_burst_and_route_around_a_dead_node() {
        let mut nodes: Vec<Scheduler> = (1..=3)
            .map(|i| Scheduler::new(n(i), addr(i as u16), cpus(2)))
            .collect();
        let view = |nodes: &[Scheduler], dead: Option<usize>| -> Vec<ViewEntry> {
            nodes
                .iter()
                .enumerate()
                .map(|(k, s)| ViewEntry {
                    node_id: n(k as u128 + 1),
                    address: addr(k as u16 + 1),
                    alive: Some(k) != dead,
                    total: s.total().clone(),
                    available: s.available().clone(),
                    backlog: s.backlog(),
                })
                .collect()
        };
        let v = view(&nodes, None);
        for s in nodes.iter_mut() {
            s.view(v.clone());
        }
        let mut running: Vec<(usize, TaskId)> = Vec::new();
        let mut inbox: Vec<(usize, Arc<TaskSpec>, u8)> = (0..6)
            .map(|_| (0, task(1, SchedulingStrategy::Default, addr(9)), 0))
            .collect();
        let mut random = 0u64;
        while let Some((k, spec, hops)) = inbox.pop() {
            random += 1;
            for a in nodes[k].submit(spec, hops, random) {
                match a {
                    Action::Launch(r, _) => running.push((k, r.spec.task_id)),
                    Action::Forward {
                        address,
                        spec,
                        hops,
                    } => {
                        let to = (address.port() - 1) as usize;
                        inbox.push((to, spec, hops));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(running.len(), 6, "six CPUs, six tasks, all running");
        for k in 0..3 {
            assert_eq!(
                running.iter().filter(|(at, _)| *at == k).count(),
                2,
                "node {} runs two",
                k + 1
            );
        }
        // Node 3 dies; the others learn it from the view and stop sending there.
        let v = view(&nodes, Some(2));
        nodes[0].view(v.clone());
        let spread = task(1, SchedulingStrategy::Spread, addr(9));
        let out = nodes[0].submit(spread, 0, 0);
        assert!(
            out.iter()
                .all(|a| !matches!(a, Action::Forward { address, .. } if *address == addr(3))),
            "{out:?}"
        );
    }
}
