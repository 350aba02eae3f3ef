//! Inbound dispatch: each message that arrives over the transport goes to the component of this
//! process it is for (the GCS, the raylet, the worker pool, or the runtime as the owner of
//! objects), and each request's answer goes back on the connection it came in on.

use crate::error::Error;
use crate::node::pool::{deliver_call, HostDirectory, WorkerPool};
use crate::node::raylet::Raylet;
use crate::objects::owner;
use crate::runtime;
use crate::system::gcs::{Gcs, PeerLost};
use crate::transport::wire::{decode_body, encode_reply, Body};
use crate::transport::{Conn, Delivery, Inbound};
use actix::dev::ToEnvelope;
use actix::prelude::*;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::OnceLock;

/// Where this process's inbound messages go.
pub(crate) struct Router {
    pub(crate) gcs: OnceLock<Addr<Gcs>>,
    pub(crate) raylet: OnceLock<Addr<Raylet>>,
    pub(crate) pool: OnceLock<Addr<WorkerPool>>,
    /// The worker pool's actor hosts: calls go straight to them.
    pub(crate) hosts: OnceLock<HostDirectory>,
    /// Whether this process's runtime owns objects (a driver or a worker process).
    pub(crate) owner: bool,
    /// Worker mode: the process exits when its connection to this node is lost.
    pub(crate) exit_with: OnceLock<SocketAddr>,
    executor: tokio::runtime::Handle,
}

impl Router {
    pub(crate) fn new(executor: tokio::runtime::Handle, owner: bool) -> Self {
        Router {
            gcs: OnceLock::new(),
            raylet: OnceLock::new(),
            pool: OnceLock::new(),
            hosts: OnceLock::new(),
            owner,
            exit_with: OnceLock::new(),
            executor,
        }
    }

    fn missing(what: &str) -> Error {
        Error::invalid(format!(
            "this process runs no {what}; the message was sent to the wrong address"
        ))
    }

    /// A one-way message for `to`.
    fn tell<A, M>(to: &OnceLock<Addr<A>>, what: &str, msg: M)
    where
        A: Actor + Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        match to.get() {
            Some(a) => a.do_send(msg),
            None => tracing::warn!(error = %Self::missing(what), "message dropped"),
        }
    }

    /// A request for `to`: answered on `conn` when `to` replies.
    fn ask<A, M>(
        &self,
        to: &OnceLock<Addr<A>>,
        what: &'static str,
        msg: M,
        conn: Conn,
        id: Option<u64>,
    ) where
        A: Actor + Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Serialize + Send,
    {
        let Some(addr) = to.get().cloned() else {
            if let Some(id) = id {
                conn.reply(id, encode_reply::<()>(&Err(Self::missing(what))));
            }
            return;
        };
        let Some(id) = id else {
            addr.do_send(msg);
            return;
        };
        self.executor.spawn(async move {
            let r = addr
                .send(msg)
                .await
                .map_err(|_| Error::shutdown(format!("the {what} stopped")));
            conn.reply(id, encode_reply(&r));
        });
    }

    fn route(&self, conn: Conn, id: Option<u64>, body: Body) {
        const G: &str = "GCS";
        const R: &str = "raylet";
        const P: &str = "worker pool";
        match body {
            Body::RegisterNode(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::Heartbeat(m) => Self::tell(&self.gcs, G, m),
            Body::GetNodes(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::RegisterJob(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::FinishJob(m) => Self::tell(&self.gcs, G, m),
            Body::GetJob(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::PutBinary(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::GetBinary(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::CreateActor(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::ActorStarted(m) => Self::tell(&self.gcs, G, m),
            Body::ActorFailed(m) => Self::tell(&self.gcs, G, m),
            Body::ActorLost(m) => Self::tell(&self.gcs, G, m),
            Body::WatchActor(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::KillActor(m) => Self::tell(&self.gcs, G, m),
            Body::ActorOutOfScope(m) => Self::tell(&self.gcs, G, m),
            Body::LookupActor(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::ListActors(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::CreatePlacementGroup(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::WaitPlacementGroup(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::RemovePlacementGroup(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::GetPlacementGroup(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::ListPlacementGroups(m) => self.ask(&self.gcs, G, m, conn, id),
            Body::SubmitTask(m) => Self::tell(&self.raylet, R, m),
            Body::PrepareBundles(m) => self.ask(&self.raylet, R, m, conn, id),
            Body::CommitBundles(m) => self.ask(&self.raylet, R, m, conn, id),
            Body::CancelBundles(m) => Self::tell(&self.raylet, R, m),
            Body::TaskDone(m) => Self::tell(&self.raylet, R, m),
            Body::TaskBlocked(m) => Self::tell(&self.raylet, R, m),
            Body::TaskUnblocked(m) => self.ask(&self.raylet, R, m, conn, id),
            Body::ActorReady(m) => Self::tell(&self.raylet, R, m),
            Body::RayletKillActor(m) => Self::tell(&self.raylet, R, m),
            Body::GetResources(m) => self.ask(&self.raylet, R, m, conn, id),
            Body::ClusterView(m) => Self::tell(&self.raylet, R, m),
            Body::RegisterWorker(m) => self.ask(&self.raylet, R, m, conn, id),
            Body::JobEnded(m) => Self::tell(&self.raylet, R, m),
            Body::Launch(m) => Self::tell(&self.pool, P, m),
            Body::StopActor(m) => Self::tell(&self.pool, P, m),
            Body::ActorCall(m) => match self.hosts.get() {
                Some(hosts) => deliver_call(hosts, m),
                None => Self::tell(&self.pool, P, m),
            },
            Body::TaskResult(m) => {
                if self.owner {
                    runtime::with_current(|rt| owner::on_task_result(rt, m));
                }
            }
            Body::TasksPlaced(m) => {
                if self.owner {
                    runtime::with_current(|rt| owner::on_tasks_placed(rt, m));
                }
            }
            Body::NodeDied(m) => {
                if let Some(r) = self.raylet.get() {
                    r.do_send(m.clone());
                }
                if self.owner {
                    runtime::with_current(|rt| owner::on_node_died(rt, m));
                }
            }
            Body::Borrow(m) => {
                if self.owner {
                    runtime::with_current(|rt| {
                        for (id, add) in m.changes {
                            rt.refs.borrower(id, add);
                        }
                    });
                }
            }
            Body::ActorDead(m) => {
                if self.owner {
                    runtime::with_current(|rt| {
                        rt.actors.actor_died(m.actor_id, m.error, m.restarting)
                    });
                }
            }
            Body::GetObject(m) => {
                let Some(id) = id else { return };
                let rt = match runtime::current() {
                    Ok(rt) if self.owner => rt,
                    _ => {
                        let e = Self::missing("object owner");
                        return conn.reply(id, encode_reply::<()>(&Err(e)));
                    }
                };
                self.executor.spawn(async move {
                    let v = owner::on_get_object(rt, m.id, m.inline_max).await;
                    conn.reply(id, encode_reply(&Ok(v)));
                });
            }
        }
    }
}

impl Inbound for Router {
    fn deliver(&self, conn: Conn, delivery: Delivery) {
        let (id, payload) = match delivery {
            Delivery::Message(p) => (None, p),
            Delivery::Request { id, payload } => (Some(id), payload),
        };
        match decode_body(&payload) {
            Ok(body) => self.route(conn, id, body),
            Err(e) => {
                tracing::warn!(peer = %conn.peer(), error = %e, "refused a message");
                if let Some(id) = id {
                    conn.reply(id, encode_reply::<()>(&Err(e)));
                }
            }
        }
    }

    fn connection_lost(&self, peer: SocketAddr, reason: &str) {
        tracing::debug!(%peer, reason, "connection lost");
        if let Some(g) = self.gcs.get() {
            g.do_send(PeerLost { addr: peer });
        }
        if let Some(r) = self.raylet.get() {
            r.do_send(PeerLost { addr: peer });
        }
        if self.owner {
            runtime::with_current(|rt| rt.actors.peer_lost(peer, reason));
        }
        if self.exit_with.get() == Some(&peer) {
            tracing::info!(node = %peer, "lost the node this worker serves; exiting");
            std::process::exit(0);
        }
    }
}
