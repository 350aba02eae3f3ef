//! The node-selection policy: a pure function over a snapshot of the nodes.
//!
//! No actors, no clocks, no randomness of its own: the caller passes a random number and the
//! spread cursor, so every decision can be tested exactly.

use crate::ids::NodeId;
use crate::placement::SchedulingStrategy;
use crate::resources::{Resource, ResourceSet};

/// Nodes below this utilisation are packed (Ray's `scheduler_spread_threshold`).
pub(crate) const SPREAD_THRESHOLD: f64 = 0.5;
/// Fraction of nodes among which the hybrid policy picks at random (Ray's top-k).
const TOP_K_FRACTION: f64 = 0.2;

/// What the policy knows about one node.
#[derive(Clone, Debug)]
pub(crate) struct NodeView {
    pub(crate) id: NodeId,
    pub(crate) alive: bool,
    pub(crate) total: ResourceSet,
    pub(crate) available: ResourceSet,
    /// What waits there for resources (the sum of the queued requests).
    pub(crate) backlog: ResourceSet,
}

/// Counts a decision to send `req` to a node against what is known of it, until its next
/// report: taken from its `available` resources when they fit it, else added to its `backlog`.
/// A burst of decisions made between two reports thus spreads instead of landing on one node.
pub(crate) fn claim(available: &mut ResourceSet, backlog: &mut ResourceSet, req: &ResourceSet) {
    if available.checked_sub(req).is_none() {
        backlog.add(req);
    }
}

impl NodeView {
    pub(crate) fn feasible(&self, req: &ResourceSet) -> bool {
        self.alive && req.is_subset_of(&self.total)
    }

    pub(crate) fn available_for(&self, req: &ResourceSet) -> bool {
        self.alive && req.is_subset_of(&self.available)
    }

    /// Load of the node's most loaded resource: the share in use plus the share its backlog
    /// asks for (0: idle; above 1: work waits there).
    fn load(&self) -> f64 {
        self.total
            .iter()
            .filter(|(r, t)| t.as_f64() > 0.0 && !matches!(r, Resource::ObjectStoreMemory))
            .map(|(r, t)| {
                let used = t.as_f64() - self.available.get(r).as_f64();
                (used + self.backlog.get(r).as_f64()) / t.as_f64()
            })
            .fold(0.0, f64::max)
    }
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Run (or queue) on this node.
    Node(NodeId),
    /// No live node can ever fit the request: wait, reported as a demand.
    Infeasible,
    /// The strategy forbids every node that could fit: fail with this reason.
    Unschedulable(String),
}

/// Picks a node for `req` under `strategy`. `local` is the deciding raylet's node, `random` any
/// random number, `spread_cursor` the round-robin position kept by the caller.
pub(crate) fn pick_node(
    nodes: &[NodeView],
    local: NodeId,
    req: &ResourceSet,
    strategy: &SchedulingStrategy,
    random: u64,
    spread_cursor: &mut usize,
) -> Placement {
    match strategy {
        // A group's reserved resources are named for it: only its nodes can fit the request.
        SchedulingStrategy::Default | SchedulingStrategy::PlacementGroup { .. } => {
            hybrid(nodes, local, req, random)
        }
        SchedulingStrategy::Spread => spread(nodes, req, spread_cursor),
        SchedulingStrategy::NodeAffinity { node_id, soft } => {
            match nodes.iter().find(|n| n.id == *node_id) {
                Some(n) if n.feasible(req) => Placement::Node(n.id),
                _ if *soft => hybrid(nodes, local, req, random),
                Some(n) if !n.alive => {
                    Placement::Unschedulable(format!("node {node_id} (hard affinity) is dead"))
                }
                Some(_) => Placement::Unschedulable(format!(
                    "node {node_id} (hard affinity) can never fit {req:?}"
                )),
                None => Placement::Unschedulable(format!(
                    "node {node_id} (hard affinity) is not in the cluster"
                )),
            }
        }
    }
}

fn hybrid(nodes: &[NodeView], local: NodeId, req: &ResourceSet, random: u64) -> Placement {
    let feasible: Vec<&NodeView> = nodes.iter().filter(|n| n.feasible(req)).collect();
    if feasible.is_empty() {
        return Placement::Infeasible;
    }
    let score = |n: &NodeView| {
        let u = n.load();
        if u < SPREAD_THRESHOLD {
            0.0
        } else {
            u
        }
    };
    let mut available: Vec<&NodeView> = feasible
        .iter()
        .copied()
        .filter(|n| n.available_for(req))
        .collect();
    if available.is_empty() {
        // Every node that fits it is busy: queue it where the least work waits, counting what
        // is queued there, so a backed-up node spills to the others (the local node among
        // equals).
        let best = feasible
            .iter()
            .min_by(|a, b| {
                a.load()
                    .total_cmp(&b.load())
                    .then_with(|| (b.id == local).cmp(&(a.id == local)))
            })
            .map(|n| n.id);
        return best.map_or(Placement::Infeasible, Placement::Node);
    }
    if let Some(n) = available.iter().find(|n| n.id == local) {
        if score(n) == 0.0 {
            return Placement::Node(n.id);
        }
    }
    // Stable sort by score, local first among equals.
    available.sort_by(|a, b| {
        score(a)
            .total_cmp(&score(b))
            .then_with(|| (b.id == local).cmp(&(a.id == local)))
    });
    let best = score(available[0]);
    if best == 0.0 {
        // Pack: the first node under the threshold.
        return Placement::Node(available[0].id);
    }
    let k = ((nodes.len() as f64 * TOP_K_FRACTION).ceil() as usize).clamp(1, available.len());
    Placement::Node(available[(random % k as u64) as usize].id)
}

fn spread(nodes: &[NodeView], req: &ResourceSet, cursor: &mut usize) -> Placement {
    let n = nodes.len();
    if n == 0 {
        return Placement::Infeasible;
    }
    for pass in [true, false] {
        for step in 0..n {
            let i = (*cursor + step) % n;
            let node = &nodes[i];
            let ok = if pass {
                node.available_for(req)
            } else {
                node.feasible(req)
            };
            if ok {
                *cursor = i + 1;
                return Placement::Node(node.id);
            }
        }
    }
    Placement::Infeasible
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::resources::Amount;

    /// `{CPU: n}`.
    pub(crate) fn cpus(n: u64) -> ResourceSet {
        let mut s = ResourceSet::new();
        s.set(Resource::Cpu, Amount::units(n));
        s
    }

    /// A live node with `total` CPUs, `avail` of them free, nothing queued.
    pub(crate) fn node(i: u128, total: u64, avail: u64) -> NodeView {
        NodeView {
            id: NodeId(i),
            alive: true,
            total: cpus(total),
            available: cpus(avail),
            backlog: ResourceSet::new(),
        }
    }

    /// Where the default policy puts one CPU, deciding on node 1.
    fn pick_default(nodes: &[NodeView], random: u64) -> Placement {
        pick_node(
            nodes,
            NodeId(1),
            &cpus(1),
            &SchedulingStrategy::Default,
            random,
            &mut 0,
        )
    }

    #[test]
    fn hybrid_packs_local_until_half_then_spreads() {
        let nodes = vec![node(1, 4, 4), node(2, 4, 4)];
        assert_eq!(pick_default(&nodes, 7), Placement::Node(NodeId(1)));
        // Local at 75%: the other, idle node wins.
        let nodes = vec![node(1, 4, 1), node(2, 4, 4)];
        assert_eq!(pick_default(&nodes, 7), Placement::Node(NodeId(2)));
    }

    /// Places `n` one-CPU requests one after another, deciding on node 1, each counted against
    /// its node with [`claim`] as the schedulers do; returns how many went to each node.
    fn place_burst(nodes: &mut [NodeView], n: usize) -> Vec<usize> {
        let mut counts = vec![0; nodes.len()];
        for i in 0..n {
            let p = pick_default(nodes, i as u64);
            let Placement::Node(id) = p else {
                panic!("request {i}: {p:?}");
            };
            let k = nodes.iter().position(|v| v.id == id).expect("a known node");
            let v = &mut nodes[k];
            claim(&mut v.available, &mut v.backlog, &cpus(1));
            counts[k] += 1;
        }
        counts
    }

    #[test]
    fn a_backed_up_node_spills_to_the_others() {
        // Three idle one-CPU nodes: the first request packs the local node, the next two take
        // the idle ones, then the queued work is dealt out evenly instead of queuing locally.
        let mut nodes = vec![node(1, 1, 1), node(2, 1, 1), node(3, 1, 1)];
        assert_eq!(place_burst(&mut nodes, 99), vec![33, 33, 33]);
        // A node whose queue is already long gets nothing until the others catch up.
        let mut nodes = vec![node(1, 2, 0), node(2, 2, 0)];
        nodes[0].backlog = cpus(6);
        assert_eq!(place_burst(&mut nodes, 6), vec![0, 6]);
        assert_eq!(place_burst(&mut nodes, 4), vec![2, 2]);
    }

    #[test]
    fn hybrid_counts_the_backlog_before_packing_locally() {
        // Free CPUs but a queue of bigger requests: the local node is over the threshold.
        let mut local = node(1, 4, 3);
        local.backlog = cpus(4);
        let nodes = vec![local, node(2, 4, 4)];
        assert_eq!(pick_default(&nodes, 0), Placement::Node(NodeId(2)));
    }

    #[test]
    fn infeasible_and_busy() {
        let nodes = vec![node(1, 2, 0)];
        let mut c = 0;
        let d = SchedulingStrategy::Default;
        assert_eq!(
            pick_node(&nodes, NodeId(1), &cpus(3), &d, 0, &mut c),
            Placement::Infeasible
        );
        assert_eq!(
            pick_node(&nodes, NodeId(1), &cpus(1), &d, 0, &mut c),
            Placement::Node(NodeId(1))
        );
    }

    #[test]
    fn spread_round_robins() {
        let nodes = vec![node(1, 4, 4), node(2, 4, 4), node(3, 4, 4)];
        let mut c = 0;
        let s = SchedulingStrategy::Spread;
        let picks: Vec<_> = (0..6)
            .map(|_| pick_node(&nodes, NodeId(1), &cpus(1), &s, 0, &mut c))
            .collect();
        let ids: Vec<u128> = picks
            .iter()
            .map(|p| match p {
                Placement::Node(n) => n.0,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, vec![1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn node_affinity_hard_and_soft() {
        let mut dead = node(2, 4, 4);
        dead.alive = false;
        let nodes = vec![node(1, 4, 4), dead];
        let mut c = 0;
        let hard = SchedulingStrategy::NodeAffinity {
            node_id: NodeId(2),
            soft: false,
        };
        assert!(matches!(
            pick_node(&nodes, NodeId(1), &cpus(1), &hard, 0, &mut c),
            Placement::Unschedulable(r) if r.contains("dead")
        ));
        let soft = SchedulingStrategy::NodeAffinity {
            node_id: NodeId(2),
            soft: true,
        };
        assert_eq!(
            pick_node(&nodes, NodeId(1), &cpus(1), &soft, 0, &mut c),
            Placement::Node(NodeId(1))
        );
        let missing = SchedulingStrategy::NodeAffinity {
            node_id: NodeId(9),
            soft: false,
        };
        assert!(matches!(
            pick_node(&nodes, NodeId(1), &cpus(1), &missing, 0, &mut c),
            Placement::Unschedulable(_)
        ));
        let too_big = SchedulingStrategy::NodeAffinity {
            node_id: NodeId(1),
            soft: false,
        };
        assert!(matches!(
            pick_node(&nodes, NodeId(1), &cpus(8), &too_big, 0, &mut c),
            Placement::Unschedulable(r) if r.contains("never fit")
        ));
    }
}
