//! The GCS's table of placement groups: names per namespace, state, where each bundle is, who
//! waits for a group to be created, and which groups wait to be placed (rescheduling ones
//! first, then pending ones, oldest first), and the state changes their creators are still to
//! hear of. Plain data: the `Gcs` actor places groups (it has the node table) and runs their
//! reservation (see [`reservation`](crate::system::reservation)).

use crate::error::Error;
use crate::ids::{JobId, NodeId, PlacementGroupId};
use crate::placement::group::PlacementGroupState;
pub(crate) use crate::protocol::gcs::{CreatePlacementGroup, PgSummary};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;

fn removed_error(id: PlacementGroupId) -> Error {
    Error::Cancelled {
        task: format!("placement group {id}"),
        reason: "the placement group was removed".into(),
    }
}

/// Told once whether a group was created (or why it never will be).
pub(crate) type PgWaiter = Box<dyn FnOnce(Result<(), Error>) + Send>;

/// A group in the GCS.
pub(crate) struct PgRecord {
    pub(crate) summary: PgSummary,
    /// Its place in creation order.
    seq: u64,
    /// A reservation round is under way.
    pub(crate) in_flight: bool,
    pub(crate) waiters: Vec<PgWaiter>,
    /// The creating process, told of each state change (none once its job ended).
    watcher: Option<SocketAddr>,
}

/// A state change to tell a group's creator: where, which group, its new state.
pub(crate) type Notice = (SocketAddr, PlacementGroupId, PlacementGroupState);

/// How many removed groups the table keeps for listing (the oldest go first).
pub(crate) const REMOVED_KEPT: usize = 1000;

/// The GCS's table of groups.
#[derive(Default)]
pub(crate) struct PgTable {
    pub(crate) groups: HashMap<PlacementGroupId, PgRecord>,
    /// Creation order (placement is first come, first served).
    order: BTreeMap<u64, PlacementGroupId>,
    next_seq: u64,
    /// Groups waiting for a placement (pending or rescheduling), in creation order.
    waiting: BTreeSet<u64>,
    /// Removed groups still listed, oldest first.
    removed: VecDeque<u64>,
    names: HashMap<(String, String), PlacementGroupId>,
    /// State changes not yet sent to the groups' creators, oldest first.
    notices: Vec<Notice>,
}

impl PgTable {
    /// Registers a new group, claiming its name.
    pub(crate) fn create(&mut self, msg: CreatePlacementGroup) -> Result<(), Error> {
        if let Some(key) = &msg.name {
            if self.names.contains_key(key) {
                return Err(Error::invalid(format!(
                    "a placement group named {:?} already exists in namespace {:?}",
                    key.1, key.0
                )));
            }
            self.names.insert(key.clone(), msg.id);
        }
        let n = msg.bundles.len();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.groups.insert(
            msg.id,
            PgRecord {
                seq,
                summary: PgSummary {
                    id: msg.id,
                    name: msg.name,
                    state: PlacementGroupState::Pending,
                    strategy: msg.strategy,
                    bundles: msg.bundles,
                    nodes: vec![None; n],
                    detached: msg.detached,
                    job: msg.job,
                },
                in_flight: false,
                waiters: Vec::new(),
                watcher: msg.watcher,
            },
        );
        self.order.insert(seq, msg.id);
        self.waiting.insert(seq);
        Ok(())
    }

    /// Every group, in creation order.
    pub(crate) fn in_order(&self) -> impl Iterator<Item = &PgRecord> {
        self.order.values().filter_map(|id| self.groups.get(id))
    }

    /// Groups to try placing now: rescheduling ones first, then pending ones, oldest first.
    pub(crate) fn to_schedule(&self) -> Vec<PlacementGroupId> {
        let pick = |state: PlacementGroupState| {
            self.waiting
                .iter()
                .filter_map(|seq| self.order.get(seq))
                .filter(move |id| {
                    self.groups
                        .get(id)
                        .is_some_and(|g| !g.in_flight && g.summary.state == state)
                })
                .copied()
        };
        pick(PlacementGroupState::Rescheduling)
            .chain(pick(PlacementGroupState::Pending))
            .collect()
    }

    /// Every bundle of the group is placed: it is created, and its waiters are told.
    pub(crate) fn mark_created(&mut self, id: PlacementGroupId) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        g.summary.state = PlacementGroupState::Created;
        if let Some(w) = g.watcher {
            self.notices.push((w, id, PlacementGroupState::Created));
        }
        self.waiting.remove(&g.seq);
        for w in g.waiters.drain(..) {
            w(Ok(()));
        }
    }

    /// Calls `then` once the group is created, or at once if it is already created or removed.
    pub(crate) fn when_ready(&mut self, id: PlacementGroupId, then: PgWaiter) {
        match self.groups.get_mut(&id) {
            None => then(Err(Error::NotFound {
                kind: "placement group".into(),
                name: id.to_string(),
                namespace: String::new(),
            })),
            Some(g) => match g.summary.state {
                PlacementGroupState::Created => then(Ok(())),
                PlacementGroupState::Removed => then(Err(removed_error(id))),
                _ => g.waiters.push(then),
            },
        }
    }

    /// Marks a group removed (its name freed, its waiters told); whether it was not already.
    pub(crate) fn remove(&mut self, id: PlacementGroupId) -> Result<bool, Error> {
        let g = self.groups.get_mut(&id).ok_or_else(|| Error::NotFound {
            kind: "placement group".into(),
            name: id.to_string(),
            namespace: String::new(),
        })?;
        if g.summary.state == PlacementGroupState::Removed {
            return Ok(false);
        }
        g.summary.state = PlacementGroupState::Removed;
        if let Some(w) = g.watcher.take() {
            self.notices.push((w, id, PlacementGroupState::Removed));
        }
        if let Some(key) = &g.summary.name {
            self.names.remove(key);
        }
        for w in g.waiters.drain(..) {
            w(Err(removed_error(id)));
        }
        let seq = g.seq;
        self.waiting.remove(&seq);
        // Removed groups stay listed (as REMOVED), up to a bound.
        self.removed.push_back(seq);
        while self.removed.len() > REMOVED_KEPT {
            if let Some(old) = self.removed.pop_front() {
                if let Some(gone) = self.order.remove(&old) {
                    self.groups.remove(&gone);
                }
            }
        }
        Ok(true)
    }

    /// The group's creator is gone (its job ended): it hears of nothing more.
    pub(crate) fn unwatch(&mut self, id: PlacementGroupId) {
        if let Some(g) = self.groups.get_mut(&id) {
            g.watcher = None;
        }
    }

    /// The process at `addr` is gone: the groups it created tell it nothing more.
    pub(crate) fn unwatch_at(&mut self, addr: SocketAddr) {
        for g in self.groups.values_mut() {
            if g.watcher == Some(addr) {
                g.watcher = None;
            }
        }
        self.notices.retain(|(w, _, _)| *w != addr);
    }

    /// The state changes to tell creators since the last call, oldest first.
    pub(crate) fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Finds a named group.
    pub(crate) fn lookup(&self, namespace: &str, name: &str) -> Result<PgSummary, Error> {
        self.names
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|id| self.groups.get(id))
            .map(|g| g.summary.clone())
            .ok_or_else(|| Error::NotFound {
                kind: "placement group".into(),
                name: name.to_string(),
                namespace: namespace.to_string(),
            })
    }

    /// A node died: its bundles are lost; their groups go back to scheduling.
    pub(crate) fn node_dead(&mut self, node: NodeId) -> usize {
        let mut affected = 0;
        for (id, g) in self.groups.iter_mut() {
            if g.summary.state == PlacementGroupState::Removed {
                continue;
            }
            let mut lost = false;
            for n in g.summary.nodes.iter_mut() {
                if *n == Some(node) {
                    *n = None;
                    lost = true;
                }
            }
            if lost {
                affected += 1;
                if g.summary.state == PlacementGroupState::Created {
                    g.summary.state = PlacementGroupState::Rescheduling;
                    self.waiting.insert(g.seq);
                    if let Some(w) = g.watcher {
                        self.notices
                            .push((w, *id, PlacementGroupState::Rescheduling));
                    }
                }
            }
        }
        affected
    }

    /// The non-detached groups of a job.
    pub(crate) fn of_job(&self, job: JobId) -> Vec<PlacementGroupId> {
        self.order
            .values()
            .filter(|id| {
                self.groups.get(id).is_some_and(|g| {
                    g.summary.job == job
                        && !g.summary.detached
                        && g.summary.state != PlacementGroupState::Removed
                })
            })
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::bundles::PlacementStrategy;
    use crate::resources::{Amount, Resource, ResourceSet};

    fn create(t: &mut PgTable, name: Option<&str>) -> Result<PlacementGroupId, Error> {
        let id = PlacementGroupId::fresh();
        let mut b = ResourceSet::new();
        b.set(Resource::Cpu, Amount::units(1));
        t.create(CreatePlacementGroup {
            id,
            name: name.map(|n| ("ns".to_string(), n.to_string())),
            bundles: vec![b.clone(), b],
            strategy: PlacementStrategy::Pack,
            job: JobId(1 << 16),
            detached: false,
            watcher: None,
        })?;
        Ok(id)
    }

    #[test]
    fn names_are_unique_until_removed() {
        let mut t = PgTable::default();
        let a = create(&mut t, Some("g")).unwrap();
        assert!(create(&mut t, Some("g")).is_err());
        assert_eq!(t.lookup("ns", "g").unwrap().id, a);
        t.remove(a).unwrap();
        assert!(t.lookup("ns", "g").is_err());
        assert!(create(&mut t, Some("g")).is_ok());
    }

    #[test]
    fn rescheduling_groups_go_first_and_removed_ones_never() {
        let mut t = PgTable::default();
        let a = create(&mut t, None).unwrap();
        let b = create(&mut t, None).unwrap();
        let c = create(&mut t, None).unwrap();
        assert_eq!(t.to_schedule(), vec![a, b, c]);
        let node = NodeId(7 << 16);
        if let Some(g) = t.groups.get_mut(&c) {
            g.summary.nodes = vec![Some(node), Some(NodeId(8 << 16))];
        }
        t.mark_created(c);
        assert_eq!(t.to_schedule(), vec![a, b]);
        assert_eq!(t.node_dead(node), 1);
        assert_eq!(
            t.groups[&c].summary.state,
            PlacementGroupState::Rescheduling
        );
        assert_eq!(t.groups[&c].summary.nodes[0], None);
        assert_eq!(t.to_schedule(), vec![c, a, b]);
        t.remove(a).unwrap();
        assert_eq!(t.to_schedule(), vec![c, b]);
        assert_eq!(t.of_job(JobId(1 << 16)), vec![b, c]);
    }

    #[test]
    fn removed_groups_are_kept_up_to_a_bound_and_waiters_are_told() {
        let mut t = PgTable::default();
        let first = create(&mut t, None).unwrap();
        let (tx, rx) = flume::unbounded();
        t.when_ready(
            first,
            Box::new(move |r| {
                let _ = tx.send(r.is_ok());
            }),
        );
        t.remove(first).unwrap();
        assert_eq!(rx.try_recv(), Ok(false));
        for _ in 0..REMOVED_KEPT + 10 {
            let id = create(&mut t, None).unwrap();
            t.remove(id).unwrap();
        }
        let live = create(&mut t, None).unwrap();
        assert!(!t.groups.contains_key(&first));
        assert_eq!(t.groups.len(), REMOVED_KEPT + 1);
        assert_eq!(t.in_order().count(), REMOVED_KEPT + 1);
        assert_eq!(t.to_schedule(), vec![live]);
    }

    #[test]
    fn the_creator_hears_each_state_change_until_it_is_gone() {
        let mut t = PgTable::default();
        let creator: SocketAddr = "127.0.0.1:7100".parse().unwrap();
        let watched = PlacementGroupId::fresh();
        let mut b = ResourceSet::new();
        b.set(Resource::Cpu, Amount::units(1));
        t.create(CreatePlacementGroup {
            id: watched,
            name: None,
            bundles: vec![b],
            strategy: PlacementStrategy::Pack,
            job: JobId(1 << 16),
            detached: false,
            watcher: Some(creator),
        })
        .unwrap();
        let unwatched = create(&mut t, None).unwrap();
        assert!(t.take_notices().is_empty(), "nothing changed yet");
        let node = NodeId(7 << 16);
        for id in [watched, unwatched] {
            if let Some(g) = t.groups.get_mut(&id) {
                g.summary.nodes = vec![Some(node); g.summary.nodes.len()];
            }
            t.mark_created(id);
        }
        t.node_dead(node);
        t.mark_created(watched);
        t.remove(watched).unwrap();
        t.remove(watched).unwrap();
        use PlacementGroupState::*;
        assert_eq!(
            t.take_notices(),
            [Created, Rescheduling, Created, Removed].map(|s| (creator, watched, s))
        );
        assert!(t.take_notices().is_empty());

        // A creator that is gone hears nothing more, not even what was still to be sent.
        let again = PlacementGroupId::fresh();
        t.create(CreatePlacementGroup {
            id: again,
            name: None,
            bundles: Vec::new(),
            strategy: PlacementStrategy::Pack,
            job: JobId(1 << 16),
            detached: false,
            watcher: Some(creator),
        })
        .unwrap();
        t.mark_created(again);
        t.unwatch_at(creator);
        t.remove(again).unwrap();
        assert!(t.take_notices().is_empty());
    }

    #[test]
    fn when_ready_answers_at_once_for_created_and_unknown_groups() {
        let mut t = PgTable::default();
        let a = create(&mut t, None).unwrap();
        t.mark_created(a);
        let (tx, rx) = flume::unbounded();
        let tx2 = tx.clone();
        t.when_ready(
            a,
            Box::new(move |r| {
                let _ = tx.send(r.is_ok());
            }),
        );
        t.when_ready(
            PlacementGroupId::fresh(),
            Box::new(move |r| {
                let _ = tx2.send(r.is_ok());
            }),
        );
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![true, false]);
    }
}
