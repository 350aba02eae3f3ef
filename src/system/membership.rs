//! The node table: which nodes are in the cluster, what they have, and which are alive.
//!
//! A pure state machine (time is passed in): nodes register, report their resources with each
//! heartbeat, and are declared dead when silent for longer than the node timeout or when the
//! connection to them is lost. Deaths are reported once.

use crate::ids::NodeId;
use crate::placement::policy::NodeView;
use crate::protocol::gcs::NodeEntry;
use crate::protocol::raylet::ViewEntry;
use crate::resources::ResourceSet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the GCS knows of a node.
#[derive(Clone, Debug)]
pub(crate) struct NodeRecord {
    pub(crate) node_id: NodeId,
    /// The node's process (where its raylet is reached).
    pub(crate) address: SocketAddr,
    pub(crate) alive: bool,
    pub(crate) total: ResourceSet,
    /// Last reported available resources (the total until the first report), adjusted by the
    /// GCS's own decisions until the next report.
    pub(crate) available: ResourceSet,
    /// What waits there for resources, as last reported, adjusted the same way.
    pub(crate) backlog: ResourceSet,
    last_seen: Instant,
}

/// The node table (see the module docs).
#[derive(Debug)]
pub(crate) struct Membership {
    nodes: BTreeMap<NodeId, NodeRecord>,
    /// A node silent for this long is dead.
    node_timeout: Duration,
}

impl Membership {
    pub(crate) fn new(node_timeout: Duration) -> Self {
        Membership {
            nodes: BTreeMap::new(),
            node_timeout,
        }
    }

    /// A node joins (or rejoins with the same id).
    pub(crate) fn register(
        &mut self,
        node_id: NodeId,
        address: SocketAddr,
        total: ResourceSet,
        now: Instant,
    ) {
        self.nodes.insert(
            node_id,
            NodeRecord {
                node_id,
                address,
                alive: true,
                available: total.clone(),
                backlog: ResourceSet::new(),
                total,
                last_seen: now,
            },
        );
    }

    /// A node reports it is alive with these resources. Reports of dead or unknown nodes are
    /// ignored (a node declared dead stays dead).
    pub(crate) fn heartbeat(
        &mut self,
        node_id: NodeId,
        available: ResourceSet,
        total: ResourceSet,
        backlog: ResourceSet,
        now: Instant,
    ) {
        if let Some(n) = self.nodes.get_mut(&node_id).filter(|n| n.alive) {
            n.last_seen = now;
            n.available = available;
            n.total = total;
            n.backlog = backlog;
        }
    }

    /// The live nodes silent for longer than the node timeout at `now`: marked dead, returned
    /// with why.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<(NodeId, String)> {
        let timeout = self.node_timeout;
        let silent: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.alive && now.saturating_duration_since(n.last_seen) > timeout)
            .map(|n| n.node_id)
            .collect();
        silent
            .into_iter()
            .filter(|id| self.mark_dead(*id))
            .map(|id| {
                (
                    id,
                    format!("no heartbeat for {:.1} s", timeout.as_secs_f64()),
                )
            })
            .collect()
    }

    /// The live node whose process is at `address`, if any (its connection was lost).
    pub(crate) fn at(&self, address: SocketAddr) -> Option<NodeId> {
        self.nodes
            .values()
            .find(|n| n.alive && n.address == address)
            .map(|n| n.node_id)
    }

    /// Marks a node dead; whether it was alive.
    pub(crate) fn mark_dead(&mut self, node_id: NodeId) -> bool {
        match self.nodes.get_mut(&node_id) {
            Some(n) if n.alive => {
                n.alive = false;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn get(&self, node_id: &NodeId) -> Option<&NodeRecord> {
        self.nodes.get(node_id)
    }

    pub(crate) fn get_mut(&mut self, node_id: &NodeId) -> Option<&mut NodeRecord> {
        self.nodes.get_mut(node_id)
    }

    /// The live nodes.
    pub(crate) fn alive(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values().filter(|n| n.alive)
    }

    /// Every node as the placement policy sees it, by id.
    pub(crate) fn views(&self) -> Vec<NodeView> {
        self.nodes
            .values()
            .map(|n| NodeView {
                id: n.node_id,
                alive: n.alive,
                total: n.total.clone(),
                available: n.available.clone(),
                backlog: n.backlog.clone(),
            })
            .collect()
    }

    /// Every node as raylets see it.
    pub(crate) fn view_entries(&self) -> Vec<ViewEntry> {
        self.nodes
            .values()
            .map(|n| ViewEntry {
                node_id: n.node_id,
                address: n.address,
                alive: n.alive,
                total: n.total.clone(),
                available: n.available.clone(),
                backlog: n.backlog.clone(),
            })
            .collect()
    }

    /// Every node as `GetNodes` reports it, by id.
    pub(crate) fn entries(&self) -> Vec<NodeEntry> {
        self.nodes
            .values()
            .map(|n| NodeEntry {
                node_id: n.node_id,
                address: n.address,
                alive: n.alive,
                total: n.total.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::policy::tests::cpus;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn silent_nodes_die_once_and_stay_dead() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(5));
        let (a, b) = (NodeId(1 << 16), NodeId(2 << 16));
        m.register(a, addr(1), cpus(4), t0);
        m.register(b, addr(2), cpus(4), t0);
        let t3 = t0 + Duration::from_secs(3);
        m.heartbeat(a, cpus(2), cpus(4), ResourceSet::new(), t3);
        assert!(m.tick(t3).is_empty());
        let t6 = t0 + Duration::from_secs(6);
        let dead = m.tick(t6);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].0, b);
        assert!(
            dead[0].1.contains("no heartbeat for 5.0 s"),
            "{}",
            dead[0].1
        );
        assert!(m
            .tick(t6 + Duration::from_secs(10))
            .iter()
            .all(|(n, _)| *n == a));
        // A late heartbeat does not bring a dead node back.
        m.heartbeat(b, cpus(4), cpus(4), ResourceSet::new(), t6);
        assert!(!m.get(&b).unwrap().alive);
        assert_eq!(m.alive().count(), 0);
    }

    #[test]
    fn a_lost_connection_names_the_node_and_heartbeats_update_resources() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(5));
        let a = NodeId(1 << 16);
        m.register(a, addr(7), cpus(4), t0);
        m.heartbeat(a, cpus(1), cpus(4), ResourceSet::new(), t0);
        assert_eq!(m.views()[0].available, cpus(1));
        assert_eq!(m.at(addr(7)), Some(a));
        assert!(m.mark_dead(a));
        assert!(!m.mark_dead(a), "reported once");
        assert_eq!(m.at(addr(7)), None);
        assert!(!m.entries()[0].alive);
    }
}
