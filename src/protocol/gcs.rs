//! Messages to the GCS: membership, jobs and their executables, the actor directory, and
//! placement groups.

use crate::error::Error;
use crate::ids::{ActorId, JobId, NodeId, ObjectId, PlacementGroupId};
use crate::placement::bundles::PlacementStrategy;
use crate::placement::group::PlacementGroupState;
use crate::protocol::events::{TaskPart, TaskRecord};
use crate::protocol::svc;
use crate::protocol::task::TaskSpec;
use crate::resources::ResourceSet;
use actix::prelude::*;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// A node, as [`GetNodes`] reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct NodeEntry {
    pub(crate) node_id: NodeId,
    /// The node's process: where its raylet is reached.
    pub(crate) address: SocketAddr,
    pub(crate) alive: bool,
    pub(crate) total: ResourceSet,
}

/// A raylet joins.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct RegisterNode {
    pub(crate) node_id: NodeId,
    /// The raylet's process.
    pub(crate) address: SocketAddr,
    pub(crate) total: ResourceSet,
}

/// A raylet is alive, and this is what it has free.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct Heartbeat {
    pub(crate) node_id: NodeId,
    pub(crate) available: ResourceSet,
    /// Totals change as placement-group bundles are committed and returned.
    pub(crate) total: ResourceSet,
    /// What waits there for resources (the sum of the queued requests).
    pub(crate) backlog: ResourceSet,
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
    /// The driver's process: the job ends when it goes.
    pub(crate) driver: SocketAddr,
    /// The driver's executable, which nodes run as the job's workers (none when the driver's
    /// own process runs them).
    pub(crate) exe: Option<ExeInfo>,
    /// Whether the job's worker processes send what they print to the driver.
    pub(crate) log_to_driver: bool,
    /// The driver's process id.
    pub(crate) pid: u32,
    /// Environment variables for the job's worker processes (`Config::env`).
    pub(crate) env: Vec<(String, String)>,
    /// The driver's working directory: a worker process starts there when the path exists on
    /// its node (unless the job has a [`working_dir_package`](Self::working_dir_package)).
    pub(crate) working_dir: Option<std::path::PathBuf>,
    /// The hash of the job's working-directory package (`Config::working_dir`), uploaded with
    /// [`PutBinary`]: every node unpacks it and starts the job's worker processes there.
    #[serde(default)]
    pub(crate) working_dir_package: Option<String>,
}

/// A job, as [`GetJob`] reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct JobInfo {
    pub(crate) namespace: String,
    pub(crate) exe: Option<ExeInfo>,
    /// The driver's process.
    pub(crate) driver: SocketAddr,
    /// Whether the job's worker processes send what they print to the driver.
    pub(crate) log_to_driver: bool,
    /// Environment variables for its worker processes.
    pub(crate) env: Vec<(String, String)>,
    /// Where its worker processes start, when the path exists on their node.
    pub(crate) working_dir: Option<std::path::PathBuf>,
    /// Its working-directory package, by hash: its worker processes start in it, unpacked.
    #[serde(default)]
    pub(crate) working_dir_package: Option<String>,
}

/// Looks up a job (a raylet about to start the job's worker process).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<JobInfo, Error>")]
pub(crate) struct GetJob {
    pub(crate) job_id: JobId,
}

/// A driver uploads its executable or its working-directory package (content-addressed).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct PutBinary {
    pub(crate) hash: String,
    pub(crate) data: Bytes,
}

/// Whether the GCS holds the content with this hash (a driver asks before uploading its
/// working-directory package).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<bool, Error>")]
pub(crate) struct HasBinary {
    pub(crate) hash: String,
}

/// A node downloads a job's executable (or its working-directory package).
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

/// Outcome of registering an actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Registered {
    /// A new actor: its creation is scheduled.
    New,
    /// `get_if_exists` found a live actor of that name.
    Existing { actor_id: ActorId, class: String },
}

/// Registers an actor (claiming its name) and schedules its creation.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<Registered, Error>")]
pub(crate) struct CreateActor {
    pub(crate) spec: Arc<TaskSpec>,
    pub(crate) get_if_exists: bool,
}

/// The actor's constructor succeeded in the worker whose process is `host`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct ActorStarted {
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

/// A change in an actor's state, as told to a watcher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum ActorUpdate<A> {
    /// The actor is up at `addr`; `incarnation` counts (re)starts from 0.
    Alive { addr: A, incarnation: u32 },
    /// The actor is dead and will not come back.
    Dead(Error),
}

/// Answered when the actor is alive (with an incarnation newer than `after`) or dead; the
/// `subscriber`'s process is told at once if it dies or restarts later.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<ActorUpdate<SocketAddr>, Error>")]
pub(crate) struct WatchActor {
    pub(crate) actor_id: ActorId,
    pub(crate) after: Option<u32>,
    pub(crate) subscriber: SocketAddr,
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

/// A row of `list actors`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ActorSummary {
    pub(crate) actor_id: ActorId,
    pub(crate) class: String,
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) state: String,
    pub(crate) node: Option<NodeId>,
}

/// Lists actors.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Vec<ActorSummary>")]
pub(crate) struct ListActors;

/// A job as the GCS lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct JobSummary {
    pub(crate) job_id: JobId,
    pub(crate) namespace: String,
    /// The driver's process: where it listens, and its id.
    pub(crate) driver: SocketAddr,
    pub(crate) driver_pid: u32,
    /// The name of the driver's executable (none for a driver that is its own node's worker).
    pub(crate) entrypoint: Option<String>,
    /// When it registered, in milliseconds since the Unix epoch.
    pub(crate) start_ms: u64,
    /// When it ended (its driver finished or went away), if it has.
    pub(crate) end_ms: Option<u64>,
}

impl JobSummary {
    /// `RUNNING`, or `FINISHED` once it ended (as `list_jobs` and `lumen list jobs` say it).
    pub(crate) fn status(&self) -> &'static str {
        if self.end_ms.is_some() {
            "FINISHED"
        } else {
            "RUNNING"
        }
    }
}

/// Lists the running jobs, then the last ones that ended (oldest first).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Vec<JobSummary>")]
pub(crate) struct ListJobs;

/// A placement group as the GCS reports it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PgSummary {
    pub(crate) id: PlacementGroupId,
    pub(crate) name: Option<(String, String)>,
    pub(crate) state: PlacementGroupState,
    pub(crate) strategy: PlacementStrategy,
    pub(crate) bundles: Vec<ResourceSet>,
    pub(crate) nodes: Vec<Option<NodeId>>,
    pub(crate) detached: bool,
    pub(crate) job: JobId,
}

/// Creates a group (answered once registered; reservation is asynchronous).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct CreatePlacementGroup {
    pub(crate) id: PlacementGroupId,
    pub(crate) name: Option<(String, String)>,
    pub(crate) bundles: Vec<ResourceSet>,
    pub(crate) strategy: PlacementStrategy,
    pub(crate) job: JobId,
    pub(crate) detached: bool,
    /// The creating process, told of each state change of the group ([`GroupState`]).
    ///
    /// [`GroupState`]: crate::protocol::owner::GroupState
    #[serde(default)]
    pub(crate) watcher: Option<SocketAddr>,
}

/// Asks the GCS to complete `object` (owned by the process `owner`) once the group is created,
/// or with an error once it is removed: one-way, answered by [`GroupReady`] to the owner, so
/// that no thread or task waits for the GCS in between.
///
/// [`GroupReady`]: crate::protocol::owner::GroupReady
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct WaitPlacementGroup {
    pub(crate) id: PlacementGroupId,
    pub(crate) object: ObjectId,
    pub(crate) owner: SocketAddr,
}

/// Removes a group: its bundles are returned and whatever used them is killed.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct RemovePlacementGroup {
    pub(crate) id: PlacementGroupId,
}

/// Finds a named group.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<PgSummary, Error>")]
pub(crate) struct GetPlacementGroup {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// Lists groups (one, or all in creation order).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Vec<PgSummary>")]
pub(crate) struct ListPlacementGroups {
    pub(crate) id: Option<PlacementGroupId>,
}

/// The task events a process recorded since its last report (one-way).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct AddTaskEvents {
    /// What this process saw, in batches (each in the order it was seen).
    pub(crate) batches: Vec<Vec<TaskPart>>,
    /// Parts the process dropped since its last report (its buffer was full).
    pub(crate) dropped: u64,
}

/// Lists the attempts the GCS keeps: of one job, or of every job.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "TaskList")]
pub(crate) struct ListTasks {
    pub(crate) job: Option<JobId>,
    /// Only the newest this many (`None`: all).
    pub(crate) newest: Option<u32>,
}

/// The attempts [`ListTasks`] asked for, oldest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct TaskList {
    pub(crate) tasks: Vec<TaskRecord>,
    /// Task events no longer kept: dropped by the GCS to stay within its bound, or by the
    /// processes that recorded them.
    pub(crate) dropped: u64,
    /// Attempts ever finished and ever failed, in every job (dropped ones included).
    pub(crate) finished: u64,
    pub(crate) failed: u64,
}

/// Counts the attempts the GCS keeps, by state (for metrics: cheaper than listing them).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "TaskCounts")]
pub(crate) struct CountTasks;

/// What [`CountTasks`] answers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct TaskCounts {
    /// Attempts kept, by state name.
    pub(crate) by_state: Vec<(String, u64)>,
    /// Attempts ever finished and ever failed.
    pub(crate) finished: u64,
    pub(crate) failed: u64,
    /// Time from submission to start of every attempt that started: per bucket (upper bound in
    /// seconds, the last `f64::MAX`; counts not cumulative), their sum in seconds, their count.
    pub(crate) queue_buckets: Vec<(f64, u64)>,
    pub(crate) queue_sum: f64,
    pub(crate) queue_count: u64,
}

super::wire!(TAGS, svc::Gcs:
    RegisterNode = 1,
    Heartbeat = 2,
    GetNodes = 3,
    RegisterJob = 4,
    GetJob = 5,
    PutBinary = 6,
    GetBinary = 7,
    FinishJob = 8,
    CreateActor = 9,
    ActorStarted = 10,
    ActorFailed = 11,
    ActorLost = 12,
    WatchActor = 13,
    KillActor = 14,
    ActorOutOfScope = 15,
    LookupActor = 16,
    ListActors = 17,
    CreatePlacementGroup = 18,
    WaitPlacementGroup = 19,
    RemovePlacementGroup = 20,
    GetPlacementGroup = 21,
    ListPlacementGroups = 22,
    ListJobs = 23,
    AddTaskEvents = 24,
    ListTasks = 25,
    CountTasks = 26,
    HasBinary = 27,
);
