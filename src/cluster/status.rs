//! What `lumen status` and `lumen list` show: a short-lived client connects to a cluster's GCS
//! (and each node's raylet) with the cluster token, without starting a job.

use crate::cluster::builder::{Assembly, Builder};
use crate::cluster::contact::{find_token, resolve_address};
use crate::cluster::session;
use crate::error::{Error, Result};
use crate::ids::{JobId, NodeId};
use crate::protocol::gcs::{GetNodes, JobSummary, ListActors, ListJobs, ListPlacementGroups};
use crate::protocol::raylet::{GetResources, GetWorkers, WorkerSummary};
use crate::protocol::svc;
use crate::transport::net::Net;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One node, as `lumen status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// The node's id (32 hex digits).
    pub node_id: String,
    /// Where it listens.
    pub address: String,
    /// Whether it is the head.
    pub head: bool,
    /// Whether it is alive.
    pub alive: bool,
    /// Total resources.
    pub total: BTreeMap<String, f64>,
    /// Available resources (empty for a dead node).
    pub available: BTreeMap<String, f64>,
    /// Queued requests that do not fit now, with how many wait for each shape.
    pub demands: Vec<(BTreeMap<String, f64>, usize)>,
}

/// One actor, as `lumen list actors` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ActorRow {
    /// The actor's id.
    pub actor_id: String,
    /// Its type.
    pub class: String,
    /// Its name, if any.
    pub name: Option<String>,
    /// `PENDING_CREATION`, `ALIVE` or `DEAD`.
    pub state: String,
    /// The node hosting it.
    pub node_id: Option<String>,
}

/// One placement group, as `lumen list placement-groups` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlacementGroupRow {
    /// The group's id.
    pub id: String,
    /// Its name, if any.
    pub name: Option<String>,
    /// `PENDING`, `CREATED`, `REMOVED` or `RESCHEDULING`.
    pub state: String,
    /// `PACK`, `SPREAD`, `STRICT_PACK` or `STRICT_SPREAD`.
    pub strategy: String,
    /// Each bundle's resources.
    pub bundles: Vec<BTreeMap<String, f64>>,
    /// The node of each bundle, once placed.
    pub bundle_nodes: Vec<Option<String>>,
    /// Whether it outlives its driver.
    pub detached: bool,
}

/// One job, as `lumen list jobs` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// The job's id.
    pub job_id: String,
    /// `RUNNING` or `FINISHED`.
    pub status: String,
    /// Its namespace.
    pub namespace: String,
    /// The driver's executable, if the cluster runs it.
    pub entrypoint: Option<String>,
    /// The driver's process.
    pub driver_address: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub start_time_ms: u64,
    /// When it ended, if it has.
    pub end_time_ms: Option<u64>,
}

/// One driver or worker process, as `lumen list workers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    /// `DRIVER` (a job's driver) or `WORKER` (a process a node runs a job's work in).
    pub worker_type: String,
    /// The job it serves.
    pub job_id: String,
    /// The node it runs on (none for a driver).
    pub node_id: Option<String>,
    /// Where it listens (none for a worker still starting).
    pub address: Option<String>,
    /// Its process id (none for a worker process the node did not start).
    pub pid: Option<u32>,
    /// Whether it is up (a worker process still starting is not).
    pub alive: bool,
}

/// A driver or a worker, before it is shown.
pub(crate) struct WorkerEntry {
    pub(crate) driver: bool,
    pub(crate) job_id: JobId,
    pub(crate) node_id: Option<NodeId>,
    pub(crate) address: Option<SocketAddr>,
    pub(crate) pid: Option<u32>,
    pub(crate) alive: bool,
}

impl WorkerEntry {
    /// `DRIVER` or `WORKER`, as `list_workers` and `lumen list workers` say it.
    pub(crate) fn kind(&self) -> &'static str {
        if self.driver {
            "DRIVER"
        } else {
            "WORKER"
        }
    }
}

/// What `list workers` lists: each running job's driver, then each node's job workers, less
/// those that are a driver's own process (a driver that runs its own work, as the embedded
/// cluster's does).
pub(crate) fn worker_entries(
    jobs: &[JobSummary],
    nodes: Vec<(NodeId, Vec<WorkerSummary>)>,
) -> Vec<WorkerEntry> {
    let running = || jobs.iter().filter(|j| j.end_ms.is_none());
    let mut out: Vec<WorkerEntry> = running()
        .map(|j| WorkerEntry {
            driver: true,
            job_id: j.job_id,
            node_id: None,
            address: Some(j.driver),
            pid: Some(j.driver_pid),
            alive: true,
        })
        .collect();
    for (node, workers) in nodes {
        for w in workers {
            if w.address.is_some_and(|a| running().any(|j| j.driver == a)) {
                continue;
            }
            out.push(WorkerEntry {
                driver: false,
                job_id: w.job_id,
                node_id: Some(node),
                address: w.address,
                pid: w.pid,
                alive: w.alive,
            });
        }
    }
    out
}

/// A snapshot of a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// The GCS address.
    pub address: String,
    /// Every node the GCS knows.
    pub nodes: Vec<NodeStatus>,
    /// Every actor the GCS knows.
    pub actors: Vec<ActorRow>,
    /// Every placement group the GCS knows.
    pub placement_groups: Vec<PlacementGroupRow>,
    /// The running jobs, then the last ones that ended.
    pub jobs: Vec<JobRow>,
    /// Each running job's driver and each node's job workers.
    pub workers: Vec<WorkerRow>,
}

/// A short-lived client of the cluster at `address` (`None`: `LUMEN_ADDRESS`, else the head on
/// this machine), with the cluster token (`None`: found as `lumen start` left it), and the
/// GCS's address.
pub(crate) fn connect(
    address: Option<&str>,
    token: Option<&str>,
) -> Result<(Assembly, SocketAddr)> {
    let address = match address {
        Some(a) => a.to_string(),
        None => std::env::var("LUMEN_ADDRESS")
            .ok()
            .filter(|a| !a.trim().is_empty())
            .or_else(session::local_head)
            .ok_or_else(|| {
                Error::connection(
                    "auto",
                    "no cluster found: none is running on this machine (start one with `lumen \
                     start --head`) and LUMEN_ADDRESS is not set",
                )
            })?,
    };
    let gcs_addr = resolve_address(&address)?;
    let token = find_token(token, &address)?;
    let client = Builder::towards("lumen-status", 1, gcs_addr, token).build()?;
    Ok((client, gcs_addr))
}

/// Connects to the cluster at `address` (`None`: `LUMEN_ADDRESS`, else the head on this
/// machine) and reads its state.
///
/// # Examples
/// ```no_run
/// let status = lumen::cluster::cluster_status(Some("127.0.0.1:6379"), None)?;
/// print!("{status}");
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn cluster_status(address: Option<&str>, token: Option<&str>) -> Result<ClusterStatus> {
    let (client, gcs_addr) = connect(address, token)?;
    let net = client.net.clone();
    client.block_on(read_cluster(net, gcs_addr))?
}

/// Reads the state of the cluster whose GCS is at `gcs_addr` over `net`: the nodes (and each
/// live raylet's resources, demands and workers), actors, placement groups, jobs and workers.
/// What [`cluster_status`] shows, and what the head's dashboard serves.
pub(crate) async fn read_cluster(net: Arc<Net>, gcs_addr: SocketAddr) -> Result<ClusterStatus> {
    let gcs = net.target::<svc::Gcs>(gcs_addr);
    let nodes = tokio::time::timeout(Duration::from_secs(10), gcs.send(GetNodes))
        .await
        .map_err(|_| Error::connection(gcs_addr, "no answer within 10 s"))??;
    // Ask every live node at once: one that died unnoticed costs one timeout, not one each.
    let snaps = futures::future::join_all(nodes.iter().map(|n| {
        let target = n.alive.then(|| net.target::<svc::Raylet>(n.address));
        async move {
            let r = target?;
            let ask = async {
                let resources = r.send(GetResources).await.ok()?;
                let workers = r.send(GetWorkers).await.unwrap_or_default();
                Some((resources, workers))
            };
            tokio::time::timeout(Duration::from_secs(2), ask)
                .await
                .ok()
                .flatten()
        }
    }))
    .await;
    let (snaps, workers): (Vec<_>, Vec<_>) = snaps
        .into_iter()
        .map(|s| match s {
            Some((r, w)) => (Some(r), w),
            None => (None, Vec::new()),
        })
        .unzip();
    let workers: Vec<(NodeId, Vec<WorkerSummary>)> =
        nodes.iter().map(|n| n.node_id).zip(workers).collect();
    let mut rows = Vec::new();
    for (n, snap) in nodes.into_iter().zip(snaps) {
        rows.push(NodeStatus {
            node_id: n.node_id.to_string(),
            head: n.address == gcs_addr,
            address: n.address.to_string(),
            alive: n.alive,
            total: n.total.to_map(),
            available: snap
                .as_ref()
                .map(|s| s.available.to_map())
                .unwrap_or_default(),
            demands: snap
                .map(|s| s.demands.iter().map(|(r, k)| (r.to_map(), *k)).collect())
                .unwrap_or_default(),
        });
    }
    let actors = gcs
        .send(ListActors)
        .await?
        .into_iter()
        .map(|a| ActorRow {
            actor_id: a.actor_id.to_string(),
            class: a.class,
            name: a.name,
            state: a.state,
            node_id: a.node.map(|n| n.to_string()),
        })
        .collect();
    let placement_groups = gcs
        .send(ListPlacementGroups { id: None })
        .await?
        .into_iter()
        .map(|g| PlacementGroupRow {
            id: g.id.to_string(),
            name: g.name.map(|(_, n)| n),
            state: g.state.name().to_string(),
            strategy: g.strategy.name().to_string(),
            bundles: g.bundles.iter().map(|b| b.to_map()).collect(),
            bundle_nodes: g.nodes.iter().map(|n| n.map(|n| n.to_string())).collect(),
            detached: g.detached,
        })
        .collect();
    let job_list = gcs.send(ListJobs).await?;
    let workers = worker_entries(&job_list, workers)
        .into_iter()
        .map(|w| WorkerRow {
            worker_type: w.kind().to_string(),
            job_id: w.job_id.to_string(),
            node_id: w.node_id.map(|n| n.to_string()),
            address: w.address.map(|a| a.to_string()),
            pid: w.pid,
            alive: w.alive,
        })
        .collect();
    let jobs = job_list
        .into_iter()
        .map(|j| JobRow {
            job_id: j.job_id.to_string(),
            status: j.status().to_string(),
            namespace: j.namespace,
            entrypoint: j.entrypoint,
            driver_address: j.driver.to_string(),
            start_time_ms: j.start_ms,
            end_time_ms: j.end_ms,
        })
        .collect();
    Ok(ClusterStatus {
        address: gcs_addr.to_string(),
        nodes: rows,
        actors,
        placement_groups,
        jobs,
        workers,
    })
}

/// `CPU` for a group's wildcard resource `CPU_group_<32 hex digits>`.
fn group_base(name: &str) -> Option<&str> {
    let (base, id) = name.rsplit_once("_group_")?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(base)
}

fn amount(v: f64, name: &str) -> String {
    if name == "memory" || name == "object_store_memory" {
        format!("{:.2}GiB", v / (1u64 << 30) as f64)
    } else {
        format!("{v:.1}")
    }
}

impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = "-".repeat(63);
        writeln!(f, "======== Cluster status ({}) ========", self.address)?;
        writeln!(f, "Node status\n{rule}")?;
        writeln!(f, "Active:")?;
        let alive: Vec<&NodeStatus> = self.nodes.iter().filter(|n| n.alive).collect();
        if alive.is_empty() {
            writeln!(f, " (no active nodes)")?;
        }
        for n in &alive {
            writeln!(
                f,
                " 1 node_{} ({}{})",
                n.node_id,
                n.address,
                if n.head { ", head" } else { "" }
            )?;
        }
        writeln!(f, "Dead:")?;
        let dead: Vec<&NodeStatus> = self.nodes.iter().filter(|n| !n.alive).collect();
        if dead.is_empty() {
            writeln!(f, " (no dead nodes)")?;
        }
        for n in dead {
            writeln!(f, " 1 node_{} ({})", n.node_id, n.address)?;
        }
        writeln!(f, "\nResources\n{rule}\nUsage:")?;
        // Node resources, and what placement groups reserved of them: a group's wildcard
        // resource `<base>_group_<id>` totals its reservation of <base>.
        let mut total: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        let mut reserved: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for n in &alive {
            for (k, v) in &n.total {
                let used = v - n.available.get(k).copied().unwrap_or(0.0);
                let slot = match group_base(k) {
                    Some(base) => reserved.entry(base).or_default(),
                    None if k.contains("_group_") => continue,
                    None => total.entry(k.as_str()).or_default(),
                };
                slot.0 += used;
                slot.1 += v;
            }
        }
        for (k, (used, all)) in &total {
            write!(f, " {}/{} {k}", amount(*used, k), amount(*all, k))?;
            if let Some((g_used, g_all)) = reserved.get(k) {
                write!(
                    f,
                    " ({} used of {} reserved in placement groups)",
                    amount(*g_used, k),
                    amount(*g_all, k)
                )?;
            }
            writeln!(f)?;
        }
        writeln!(f, "Demands:")?;
        let demands: Vec<_> = alive.iter().flat_map(|n| n.demands.iter()).collect();
        let pending: Vec<&PlacementGroupRow> = self
            .placement_groups
            .iter()
            .filter(|g| g.state == "PENDING" || g.state == "RESCHEDULING")
            .collect();
        if demands.is_empty() && pending.is_empty() {
            writeln!(f, " (no resource demands)")?;
        }
        for g in pending {
            let bundles: Vec<String> = g
                .bundles
                .iter()
                .map(|b| {
                    let inner: Vec<String> = b.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
                    format!("{{{}}} * 1", inner.join(", "))
                })
                .collect();
            writeln!(
                f,
                " {} ({}): 1+ pending placement groups",
                bundles.join(", "),
                g.strategy
            )?;
        }
        for (shape, count) in demands {
            let shape: Vec<String> = shape.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
            writeln!(
                f,
                " {{{}}}: {count}+ pending tasks/actors",
                shape.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u128, driver: u16, ended: bool) -> JobSummary {
        JobSummary {
            job_id: JobId(n << 16),
            namespace: "ns".into(),
            driver: SocketAddr::from(([127, 0, 0, 1], driver)),
            driver_pid: 100 + driver as u32,
            entrypoint: None,
            start_ms: 1,
            end_ms: ended.then_some(2),
        }
    }

    fn worker(j: &JobSummary, port: Option<u16>, pid: Option<u32>) -> WorkerSummary {
        WorkerSummary {
            job_id: j.job_id,
            address: port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            pid,
            alive: port.is_some(),
        }
    }

    #[test]
    fn drivers_come_first_once_and_ended_jobs_have_none() {
        let (embedded, remote, ended) = (job(1, 10, false), job(2, 20, false), job(3, 30, true));
        let (n1, n2) = (NodeId(1 << 16), NodeId(2 << 16));
        let rows = worker_entries(
            &[embedded.clone(), remote.clone(), ended],
            vec![
                // The embedded driver is its node's worker: listed once, as the driver.
                (
                    n1,
                    vec![
                        worker(&embedded, Some(10), None),
                        worker(&remote, Some(11), Some(7)),
                    ],
                ),
                (n2, vec![worker(&remote, None, Some(8))]),
            ],
        );
        let shown: Vec<(bool, Option<u32>, Option<NodeId>, bool)> = rows
            .iter()
            .map(|w| (w.driver, w.pid, w.node_id, w.alive))
            .collect();
        assert_eq!(
            shown,
            vec![
                (true, Some(110), None, true),
                (true, Some(120), None, true),
                (false, Some(7), Some(n1), true),
                (false, Some(8), Some(n2), false),
            ]
        );
    }
}
