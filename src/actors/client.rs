//! The caller side of actors in this process: per actor, its [`ActorCaller`] core behind the
//! actor's entry lock, with the calls this process has waiting for a result.
//!
//! Every change of an actor's state happens under its entry lock, where calls are numbered in
//! submission order; they are sent once the lock is released (so that a caller never holds it
//! while a send wakes a thread), and the host puts each caller's calls back in number order
//! ([`Ordering`](crate::actors::caller::Ordering)). The actor's address comes from the GCS once per incarnation; the hot path never asks it
//! again. A call is remembered by its actor's core until its result arrives (with the pins its
//! arguments hold), so that losing the actor's process, or the actor, fails the call instead of
//! leaving it pending.

use crate::actors::caller::{ActorCaller, Step, Steps};
use crate::error::Error;
use crate::ids::{ActorId, IdDashMap, ObjectId};
use crate::objects::ownership::RefTable;
use crate::protocol::gcs::{ActorUpdate, WatchActor};
use crate::protocol::owner::HeldCopy;
use crate::protocol::refs::Stored;
use crate::protocol::svc;
use crate::protocol::worker::ActorCall;
use crate::transport::net::{Net, Target};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

/// How many dead actors a caller remembers (a call to a forgotten one asks the GCS again).
const DEAD_KEPT: usize = 1000;

/// The objects a call's arguments (and the actor's anchor) hold until it is answered.
type Pins = Vec<ObjectId>;

/// A call that failed before it was answered: its result object, error and pins.
type Failed = (ObjectId, Error, Pins);

/// Per-process table of actors this process calls.
pub(crate) struct ActorClients {
    net: Arc<Net>,
    gcs: Target<svc::Gcs>,
    refs: Arc<RefTable>,
    map: IdDashMap<ActorId, ActorCaller<ActorCall, Pins>>,
    dead: Mutex<VecDeque<ActorId>>,
    me: Weak<ActorClients>,
}

impl ActorClients {
    pub(crate) fn new(net: Arc<Net>, gcs: Target<svc::Gcs>, refs: Arc<RefTable>) -> Arc<Self> {
        Arc::new_cyclic(|me| ActorClients {
            net,
            gcs,
            refs,
            map: IdDashMap::default(),
            dead: Mutex::new(VecDeque::new()),
            me: me.clone(),
        })
    }

    /// Carries out steps, with the actor's entry lock released (failing a call takes locks of
    /// its own).
    fn carry_out(&self, actor_id: ActorId, steps: Steps<ActorCall, Pins>) {
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
                Step::Fail(call, pins, e) => failed.push((call.return_id, e, pins)),
                Step::FailSent(id, pins, e) => failed.push((id, e, pins)),
                Step::Watch { after } => self.watch(actor_id, after),
            }
        }
        self.fail_all(failed);
    }

    fn fail_all(&self, failed: Vec<Failed>) {
        for (id, e, pins) in failed {
            if let Some(call) = id.task() {
                crate::events::ended(call, 0, Some(&e));
            }
            self.refs.complete(id, Stored::Error(e), Vec::new());
            self.refs.unpin(&pins);
        }
    }

    /// Starts resolving an actor this process just created.
    pub(crate) fn created(&self, actor_id: ActorId) {
        let steps = self.map.entry(actor_id).or_default().created();
        self.carry_out(actor_id, steps);
    }

    /// Sends a call, or queues it until the actor's address is known. `pinned` are the objects
    /// the call holds until it is answered.
    pub(crate) fn submit(&self, actor_id: ActorId, call: ActorCall, pinned: Pins) {
        let return_id = call.return_id;
        let steps = self
            .map
            .entry(actor_id)
            .or_default()
            .submit(call, return_id, pinned);
        self.carry_out(actor_id, steps);
    }

    /// The actor is dead (killed here, or its creation refused): its calls fail with `error`.
    pub(crate) fn mark_dead(&self, actor_id: ActorId, error: Error) {
        let steps = self.map.entry(actor_id).or_default().dead(error);
        self.carry_out(actor_id, steps);
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
        let steps = match self.map.get_mut(&actor_id) {
            Some(mut c) => c.restarting(error),
            None => Steps::new(),
        };
        self.carry_out(actor_id, steps);
    }

    /// The connection to the process `peer` was lost: calls sent there fail, and actors hosted
    /// there are looked up again (restarted elsewhere, or dead).
    pub(crate) fn peer_lost(&self, peer: SocketAddr, reason: &str) {
        let mut all = Vec::new();
        for mut c in self.map.iter_mut() {
            let actor_id = *c.key();
            let error = Error::ActorDied {
                actor: actor_id.to_string(),
                class: String::new(),
                reason: format!("the connection to its process at {peer} was lost ({reason})"),
            };
            all.push((actor_id, c.host_lost(peer, &error)));
        }
        for (actor_id, steps) in all {
            self.carry_out(actor_id, steps);
        }
    }

    /// The result of a call to `actor_id` arrived: stores it (or, `held`, where the actor's
    /// process keeps it) and lets the call's pins go. Whether it was a call of this table's
    /// still awaiting its answer.
    pub(crate) fn finish(
        &self,
        actor_id: ActorId,
        return_id: ObjectId,
        outcome: Result<Stored, Error>,
        contains: Vec<ObjectId>,
        held: Option<HeldCopy>,
    ) -> bool {
        let pins = match self.map.get_mut(&actor_id) {
            Some(mut c) => c.answered(return_id),
            None => None,
        };
        let Some(pins) = pins else {
            return false;
        };
        match (outcome, held) {
            // No lineage: a lost copy of an actor call's result is not rebuilt (the call is
            // not run again), it fails with `ObjectLost`.
            (Ok(_), Some(copy)) => {
                self.refs.complete_held(return_id, copy, contains);
            }
            (outcome, _) => {
                let value = outcome.unwrap_or_else(Stored::Error);
                self.refs.complete(return_id, value, contains);
            }
        }
        self.refs.unpin(&pins);
        true
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
        let steps = {
            let Some(mut c) = self.map.get_mut(&actor_id) else {
                return;
            };
            match update {
                ActorUpdate::Alive { addr, incarnation } => c.alive(addr, incarnation),
                ActorUpdate::Dead(e) => c.dead(e),
            }
        };
        self.carry_out(actor_id, steps);
        if dead {
            self.remember_dead(actor_id);
        }
    }
}
