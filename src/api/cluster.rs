//! The cluster's state: nodes and resources.

use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::node::raylet::GetResources;
use crate::runtime;
use crate::system::gcs::GetNodes;
use std::collections::BTreeMap;

/// A node of the cluster, as `lumen::nodes()` reports it.
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// for n in lumen::nodes() {
///     println!("{} alive={} {:?}", n.node_id, n.alive, n.resources);
/// }
/// # Ok::<(), lumen::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeInfo {
    /// The node's id.
    pub node_id: NodeId,
    /// Where the node listens (`"embedded"` for the in-process node).
    pub address: String,
    /// Whether the node is alive.
    pub alive: bool,
    /// The node's total resources.
    pub resources: BTreeMap<String, f64>,
    /// The node's resources available now.
    pub available: BTreeMap<String, f64>,
}

fn snapshot() -> Result<Vec<NodeInfo>> {
    let rt = runtime::current()?;
    futures::executor::block_on(async move {
        let nodes = rt
            .gcs
            .send(GetNodes)
            .await
            .map_err(|_| Error::shutdown("listing nodes"))?;
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            let available = if n.alive {
                match n.raylet.send(GetResources).await {
                    Ok(s) => s.available.to_map(),
                    Err(_) => BTreeMap::new(),
                }
            } else {
                BTreeMap::new()
            };
            out.push(NodeInfo {
                node_id: n.node_id,
                address: n.address,
                alive: n.alive,
                resources: n.total.to_map(),
                available,
            });
        }
        Ok(out)
    })
}

/// The nodes of the cluster (empty before `lumen::init()`).
pub fn nodes() -> Vec<NodeInfo> {
    snapshot().unwrap_or_default()
}

fn sum(pick: impl Fn(&NodeInfo) -> &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut total: BTreeMap<String, f64> = BTreeMap::new();
    for n in nodes().iter().filter(|n| n.alive) {
        for (k, v) in pick(n) {
            *total.entry(k.clone()).or_default() += v;
        }
    }
    total.entry("CPU".into()).or_insert(0.0);
    total.entry("GPU".into()).or_insert(0.0);
    total
}

/// Total resources of the live nodes, e.g. `{"CPU": 24.0, "GPU": 0.0, "node0": 2.0, ..}`.
///
/// # Examples
/// ```no_run
/// lumen::init_with(lumen::Config::default().num_cpus(4.0))?;
/// assert_eq!(lumen::cluster_resources()["CPU"], 4.0);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn cluster_resources() -> BTreeMap<String, f64> {
    sum(|n| &n.resources)
}

/// Resources not in use right now on the live nodes.
///
/// # Examples
/// ```no_run
/// lumen::init_with(lumen::Config::default().num_cpus(4.0))?;
/// assert!(lumen::available_resources()["CPU"] <= 4.0);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn available_resources() -> BTreeMap<String, f64> {
    sum(|n| &n.available)
}
