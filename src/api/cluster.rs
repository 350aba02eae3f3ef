//! The cluster's state: nodes and resources.

use crate::error::Result;
use crate::ids::ActorId;
use crate::ids::NodeId;
use crate::protocol::gcs::{GetNodes, ListActors};
use crate::protocol::raylet::GetResources;
use crate::protocol::svc;
use crate::transport::net::IN_PROCESS;
use crate::worker::runtime;
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
    /// Requests queued on the node that do not fit now (Ray's "demands"): each resource shape
    /// with the number of tasks and actors waiting for it.
    pub pending: Vec<(BTreeMap<String, f64>, usize)>,
    /// Tasks queued on the node until their ref arguments are ready.
    pub waiting_for_args: usize,
}

fn snapshot() -> Result<Vec<NodeInfo>> {
    let rt = runtime::current()?;
    let rt2 = rt.clone();
    rt.block_on(async move {
        let rt = rt2;
        let nodes = rt.gcs.send(GetNodes).await?;
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            let snap = match n.alive {
                true => rt
                    .net
                    .target::<svc::Raylet>(n.address)
                    .send(GetResources)
                    .await
                    .ok(),
                false => None,
            };
            out.push(NodeInfo {
                node_id: n.node_id,
                address: if n.address == IN_PROCESS {
                    "embedded".to_string()
                } else {
                    n.address.to_string()
                },
                alive: n.alive,
                resources: n.total.to_map(),
                available: snap
                    .as_ref()
                    .map(|s| s.available.to_map())
                    .unwrap_or_default(),
                pending: snap
                    .as_ref()
                    .map(|s| s.demands.iter().map(|(r, n)| (r.to_map(), *n)).collect())
                    .unwrap_or_default(),
                waiting_for_args: snap.map_or(0, |s| s.waiting_for_args),
            });
        }
        Ok(out)
    })?
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

/// An actor, as `lumen::list_actors()` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActorInfo {
    /// The actor's id.
    pub actor_id: ActorId,
    /// Its type, `crate::module::Type`.
    pub class: String,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// The namespace of its name.
    pub namespace: Option<String>,
    /// `PENDING_CREATION`, `ALIVE` or `DEAD` (Ray's state names).
    pub state: String,
    /// The node hosting it, once created.
    pub node_id: Option<NodeId>,
}

/// Every actor the cluster knows, live or dead (Ray's `list_actors`).
///
/// # Examples
/// ```no_run
/// pub struct A;
/// #[lumen::remote]
/// impl A { pub fn new() -> Self { A } }
///
/// lumen::init()?;
/// let _a = A::options().name("a").remote();
/// assert!(lumen::list_actors().iter().any(|x| x.name.as_deref() == Some("a")));
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_actors() -> Vec<ActorInfo> {
    let Ok(rt) = runtime::current() else {
        return Vec::new();
    };
    let mut v: Vec<ActorInfo> = rt
        .request(&rt.gcs, ListActors)
        .unwrap_or_default()
        .into_iter()
        .map(|a| ActorInfo {
            actor_id: a.actor_id,
            class: a.class,
            name: a.name,
            namespace: a.namespace,
            state: a.state.to_string(),
            node_id: a.node,
        })
        .collect();
    v.sort_by_key(|a| a.actor_id);
    v
}
