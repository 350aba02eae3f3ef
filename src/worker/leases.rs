//! The owner's leases: worker slots its raylets granted, which it keeps while it has tasks of
//! the same kind to run, pushing them there directly (Ray's owners lease workers per scheduling
//! class the same way).
//!
//! A leasable task ([`TaskSpec::leasable`]) goes to the local raylet as usual when the owner
//! holds no free slot of its kind; the raylet places and admits it like any task, and when it
//! finishes its slot is leased to the owner (the result carries the [`LeaseGrant`]). The owner
//! then pushes its queued tasks of that kind to the slot one at a time: two messages a task
//! (the push and the result) instead of a trip through the raylets.
//!
//! [`Leases`] is the pure policy, fed events and `now`, returning [`Step`]s:
//! - at most [`MAX_REQUESTS`] tasks of a kind wait at raylets for a slot; the rest wait here and
//!   take the first slot that frees;
//! - a slot held [`LEASE_TERM`] is returned when its task finishes, so tasks of other owners
//!   (and this owner's tasks queued at raylets) get their turn;
//! - a free slot takes back a task of its kind that a raylet said it queued for resources (they
//!   may be waiting for exactly that slot; Ray's owner cancels the lease requests it no longer
//!   needs), or is returned at once when tasks of its kind wait at raylets and none can be
//!   taken back, else after [`LINGER`] with nothing to run (a program submitting one task
//!   after another keeps its slot);
//! - a slot whose worker or node died is forgotten, and the task running there is reported so
//!   the owner can fail or retry it.

use crate::ids::{NodeId, ObjectId, TaskId};
use crate::protocol::owner::LeaseGrant;
use crate::protocol::task::TaskSpec;
use crate::resources::ResourceSet;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tasks of one kind that may wait at raylets for a slot at once.
pub(crate) const MAX_REQUESTS: usize = 4;

/// Tasks an owner may have pushed to one slot at once (one runs, the rest wait there in
/// order), so that a slot does not sit idle for a network round trip between small tasks.
pub(crate) const DEPTH: usize = 4;

/// How long a slot is kept while tasks keep coming: returned when its task finishes after this.
pub(crate) const LEASE_TERM: Duration = Duration::from_millis(500);

/// How long a free slot is kept with nothing to run.
pub(crate) const LINGER: Duration = Duration::from_millis(1);

/// What the owner does.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Send the task to the local raylet: it is placed as usual, and its slot comes back leased.
    Request(Arc<TaskSpec>),
    /// Push the task to a leased slot; `more`: more tasks wait for that slot (pushed or queued).
    Push {
        lease: LeaseGrant,
        spec: Arc<TaskSpec>,
        more: bool,
    },
    /// Give a slot back.
    Return(LeaseGrant),
    /// Ask the raylet in the process `raylet` for the task queued there (attempt `attempt`):
    /// the slot `lease` is free and waits for the answer ([`Leases::taken_back`]).
    TakeBack {
        lease: TaskId,
        task_id: TaskId,
        attempt: u32,
        raylet: SocketAddr,
    },
}

/// Which slots a task can use: those granted for its resources.
type Kind = ResourceSet;

fn kind_of(spec: &TaskSpec) -> Kind {
    spec.resources.clone()
}

/// A slot this owner holds.
#[derive(Debug)]
struct Held {
    kind: Kind,
    grant: LeaseGrant,
    granted: Instant,
    /// The tasks pushed there and not finished, in order: the first runs.
    running: VecDeque<(TaskId, ObjectId)>,
    /// Since when nothing runs there.
    idle_since: Option<Instant>,
    /// Its running task blocked and the tasks behind it came back: nothing more goes there
    /// until it finishes.
    blocked: bool,
    /// A task of its kind is being taken back from a raylet to run here.
    taking_back: bool,
}

impl Held {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.granted) >= LEASE_TERM
    }
}

/// Tasks of one kind.
#[derive(Debug, Default)]
struct Class {
    queue: VecDeque<Arc<TaskSpec>>,
    /// Tasks of this kind waiting at raylets.
    requests: usize,
    /// The slots of this kind, by lease.
    slots: Vec<TaskId>,
}

/// A task sent to a raylet.
#[derive(Debug)]
struct Request {
    kind: Kind,
    spec: Arc<TaskSpec>,
    /// It started, so no longer waits at a raylet.
    started: bool,
    /// The raylet it waits at for resources, as that raylet said (and not yet asked back).
    queued_at: Option<SocketAddr>,
}

/// The owner's leases and the tasks waiting for them.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    classes: HashMap<Kind, Class>,
    /// Tasks sent to raylets, by task (the latest attempt sent).
    requests: HashMap<TaskId, Request>,
    /// Slots held, by lease.
    held: HashMap<TaskId, Held>,
}

impl Leases {
    /// A leasable task to run.
    pub(crate) fn submit(&mut self, spec: Arc<TaskSpec>, now: Instant) -> Vec<Step> {
        let kind = kind_of(&spec);
        let mut out = Vec::new();
        self.classes
            .entry(kind.clone())
            .or_default()
            .queue
            .push_back(spec);
        self.place(&kind, now, &mut out);
        out
    }

    /// A task of this owner finished (or failed) with `lease`, the slot it ran in, if the slot is
    /// leased to this owner now.
    pub(crate) fn finished(
        &mut self,
        task_id: TaskId,
        lease: Option<LeaseGrant>,
        now: Instant,
    ) -> Vec<Step> {
        let mut out = Vec::new();
        // A slot of another attempt than the one sent last ends nothing.
        let stale = lease.as_ref().is_some_and(|g| {
            g.id == task_id
                && self
                    .requests
                    .get(&task_id)
                    .is_some_and(|r| r.spec.attempt != g.attempt)
        });
        let request = if stale {
            None
        } else {
            self.requests.remove(&task_id)
        };
        if let Some(r) = request.as_ref().filter(|r| !r.started) {
            if let Some(c) = self.classes.get_mut(&r.kind) {
                c.requests -= 1;
            }
        }
        let kind = match lease {
            // The task was sent to a raylet and its slot is now this owner's.
            Some(grant) if grant.id == task_id => match request {
                Some(Request { kind, spec, .. }) if spec.attempt == grant.attempt => {
                    self.classes
                        .entry(kind.clone())
                        .or_default()
                        .slots
                        .push(grant.id);
                    self.held.insert(
                        grant.id,
                        Held {
                            kind: kind.clone(),
                            grant,
                            granted: now,
                            running: VecDeque::new(),
                            idle_since: Some(now),
                            blocked: false,
                            taking_back: false,
                        },
                    );
                    Some(kind)
                }
                // A slot of an attempt this owner no longer waits for.
                other => {
                    out.push(Step::Return(grant));
                    other.map(|r| r.kind)
                }
            },
            // A pushed task: one less runs in its slot.
            Some(grant) => match self.held.get_mut(&grant.id) {
                Some(h) => {
                    h.running.retain(|(t, _)| *t != task_id);
                    if h.running.is_empty() {
                        h.blocked = false;
                    }
                    Some(h.kind.clone())
                }
                None => None,
            },
            // A failed request; or a pushed task that failed without its slot (the slot is
            // gone: the worker no longer had it).
            None => match request {
                Some(r) => Some(r.kind),
                None => {
                    let broken = self
                        .held
                        .iter()
                        .find(|(_, h)| h.running.iter().any(|(t, _)| *t == task_id))
                        .map(|(id, _)| *id);
                    // Tasks pushed behind it come back failed the same way, and are retried
                    // (or failed) one by one.
                    broken.and_then(|id| self.unhold(id).map(|h| h.kind))
                }
            },
        };
        if let Some(kind) = kind {
            self.place(&kind, now, &mut out);
            self.settle(&kind, now, &mut out);
        }
        out
    }

    /// A task sent to a raylet started: it no longer waits there, so another may be sent.
    pub(crate) fn started(&mut self, task_id: TaskId, now: Instant) -> Vec<Step> {
        let mut out = Vec::new();
        let Some(r) = self.requests.get_mut(&task_id) else {
            return out;
        };
        r.queued_at = None;
        if std::mem::replace(&mut r.started, true) {
            return out;
        }
        let kind = r.kind.clone();
        if let Some(c) = self.classes.get_mut(&kind) {
            c.requests -= 1;
        }
        self.place(&kind, now, &mut out);
        out
    }

    /// The raylet at `raylet` queued this task (attempt `attempt`) for resources: a slot of
    /// its kind that frees first may take it back.
    pub(crate) fn queued(&mut self, task_id: TaskId, attempt: u32, raylet: SocketAddr) {
        if let Some(r) = self.requests.get_mut(&task_id) {
            if r.spec.attempt == attempt && !r.started {
                r.queued_at = Some(raylet);
            }
        }
    }

    /// The raylet answered a [`Step::TakeBack`]: `got`, the task is this owner's again (it will
    /// not run there) and goes to the front of its queue, for the free slot; else it is about
    /// to start there.
    pub(crate) fn taken_back(
        &mut self,
        lease: TaskId,
        task_id: TaskId,
        attempt: u32,
        got: bool,
        now: Instant,
    ) -> Vec<Step> {
        let mut out = Vec::new();
        let mut kind = None;
        if let Some(h) = self.held.get_mut(&lease) {
            h.taking_back = false;
            kind = Some(h.kind.clone());
        }
        let ours = self
            .requests
            .get(&task_id)
            .is_some_and(|r| r.spec.attempt == attempt && !r.started);
        if got && ours {
            if let Some(r) = self.requests.remove(&task_id) {
                let class = self.classes.entry(r.kind.clone()).or_default();
                class.requests -= 1;
                class.queue.push_front(r.spec);
                kind = Some(r.kind);
            }
        }
        if let Some(kind) = kind {
            self.place(&kind, now, &mut out);
            self.settle(&kind, now, &mut out);
        }
        out
    }

    /// The slot's running task blocked and the tasks pushed behind it came back unstarted: they
    /// go first in their queue, and the slot takes nothing more until that task finishes.
    pub(crate) fn unstarted(
        &mut self,
        lease: TaskId,
        specs: Vec<Arc<TaskSpec>>,
        now: Instant,
    ) -> Vec<Step> {
        let mut out = Vec::new();
        let Some(first) = specs.first() else {
            return out;
        };
        let kind = kind_of(first);
        if let Some(h) = self.held.get_mut(&lease) {
            h.running
                .retain(|(t, _)| !specs.iter().any(|s| s.task_id == *t));
            h.blocked = !h.running.is_empty();
        }
        let class = self.classes.entry(kind.clone()).or_default();
        for spec in specs.into_iter().rev() {
            class.queue.push_front(spec);
        }
        self.place(&kind, now, &mut out);
        // The slot's task may have finished before its tasks came back: then it is free.
        self.settle(&kind, now, &mut out);
        out
    }

    /// Hands queued tasks of a kind out: to a slot running nothing, else to a raylet while fewer
    /// than [`MAX_REQUESTS`] wait there, else behind the task of the least busy slot.
    fn place(&mut self, kind: &Kind, now: Instant, out: &mut Vec<Step>) {
        loop {
            let Some(class) = self.classes.get_mut(kind) else {
                return;
            };
            if class.queue.is_empty() {
                return;
            }
            let mut best: Option<(usize, TaskId)> = None;
            for id in &class.slots {
                if let Some(h) = self.held.get(id) {
                    if h.blocked || h.expired(now) || h.running.len() >= DEPTH {
                        continue;
                    }
                    if best.is_none_or(|(n, _)| h.running.len() < n) {
                        best = Some((h.running.len(), *id));
                    }
                }
            }
            let target = match best {
                Some((0, id)) => Some(id),
                _ if class.requests < MAX_REQUESTS => None,
                Some((_, id)) => Some(id),
                None => return,
            };
            let Some(spec) = class.queue.pop_front() else {
                return;
            };
            match target {
                Some(id) => {
                    let more = !class.queue.is_empty();
                    if let Some(h) = self.held.get_mut(&id) {
                        h.running.push_back((spec.task_id, spec.return_id));
                        h.idle_since = None;
                        out.push(Step::Push {
                            lease: h.grant.clone(),
                            spec,
                            more: more || h.running.len() > 1,
                        });
                    }
                }
                None => {
                    class.requests += 1;
                    self.requests.insert(
                        spec.task_id,
                        Request {
                            kind: kind.clone(),
                            spec: spec.clone(),
                            started: false,
                            queued_at: None,
                        },
                    );
                    out.push(Step::Request(spec));
                }
            }
        }
    }

    /// After tasks were handed out: slots of the kind that run nothing are returned when their
    /// term is over; when tasks of their kind wait at raylets (maybe for exactly that slot),
    /// one that a raylet said it queued is taken back to run there, else the slot is returned;
    /// the others are marked free. A kind with nothing left is forgotten.
    fn settle(&mut self, kind: &Kind, now: Instant, out: &mut Vec<Step>) {
        let Some(class) = self.classes.get(kind) else {
            return;
        };
        let waiting = class.queue.is_empty() && class.requests > 0;
        let free: Vec<TaskId> = class
            .slots
            .iter()
            .filter(|id| {
                self.held.get(*id).is_some_and(|h| {
                    h.running.is_empty() && !h.taking_back && (waiting || h.expired(now))
                })
            })
            .copied()
            .collect();
        for id in free {
            let expired = self.held.get(&id).is_some_and(|h| h.expired(now));
            let queued = if expired {
                None
            } else {
                self.requests.iter_mut().find_map(|(task_id, r)| {
                    let raylet = r.queued_at.filter(|_| r.kind == *kind && !r.started)?;
                    r.queued_at = None;
                    Some((*task_id, r.spec.attempt, raylet))
                })
            };
            match queued {
                Some((task_id, attempt, raylet)) => {
                    if let Some(h) = self.held.get_mut(&id) {
                        h.taking_back = true;
                        h.idle_since = None;
                    }
                    out.push(Step::TakeBack {
                        lease: id,
                        task_id,
                        attempt,
                        raylet,
                    });
                }
                None => {
                    if let Some(h) = self.unhold(id) {
                        out.push(Step::Return(h.grant));
                    }
                }
            }
        }
        for id in self
            .classes
            .get(kind)
            .map(|c| c.slots.clone())
            .unwrap_or_default()
        {
            if let Some(h) = self.held.get_mut(&id) {
                if h.running.is_empty() && !h.taking_back {
                    h.blocked = false;
                    h.idle_since.get_or_insert(now);
                }
            }
        }
        if let Some(c) = self.classes.get(kind) {
            if c.queue.is_empty() && c.requests == 0 && c.slots.is_empty() {
                self.classes.remove(kind);
            }
        }
    }

    /// Forgets a slot.
    fn unhold(&mut self, lease: TaskId) -> Option<Held> {
        let h = self.held.remove(&lease)?;
        if let Some(c) = self.classes.get_mut(&h.kind) {
            c.slots.retain(|l| *l != lease);
        }
        Some(h)
    }

    /// Returns the slots free for [`LINGER`] or more by `now`; the second value says whether
    /// free slots remain (to look again later).
    pub(crate) fn sweep(&mut self, now: Instant) -> (Vec<Step>, bool) {
        let stale: Vec<TaskId> = self
            .held
            .iter()
            .filter(|(_, h)| {
                h.idle_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= LINGER)
            })
            .map(|(id, _)| *id)
            .collect();
        let out = stale
            .into_iter()
            .filter_map(|id| self.give_back(id))
            .collect();
        (out, self.has_idle())
    }

    /// Returns every free slot now (this process is about to ask its raylet for a CPU back).
    pub(crate) fn release_idle(&mut self) -> Vec<Step> {
        let idle: Vec<TaskId> = self
            .held
            .iter()
            .filter(|(_, h)| h.idle_since.is_some())
            .map(|(id, _)| *id)
            .collect();
        idle.into_iter()
            .filter_map(|id| self.give_back(id))
            .collect()
    }

    fn give_back(&mut self, lease: TaskId) -> Option<Step> {
        let h = self.unhold(lease)?;
        if let Some(c) = self.classes.get(&h.kind) {
            if c.queue.is_empty() && c.requests == 0 && c.slots.is_empty() {
                self.classes.remove(&h.kind);
            }
        }
        Some(Step::Return(h.grant))
    }

    /// Whether a slot is free (and will be returned if it stays so).
    pub(crate) fn has_idle(&self) -> bool {
        self.held.values().any(|h| h.idle_since.is_some())
    }

    /// Forgets the slots matching `gone` (their worker or node died): returns the return
    /// objects of the tasks that were pushed there, and what to do with the queued tasks.
    fn forget(
        &mut self,
        gone: impl Fn(&LeaseGrant) -> bool,
        now: Instant,
    ) -> (Vec<ObjectId>, Vec<Step>) {
        let lost: Vec<TaskId> = self
            .held
            .iter()
            .filter(|(_, h)| gone(&h.grant))
            .map(|(id, _)| *id)
            .collect();
        let mut running = Vec::new();
        let mut kinds = Vec::new();
        for id in lost {
            if let Some(h) = self.unhold(id) {
                running.extend(h.running.iter().map(|(_, r)| *r));
                kinds.push(h.kind);
            }
        }
        let mut out = Vec::new();
        for kind in kinds {
            self.place(&kind, now, &mut out);
            self.settle(&kind, now, &mut out);
        }
        (running, out)
    }

    /// The raylet reported the lease's slot lost (its worker died).
    pub(crate) fn lost(&mut self, lease: TaskId, now: Instant) -> (Vec<ObjectId>, Vec<Step>) {
        self.forget(|g| g.id == lease, now)
    }

    /// The connection to a worker process was lost.
    pub(crate) fn worker_lost(
        &mut self,
        addr: SocketAddr,
        now: Instant,
    ) -> (Vec<ObjectId>, Vec<Step>) {
        self.forget(|g| g.worker == addr, now)
    }

    /// A node died.
    pub(crate) fn node_died(&mut self, node: NodeId, now: Instant) -> (Vec<ObjectId>, Vec<Step>) {
        self.forget(|g| g.node == node, now)
    }

    /// Whether this owner holds a slot with the lease's id.
    #[cfg(test)]
    fn holds(&self, lease: TaskId) -> bool {
        self.held.contains_key(&lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::SchedulingStrategy;
    use crate::resources::{Amount, Grant, Resource};

    fn spec(cpus: u64) -> Arc<TaskSpec> {
        let mut resources = ResourceSet::new();
        resources.set(Resource::Cpu, Amount::units(cpus));
        Arc::new(TaskSpec::for_test(
            resources,
            SchedulingStrategy::Default,
            crate::transport::net::IN_PROCESS,
        ))
    }

    fn grant_for(spec: &TaskSpec, worker: u16, node: NodeId) -> LeaseGrant {
        LeaseGrant {
            id: spec.task_id,
            attempt: spec.attempt,
            worker: SocketAddr::from(([127, 0, 0, 1], worker)),
            node,
            grant: Grant::default(),
        }
    }

    fn requests(steps: &[Step]) -> Vec<TaskId> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Request(t) => Some(t.task_id),
                _ => None,
            })
            .collect()
    }

    fn pushes(steps: &[Step]) -> Vec<(TaskId, TaskId)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Push { lease, spec, .. } => Some((lease.id, spec.task_id)),
                _ => None,
            })
            .collect()
    }

    fn returns(steps: &[Step]) -> Vec<TaskId> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Return(g) => Some(g.id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_burst_sends_a_few_to_the_raylet_and_the_rest_to_the_slots_they_free() {
        let mut l = Leases::default();
        let now = Instant::now();
        let t: Vec<_> = (0..10).map(|_| spec(1)).collect();
        let mut sent = Vec::new();
        for x in &t {
            sent.extend(requests(&l.submit(x.clone(), now)));
        }
        let ids = |r: std::ops::Range<usize>| t[r].iter().map(|x| x.task_id).collect::<Vec<_>>();
        assert_eq!(sent, ids(0..MAX_REQUESTS));
        // The first request's slot comes back: it takes a queued task, one more request goes
        // out in place of the one that ended, and the slot takes more behind its task, up to
        // DEPTH.
        let g = grant_for(&t[0], 1, NodeId::fresh());
        let steps = l.finished(t[0].task_id, Some(g.clone()), now);
        let pushed: Vec<_> = pushes(&steps).into_iter().map(|(_, x)| x).collect();
        let mut expected = vec![t[4].task_id];
        expected.extend(ids(6..6 + DEPTH - 1));
        assert_eq!(pushed, expected);
        assert!(pushes(&steps).iter().all(|(lease, _)| *lease == g.id));
        assert_eq!(requests(&steps), vec![t[5].task_id]);
        // A pushed task finishes: the slot takes the next one.
        let steps = l.finished(t[4].task_id, Some(g.clone()), now);
        assert_eq!(pushes(&steps), vec![(g.id, t[6 + DEPTH - 1].task_id)]);
        assert!(returns(&steps).is_empty());
    }

    #[test]
    fn a_free_slot_is_returned_at_once_when_requests_wait_else_after_the_linger() {
        let mut l = Leases::default();
        let now = Instant::now();
        let (a, b) = (spec(1), spec(1));
        l.submit(a.clone(), now);
        l.submit(b.clone(), now);
        let node = NodeId::fresh();
        let steps = l.finished(a.task_id, Some(grant_for(&a, 1, node)), now);
        assert_eq!(
            returns(&steps),
            vec![a.task_id],
            "b waits at a raylet, maybe for this slot"
        );
        let steps = l.finished(b.task_id, Some(grant_for(&b, 1, node)), now);
        assert!(
            steps.is_empty(),
            "nothing waits: the slot is kept for a while"
        );
        assert!(l.holds(b.task_id) && l.has_idle());
        let (steps, left) = l.sweep(now + LINGER / 2);
        assert!(steps.is_empty() && left);
        // A task submitted meanwhile takes the free slot.
        let c = spec(1);
        let steps = l.submit(c.clone(), now + LINGER / 2);
        assert_eq!(pushes(&steps), vec![(b.task_id, c.task_id)]);
        assert!(!l.has_idle());
        let steps = l.finished(c.task_id, Some(grant_for(&b, 1, node)), now + LINGER);
        assert!(steps.is_empty());
        let (steps, left) = l.sweep(now + LINGER * 3);
        assert_eq!(returns(&steps), vec![b.task_id]);
        assert!(!left);
        assert!(l.classes.is_empty() && l.requests.is_empty() && l.held.is_empty());
    }

    fn take_backs(steps: &[Step]) -> Vec<(TaskId, TaskId)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::TakeBack { lease, task_id, .. } => Some((*lease, *task_id)),
                _ => None,
            })
            .collect()
    }

    /// An owner holding one free slot (lease `a`, on `node`), and a raylet's address.
    fn one_free_slot() -> (Leases, Instant, NodeId, SocketAddr, Arc<TaskSpec>) {
        let mut l = Leases::default();
        let now = Instant::now();
        let node = NodeId::fresh();
        let a = spec(1);
        l.submit(a.clone(), now);
        l.finished(a.task_id, Some(grant_for(&a, 1, node)), now);
        (l, now, node, SocketAddr::from(([127, 0, 0, 1], 9)), a)
    }

    /// Ray's owner cancels the lease requests it no longer needs; here a free slot takes back a
    /// task its raylet said it queued (the raylet may be waiting for exactly that slot), instead
    /// of being returned and granted again.
    #[test]
    fn a_free_slot_takes_back_a_task_queued_at_a_raylet_instead_of_being_returned() {
        let (mut l, now, node, raylet, a) = one_free_slot();
        // b takes the free slot; c asks a raylet, which queues it (the slot holds the CPU).
        let (b, c) = (spec(1), spec(1));
        assert_eq!(pushes(&l.submit(b.clone(), now)), [(a.task_id, b.task_id)]);
        assert_eq!(requests(&l.submit(c.clone(), now)), [c.task_id]);
        l.queued(c.task_id, c.attempt, raylet);
        let steps = l.finished(b.task_id, Some(grant_for(&a, 1, node)), now);
        assert_eq!(take_backs(&steps), [(a.task_id, c.task_id)]);
        assert!(
            returns(&steps).is_empty() && !l.has_idle(),
            "kept for the answer"
        );
        // Got it: c runs in the slot; nothing waits at raylets any more.
        let steps = l.taken_back(a.task_id, c.task_id, c.attempt, true, now);
        assert_eq!(pushes(&steps), [(a.task_id, c.task_id)]);
        assert!(l.requests.is_empty());
        assert!(l
            .finished(c.task_id, Some(grant_for(&a, 1, node)), now)
            .is_empty());
        assert!(l.has_idle());

        // Too late (the raylet started it): the slot goes back, as it would have at once.
        let (d, e) = (spec(1), spec(1));
        assert_eq!(pushes(&l.submit(d.clone(), now)), [(a.task_id, d.task_id)]);
        assert_eq!(requests(&l.submit(e.clone(), now)), [e.task_id]);
        l.queued(e.task_id, e.attempt, raylet);
        let steps = l.finished(d.task_id, Some(grant_for(&a, 1, node)), now);
        assert_eq!(take_backs(&steps), [(a.task_id, e.task_id)]);
        let steps = l.taken_back(a.task_id, e.task_id, e.attempt, false, now);
        assert_eq!(returns(&steps), [a.task_id]);
        assert!(!l.holds(a.task_id));
        // e, still a request, becomes the owner's slot when it finishes; it is asked back once.
        let steps = l.finished(e.task_id, Some(grant_for(&e, 2, node)), now);
        assert!(take_backs(&steps).is_empty() && returns(&steps).is_empty());
        assert!(l.holds(e.task_id));
    }

    #[test]
    fn a_task_that_started_or_of_an_older_attempt_is_not_taken_back() {
        let (mut l, now, node, raylet, a) = one_free_slot();
        let (b, c) = (spec(1), spec(1));
        l.submit(b.clone(), now);
        l.submit(c.clone(), now);
        // A report of another attempt, then of the task starting: nothing to take back.
        l.queued(c.task_id, c.attempt + 1, raylet);
        let steps = l.finished(b.task_id, Some(grant_for(&a, 1, node)), now);
        assert!(take_backs(&steps).is_empty());
        assert_eq!(returns(&steps), [a.task_id], "returned: c may wait for it");
        let d = spec(1);
        l.submit(d.clone(), now);
        l.queued(d.task_id, d.attempt, raylet);
        l.started(d.task_id, now);
        l.finished(c.task_id, Some(grant_for(&c, 2, node)), now);
        assert!(l.holds(c.task_id));
        // A stale "got it" (the attempt was retried meanwhile) does not queue the task again.
        let steps = l.taken_back(c.task_id, d.task_id, d.attempt + 1, true, now);
        assert!(pushes(&steps).is_empty() && requests(&steps).is_empty());
    }

    #[test]
    fn a_slot_held_for_its_term_is_returned_when_its_task_finishes() {
        let mut l = Leases::default();
        let now = Instant::now();
        let (a, b, c) = (spec(1), spec(1), spec(1));
        l.submit(a.clone(), now);
        let g = grant_for(&a, 1, NodeId::fresh());
        assert!(l.finished(a.task_id, Some(g.clone()), now).is_empty());
        assert_eq!(pushes(&l.submit(b.clone(), now)), vec![(g.id, b.task_id)]);
        let later = now + LEASE_TERM;
        let steps = l.finished(b.task_id, Some(g.clone()), later);
        assert_eq!(returns(&steps), vec![g.id]);
        assert_eq!(requests(&l.submit(c.clone(), later)), vec![c.task_id]);
    }

    #[test]
    fn kinds_do_not_share_slots() {
        let mut l = Leases::default();
        let now = Instant::now();
        let (one, two) = (spec(1), spec(2));
        l.submit(one.clone(), now);
        l.finished(one.task_id, Some(grant_for(&one, 1, NodeId::fresh())), now);
        assert_eq!(requests(&l.submit(two.clone(), now)), vec![two.task_id]);
    }

    #[test]
    fn tasks_behind_a_blocked_task_come_back_and_run_elsewhere() {
        let mut l = Leases::default();
        let now = Instant::now();
        let t: Vec<_> = (0..MAX_REQUESTS + 4).map(|_| spec(1)).collect();
        for x in &t {
            l.submit(x.clone(), now);
        }
        let g = grant_for(&t[0], 1, NodeId::fresh());
        let steps = l.finished(t[0].task_id, Some(g.clone()), now);
        let behind = vec![t[MAX_REQUESTS + 2].clone(), t[MAX_REQUESTS + 3].clone()];
        assert_eq!(
            pushes(&steps),
            vec![
                (g.id, t[MAX_REQUESTS].task_id),
                (g.id, behind[0].task_id),
                (g.id, behind[1].task_id)
            ]
        );
        // The running task blocked: the two behind it come back; the slot takes nothing more.
        assert!(l.unstarted(g.id, behind.clone(), now).is_empty());
        // A request ends: the first of them goes to a raylet, where the blocked task's CPU is.
        let steps = l.finished(t[1].task_id, None, now);
        assert_eq!(requests(&steps), vec![behind[0].task_id]);
        // The blocked task finishes: its slot takes the other.
        let steps = l.finished(t[MAX_REQUESTS].task_id, Some(g.clone()), now);
        assert_eq!(pushes(&steps), vec![(g.id, behind[1].task_id)]);
    }

    #[test]
    fn a_request_that_started_lets_the_next_queued_task_ask() {
        let mut l = Leases::default();
        let now = Instant::now();
        let t: Vec<_> = (0..MAX_REQUESTS + 2).map(|_| spec(1)).collect();
        for x in &t {
            l.submit(x.clone(), now);
        }
        assert_eq!(
            requests(&l.started(t[0].task_id, now)),
            vec![t[MAX_REQUESTS].task_id]
        );
        assert!(l.started(t[0].task_id, now).is_empty(), "counted once");
        // Its end does not count it again.
        assert!(requests(&l.finished(t[0].task_id, None, now)).is_empty());
        assert_eq!(
            requests(&l.finished(t[1].task_id, None, now)),
            vec![t[MAX_REQUESTS + 1].task_id]
        );
    }

    #[test]
    fn a_failed_request_lets_the_next_queued_task_ask() {
        let mut l = Leases::default();
        let now = Instant::now();
        let tasks: Vec<_> = (0..MAX_REQUESTS + 1).map(|_| spec(1)).collect();
        for t in &tasks {
            l.submit(t.clone(), now);
        }
        let steps = l.finished(tasks[0].task_id, None, now);
        assert_eq!(requests(&steps), vec![tasks[MAX_REQUESTS].task_id]);
    }

    #[test]
    fn a_slot_of_an_attempt_no_longer_awaited_is_returned() {
        let mut l = Leases::default();
        let now = Instant::now();
        let a = spec(1);
        l.submit(a.clone(), now);
        // The attempt failed (its node's report came first) and was retried.
        l.finished(a.task_id, None, now);
        let mut retry = (*a).clone();
        retry.attempt = 1;
        let retry = Arc::new(retry);
        assert_eq!(requests(&l.submit(retry.clone(), now)), vec![a.task_id]);
        // The first attempt's result comes late, with its slot.
        let stale = grant_for(&a, 1, NodeId::fresh());
        let steps = l.finished(a.task_id, Some(stale), now);
        assert_eq!(returns(&steps), vec![a.task_id]);
        assert!(!l.holds(a.task_id));
        // The retry's own slot is taken.
        l.finished(a.task_id, Some(grant_for(&retry, 1, NodeId::fresh())), now);
        assert!(l.holds(a.task_id));
    }

    #[test]
    fn a_lost_worker_reports_the_tasks_pushed_to_it() {
        let mut l = Leases::default();
        let now = Instant::now();
        let t: Vec<_> = (0..MAX_REQUESTS + 3).map(|_| spec(1)).collect();
        for x in &t {
            l.submit(x.clone(), now);
        }
        let g = grant_for(&t[0], 7, NodeId::fresh());
        let steps = l.finished(t[0].task_id, Some(g.clone()), now);
        assert_eq!(
            pushes(&steps),
            vec![
                (g.id, t[MAX_REQUESTS].task_id),
                (g.id, t[MAX_REQUESTS + 2].task_id)
            ]
        );
        let (lost, steps) = l.worker_lost(g.worker, now);
        assert_eq!(
            lost,
            vec![t[MAX_REQUESTS].return_id, t[MAX_REQUESTS + 2].return_id]
        );
        assert!(steps.is_empty(), "nothing was left queued");
        assert!(!l.holds(g.id));
        // A late result frees nothing.
        assert!(l.finished(t[MAX_REQUESTS].task_id, Some(g), now).is_empty());
    }

    #[test]
    fn a_pushed_task_failing_without_its_slot_breaks_the_lease() {
        let mut l = Leases::default();
        let now = Instant::now();
        let (a, b) = (spec(1), spec(1));
        l.submit(a.clone(), now);
        let g = grant_for(&a, 7, NodeId::fresh());
        l.finished(a.task_id, Some(g.clone()), now);
        assert_eq!(pushes(&l.submit(b.clone(), now)), vec![(g.id, b.task_id)]);
        assert!(l.finished(b.task_id, None, now).is_empty());
        assert!(!l.holds(g.id));
        let c = spec(1);
        assert_eq!(requests(&l.submit(c.clone(), now)), vec![c.task_id]);
    }

    #[test]
    fn a_dead_node_takes_its_slots_and_release_idle_returns_the_free_ones() {
        let mut l = Leases::default();
        let now = Instant::now();
        let (a, b, d) = (spec(1), spec(1), spec(1));
        let (n1, n2) = (NodeId::fresh(), NodeId::fresh());
        l.submit(a.clone(), now);
        l.finished(a.task_id, Some(grant_for(&a, 1, n1)), now);
        assert_eq!(pushes(&l.submit(b.clone(), now)).len(), 1);
        // a's slot is busy: d goes to a raylet, and its slot (on n2) stays free.
        assert_eq!(requests(&l.submit(d.clone(), now)), vec![d.task_id]);
        l.finished(d.task_id, Some(grant_for(&d, 2, n2)), now);
        let (running, _) = l.node_died(n1, now);
        assert_eq!(running, vec![b.return_id]);
        assert_eq!(returns(&l.release_idle()), vec![d.task_id]);
        assert!(l.held.is_empty());
    }
}
