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
use crate::protocol::raylet::SubmitTask;
use crate::protocol::refs::OwnerAddress;
use crate::protocol::svc;
use crate::protocol::task::TaskSpec;
use crate::transport::net::{Net, Target, Wire};
use crate::worker::placement::CreatedGroups;
use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

static CURRENT: ArcSwapOption<Runtime> = ArcSwapOption::const_empty();

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
    /// queued it once a raylet reports it (to retry it if that node dies).
    pub(crate) inflight: IdDashMap<ObjectId, (Arc<TaskSpec>, Option<NodeId>)>,
    /// Where tasks of each kind were last queued, to send the next ones there directly.
    pub(crate) routes: Routes,
    /// Nodes this process heard died, with why (a placement report may come after the notice).
    pub(crate) dead_nodes: Mutex<HashMap<NodeId, String>>,
    /// The event loop of async tasks and async actors.
    pub(crate) executor: tokio::runtime::Handle,
    /// What stops what the runtime runs on, in order.
    teardown: Mutex<Vec<Teardown>>,
}

/// Where this owner's tasks of each kind (their resources, under the default strategy) were
/// last queued, as their raylets reported: the next ones are sent there directly, saving the
/// hop through the driver's own raylet (Ray's owners likewise reuse the lease they were granted
/// for a scheduling class). Tasks with another strategy always go through the local raylet.
#[derive(Default)]
pub(crate) struct Routes {
    by_kind: DashMap<crate::resources::ResourceSet, (NodeId, SocketAddr)>,
}

impl Routes {
    fn routable(spec: &TaskSpec) -> bool {
        spec.is_normal() && matches!(spec.strategy, crate::placement::SchedulingStrategy::Default)
    }

    /// Where to send `spec`, if a task of its kind was queued somewhere.
    pub(crate) fn route(&self, spec: &TaskSpec) -> Option<(NodeId, SocketAddr)> {
        if !Self::routable(spec) {
            return None;
        }
        self.by_kind.get(&spec.resources).map(|r| *r)
    }

    /// A task like `spec` was queued on `node`, whose raylet is at `raylet`; whether it was
    /// recorded (only tasks that may be routed are).
    pub(crate) fn learn(&self, spec: &TaskSpec, node: NodeId, raylet: SocketAddr) -> bool {
        if !Self::routable(spec) {
            return false;
        }
        match self.by_kind.get_mut(&spec.resources) {
            Some(mut r) => *r = (node, raylet),
            None => {
                self.by_kind.insert(spec.resources.clone(), (node, raylet));
            }
        }
        true
    }

    /// A node died: nothing goes to it any more.
    pub(crate) fn forget(&self, node: NodeId) {
        self.by_kind.retain(|_, (n, _)| *n != node);
    }
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
            routes: Routes::default(),
            dead_nodes: Mutex::new(HashMap::new()),
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

    /// Submits a task this process owns: straight to the node where the last task of its kind
    /// was queued (that raylet spills it to another node when it is busy), else to this
    /// process's raylet.
    pub(crate) fn submit(&self, spec: Arc<TaskSpec>) {
        let routed = self
            .routes
            .route(&spec)
            .filter(|(node, _)| !self.dead_nodes.lock().contains_key(node));
        // Recorded with its node at once when routed: if that node dies, the task is retried.
        self.inflight
            .insert(spec.return_id, (spec.clone(), routed.map(|r| r.0)));
        // As a fresh submission (no hops yet): a routed-to raylet runs the policy itself and
        // spills the task to another node if it is busy.
        let msg = SubmitTask { spec, hops: 0 };
        match routed {
            Some((_, raylet)) => self.net.target::<svc::Raylet>(raylet).do_send(msg),
            None => self.raylet.do_send(msg),
        }
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

    /// Stops the runtime: blocked reads end with `Error::Shutdown`, then what it runs on stops.
    fn stop(&self) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TaskId;
    use crate::placement::SchedulingStrategy;
    use crate::protocol::task::{FunctionRef, TaskKind};
    use crate::resources::{Amount, Resource, ResourceSet};

    fn spec(cpus: u64, strategy: SchedulingStrategy) -> TaskSpec {
        let mut resources = ResourceSet::new();
        resources.set(Resource::Cpu, Amount::units(cpus));
        let task_id = TaskId::fresh();
        TaskSpec {
            task_id,
            job_id: JobId::fresh(),
            parent: None,
            function: FunctionRef {
                id: 1,
                path: "f".into(),
            },
            args: Vec::new(),
            return_id: ObjectId::for_return(task_id, 0),
            resources,
            strategy,
            max_retries: 0,
            retry_exceptions: false,
            attempt: 0,
            owner: OwnerAddress {
                worker: WorkerId::fresh(),
                node: NodeId::fresh(),
                addr: crate::transport::net::IN_PROCESS,
            },
            kind: TaskKind::Normal { is_async: false },
            pinned: Vec::new(),
        }
    }

    #[test]
    fn routes_are_per_kind_and_forgotten_with_their_node() {
        let routes = Routes::default();
        let one = spec(1, SchedulingStrategy::Default);
        let two = spec(2, SchedulingStrategy::Default);
        assert_eq!(routes.route(&one), None);
        let (n1, n2) = (NodeId::fresh(), NodeId::fresh());
        let (a1, a2): (SocketAddr, SocketAddr) = (
            "127.0.0.1:7001".parse().unwrap(),
            "127.0.0.1:7002".parse().unwrap(),
        );
        assert!(routes.learn(&one, n1, a1));
        assert_eq!(
            routes.route(&spec(1, SchedulingStrategy::Default)),
            Some((n1, a1))
        );
        assert_eq!(routes.route(&two), None, "another kind of task");
        assert!(routes.learn(&two, n2, a2));
        assert!(routes.learn(&one, n2, a2), "the latest placement wins");
        assert_eq!(routes.route(&one), Some((n2, a2)));
        routes.forget(n2);
        assert_eq!(routes.route(&one), None);
        assert_eq!(routes.route(&two), None);
    }

    #[test]
    fn only_default_strategy_tasks_are_routed() {
        let routes = Routes::default();
        let (n, a): (NodeId, SocketAddr) = (NodeId::fresh(), "127.0.0.1:7001".parse().unwrap());
        let spread = spec(1, SchedulingStrategy::Spread);
        assert!(!routes.learn(&spread, n, a));
        assert!(routes.learn(&spec(1, SchedulingStrategy::Default), n, a));
        assert_eq!(
            routes.route(&spread),
            None,
            "spread goes through the local raylet"
        );
        let pinned = spec(
            1,
            SchedulingStrategy::NodeAffinity {
                node_id: n,
                soft: false,
            },
        );
        assert_eq!(routes.route(&pinned), None);
    }
}
