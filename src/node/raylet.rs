//! The `Raylet` actix actor: a thin shell around the node's [`Scheduler`]. It feeds the
//! scheduler the messages the node receives and carries out its decisions: admitted work goes
//! to the job's worker on this node ([`JobWorkers`]), tasks another node should run go to that
//! node's raylet, failures go to the tasks' owners, and actor deaths to the GCS. It registers
//! the node with the GCS, reports its resources with each heartbeat, and fetches queued tasks'
//! arguments from their owners.

use crate::error::Error;
use crate::ids::{NodeId, TaskId};
use crate::invoke;
use crate::node::logs;
use crate::node::processes::{JobWorkers, Sent, WorkerEvent, WorkerSettings};
use crate::node::scheduler::{Action, Ready, Scheduler};
use crate::objects::read;
use crate::protocol::gcs::{ActorFailed, ActorLost, Heartbeat, RegisterNode};
use crate::protocol::owner::{Infeasible, NodeDied, TaskQueued, TasksPlaced};
use crate::protocol::raylet::*;
use crate::protocol::refs::Stored;
use crate::protocol::svc;
use crate::protocol::task::TaskKind;
use crate::protocol::worker::Launch;
use crate::resources::ResourceSet;
use crate::supervise;
use crate::transport::net::{Net, Target};
use actix::prelude::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Raylets pass argument values up to this size along with the task; larger ones the executing
/// worker fetches from their owners itself, so they cross the network once.
pub(crate) const RAYLET_INLINE_MAX: u64 = 1 << 20;

/// How long the owners of tasks queued here wait to hear where they are.
const PLACED_DELAY: Duration = Duration::from_millis(20);

/// The connection to a process was lost (from this process's switchboard).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PeerLost {
    pub(crate) addr: SocketAddr,
}

/// A queued task's arguments arrived.
#[derive(Message)]
#[rtype(result = "()")]
struct Resolved(Ready);

/// How a raylet runs.
pub(crate) struct RayletSettings {
    pub(crate) node_id: NodeId,
    pub(crate) total: ResourceSet,
    /// The GCS's process.
    pub(crate) gcs: SocketAddr,
    /// How often it reports to the GCS.
    pub(crate) heartbeat: Duration,
    /// How it starts worker processes (`None`: jobs bring their own worker).
    pub(crate) spawn: Option<WorkerSettings>,
}

/// The raylet of one node.
pub(crate) struct Raylet {
    core: Scheduler,
    net: Arc<Net>,
    gcs: Target<svc::Gcs>,
    workers: JobWorkers,
    heartbeat: Duration,
    /// Requests of blocked tasks waiting for their CPU, by task.
    unblocking: HashMap<TaskId, Vec<flume::Sender<()>>>,
    /// A report of placed tasks is scheduled.
    placed_pending: bool,
    /// Where the node keeps its worker processes' output and its own log, if it does.
    log_dir: Option<std::path::PathBuf>,
}

impl Raylet {
    /// Starts the raylet on `arbiter` and registers it as the handler of its messages in `net`.
    pub(crate) fn start(
        net: &Arc<Net>,
        settings: RayletSettings,
        arbiter: &ArbiterHandle,
    ) -> Result<Addr<Raylet>, Error> {
        let n = net.clone();
        let log_dir = settings.spawn.as_ref().and_then(|s| s.log_dir.clone());
        let addr = Raylet::start_in_arbiter(arbiter, move |_| Raylet {
            log_dir,
            core: Scheduler::new(settings.node_id, n.addr(), settings.total),
            gcs: n.target(settings.gcs),
            workers: JobWorkers::new(n.clone(), settings.spawn),
            heartbeat: settings.heartbeat,
            net: n,
            unblocking: HashMap::new(),
            placed_pending: false,
        });
        macro_rules! serve {
            ($($m:ty),*) => { $(net.serve_actor::<$m, _>(&addr)?;)* };
        }
        serve!(
            SubmitTask,
            TaskDone,
            TaskBlocked,
            TaskUnblocked,
            ActorReady,
            KillHostedActor,
            GetResources,
            ClusterView,
            RegisterWorker,
            JobEnded,
            NodeDown,
            PrepareBundles,
            CommitBundles,
            CancelBundles,
            TakeBack,
            GetWorkers,
            ReadLog
        );
        let lost = addr.clone();
        net.on_lost(Arc::new(move |peer, _| {
            lost.do_send(PeerLost { addr: peer })
        }));
        Ok(addr)
    }

    /// Carries out the scheduler's decisions.
    fn act(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        let mut more = Vec::new();
        let backlog = self.core.queued() > 0;
        for action in actions {
            match action {
                Action::Launch(ready, grant) => {
                    let launch = Launch {
                        spec: ready.spec,
                        resolved: ready.resolved,
                        grant,
                        backlog,
                        under: None,
                    };
                    let me = ctx.address().recipient();
                    if let Sent::NoWorker(launch, e) = self.workers.launch(launch, &self.gcs, me) {
                        let reason = e.to_string();
                        more.extend(self.core.worker_start_failed(vec![launch.spec], &reason));
                    }
                }
                Action::Resolve(spec, deps) => self.resolve(spec, deps, ctx),
                Action::Forward {
                    address,
                    spec,
                    hops,
                } => {
                    tracing::debug!(task = %spec.task_id, to = %address, "forwarding task");
                    self.net
                        .target::<svc::Raylet>(address)
                        .do_send(SubmitTask { spec, hops });
                }
                Action::Report(spec, error) => invoke::fail(&self.net, &spec, error),
                Action::Queued(spec) => {
                    self.net
                        .target::<svc::Owner>(spec.owner.addr)
                        .do_send(TaskQueued {
                            task_id: spec.task_id,
                            attempt: spec.attempt,
                            raylet: self.net.addr(),
                        })
                }
                Action::Infeasible(spec) => {
                    let what = match &spec.kind {
                        TaskKind::ActorCreation(_) => format!("actor {}", spec.function.path),
                        TaskKind::Normal { .. } => format!("task {}", spec.function.path),
                    };
                    self.net
                        .target::<svc::Owner>(spec.owner.addr)
                        .do_send(Infeasible {
                            task_id: spec.task_id,
                            what,
                            resources: spec.resources.clone(),
                        })
                }
                Action::ActorFailed(actor_id, error) => {
                    self.gcs.do_send(ActorFailed { actor_id, error })
                }
                Action::ActorLost(actor_id, error) => {
                    self.gcs.do_send(ActorLost { actor_id, error })
                }
                Action::StopActor(key, actor_id) => self.workers.stop_actor(key, actor_id),
                Action::Unblocked(task_id) => {
                    for tx in self.unblocking.remove(&task_id).unwrap_or_default() {
                        let _ = tx.send(());
                    }
                }
            }
        }
        if !more.is_empty() {
            self.act(more, ctx);
        }
        if self.core.has_placed() && !self.placed_pending {
            self.placed_pending = true;
            ctx.run_later(PLACED_DELAY, |act, _| act.flush_placed());
        }
    }

    /// Fetches a queued task's top-level ref arguments from their owners, without blocking.
    fn resolve(
        &mut self,
        spec: Arc<crate::protocol::task::TaskSpec>,
        deps: Vec<(usize, crate::protocol::refs::RawRef)>,
        ctx: &mut Context<Self>,
    ) {
        crate::events::waiting_for_args(spec.task_id, spec.attempt, self.node_id());
        let nargs = spec.args.len();
        let n = deps.len();
        let (tx, rx) = flume::unbounded();
        // Values above the limit are left for the executing worker to fetch from their owners,
        // so they cross the network once.
        read::ask_owners(&self.net, deps, RAYLET_INLINE_MAX, None, tx);
        let me = ctx.address();
        self.net.runtime().spawn(async move {
            let mut resolved: Vec<Option<Stored>> = vec![None; nargs];
            let mut kept = Vec::new();
            for _ in 0..n {
                match rx.recv_async().await {
                    Ok((slot, (v, copy))) => {
                        if let Some(c) = copy {
                            kept.push((c.node, c.size));
                        }
                        resolved[slot as usize] = v;
                    }
                    Err(_) => break,
                }
            }
            me.do_send(Resolved(Ready {
                spec,
                resolved,
                kept,
            }));
        });
    }

    /// Tells owners elsewhere where their tasks are queued.
    fn flush_placed(&mut self) {
        self.placed_pending = false;
        for ((owner, node), returns) in self.core.take_placed() {
            self.net
                .target::<svc::Owner>(owner)
                .do_send(TasksPlaced { node, returns });
        }
    }

    fn node_id(&self) -> NodeId {
        self.core.node_id()
    }

    fn heartbeat(&mut self) {
        self.core.tick(Instant::now());
        self.gcs.do_send(Heartbeat {
            node_id: self.node_id(),
            available: self.core.available().clone(),
            total: self.core.total().clone(),
            backlog: self.core.backlog(),
        });
    }
}

impl Actor for Raylet {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        supervise::component("raylet");
        let msg = RegisterNode {
            node_id: self.node_id(),
            address: self.net.addr(),
            total: self.core.total().clone(),
        };
        let node = self.node_id();
        let registered = self.gcs.send(msg);
        ctx.spawn(
            async move {
                if let Err(e) = registered.await.and_then(|r| r) {
                    tracing::error!(node = %node, error = %e, "node registration failed");
                }
            }
            .into_actor(self),
        );
        ctx.run_interval(self.heartbeat, |act, _| act.heartbeat());
    }
}

impl Handler<SubmitTask> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: SubmitTask, ctx: &mut Context<Self>) {
        let _h = supervise::message_span!("raylet", SubmitTask, node = %self.node_id(), task = %msg.spec.task_id, attempt = msg.spec.attempt, job = %msg.spec.job_id);
        let random = (msg.spec.task_id.0 >> 16) as u64;
        let actions = self.core.submit(msg.spec, msg.hops, random);
        self.act(actions, ctx);
    }
}

impl Handler<TakeBack> for Raylet {
    type Result = bool;
    fn handle(&mut self, msg: TakeBack, _: &mut Context<Self>) -> bool {
        let _h = supervise::message_span!("raylet", TakeBack, node = %self.node_id(), task = %msg.task_id);
        self.core.take_back(msg.task_id)
    }
}

impl Handler<Resolved> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: Resolved, ctx: &mut Context<Self>) {
        let _h = supervise::message_span!("raylet", Resolved, node = %self.node_id(), task = %msg.0.spec.task_id, job = %msg.0.spec.job_id);
        let actions = self.core.resolved(msg.0);
        self.act(actions, ctx);
    }
}

impl Handler<TaskDone> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: TaskDone, ctx: &mut Context<Self>) {
        let _h = supervise::message_span!("raylet", TaskDone, node = %self.node_id(), task = %msg.task_id);
        let actions = self.core.task_done(msg.task_id);
        self.act(actions, ctx);
    }
}

impl Handler<TaskBlocked> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: TaskBlocked, ctx: &mut Context<Self>) {
        let _h = supervise::message_span!("raylet", TaskBlocked, node = %self.node_id(), task = %msg.task_id);
        let actions = self.core.blocked(msg.task_id);
        self.act(actions, ctx);
    }
}

impl Handler<TaskUnblocked> for Raylet {
    type Result = ResponseFuture<Result<(), Error>>;
    fn handle(&mut self, msg: TaskUnblocked, ctx: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("raylet", TaskUnblocked, node = %self.node_id(), task = %msg.task_id);
        let (tx, rx) = flume::bounded(1);
        self.unblocking.entry(msg.task_id).or_default().push(tx);
        let actions = self.core.unblocked(msg.task_id);
        self.act(actions, ctx);
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
        let _h = supervise::message_span!("raylet", ActorReady, node = %self.node_id(), actor = %msg.actor_id);
        let actions = self.core.actor_ready(msg.actor_id, msg.ok);
        self.act(actions, ctx);
    }
}

impl Handler<KillHostedActor> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: KillHostedActor, ctx: &mut Context<Self>) {
        let _h = supervise::message_span!("raylet", KillHostedActor, node = %self.node_id(), actor = %msg.actor_id);
        let actions = self.core.kill_hosted(msg.actor_id, Instant::now());
        self.act(actions, ctx);
    }
}

impl Handler<GetResources> for Raylet {
    type Result = ResourceSnapshot;
    fn handle(&mut self, _: GetResources, _: &mut Context<Self>) -> ResourceSnapshot {
        let _h = supervise::message_span!("raylet", GetResources, node = %self.node_id());
        self.core.snapshot()
    }
}

impl Handler<GetWorkers> for Raylet {
    type Result = MessageResult<GetWorkers>;
    fn handle(&mut self, _: GetWorkers, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("raylet", GetWorkers, node = %self.node_id());
        MessageResult(self.workers.summaries())
    }
}

impl Handler<ReadLog> for Raylet {
    type Result = ResponseFuture<Result<LogRead, Error>>;
    fn handle(&mut self, msg: ReadLog, _: &mut Context<Self>) -> Self::Result {
        let _h =
            supervise::message_span!("raylet", ReadLog, node = %self.node_id(), log = ?msg.name);
        let dir = self.log_dir.clone();
        let node = self.node_id();
        // File reads (bounded: a listing, or at most the last MiB of one log) off the raylet.
        Box::pin(async move {
            let dir = dir.ok_or_else(|| {
                Error::invalid(format!(
                    "node {node} keeps no logs (a node in a program's own process prints to it)"
                ))
            })?;
            let read = tokio::task::spawn_blocking(move || -> Result<LogRead, Error> {
                let Some(name) = msg.name else {
                    return Ok(LogRead {
                        files: logs::list_logs(&dir),
                        ..LogRead::default()
                    });
                };
                let path = logs::log_path(&dir, &name).ok_or_else(|| {
                    Error::invalid(format!(
                        "node {node} has no log named {name:?}: `lumen logs --node {node}` \
                         lists them"
                    ))
                })?;
                let unreadable = |e: std::io::Error| {
                    Error::invalid(format!(
                        "cannot read {name} on node {node}: {}",
                        crate::error::describe_io(&e)
                    ))
                };
                Ok(match msg.from {
                    Some(from) => {
                        let added = logs::read_from(&path, from).map_err(unreadable)?;
                        LogRead {
                            files: Vec::new(),
                            text: Some(added.text),
                            end: Some(added.end),
                            restarted: added.restarted,
                        }
                    }
                    None => {
                        let (text, end) =
                            logs::tail_and_end(&path, msg.lines as usize).map_err(unreadable)?;
                        LogRead {
                            files: Vec::new(),
                            text: Some(text),
                            end: Some(end),
                            restarted: false,
                        }
                    }
                })
            });
            read.await
                .map_err(|e| Error::invalid(format!("reading a log failed: {e}")))?
        })
    }
}

impl Handler<ClusterView> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: ClusterView, ctx: &mut Context<Self>) {
        let _h = supervise::message_span!("raylet", ClusterView, node = %self.node_id());
        let actions = self.core.view(msg.nodes);
        self.act(actions, ctx);
    }
}

impl Handler<RegisterWorker> for Raylet {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: RegisterWorker, _: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("raylet", RegisterWorker, node = %self.node_id(), job = %msg.job_id, pid = msg.pid);
        self.workers
            .registered((msg.job_id, msg.env), msg.address, msg.pid);
        Ok(())
    }
}

impl Handler<WorkerEvent> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: WorkerEvent, ctx: &mut Context<Self>) {
        let _h = supervise::message_span!("raylet", WorkerEvent, node = %self.node_id());
        let actions = match msg {
            WorkerEvent::StartFailed(f) => {
                tracing::error!(job = %f.key.0, env = ?f.key.1, error = %f.error,
                    "cannot start a worker process");
                let queued = self.workers.failed(f.key);
                let reason = format!("its worker process could not start: {}", f.error);
                let specs = queued.into_iter().map(|l| l.spec).collect();
                self.core.worker_start_failed(specs, &reason)
            }
            WorkerEvent::Exited(e) => {
                if !self.workers.exited(e.key, e.pid) {
                    return;
                }
                tracing::warn!(job = %e.key.0, env = ?e.key.1, pid = e.pid, status = %e.status,
                    "worker process exited");
                let reason = format!("its worker process (pid {}) exited: {}", e.pid, e.status);
                self.core.worker_exited(e.key, &reason)
            }
        };
        self.act(actions, ctx);
    }
}

impl Handler<JobEnded> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: JobEnded, _: &mut Context<Self>) {
        let _h =
            supervise::message_span!("raylet", JobEnded, node = %self.node_id(), job = %msg.job_id);
        // Detached actors of the job may still submit work of it: keep that.
        if !msg.detached_alive {
            let dropped = self.core.job_ended(msg.job_id, Instant::now());
            if dropped > 0 {
                tracing::info!(job = %msg.job_id, dropped, "dropped the queued work of an ended job");
            }
        }
        self.workers.driver_gone(msg.job_id);
        if !self.core.keeps_detached(msg.job_id) {
            self.workers.kill(msg.job_id);
        }
    }
}

impl Handler<NodeDown> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: NodeDown, _: &mut Context<Self>) {
        let _h =
            supervise::message_span!("raylet", NodeDown, node = %self.node_id(), down = %msg.node);
        // Workers here own tasks too: pass it on.
        self.workers.broadcast(&NodeDied {
            node: msg.node,
            reason: msg.reason,
        });
    }
}

impl Handler<PeerLost> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: PeerLost, ctx: &mut Context<Self>) {
        let _h =
            supervise::message_span!("raylet", PeerLost, node = %self.node_id(), peer = %msg.addr);
        // A worker whose connection closed is as good as dead: a process this node started is
        // killed (its exit is then reported), any other is gone now.
        if let Some((key, started_here)) = self.workers.lost(msg.addr) {
            if !started_here {
                let reason = format!("the connection to its worker at {} was lost", msg.addr);
                let actions = self.core.worker_exited(key, &reason);
                self.act(actions, ctx);
            }
        }
    }
}

impl Handler<PrepareBundles> for Raylet {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: PrepareBundles, ctx: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("raylet", PrepareBundles, node = %self.node_id(), group = %msg.group);
        self.core.prepare_bundles(msg.group, &msg.bundles)?;
        if msg.commit {
            let actions = self.core.commit_group(msg.group);
            self.act(actions, ctx);
        }
        Ok(())
    }
}

impl Handler<CommitBundles> for Raylet {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: CommitBundles, ctx: &mut Context<Self>) -> Self::Result {
        let _h = supervise::message_span!("raylet", CommitBundles, node = %self.node_id(), group = %msg.group);
        let actions = self.core.commit_group(msg.group);
        self.act(actions, ctx);
        Ok(())
    }
}

impl Handler<CancelBundles> for Raylet {
    type Result = ();
    fn handle(&mut self, msg: CancelBundles, ctx: &mut Context<Self>) {
        let _h = supervise::message_span!("raylet", CancelBundles, node = %self.node_id(), group = %msg.group);
        let actions = self.core.cancel_bundles(msg.group, msg.indices.as_deref());
        self.act(actions, ctx);
    }
}
