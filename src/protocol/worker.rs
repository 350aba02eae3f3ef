//! Messages to a worker (the process that runs a job's tasks and hosts its actors on a node):
//! work its raylet admitted, actors to stop, and actor calls from their callers.

use crate::ids::{ActorId, ObjectId, TaskId};
use crate::protocol::refs::{OwnerAddress, Stored};
use crate::protocol::svc;
use crate::protocol::task::{TaskArg, TaskSpec};
use crate::resources::Grant;
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// Runs a task the raylet admitted, with the values of the ref arguments it resolved and the
/// resources it granted.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct Launch {
    pub(crate) spec: Arc<TaskSpec>,
    pub(crate) resolved: Vec<Option<Stored>>,
    pub(crate) grant: Grant,
    /// More tasks wait at the raylet: the worker looks for its next one before it sleeps.
    #[serde(default)]
    pub(crate) backlog: bool,
    /// The lease it runs under, for a task its owner pushed to a leased slot (`None`: the
    /// raylet launched it).
    #[serde(default)]
    pub(crate) under: Option<TaskId>,
}

/// A task its owner pushes to a worker slot it leases ([`LeaseGrant`]); it runs with the
/// lease's resources and its result says the slot is free again. `more`: the owner has more
/// tasks for this slot queued.
///
/// [`LeaseGrant`]: crate::protocol::owner::LeaseGrant
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct PushTask {
    pub(crate) lease: TaskId,
    pub(crate) grant: Grant,
    pub(crate) spec: Arc<TaskSpec>,
    pub(crate) more: bool,
}

/// The owner gives a leased slot back: its resources return to the raylet.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct ReturnLease {
    pub(crate) lease: TaskId,
}

/// Stops an actor hosted here.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub(crate) struct StopActor {
    pub(crate) actor_id: ActorId,
}

/// A call of an actor method, for an actor hosted here. Calls from one caller to one actor are
/// numbered from 0 (`seq`) in the order they were submitted; `skip_to` is the lowest number the
/// caller still awaits an answer to (nothing below it will come).
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub(crate) struct ActorCall {
    pub(crate) actor_id: ActorId,
    pub(crate) task_id: TaskId,
    pub(crate) method: u32,
    pub(crate) args: Vec<TaskArg>,
    pub(crate) group: Option<String>,
    pub(crate) return_id: ObjectId,
    /// Who gets the result: the caller, which owns it.
    pub(crate) owner: OwnerAddress,
    /// The caller's process.
    pub(crate) caller: SocketAddr,
    pub(crate) seq: u64,
    pub(crate) skip_to: u64,
}

super::wire!(TAGS, svc::Worker:
    Launch = 50,
    StopActor = 51,
    ActorCall = 52,
    PushTask = 53,
    ReturnLease = 54,
);
