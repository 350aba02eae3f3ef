//! Where a worker runs what its raylet admitted: the `WorkerPool` actix actor, its
//! [`Executors`], and the directory of the actors hosted here.
//!
//! The raylet decides what runs (admission, resources); the pool runs it: sync tasks on worker
//! threads (each an actix actor, grown on demand and trimmed when idle, as Ray's worker pool
//! does), async tasks on the event loop, actors in their own hosts. Actor calls skip the pool:
//! they go from the switchboard straight to the actor's host.

use crate::actors::host::{HostSite, LocalHost, StopHost};
use crate::error::Error;
use crate::ids::{ActorId, IdDashMap, TaskId};
use crate::invoke;
use crate::protocol::owner::Unstarted;
use crate::protocol::raylet::TaskDone;
use crate::protocol::task::TaskKind;
use crate::protocol::worker::{ActorCall, Launch, PushTask, ReturnLease, StopActor};
use crate::transport::net::Net;
use crate::worker::executor::{self, AsyncSite, LeaseTable};
use crate::worker::thread::WorkerHandle;
use actix::prelude::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A worker thread finished its task and is free.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Finished {
    pub(crate) task_id: TaskId,
    pub(crate) worker: WorkerHandle,
}

/// A leased worker thread was returned by its owner: it is free.
#[derive(Message)]
#[rtype(result = "()")]
struct Released(WorkerHandle);

/// The actor hosts of a process, by actor: where calls go.
pub(crate) type HostDirectory = Arc<IdDashMap<ActorId, LocalHost>>;

/// The executors of one worker.
pub(crate) struct Executors {
    site: HostSite,
    idle: Vec<WorkerHandle>,
    /// Every live worker thread. An actix actor stops once no `Addr` to it remains, so the pool
    /// keeps one for each worker for as long as the worker should live, busy or idle.
    workers: Vec<WorkerHandle>,
    max_idle: usize,
    hosts: HashMap<ActorId, LocalHost>,
    /// The hosts, for routing calls without a hop through the pool.
    directory: HostDirectory,
    /// Slots leased to owners, for pushing tasks without a hop through the pool.
    leases: LeaseTable<WorkerHandle>,
}

impl Executors {
    pub(crate) fn new(site: HostSite, cpus: usize) -> Self {
        Executors {
            site,
            idle: Vec::new(),
            workers: Vec::new(),
            max_idle: cpus.max(1) + 2,
            hosts: HashMap::new(),
            directory: HostDirectory::default(),
            leases: LeaseTable::default(),
        }
    }

    fn spawn_worker(&mut self, home: Recipient<Finished>) -> WorkerHandle {
        let w = WorkerHandle::start(
            self.site.node,
            self.site.net.clone(),
            home,
            self.leases.clone(),
        );
        self.workers.push(w.clone());
        w
    }

    /// Runs admitted work; a sync task's worker reports to `home` when done.
    pub(crate) fn launch(&mut self, launch: Launch, home: Recipient<Finished>) {
        match &launch.spec.kind {
            TaskKind::Normal { is_async: false } => {
                let worker = match self.idle.pop() {
                    Some(w) => w,
                    None => self.spawn_worker(home),
                };
                worker.run(launch);
            }
            TaskKind::Normal { is_async: true } => {
                executor::spawn_async(&async_site(&self.site, &self.leases), launch)
            }
            TaskKind::ActorCreation(creation) => {
                let actor_id = creation.actor_id;
                let gpus = launch.grant.gpu_ids();
                let host = LocalHost::start(launch.spec, gpus, self.site.clone());
                // Findable before it is constructed: calls come as soon as the GCS hears it is.
                self.directory.insert(actor_id, host.clone());
                host.construct(launch.resolved);
                self.hosts.insert(actor_id, host);
            }
        }
    }

    /// A worker is free again: keep it idle, or retire it if enough are.
    pub(crate) fn worker_free(&mut self, worker: WorkerHandle) {
        if self.idle.len() < self.max_idle {
            self.idle.push(worker);
        } else {
            self.workers.retain(|x| *x != worker);
            worker.retire();
        }
    }

    /// Stops an actor hosted here.
    pub(crate) fn stop_actor(&mut self, actor_id: ActorId) {
        self.directory.remove(&actor_id);
        if let Some(host) = self.hosts.remove(&actor_id) {
            host.addr.do_send(StopHost);
        }
    }

    /// Where calls find this pool's actor hosts.
    pub(crate) fn directory(&self) -> HostDirectory {
        self.directory.clone()
    }
}

fn async_site(site: &HostSite, leases: &LeaseTable<WorkerHandle>) -> AsyncSite<WorkerHandle> {
    AsyncSite {
        executor: site.executor.clone(),
        net: site.net.clone(),
        raylet: site.raylet.clone(),
        node: site.node,
        leases: leases.clone(),
    }
}

/// Runs a task its owner pushed to a slot it leases: on the slot's thread, straight from the
/// thread that received it; behind the running task, in
/// order, when the thread is busy; back to the owner when the running task blocked. A push to a
/// slot that is no longer leased fails the task as if its worker had died (its owner retries
/// it, per its retries).
fn run_pushed(site: &AsyncSite<WorkerHandle>, push: PushTask) {
    let PushTask {
        lease,
        grant,
        spec,
        more,
    } = push;
    let launch = Launch {
        resolved: vec![None; spec.args.len()],
        spec,
        grant,
        backlog: more,
        under: Some(lease),
    };
    let slot = site
        .leases
        .get(&lease)
        .map(|slot| (slot.worker.clone(), slot.queue.clone(), slot.owner));
    match slot {
        Some((worker, queue, owner)) => {
            let mut q = queue.lock();
            if q.blocked {
                // Behind a task that waits: back to the owner, to run elsewhere.
                drop(q);
                site.net.tell(
                    owner,
                    Unstarted {
                        lease,
                        returns: vec![launch.spec.return_id],
                    },
                );
            } else if q.busy {
                q.tasks.push_back(launch);
            } else {
                q.busy = true;
                drop(q);
                worker.run(launch);
            }
        }
        None => {
            let error = Error::WorkerDied {
                function: launch.spec.function.path.to_string(),
                reason: "the worker slot it was pushed to is no longer leased".into(),
            };
            let net = site.net.clone();
            site.net.runtime().spawn(async move {
                invoke::fail(&net, &launch.spec, error);
            });
        }
    }
}

/// The answer to a one-way message sent as a request.
fn one_way<M: crate::transport::net::Wire<Result = ()>>(
    what: &'static str,
) -> impl Fn(M) -> crate::transport::net::Reply<M> {
    move |_| {
        Box::pin(async move {
            Err(Error::invalid(format!(
                "{what} is a one-way message; its answer goes to the owner"
            )))
        })
    }
}

/// Ends a lease: the slot's resources go back to the raylet, its thread back to the pool.
fn end_lease(site: &AsyncSite<WorkerHandle>, pool: &Addr<WorkerPool>, lease: crate::ids::TaskId) {
    if let Some((_, slot)) = site.leases.remove(&lease) {
        site.raylet.do_send(TaskDone { task_id: lease });
        pool.do_send(Released(slot.worker));
    }
}

/// Routes a call to its actor's host (straight from the thread that received it: calls on one
/// connection arrive, and are posted, in order).
pub(crate) fn deliver_call(net: &Arc<Net>, directory: &HostDirectory, call: ActorCall) {
    let refused = match directory.get(&call.actor_id) {
        Some(host) => host.post(call),
        None => Some(call),
    };
    if let Some(call) = refused {
        let error = Error::ActorDied {
            actor: call.actor_id.to_string(),
            class: String::new(),
            reason: "the actor is no longer hosted by this worker".into(),
        };
        // Answered from the event loop, never from inside the send: the caller is still in
        // the middle of carrying out its submission.
        let n = net.clone();
        net.runtime().spawn(async move {
            invoke::send_result(
                &n,
                call.owner.addr,
                call.task_id,
                call.return_id,
                Some(call.actor_id),
                Err(error),
                None,
            );
        });
    }
}

/// The executors of a worker, as an actor fed by the node's raylet.
pub(crate) struct WorkerPool {
    exec: Executors,
}

impl WorkerPool {
    /// Starts the pool on `arbiter` and registers it (and its actors' directory) in `net`.
    pub(crate) fn start(
        net: &Arc<Net>,
        site: HostSite,
        cpus: usize,
        arbiter: &ArbiterHandle,
    ) -> Result<Addr<WorkerPool>, Error> {
        let exec = Executors::new(site, cpus);
        let directory = exec.directory();
        let leased = async_site(&exec.site, &exec.leases);
        let addr = WorkerPool::start_in_arbiter(arbiter, move |_| WorkerPool { exec });
        net.serve_actor::<Launch, _>(&addr)?;
        net.serve_actor::<StopActor, _>(&addr)?;
        let site = leased.clone();
        net.serve::<PushTask>(
            move |push| run_pushed(&site, push),
            one_way("a pushed task"),
        )?;
        let (site, pool) = (leased.clone(), addr.clone());
        net.serve::<ReturnLease>(
            move |m| end_lease(&site, &pool, m.lease),
            one_way("a lease's return"),
        )?;
        // An owner that is gone returns nothing: its slots go back to the raylet.
        let (site, pool) = (leased, addr.clone());
        net.on_lost(Arc::new(move |peer: SocketAddr, _| {
            let held: Vec<_> = site
                .leases
                .iter()
                .filter(|slot| slot.owner == peer)
                .map(|slot| *slot.key())
                .collect();
            for lease in held {
                tracing::debug!(%lease, owner = %peer, "lease ended with its owner's connection");
                end_lease(&site, &pool, lease);
            }
        }));
        let n = net.clone();
        net.serve::<ActorCall>(
            move |call| deliver_call(&n, &directory, call),
            |_| {
                Box::pin(async {
                    Err(Error::invalid(
                        "an actor call is a one-way message; its result goes to its owner",
                    ))
                })
            },
        )?;
        Ok(addr)
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
        self.exec.site.raylet.do_send(TaskDone {
            task_id: msg.task_id,
        });
        self.exec.worker_free(msg.worker);
    }
}

impl Handler<Released> for WorkerPool {
    type Result = ();
    fn handle(&mut self, msg: Released, _: &mut Context<Self>) {
        self.exec.worker_free(msg.0);
    }
}

impl Handler<StopActor> for WorkerPool {
    type Result = ();
    fn handle(&mut self, msg: StopActor, _: &mut Context<Self>) {
        self.exec.stop_actor(msg.actor_id);
    }
}
