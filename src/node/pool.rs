//! Where a node's tasks and actors actually run: [`Executors`], and the `WorkerPool` actix actor
//! around it.
//!
//! The raylet decides what runs (admission, resources); the executors run it: sync tasks on
//! worker threads (each an actix actor, grown on demand and trimmed when idle, as Ray's worker
//! pool does), async tasks on the event loop, actors in their own hosts. In an embedded cluster
//! the raylet owns the executors itself (no extra hop per task); on a real cluster each job has a
//! `WorkerPool` actor in its worker process on every node, fed by that node's raylet over QUIC.

use crate::actors::host::{
    ActorHost, ActorTask, CallGuard, Construct, HostSite, LocalHost, StopHost,
};
use crate::doorbell::{self, Doorbell};
use crate::error::Error;
use crate::ids::{ActorId, NodeId, ObjectId, TaskId};
use crate::node::executor::{self, Ready};
use crate::node::raylet::{Raylet, TaskDone};
use crate::node::worker::{Execute, Retire, Worker};
use crate::objects::object_ref::OwnerAddress;
use crate::objects::store::Stored;
use crate::resources::Grant;
use crate::system::gcs::Gcs;
use crate::task::{TaskArg, TaskKind, TaskSpec};
use crate::transport::wire::Target;
use actix::prelude::*;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Runs a task the raylet admitted, with its resolved ref arguments and its grant.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct Launch {
    pub(crate) spec: Arc<TaskSpec>,
    pub(crate) resolved: Vec<Option<Stored>>,
    pub(crate) grant: Grant,
}

/// Stops an actor hosted here.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct StopActor {
    pub(crate) actor_id: ActorId,
}

/// A worker thread finished its task and is free: sent to whoever owns the executors (the
/// raylet when embedded, the pool actor in a worker process).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Finished {
    pub(crate) task_id: TaskId,
    pub(crate) worker: Addr<Worker>,
}

/// An actor call from another process, for an actor hosted here.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct ActorCallWire {
    pub(crate) actor_id: ActorId,
    pub(crate) task_id: TaskId,
    pub(crate) method: u32,
    pub(crate) args: Vec<TaskArg>,
    pub(crate) group: Option<String>,
    pub(crate) return_id: ObjectId,
    pub(crate) owner: OwnerAddress,
}

/// The executors of one node (embedded) or of one job on one node (worker process).
pub(crate) struct Executors {
    node: NodeId,
    raylet: Target<Raylet>,
    gcs: Target<Gcs>,
    executor: tokio::runtime::Handle,
    /// Where other processes reach the actors hosted here (none when embedded).
    listen: Option<SocketAddr>,
    idle: Vec<Addr<Worker>>,
    /// Every live worker. An actix actor stops once no `Addr` to it remains, so the pool keeps
    /// one for each worker for as long as the worker should live, busy or idle.
    workers: Vec<Addr<Worker>>,
    max_idle: usize,
    hosts: HashMap<ActorId, (LocalHost, ArbiterHandle)>,
    /// The hosts, for routing calls from other processes without a hop through this pool.
    directory: HostDirectory,
}

/// The actor hosts of a process, by actor: where calls from other processes go.
pub(crate) type HostDirectory = Arc<DashMap<ActorId, LocalHost>>;

impl Executors {
    pub(crate) fn new(
        node: NodeId,
        cpus: usize,
        raylet: Target<Raylet>,
        gcs: Target<Gcs>,
        executor: tokio::runtime::Handle,
        listen: Option<SocketAddr>,
    ) -> Self {
        Executors {
            node,
            raylet,
            gcs,
            executor,
            listen,
            idle: Vec::new(),
            workers: Vec::new(),
            max_idle: cpus.max(1) + 2,
            hosts: HashMap::new(),
            directory: HostDirectory::default(),
        }
    }

    fn spawn_worker(&mut self, home: Recipient<Finished>) -> Addr<Worker> {
        let node = self.node;
        let w = Worker::start_in_arbiter(&Arbiter::new().handle(), move |_| Worker { node, home });
        self.workers.push(w.clone());
        w
    }

    /// The raylet these executors report to.
    pub(crate) fn raylet(&self) -> &Target<Raylet> {
        &self.raylet
    }

    /// Runs admitted work; a sync task's worker reports to `home` when done.
    pub(crate) fn launch(&mut self, msg: Launch, home: Recipient<Finished>) {
        let Launch {
            spec,
            resolved,
            grant,
        } = msg;
        match &spec.kind {
            TaskKind::Normal { is_async: false } => {
                let worker = match self.idle.pop() {
                    Some(w) => w,
                    None => self.spawn_worker(home),
                };
                worker.do_send(Execute {
                    ready: Ready { spec, resolved },
                    grant,
                });
            }
            TaskKind::Normal { is_async: true } => {
                executor::spawn_async(
                    &self.executor,
                    Ready { spec, resolved },
                    grant,
                    self.raylet.clone(),
                    self.node,
                );
            }
            TaskKind::ActorCreation(creation) => {
                let actor_id = creation.actor_id;
                let bell = Doorbell::new();
                let arbiter = doorbell::arbiter(bell.clone());
                let handle = arbiter.handle();
                let site = HostSite {
                    node: self.node,
                    raylet: self.raylet.clone(),
                    gcs: self.gcs.clone(),
                    executor: self.executor.clone(),
                    listen: self.listen,
                };
                let gpus = grant.gpu_ids();
                let b = bell.clone();
                let addr = ActorHost::start_in_arbiter(&handle, move |_| {
                    ActorHost::new(spec, gpus, b, site)
                });
                addr.do_send(Construct { resolved });
                let host = LocalHost { addr, bell };
                self.directory.insert(actor_id, host.clone());
                self.hosts.insert(actor_id, (host, handle));
            }
        }
    }

    /// A worker is free again: keep it idle, or retire it if enough are.
    pub(crate) fn worker_free(&mut self, worker: Addr<Worker>) {
        if self.idle.len() < self.max_idle {
            self.idle.push(worker);
        } else {
            self.workers.retain(|x| *x != worker);
            worker.do_send(Retire);
        }
    }

    /// Stops an actor hosted here.
    pub(crate) fn stop_actor(&mut self, actor_id: ActorId) {
        self.directory.remove(&actor_id);
        if let Some((host, arbiter)) = self.hosts.remove(&actor_id) {
            host.addr.do_send(StopHost);
            arbiter.stop();
        }
    }

    /// Where calls from other processes find this pool's actor hosts.
    pub(crate) fn directory(&self) -> HostDirectory {
        self.directory.clone()
    }
}

/// Routes a call from another process to the actor's host (straight from the thread that
/// received it: calls on one connection arrive, and are posted, in order).
pub(crate) fn deliver_call(directory: &HostDirectory, msg: ActorCallWire) {
    let mut guard = CallGuard::new(msg.return_id, Vec::new(), msg.actor_id);
    guard.owner = Some((msg.task_id, msg.owner));
    let task = ActorTask {
        task_id: msg.task_id,
        method: msg.method,
        args: msg.args,
        group: msg.group,
        guard,
    };
    let refused = match directory.get(&msg.actor_id) {
        Some(host) => host.post(task),
        None => Some(task),
    };
    if let Some(task) = refused {
        task.guard.finish(Err(Error::ActorDied {
            actor: msg.actor_id.to_string(),
            class: String::new(),
            reason: "the actor is no longer hosted by this worker process".into(),
        }));
    }
}

/// The executors of a worker process, as an actor fed by the node's raylet.
pub(crate) struct WorkerPool {
    exec: Executors,
}

impl WorkerPool {
    pub(crate) fn new(exec: Executors) -> Self {
        WorkerPool { exec }
    }
}

impl Actor for WorkerPool {
    type Context = Context<Self>;
}

impl Handler<Launch> for WorkerPool {
    type Result = ();
    fn handle(&mut self, msg: Launch, ctx: &mut Context<Self>) {
        self.exec.launch(msg, ctx.address().recipient());
    }
}

impl Handler<Finished> for WorkerPool {
    type Result = ();
    fn handle(&mut self, msg: Finished, _: &mut Context<Self>) {
        self.exec.raylet().do_send(TaskDone {
            task_id: msg.task_id,
        });
        self.exec.worker_free(msg.worker);
    }
}

impl Handler<StopActor> for WorkerPool {
    type Result = ();
    fn handle(&mut self, msg: StopActor, _: &mut Context<Self>) {
        self.exec.stop_actor(msg.actor_id);
    }
}

impl Handler<ActorCallWire> for WorkerPool {
    type Result = ();
    fn handle(&mut self, msg: ActorCallWire, _: &mut Context<Self>) {
        deliver_call(&self.exec.directory, msg);
    }
}
