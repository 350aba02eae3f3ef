//! Typed messages across processes: which actix messages may travel, their envelope on the
//! wire, and [`Target`], the address of a component that is either a local actix `Addr` or a
//! remote process reached over QUIC.
//!
//! A one-way message to a remote component is its rmp-serde encoding inside [`Body`]; a request
//! is the same, answered by the encoding of `Result<M::Result, Error>`. Nothing above this module
//! knows whether a send is local or remote: `Target::do_send` and `Target::send` take the same
//! message types either way.

use crate::error::Error;
use crate::transport::Transport;
use actix::dev::ToEnvelope;
use actix::prelude::*;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::actors::client::ActorDead;
use crate::node::pool::{ActorCallWire, Launch, StopActor};
use crate::node::raylet::{
    ActorReady, ClusterView, GetResources, JobEnded, KillActor as RayletKillActor, RegisterWorker,
    SubmitTask, TaskBlocked, TaskDone, TaskUnblockedWire,
};
use crate::objects::owner::{Borrow, GetObject, NodeDied, TaskResult, TasksPlaced};
use crate::system::gcs::{
    ActorFailed, ActorLost, ActorOutOfScope, ActorStartedWire, CreateActor, FinishJob, GetBinary,
    GetJob, GetNodes, Heartbeat, KillActor, ListActors, LookupActor, PutBinary, RegisterJob,
    RegisterNode, WatchActorWire,
};
use crate::system::placement_groups::{
    CancelBundles, CommitBundles, CreatePlacementGroup, GetPlacementGroup, ListPlacementGroups,
    PrepareBundles, RemovePlacementGroup, WaitPlacementGroup,
};

/// Every message that may cross a process boundary.
#[derive(Serialize, Deserialize)]
pub(crate) enum Body {
    // To the GCS.
    RegisterNode(RegisterNode),
    Heartbeat(Heartbeat),
    GetNodes(GetNodes),
    RegisterJob(RegisterJob),
    FinishJob(FinishJob),
    GetJob(GetJob),
    PutBinary(PutBinary),
    GetBinary(GetBinary),
    CreateActor(CreateActor),
    ActorStarted(ActorStartedWire),
    ActorFailed(ActorFailed),
    ActorLost(ActorLost),
    WatchActor(WatchActorWire),
    KillActor(KillActor),
    ActorOutOfScope(ActorOutOfScope),
    LookupActor(LookupActor),
    ListActors(ListActors),
    CreatePlacementGroup(CreatePlacementGroup),
    WaitPlacementGroup(WaitPlacementGroup),
    RemovePlacementGroup(RemovePlacementGroup),
    GetPlacementGroup(GetPlacementGroup),
    ListPlacementGroups(ListPlacementGroups),
    // To a raylet.
    SubmitTask(SubmitTask),
    PrepareBundles(PrepareBundles),
    CommitBundles(CommitBundles),
    CancelBundles(CancelBundles),
    TaskDone(TaskDone),
    TaskBlocked(TaskBlocked),
    TaskUnblocked(TaskUnblockedWire),
    ActorReady(ActorReady),
    RayletKillActor(RayletKillActor),
    GetResources(GetResources),
    ClusterView(ClusterView),
    RegisterWorker(RegisterWorker),
    JobEnded(JobEnded),
    // To a worker process.
    Launch(Launch),
    StopActor(StopActor),
    ActorCall(ActorCallWire),
    // To an owner.
    TaskResult(TaskResult),
    GetObject(GetObject),
    TasksPlaced(TasksPlaced),
    // To owners and raylets.
    NodeDied(NodeDied),
    ActorDead(ActorDead),
    Borrow(Borrow),
}

/// A message that may travel: it has a variant in [`Body`].
pub(crate) trait Wire: Message + Send + 'static {
    fn into_body(self) -> Body;
}

/// A message whose reply may travel too.
pub(crate) trait WireRequest: Wire
where
    Self::Result: Serialize + DeserializeOwned + Send,
{
}

macro_rules! wire {
    ($($ty:ty => $variant:ident),* $(,)?) => {
        $(impl Wire for $ty {
            fn into_body(self) -> Body {
                Body::$variant(self)
            }
        })*
    };
}

wire!(
    RegisterNode => RegisterNode,
    Heartbeat => Heartbeat,
    GetNodes => GetNodes,
    RegisterJob => RegisterJob,
    FinishJob => FinishJob,
    GetJob => GetJob,
    PutBinary => PutBinary,
    GetBinary => GetBinary,
    CreateActor => CreateActor,
    ActorStartedWire => ActorStarted,
    ActorFailed => ActorFailed,
    ActorLost => ActorLost,
    WatchActorWire => WatchActor,
    KillActor => KillActor,
    ActorOutOfScope => ActorOutOfScope,
    LookupActor => LookupActor,
    ListActors => ListActors,
    SubmitTask => SubmitTask,
    CreatePlacementGroup => CreatePlacementGroup,
    WaitPlacementGroup => WaitPlacementGroup,
    RemovePlacementGroup => RemovePlacementGroup,
    GetPlacementGroup => GetPlacementGroup,
    ListPlacementGroups => ListPlacementGroups,
    PrepareBundles => PrepareBundles,
    CommitBundles => CommitBundles,
    CancelBundles => CancelBundles,
    TaskDone => TaskDone,
    TaskBlocked => TaskBlocked,
    TaskUnblockedWire => TaskUnblocked,
    ActorReady => ActorReady,
    RayletKillActor => RayletKillActor,
    GetResources => GetResources,
    ClusterView => ClusterView,
    RegisterWorker => RegisterWorker,
    JobEnded => JobEnded,
    Launch => Launch,
    StopActor => StopActor,
    ActorCallWire => ActorCall,
    TaskResult => TaskResult,
    GetObject => GetObject,
    TasksPlaced => TasksPlaced,
    NodeDied => NodeDied,
    ActorDead => ActorDead,
    Borrow => Borrow,
);

impl WireRequest for RegisterNode {}
impl WireRequest for GetNodes {}
impl WireRequest for RegisterJob {}
impl WireRequest for GetJob {}
impl WireRequest for PutBinary {}
impl WireRequest for GetBinary {}
impl WireRequest for CreateActor {}
impl WireRequest for WatchActorWire {}
impl WireRequest for LookupActor {}
impl WireRequest for ListActors {}
impl WireRequest for GetResources {}
impl WireRequest for TaskUnblockedWire {}
impl WireRequest for RegisterWorker {}
impl WireRequest for GetObject {}
impl WireRequest for CreatePlacementGroup {}
impl WireRequest for WaitPlacementGroup {}
impl WireRequest for RemovePlacementGroup {}
impl WireRequest for GetPlacementGroup {}
impl WireRequest for ListPlacementGroups {}
impl WireRequest for PrepareBundles {}
impl WireRequest for CommitBundles {}

/// Encodes a message for the wire.
pub(crate) fn encode_body(body: &Body) -> Result<Bytes, Error> {
    rmp_serde::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| Error::Serialization {
            what: "a cluster message".into(),
            reason: e.to_string(),
        })
}

/// Decodes a message from the wire.
pub(crate) fn decode_body(bytes: &[u8]) -> Result<Body, Error> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Serialization {
        what: "a cluster message".into(),
        reason: format!("malformed or unknown message: {e}"),
    })
}

/// Encodes the reply to a request.
pub(crate) fn encode_reply<T: Serialize>(reply: &Result<T, Error>) -> Bytes {
    match rmp_serde::to_vec(reply) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            let err: Result<(), Error> = Err(Error::Serialization {
                what: "a reply".into(),
                reason: e.to_string(),
            });
            Bytes::from(rmp_serde::to_vec(&err).unwrap_or_default())
        }
    }
}

/// A process reachable over the transport.
#[derive(Clone)]
pub(crate) struct Remote {
    pub(crate) net: Arc<Transport>,
    pub(crate) addr: SocketAddr,
}

impl Remote {
    /// Sends a one-way message.
    pub(crate) fn send_body(&self, body: Body) {
        match encode_body(&body) {
            Ok(b) => self.net.send(self.addr, b),
            Err(e) => tracing::warn!(peer = %self.addr, error = %e, "message not sent"),
        }
    }

    /// Sends a request and decodes its reply.
    pub(crate) async fn request<M: WireRequest>(&self, msg: M) -> Result<M::Result, Error>
    where
        M::Result: Serialize + DeserializeOwned + Send,
    {
        let payload = encode_body(&msg.into_body())?;
        let reply = self.net.request(self.addr, payload).await?;
        let decoded: Result<M::Result, Error> =
            rmp_serde::from_slice(&reply).map_err(|e| Error::Serialization {
                what: format!("a reply from {}", self.addr),
                reason: e.to_string(),
            })?;
        decoded
    }
}

/// The address of a component: an actix actor in this process, or one in another process.
pub(crate) enum Target<A: Actor> {
    Local(Addr<A>),
    Remote(Remote),
}

impl<A: Actor> Clone for Target<A> {
    fn clone(&self) -> Self {
        match self {
            Target::Local(a) => Target::Local(a.clone()),
            Target::Remote(r) => Target::Remote(r.clone()),
        }
    }
}

impl<A: Actor> fmt::Debug for Target<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Local(_) => f.write_str("local"),
            Target::Remote(r) => write!(f, "{}", r.addr),
        }
    }
}

impl<A: Actor> Target<A> {
    /// A component of another process.
    pub(crate) fn remote(net: &Arc<Transport>, addr: SocketAddr) -> Self {
        Target::Remote(Remote {
            net: net.clone(),
            addr,
        })
    }

    /// The remote address, if remote.
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        match self {
            Target::Local(_) => None,
            Target::Remote(r) => Some(r.addr),
        }
    }

    /// Sends a one-way message.
    pub(crate) fn do_send<M>(&self, msg: M)
    where
        M: Wire,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        match self {
            Target::Local(a) => a.do_send(msg),
            Target::Remote(r) => r.send_body(msg.into_body()),
        }
    }

    /// Sends a request and waits for the reply.
    pub(crate) async fn send<M>(&self, msg: M) -> Result<M::Result, Error>
    where
        M: WireRequest,
        M::Result: Serialize + DeserializeOwned + Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        match self {
            Target::Local(a) => a
                .send(msg)
                .await
                .map_err(|_| Error::shutdown("sending to a lumen component")),
            Target::Remote(r) => r.request(msg).await,
        }
    }
}
