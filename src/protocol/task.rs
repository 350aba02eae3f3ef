//! The task specification: everything needed to run one task, retry it, or re-execute it to
//! recreate a lost object (its lineage).
//!
//! A spec is built by the submitter, kept by the owner of its return object, and travels to the
//! raylet and executor. Arguments are either inline encoded values or refs to objects; refs at
//! the top level are resolved before the task runs, refs nested inside a value are passed as
//! refs.

use crate::ids::{ActorId, JobId, ObjectId, TaskId};
use crate::placement::SchedulingStrategy;
use crate::protocol::refs::{OwnerAddress, RawRef};
use crate::resources::ResourceSet;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;

/// One argument of a task or actor call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum TaskArg {
    /// An encoded value.
    Value(Bytes),
    /// A ref whose value is passed (resolved before the task runs).
    Ref(RawRef),
}

/// Which registered function a task runs: a stable id and the path for messages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct FunctionRef {
    pub(crate) id: u64,
    pub(crate) path: Cow<'static, str>,
}

/// What creating an actor needs beyond an ordinary task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ActorCreation {
    pub(crate) actor_id: ActorId,
    /// Resources held while the actor lives (empty unless given explicitly).
    pub(crate) lifetime_resources: ResourceSet,
    pub(crate) max_restarts: i32,
    pub(crate) max_task_retries: i32,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) name: Option<String>,
    pub(crate) namespace: String,
    pub(crate) detached: bool,
}

/// The kind of task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum TaskKind {
    /// A remote function; async ones run on the node's event loop.
    Normal { is_async: bool },
    /// The constructor of an actor.
    ActorCreation(Box<ActorCreation>),
}

/// A task, as submitted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TaskSpec {
    pub(crate) task_id: TaskId,
    pub(crate) job_id: JobId,
    pub(crate) parent: Option<TaskId>,
    pub(crate) function: FunctionRef,
    pub(crate) args: Vec<TaskArg>,
    pub(crate) return_id: ObjectId,
    /// Resources needed to place (and, for tasks, to run) it.
    pub(crate) resources: ResourceSet,
    pub(crate) strategy: SchedulingStrategy,
    /// Retries on failure: -1 means forever.
    pub(crate) max_retries: i32,
    /// Whether application errors (Err, panic) are retried too, not only system failures.
    pub(crate) retry_exceptions: bool,
    pub(crate) attempt: u32,
    pub(crate) owner: OwnerAddress,
    pub(crate) kind: TaskKind,
    /// Objects this task's arguments mention (top level and nested), pinned until it finishes.
    pub(crate) pinned: Vec<ObjectId>,
    /// The bundles of the placement group it captures its children into, when it does and its
    /// submitter knew them: the process that runs it checks those children against them.
    pub(crate) group_bundles: Option<Arc<[ResourceSet]>>,
}

impl TaskSpec {
    /// Whether this is a plain task (not an actor creation).
    pub(crate) fn is_normal(&self) -> bool {
        matches!(self.kind, TaskKind::Normal { .. })
    }

    /// The top-level ref arguments, with their owners.
    pub(crate) fn dependency_refs(&self) -> Vec<(usize, RawRef)> {
        self.args
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                TaskArg::Ref(r) => Some((i, r.clone())),
                TaskArg::Value(_) => None,
            })
            .collect()
    }

    /// Whether the worker slot this task runs in is leased to its owner once it finishes: a
    /// plain sync task under the default strategy whose arguments are all values, so that the
    /// owner can push its next task of the same kind to that slot with nothing left to resolve
    /// or place (Ray's owners likewise lease workers per scheduling class). Async tasks are not:
    /// they keep their CPU while they await, so a slot reused for them could hold it from the
    /// tasks they await.
    pub(crate) fn leasable(&self) -> bool {
        matches!(self.kind, TaskKind::Normal { is_async: false })
            && matches!(self.strategy, crate::placement::SchedulingStrategy::Default)
            && self.args.iter().all(|a| matches!(a, TaskArg::Value(_)))
    }

    /// Whether another attempt is allowed after `attempt` failed.
    pub(crate) fn may_retry(&self) -> bool {
        self.max_retries < 0 || (self.attempt as i64) < self.max_retries as i64
    }
}

#[cfg(test)]
impl TaskSpec {
    /// A plain sync task needing `resources`, of a fixed job, owned by the process at `owner`:
    /// what unit tests of placement and leasing submit.
    pub(crate) fn for_test(
        resources: crate::resources::ResourceSet,
        strategy: crate::placement::SchedulingStrategy,
        owner: std::net::SocketAddr,
    ) -> TaskSpec {
        use crate::ids::{JobId, NodeId, WorkerId};
        let task_id = TaskId::fresh();
        TaskSpec {
            task_id,
            job_id: JobId(1 << 16),
            parent: None,
            function: FunctionRef {
                id: 1,
                path: Cow::Borrowed("t::f"),
            },
            args: Vec::new(),
            return_id: ObjectId::for_return(task_id, 0),
            resources,
            strategy,
            max_retries: 0,
            retry_exceptions: false,
            attempt: 0,
            owner: OwnerAddress {
                worker: WorkerId(1 << 16),
                node: NodeId(1 << 16),
                addr: owner,
            },
            kind: TaskKind::Normal { is_async: false },
            pinned: Vec::new(),
            group_bundles: None,
        }
    }
}
