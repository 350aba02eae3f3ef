//! Messages to an object's owner: results of tasks and actor calls that ran elsewhere, reads of
//! its objects, borrowers coming and going, and news of nodes and actors that died.

use crate::error::Error;
use crate::ids::{ActorId, JobId, NodeId, ObjectId, PlacementGroupId, TaskId};
use crate::placement::group::PlacementGroupState;
use crate::protocol::refs::{RawRef, Stored};
use crate::protocol::svc;
use crate::resources::ResourceSet;
use actix::prelude::*;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The outcome of a task or actor call, sent to its owner. `contains` are the refs serialized
/// inside the value: the owner takes its own reference to each before the sender lets its go
/// (sent as a request when there are any, answered once the result is stored).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct TaskResult {
    pub(crate) task_id: TaskId,
    pub(crate) return_id: ObjectId,
    /// The actor, for the result of a call to one (its caller's core holds the call).
    pub(crate) actor: Option<ActorId>,
    pub(crate) outcome: Result<Bytes, Error>,
    pub(crate) contains: Vec<RawRef>,
    /// The worker slot the task ran in, now free and leased to the owner: the owner pushes its
    /// next task of the same kind there directly, or returns it ([`ReturnLease`]).
    ///
    /// [`ReturnLease`]: crate::protocol::worker::ReturnLease
    #[serde(default)]
    pub(crate) lease: Option<LeaseGrant>,
    /// The value stayed in the process that made it (a large result): `outcome` is empty, and
    /// readers pull it from there ([`ReadCopy`]).
    #[serde(default)]
    pub(crate) held: Option<HeldCopy>,
}

/// Where a task's result is kept when it stays in the process (and on the node) that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeldCopy {
    /// The process keeping it (it answers [`ReadCopy`]).
    pub(crate) holder: SocketAddr,
    pub(crate) node: NodeId,
    /// The value's bytes.
    pub(crate) size: u64,
}

/// Reads the copy of an object that this process keeps for its owner (a result it made):
/// answered with the value, or an error if it keeps no such copy.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Fetched")]
pub(crate) struct ReadCopy {
    pub(crate) id: ObjectId,
    /// As [`GetObject::share`].
    #[serde(default)]
    pub(crate) share: Option<ShareKey>,
    /// Only these bytes of the value (`start..end`), for a reader that pulls it in chunks from
    /// several holders; the whole value if `None`.
    #[serde(default)]
    pub(crate) range: Option<(u64, u64)>,
}

/// The owner of object `id` (at `owner`) lost the copy it kept elsewhere: this process's copy of
/// it (a secondary copy) becomes the one kept for it, held until the owner frees it, as a result
/// this process made would be.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct KeepCopy {
    pub(crate) id: ObjectId,
    pub(crate) owner: SocketAddr,
}

/// A reader could not read the copy of an object where the owner said it is kept: the owner
/// rebuilds it (lineage reconstruction) or fails it.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct CopyLost {
    pub(crate) id: ObjectId,
    pub(crate) copy: HeldCopy,
    pub(crate) reason: String,
}

/// A process (`at`) keeps a copy of an object it read: the owner frees it there with the
/// object ([`FreeCopies`]).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct CopyHere {
    pub(crate) id: ObjectId,
    pub(crate) at: SocketAddr,
    /// The node of `at`.
    pub(crate) node: NodeId,
}

/// The process `at` no longer keeps its copy of object `id` (its store evicted it to make
/// room): the owner stops naming it as a place to read from.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct CopyGone {
    pub(crate) id: ObjectId,
    pub(crate) at: SocketAddr,
}

/// The owner let go of objects whose copies this process keeps for it.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct FreeCopies {
    pub(crate) ids: Vec<ObjectId>,
}

/// A task sent to a raylet with its owner's leasable tasks started: the owner's request for a
/// slot is granted (the slot comes back leased when the task finishes), so the owner may ask
/// for another.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct TaskStarted {
    pub(crate) task_id: TaskId,
}

/// Tasks pushed to a leased slot behind a task that blocked came back without running: the
/// owner runs them elsewhere (by return object).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct Unstarted {
    pub(crate) lease: TaskId,
    pub(crate) returns: Vec<ObjectId>,
}

/// A worker slot leased to an owner: a thread (or the event loop, for async tasks) of the job's
/// worker on `node`, holding the resources its raylet granted to the task that became the
/// lease. The lease is named after that task (`id`, `attempt`); the raylet counts the resources
/// as that task's until the owner returns the lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct LeaseGrant {
    pub(crate) id: TaskId,
    pub(crate) attempt: u32,
    /// The worker's process.
    pub(crate) worker: SocketAddr,
    pub(crate) node: NodeId,
    pub(crate) grant: crate::resources::Grant,
}

/// Reads an object the owner owns: answered when the object is ready, with its value if it is
/// at most `inline_max` bytes.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Fetched")]
pub(crate) struct GetObject {
    pub(crate) id: ObjectId,
    pub(crate) inline_max: u64,
    /// The reader is on the owner's node: a large value may be answered as shared memory to
    /// map ([`Fetched::Shared`]) instead of its bytes.
    #[serde(default)]
    pub(crate) share: Option<ShareKey>,
}

/// Where a reader runs, for the process it reads from to decide whether the two can share
/// memory: the same machine (`host`, from its boot id) and the same node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShareKey {
    pub(crate) host: u64,
    pub(crate) node: NodeId,
}

/// An object's bytes in a shared-memory segment (a memfd) of the process `pid`, open there as
/// descriptor `fd`: a reader on the same node maps it (`/proc/<pid>/fd/<fd>`) after checking
/// the segment's name carries `tag` and that it holds `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShmHandle {
    pub(crate) pid: u32,
    pub(crate) fd: i32,
    pub(crate) tag: u64,
    pub(crate) len: u64,
}

/// The answer to [`GetObject`].
#[derive(Serialize, Deserialize, MessageResponse, Debug)]
pub(crate) enum Fetched {
    /// The value (or the error the object holds).
    Here(Stored),
    /// Ready, but larger than asked for: the reader that needs it fetches it itself.
    TooLarge(u64),
    /// Ready, and kept by the process that made it: read it there ([`ReadCopy`]); the other
    /// processes that keep copies of it (secondary copies) follow, to pull from in parallel.
    Kept(HeldCopy, Vec<HeldCopy>),
    /// The value, in shared memory the reader maps (it asked with a [`ShareKey`] of this
    /// node).
    Shared(ShmHandle),
}

/// The process `from` starts (`true`) or stops holding refs to objects this owner owns, in order.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct Borrow {
    pub(crate) from: SocketAddr,
    pub(crate) changes: Vec<(ObjectId, bool)>,
}

/// A node died: tasks this owner had there are lost.
#[derive(Message, Serialize, Deserialize, Clone)]
#[rtype(result = "()")]
pub(crate) struct NodeDied {
    pub(crate) node: NodeId,
    pub(crate) reason: String,
}

/// A raylet queued these tasks (by return object) of this owner: if its node dies, the owner
/// retries them.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct TasksPlaced {
    pub(crate) node: NodeId,
    pub(crate) returns: Vec<ObjectId>,
}

/// The GCS tells a process calling an actor that the actor died.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct ActorDead {
    pub(crate) actor_id: ActorId,
    pub(crate) error: Error,
    /// Its process died but it is being restarted: calls in flight fail, new ones wait.
    pub(crate) restarting: bool,
}

/// A placement group this owner waits for was created (`Ok`) or removed first: `object`, its
/// `ready()` object, completes with `()` or the error.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct GroupReady {
    pub(crate) object: ObjectId,
    pub(crate) outcome: Result<(), Error>,
}

/// A placement group this process created changed state (created, rescheduling after a node
/// died, removed): the creator's `ready()` answers from what it last heard instead of asking
/// the GCS each time.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct GroupState {
    pub(crate) id: PlacementGroupId,
    pub(crate) state: PlacementGroupState,
}

/// A leasable task of this owner waits at the raylet in the process `raylet` for resources:
/// the owner may take it back ([`TakeBack`](crate::protocol::raylet::TakeBack)) when one of its
/// own slots frees first.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct TaskQueued {
    pub(crate) task_id: TaskId,
    pub(crate) attempt: u32,
    pub(crate) raylet: SocketAddr,
}

/// A task or actor of this owner fits no node of the cluster as it is now (not even an idle
/// one): it waits as a demand until a node that fits it joins. The owner warns its user.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct Infeasible {
    pub(crate) task_id: TaskId,
    /// What waits: `task <path>` or `actor <path>`.
    pub(crate) what: String,
    /// What it asks for.
    pub(crate) resources: ResourceSet,
}

/// Lines a job's worker process printed, from the node that started it to the job's driver
/// (when the job asked for them: `Config::log_to_driver`), in the order printed per stream.
#[derive(Message, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rtype(result = "()")]
pub(crate) struct WorkerOutput {
    /// The node the worker process runs on: where it listens.
    pub(crate) node: SocketAddr,
    /// The worker process.
    pub(crate) pid: u32,
    /// From its stderr (else its stdout).
    pub(crate) stderr: bool,
    /// Each line (without its end) and what ran in the process when it was printed: a
    /// function's or an actor type's name, empty before anything ran.
    pub(crate) lines: Vec<(String, String)>,
}

/// Where an object is in its life, as the process holding a reference sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ObjectState {
    /// Its task has not returned yet (or, for a borrowed ref, it was not read here yet).
    Pending,
    /// Its value is here (inline, or in this node's store).
    Ready,
    /// Its task failed: reading it gives the error.
    Failed,
}

impl ObjectState {
    /// The state's name, as `list_objects` writes it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ObjectState::Pending => "PENDING",
            ObjectState::Ready => "READY",
            ObjectState::Failed => "FAILED",
        }
    }
}

/// One object a process holds a reference to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ObjectEntry {
    pub(crate) id: ObjectId,
    /// Its owner, for a borrowed ref (`None`: this process owns it).
    pub(crate) owner: Option<SocketAddr>,
    /// Refs held by this process's code.
    pub(crate) local: u32,
    /// Pins by tasks that take it as an argument and have not finished.
    pub(crate) pinned: u32,
    /// Other processes that borrowed it (for an owned object).
    pub(crate) borrowers: u32,
    /// It anchors an actor's handles.
    pub(crate) actor_handle: bool,
    pub(crate) state: ObjectState,
    /// Its value's bytes, when known.
    pub(crate) size: Option<u64>,
    /// Its value is in this process's store.
    pub(crate) in_store: bool,
    /// The node whose process keeps its value (a result kept where it was made).
    #[serde(default)]
    pub(crate) kept_on: Option<NodeId>,
    /// The nodes of other processes keeping copies of it (read there, for an owned object).
    #[serde(default)]
    pub(crate) copies_on: Vec<NodeId>,
}

/// Lists (up to `limit` of) the objects a process holds references to.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "ObjectsHeld")]
pub(crate) struct ListObjects {
    pub(crate) limit: u32,
}

/// What [`ListObjects`] answers: the process, and its objects.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ObjectsHeld {
    pub(crate) node: NodeId,
    pub(crate) job: JobId,
    pub(crate) pid: u32,
    pub(crate) objects: Vec<ObjectEntry>,
    /// The process's object store.
    #[serde(default)]
    pub(crate) store: StoreUsage,
}

/// What a process's object store holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoreUsage {
    pub(crate) capacity: u64,
    /// Objects in the store (in memory or spilled), and their bytes.
    pub(crate) objects: usize,
    pub(crate) bytes: u64,
    /// Bytes in memory now.
    pub(crate) memory_bytes: u64,
    pub(crate) spilled_objects: usize,
    pub(crate) spilled_bytes: u64,
    /// Results this process made and keeps for their owners (primary copies).
    pub(crate) kept_copies: usize,
}

super::wire!(TAGS, svc::Owner:
    TaskResult = 60,
    GetObject = 61,
    Borrow = 62,
    NodeDied = 63,
    TasksPlaced = 64,
    ActorDead = 65,
    GroupReady = 66,
    GroupState = 67,
    TaskStarted = 68,
    Unstarted = 69,
    TaskQueued = 70,
    Infeasible = 71,
    WorkerOutput = 72,
    ListObjects = 73,
    ReadCopy = 74,
    FreeCopies = 75,
    CopyLost = 76,
    CopyHere = 77,
    KeepCopy = 78,
    CopyGone = 79,
);
