//! Running admitted tasks: sync ones on a worker thread (see [`thread`](crate::worker::thread)),
//! async ones on the event loop; each outcome goes to the task's owner, and the slot it ran in
//! either goes back to the raylet or stays leased to the owner ([`LeaseTable`]).

use crate::context::ExecContext;
use crate::ids::{IdDashMap, NodeId, TaskId};
use crate::invoke;
use crate::protocol::owner::{LeaseGrant, TaskStarted};
use crate::protocol::raylet::TaskDone;
use crate::protocol::svc;
use crate::protocol::task::TaskSpec;
use crate::protocol::worker::Launch;
use crate::registry::Outcome;
use crate::resources::Grant;
use crate::transport::net::{Net, Target};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

/// A slot of this worker leased to an owner: the thread it is (`W`), the owner's process, and
/// the tasks the owner pushed behind the running one. (Only sync tasks are leasable: async ones
/// keep their CPU while they await.)
pub(crate) struct LeasedSlot<W> {
    pub(crate) worker: W,
    pub(crate) owner: SocketAddr,
    pub(crate) queue: Arc<Mutex<SlotQueue>>,
}

/// The tasks waiting in a leased thread's slot.
#[derive(Default)]
pub(crate) struct SlotQueue {
    pub(crate) tasks: VecDeque<Launch>,
    /// A pushed task runs (or is on its way to the thread): the next ones wait here.
    pub(crate) busy: bool,
    /// The running task blocked and lent its CPU: tasks pushed now go back to the owner.
    pub(crate) blocked: bool,
}

/// The slots of this worker leased to owners, by lease.
pub(crate) type LeaseTable<W> = Arc<IdDashMap<TaskId, LeasedSlot<W>>>;

/// The lease a finished task's slot is now: the one it ran under, or, for a leasable task the
/// raylet launched, a new one named after it, recorded in `leases` before its owner can hear of
/// it. `None`: the slot goes back to the raylet.
pub(crate) fn lease_slot<W>(
    net: &Net,
    leases: &LeaseTable<W>,
    spec: &TaskSpec,
    under: Option<TaskId>,
    grant: &Grant,
    node: NodeId,
    worker: impl FnOnce() -> W,
) -> Option<LeaseGrant> {
    let (id, attempt) = match under {
        Some(lease) => (lease, 0),
        None if spec.leasable() => {
            leases.insert(
                spec.task_id,
                LeasedSlot {
                    worker: worker(),
                    owner: spec.owner.addr,
                    queue: Arc::default(),
                },
            );
            (spec.task_id, spec.attempt)
        }
        None => return None,
    };
    Some(LeaseGrant {
        id,
        attempt,
        worker: net.addr(),
        node,
        grant: grant.clone(),
    })
}

/// Tells the owner of a leasable task the raylet launched that it started: its request for a
/// slot is granted.
pub(crate) fn started(net: &Net, spec: &TaskSpec, under: Option<TaskId>) {
    if under.is_none() && spec.leasable() {
        net.tell(
            spec.owner.addr,
            TaskStarted {
                task_id: spec.task_id,
            },
        );
    }
}

/// Sends a finished task's outcome to its owner, with the lease its slot is now.
pub(crate) fn finish(net: &Arc<Net>, spec: &TaskSpec, outcome: Outcome, lease: Option<LeaseGrant>) {
    invoke::send_result(
        net,
        spec.owner.addr,
        spec.task_id,
        spec.return_id,
        None,
        outcome,
        lease,
    );
}

/// Where an async task runs and whom it tells.
pub(crate) struct AsyncSite<W> {
    pub(crate) executor: tokio::runtime::Handle,
    pub(crate) net: Arc<Net>,
    pub(crate) raylet: Target<svc::Raylet>,
    pub(crate) node: NodeId,
    pub(crate) leases: LeaseTable<W>,
}

impl<W> Clone for AsyncSite<W> {
    fn clone(&self) -> Self {
        AsyncSite {
            executor: self.executor.clone(),
            net: self.net.clone(),
            raylet: self.raylet.clone(),
            node: self.node,
            leases: self.leases.clone(),
        }
    }
}

/// Runs an async task on the event loop; when it is done, its resources go back to the raylet.
pub(crate) fn spawn_async<W>(site: &AsyncSite<W>, launch: Launch) {
    let Launch {
        spec,
        resolved,
        grant,
        ..
    } = launch;
    let ctx = ExecContext {
        task_id: Some(spec.task_id),
        actor_id: None,
        gpu_ids: grant.gpu_ids(),
        lends_cpu: false,
        holder: None,
        in_async: true,
        captured: crate::context::captured_by(&spec),
    };
    let (net, raylet, node) = (site.net.clone(), site.raylet.clone(), site.node);
    site.executor.spawn(async move {
        let outcome = invoke::run_async(spec.clone(), resolved, node, ctx).await;
        finish(&net, &spec, outcome, None);
        raylet.do_send(TaskDone {
            task_id: spec.task_id,
        });
    });
}
