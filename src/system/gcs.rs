//! The `Gcs` actix actor: node table, job table and actor directory, with the messages that
//! read and change them.

use crate::actors::host::ActorHost;
use crate::error::Error;
use crate::ids::{ActorId, JobId, NodeId};
use crate::node::raylet::{KillActor as RayletKillActor, Raylet, SubmitTask};
use crate::objects::store::Stored;
use crate::placement::policy::{pick_node, NodeView, Placement};
use crate::resources::ResourceSet;
use crate::runtime;
use crate::system::actor_directory::{
    ActorDirectory, ActorSummary, ActorUpdate, Notices, Registered,
};
use crate::task::{TaskKind, TaskSpec};
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// What the GCS knows of a node.
#[derive(Clone)]
pub(crate) struct NodeRecord {
    pub(crate) node_id: NodeId,
    pub(crate) address: String,
    pub(crate) alive: bool,
    pub(crate) total: ResourceSet,
    pub(crate) raylet: Addr<Raylet>,
}

/// A raylet joins.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RegisterNode {
    pub(crate) node_id: NodeId,
    pub(crate) address: String,
    pub(crate) total: ResourceSet,
    pub(crate) raylet: Addr<Raylet>,
}

/// Lists the nodes.
#[derive(Message)]
#[rtype(result = "Vec<NodeRecord>")]
pub(crate) struct GetNodes;

/// A driver starts a job.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RegisterJob {
    pub(crate) job_id: JobId,
    pub(crate) namespace: String,
}

/// Registers an actor (claiming its name) and schedules its creation.
#[derive(Message)]
#[rtype(result = "Result<Registered, Error>")]
pub(crate) struct CreateActor {
    pub(crate) spec: Arc<TaskSpec>,
    pub(crate) get_if_exists: bool,
}

/// The actor's constructor succeeded.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ActorStarted {
    pub(crate) actor_id: ActorId,
    pub(crate) node_id: NodeId,
    pub(crate) host: Addr<ActorHost>,
}

/// The actor died (constructor failed, unschedulable, host gone).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ActorFailed {
    pub(crate) actor_id: ActorId,
    pub(crate) error: Error,
}

/// Tells `reply` when the actor is alive (newer than incarnation `after`) or dead.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WatchActor {
    pub(crate) actor_id: ActorId,
    pub(crate) after: Option<u32>,
    pub(crate) reply: flume::Sender<ActorUpdate<Addr<ActorHost>>>,
}

/// Kills an actor (no restart).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct KillActor {
    pub(crate) actor_id: ActorId,
    pub(crate) reason: String,
}

/// Every handle to an actor was dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ActorOutOfScope {
    pub(crate) actor_id: ActorId,
}

/// Finds a named actor.
#[derive(Message)]
#[rtype(result = "Result<(ActorId, String), Error>")]
pub(crate) struct LookupActor {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// Lists actors.
#[derive(Message)]
#[rtype(result = "Vec<ActorSummary>")]
pub(crate) struct ListActors;

/// The GCS.
pub(crate) struct Gcs {
    nodes: HashMap<NodeId, NodeRecord>,
    jobs: HashMap<JobId, String>,
    actors: ActorDirectory<Addr<ActorHost>>,
    /// Actors no live node can host yet; placed again whenever a node joins.
    unplaced: Vec<Arc<TaskSpec>>,
    spread_cursor: usize,
}

impl Gcs {
    pub(crate) fn new() -> Self {
        Gcs {
            nodes: HashMap::new(),
            jobs: HashMap::new(),
            actors: ActorDirectory::default(),
            unplaced: Vec::new(),
            spread_cursor: 0,
        }
    }

    fn deliver(notices: Notices<Addr<ActorHost>>) {
        for (tx, update) in notices {
            let _ = tx.send(update);
        }
    }

    fn fail_actor(&mut self, actor_id: ActorId, error: Error) {
        // The creation task's return object carries the failure to anyone awaiting readiness.
        Self::deliver(self.actors.dead(actor_id, error));
    }

    /// Picks the node whose raylet will create the actor.
    fn schedule_actor(&mut self, spec: Arc<TaskSpec>) {
        let TaskKind::ActorCreation(creation) = &spec.kind else {
            return;
        };
        let mut views: Vec<NodeView> = self
            .nodes
            .values()
            .map(|n| NodeView {
                id: n.node_id,
                alive: n.alive,
                total: n.total.clone(),
                available: n.total.clone(),
            })
            .collect();
        views.sort_by_key(|v| v.id);
        let local = views.first().map(|v| v.id).unwrap_or(spec.owner.node);
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
                if let Some(n) = self.nodes.get(&node) {
                    n.raylet.do_send(SubmitTask { spec });
                }
            }
            // Queue on a node anyway: its raylet reports the demand and keeps it pending. With no
            // node at all, keep it here until one joins.
            Placement::Infeasible => {
                tracing::warn!(actor = %creation.actor_id, resources = ?spec.resources,
                    "actor cannot fit on any node yet; it stays pending");
                match self.nodes.get(&local) {
                    Some(n) => n.raylet.do_send(SubmitTask { spec }),
                    None => self.unplaced.push(spec),
                }
            }
            Placement::Unschedulable(reason) => {
                let error = Error::ActorUnschedulable {
                    actor: creation.actor_id.to_string(),
                    class: spec.function.path.to_string(),
                    reason,
                };
                runtime::with_current(|rt| {
                    rt.refs
                        .complete(spec.return_id, Stored::Error(error.clone()), Vec::new());
                    rt.refs.unpin(&spec.pinned);
                });
                self.fail_actor(creation.actor_id, error);
            }
        }
    }
}

impl Actor for Gcs {
    type Context = Context<Self>;
}

impl Handler<RegisterNode> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: RegisterNode, _: &mut Context<Self>) {
        tracing::info!(node = %msg.node_id, resources = ?msg.total, "node registered");
        self.nodes.insert(
            msg.node_id,
            NodeRecord {
                node_id: msg.node_id,
                address: msg.address,
                alive: true,
                total: msg.total,
                raylet: msg.raylet,
            },
        );
        for spec in std::mem::take(&mut self.unplaced) {
            self.schedule_actor(spec);
        }
    }
}

impl Handler<GetNodes> for Gcs {
    type Result = MessageResult<GetNodes>;
    fn handle(&mut self, _: GetNodes, _: &mut Context<Self>) -> Self::Result {
        let mut v: Vec<NodeRecord> = self.nodes.values().cloned().collect();
        v.sort_by_key(|n| n.node_id);
        MessageResult(v)
    }
}

impl Handler<RegisterJob> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: RegisterJob, _: &mut Context<Self>) {
        self.jobs.insert(msg.job_id, msg.namespace);
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

impl Handler<ActorFailed> for Gcs {
    type Result = ();
    fn handle(&mut self, msg: ActorFailed, _: &mut Context<Self>) {
        self.fail_actor(msg.actor_id, msg.error);
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
