//! Messages to a raylet: tasks to queue, what the node's workers report, the GCS's view of the
//! cluster, and the placement-group reservation.

use crate::error::Error;
use crate::ids::{ActorId, JobId, NodeId, PlacementGroupId, TaskId, WorkerId};
use crate::protocol::svc;
use crate::protocol::task::TaskSpec;
use crate::resources::ResourceSet;
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// Queue a task (or actor creation) on this node; `hops` counts forwards so far (an actor
/// creation placed by the GCS arrives with 1).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct SubmitTask {
    pub(crate) spec: Arc<TaskSpec>,
    pub(crate) hops: u8,
}

/// A task finished; its resources are free again.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct TaskDone {
    pub(crate) task_id: TaskId,
}

/// A running task blocked in `get`: lend its CPU to other tasks.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct TaskBlocked {
    pub(crate) task_id: TaskId,
}

/// The blocked task's objects arrived: answered when it has its CPU back.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct TaskUnblocked {
    pub(crate) task_id: TaskId,
}

/// An actor's constructor finished (`ok`) or failed.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct ActorReady {
    pub(crate) actor_id: ActorId,
    pub(crate) ok: bool,
}

/// Stop an actor hosted on this node (or about to be) and free its resources.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct KillHostedActor {
    pub(crate) actor_id: ActorId,
}

/// The node's available resources and what waits.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "ResourceSnapshot")]
pub(crate) struct GetResources;

/// What [`GetResources`] answers.
#[derive(Debug, Clone, MessageResponse, Serialize, Deserialize)]
pub(crate) struct ResourceSnapshot {
    pub(crate) available: ResourceSet,
    /// Queued requests that do not fit now: each resource shape with how many wait for it.
    pub(crate) demands: Vec<(ResourceSet, usize)>,
    /// Tasks waiting for their arguments.
    pub(crate) waiting_for_args: usize,
}

/// The job workers of the node: one per job whose work ran here.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Vec<WorkerSummary>")]
pub(crate) struct GetWorkers;

/// A job's worker on a node, as [`GetWorkers`] answers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerSummary {
    pub(crate) job_id: JobId,
    /// Where the worker listens, once it registered.
    pub(crate) address: Option<SocketAddr>,
    /// Its process, when this node started it.
    pub(crate) pid: Option<u32>,
    /// Whether it registered (else it is starting).
    pub(crate) alive: bool,
}

/// One node in the GCS's resource view.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ViewEntry {
    pub(crate) node_id: NodeId,
    pub(crate) address: SocketAddr,
    pub(crate) alive: bool,
    pub(crate) total: ResourceSet,
    pub(crate) available: ResourceSet,
    /// What waits there for resources, as it last reported.
    pub(crate) backlog: ResourceSet,
}

/// The GCS's view of every node, broadcast to each raylet.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct ClusterView {
    pub(crate) nodes: Vec<ViewEntry>,
}

/// A job's worker on this node is up, in the process at `address`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct RegisterWorker {
    pub(crate) job_id: JobId,
    pub(crate) worker_id: WorkerId,
    pub(crate) address: SocketAddr,
    pub(crate) pid: u32,
    /// The key of the environment it was started for beyond its job's
    /// ([`TaskEnv`](crate::protocol::task::TaskEnv)), if any.
    pub(crate) env: Option<u64>,
}

/// A job's driver is gone: stop its worker process here, and drop its queued work unless
/// detached actors of the job live on (they may still submit work of the job).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct JobEnded {
    pub(crate) job_id: JobId,
    /// Detached actors of the job live on somewhere in the cluster.
    pub(crate) detached_alive: bool,
}

/// A node died: the raylet passes it on to the workers here (they own tasks too).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct NodeDown {
    pub(crate) node: NodeId,
    pub(crate) reason: String,
}

/// Phase one of a placement-group reservation: set these bundles' resources aside (all or
/// none); with `commit`, phase two too.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct PrepareBundles {
    pub(crate) group: PlacementGroupId,
    pub(crate) bundles: Vec<(u32, ResourceSet)>,
    /// Commit at once: this node is the only one in the round, so preparing it is the whole
    /// reservation (one round trip instead of two).
    #[serde(default)]
    pub(crate) commit: bool,
}

/// Phase two: the prepared bundles of `group` become the group's resources.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct CommitBundles {
    pub(crate) group: PlacementGroupId,
}

/// Returns bundles of `group` (`indices`: those; `None`: all, and what uses the group here is
/// stopped), prepared or committed.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct CancelBundles {
    pub(crate) group: PlacementGroupId,
    pub(crate) indices: Option<Vec<u32>>,
}

/// The owner of a task queued here takes it back, to run it in a slot of its own that just
/// freed: answered with whether it was still queued (then this node will not run it).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "bool")]
pub(crate) struct TakeBack {
    pub(crate) task_id: TaskId,
}

/// One log file of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogFile {
    /// Its name in the log folder (`worker-<pid>.out`, `node-<pid>.<date>.log`, ...).
    pub(crate) name: String,
    /// Its size.
    pub(crate) bytes: u64,
    /// When it last changed, in milliseconds since the Unix epoch.
    pub(crate) modified_ms: u64,
}

/// Reads the node's log folder: lists it (`name` none), or the last `lines` lines of log `name`,
/// or (with `from`) what log `name` holds from that byte on (following it by polling).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<LogRead, Error>")]
pub(crate) struct ReadLog {
    pub(crate) name: Option<String>,
    pub(crate) lines: u32,
    /// Read from this byte on (at most 1 MiB) instead of the last lines; a log now shorter is
    /// read from its start ([`LogRead::restarted`]).
    #[serde(default)]
    pub(crate) from: Option<u64>,
}

/// What [`ReadLog`] answers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct LogRead {
    /// The folder's logs, when listed.
    pub(crate) files: Vec<LogFile>,
    /// The last lines of the log asked for (or what it holds from `from` on).
    pub(crate) text: Option<String>,
    /// The position in the log the text ends at: where to read from next (none from a node
    /// that predates following).
    #[serde(default)]
    pub(crate) end: Option<u64>,
    /// The log was shorter than `from` (truncated, or replaced): the text is from its start.
    #[serde(default)]
    pub(crate) restarted: bool,
}

super::wire!(TAGS, svc::Raylet:
    SubmitTask = 30,
    TaskDone = 31,
    TaskBlocked = 32,
    TaskUnblocked = 33,
    ActorReady = 34,
    KillHostedActor = 35,
    GetResources = 36,
    ClusterView = 37,
    RegisterWorker = 38,
    JobEnded = 39,
    NodeDown = 40,
    PrepareBundles = 41,
    CommitBundles = 42,
    CancelBundles = 43,
    TakeBack = 44,
    GetWorkers = 45,
    ReadLog = 46,
);
