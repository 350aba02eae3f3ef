//! Placing a placement group's bundles on nodes: the pure policy of the four strategies.
//!
//! Given the nodes (total and available resources) and the bundles, pick a node for each bundle
//! or say why none can be picked now: `Unavailable` (it could fit once resources free up or a
//! node joins) or `Infeasible` (some bundle fits no node even when idle). Reservation itself
//! (prepare, commit, roll back) is the GCS's and the raylets' business.

use crate::ids::NodeId;
use crate::placement::policy::NodeView;
use crate::resources::ResourceSet;
use serde::{Deserialize, Serialize};

/// How a placement group's bundles spread over nodes (Ray's four strategies).
///
/// # Examples
/// ```
/// assert_eq!(lumen::PlacementStrategy::default(), lumen::PlacementStrategy::Pack);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlacementStrategy {
    /// As few nodes as possible; one if it fits (the default).
    #[default]
    Pack,
    /// Different nodes where possible.
    Spread,
    /// All bundles on one node, or the group waits.
    StrictPack,
    /// Each bundle on its own node, or the group waits.
    StrictSpread,
}

impl PlacementStrategy {
    /// Ray's name for the strategy: `PACK`, `SPREAD`, `STRICT_PACK`, `STRICT_SPREAD`.
    pub fn name(&self) -> &'static str {
        match self {
            PlacementStrategy::Pack => "PACK",
            PlacementStrategy::Spread => "SPREAD",
            PlacementStrategy::StrictPack => "STRICT_PACK",
            PlacementStrategy::StrictSpread => "STRICT_SPREAD",
        }
    }
}

/// Why bundles could not be placed now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NotPlaced {
    /// Not now: resources are in use, or not enough nodes (yet).
    Unavailable,
    /// A bundle fits no node even when idle (or strict constraints can never be met by the
    /// nodes there are).
    Infeasible,
}

/// Picks a node for each of `bundles` (by index), honouring `strategy`. `avoid` are nodes that
/// must not be used (for STRICT_SPREAD re-placement: nodes holding the group's other bundles)
/// and `prefer` nodes to use first (PACK re-placement: where the group already is).
pub(crate) fn place(
    nodes: &[NodeView],
    bundles: &[ResourceSet],
    strategy: PlacementStrategy,
    avoid: &[NodeId],
    prefer: &[NodeId],
) -> Result<Vec<NodeId>, NotPlaced> {
    let live: Vec<&NodeView> = nodes.iter().filter(|n| n.alive).collect();
    // Infeasible: some bundle fits no node even idle.
    if bundles
        .iter()
        .any(|b| !live.iter().any(|n| b.is_subset_of(&n.total)))
    {
        return Err(NotPlaced::Infeasible);
    }
    let mut avail: Vec<(NodeId, ResourceSet)> =
        live.iter().map(|n| (n.id, n.available.clone())).collect();
    match strategy {
        PlacementStrategy::StrictPack => {
            let mut sum = ResourceSet::new();
            for b in bundles {
                sum.add(b);
            }
            if !live.iter().any(|n| sum.is_subset_of(&n.total)) {
                return Err(NotPlaced::Infeasible);
            }
            let mut order: Vec<usize> = (0..avail.len()).collect();
            order.sort_by_key(|&i| !prefer.contains(&avail[i].0));
            order
                .into_iter()
                .find(|&i| sum.is_subset_of(&avail[i].1))
                .map(|i| vec![avail[i].0; bundles.len()])
                .ok_or(NotPlaced::Unavailable)
        }
        PlacementStrategy::StrictSpread => {
            let candidates = live.iter().filter(|n| !avoid.contains(&n.id)).count();
            if candidates < bundles.len() {
                // Not enough nodes for one bundle each: wait for more to join.
                return Err(NotPlaced::Unavailable);
            }
            let mut used: Vec<NodeId> = avoid.to_vec();
            let mut out = Vec::with_capacity(bundles.len());
            for b in bundles {
                let pick = avail
                    .iter_mut()
                    .filter(|(id, _)| !used.contains(id))
                    .find(|(_, a)| b.is_subset_of(a));
                match pick {
                    Some((id, a)) => {
                        let _ = a.checked_sub(b);
                        used.push(*id);
                        out.push(*id);
                    }
                    None => return Err(NotPlaced::Unavailable),
                }
            }
            Ok(out)
        }
        PlacementStrategy::Pack => {
            // One node if the whole group fits on one, else fill nodes in order of preference.
            let mut sum = ResourceSet::new();
            for b in bundles {
                sum.add(b);
            }
            let mut order: Vec<usize> = (0..avail.len()).collect();
            order.sort_by_key(|&i| !prefer.contains(&avail[i].0));
            if let Some(&i) = order.iter().find(|&&i| sum.is_subset_of(&avail[i].1)) {
                return Ok(vec![avail[i].0; bundles.len()]);
            }
            let mut out = Vec::with_capacity(bundles.len());
            let mut used: Vec<NodeId> = prefer.to_vec();
            for b in bundles {
                // Nodes already used first (fewest nodes), then the rest.
                let mut idx: Vec<usize> = (0..avail.len()).collect();
                idx.sort_by_key(|&i| !used.contains(&avail[i].0));
                let Some(i) = idx.into_iter().find(|&i| b.is_subset_of(&avail[i].1)) else {
                    return Err(NotPlaced::Unavailable);
                };
                let _ = avail[i].1.checked_sub(b);
                if !used.contains(&avail[i].0) {
                    used.push(avail[i].0);
                }
                out.push(avail[i].0);
            }
            Ok(out)
        }
        PlacementStrategy::Spread => {
            // Unused nodes first, round-robin; reuse a node only when no unused one fits.
            let mut used: Vec<NodeId> = avoid.to_vec();
            let mut out = Vec::with_capacity(bundles.len());
            for b in bundles {
                let mut idx: Vec<usize> = (0..avail.len()).collect();
                idx.sort_by_key(|&i| used.iter().filter(|u| **u == avail[i].0).count());
                let Some(i) = idx.into_iter().find(|&i| b.is_subset_of(&avail[i].1)) else {
                    return Err(NotPlaced::Unavailable);
                };
                let _ = avail[i].1.checked_sub(b);
                used.push(avail[i].0);
                out.push(avail[i].0);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::policy::tests::{cpus, node};
    use crate::resources::Resource;

    fn distinct(v: &[NodeId]) -> usize {
        let mut v = v.to_vec();
        v.sort();
        v.dedup();
        v.len()
    }

    #[test]
    fn pack_uses_one_node_when_it_fits_else_fewest() {
        let nodes = vec![node(1, 4, 4), node(2, 4, 4)];
        let b = vec![cpus(1), cpus(1), cpus(1)];
        let p = place(&nodes, &b, PlacementStrategy::Pack, &[], &[]).unwrap();
        assert_eq!(distinct(&p), 1);
        let b = vec![cpus(3), cpus(3)];
        let p = place(&nodes, &b, PlacementStrategy::Pack, &[], &[]).unwrap();
        assert_eq!(distinct(&p), 2);
        let b = vec![cpus(3), cpus(3), cpus(3)];
        assert_eq!(
            place(&nodes, &b, PlacementStrategy::Pack, &[], &[]),
            Err(NotPlaced::Unavailable)
        );
    }

    #[test]
    fn spread_prefers_distinct_nodes_but_may_share() {
        let nodes = vec![node(1, 4, 4), node(2, 4, 4)];
        let p = place(
            &nodes,
            &[cpus(1), cpus(1)],
            PlacementStrategy::Spread,
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(distinct(&p), 2);
        let p = place(
            &nodes,
            &[cpus(1), cpus(1), cpus(1)],
            PlacementStrategy::Spread,
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(distinct(&p), 2);
    }

    #[test]
    fn strict_pack_needs_one_node() {
        let nodes = vec![node(1, 2, 2), node(2, 2, 2)];
        assert_eq!(
            place(
                &nodes,
                &[cpus(2), cpus(1)],
                PlacementStrategy::StrictPack,
                &[],
                &[]
            ),
            Err(NotPlaced::Infeasible)
        );
        let p = place(
            &nodes,
            &[cpus(1), cpus(1)],
            PlacementStrategy::StrictPack,
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(distinct(&p), 1);
        let busy = vec![node(1, 2, 1), node(2, 2, 1)];
        assert_eq!(
            place(
                &busy,
                &[cpus(1), cpus(1)],
                PlacementStrategy::StrictPack,
                &[],
                &[]
            ),
            Err(NotPlaced::Unavailable)
        );
    }

    #[test]
    fn strict_spread_needs_a_node_per_bundle() {
        let nodes = vec![node(1, 4, 4), node(2, 4, 4)];
        let p = place(
            &nodes,
            &[cpus(1), cpus(1)],
            PlacementStrategy::StrictSpread,
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(distinct(&p), 2);
        assert_eq!(
            place(
                &nodes,
                &[cpus(1), cpus(1), cpus(1)],
                PlacementStrategy::StrictSpread,
                &[],
                &[]
            ),
            Err(NotPlaced::Unavailable)
        );
        // Re-placing one bundle away from the node holding the other.
        let p = place(
            &nodes,
            &[cpus(1)],
            PlacementStrategy::StrictSpread,
            &[NodeId(1)],
            &[],
        )
        .unwrap();
        assert_eq!(p, vec![NodeId(2)]);
    }

    #[test]
    fn a_bundle_no_node_can_hold_is_infeasible() {
        let nodes = vec![node(1, 2, 2)];
        for s in [
            PlacementStrategy::Pack,
            PlacementStrategy::Spread,
            PlacementStrategy::StrictPack,
            PlacementStrategy::StrictSpread,
        ] {
            assert_eq!(
                place(&nodes, &[cpus(1), cpus(3)], s, &[], &[]),
                Err(NotPlaced::Infeasible)
            );
        }
        assert_eq!(
            place(&[], &[cpus(1)], PlacementStrategy::Pack, &[], &[]),
            Err(NotPlaced::Infeasible)
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever is placed fits: per node, the bundles assigned never exceed what was
            /// available, and strict strategies keep their promise.
            #[test]
            fn placements_fit_and_keep_strict_promises(
                avail in proptest::collection::vec(0u64..6, 1..5),
                sizes in proptest::collection::vec(1u64..4, 1..5),
                s in 0usize..4,
            ) {
                let nodes: Vec<NodeView> = avail
                    .iter()
                    .enumerate()
                    .map(|(i, a)| node(i as u128 + 1, 5, *a.min(&5)))
                    .collect();
                let bundles: Vec<ResourceSet> = sizes.iter().map(|n| cpus(*n)).collect();
                let strategy = [
                    PlacementStrategy::Pack,
                    PlacementStrategy::Spread,
                    PlacementStrategy::StrictPack,
                    PlacementStrategy::StrictSpread,
                ][s];
                if let Ok(p) = place(&nodes, &bundles, strategy, &[], &[]) {
                    prop_assert_eq!(p.len(), bundles.len());
                    for n in &nodes {
                        let used: u64 = p
                            .iter()
                            .zip(&sizes)
                            .filter(|(id, _)| **id == n.id)
                            .map(|(_, s)| *s)
                            .sum();
                        prop_assert!(used <= n.available.get(&Resource::Cpu).whole_units());
                    }
                    match strategy {
                        PlacementStrategy::StrictPack => prop_assert_eq!(distinct(&p), 1),
                        PlacementStrategy::StrictSpread => {
                            prop_assert_eq!(distinct(&p), bundles.len())
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}
