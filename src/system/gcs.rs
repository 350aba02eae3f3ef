//! The `Gcs` actix actor: node table (registration, heartbeats, death after a timeout), job
//! table (with each job's executable), actor directory, and the messages that read and change
//! them. On a cluster it also broadcasts the resource view to every raylet.

use crate::actors::client::ActorDead;
use crate::actors::host::LocalHost;
use crate::error::Error;
use crate::ids::PlacementGroupId;
use crate::ids::{ActorId, JobId, NodeId};
use crate::node::raylet::{
    ClusterView, JobEnded, KillActor as RayletKillActor, Raylet, SubmitTask, ViewEntry,
};
use crate::objects::owner::{self, NodeDied};
use crate::placement::bundles::{place as place_bundles, PlacementStrategy};
use crate::placement::group::{committed_resources, PlacementGroupState};
use crate::placement::policy::{pick_node, NodeView, Placement};
use crate::resources::ResourceSet;
use crate::system::actor_directory::{
    ActorDirectory, ActorSummary, ActorUpdate, Notices, Registered,
};
use crate::system::binaries::BinaryCache;
use crate::system::placement_groups::{
    CancelBundles, CommitBundles, CreatePlacementGroup, GetPlacementGroup, ListPlacementGroups,
    OnPlacementGroupReady, PgSummary, PgTable, PrepareBundles, RemovePlacementGroup,
    WaitPlacementGroup,
};
use crate::task::{TaskKind, TaskSpec};
use crate::transport::wire::{Body, Remote, Target};
use crate::transport::Transport;
use actix::prelude::*;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bundles of one reservation round that go to one node.
type NodeBundles = (NodeId, Target<Raylet>, Vec<(u32, ResourceSet)>);

/// Where a live actor is reached: its host actor in this process, or the worker process that
/// hosts it.
#[derive(Clone)]
pub(crate) enum HostRef {
    Local(LocalHost),
    Remote(SocketAddr),
}

/// What the GCS knows of a node.
#[derive(Clone)]
pub(crate) struct NodeRecord {
    pub(crate) node_id: NodeId,
    pub(crate) address: String,
    pub(crate) alive: bool,
    pub(crate) total: ResourceSet,
    /// Last reported available resources (remote nodes; the total until the first report).
    pub(crate) available: ResourceSet,
    pub(crate) raylet: Target<Raylet>,
    last_seen: Instant,
}

/// A node, as [`GetNodes`] reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct NodeEntry {
    pub(crate) node_id: NodeId,
    /// `HOST:PORT` of the node's endpoint, or `"embedded"`.
    pub(crate) address: String,
    pub(crate) alive: bool,
    pub(crate) total: ResourceSet,
}

/// A raylet joins.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct RegisterNode {
    pub(crate) node_id: NodeId,
    pub(crate) address: String,
    pub(crate) total: ResourceSet,
    /// The raylet's address when it is in the GCS's own process.
    #[serde(skip)]
    pub(crate) raylet: Option<Addr<Raylet>>,
}

/// A raylet is alive, and this is what it has free.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct Heartbeat {
    pub(crate) node_id: NodeId,
    pub(crate) available: ResourceSet,
    /// Totals change as placement-group bundles are committed and returned.
    pub(crate) total: ResourceSet,
}

/// Lists the nodes.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Vec<NodeEntry>")]
pub(crate) struct GetNodes;

/// The executable a driver runs: content hash and file name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ExeInfo {
    pub(crate) hash: String,
    pub(crate) name: String,
}

/// A driver starts a job. Answers whether the GCS still needs the driver's executable.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<bool, Error>")]
pub(crate) struct RegisterJob {
    pub(crate) job_id: JobId,
    pub(crate) namespace: String,
    /// Where the driver listens (its death ends the job); none for an embedded driver.
    pub(crate) driver: Option<SocketAddr>,
    pub(crate) exe: Option<ExeInfo>,
}

/// A job, as [`GetJob`] reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct JobInfo {
    pub(crate) namespace: String,
    pub(crate) exe: Option<ExeInfo>,
}

/// Looks up a job (a raylet about to start the job's worker process).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<JobInfo, Error>")]
pub(crate) struct GetJob {
    pub(crate) job_id: JobId,
}

/// A driver uploads its executable (content-addressed).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct PutBinary {
    pub(crate) hash: String,
    pub(crate) data: Bytes,
}

/// A node downloads a job's executable.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<Bytes, Error>")]
pub(crate) struct GetBinary {
    pub(crate) hash: String,
}

/// A driver is done: its workers and non-detached actors go.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct FinishJob {
    pub(crate) job_id: JobId,
}

/// A connection to `addr` was lost (from this process's transport).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PeerLost {
    pub(crate) addr: SocketAddr,
}

/// Registers an actor (claiming its name) and schedules its creation.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<Registered, Error>")]
pub(crate) struct CreateActor {
    pub(crate) spec: Arc<TaskSpec>,
    pub(crate) get_if_exists: bool,
}

/// The actor's constructor succeeded (host in the GCS's process).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ActorStarted {
    pub(crate) actor_id: ActorId,
    pub(crate) node_id: NodeId,
    pub(crate) host: HostRef,
}

/// The actor's constructor succeeded in the worker process listening at `host`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct ActorStartedWire {
    pub(crate) actor_id: ActorId,
    pub(crate) node_id: NodeId,
    pub(crate) host: SocketAddr,
}

/// The actor died for good (constructor failed, unschedulable, killed).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct ActorFailed {
    pub(crate) actor_id: ActorId,
    pub(crate) error: Error,
}

/// The actor's process died: it is restarted if its `max_restarts` allows, else dead.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct ActorLost {
    pub(crate) actor_id: ActorId,
    pub(crate) error: Error,
}

/// Tells `reply` when the actor is alive (newer than incarnation `after`) or dead.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WatchActor {
    pub(crate) actor_id: ActorId,
    pub(crate) after: Option<u32>,
    pub(crate) reply: flume::Sender<ActorUpdate<HostRef>>,
}

/// [`WatchActor`] for a caller in another process: answered with the host's address.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<ActorUpdate<SocketAddr>, Error>")]
pub(crate) struct WatchActorWire {
    pub(crate) actor_id: ActorId,
    pub(crate) after: Option<u32>,
    /// The caller's address: it is told at once if the actor dies later.
    pub(crate) subscriber: Option<SocketAddr>,
}

/// Kills an actor (no restart).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct KillActor {
    pub(crate) actor_id: ActorId,
    pub(crate) reason: String,
}

/// Every handle to an actor was dropped.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct ActorOutOfScope {
    pub(crate) actor_id: ActorId,
}

/// Finds a named actor.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<(ActorId, String), Error>")]
pub(crate) struct LookupActor {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// Lists actors.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Vec<ActorSummary>")]
pub(crate) struct ListActors;

/// Membership settings of a cluster's GCS.
#[derive(Clone, Debug)]
pub(crate) struct Membership {
    /// A node silent for this long is dead.
    pub(crate) node_timeout: Duration,
    /// How often the resource view goes to every raylet.
    pub(crate) view_period: Duration,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            node_timeout: Duration::from_secs(5),
            view_period: Duration::from_millis(200),
        }
    }
}

struct JobRecord {
    namespace: String,
    driver: Option<SocketAddr>,
    exe: Option<ExeInfo>,
}

/// The GCS.
pub(crate) struct Gcs {
    nodes: HashMap<NodeId, NodeRecord>,
    jobs: HashMap<JobId, JobRecord>,
    actors: ActorDirectory<HostRef>,
    /// Processes calling each actor, told when it dies so their calls fail at once.
    subscribers: HashMap<ActorId, Vec<SocketAddr>>,
    /// Each live actor's creation task (its job, its restart policy) and the restarts used.
    actor_specs: HashMap<ActorId, (Arc<TaskSpec>, u32)>,
    /// Actors no live node can host yet; placed again whenever a node joins.
    unplaced: Vec<Arc<TaskSpec>>,
    spread_cursor: usize,
    net: Option<Arc<Transport>>,
    membership: Membership,
    binaries: Option<BinaryCache>,
    groups: PgTable,
}

impl Gcs {
    /// The GCS of an embedded cluster.
    pub(crate) fn new() -> Self {
        Gcs {
            nodes: HashMap::new(),
            jobs: HashMap::new(),
            actors: ActorDirectory::default(),
            subscribers: HashMap::new(),
            actor_specs: HashMap::new(),
            unplaced: Vec::new(),
            spread_cursor: 0,
            net: None,
            membership: Membership::default(),
            binaries: None,
            groups: PgTable::default(),
        }
    }

    /// The GCS of a cluster, reached over `net`.
    pub(crate) fn cluster(
        net: Arc<Transport>,
        membership: Membership,
        binaries: BinaryCache,
    ) -> Self {
        Gcs {
            net: Some(net),
            membership,
            binaries: Some(binaries),
            ..Gcs::new()
        }
    }

    fn deliver(notices: Notices<HostRef>) {
        for (tx, update) in notices {
            let _ = tx.send(update);
        }
    }

    fn fail_actor(&mut self, actor_id: ActorId, error: Error) {
        // The creation task's return object carries the failure to anyone awaiting readiness.
        Self::deliver(self.actors.dead(actor_id, error.clone()));
        self.actor_specs.remove(&actor_id);
        if let (Some(net), Some(subs)) = (&self.net, self.subscribers.remove(&actor_id)) {
            for addr in subs {
                Remote {
                    net: net.clone(),
                    addr,
                }
                .send_body(Body::ActorDead(ActorDead {
                    actor_id,
                    error: error.clone(),
                    restarting: false,
                }));
            }
        }
    }

    /// The actor's process (or node) died: restart it if its policy allows, else it is dead.
    fn actor_lost(&mut self, actor_id: ActorId, error: Error) {
        let spec = match self.actor_specs.get_mut(&actor_id) {
            Some((spec, used)) => match &spec.kind {
                TaskKind::ActorCreation(c)
                    if c.max_restarts < 0 || (*used as i64) < c.max_restarts as i64 =>
                {
                    *used += 1;
                    Some((spec.clone(), *used))
                }
                _ => None,
            },
            None => None,
        };
        match spec {
            Some((spec, n)) if self.actors.restarting(actor_id) => {
                tracing::warn!(actor = %actor_id, restart = n, reason = %error, "restarting actor");
                if let Some(net) = &self.net {
                    for addr in self.subscribers.get(&actor_id).into_iter().flatten() {
                        Remote {
                            net: net.clone(),
                            addr: *addr,
                        }
                        .send_body(Body::ActorDead(ActorDead {
                            actor_id,
                            error: error.clone(),
                            restarting: true,
                        }));
                    }
                }
                self.schedule_actor(spec);
            }
            _ => self.fail_actor(actor_id, error),
        }
    }

    fn views(&self) -> Vec<NodeView> {
        let mut views: Vec<NodeView> = self
            .nodes
            .values()
            .map(|n| NodeView {
                id: n.node_id,
                alive: n.alive,
                total: n.total.clone(),
                available: n.available.clone(),
            })
            .collect();
        views.sort_by_key(|v| v.id);
        views
    }

    /// Picks the node whose raylet will create the actor.
    fn schedule_actor(&mut self, spec: Arc<TaskSpec>) {
        let TaskKind::ActorCreation(creation) = &spec.kind else {
            return;
        };
        let actor_id = creation.actor_id;
        let views = self.views();
        let local = views
            .iter()
            .find(|v| v.alive)
            .map(|v| v.id)
            .unwrap_or(spec.owner.node);
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
                    let _ = n.available.checked_sub(&spec.resources);
                    self.actors.placed(actor_id, node);
                    n.raylet.do_send(SubmitTask { spec, hops: 1 });
                }
            }
            // Queue on a node anyway: its raylet reports the demand and keeps it pending. With no
            // node at all, keep it here until one joins.
            Placement::Infeasible => {
                tracing::warn!(actor = %actor_id, resources = ?spec.resources,
                    "actor cannot fit on any node yet; it stays pending");
                match self.nodes.get(&local).filter(|n| n.alive) {
                    Some(n) => n.raylet.do_send(SubmitTask { spec, hops: 1 }),
                    None => self.unplaced.push(spec),
                }
            }
            Placement::Unschedulable(reason) => {
                let error = Error::ActorUnschedulable {
                    actor: actor_id.to_string(),
                    class: spec.function.path.to_string(),
                    reason,
                };
                owner::report(self.net.as_ref(), &spec, Err(error.clone()));
                self.fail_actor(actor_id, error);
            }
        }
    }

    /// A node stopped answering (or its connection closed): it and its actors are dead.
    fn node_dead(&mut self, node_id: NodeId, reason: &str) {
        let Some(n) = self.nodes.get_mut(&node_id) else {
            return;
        };
        if !n.alive {
            return;
        }
        n.alive = false;
        tracing::warn!(node = %node_id, address = %n.address, reason, "node marked dead");
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
        }
        // Owners retry the tasks they had there: drivers directly, worker processes via their
        // raylets.
        let notice = NodeDied {
            node: node_id,
            reason: reason.to_string(),
        };
        if let Some(net) = &self.net {
            for driver in self.jobs.values().filter_map(|j| j.driver) {
                Remote {
                    net: net.clone(),
                    addr: driver,
                }
                .send_body(Body::NodeDied(notice.clone()));
            }
        }
        for n in self.nodes.values().filter(|n| n.alive) {
            n.raylet.do_send(notice.clone());
        }
        self.broadcast_view();
    }

    fn broadcast_view(&self) {
        if self.net.is_none() {
            return;
        }
        let nodes: Vec<ViewEntry> = self
            .nodes
            .values()
            .filter_map(|n| {
                Some(ViewEntry {
                    node_id: n.node_id,
                    address: n.address.parse().ok()?,
                    alive: n.alive,
                    total: n.total.clone(),
                    available: n.available.clone(),
                })
            })
            .collect();
        for n in self.nodes.values().filter(|n| n.alive) {
            n.raylet.do_send(ClusterView {
                nodes: nodes.clone(),
            });
        }
    }

    fn tick(&mut self) {
        let timeout = self.membership.node_timeout;
        let silent: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.alive && n.raylet.addr().is_some() && n.last_seen.elapsed() > timeout)
            .map(|n| n.node_id)
            .collect();
        for node in silent {
            self.node_dead(
                node,
                &format!("no heartbeat for {:.1} s", timeout.as_secs_f64()),
            );
        }
        self.broadcast_view();
    }

    /// A job ended: its non-detached actors die and every raylet stops its workers.
    fn finish_job(&mut self, job_id: JobId, ctx: &mut Context<Self>) {
        if self.jobs.remove(&job_id).is_none() {
            return;
        }
        tracing::info!(job = %job_id, "job finished");
        let doomed: Vec<ActorId> = self
            .actor_specs
            .iter()
            .filter(|(a, (spec, _))| spec.job_id == job_id && !self.actors.is_detached(**a))
            .map(|(a, _)| *a)
            .collect();
        for actor_id in doomed {
            <Self as Handler<KillActor>>::handle(
                self,
                KillActor {
                    actor_id,
                    reason: "its driver exited (the actor is not detached)".into(),
                },
                ctx,
            );
        }
        for id in self.groups.of_job(job_id) {
            let _ = self.remove_group(id);
        }
        for n in self.nodes.values().filter(|n| n.alive) {
            n.raylet.do_send(JobEnded { job_id });
        }
    }

    /// Removes a group: every raylet holding its bundles returns them and stops their users.
    fn remove_group(&mut self, id: PlacementGroupId) -> Result<(), Error> {
        if !self.groups.remove(id)? {
            return Ok(());
        }
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
        for n in self.nodes.values().filter(|n| n.alive) {
            n.raylet.do_send(CancelBundles {
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

    /// Picks nodes for a group's unplaced bundles and runs the two-phase reservation.
    fn try_place(&mut self, id: PlacementGroupId, ctx: &mut Context<Self>) {
        let views = self.views();
        let Some(g) = self.groups.groups.get_mut(&id) else {
            return;
        };
        let summary = &g.summary;
        let missing: Vec<usize> = (0..summary.bundles.len())
            .filter(|&i| summary.nodes[i].is_none())
            .collect();
        if missing.is_empty() {
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
        let assign = match place_bundles(&views, &bundles, summary.strategy, &avoid, &placed) {
            Ok(a) => a,
            Err(_) => return,
        };
        // Per node: the bundles to reserve there.
        let mut per_node: Vec<NodeBundles> = Vec::new();
        for (k, node) in assign.iter().enumerate() {
            let i = missing[k];
            let Some(rec) = self.nodes.get(node) else {
                return;
            };
            match per_node.iter_mut().find(|(n, _, _)| n == node) {
                Some((_, _, b)) => b.push((i as u32, bundles[k].clone())),
                None => per_node.push((
                    *node,
                    rec.raylet.clone(),
                    vec![(i as u32, bundles[k].clone())],
                )),
            }
        }
        g.in_flight = true;
        let plan: Vec<(usize, NodeId)> = missing.iter().copied().zip(assign).collect();
        // With a single node in the round, its prepare is the whole reservation.
        let single = per_node.len() == 1;
        let fut = async move {
            let mut prepared: Vec<(Target<Raylet>, Vec<u32>)> = Vec::new();
            let mut ok = true;
            for (_, raylet, bundles) in &per_node {
                let msg = PrepareBundles {
                    group: id,
                    bundles: bundles.clone(),
                    commit: single,
                };
                match raylet.send(msg).await {
                    Ok(Ok(())) => {
                        prepared.push((raylet.clone(), bundles.iter().map(|b| b.0).collect()))
                    }
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                // All or nothing: give back every bundle prepared in this round.
                for (raylet, indices) in prepared {
                    raylet.do_send(CancelBundles {
                        group: id,
                        indices: Some(indices),
                    });
                }
                return false;
            }
            if single {
                return true;
            }
            for (_, raylet, _) in &per_node {
                if !matches!(raylet.send(CommitBundles { group: id }).await, Ok(Ok(()))) {
                    ok = false;
                }
            }
            ok
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |ok, act, _| act.placement_done(id, plan, ok)),
        );
    }

    /// The end of a reservation round.
    fn placement_done(&mut self, id: PlacementGroupId, plan: Vec<(usize, NodeId)>, ok: bool) {
        let Some(g) = self.groups.groups.get_mut(&id) else {
            return;
        };
        g.in_flight = false;
        if g.summary.state == PlacementGroupState::Removed {
            // Removed while reserving: give the bundles back.
            if ok {
                let mut nodes: Vec<NodeId> = plan.iter().map(|(_, n)| *n).collect();
                nodes.dedup();
                for node in nodes {
                    if let Some(n) = self.nodes.get(&node) {
                        n.raylet.do_send(CancelBundles {
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
        }
        self.broadcast_view();
    }
}

impl Actor for Gcs {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.net.is_some() {
            ctx.run_interval(self.membership.view_period, |act, _| act.tick());
        }
        // Waiting placement groups are tried again as resources free up.
        ctx.run_interval(Duration::from_millis(50), |act, ctx| {
            act.schedule_groups(ctx)
        });
    }
}

impl Handler<RegisterNode> for Gcs {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: RegisterNode, ctx: &mut Context<Self>) -> Self::Result {
        let raylet = match (msg.raylet, &self.net) {
            (Some(addr), _) => Target::Local(addr),
            (None, Some(net)) => {
                let addr: SocketAddr = msg.address.parse().map_err(|e| {
                    Error::invalid(format!(
                        "node address {:?} is not HOST:PORT: {e}",
                        msg.address
                    ))
                })?;
                Target::remote(net, addr)
            }
            (None, None) => {
                return Err(Error::invalid(
                    "an embedded cluster does not accept nodes from other processes",
                ))
            }
        };
        tracing::info!(node = %msg.node_id, address = %msg.address, resources = ?msg.total,
            "node registered");
        self.nodes.insert(
            msg.node_id,
            NodeRecord {
                node_id: msg.node_id,
                address: msg.address,
                alive: true,
                available: msg.total.clone(),
                total: msg.total,
                raylet,
                last_seen: Instant::now(),
            },
        );
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
        if let Some(n) = self.nodes.get_mut(&msg.node_id) {
            n.last_seen = Instant::now();
            n.available = msg.available;
            n.total = msg.total;
        }
    }
}

impl Handler<GetNodes> for Gcs {
    type Result = MessageResult<GetNodes>;
    fn handle(&mut self, _: GetNodes, _: &mut Context<Self>) -> Self::Result {
        let mut v: Vec<NodeEntry> = self
            .nodes
            .values()
            .map(|n| NodeEntry {
                node_id: n.node_id,
                address: n.address.clone(),
                alive: n.alive,
                total: n.total.clone(),
            })
            .collect();
        v.sort_by_key(|n| n.node_id);
        MessageResult(v)
    }
}

impl Handler<RegisterJob> for Gcs {
    type Result = Result<bool, Error>;
    fn handle(&mut self, msg: RegisterJob, _: &mut Context<Self>) -> Self::Result {
        let need = match (&msg.exe, &self.binaries) {
            (Some(exe), Some(cache)) => !cache.has(&exe.hash),
            _ => false,
        };
        tracing::info!(job = %msg.job_id, namespace = %msg.namespace, driver = ?msg.driver,
            "job registered");
        self.jobs.insert(
            msg.job_id,
            JobRecord {
                namespace: msg.namespace,
                driver: msg.driver,
                exe: msg.exe,
            },
        );
        Ok(need)
    }
}

impl Handler<GetJob> for Gcs {
    type Result = Result<JobInfo, Error>;
    fn handle(&mut self, msg: GetJob, _: &mut Context<Self>) -> Self::Result {
        self.jobs
            .get(&msg.job_id)
            .map(|j| JobInfo {
                namespace: j.namespace.clone(),
                exe: j.exe.clone(),
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
        let cache = self
            .binaries
            .as_ref()
            .ok_or_else(|| Error::invalid("this GCS keeps no executables"))?;
        cache.read(&msg.hash)
    }
}

impl Handler<FinishJob> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: FinishJob, ctx: &mut Context<Self>) {
        self.finish_job(msg.job_id, ctx);
    }
}

impl Handler<PeerLost> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: PeerLost, ctx: &mut Context<Self>) {
        let node = self
            .nodes
            .values()
            .find(|n| n.alive && n.raylet.addr() == Some(msg.addr))
            .map(|n| n.node_id);
        if let Some(node) = node {
            self.node_dead(node, "its connection closed");
        }
        let jobs: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.driver == Some(msg.addr))
            .map(|(id, _)| *id)
            .collect();
        for job in jobs {
            self.finish_job(job, ctx);
        }
    }
}

impl Handler<CreateActor> for Gcs {
    type Result = Result<Registered, Error>;
    fn handle(&mut self, msg: CreateActor, _: &mut Context<Self>) -> Self::Result {
        let TaskKind::ActorCreation(creation) = &msg.spec.kind else {
            return Err(Error::invalid("CreateActor needs an actor-creation task"));
        };
        let name = creation
            .name
            .clone()
            .map(|n| (creation.namespace.clone(), n));
        let outcome = self.actors.register(
            creation.actor_id,
            &msg.spec.function.path,
            name,
            creation.detached,
            msg.get_if_exists,
        )?;
        if outcome == Registered::New {
            self.actor_specs
                .insert(creation.actor_id, (msg.spec.clone(), 0));
            self.schedule_actor(msg.spec);
        }
        Ok(outcome)
    }
}

impl Handler<ActorStarted> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: ActorStarted, _: &mut Context<Self>) {
        Self::deliver(self.actors.alive(msg.actor_id, msg.host, msg.node_id));
    }
}

impl Handler<ActorStartedWire> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: ActorStartedWire, _: &mut Context<Self>) {
        let host = HostRef::Remote(msg.host);
        Self::deliver(self.actors.alive(msg.actor_id, host, msg.node_id));
    }
}

impl Handler<ActorFailed> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: ActorFailed, _: &mut Context<Self>) {
        self.fail_actor(msg.actor_id, msg.error);
    }
}

impl Handler<ActorLost> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: ActorLost, _: &mut Context<Self>) {
        self.actor_lost(msg.actor_id, msg.error);
    }
}

impl Handler<WatchActorWire> for Gcs {
    type Result = ResponseFuture<Result<ActorUpdate<SocketAddr>, Error>>;
    fn handle(&mut self, msg: WatchActorWire, _: &mut Context<Self>) -> Self::Result {
        if let Some(addr) = msg.subscriber {
            let subs = self.subscribers.entry(msg.actor_id).or_default();
            if !subs.contains(&addr) {
                subs.push(addr);
            }
        }
        let (tx, rx) = flume::bounded(1);
        if let Some(update) = self.actors.watch(msg.actor_id, msg.after, tx.clone()) {
            let _ = tx.send(update);
        }
        Box::pin(async move {
            match rx.recv_async().await {
                Ok(ActorUpdate::Alive {
                    addr: HostRef::Remote(addr),
                    incarnation,
                }) => Ok(ActorUpdate::Alive { addr, incarnation }),
                Ok(ActorUpdate::Alive { .. }) => Err(Error::invalid(
                    "the actor lives in the GCS's own process and cannot be called from another",
                )),
                Ok(ActorUpdate::Dead(e)) => Ok(ActorUpdate::Dead(e)),
                Err(_) => Err(Error::shutdown("waiting for an actor to start")),
            }
        })
    }
}

impl Handler<WatchActor> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: WatchActor, _: &mut Context<Self>) {
        if let Some(update) = self
            .actors
            .watch(msg.actor_id, msg.after, msg.reply.clone())
        {
            let _ = msg.reply.send(update);
        }
    }
}

impl Handler<KillActor> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: KillActor, _: &mut Context<Self>) {
        let class = self
            .actors
            .class_of(msg.actor_id)
            .unwrap_or("unknown")
            .to_string();
        let node = self.actors.node_of(msg.actor_id);
        self.fail_actor(
            msg.actor_id,
            Error::ActorDied {
                actor: msg.actor_id.to_string(),
                class,
                reason: msg.reason,
            },
        );
        // The raylets stop the host (if it was created yet) and free its resources.
        for n in self.nodes.values() {
            if node.is_none() || node == Some(n.node_id) {
                n.raylet.do_send(RayletKillActor {
                    actor_id: msg.actor_id,
                });
            }
        }
    }
}

impl Handler<ActorOutOfScope> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: ActorOutOfScope, ctx: &mut Context<Self>) {
        if self.actors.collectable(msg.actor_id) {
            <Self as Handler<KillActor>>::handle(
                self,
                KillActor {
                    actor_id: msg.actor_id,
                    reason: "every handle to the actor was dropped, so it was stopped".into(),
                },
                ctx,
            );
        }
    }
}

impl Handler<LookupActor> for Gcs {
    type Result = Result<(ActorId, String), Error>;
    fn handle(&mut self, msg: LookupActor, _: &mut Context<Self>) -> Self::Result {
        self.actors.lookup(&msg.namespace, &msg.name)
    }
}

impl Handler<ListActors> for Gcs {
    type Result = MessageResult<ListActors>;
    fn handle(&mut self, _: ListActors, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.actors.list())
    }
}

impl Handler<CreatePlacementGroup> for Gcs {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: CreatePlacementGroup, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.id;
        self.groups.create(msg)?;
        self.try_place(id, ctx);
        Ok(())
    }
}

impl Handler<WaitPlacementGroup> for Gcs {
    type Result = ResponseFuture<Result<(), Error>>;
    fn handle(&mut self, msg: WaitPlacementGroup, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = flume::bounded(1);
        self.groups.when_ready(
            msg.id,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        Box::pin(async move {
            rx.recv_async()
                .await
                .map_err(|_| Error::shutdown("waiting for a placement group"))?
        })
    }
}

impl Handler<OnPlacementGroupReady> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: OnPlacementGroupReady, _: &mut Context<Self>) {
        self.groups.when_ready(msg.id, msg.then);
    }
}

impl Handler<RemovePlacementGroup> for Gcs {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: RemovePlacementGroup, _: &mut Context<Self>) -> Self::Result {
        self.remove_group(msg.id)
    }
}

impl Handler<GetPlacementGroup> for Gcs {
    type Result = Result<PgSummary, Error>;
    fn handle(&mut self, msg: GetPlacementGroup, _: &mut Context<Self>) -> Self::Result {
        self.groups.lookup(&msg.namespace, &msg.name)
    }
}

impl Handler<ListPlacementGroups> for Gcs {
    type Result = MessageResult<ListPlacementGroups>;
    fn handle(&mut self, msg: ListPlacementGroups, _: &mut Context<Self>) -> Self::Result {
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
