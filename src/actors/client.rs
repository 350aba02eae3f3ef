//! The caller side of actors: where each actor is, and the calls waiting for it.
//!
//! Per actor: `Pending` (calls queue here while the actor is being created or restarted),
//! `Alive` (calls go straight to the host's mailbox), or `Dead` (calls fail at once with the
//! reason). Every change happens under the actor's entry lock, so calls leave in submission order
//! and a queue is flushed before any later call is sent. The address comes from the GCS once per
//! incarnation; the hot path never asks it again.

use crate::actors::host::{ActorHost, ActorTask};
use crate::error::Error;
use crate::ids::ActorId;
use crate::runtime::Runtime;
use crate::system::actor_directory::ActorUpdate;
use crate::system::gcs::WatchActor;
use actix::Addr;
use dashmap::DashMap;
use std::sync::Arc;

enum State {
    Pending(Vec<ActorTask>),
    Alive(Addr<ActorHost>),
    Dead(Error),
}

struct Client {
    state: State,
    incarnation: Option<u32>,
    watching: bool,
}

/// Per-process table of actors this process calls.
#[derive(Default)]
pub(crate) struct ActorClients {
    map: DashMap<ActorId, Client>,
}

impl ActorClients {
    /// Starts resolving an actor this process just created.
    pub(crate) fn created(&self, rt: &Arc<Runtime>, actor_id: ActorId) {
        // Another thread may already have queued calls (a handle from get_actor): keep them.
        let mut c = self.map.entry(actor_id).or_insert_with(|| Client {
            state: State::Pending(Vec::new()),
            incarnation: None,
            watching: false,
        });
        if !c.watching && matches!(c.state, State::Pending(_)) {
            c.watching = true;
            watch(rt, actor_id, None);
        }
    }

    /// Marks an actor dead locally: its calls fail with `error`.
    pub(crate) fn mark_dead(&self, actor_id: ActorId, error: Error) {
        let queued = {
            let mut c = self.map.entry(actor_id).or_insert_with(|| Client {
                state: State::Pending(Vec::new()),
                incarnation: None,
                watching: false,
            });
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
        let mut c = self.map.entry(actor_id).or_insert_with(|| Client {
            state: State::Pending(Vec::new()),
            incarnation: None,
            watching: false,
        });
        let c = &mut *c;
        match &mut c.state {
            State::Alive(addr) if addr.connected() => addr.do_send(task),
            State::Alive(_) => {
                // The host went away: find out whether it restarted or died.
                c.state = State::Pending(vec![task]);
                if !c.watching {
                    c.watching = true;
                    watch(rt, actor_id, c.incarnation);
                }
            }
            State::Pending(q) => {
                q.push(task);
                if !c.watching {
                    c.watching = true;
                    watch(rt, actor_id, c.incarnation);
                }
            }
            State::Dead(e) => {
                let e = e.clone();
                task.guard.finish(Err(e));
            }
        }
    }

    fn apply(&self, actor_id: ActorId, update: ActorUpdate<Addr<ActorHost>>) {
        let failed = {
            let Some(mut c) = self.map.get_mut(&actor_id) else {
                return;
            };
            c.watching = false;
            match update {
                ActorUpdate::Alive { addr, incarnation } => {
                    if let State::Pending(q) = &mut c.state {
                        for t in q.drain(..) {
                            addr.do_send(t);
                        }
                    }
                    if !matches!(c.state, State::Dead(_)) {
                        c.state = State::Alive(addr);
                        c.incarnation = Some(incarnation);
                    }
                    None
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
    let (tx, rx) = flume::bounded(1);
    rt.gcs.do_send(WatchActor {
        actor_id,
        after,
        reply: tx,
    });
    let rt2 = rt.clone();
    rt.executor.spawn(async move {
        match rx.recv_async().await {
            Ok(update) => rt2.actors.apply(actor_id, update),
            Err(_) => rt2.actors.apply(
                actor_id,
                ActorUpdate::Dead(Error::shutdown("waiting for an actor to start")),
            ),
        }
    });
}
