//! A node's Prometheus endpoint (`/metrics`, `lumen start --metrics-port P`): each scrape asks
//! the node's raylet (and, on the head, the GCS) over the node's own switchboard, gathers a
//! [`MetricsSnapshot`], and [`encode`]s it as OpenMetrics text with a fresh `prometheus-client`
//! registry, so nothing is kept between scrapes and every number is as of the scrape.
//!
//! Series (gauges):
//!
//! | series | labels | served by |
//! |---|---|---|
//! | `lumen_node_resource_total` | `node`, `resource` | every node |
//! | `lumen_node_resource_available` | `node`, `resource` | every node |
//! | `lumen_node_demands` | `node` | every node: requests queued there that fit nowhere now |
//! | `lumen_node_workers` | `node`, `state` (`alive`, `starting`) | every node: its job worker processes |
//! | `lumen_node_transport_connections` | `node` | every node: its process's live QUIC connections |
//! | `lumen_node_transport_{sent,received}_bytes_total` (counters) | `node` | every node: UDP bytes |
//! | `lumen_task_queue_seconds` (histogram) | | the head: time from submission to start of every attempt since it started (cumulative) |
//! | `lumen_nodes` | `state` (`alive`, `dead`) | the head |
//! | `lumen_actors` | `state` (`ALIVE`, `PENDING_CREATION`, `DEAD`, …) | the head |
//! | `lumen_tasks` | `state` | the head: the task attempts the GCS keeps, by state |
//! | `lumen_tasks_finished_total`, `lumen_tasks_failed_total` (counters) | | the head: attempts ever ended |
//!
//! Cluster-wide series come from the head only, so that summing a series over the nodes never
//! counts an actor twice. To add a series: a field in [`MetricsSnapshot`], filled in
//! [`snapshot`], written in [`encode`].

use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::protocol::gcs::{CountTasks, GetNodes, ListActors};
use crate::protocol::owner::{ListObjects, StoreUsage};
use crate::protocol::raylet::{GetResources, GetWorkers};
use crate::protocol::svc;
use crate::transport::net::Net;
use crate::transport::Traffic;
use prometheus_client::encoding::text::encode as encode_text;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// How long one scrape may wait for the raylet and the GCS.
const SCRAPE_LIMIT: Duration = Duration::from_secs(5);

/// What one scrape of a node shows: plain numbers, read at the scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct MetricsSnapshot {
    /// The node's id (32 hex digits).
    pub(crate) node_id: String,
    /// The node's resources, by name.
    pub(crate) total: BTreeMap<String, f64>,
    /// What of them is free now.
    pub(crate) available: BTreeMap<String, f64>,
    /// Requests queued on the node that fit nowhere now.
    pub(crate) demands: u64,
    /// The node's job worker processes that are up.
    pub(crate) workers_alive: u64,
    /// The node's job worker processes still starting.
    pub(crate) workers_starting: u64,
    /// The node process's QUIC endpoint: live connections, bytes sent and received.
    pub(crate) transport: Traffic,
    /// The object stores of the node's worker processes, summed.
    pub(crate) store: StoreUsage,
    /// What only the head serves: the cluster's nodes, actors and tasks.
    pub(crate) cluster: Option<ClusterCounts>,
}

/// Cluster-wide counts, read from the GCS by the head.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ClusterCounts {
    /// Nodes alive and dead.
    pub(crate) nodes_alive: u64,
    /// Nodes the GCS marked dead.
    pub(crate) nodes_dead: u64,
    /// Actors by state (`ALIVE`, `PENDING_CREATION`, `DEAD`, ...).
    pub(crate) actors: BTreeMap<String, u64>,
    /// The task attempts the GCS keeps, by state.
    pub(crate) tasks: BTreeMap<String, u64>,
    /// Attempts ever finished and ever failed.
    pub(crate) tasks_finished: u64,
    pub(crate) tasks_failed: u64,
    /// Time from submission to start of the attempts that started.
    pub(crate) queue: FixedHistogram,
}

/// A histogram read whole from the GCS: per-bucket counts (upper bound in seconds, the last
/// `f64::MAX`), their sum and count, encoded as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FixedHistogram {
    pub(crate) buckets: Vec<(f64, u64)>,
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

impl EncodeMetric for FixedHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> std::result::Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A family of gauges labelled by name-value pairs.
type Gauges = Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>;

/// Registers a gauge family `name` in `registry` and returns it to be filled.
fn gauges(registry: &mut Registry, name: &str, help: &str) -> Gauges {
    let family = Gauges::default();
    registry.register(name, help, family.clone());
    family
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The snapshot as Prometheus (OpenMetrics) text.
pub(crate) fn encode(s: &MetricsSnapshot) -> Result<String> {
    let mut registry = Registry::default();
    let node = s.node_id.as_str();
    let total = gauges(
        &mut registry,
        "lumen_node_resource_total",
        "The node's resources (memory in bytes)",
    );
    for (resource, v) in &s.total {
        total
            .get_or_create(&labels(&[("node", node), ("resource", resource)]))
            .set(*v);
    }
    let available = gauges(
        &mut registry,
        "lumen_node_resource_available",
        "What of the node's resources is free now (memory in bytes)",
    );
    for (resource, v) in &s.available {
        available
            .get_or_create(&labels(&[("node", node), ("resource", resource)]))
            .set(*v);
    }
    gauges(
        &mut registry,
        "lumen_node_demands",
        "Requests queued on the node that fit nowhere now",
    )
    .get_or_create(&labels(&[("node", node)]))
    .set(s.demands as f64);
    let workers = gauges(
        &mut registry,
        "lumen_node_workers",
        "The node's job worker processes, up or starting",
    );
    workers
        .get_or_create(&labels(&[("node", node), ("state", "alive")]))
        .set(s.workers_alive as f64);
    workers
        .get_or_create(&labels(&[("node", node), ("state", "starting")]))
        .set(s.workers_starting as f64);
    gauges(
        &mut registry,
        "lumen_object_store_capacity_bytes",
        "The cap on bytes in memory of the node's worker processes' object stores, summed",
    )
    .get_or_create(&labels(&[("node", node)]))
    .set(s.store.capacity as f64);
    let bytes = gauges(
        &mut registry,
        "lumen_object_store_bytes",
        "Bytes of objects in the node's worker processes' stores: in memory, and spilled to disk",
    );
    bytes
        .get_or_create(&labels(&[("node", node), ("state", "memory")]))
        .set(s.store.memory_bytes as f64);
    bytes
        .get_or_create(&labels(&[("node", node), ("state", "spilled")]))
        .set(s.store.spilled_bytes as f64);
    let objects = gauges(
        &mut registry,
        "lumen_object_store_objects",
        "Objects in the node's worker processes' stores (stored: all; spilled: with a spill \
         file; kept: results kept for their owners)",
    );
    for (state, n) in [
        ("stored", s.store.objects),
        ("spilled", s.store.spilled_objects),
        ("kept", s.store.kept_copies),
    ] {
        objects
            .get_or_create(&labels(&[("node", node), ("state", state)]))
            .set(n as f64);
    }
    gauges(
        &mut registry,
        "lumen_node_transport_connections",
        "The node process's live QUIC connections",
    )
    .get_or_create(&labels(&[("node", node)]))
    .set(s.transport.connections as f64);
    for (name, help, n) in [
        (
            "lumen_node_transport_sent_bytes",
            "UDP bytes the node process's QUIC endpoint sent",
            s.transport.bytes_sent,
        ),
        (
            "lumen_node_transport_received_bytes",
            "UDP bytes the node process's QUIC endpoint received",
            s.transport.bytes_received,
        ),
    ] {
        let family = Family::<Vec<(String, String)>, Counter<u64, AtomicU64>>::default();
        registry.register(name, help, family.clone());
        family.get_or_create(&labels(&[("node", node)])).inc_by(n);
    }
    if let Some(c) = &s.cluster {
        let nodes = gauges(
            &mut registry,
            "lumen_nodes",
            "The cluster's nodes, by state",
        );
        nodes
            .get_or_create(&labels(&[("state", "alive")]))
            .set(c.nodes_alive as f64);
        nodes
            .get_or_create(&labels(&[("state", "dead")]))
            .set(c.nodes_dead as f64);
        let actors = gauges(
            &mut registry,
            "lumen_actors",
            "The cluster's actors, by state",
        );
        for (state, n) in &c.actors {
            actors
                .get_or_create(&labels(&[("state", state)]))
                .set(*n as f64);
        }
        if !c.tasks.is_empty() {
            let tasks = gauges(
                &mut registry,
                "lumen_tasks",
                "The task attempts the GCS keeps (about the last 100,000), by state",
            );
            for (state, n) in &c.tasks {
                tasks
                    .get_or_create(&labels(&[("state", state)]))
                    .set(*n as f64);
            }
        }
        if !c.queue.buckets.is_empty() {
            registry.register_with_unit(
                "lumen_task_queue",
                "Time from a task's submission to its start: placement, argument fetching, \
                 waiting for a slot",
                Unit::Seconds,
                c.queue.clone(),
            );
        }
        for (name, help, n) in [
            (
                "lumen_tasks_finished",
                "Task attempts that finished, ever",
                c.tasks_finished,
            ),
            (
                "lumen_tasks_failed",
                "Task attempts that failed, ever",
                c.tasks_failed,
            ),
        ] {
            let counter: Counter<u64, AtomicU64> = Counter::default();
            counter.inc_by(n);
            registry.register(name, help, counter);
        }
    }
    let mut text = String::new();
    encode_text(&mut text, &registry)
        .map_err(|e| Error::invalid(format!("cannot write the metrics: {e}")))?;
    Ok(text)
}

/// Where a scrape asks: the node's switchboard, its id, and whether it is the head.
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) net: Arc<Net>,
    pub(crate) node_id: NodeId,
    /// The GCS's address (the node's own on the head).
    pub(crate) gcs: SocketAddr,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Source(node {}, GCS {})", self.node_id, self.gcs)
    }
}

/// The object stores of the node's registered worker processes, summed (one that does not
/// answer within a second is left out).
async fn stores(net: &Arc<Net>, workers: &[crate::protocol::raylet::WorkerSummary]) -> StoreUsage {
    let asks = workers.iter().filter_map(|w| w.address).map(|addr| {
        let ask = net
            .target::<svc::Owner>(addr)
            .send(ListObjects { limit: 0 });
        async move {
            tokio::time::timeout(Duration::from_secs(1), ask)
                .await
                .ok()
                .and_then(|r| r.ok())
        }
    });
    let mut sum = StoreUsage::default();
    for held in futures::future::join_all(asks).await.into_iter().flatten() {
        let s = held.store;
        sum.capacity += s.capacity;
        sum.objects += s.objects;
        sum.bytes += s.bytes;
        sum.memory_bytes += s.memory_bytes;
        sum.spilled_objects += s.spilled_objects;
        sum.spilled_bytes += s.spilled_bytes;
        sum.kept_copies += s.kept_copies;
    }
    sum
}

/// Reads a snapshot of the node (and of the cluster, on the head), waiting at most
/// [`SCRAPE_LIMIT`].
pub(crate) async fn snapshot(source: &Source) -> Result<MetricsSnapshot> {
    let me = source.net.addr();
    let raylet = source.net.target::<svc::Raylet>(me);
    let gcs = source.net.target::<svc::Gcs>(source.gcs);
    let head = me == source.gcs;
    let ask = async {
        let (resources, workers, nodes) = futures::join!(
            raylet.send(GetResources),
            raylet.send(GetWorkers),
            gcs.send(GetNodes)
        );
        let (resources, workers, nodes) = (resources?, workers?, nodes?);
        let mut snap = MetricsSnapshot {
            node_id: source.node_id.to_string(),
            total: nodes
                .iter()
                .find(|n| n.node_id == source.node_id)
                .map(|n| n.total.to_map())
                .unwrap_or_default(),
            available: resources.available.to_map(),
            demands: resources.demands.iter().map(|(_, k)| *k as u64).sum(),
            workers_alive: workers.iter().filter(|w| w.alive).count() as u64,
            workers_starting: workers.iter().filter(|w| !w.alive).count() as u64,
            transport: source.net.traffic(),
            store: stores(&source.net, &workers).await,
            cluster: None,
        };
        if head {
            // The usual states always, so that a series exists before its first actor.
            let mut actors: BTreeMap<String, u64> = ["ALIVE", "PENDING_CREATION", "RESTARTING"]
                .into_iter()
                .map(|s| (s.to_string(), 0))
                .collect();
            for a in gcs.send(ListActors).await? {
                *actors.entry(a.state).or_insert(0) += 1;
            }
            let counts = gcs.send(CountTasks).await?;
            snap.cluster = Some(ClusterCounts {
                nodes_alive: nodes.iter().filter(|n| n.alive).count() as u64,
                nodes_dead: nodes.iter().filter(|n| !n.alive).count() as u64,
                actors,
                tasks: counts.by_state.into_iter().collect(),
                tasks_finished: counts.finished,
                tasks_failed: counts.failed,
                queue: FixedHistogram {
                    buckets: counts.queue_buckets,
                    sum: counts.queue_sum,
                    count: counts.queue_count,
                },
            });
        }
        Ok::<_, Error>(snap)
    };
    tokio::time::timeout(SCRAPE_LIMIT, ask)
        .await
        .map_err(|_| Error::connection(source.gcs, "the node did not answer within 5 s"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(cluster: Option<ClusterCounts>) -> MetricsSnapshot {
        MetricsSnapshot {
            node_id: "ab".repeat(16),
            total: [("CPU".to_string(), 4.0), ("node1".to_string(), 2.0)].into(),
            available: [("CPU".to_string(), 2.5), ("node1".to_string(), 2.0)].into(),
            demands: 3,
            workers_alive: 1,
            workers_starting: 2,
            transport: Traffic {
                connections: 2,
                bytes_sent: 100,
                bytes_received: 50,
            },
            store: StoreUsage {
                capacity: 1 << 30,
                objects: 3,
                bytes: 3 << 20,
                memory_bytes: 2 << 20,
                spilled_objects: 1,
                spilled_bytes: 1 << 20,
                kept_copies: 2,
            },
            cluster,
        }
    }

    #[test]
    fn a_node_snapshot_gives_its_resources_demands_and_workers() {
        let text = encode(&snap(None)).expect("encode");
        let node = "ab".repeat(16);
        for line in [
            format!("lumen_node_resource_total{{node=\"{node}\",resource=\"CPU\"}} 4.0"),
            format!("lumen_node_resource_available{{node=\"{node}\",resource=\"CPU\"}} 2.5"),
            format!("lumen_node_resource_available{{node=\"{node}\",resource=\"node1\"}} 2.0"),
            format!("lumen_node_demands{{node=\"{node}\"}} 3.0"),
            format!("lumen_node_workers{{node=\"{node}\",state=\"starting\"}} 2.0"),
            format!("lumen_node_transport_connections{{node=\"{node}\"}} 2.0"),
            format!("lumen_node_transport_sent_bytes_total{{node=\"{node}\"}} 100"),
            format!("lumen_object_store_capacity_bytes{{node=\"{node}\"}} 1073741824.0"),
            format!("lumen_object_store_bytes{{node=\"{node}\",state=\"memory\"}} 2097152.0"),
            format!("lumen_object_store_bytes{{node=\"{node}\",state=\"spilled\"}} 1048576.0"),
            format!("lumen_object_store_objects{{node=\"{node}\",state=\"kept\"}} 2.0"),
            "# TYPE lumen_node_resource_total gauge".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
        assert!(!text.contains("lumen_actors"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_heads_snapshot_adds_the_clusters_actors_and_tasks_once_known() {
        let mut counts = ClusterCounts {
            nodes_alive: 2,
            nodes_dead: 0,
            actors: [("ALIVE".to_string(), 3), ("DEAD".to_string(), 1)].into(),
            tasks: BTreeMap::new(),
            tasks_finished: 0,
            tasks_failed: 0,
            queue: FixedHistogram::default(),
        };
        let text = encode(&snap(Some(counts.clone()))).expect("encode");
        assert!(text.contains("lumen_actors{state=\"ALIVE\"} 3.0"), "{text}");
        assert!(text.contains("lumen_nodes{state=\"alive\"} 2.0"), "{text}");
        assert!(!text.contains("lumen_tasks{"), "{text}");
        counts.tasks.insert("RUNNING".into(), 5);
        counts.tasks_finished = 7;
        let text = encode(&snap(Some(counts.clone()))).expect("encode");
        assert!(
            text.contains("lumen_tasks{state=\"RUNNING\"} 5.0"),
            "{text}"
        );
        assert!(text.contains("lumen_tasks_finished_total 7"), "{text}");
        counts.queue = FixedHistogram {
            buckets: vec![(0.001, 2), (f64::MAX, 1)],
            sum: 2.5,
            count: 3,
        };
        let text = encode(&snap(Some(counts))).expect("encode");
        for line in [
            "lumen_task_queue_seconds_count 3",
            "lumen_task_queue_seconds_bucket{le=\"0.001\"} 2",
            "lumen_task_queue_seconds_bucket{le=\"+Inf\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }
}
