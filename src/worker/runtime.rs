//! The core worker of this process: what every API call needs (the job, the node, the process's
//! switchboard, the GCS and raylet it talks to, its reference table, the actors it calls, the
//! tasks it owns in flight), published in a global so that `ObjectRef`s, handles and executors
//! reach it without threading it through user code.
//!
//! It is the same in every mode: an embedded runtime's GCS and raylet are in this process, a
//! driver's and a worker process's are elsewhere; the [`Runtime`] does not know which.

use crate::actors::client::ActorClients;
use crate::error::{Error, Result};
use crate::ids::{IdDashMap, JobId, NodeId, ObjectId, WorkerId};
use crate::objects::ownership::{self, RefTable};
use crate::protocol::events::TaskType;
use crate::protocol::owner::Infeasible;
use crate::protocol::raylet::{SubmitTask, TakeBack};
use crate::protocol::refs::OwnerAddress;
use crate::protocol::svc;
use crate::protocol::task::{TaskEnv, TaskSpec};
use crate::protocol::worker::{PushTask, ReturnLease};
use crate::resources::ResourceSet;
use crate::transport::net::{Net, Target, Wire};
use crate::worker::leases::{Leases, Step, LINGER};
use crate::worker::placement::CreatedGroups;
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static CURRENT: ArcSwapOption<Runtime> = ArcSwapOption::const_empty();

/// The environment a worker process was started with beyond its job's, if any.
static PROCESS_ENV: std::sync::OnceLock<Arc<TaskEnv>> = std::sync::OnceLock::new();

/// This process runs the tasks of `env` (a worker process started for it): the tasks it submits
/// inherit it, as Ray's children inherit their parent's runtime environment.
pub(crate) fn set_process_env(env: TaskEnv) {
    let _ = PROCESS_ENV.set(Arc::new(env));
}

/// The environment this process runs tasks of beyond its job's, if any.
#[inline]
pub(crate) fn process_env() -> Option<&'static Arc<TaskEnv>> {
    PROCESS_ENV.get()
}

/// Runs `f` on the current runtime, if there is one.
#[inline]
pub(crate) fn with_current<R>(f: impl FnOnce(&Arc<Runtime>) -> R) -> Option<R> {
    let guard = CURRENT.load();
    guard.as_ref().map(f)
}

/// The current runtime, or `Error::NotInitialized`.
pub(crate) fn current() -> Result<Arc<Runtime>> {
    CURRENT.load_full().ok_or(Error::NotInitialized)
}

/// Whether `lumen::init()` has run (and `shutdown()` has not).
pub(crate) fn is_initialized() -> bool {
    CURRENT.load().is_some()
}

/// What stops the parts a runtime was assembled from (threads, event loops, nodes).
pub(crate) type Teardown = Box<dyn FnOnce() + Send>;

/// What a runtime is made of.
pub(crate) struct Core {
    pub(crate) job_id: JobId,
    pub(crate) node_id: NodeId,
    pub(crate) worker_id: WorkerId,
    pub(crate) namespace: String,
    pub(crate) net: Arc<Net>,
    pub(crate) gcs: SocketAddr,
    pub(crate) raylet: SocketAddr,
    pub(crate) refs: Arc<RefTable>,
    pub(crate) executor: tokio::runtime::Handle,
}

/// The runtime of this process.
pub(crate) struct Runtime {
    pub(crate) job_id: JobId,
    pub(crate) node_id: NodeId,
    pub(crate) worker_id: WorkerId,
    pub(crate) namespace: String,
    pub(crate) net: Arc<Net>,
    pub(crate) gcs: Target<svc::Gcs>,
    pub(crate) raylet: Target<svc::Raylet>,
    pub(crate) refs: Arc<RefTable>,
    pub(crate) actors: Arc<ActorClients>,
    /// The placement groups this process created, as the GCS last reported them.
    pub(crate) groups: CreatedGroups,
    /// Tasks this process owns and submitted, by return object: the owner keeps each spec
    /// until its result arrives (to retry it, or to unpin its arguments), with the node that
    /// queued it once a raylet reports it, or the node of the leased slot it was pushed to (to
    /// retry it if that node dies).
    pub(crate) inflight: IdDashMap<ObjectId, (Arc<TaskSpec>, Option<NodeId>)>,
    /// The worker slots this process leases and the leasable tasks waiting for one.
    pub(crate) leases: Mutex<Leases>,
    /// A look for slots free too long is scheduled.
    sweeping: AtomicBool,
    /// Nodes this process heard died, with why (a placement report may come after the notice).
    pub(crate) dead_nodes: Mutex<HashMap<NodeId, String>>,
    /// The resource shapes this process warned that no node fits (once each, as Ray does).
    infeasible_warned: Mutex<HashSet<ResourceSet>>,
    /// The event loop of async tasks and async actors.
    pub(crate) executor: tokio::runtime::Handle,
    /// What stops what the runtime runs on, in order.
    teardown: Mutex<Vec<Teardown>>,
}

impl Runtime {
    /// A runtime made of `core`.
    pub(crate) fn new(core: Core) -> Arc<Runtime> {
        let gcs = core.net.target(core.gcs);
        let actors = ActorClients::new(core.net.clone(), gcs.clone(), core.refs.clone());
        Arc::new(Runtime {
            job_id: core.job_id,
            node_id: core.node_id,
            worker_id: core.worker_id,
            namespace: core.namespace,
            raylet: core.net.target(core.raylet),
            gcs,
            net: core.net,
            refs: core.refs,
            actors,
            groups: CreatedGroups::default(),
            inflight: IdDashMap::default(),
            leases: Mutex::new(Leases::default()),
            sweeping: AtomicBool::new(false),
            dead_nodes: Mutex::new(HashMap::new()),
            infeasible_warned: Mutex::new(HashSet::new()),
            executor: core.executor,
            teardown: Mutex::new(Vec::new()),
        })
    }

    /// Adds what stops a part the runtime runs on (run at shutdown, in the order added).
    pub(crate) fn on_stop(&self, teardown: Teardown) {
        self.teardown.lock().push(teardown);
    }

    /// This process as the owner of the objects it creates.
    pub(crate) fn owner(&self) -> OwnerAddress {
        OwnerAddress {
            worker: self.worker_id,
            node: self.node_id,
            addr: self.net.addr(),
        }
    }

    /// Submits a task this process owns: a leasable one to a slot this process leases (or,
    /// with none free, to its raylet, whose slot then comes back leased), any other to this
    /// process's raylet, which places it.
    pub(crate) fn submit(self: &Arc<Self>, spec: Arc<TaskSpec>) {
        crate::events::submitted(
            spec.task_id,
            spec.attempt,
            spec.job_id,
            spec.function.path.clone(),
            TaskType::Normal,
            None,
            spec.parent,
        );
        if spec.leasable() {
            self.with_leases(|l, now| l.submit(spec, now));
        } else {
            self.to_raylet(spec);
        }
    }

    fn to_raylet(&self, spec: Arc<TaskSpec>) {
        // Its node is recorded when a raylet reports where it queued it.
        self.inflight.insert(spec.return_id, (spec.clone(), None));
        // As a fresh submission (no hops yet): the raylet runs the policy and spills it to
        // another node if its own is busy.
        self.raylet.do_send(SubmitTask { spec, hops: 0 });
    }

    /// Runs a decision of the lease policy and carries out its steps; looks for slots free too
    /// long later if any are free.
    pub(crate) fn with_leases(self: &Arc<Self>, f: impl FnOnce(&mut Leases, Instant) -> Vec<Step>) {
        let (steps, idle) = {
            let mut leases = self.leases.lock();
            let steps = f(&mut leases, Instant::now());
            (steps, leases.has_idle())
        };
        self.carry_out(steps);
        if idle {
            self.sweep_later();
        }
    }

    /// Carries out the lease policy's steps.
    /// A raylet found that no node fits a task or actor of this process: tells the user on
    /// stderr, once per resource shape (as Ray's driver does), since `get` would only block.
    pub(crate) fn warn_infeasible(&self, m: Infeasible) {
        if !self.infeasible_warned.lock().insert(m.resources.clone()) {
            return;
        }
        tracing::warn!(task = %m.task_id, what = %m.what, resources = ?m.resources,
            "no node fits this request");
        eprintln!(
            "lumen: warning: {} (task {}) cannot be scheduled right now: it requires {:?} and no \
             node of the cluster has that much. It waits as a demand until a node that has it \
             joins: add a node that has it, or ask for less.",
            m.what, m.task_id, m.resources
        );
    }

    pub(crate) fn carry_out(self: &Arc<Self>, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::Request(spec) => self.to_raylet(spec),
                Step::Push { lease, spec, more } => {
                    self.inflight
                        .insert(spec.return_id, (spec.clone(), Some(lease.node)));
                    self.net
                        .target::<svc::Worker>(lease.worker)
                        .do_send(PushTask {
                            lease: lease.id,
                            grant: lease.grant,
                            spec,
                            more,
                        });
                }
                Step::Return(lease) => self
                    .net
                    .target::<svc::Worker>(lease.worker)
                    .do_send(ReturnLease { lease: lease.id }),
                Step::TakeBack {
                    lease,
                    task_id,
                    attempt,
                    raylet,
                } => {
                    let reply = self
                        .net
                        .target::<svc::Raylet>(raylet)
                        .send(TakeBack { task_id });
                    let weak = Arc::downgrade(self);
                    self.executor.spawn(async move {
                        // No answer (the raylet's process is gone): the task is not ours again;
                        // it is retried or failed as that node's tasks are.
                        let got = reply.await.unwrap_or_else(|e| {
                            tracing::debug!(task = %task_id, %raylet, error = %e,
                                "could not take a queued task back");
                            false
                        });
                        if let Some(rt) = weak.upgrade() {
                            rt.with_leases(|l, now| {
                                l.taken_back(lease, task_id, attempt, got, now)
                            });
                        }
                    });
                }
            }
        }
    }

    /// Returns the slots left free for the lease policy's linger, until none is free.
    fn sweep_later(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        self.executor.spawn(async move {
            loop {
                tokio::time::sleep(LINGER).await;
                let Some(rt) = weak.upgrade() else {
                    return;
                };
                let (steps, left) = rt.leases.lock().sweep(Instant::now());
                rt.carry_out(steps);
                if left {
                    continue;
                }
                rt.sweeping.store(false, Ordering::Release);
                // A slot freed between the look and the flag found the flag still set.
                let again = rt.leases.lock().has_idle();
                if !again || rt.sweeping.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        });
    }

    /// Runs `fut` on the event loop and waits for it: how a blocking API call (from any thread
    /// that is not an event loop's) waits for something that needs the event loop.
    pub(crate) fn block_on<F>(&self, fut: F) -> Result<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = flume::bounded(1);
        self.executor.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::shutdown("waiting for a lumen component"))
    }

    /// Runs `fut` on the event loop; the returned future gives its output and can be awaited on
    /// any executor: what an async API call awaits where a blocking one calls
    /// [`block_on`](Self::block_on).
    pub(crate) fn run<F>(
        &self,
        fut: F,
    ) -> impl std::future::Future<Output = Result<F::Output>> + Send + 'static
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.executor.spawn(fut);
        async move {
            handle
                .await
                .map_err(|_| Error::shutdown("waiting for a lumen component"))
        }
    }

    /// Sends a request to a component; the returned future gives the answer and can be awaited
    /// on any executor: what an async API call awaits where a blocking one calls
    /// [`request`](Self::request).
    pub(crate) fn ask<S, M>(
        &self,
        target: &Target<S>,
        msg: M,
    ) -> impl std::future::Future<Output = Result<M::Result>> + Send + 'static
    where
        S: crate::transport::net::Service,
        M: Wire<To = S>,
    {
        let _context = self.executor.enter();
        target.send(msg)
    }

    /// Sends a request to a component and waits for its answer, on this thread (which must not
    /// be an event loop's).
    pub(crate) fn request<S, M>(&self, target: &Target<S>, msg: M) -> Result<M::Result>
    where
        S: crate::transport::net::Service,
        M: Wire<To = S>,
    {
        let _context = self.executor.enter();
        crate::spin::wait_here(target.send(msg))
    }

    /// Sends the GCS the task events this process recorded since it last did.
    pub(crate) fn report_events(&self) {
        crate::events::report(&self.gcs);
    }

    /// Stops the runtime: blocked reads end with `Error::Shutdown`, then what it runs on stops.
    fn stop(&self) {
        self.report_events();
        self.refs.drop_waiters();
        ownership::uninstall();
        let parts = std::mem::take(&mut *self.teardown.lock());
        for teardown in parts {
            teardown();
        }
    }
}

/// Publishes a runtime unless another won a race to initialize.
pub(crate) fn publish(rt: Arc<Runtime>) -> Result<()> {
    let prev = CURRENT.compare_and_swap(&None::<Arc<Runtime>>, Some(rt.clone()));
    if prev.is_some() {
        rt.stop();
        return Err(Error::AlreadyInitialized);
    }
    ownership::install(rt.refs.clone());
    Ok(())
}

/// Stops the runtime, if any.
pub(crate) fn stop() {
    if let Some(rt) = CURRENT.swap(None) {
        rt.stop();
        tracing::debug!("lumen shut down");
    }
}

/// How long a stopping process waits for its peers to hear it is leaving.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_millis(500);
