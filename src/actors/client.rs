//! The caller side of actors: where each actor is, and the calls waiting for it.
//!
//! Per actor: `Pending` (calls queue here while the actor is being created or restarted),
//! `Alive` (calls go straight to the host: its mailbox in this process, or its worker process
//! over QUIC), or `Dead` (calls fail at once with the reason). Every change happens under the
//! actor's entry lock, so calls leave in submission order and a queue is flushed before any later
//! call is sent. The address comes from the GCS once per incarnation; the hot path never asks it
//! again. A call sent to another process is remembered until its result arrives, so that losing
//! that process fails the call instead of leaving it pending forever.

use crate::actors::host::{ActorTask, CallGuard};
use crate::error::Error;
use crate::ids::{ActorId, ObjectId};
use crate::node::pool::{ActorCallWire, WorkerPool};
use crate::runtime::Runtime;
use crate::system::actor_directory::ActorUpdate;
use crate::system::gcs::{HostRef, WatchActor, WatchActorWire};
use crate::transport::wire::Target;
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The GCS tells a process calling an actor that the actor died.
#[derive(actix::Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "()")]
pub(crate) struct ActorDead {
    pub(crate) actor_id: ActorId,
    pub(crate) error: Error,
    /// Its process died but it is being restarted: calls in flight fail, new ones wait.
    pub(crate) restarting: bool,
}

enum State {
    Pending(Vec<ActorTask>),
    Alive(HostRef),
    Dead(Error),
}

struct Client {
    state: State,
    incarnation: Option<u32>,
    watching: bool,
}

impl Client {
    fn new() -> Self {
        Client {
            state: State::Pending(Vec::new()),
            incarnation: None,
            watching: false,
        }
    }
}

/// Per-process table of actors this process calls.
#[derive(Default)]
pub(crate) struct ActorClients {
    map: DashMap<ActorId, Client>,
    /// Calls sent to other processes, by result object, with the process they went to.
    remote_calls: DashMap<ObjectId, (CallGuard, SocketAddr)>,
}

/// Sends a call to its host; gives the call back if the host is gone.
fn deliver(rt: &Arc<Runtime>, host: &HostRef, task: ActorTask) -> Option<ActorTask> {
    match host {
        HostRef::Local(host) => host.post(task),
        HostRef::Remote(addr) => {
            let Some(net) = &rt.net else {
                return Some(task);
            };
            let ActorTask {
                task_id,
                method,
                args,
                group,
                guard,
            } = task;
            let msg = ActorCallWire {
                actor_id: guard.actor_id,
                task_id,
                method,
                args,
                group,
                return_id: guard.return_id,
                owner: rt.owner(),
            };
            rt.actors
                .remote_calls
                .insert(guard.return_id, (guard, *addr));
            Target::<WorkerPool>::remote(net, *addr).do_send(msg);
            None
        }
    }
}

impl ActorClients {
    /// Starts resolving an actor this process just created.
    pub(crate) fn created(&self, rt: &Arc<Runtime>, actor_id: ActorId) {
        // Another thread may already have queued calls (a handle from get_actor): keep them.
        let mut c = self.map.entry(actor_id).or_insert_with(Client::new);
        if !c.watching && matches!(c.state, State::Pending(_)) {
            c.watching = true;
            watch(rt, actor_id, None);
        }
    }

    /// Marks an actor dead locally: its calls fail with `error`.
    pub(crate) fn mark_dead(&self, actor_id: ActorId, error: Error) {
        let queued = {
            let mut c = self.map.entry(actor_id).or_insert_with(Client::new);
            match std::mem::replace(&mut c.state, State::Dead(error.clone())) {
                State::Pending(q) => q,
                _ => Vec::new(),
            }
        };
        for t in queued {
            t.guard.finish(Err(error.clone()));
        }
    }

    /// Sends a call, or queues it until the actor's address is known.
    pub(crate) fn submit(&self, rt: &Arc<Runtime>, actor_id: ActorId, task: ActorTask) {
        let mut c = self.map.entry(actor_id).or_insert_with(Client::new);
        let c = &mut *c;
        let task = match &c.state {
            State::Alive(host) => match deliver(rt, host, task) {
                None => return,
                Some(task) => task,
            },
            State::Dead(e) => {
                let e = e.clone();
                return task.guard.finish(Err(e));
            }
            State::Pending(_) => task,
        };
        // The host went away, or is not known yet: queue, and find out where it is.
        match &mut c.state {
            State::Pending(q) => q.push(task),
            _ => c.state = State::Pending(vec![task]),
        }
        if !c.watching {
            c.watching = true;
            watch(rt, actor_id, c.incarnation);
        }
    }

    /// The actor died (the GCS said so): calls sent to it fail now; queued and later calls fail
    /// too, unless it is `restarting`, when they wait for the new incarnation.
    pub(crate) fn actor_died(&self, actor_id: ActorId, error: Error, restarting: bool) {
        if restarting {
            if let Some(mut c) = self.map.get_mut(&actor_id) {
                if matches!(c.state, State::Alive(_)) {
                    c.state = State::Pending(Vec::new());
                }
            }
        } else {
            self.mark_dead(actor_id, error.clone());
        }
        let sent: Vec<ObjectId> = self
            .remote_calls
            .iter()
            .filter(|e| e.value().0.actor_id == actor_id)
            .map(|e| *e.key())
            .collect();
        for id in sent {
            if let Some((_, (guard, _))) = self.remote_calls.remove(&id) {
                guard.finish(Err(error.clone()));
            }
        }
    }

    /// The result of a call sent to another process.
    pub(crate) fn take_remote_call(&self, return_id: ObjectId) -> Option<CallGuard> {
        self.remote_calls.remove(&return_id).map(|(_, (g, _))| g)
    }

    /// The connection to `peer` was lost: calls sent there fail, and actors hosted there are
    /// looked up again (restarted elsewhere, or dead).
    pub(crate) fn peer_lost(&self, peer: SocketAddr, reason: &str) {
        let lost: Vec<ObjectId> = self
            .remote_calls
            .iter()
            .filter(|e| e.value().1 == peer)
            .map(|e| *e.key())
            .collect();
        for id in lost {
            if let Some((_, (guard, _))) = self.remote_calls.remove(&id) {
                let actor = guard.actor_id.to_string();
                let class = guard.class.to_string();
                guard.finish(Err(Error::ActorDied {
                    actor,
                    class,
                    reason: format!("the connection to its process at {peer} was lost ({reason})"),
                }));
            }
        }
        for mut c in self.map.iter_mut() {
            if matches!(&c.state, State::Alive(HostRef::Remote(a)) if *a == peer) {
                c.state = State::Pending(Vec::new());
            }
        }
    }

    fn apply(&self, rt: &Arc<Runtime>, actor_id: ActorId, update: ActorUpdate<HostRef>) {
        let failed = {
            let Some(mut c) = self.map.get_mut(&actor_id) else {
                return;
            };
            c.watching = false;
            match update {
                ActorUpdate::Alive { addr, incarnation } => {
                    let mut unsent = Vec::new();
                    if let State::Pending(q) = &mut c.state {
                        for t in q.drain(..) {
                            if let Some(t) = deliver(rt, &addr, t) {
                                unsent.push(t);
                            }
                        }
                    }
                    if !matches!(c.state, State::Dead(_)) {
                        c.state = State::Alive(addr);
                        c.incarnation = Some(incarnation);
                    }
                    if unsent.is_empty() {
                        None
                    } else {
                        let e = Error::ActorDied {
                            actor: actor_id.to_string(),
                            class: String::new(),
                            reason: "its host stopped before the call could be delivered".into(),
                        };
                        Some((unsent, e))
                    }
                }
                ActorUpdate::Dead(e) => {
                    match std::mem::replace(&mut c.state, State::Dead(e.clone())) {
                        State::Pending(q) => Some((q, e)),
                        _ => None,
                    }
                }
            }
        };
        if let Some((queued, e)) = failed {
            for t in queued {
                t.guard.finish(Err(e.clone()));
            }
        }
    }
}

fn watch(rt: &Arc<Runtime>, actor_id: ActorId, after: Option<u32>) {
    let rt2 = rt.clone();
    match &rt.gcs {
        Target::Local(gcs) => {
            let (tx, rx) = flume::bounded(1);
            gcs.do_send(WatchActor {
                actor_id,
                after,
                reply: tx,
            });
            rt.executor.spawn(async move {
                let update = rx.recv_async().await.unwrap_or_else(|_| {
                    ActorUpdate::Dead(Error::shutdown("waiting for an actor to start"))
                });
                rt2.actors.apply(&rt2, actor_id, update);
            });
        }
        Target::Remote(_) => {
            let gcs = rt.gcs.clone();
            rt.executor.spawn(async move {
                let subscriber = rt2.net.as_ref().map(|n| n.local_addr());
                let msg = WatchActorWire {
                    actor_id,
                    after,
                    subscriber,
                };
                let update = match gcs.send(msg).await {
                    Ok(Ok(ActorUpdate::Alive { addr, incarnation })) => ActorUpdate::Alive {
                        addr: HostRef::Remote(addr),
                        incarnation,
                    },
                    Ok(Ok(ActorUpdate::Dead(e))) => ActorUpdate::Dead(e),
                    Ok(Err(e)) | Err(e) => ActorUpdate::Dead(e),
                };
                rt2.actors.apply(&rt2, actor_id, update);
            });
        }
    }
}
