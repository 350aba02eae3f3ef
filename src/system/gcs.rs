//! The `Gcs` actix actor: a thin shell around the GCS's tables. It holds the node table
//! ([`Membership`]), the job table (with each job's executable), the actor directory and the
//! placement-group table, answers their messages, places actors and placement groups, and
//! broadcasts the resource view to every raylet.

use crate::error::Error;
use crate::ids::{ActorId, JobId, NodeId, PlacementGroupId};
use crate::invoke;
use crate::placement::bundles::{place as place_bundles, PlacementStrategy};
use crate::placement::group::{committed_resources, PlacementGroupState};
use crate::placement::policy::{claim, pick_node, Placement};
use crate::protocol::gcs::*;
use crate::protocol::owner::{ActorDead, GroupReady, GroupState, NodeDied};
use crate::protocol::raylet::{
    CancelBundles, ClusterView, CommitBundles, JobEnded, KillHostedActor, NodeDown, PrepareBundles,
    SubmitTask,
};
use crate::protocol::svc;
use crate::protocol::task::{TaskKind, TaskSpec};
use crate::resources::ResourceSet;
use crate::supervise;
use crate::system::actor_directory::{ActorDirectory, Lost, NewActor, Notices};
use crate::system::binaries::BinaryCache;
use crate::system::membership::Membership;
use crate::system::placement_groups::PgTable;
use crate::system::reservation::{Action as RoundAction, Round};
use crate::system::task_events::{by_state, fail_abandoned, TaskEvents};
use crate::transport::net::{Net, Target};
use actix::prelude::*;
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Membership settings of a cluster's GCS.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// A node silent for this long is dead.
    pub(crate) node_timeout: Duration,
    /// How often the GCS checks for silent nodes, sends the resource view to every raylet and
    /// tries the placement groups that wait.
    pub(crate) tick: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_timeout: Duration::from_secs(5),
            tick: Duration::from_millis(200),
        }
    }
}

/// The connection to a process was lost (from this process's switchboard).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PeerLost {
    pub(crate) addr: SocketAddr,
}

struct JobRecord {
    namespace: String,
    driver: SocketAddr,
    exe: Option<ExeInfo>,
    log_to_driver: bool,
    /// When it registered, in milliseconds since the Unix epoch.
    start_ms: u64,
    /// The driver's process id.
    pid: u32,
    env: Vec<(String, String)>,
    working_dir: Option<std::path::PathBuf>,
    working_dir_package: Option<String>,
}

impl JobRecord {
    fn summary(&self, job_id: JobId, end_ms: Option<u64>) -> JobSummary {
        JobSummary {
            job_id,
            namespace: self.namespace.clone(),
            driver: self.driver,
            driver_pid: self.pid,
            entrypoint: self.exe.as_ref().map(|e| e.name.clone()),
            start_ms: self.start_ms,
            end_ms,
        }
    }
}

/// Ended jobs the GCS remembers for `list_jobs` (the oldest go first).
const ENDED_JOBS_KEPT: usize = 1000;

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A placement group's reservation answer, routed back into the actor.
#[derive(Message)]
#[rtype(result = "()")]
struct RoundReply {
    group: PlacementGroupId,
    node: NodeId,
    commit: bool,
    ok: bool,
}

/// The GCS.
pub(crate) struct Gcs {
    net: Arc<Net>,
    nodes: Membership,
    settings: Settings,
    jobs: HashMap<JobId, JobRecord>,
    /// The last jobs that ended, oldest first, at most [`ENDED_JOBS_KEPT`].
    ended_jobs: std::collections::VecDeque<JobSummary>,
    actors: ActorDirectory<SocketAddr>,
    /// Processes calling each actor, told when it dies so their calls fail at once.
    subscribers: HashMap<ActorId, Vec<SocketAddr>>,
    /// Each live actor's creation task (its job, its resources), to create it again.
    actor_specs: HashMap<ActorId, Arc<TaskSpec>>,
    /// Actors no live node can host yet; placed again whenever a node joins.
    unplaced: Vec<Arc<TaskSpec>>,
    spread_cursor: usize,
    binaries: Option<BinaryCache>,
    groups: PgTable,
    /// Reservation rounds under way, by group, with the plan (bundle index, node) of each.
    rounds: HashMap<PlacementGroupId, (Round, Vec<(usize, NodeId)>)>,
    /// A view broadcast is due at the end of the current coalescing window.
    view_due: bool,
    /// What every task and actor call went through, as processes report it.
    tasks: TaskEvents,
}

/// How long placement-group changes are gathered into one view broadcast.
const VIEW_COALESCE: Duration = Duration::from_millis(2);

impl Gcs {
    /// A GCS reached through `net`; it keeps job executables in `binaries`, if given (a cluster
    /// whose nodes start worker processes needs them).
    pub(crate) fn new(net: Arc<Net>, settings: Settings, binaries: Option<BinaryCache>) -> Self {
        Gcs {
            net,
            nodes: Membership::new(settings.node_timeout),
            settings,
            jobs: HashMap::new(),
            ended_jobs: std::collections::VecDeque::new(),
            actors: ActorDirectory::default(),
            subscribers: HashMap::new(),
            actor_specs: HashMap::new(),
            unplaced: Vec::new(),
            spread_cursor: 0,
            binaries,
            groups: PgTable::default(),
            rounds: HashMap::new(),
            view_due: false,
            tasks: TaskEvents::default(),
        }
    }

    /// Starts the GCS on `arbiter` and registers it as the handler of its messages in `net`.
    pub(crate) fn start(
        net: &Arc<Net>,
        settings: Settings,
        binaries: Option<BinaryCache>,
        arbiter: &ArbiterHandle,
    ) -> Result<Addr<Gcs>, Error> {
        let n = net.clone();
        let addr = Gcs::start_in_arbiter(arbiter, move |_| Gcs::new(n, settings, binaries));
        macro_rules! serve {
            ($($m:ty),*) => { $(net.serve_actor::<$m, _>(&addr)?;)* };
        }
        serve!(
            RegisterNode,
            Heartbeat,
            GetNodes,
            RegisterJob,
            GetJob,
            PutBinary,
            GetBinary,
            HasBinary,
            FinishJob,
            CreateActor,
            ActorStarted,
            ActorFailed,
            ActorLost,
            WatchActor,
            KillActor,
            ActorOutOfScope,
            LookupActor,
            ListActors,
            CreatePlacementGroup,
            WaitPlacementGroup,
            RemovePlacementGroup,
            GetPlacementGroup,
            ListPlacementGroups,
            ListJobs,
            AddTaskEvents,
            ListTasks,
            CountTasks
        );
        let lost = addr.clone();
        net.on_lost(Arc::new(move |peer, _| {
            lost.do_send(PeerLost { addr: peer })
        }));
        Ok(addr)
    }

    fn raylet(&self, address: SocketAddr) -> Target<svc::Raylet> {
        self.net.target(address)
    }

    fn owner(&self, address: SocketAddr) -> Target<svc::Owner> {
        self.net.target(address)
    }

    /// Tells groups' creators of their state changes (see [`GroupState`]).
    fn tell_creators(&mut self) {
        for (creator, id, state) in self.groups.take_notices() {
            self.owner(creator).do_send(GroupState { id, state });
        }
    }

    fn deliver(notices: Notices<SocketAddr>) {
        for (tx, update) in notices {
            let _ = tx.send(update);
        }
    }

    fn tell_subscribers(&self, actor_id: ActorId, error: &Error, restarting: bool) {
        for addr in self.subscribers.get(&actor_id).into_iter().flatten() {
            self.owner(*addr).do_send(ActorDead {
                actor_id,
                error: error.clone(),
                restarting,
            });
        }
    }

    fn fail_actor(&mut self, actor_id: ActorId, error: Error) {
        // The creation task's return object carries the failure to anyone awaiting readiness.
        Self::deliver(self.actors.dead(actor_id, error.clone()));
        self.actor_specs.remove(&actor_id);
        self.tell_subscribers(actor_id, &error, false);
        self.subscribers.remove(&actor_id);
    }

    /// The actor's process (or node) died: restart it if its policy allows, else it is dead.
    fn actor_lost(&mut self, actor_id: ActorId, error: Error) {
        match self.actors.lost(actor_id, error.clone()) {
            Lost::Restart { attempt } => match self.actor_specs.get(&actor_id).cloned() {
                Some(spec) => {
                    tracing::warn!(actor = %actor_id, restart = attempt, reason = %error,
                        "restarting actor");
                    self.tell_subscribers(actor_id, &error, true);
                    self.schedule_actor(spec);
                }
                None => self.fail_actor(actor_id, error),
            },
            Lost::Dead(notices) => {
                Self::deliver(notices);
                self.fail_actor(actor_id, error);
            }
        }
    }

    /// Picks the node whose raylet will create the actor.
    fn schedule_actor(&mut self, spec: Arc<TaskSpec>) {
        let TaskKind::ActorCreation(creation) = &spec.kind else {
            return;
        };
        let actor_id = creation.actor_id;
        let views = self.nodes.views();
        let random = spec.task_id.0 as u64 >> 16;
        match pick_node(
            &views,
            spec.owner.node,
            &spec.resources,
            &spec.strategy,
            random,
            &mut self.spread_cursor,
        ) {
            Placement::Node(node) => {
                if let Some(n) = self.nodes.get_mut(&node) {
                    // Count it against the node until the next report, so a burst of creations
                    // does not all land on the same node.
                    claim(&mut n.available, &mut n.backlog, &spec.resources);
                    let address = n.address;
                    self.actors.placed(actor_id, node);
                    self.raylet(address).do_send(SubmitTask { spec, hops: 1 });
                }
            }
            // Queue on a node anyway: its raylet reports the demand and keeps it pending. With no
            // node at all, keep it here until one joins.
            Placement::Infeasible => {
                tracing::warn!(actor = %actor_id, resources = ?spec.resources,
                    "actor cannot fit on any node yet; it stays pending");
                let local = self
                    .nodes
                    .get(&spec.owner.node)
                    .filter(|n| n.alive)
                    .or_else(|| self.nodes.alive().next())
                    .map(|n| n.address);
                match local {
                    Some(address) => self.raylet(address).do_send(SubmitTask { spec, hops: 1 }),
                    None => self.unplaced.push(spec),
                }
            }
            Placement::Unschedulable(reason) => {
                let error = Error::ActorUnschedulable {
                    actor: actor_id.to_string(),
                    class: spec.function.path.to_string(),
                    reason,
                };
                invoke::fail(&self.net, &spec, error.clone());
                self.fail_actor(actor_id, error);
            }
        }
    }

    /// A node stopped answering (or its connection closed): it and its actors are dead.
    fn node_dead(&mut self, node_id: NodeId, reason: &str) {
        let address = self.nodes.get(&node_id).map(|n| n.address);
        tracing::warn!(node = %node_id, address = ?address, reason, "node marked dead");
        // Raylets learn of the death before anything is rescheduled, so nothing is sent there.
        self.broadcast_view();
        for actor_id in self.actors.on_node(node_id) {
            let class = self
                .actors
                .class_of(actor_id)
                .unwrap_or("unknown")
                .to_string();
            // Restarted elsewhere if its policy allows, else dead.
            self.actor_lost(
                actor_id,
                Error::ActorDied {
                    actor: actor_id.to_string(),
                    class,
                    reason: format!("its node {node_id} died ({reason})"),
                },
            );
        }
        // Groups with bundles there are placed again, ahead of other pending groups.
        if self.groups.node_dead(node_id) > 0 {
            tracing::warn!(node = %node_id, "placement groups lost bundles; rescheduling them");
            self.tell_creators();
        }
        // Owners retry the tasks they had there: drivers directly, worker processes via their
        // raylets.
        for driver in self.jobs.values().map(|j| j.driver) {
            self.owner(driver).do_send(NodeDied {
                node: node_id,
                reason: reason.to_string(),
            });
        }
        for n in self.nodes.alive() {
            self.raylet(n.address).do_send(NodeDown {
                node: node_id,
                reason: reason.to_string(),
            });
        }
        self.broadcast_view();
    }

    fn broadcast_view(&self) {
        let nodes = self.nodes.view_entries();
        for n in self.nodes.alive() {
            self.raylet(n.address).do_send(ClusterView {
                nodes: nodes.clone(),
            });
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        for (node, reason) in self.nodes.tick(Instant::now()) {
            self.node_dead(node, &reason);
        }
        Self::deliver(self.actors.expire_unknown(Instant::now()));
        self.broadcast_view();
        self.schedule_groups(ctx);
    }

    /// One record per attempt the GCS keeps, those of jobs that ended without them finishing
    /// marked failed.
    fn task_records(&self) -> Vec<crate::protocol::events::TaskRecord> {
        let mut records = self.tasks.merged();
        let ended: HashMap<JobId, u64> = self
            .ended_jobs
            .iter()
            .filter_map(|j| Some((j.job_id, j.end_ms?)))
            .collect();
        fail_abandoned(&mut records, &ended, now_ms());
        records
    }

    /// A job ended: its non-detached actors die and every raylet stops its workers.
    fn finish_job(&mut self, job_id: JobId) {
        let Some(record) = self.jobs.remove(&job_id) else {
            return;
        };
        if self.ended_jobs.len() == ENDED_JOBS_KEPT {
            self.ended_jobs.pop_front();
        }
        self.ended_jobs
            .push_back(record.summary(job_id, Some(now_ms())));
        tracing::info!(job = %job_id, "job finished");
        let doomed: Vec<ActorId> = self
            .actor_specs
            .iter()
            .filter(|(a, spec)| spec.job_id == job_id && !self.actors.is_detached(**a))
            .map(|(a, _)| *a)
            .collect();
        for actor_id in doomed {
            self.kill_actor(
                actor_id,
                "its driver exited (the actor is not detached)".into(),
            );
        }
        // Its creations waiting for a node to join go too (detached actors outlive it).
        self.unplaced.retain(|spec| {
            spec.job_id != job_id || matches!(&spec.kind, TaskKind::ActorCreation(c) if c.detached)
        });
        for id in self.groups.of_job(job_id) {
            // Its creator is gone: nothing is sent to it.
            self.groups.unwatch(id);
            let _ = self.remove_group(id);
        }
        let detached_alive = self
            .actor_specs
            .iter()
            .any(|(a, spec)| spec.job_id == job_id && self.actors.is_detached(*a));
        for n in self.nodes.alive() {
            self.raylet(n.address).do_send(JobEnded {
                job_id,
                detached_alive,
            });
        }
    }

    fn kill_actor(&mut self, actor_id: ActorId, reason: String) {
        let class = self
            .actors
            .class_of(actor_id)
            .unwrap_or("unknown")
            .to_string();
        let node = self.actors.node_of(actor_id);
        self.fail_actor(
            actor_id,
            Error::ActorDied {
                actor: actor_id.to_string(),
                class,
                reason,
            },
        );
        // The raylets stop the host (if it was created yet) and free its resources.
        for n in self.nodes.alive() {
            if node.is_none() || node == Some(n.node_id) {
                self.raylet(n.address).do_send(KillHostedActor { actor_id });
            }
        }
    }

    /// Removes a group: every raylet holding its bundles returns them and stops their users.
    fn remove_group(&mut self, id: PlacementGroupId) -> Result<(), Error> {
        if !self.groups.remove(id)? {
            return Ok(());
        }
        self.tell_creators();
        tracing::info!(group = %id, "placement group removed");
        // Until the nodes' next reports: the bundles' resources are theirs again.
        if let Some(g) = self.groups.groups.get(&id) {
            for (i, node) in g.summary.nodes.iter().enumerate() {
                let (Some(node), Some(bundle)) = (node, g.summary.bundles.get(i)) else {
                    continue;
                };
                if let Some(n) = self.nodes.get_mut(node) {
                    let extra = committed_resources(id, i as u32, bundle);
                    let _ = n.total.checked_sub(&extra);
                    let _ = n.available.checked_sub(&extra);
                    n.available.add(bundle);
                }
            }
        }
        // Every live raylet: those holding bundles return them, and any may hold work queued
        // for the group.
        for n in self.nodes.alive() {
            self.raylet(n.address).do_send(CancelBundles {
                group: id,
                indices: None,
            });
        }
        Ok(())
    }

    /// Tries to place every waiting group (rescheduling ones first).
    fn schedule_groups(&mut self, ctx: &mut Context<Self>) {
        for id in self.groups.to_schedule() {
            self.try_place(id, ctx);
        }
    }

    /// Picks nodes for a group's unplaced bundles and starts a reservation round.
    fn try_place(&mut self, id: PlacementGroupId, ctx: &mut Context<Self>) {
        let views = self.nodes.views();
        let Some(g) = self.groups.groups.get_mut(&id) else {
            return;
        };
        let summary = &g.summary;
        let missing: Vec<usize> = (0..summary.bundles.len())
            .filter(|&i| summary.nodes[i].is_none())
            .collect();
        if missing.is_empty() || self.rounds.contains_key(&id) {
            return;
        }
        let bundles: Vec<ResourceSet> = missing
            .iter()
            .map(|&i| summary.bundles[i].clone())
            .collect();
        let placed: Vec<NodeId> = summary.nodes.iter().flatten().copied().collect();
        // SPREAD and STRICT_SPREAD keep away from the nodes the group already has.
        let avoid = match summary.strategy {
            PlacementStrategy::Spread | PlacementStrategy::StrictSpread => placed.clone(),
            _ => Vec::new(),
        };
        let Ok(assign) = place_bundles(&views, &bundles, summary.strategy, &avoid, &placed) else {
            return;
        };
        // Per node: the bundles to reserve there.
        let mut per_node: Vec<(NodeId, Vec<(u32, ResourceSet)>)> = Vec::new();
        for (k, node) in assign.iter().enumerate() {
            let entry = (missing[k] as u32, bundles[k].clone());
            match per_node.iter_mut().find(|(n, _)| n == node) {
                Some((_, b)) => b.push(entry),
                None => per_node.push((*node, vec![entry])),
            }
        }
        g.in_flight = true;
        let plan: Vec<(usize, NodeId)> = missing.iter().copied().zip(assign).collect();
        let mut round = Round::new(id, per_node);
        let actions = round.start();
        self.rounds.insert(id, (round, plan));
        self.run_round(id, actions, ctx);
    }

    /// Reports a raylet's answer to a prepare (`commit: false`) or a commit as a [`RoundReply`]
    /// once it comes; no node (`None`) or a failed request is a refusal.
    fn answer_round(
        &self,
        ctx: &mut Context<Self>,
        group: PlacementGroupId,
        node: NodeId,
        commit: bool,
        reply: Option<impl Future<Output = Result<Result<(), Error>, Error>> + 'static>,
    ) {
        let me = ctx.address();
        ctx.spawn(
            async move {
                let ok = match reply {
                    Some(r) => matches!(r.await, Ok(Ok(()))),
                    None => false,
                };
                me.do_send(RoundReply {
                    group,
                    node,
                    commit,
                    ok,
                });
            }
            .into_actor(self),
        );
    }

    /// Sends what a reservation round asks for; its answers come back as [`RoundReply`].
    fn run_round(
        &mut self,
        id: PlacementGroupId,
        actions: Vec<RoundAction>,
        ctx: &mut Context<Self>,
    ) {
        for action in actions {
            let address = |node: NodeId| self.nodes.get(&node).map(|n| n.address);
            match action {
                RoundAction::Prepare {
                    node,
                    bundles,
                    commit,
                } => {
                    let msg = PrepareBundles {
                        group: id,
                        bundles,
                        commit,
                    };
                    let reply = address(node).map(|a| self.raylet(a).send(msg));
                    self.answer_round(ctx, id, node, false, reply);
                }
                RoundAction::Commit { node } => {
                    let reply =
                        address(node).map(|a| self.raylet(a).send(CommitBundles { group: id }));
                    self.answer_round(ctx, id, node, true, reply);
                }
                RoundAction::Cancel { node, indices } => {
                    if let Some(a) = address(node) {
                        self.raylet(a).do_send(CancelBundles {
                            group: id,
                            indices: Some(indices),
                        });
                    }
                }
                RoundAction::Done(ok) => {
                    if let Some((_, plan)) = self.rounds.remove(&id) {
                        self.placement_done(id, plan, ok, ctx);
                    }
                }
            }
        }
    }

    /// Broadcasts the view once [`VIEW_COALESCE`] from now, with whatever else changed by
    /// then: a burst of placement-group changes costs the raylets one view, not one each.
    fn broadcast_view_soon(&mut self, ctx: &mut Context<Self>) {
        if self.view_due {
            return;
        }
        self.view_due = true;
        ctx.run_later(VIEW_COALESCE, |act, _| {
            act.view_due = false;
            act.broadcast_view();
        });
    }

    /// The end of a reservation round.
    fn placement_done(
        &mut self,
        id: PlacementGroupId,
        plan: Vec<(usize, NodeId)>,
        ok: bool,
        ctx: &mut Context<Self>,
    ) {
        let Some(g) = self.groups.groups.get_mut(&id) else {
            return;
        };
        g.in_flight = false;
        if g.summary.state == PlacementGroupState::Removed {
            // Removed while reserving: give the bundles back.
            if ok {
                let mut nodes: Vec<NodeId> = plan.iter().map(|(_, n)| *n).collect();
                nodes.sort();
                nodes.dedup();
                for node in nodes {
                    if let Some(n) = self.nodes.get(&node) {
                        self.raylet(n.address).do_send(CancelBundles {
                            group: id,
                            indices: None,
                        });
                    }
                }
            }
            return;
        }
        if !ok {
            return;
        }
        for (i, node) in &plan {
            g.summary.nodes[*i] = Some(*node);
            if let Some(n) = self.nodes.get_mut(node) {
                // Until the node's next report: the bundle's resources became the group's.
                let bundle = &g.summary.bundles[*i];
                let extra = committed_resources(id, *i as u32, bundle);
                let _ = n.available.checked_sub(bundle);
                n.total.add(&extra);
                n.available.add(&extra);
            }
        }
        if g.summary.nodes.iter().all(Option::is_some) {
            tracing::info!(group = %id, nodes = ?g.summary.nodes, "placement group created");
            self.groups.mark_created(id);
            self.tell_creators();
        }
        self.broadcast_view_soon(ctx);
    }
}

impl Actor for Gcs {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        supervise::component("GCS");
        ctx.run_interval(self.settings.tick, |act, ctx| act.tick(ctx));
    }
}

impl Handler<RoundReply> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: RoundReply, ctx: &mut Context<Self>) {
        let _h = supervise::message_span!("gcs", RoundReply, group = %msg.group, node = %msg.node);
        let Some((round, _)) = self.rounds.get_mut(&msg.group) else {
            return;
        };
        let actions = if msg.commit {
            round.committed(msg.node, msg.ok)
        } else {
            round.prepared(msg.node, msg.ok)
        };
        let group = round.group();
        self.run_round(group, actions, ctx);
    }
}

impl Handler<RegisterNode> for Gcs {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: RegisterNode, ctx: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", RegisterNode, node = %msg.node_id);
        tracing::info!(node = %msg.node_id, address = %msg.address, resources = ?msg.total,
            "node registered");
        self.nodes
            .register(msg.node_id, msg.address, msg.total, Instant::now());
        for spec in std::mem::take(&mut self.unplaced) {
            self.schedule_actor(spec);
        }
        self.broadcast_view();
        self.schedule_groups(ctx);
        Ok(())
    }
}

impl Handler<Heartbeat> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: Heartbeat, _: &mut Context<Self>) {
        let _h = supervise::message_span!("gcs", Heartbeat, node = %msg.node_id);
        self.nodes.heartbeat(
            msg.node_id,
            msg.available,
            msg.total,
            msg.backlog,
            Instant::now(),
        );
    }
}

impl Handler<GetNodes> for Gcs {
    type Result = MessageResult<GetNodes>;
    fn handle(&mut self, _: GetNodes, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", GetNodes);
        MessageResult(self.nodes.entries())
    }
}

impl Handler<RegisterJob> for Gcs {
    type Result = Result<bool, Error>;
    fn handle(&mut self, msg: RegisterJob, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", RegisterJob, job = %msg.job_id);
        let need = match (&msg.exe, &self.binaries) {
            // Verified, not just present: a changed file is deleted and uploaded again.
            (Some(exe), Some(cache)) => !cache.verified(&exe.hash)?,
            _ => false,
        };
        tracing::info!(job = %msg.job_id, namespace = %msg.namespace, driver = %msg.driver,
            "job registered");
        self.jobs.insert(
            msg.job_id,
            JobRecord {
                namespace: msg.namespace,
                driver: msg.driver,
                exe: msg.exe,
                log_to_driver: msg.log_to_driver,
                start_ms: now_ms(),
                pid: msg.pid,
                env: msg.env,
                working_dir: msg.working_dir,
                working_dir_package: msg.working_dir_package,
            },
        );
        Ok(need)
    }
}

impl Handler<GetJob> for Gcs {
    type Result = Result<JobInfo, Error>;
    fn handle(&mut self, msg: GetJob, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", GetJob, job = %msg.job_id);
        self.jobs
            .get(&msg.job_id)
            .map(|j| JobInfo {
                namespace: j.namespace.clone(),
                exe: j.exe.clone(),
                driver: j.driver,
                log_to_driver: j.log_to_driver,
                env: j.env.clone(),
                working_dir: j.working_dir.clone(),
                working_dir_package: j.working_dir_package.clone(),
            })
            .ok_or_else(|| {
                Error::invalid(format!(
                    "job {} is not running (its driver exited)",
                    msg.job_id
                ))
            })
    }
}

impl Handler<PutBinary> for Gcs {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: PutBinary, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", PutBinary, hash = %msg.hash);
        let cache = self
            .binaries
            .as_ref()
            .ok_or_else(|| Error::invalid("this GCS keeps no executables"))?;
        cache.put(&msg.hash, &msg.data)
    }
}

impl Handler<GetBinary> for Gcs {
    type Result = Result<Bytes, Error>;
    fn handle(&mut self, msg: GetBinary, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", GetBinary, hash = %msg.hash);
        let cache = self
            .binaries
            .as_ref()
            .ok_or_else(|| Error::invalid("this GCS keeps no executables"))?;
        cache.read(&msg.hash)
    }
}

impl Handler<HasBinary> for Gcs {
    type Result = Result<bool, Error>;
    fn handle(&mut self, msg: HasBinary, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", HasBinary, hash = %msg.hash);
        match &self.binaries {
            // Verified, not just present: a changed file is deleted and uploaded again.
            Some(cache) => cache.verified(&msg.hash),
            None => Ok(false),
        }
    }
}

impl Handler<FinishJob> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: FinishJob, _: &mut Context<Self>) {
        let _h = supervise::message_span!("gcs", FinishJob, job = %msg.job_id);
        self.finish_job(msg.job_id);
    }
}

impl Handler<PeerLost> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: PeerLost, _: &mut Context<Self>) {
        let _h = supervise::message_span!("gcs", PeerLost, peer = %msg.addr);
        // A process that is gone hears of no group again.
        self.groups.unwatch_at(msg.addr);
        if let Some(node) = self.nodes.at(msg.addr) {
            if self.nodes.mark_dead(node) {
                self.node_dead(node, "its connection closed");
            }
        }
        let jobs: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.driver == msg.addr)
            .map(|(id, _)| *id)
            .collect();
        for job in jobs {
            self.finish_job(job);
        }
        // A process that is gone no longer calls anyone.
        for subs in self.subscribers.values_mut() {
            subs.retain(|s| *s != msg.addr);
        }
    }
}

impl Handler<CreateActor> for Gcs {
    type Result = Result<Registered, Error>;
    fn handle(&mut self, msg: CreateActor, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", CreateActor, task = %msg.spec.task_id, job = %msg.spec.job_id);
        let TaskKind::ActorCreation(creation) = &msg.spec.kind else {
            return Err(Error::invalid("CreateActor needs an actor-creation task"));
        };
        // Only a running job's actors: one for a job this cluster does not know (forged, or of
        // a driver that has left) would hold its resources with no one to release them.
        if !self.jobs.contains_key(&msg.spec.job_id) {
            return Err(Error::invalid(format!(
                "actor {} belongs to job {}, which is not running on this cluster",
                creation.actor_id, msg.spec.job_id
            )));
        }
        let name = creation
            .name
            .clone()
            .map(|n| (creation.namespace.clone(), n));
        let outcome = self.actors.register(
            creation.actor_id,
            NewActor {
                class: msg.spec.function.path.to_string(),
                name,
                detached: creation.detached,
                get_if_exists: msg.get_if_exists,
                max_restarts: creation.max_restarts,
            },
        )?;
        if outcome == Registered::New {
            self.actor_specs.insert(creation.actor_id, msg.spec.clone());
            self.schedule_actor(msg.spec);
        }
        Ok(outcome)
    }
}

impl Handler<ActorStarted> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: ActorStarted, _: &mut Context<Self>) {
        let _h = supervise::message_span!("gcs", ActorStarted, actor = %msg.actor_id, node = %msg.node_id);
        Self::deliver(self.actors.alive(msg.actor_id, msg.host, msg.node_id));
    }
}

impl Handler<ActorFailed> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: ActorFailed, _: &mut Context<Self>) {
        let _h = supervise::message_span!("gcs", ActorFailed, actor = %msg.actor_id);
        self.fail_actor(msg.actor_id, msg.error);
    }
}

impl Handler<ActorLost> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: ActorLost, _: &mut Context<Self>) {
        let _h = supervise::message_span!("gcs", ActorLost, actor = %msg.actor_id);
        self.actor_lost(msg.actor_id, msg.error);
    }
}

impl Handler<WatchActor> for Gcs {
    type Result = ResponseFuture<Result<ActorUpdate<SocketAddr>, Error>>;
    fn handle(&mut self, msg: WatchActor, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", WatchActor, actor = %msg.actor_id);
        let subs = self.subscribers.entry(msg.actor_id).or_default();
        if !subs.contains(&msg.subscriber) {
            subs.push(msg.subscriber);
        }
        let (tx, rx) = flume::bounded(1);
        let now = Instant::now();
        if let Some(update) = self.actors.watch(msg.actor_id, msg.after, tx.clone(), now) {
            let _ = tx.send(update);
        }
        Box::pin(async move {
            rx.recv_async()
                .await
                .map_err(|_| Error::shutdown("waiting for an actor to start"))
        })
    }
}

impl Handler<KillActor> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: KillActor, _: &mut Context<Self>) {
        let _h = supervise::message_span!("gcs", KillActor, actor = %msg.actor_id);
        self.kill_actor(msg.actor_id, msg.reason);
    }
}

impl Handler<ActorOutOfScope> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: ActorOutOfScope, _: &mut Context<Self>) {
        let _h = supervise::message_span!("gcs", ActorOutOfScope, actor = %msg.actor_id);
        if self.actors.collectable(msg.actor_id) {
            self.kill_actor(
                msg.actor_id,
                "every handle to the actor was dropped, so it was stopped".into(),
            );
        }
    }
}

impl Handler<LookupActor> for Gcs {
    type Result = Result<(ActorId, String), Error>;
    fn handle(&mut self, msg: LookupActor, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", LookupActor, name = %msg.name);
        self.actors.lookup(&msg.namespace, &msg.name)
    }
}

impl Handler<ListActors> for Gcs {
    type Result = MessageResult<ListActors>;
    fn handle(&mut self, _: ListActors, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", ListActors);
        MessageResult(self.actors.list())
    }
}

impl Handler<ListJobs> for Gcs {
    type Result = MessageResult<ListJobs>;
    fn handle(&mut self, _: ListJobs, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", ListJobs);
        let mut running: Vec<JobSummary> = self
            .jobs
            .iter()
            .map(|(id, j)| j.summary(*id, None))
            .collect();
        running.sort_by_key(|j| (j.start_ms, j.job_id));
        running.extend(self.ended_jobs.iter().cloned());
        MessageResult(running)
    }
}

impl Handler<AddTaskEvents> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: AddTaskEvents, _: &mut Context<Self>) {
        let _h = supervise::message_span!("gcs", AddTaskEvents);
        self.tasks.add(msg.batches, msg.dropped);
    }
}

impl Handler<ListTasks> for Gcs {
    type Result = MessageResult<ListTasks>;
    fn handle(&mut self, msg: ListTasks, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", ListTasks, job = ?msg.job);
        let merged = self.task_records();
        let (finished, failed) = self.tasks.ended();
        MessageResult(TaskList {
            tasks: TaskEvents::pick(merged, msg.job, msg.newest.map(|n| n as usize)),
            dropped: self.tasks.dropped(),
            finished,
            failed,
        })
    }
}

impl Handler<CountTasks> for Gcs {
    type Result = MessageResult<CountTasks>;
    fn handle(&mut self, _: CountTasks, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", CountTasks);
        let merged = self.task_records();
        let (finished, failed) = self.tasks.ended();
        let queue = self.tasks.queue_times();
        MessageResult(TaskCounts {
            by_state: by_state(&merged)
                .into_iter()
                .map(|(s, n)| (s.name().to_string(), n))
                .collect(),
            finished,
            failed,
            queue_buckets: queue.buckets(),
            queue_sum: queue.sum,
            queue_count: queue.count,
        })
    }
}

impl Handler<CreatePlacementGroup> for Gcs {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: CreatePlacementGroup, ctx: &mut Context<Self>) -> Self::Result {
        let _h =
            supervise::message_span!("gcs", CreatePlacementGroup, group = %msg.id, job = %msg.job);
        let id = msg.id;
        // As for actors: a group of a job this cluster does not know would hold its bundles
        // with no driver to remove it.
        if !self.jobs.contains_key(&msg.job) {
            return Err(Error::invalid(format!(
                "placement group {id} belongs to job {}, which is not running on this cluster",
                msg.job
            )));
        }
        self.groups.create(msg)?;
        self.try_place(id, ctx);
        Ok(())
    }
}

impl Handler<WaitPlacementGroup> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: WaitPlacementGroup, _: &mut Context<Self>) {
        let _h = supervise::message_span!("gcs", WaitPlacementGroup, group = %msg.id);
        let owner = self.owner(msg.owner);
        let object = msg.object;
        self.groups.when_ready(
            msg.id,
            Box::new(move |outcome| owner.do_send(GroupReady { object, outcome })),
        );
    }
}

impl Handler<RemovePlacementGroup> for Gcs {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: RemovePlacementGroup, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", RemovePlacementGroup, group = %msg.id);
        self.remove_group(msg.id)
    }
}

impl Handler<GetPlacementGroup> for Gcs {
    type Result = Result<PgSummary, Error>;
    fn handle(&mut self, msg: GetPlacementGroup, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", GetPlacementGroup, name = %msg.name);
        self.groups.lookup(&msg.namespace, &msg.name)
    }
}

impl Handler<ListPlacementGroups> for Gcs {
    type Result = MessageResult<ListPlacementGroups>;
    fn handle(&mut self, msg: ListPlacementGroups, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("gcs", ListPlacementGroups, group = ?msg.id);
        let rows = match msg.id {
            Some(id) => self
                .groups
                .groups
                .get(&id)
                .map(|g| g.summary.clone())
                .into_iter()
                .collect(),
            None => self.groups.in_order().map(|g| g.summary.clone()).collect(),
        };
        MessageResult(rows)
    }
}
