//! The two-phase reservation of a placement group's bundles: a pure state machine.
//!
//! A round reserves some bundles on some nodes. Phase one asks every node of the round, at once,
//! to prepare its bundles (set their resources aside, all or none); when every node has
//! answered, either all prepared and phase two asks each to commit (the bundles become the
//! group's resources), or some refused and every node that did prepare is told to cancel. A
//! commit that fails rolls the whole round back: every node of the round cancels what it holds
//! of it. So a group is reserved whole or not at all, and nothing stays held after a failure.
//! A round with a single node prepares and commits in one step.
//!
//! The machine takes the nodes' answers as events and returns the messages to send as
//! [`Action`]s; it does no IO.

use crate::ids::{NodeId, PlacementGroupId};
use crate::resources::ResourceSet;
use std::collections::BTreeMap;

/// Something the GCS must send, or the round's end.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    /// Ask `node` to set `bundles` aside (and, with `commit`, commit them at once).
    Prepare {
        node: NodeId,
        bundles: Vec<(u32, ResourceSet)>,
        commit: bool,
    },
    /// Ask `node` to commit what it prepared for the group.
    Commit { node: NodeId },
    /// Tell `node` to give back these bundles of the group.
    Cancel { node: NodeId, indices: Vec<u32> },
    /// The round ended: `true` if every bundle of it is reserved.
    Done(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeState {
    Preparing,
    Prepared,
    Refused,
    Committing,
    Committed,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Prepare,
    Commit,
    Over,
}

/// One reservation round of a group.
#[derive(Debug)]
pub(crate) struct Round {
    group: PlacementGroupId,
    nodes: BTreeMap<NodeId, (Vec<(u32, ResourceSet)>, NodeState)>,
    phase: Phase,
}

impl Round {
    /// A round reserving, on each node, the bundles (by index) given for it.
    pub(crate) fn new(
        group: PlacementGroupId,
        plan: Vec<(NodeId, Vec<(u32, ResourceSet)>)>,
    ) -> Self {
        Round {
            group,
            nodes: plan
                .into_iter()
                .map(|(n, b)| (n, (b, NodeState::Preparing)))
                .collect(),
            phase: Phase::Prepare,
        }
    }

    /// The group reserved.
    pub(crate) fn group(&self) -> PlacementGroupId {
        self.group
    }

    /// Phase one: a prepare for every node (committing at once when there is only one).
    pub(crate) fn start(&mut self) -> Vec<Action> {
        let single = self.nodes.len() == 1;
        if self.nodes.is_empty() {
            self.phase = Phase::Over;
            return vec![Action::Done(true)];
        }
        self.nodes
            .iter()
            .map(|(n, (b, _))| Action::Prepare {
                node: *n,
                bundles: b.clone(),
                commit: single,
            })
            .collect()
    }

    fn indices(&self, node: NodeId) -> Vec<u32> {
        self.nodes
            .get(&node)
            .map(|(b, _)| b.iter().map(|(i, _)| *i).collect())
            .unwrap_or_default()
    }

    fn all(&self, pred: impl Fn(NodeState) -> bool) -> bool {
        self.nodes.values().all(|(_, s)| pred(*s))
    }

    /// Cancels what every node of the round may hold, and ends the round failed.
    fn roll_back(&mut self, holding: impl Fn(NodeState) -> bool) -> Vec<Action> {
        self.phase = Phase::Over;
        let mut out: Vec<Action> = self
            .nodes
            .iter()
            .filter(|(_, (_, s))| holding(*s))
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .into_iter()
            .map(|n| Action::Cancel {
                node: n,
                indices: self.indices(n),
            })
            .collect();
        out.push(Action::Done(false));
        out
    }

    /// `node` answered its prepare (`ok`: it holds the bundles; with a single node, committed).
    pub(crate) fn prepared(&mut self, node: NodeId, ok: bool) -> Vec<Action> {
        if self.phase != Phase::Prepare {
            return Vec::new();
        }
        let single = self.nodes.len() == 1;
        match self.nodes.get_mut(&node) {
            Some((_, s)) if *s == NodeState::Preparing => {
                *s = if ok {
                    NodeState::Prepared
                } else {
                    NodeState::Refused
                }
            }
            _ => return Vec::new(),
        }
        if single {
            self.phase = Phase::Over;
            return vec![Action::Done(ok)];
        }
        if !self.all(|s| s != NodeState::Preparing) {
            return Vec::new();
        }
        if self.all(|s| s == NodeState::Prepared) {
            self.phase = Phase::Commit;
            let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
            for (_, s) in self.nodes.values_mut() {
                *s = NodeState::Committing;
            }
            return nodes
                .into_iter()
                .map(|node| Action::Commit { node })
                .collect();
        }
        // Someone refused: those that prepared give their bundles back.
        self.roll_back(|s| s == NodeState::Prepared)
    }

    /// `node` answered its commit.
    pub(crate) fn committed(&mut self, node: NodeId, ok: bool) -> Vec<Action> {
        if self.phase != Phase::Commit {
            return Vec::new();
        }
        match self.nodes.get_mut(&node) {
            Some((_, s)) if *s == NodeState::Committing => {
                *s = if ok {
                    NodeState::Committed
                } else {
                    NodeState::Failed
                }
            }
            _ => return Vec::new(),
        }
        if !ok {
            // All or nothing: every node of the round gives back what it holds of it, whether
            // its own commit is done, pending, or failed half-way.
            return self.roll_back(|_| true);
        }
        if self.all(|s| s == NodeState::Committed) {
            self.phase = Phase::Over;
            return vec![Action::Done(true)];
        }
        Vec::new()
    }

    /// Whether the round is over.
    #[cfg(test)]
    pub(crate) fn is_over(&self) -> bool {
        self.phase == Phase::Over
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::policy::tests::cpus;
    use crate::resources::NodeResources;
    use std::collections::HashMap;

    fn n(i: u128) -> NodeId {
        NodeId(i << 16)
    }

    fn plan(nodes: &[u128]) -> Vec<(NodeId, Vec<(u32, ResourceSet)>)> {
        nodes
            .iter()
            .enumerate()
            .map(|(k, i)| (n(*i), vec![(k as u32, cpus(1))]))
            .collect()
    }

    #[test]
    fn one_node_prepares_and_commits_in_one_step() {
        let mut r = Round::new(PlacementGroupId::fresh(), plan(&[1]));
        assert_eq!(
            r.start(),
            vec![Action::Prepare {
                node: n(1),
                bundles: vec![(0, cpus(1))],
                commit: true
            }]
        );
        assert_eq!(r.prepared(n(1), true), vec![Action::Done(true)]);
        assert!(r.is_over());
    }

    #[test]
    fn a_refusal_cancels_every_node_that_prepared() {
        let mut r = Round::new(PlacementGroupId::fresh(), plan(&[1, 2, 3]));
        assert_eq!(r.start().len(), 3);
        assert!(r.prepared(n(1), true).is_empty());
        assert!(r.prepared(n(2), false).is_empty(), "waits for every answer");
        let out = r.prepared(n(3), true);
        assert_eq!(
            out,
            vec![
                Action::Cancel {
                    node: n(1),
                    indices: vec![0]
                },
                Action::Cancel {
                    node: n(3),
                    indices: vec![2]
                },
                Action::Done(false)
            ]
        );
        assert!(
            r.committed(n(1), true).is_empty(),
            "late answers change nothing"
        );
    }

    #[test]
    fn a_failed_commit_rolls_back_every_node_of_the_round() {
        let mut r = Round::new(PlacementGroupId::fresh(), plan(&[1, 2]));
        r.start();
        r.prepared(n(1), true);
        assert_eq!(
            r.prepared(n(2), true),
            vec![Action::Commit { node: n(1) }, Action::Commit { node: n(2) }]
        );
        assert!(r.committed(n(1), true).is_empty());
        let out = r.committed(n(2), false);
        assert_eq!(
            out,
            vec![
                Action::Cancel {
                    node: n(1),
                    indices: vec![0]
                },
                Action::Cancel {
                    node: n(2),
                    indices: vec![1]
                },
                Action::Done(false)
            ]
        );
        assert!(r.is_over());
    }

    /// Raylets as resource tables, the round's messages delivered by hand; node 2's commit
    /// fails (its raylet lost the bundle, say). Nothing may stay held anywhere.
    #[test]
    fn simulated_commit_failure_on_one_node_leaves_nothing_held() {
        let mut raylets: HashMap<NodeId, (NodeResources, Vec<crate::resources::Grant>)> = [1, 2, 3]
            .iter()
            .map(|i| (n(*i), (NodeResources::new(cpus(2)), Vec::new())))
            .collect();
        let mut r = Round::new(PlacementGroupId::fresh(), plan(&[1, 2, 3]));
        let mut queue = r.start();
        let mut done = None;
        while let Some(action) = queue.pop() {
            match action {
                Action::Prepare { node, bundles, .. } => {
                    let (res, held) = raylets.get_mut(&node).unwrap();
                    let ok = bundles.iter().all(|(_, b)| match res.try_acquire(b) {
                        Some(g) => {
                            held.push(g);
                            true
                        }
                        None => false,
                    });
                    queue.extend(r.prepared(node, ok));
                }
                Action::Commit { node } => queue.extend(r.committed(node, node != n(2))),
                Action::Cancel { node, .. } => {
                    let (res, held) = raylets.get_mut(&node).unwrap();
                    for g in held.drain(..) {
                        res.release(&g);
                    }
                }
                Action::Done(ok) => done = Some(ok),
            }
        }
        assert_eq!(done, Some(false));
        for (node, (res, held)) in &raylets {
            assert!(held.is_empty(), "node {node} still holds a bundle");
            assert_eq!(res.available(), &cpus(2), "node {node}");
        }
    }
}
