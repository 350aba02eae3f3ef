//! The actor directory: every actor's record, the name index, its restart policy, and who waits
//! for what.
//!
//! Generic over the address type `A` of a live actor so the rules (names unique per namespace,
//! `get_if_exists`, a dead actor's name freed for reuse, restarts up to `max_restarts`, watchers
//! told of each change exactly once, dead records bounded) are tested without starting actors.

use crate::error::Error;
use crate::ids::{ActorId, NodeId};
pub(crate) use crate::protocol::gcs::{ActorSummary, ActorUpdate, Registered};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How many dead actors the directory remembers (the oldest are forgotten first): a call on a
/// handle to a forgotten actor fails as "no such actor".
pub(crate) const DEAD_KEPT: usize = 10_000;

/// How long a watch on an actor the directory does not know waits for it to be registered: a
/// handle can reach another process (as a task's argument) before its creator's registration
/// reaches the GCS, over another connection. After that the actor is taken not to exist.
pub(crate) const UNKNOWN_GRACE: Duration = Duration::from_secs(10);

/// Most actors watched before they are known; watches beyond are answered "no such actor" at
/// once.
const UNKNOWN_KEPT: usize = 10_000;

#[derive(Clone, Debug)]
enum Lifecycle<A> {
    Pending,
    Alive {
        addr: A,
        incarnation: u32,
    },
    /// Its process died and it is being created again (after incarnation `last`).
    Restarting {
        last: u32,
    },
    Dead(Error),
}

struct Record<A> {
    class: String,
    /// Restarts allowed after its process dies (-1: unlimited).
    max_restarts: i32,
    /// Restarts used so far.
    restarts: u32,
    name: Option<(String, String)>,
    detached: bool,
    node: Option<NodeId>,
    state: Lifecycle<A>,
    watchers: Watchers<A>,
}

/// The table of actors.
pub(crate) struct ActorDirectory<A> {
    actors: HashMap<ActorId, Record<A>>,
    names: HashMap<(String, String), ActorId>,
    /// Dead actors, oldest first (bounded by [`DEAD_KEPT`]).
    dead: VecDeque<ActorId>,
    /// Watches of actors not registered (yet): since when, and the watchers.
    unknown: HashMap<ActorId, (Instant, Watchers<A>)>,
}

/// Who waits for an actor, each with the incarnation it already knows.
type Watchers<A> = Vec<(Option<u32>, flume::Sender<ActorUpdate<A>>)>;

impl<A> Default for ActorDirectory<A> {
    fn default() -> Self {
        ActorDirectory {
            actors: HashMap::new(),
            names: HashMap::new(),
            dead: VecDeque::new(),
            unknown: HashMap::new(),
        }
    }
}

/// The answer to a watch on an actor that does not exist.
fn no_such_actor<A>(actor_id: ActorId) -> ActorUpdate<A> {
    ActorUpdate::Dead(Error::ActorDied {
        actor: actor_id.to_string(),
        class: "unknown".into(),
        reason: "no such actor in this cluster".into(),
    })
}

/// Notifications to deliver: each sender with its update.
pub(crate) type Notices<A> = Vec<(flume::Sender<ActorUpdate<A>>, ActorUpdate<A>)>;

/// Whether an actor allowed `max_restarts` restarts (-1: unlimited) that used `used` may restart.
pub(crate) fn may_restart(max_restarts: i32, used: u32) -> bool {
    max_restarts < 0 || i64::from(used) < i64::from(max_restarts)
}

/// What becomes of an actor whose process or node died.
#[derive(Debug)]
pub(crate) enum Lost<A> {
    /// Create it again (restart number `attempt`); callers wait for the next incarnation.
    Restart { attempt: u32 },
    /// It is dead for good; these watchers must be told.
    Dead(Notices<A>),
}

/// A new actor's record, as [`ActorDirectory::register`] takes it.
#[derive(Clone, Debug)]
pub(crate) struct NewActor {
    pub(crate) class: String,
    /// (namespace, name), if it has a name.
    pub(crate) name: Option<(String, String)>,
    pub(crate) detached: bool,
    /// Return the existing actor of that name instead of failing.
    pub(crate) get_if_exists: bool,
    /// Restarts allowed after its process dies (-1: unlimited).
    pub(crate) max_restarts: i32,
}

impl<A: Clone> ActorDirectory<A> {
    /// Registers a new actor, claiming its name (namespace, name) if it has one.
    pub(crate) fn register(
        &mut self,
        actor_id: ActorId,
        new: NewActor,
    ) -> Result<Registered, Error> {
        let NewActor {
            class,
            name,
            detached,
            get_if_exists,
            max_restarts,
        } = new;
        if let Some(key) = &name {
            if let Some(existing) = self.names.get(key) {
                let rec = &self.actors[existing];
                if get_if_exists {
                    return Ok(Registered::Existing {
                        actor_id: *existing,
                        class: rec.class.clone(),
                    });
                }
                return Err(Error::invalid(format!(
                    "the actor name {:?} is already taken in namespace {:?} (by actor {existing}); \
                     pick another name, or use get_if_exists(true) to reuse that actor",
                    key.1, key.0
                )));
            }
            self.names.insert(key.clone(), actor_id);
        }
        self.actors.insert(
            actor_id,
            Record {
                class,
                max_restarts,
                restarts: 0,
                name,
                detached,
                node: None,
                state: Lifecycle::Pending,
                // Those who watched it before it was known wait on.
                watchers: self
                    .unknown
                    .remove(&actor_id)
                    .map(|(_, w)| w)
                    .unwrap_or_default(),
            },
        );
        Ok(Registered::New)
    }

    /// The actor's constructor finished on `node`.
    pub(crate) fn alive(&mut self, actor_id: ActorId, addr: A, node: NodeId) -> Notices<A> {
        let Some(rec) = self.actors.get_mut(&actor_id) else {
            return Vec::new();
        };
        let incarnation = match &rec.state {
            Lifecycle::Dead(_) => return Vec::new(),
            Lifecycle::Alive { incarnation, .. } => incarnation + 1,
            Lifecycle::Restarting { last } => last + 1,
            Lifecycle::Pending => 0,
        };
        rec.state = Lifecycle::Alive {
            addr: addr.clone(),
            incarnation,
        };
        rec.node = Some(node);
        let update = ActorUpdate::Alive { addr, incarnation };
        let mut out = Vec::new();
        rec.watchers.retain(|(after, tx)| {
            if after.is_some_and(|a| a >= incarnation) {
                return true;
            }
            out.push((tx.clone(), update.clone()));
            false
        });
        out
    }

    /// The actor's process (or node) died: it restarts if it was alive and its policy allows
    /// (callers then wait for the next incarnation), else it is dead for good with `error`.
    pub(crate) fn lost(&mut self, actor_id: ActorId, error: Error) -> Lost<A> {
        if let Some(rec) = self.actors.get_mut(&actor_id) {
            if let Lifecycle::Alive { incarnation, .. } = rec.state {
                if may_restart(rec.max_restarts, rec.restarts) {
                    rec.restarts += 1;
                    rec.state = Lifecycle::Restarting { last: incarnation };
                    rec.node = None;
                    return Lost::Restart {
                        attempt: rec.restarts,
                    };
                }
            }
        }
        Lost::Dead(self.dead(actor_id, error))
    }

    /// The actor died for good; its name is free again.
    pub(crate) fn dead(&mut self, actor_id: ActorId, error: Error) -> Notices<A> {
        let Some(rec) = self.actors.get_mut(&actor_id) else {
            return Vec::new();
        };
        if matches!(rec.state, Lifecycle::Dead(_)) {
            return Vec::new();
        }
        rec.state = Lifecycle::Dead(error.clone());
        if let Some(key) = &rec.name {
            if self.names.get(key) == Some(&actor_id) {
                self.names.remove(key);
            }
        }
        let notices = rec
            .watchers
            .drain(..)
            .map(|(_, tx)| (tx, ActorUpdate::Dead(error.clone())))
            .collect();
        self.dead.push_back(actor_id);
        while self.dead.len() > DEAD_KEPT {
            if let Some(old) = self.dead.pop_front() {
                self.actors.remove(&old);
            }
        }
        notices
    }

    /// Asks to be told when the actor is alive with an incarnation newer than `after` (or dead).
    /// Returns the update at once if it is already known. A watch on an actor not registered
    /// waits (from `now`) up to [`UNKNOWN_GRACE`] for its registration
    /// ([`expire_unknown`](Self::expire_unknown) ends it).
    pub(crate) fn watch(
        &mut self,
        actor_id: ActorId,
        after: Option<u32>,
        tx: flume::Sender<ActorUpdate<A>>,
        now: Instant,
    ) -> Option<ActorUpdate<A>> {
        let Some(rec) = self.actors.get_mut(&actor_id) else {
            if self.unknown.len() >= UNKNOWN_KEPT && !self.unknown.contains_key(&actor_id) {
                return Some(no_such_actor(actor_id));
            }
            let (_, watchers) = self
                .unknown
                .entry(actor_id)
                .or_insert_with(|| (now, Vec::new()));
            watchers.push((after, tx));
            return None;
        };
        match &rec.state {
            Lifecycle::Dead(e) => Some(ActorUpdate::Dead(e.clone())),
            Lifecycle::Alive { addr, incarnation } if after.is_none_or(|a| *incarnation > a) => {
                Some(ActorUpdate::Alive {
                    addr: addr.clone(),
                    incarnation: *incarnation,
                })
            }
            _ => {
                rec.watchers.push((after, tx));
                None
            }
        }
    }

    /// Finds a live (or pending) actor by name.
    /// Ends the watches on actors still unknown [`UNKNOWN_GRACE`] after the first: they do not
    /// exist (or were forgotten long after they died).
    pub(crate) fn expire_unknown(&mut self, now: Instant) -> Notices<A> {
        let over: Vec<ActorId> = self
            .unknown
            .iter()
            .filter(|(_, (since, _))| now.saturating_duration_since(*since) >= UNKNOWN_GRACE)
            .map(|(id, _)| *id)
            .collect();
        let mut notices = Vec::new();
        for id in over {
            if let Some((_, watchers)) = self.unknown.remove(&id) {
                notices.extend(watchers.into_iter().map(|(_, tx)| (tx, no_such_actor(id))));
            }
        }
        notices
    }

    pub(crate) fn lookup(&self, namespace: &str, name: &str) -> Result<(ActorId, String), Error> {
        self.names
            .get(&(namespace.to_string(), name.to_string()))
            .map(|id| (*id, self.actors[id].class.clone()))
            .ok_or_else(|| Error::NotFound {
                kind: "actor".into(),
                name: name.into(),
                namespace: namespace.into(),
            })
    }

    /// Whether dropping every handle should end the actor (unnamed and not detached).
    pub(crate) fn collectable(&self, actor_id: ActorId) -> bool {
        self.actors
            .get(&actor_id)
            .is_some_and(|r| r.name.is_none() && !r.detached)
    }

    pub(crate) fn node_of(&self, actor_id: ActorId) -> Option<NodeId> {
        self.actors.get(&actor_id).and_then(|r| r.node)
    }

    pub(crate) fn class_of(&self, actor_id: ActorId) -> Option<&str> {
        self.actors.get(&actor_id).map(|r| r.class.as_str())
    }

    /// The actors not dead that were placed on `node`.
    pub(crate) fn on_node(&self, node: NodeId) -> Vec<ActorId> {
        self.actors
            .iter()
            .filter(|(_, r)| r.node == Some(node) && !matches!(r.state, Lifecycle::Dead(_)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether the actor outlives its driver.
    pub(crate) fn is_detached(&self, actor_id: ActorId) -> bool {
        self.actors.get(&actor_id).is_some_and(|r| r.detached)
    }

    /// Records the node chosen for an actor before it is alive.
    pub(crate) fn placed(&mut self, actor_id: ActorId, node: NodeId) {
        if let Some(r) = self.actors.get_mut(&actor_id) {
            r.node = Some(node);
        }
    }

    pub(crate) fn list(&self) -> Vec<ActorSummary> {
        self.actors
            .iter()
            .map(|(id, r)| ActorSummary {
                actor_id: *id,
                class: r.class.clone(),
                name: r.name.as_ref().map(|n| n.1.clone()),
                namespace: r.name.as_ref().map(|n| n.0.clone()),
                state: match r.state {
                    Lifecycle::Pending => "PENDING_CREATION",
                    Lifecycle::Alive { .. } => "ALIVE",
                    Lifecycle::Restarting { .. } => "RESTARTING",
                    Lifecycle::Dead(_) => "DEAD",
                }
                .into(),
                node: r.node,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Option<(String, String)> {
        Some(("ns".into(), n.into()))
    }

    fn new(name: Option<(String, String)>, detached: bool, get_if_exists: bool) -> NewActor {
        NewActor {
            class: "C".into(),
            name,
            detached,
            get_if_exists,
            max_restarts: 0,
        }
    }

    #[test]
    fn names_are_unique_per_namespace_and_freed_on_death() {
        let mut d: ActorDirectory<u8> = ActorDirectory::default();
        let (a, b) = (ActorId::fresh(), ActorId::fresh());
        assert_eq!(
            d.register(a, new(name("x"), false, false)).unwrap(),
            Registered::New
        );
        let e = d.register(b, new(name("x"), false, false)).unwrap_err();
        assert!(e.to_string().contains("already taken"), "{e}");
        assert_eq!(
            d.register(b, new(name("x"), false, true)).unwrap(),
            Registered::Existing {
                actor_id: a,
                class: "C".into()
            }
        );
        // Another namespace is another name.
        let other = Some(("other".into(), "x".into()));
        assert_eq!(
            d.register(b, new(other, false, false)).unwrap(),
            Registered::New
        );
        assert_eq!(d.lookup("ns", "x").unwrap().0, a);
        d.dead(a, Error::invalid("gone"));
        assert!(matches!(d.lookup("ns", "x"), Err(Error::NotFound { .. })));
        let c = ActorId::fresh();
        assert_eq!(
            d.register(c, new(name("x"), false, false)).unwrap(),
            Registered::New
        );
    }

    #[test]
    fn watchers_hear_each_change_once() {
        let mut d: ActorDirectory<u8> = ActorDirectory::default();
        let a = ActorId::fresh();
        d.register(a, new(None, false, false)).unwrap();
        let (tx, rx) = flume::unbounded();
        assert!(d.watch(a, None, tx.clone(), Instant::now()).is_none());
        let notes = d.alive(a, 7, NodeId::fresh());
        assert_eq!(notes.len(), 1);
        for (tx, u) in notes {
            tx.send(u).unwrap();
        }
        assert!(matches!(
            rx.try_recv(),
            Ok(ActorUpdate::Alive {
                addr: 7,
                incarnation: 0
            })
        ));
        // Already alive: answered at once; watching for a newer incarnation waits.
        assert!(matches!(
            d.watch(a, None, tx.clone(), Instant::now()),
            Some(ActorUpdate::Alive { .. })
        ));
        assert!(d.watch(a, Some(0), tx.clone(), Instant::now()).is_none());
        let notes = d.dead(a, Error::invalid("killed"));
        assert_eq!(notes.len(), 1);
        assert!(d.dead(a, Error::invalid("again")).is_empty());
        assert!(matches!(
            d.watch(a, Some(5), tx, Instant::now()),
            Some(ActorUpdate::Dead(_))
        ));
    }

    #[test]
    fn a_watch_on_an_actor_not_yet_registered_waits_for_it_then_ends() {
        let mut d: ActorDirectory<u8> = ActorDirectory::default();
        let t0 = Instant::now();
        // Its handle reached a watcher before its creator's registration reached the directory.
        let early = ActorId::fresh();
        let (tx, rx) = flume::unbounded();
        assert!(d.watch(early, None, tx, t0).is_none());
        d.register(early, new(None, false, false)).unwrap();
        for (tx, u) in d.alive(early, 7, NodeId::fresh()) {
            tx.send(u).unwrap();
        }
        assert!(matches!(
            rx.try_recv(),
            Ok(ActorUpdate::Alive { addr: 7, .. })
        ));
        // One that never comes: "no such actor" once the grace is over, not before.
        let never = ActorId::fresh();
        let (tx, rx) = flume::unbounded();
        assert!(d.watch(never, None, tx, t0).is_none());
        assert!(d.expire_unknown(t0 + UNKNOWN_GRACE / 2).is_empty());
        let ended = d.expire_unknown(t0 + UNKNOWN_GRACE);
        assert_eq!(ended.len(), 1);
        for (tx, u) in ended {
            tx.send(u).unwrap();
        }
        match rx.try_recv() {
            Ok(ActorUpdate::Dead(e)) => assert!(e.to_string().contains("no such actor"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(d.unknown.is_empty());
    }

    #[test]
    fn only_unnamed_non_detached_actors_are_collected() {
        let mut d: ActorDirectory<u8> = ActorDirectory::default();
        let (a, b, c) = (ActorId::fresh(), ActorId::fresh(), ActorId::fresh());
        d.register(a, new(None, false, false)).unwrap();
        d.register(b, new(name("b"), false, false)).unwrap();
        d.register(c, new(None, true, false)).unwrap();
        assert!(d.collectable(a));
        assert!(!d.collectable(b));
        assert!(!d.collectable(c));
    }

    #[test]
    fn restart_policy() {
        assert!(!may_restart(0, 0));
        assert!(may_restart(2, 1));
        assert!(!may_restart(2, 2));
        assert!(may_restart(-1, 1_000_000));
    }

    #[test]
    fn a_lost_actor_restarts_while_its_budget_lasts_then_dies_and_frees_its_name() {
        let mut d: ActorDirectory<u8> = ActorDirectory::default();
        let a = ActorId::fresh();
        let mut spec = new(name("a"), false, false);
        spec.max_restarts = 1;
        d.register(a, spec).unwrap();
        // Lost before it was ever alive: nothing to restart.
        let b = ActorId::fresh();
        d.register(b, new(None, false, false)).unwrap();
        assert!(matches!(d.lost(b, Error::invalid("x")), Lost::Dead(_)));

        d.alive(a, 1, NodeId::fresh());
        assert!(matches!(
            d.lost(a, Error::invalid("node died")),
            Lost::Restart { attempt: 1 }
        ));
        assert_eq!(
            d.lookup("ns", "a").unwrap().0,
            a,
            "keeps its name while restarting"
        );
        let (tx, rx) = flume::unbounded();
        assert!(
            d.watch(a, Some(0), tx, Instant::now()).is_none(),
            "waits for incarnation 1"
        );
        for (tx, u) in d.alive(a, 2, NodeId::fresh()) {
            tx.send(u).unwrap();
        }
        assert!(matches!(
            rx.try_recv(),
            Ok(ActorUpdate::Alive {
                addr: 2,
                incarnation: 1
            })
        ));
        // The budget is spent: the next loss is death.
        assert!(matches!(d.lost(a, Error::invalid("again")), Lost::Dead(_)));
        assert!(d.lookup("ns", "a").is_err());
    }

    #[test]
    fn dead_records_are_bounded_oldest_first() {
        let mut d: ActorDirectory<u8> = ActorDirectory::default();
        let ids: Vec<ActorId> = (0..DEAD_KEPT + 3).map(|_| ActorId::fresh()).collect();
        for id in &ids {
            d.register(*id, new(None, false, false)).unwrap();
            d.dead(*id, Error::invalid("killed"));
        }
        assert_eq!(d.actors.len(), DEAD_KEPT);
        assert_eq!(d.dead.len(), DEAD_KEPT);
        // The oldest are forgotten: a call on them fails as "no such actor", after the grace
        // an unknown actor gets.
        let t0 = Instant::now();
        assert!(d.watch(ids[0], None, flume::unbounded().0, t0).is_none());
        match d.expire_unknown(t0 + UNKNOWN_GRACE).pop() {
            Some((_, ActorUpdate::Dead(e))) => {
                assert!(e.to_string().contains("no such actor"), "{e}")
            }
            other => panic!("{:?}", other.map(|(_, u)| u)),
        }
        // The newest are remembered with why they died.
        match d.watch(
            ids[DEAD_KEPT + 2],
            None,
            flume::unbounded().0,
            Instant::now(),
        ) {
            Some(ActorUpdate::Dead(e)) => assert!(e.to_string().contains("killed"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
