//! The caller side of actors in this process: per actor, its [`ActorCaller`] core behind the
//! actor's entry lock, and the calls this process has waiting for a result.
//!
//! Every change of an actor's state happens under its entry lock, and calls are sent while it is
//! held, so calls leave in submission order and a queue is flushed before any later call is
//! sent. The actor's address comes from the GCS once per incarnation; the hot path never asks it
//! again. A call is remembered until its result arrives (with the pins its arguments hold), so
//! that losing the actor's process, or the actor, fails the call instead of leaving it pending.

use crate::actors::caller::{ActorCaller, Step};
use crate::error::Error;
use crate::ids::{ActorId, ObjectId};
use crate::objects::ownership::RefTable;
use crate::protocol::gcs::{ActorUpdate, WatchActor};
use crate::protocol::refs::Stored;
use crate::protocol::svc;
use crate::protocol::worker::ActorCall;
use crate::transport::net::{Net, Target};
use dashmap::DashMap;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

/// How many dead actors a caller remembers (a call to a forgotten one asks the GCS again).
const DEAD_KEPT: usize = 1000;

/// A call waiting for its result.
struct Waiting {
    actor_id: ActorId,
    /// Objects its arguments (and the actor's anchor) hold until it is answered.
    pinned: Vec<ObjectId>,
}

/// Per-process table of actors this process calls.
pub(crate) struct ActorClients {
    net: Arc<Net>,
    gcs: Target<svc::Gcs>,
    refs: Arc<RefTable>,
    map: DashMap<ActorId, ActorCaller<ActorCall>>,
    calls: DashMap<ObjectId, Waiting>,
    dead: Mutex<VecDeque<ActorId>>,
    me: Weak<ActorClients>,
}

impl ActorClients {
    pub(crate) fn new(net: Arc<Net>, gcs: Target<svc::Gcs>, refs: Arc<RefTable>) -> Arc<Self> {
        Arc::new_cyclic(|me| ActorClients {
            net,
            gcs,
            refs,
            map: DashMap::new(),
            calls: DashMap::new(),
            dead: Mutex::new(VecDeque::new()),
            me: me.clone(),
        })
    }

    /// Carries out steps: sends go now (the caller holds the actor's entry lock, which keeps
    /// them in order); failures are returned, to be finished once the lock is released.
    fn send(&self, actor_id: ActorId, steps: Vec<Step<ActorCall>>) -> Vec<(ObjectId, Error)> {
        let mut failed = Vec::new();
        for step in steps {
            match step {
                Step::Send {
                    to,
                    mut call,
                    seq,
                    skip_to,
                } => {
                    call.seq = seq;
                    call.skip_to = skip_to;
                    call.caller = self.net.addr();
                    self.net.target::<svc::Worker>(to).do_send(call);
                }
                Step::Fail(call, e) => failed.push((call.return_id, e)),
                Step::FailSent(id, e) => failed.push((id, e)),
                Step::Watch { after } => self.watch(actor_id, after),
            }
        }
        failed
    }

    fn fail_all(&self, failed: Vec<(ObjectId, Error)>) {
        for (id, e) in failed {
            self.finish(id, Err(e), Vec::new());
        }
    }

    /// Starts resolving an actor this process just created.
    pub(crate) fn created(&self, actor_id: ActorId) {
        let failed = {
            let mut c = self.map.entry(actor_id).or_default();
            let steps = c.created();
            self.send(actor_id, steps)
        };
        self.fail_all(failed);
    }

    /// Sends a call, or queues it until the actor's address is known. `pinned` are the objects
    /// the call holds until it is answered.
    pub(crate) fn submit(&self, actor_id: ActorId, call: ActorCall, pinned: Vec<ObjectId>) {
        let return_id = call.return_id;
        self.calls.insert(return_id, Waiting { actor_id, pinned });
        let failed = {
            let mut c = self.map.entry(actor_id).or_default();
            let steps = c.submit(call, return_id);
            self.send(actor_id, steps)
        };
        self.fail_all(failed);
    }

    /// The actor is dead (killed here, or its creation refused): its calls fail with `error`.
    pub(crate) fn mark_dead(&self, actor_id: ActorId, error: Error) {
        let failed = {
            let mut c = self.map.entry(actor_id).or_default();
            let steps = c.dead(error);
            self.send(actor_id, steps)
        };
        self.fail_all(failed);
        self.remember_dead(actor_id);
    }

    /// Bounds the dead actors remembered: the oldest idle ones go.
    fn remember_dead(&self, actor_id: ActorId) {
        let mut dead = self.dead.lock();
        dead.push_back(actor_id);
        while dead.len() > DEAD_KEPT {
            if let Some(old) = dead.pop_front() {
                self.map.remove_if(&old, |_, c| c.is_dead() && c.is_idle());
            }
        }
    }

    /// The GCS says the actor died: calls sent to it fail now; queued and later calls fail
    /// too, unless it is `restarting`, when they wait for the new incarnation.
    pub(crate) fn actor_died(&self, actor_id: ActorId, error: Error, restarting: bool) {
        if !restarting {
            return self.mark_dead(actor_id, error);
        }
        let failed = match self.map.get_mut(&actor_id) {
            Some(mut c) => {
                let steps = c.restarting(error);
                self.send(actor_id, steps)
            }
            None => Vec::new(),
        };
        self.fail_all(failed);
    }

    /// The connection to the process `peer` was lost: calls sent there fail, and actors hosted
    /// there are looked up again (restarted elsewhere, or dead).
    pub(crate) fn peer_lost(&self, peer: SocketAddr, reason: &str) {
        let mut failed = Vec::new();
        for mut c in self.map.iter_mut() {
            let actor_id = *c.key();
            let error = Error::ActorDied {
                actor: actor_id.to_string(),
                class: String::new(),
                reason: format!("the connection to its process at {peer} was lost ({reason})"),
            };
            let steps = c.host_lost(peer, &error);
            failed.extend(self.send(actor_id, steps));
        }
        self.fail_all(failed);
    }

    /// A call's result arrived (or the call failed): stores it and lets the call's pins go.
    /// Whether the result was a call of this table's.
    pub(crate) fn finish(
        &self,
        return_id: ObjectId,
        outcome: Result<Stored, Error>,
        contains: Vec<ObjectId>,
    ) -> bool {
        let Some((_, waiting)) = self.calls.remove(&return_id) else {
            return false;
        };
        if let Some(mut c) = self.map.get_mut(&waiting.actor_id) {
            c.answered(return_id);
        }
        let value = outcome.unwrap_or_else(Stored::Error);
        self.refs.complete(return_id, value, contains);
        self.refs.unpin(&waiting.pinned);
        true
    }

    /// Whether `return_id` is a call of this table's waiting for its result.
    pub(crate) fn is_call(&self, return_id: ObjectId) -> bool {
        self.calls.contains_key(&return_id)
    }

    fn watch(&self, actor_id: ActorId, after: Option<u32>) {
        let reply = self.gcs.send(WatchActor {
            actor_id,
            after,
            subscriber: self.net.addr(),
        });
        let me = self.me.clone();
        self.net.runtime().spawn(async move {
            let update = match reply.await {
                Ok(Ok(u)) => u,
                Ok(Err(e)) | Err(e) => ActorUpdate::Dead(e),
            };
            if let Some(me) = me.upgrade() {
                me.apply(actor_id, update);
            }
        });
    }

    fn apply(&self, actor_id: ActorId, update: ActorUpdate<SocketAddr>) {
        let dead = matches!(update, ActorUpdate::Dead(_));
        let failed = {
            let Some(mut c) = self.map.get_mut(&actor_id) else {
                return;
            };
            let steps = match update {
                ActorUpdate::Alive { addr, incarnation } => {
                    c.alive(addr, incarnation, |call| call.return_id)
                }
                ActorUpdate::Dead(e) => c.dead(e),
            };
            self.send(actor_id, steps)
        };
        self.fail_all(failed);
        if dead {
            self.remember_dead(actor_id);
        }
    }
}
