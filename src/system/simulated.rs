//! A simulated cluster for the GCS's pure cores: the node table ([`Membership`]), the actor
//! directory with its restart policy ([`ActorDirectory`]) and the placement policy, wired in
//! memory the way the `Gcs` actor wires them, with time advanced by hand and nodes killed by
//! silence or by a lost connection.

use super::actor_directory::{ActorDirectory, Lost, NewActor};
use super::membership::Membership;
use crate::error::Error;
use crate::ids::{ActorId, NodeId};
use crate::placement::policy::tests::cpus;
use crate::placement::policy::{pick_node, Placement};
use crate::placement::SchedulingStrategy;
use crate::protocol::gcs::ActorUpdate;
use crate::resources::ResourceSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The GCS's tables, driven as the actor drives them.
struct Gcs {
    nodes: Membership,
    actors: ActorDirectory<SocketAddr>,
    cursor: usize,
    /// What the shell would have sent, in order.
    log: Vec<String>,
}

fn node(i: u16) -> NodeId {
    NodeId(u128::from(i) << 16)
}

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000 + i))
}

impl Gcs {
    fn new(n: u16, now: Instant) -> Self {
        let mut nodes = Membership::new(TIMEOUT);
        for i in 1..=n {
            nodes.register(node(i), addr(i), cpus(4), now);
        }
        Gcs {
            nodes,
            actors: ActorDirectory::default(),
            cursor: 0,
            log: Vec::new(),
        }
    }

    /// Places an actor needing one CPU with the cluster's policy, as `schedule_actor` does.
    fn place(&mut self, actor: ActorId) -> NodeId {
        let views = self.nodes.views();
        match pick_node(
            &views,
            node(1),
            &cpus(1),
            &SchedulingStrategy::Spread,
            0,
            &mut self.cursor,
        ) {
            Placement::Node(n) => {
                self.actors.placed(actor, n);
                n
            }
            other => panic!("no node for {actor}: {other:?}"),
        }
    }

    /// The chosen node's raylet created the actor.
    fn start(&mut self, actor: ActorId) -> NodeId {
        let n = self.place(actor);
        let host = self.nodes.get(&n).map(|r| r.address).expect("a known node");
        for (tx, update) in self.actors.alive(actor, host, n) {
            let _ = tx.send(update);
        }
        n
    }

    /// A node died: each of its actors restarts elsewhere or dies (the `node_dead` handler).
    fn node_dead(&mut self, dead: NodeId, reason: &str) {
        for actor in self.actors.on_node(dead) {
            let error = Error::ActorDied {
                actor: actor.to_string(),
                class: "C".into(),
                reason: format!("its node {dead} died ({reason})"),
            };
            match self.actors.lost(actor, error) {
                Lost::Restart { attempt } => {
                    let at = self.start(actor);
                    self.log.push(format!("restart {actor} #{attempt} on {at}"));
                }
                Lost::Dead(notices) => {
                    for (tx, update) in notices {
                        let _ = tx.send(update);
                    }
                    self.log.push(format!("dead {actor}"));
                }
            }
        }
    }

    /// Time passes: live nodes `beating` report, the rest stay silent.
    fn advance(&mut self, now: Instant, beating: &[u16]) {
        for i in beating {
            self.nodes
                .heartbeat(node(*i), cpus(4), cpus(4), ResourceSet::new(), now);
        }
        for (dead, reason) in self.nodes.tick(now) {
            self.node_dead(dead, &reason);
        }
    }

    fn register(&mut self, name: &str, max_restarts: i32) -> ActorId {
        let id = ActorId::fresh();
        self.actors
            .register(
                id,
                NewActor {
                    class: "C".into(),
                    name: Some(("ns".into(), name.into())),
                    detached: false,
                    get_if_exists: false,
                    max_restarts,
                },
            )
            .expect("a free name");
        id
    }
}

#[test]
fn simulated_node_deaths_restart_actors_within_their_budget_and_never_onto_dead_nodes() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut gcs = Gcs::new(4, t0);
    let once = gcs.register("once", 1);
    let never = gcs.register("never", 0);
    let always = gcs.register("always", -1);
    // Spread: one actor per node, in node order.
    assert_eq!(gcs.start(once), node(1));
    assert_eq!(gcs.start(never), node(2));
    assert_eq!(gcs.start(always), node(3));
    let (tx, rx) = flume::unbounded();
    assert!(gcs.actors.watch(never, Some(0), tx, t0).is_none());

    // Nodes 1, 3 and 4 report every second; node 2 falls silent after t=1.
    for s in 1..=5 {
        let beating: &[u16] = if s == 1 { &[1, 2, 3, 4] } else { &[1, 3, 4] };
        gcs.advance(at(s), beating);
        assert!(gcs.log.is_empty(), "nobody dies before the timeout");
    }
    gcs.advance(at(7), &[1, 3, 4]);
    assert_eq!(gcs.log, vec![format!("dead {never}")]);
    assert!(
        matches!(rx.try_recv(), Ok(ActorUpdate::Dead(e)) if e.to_string().contains("no heartbeat")),
        "the watcher hears why"
    );
    assert!(
        gcs.actors.lookup("ns", "never").is_err(),
        "its name is free"
    );
    // A late heartbeat does not revive node 2.
    gcs.nodes
        .heartbeat(node(2), cpus(4), cpus(4), ResourceSet::new(), at(7));
    assert!(gcs.nodes.alive().all(|n| n.node_id != node(2)));

    // Node 1's connection is lost: `once` restarts on a live node, using its one restart.
    gcs.log.clear();
    assert!(gcs.nodes.mark_dead(node(1)));
    gcs.node_dead(node(1), "connection lost");
    let moved_to = gcs.actors.node_of(once).expect("placed again");
    assert!([node(3), node(4)].contains(&moved_to), "{moved_to}");
    assert_eq!(gcs.log, vec![format!("restart {once} #1 on {moved_to}")]);

    // The node `once` moved to dies too: its budget is spent, so it is dead. `always` (on
    // node 3) restarts however often its node dies, on whatever is left.
    gcs.log.clear();
    gcs.advance(at(8), &[3, 4]);
    let doomed = moved_to;
    let other = if doomed == node(3) { 4 } else { 3 };
    gcs.advance(at(14), &[other]);
    assert!(gcs.log.contains(&format!("dead {once}")), "{:?}", gcs.log);
    assert!(gcs.actors.lookup("ns", "once").is_err());
    assert_eq!(gcs.nodes.alive().count(), 1);
    assert_eq!(gcs.actors.node_of(always), Some(node(other)));
    assert!(gcs.actors.lookup("ns", "always").is_ok());
    // Every decision named a live node at the time it was made; none went to node 2 or 1.
    for line in &gcs.log {
        assert!(
            !line.contains(&node(2).to_string()) && !line.contains(&node(1).to_string()),
            "{line}"
        );
    }
}
