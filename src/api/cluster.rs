//! The cluster's state: nodes, resources, actors, jobs, workers, tasks and objects, each with
//! its async twin.
//!
//! These calls cannot fail, so in async code (where they must not block: see
//! `crate::context::async_context`) the blocking ones log the refusal once and answer as before
//! `lumen::init()`: nothing; their `_async` twins await the answers instead.

use crate::cluster::state::{
    filter_rows, hex, hex_opt, listing, read_objects, Filter, ObjectInfo, TaskInfo,
};
use crate::context::refuse_blocking_logged;
use crate::error::Result;
use crate::ids::ActorId;
use crate::ids::{JobId, NodeId};
use crate::protocol::gcs::{GetNodes, ListActors, ListJobs, ListTasks};
use crate::protocol::raylet::{GetResources, GetWorkers};
use crate::protocol::svc;
use crate::transport::net::IN_PROCESS;
use crate::worker::runtime::{self, Runtime};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

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

/// The nodes and what each raylet reports now.
async fn snapshot(rt: Arc<Runtime>) -> Result<Vec<NodeInfo>> {
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
}

/// The nodes, waited for on this thread; empty in async code (logged) or before init.
fn nodes_blocking(what: &'static str, instead: &str) -> Vec<NodeInfo> {
    let Ok(rt) = runtime::current() else {
        return Vec::new();
    };
    if refuse_blocking_logged(what, instead) {
        return Vec::new();
    }
    rt.block_on(snapshot(rt.clone()))
        .and_then(|r| r)
        .unwrap_or_default()
}

/// The nodes of the cluster (empty before `lumen::init()`).
///
/// It waits for the GCS and every raylet, so in async code (a lumen async task or actor method,
/// or any thread of a tokio runtime outside a lumen sync task) it does not: it logs that once
/// (`tracing::error!`) and returns an empty list. Use [`nodes_async`] there.
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// assert_eq!(lumen::nodes().len(), 1);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn nodes() -> Vec<NodeInfo> {
    nodes_blocking("lumen::nodes", "lumen::nodes_async().await")
}

/// The nodes of the cluster, without blocking a thread: the async twin of [`nodes`] (empty
/// before `lumen::init()`). Works on any executor.
///
/// # Examples
/// ```no_run
/// # async fn run() {
/// for n in lumen::nodes_async().await {
///     println!("{} alive={} {:?}", n.node_id, n.alive, n.resources);
/// }
/// # }
/// lumen::init()?;
/// futures::executor::block_on(run());
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn nodes_async() -> impl Future<Output = Vec<NodeInfo>> + Send + 'static {
    let run = runtime::current().map(|rt| rt.run(snapshot(rt.clone())));
    async move {
        match run {
            Ok(run) => run.await.and_then(|r| r).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

fn sum(
    nodes: &[NodeInfo],
    pick: impl Fn(&NodeInfo) -> &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    let mut total: BTreeMap<String, f64> = BTreeMap::new();
    for n in nodes.iter().filter(|n| n.alive) {
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
/// In async code it does not block: it logs that once (`tracing::error!`) and returns what it
/// returns before `lumen::init()`, `{"CPU": 0.0, "GPU": 0.0}`. Use [`cluster_resources_async`]
/// there.
///
/// # Examples
/// ```no_run
/// lumen::init_with(lumen::Config::default().num_cpus(4.0))?;
/// assert_eq!(lumen::cluster_resources()["CPU"], 4.0);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn cluster_resources() -> BTreeMap<String, f64> {
    let nodes = nodes_blocking(
        "lumen::cluster_resources",
        "lumen::cluster_resources_async().await",
    );
    sum(&nodes, |n| &n.resources)
}

/// Total resources of the live nodes, without blocking a thread: the async twin of
/// [`cluster_resources`]. Works on any executor.
///
/// # Examples
/// ```no_run
/// # async fn run() {
/// assert_eq!(lumen::cluster_resources_async().await["CPU"], 4.0);
/// # }
/// lumen::init_with(lumen::Config::default().num_cpus(4.0))?;
/// futures::executor::block_on(run());
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn cluster_resources_async() -> impl Future<Output = BTreeMap<String, f64>> + Send + 'static {
    let nodes = nodes_async();
    async move { sum(&nodes.await, |n| &n.resources) }
}

/// Resources not in use right now on the live nodes.
///
/// In async code it does not block: it logs that once (`tracing::error!`) and returns what it
/// returns before `lumen::init()`, `{"CPU": 0.0, "GPU": 0.0}`. Use
/// [`available_resources_async`] there.
///
/// # Examples
/// ```no_run
/// lumen::init_with(lumen::Config::default().num_cpus(4.0))?;
/// assert!(lumen::available_resources()["CPU"] <= 4.0);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn available_resources() -> BTreeMap<String, f64> {
    let nodes = nodes_blocking(
        "lumen::available_resources",
        "lumen::available_resources_async().await",
    );
    sum(&nodes, |n| &n.available)
}

/// Resources not in use right now on the live nodes, without blocking a thread: the async twin
/// of [`available_resources`]. Works on any executor.
///
/// # Examples
/// ```no_run
/// # async fn run() {
/// assert!(lumen::available_resources_async().await["CPU"] <= 4.0);
/// # }
/// lumen::init_with(lumen::Config::default().num_cpus(4.0))?;
/// futures::executor::block_on(run());
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn available_resources_async() -> impl Future<Output = BTreeMap<String, f64>> + Send + 'static {
    let nodes = nodes_async();
    async move { sum(&nodes.await, |n| &n.available) }
}

/// An actor, as `lumen::list_actors()` reports it (serialized as `lumen list actors --format
/// json` writes ids: hex text, so [`filter_rows`](crate::cluster::filter_rows) takes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ActorInfo {
    /// The actor's id.
    #[serde(serialize_with = "hex")]
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
    #[serde(serialize_with = "hex_opt")]
    pub node_id: Option<NodeId>,
}

/// Every actor the cluster knows, live or dead (Ray's `list_actors`).
///
/// In async code it does not block: it logs that once (`tracing::error!`) and returns an empty
/// list. Use [`list_actors_async`] there.
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
    if refuse_blocking_logged("lumen::list_actors", "lumen::list_actors_async().await") {
        return Vec::new();
    }
    to_actor_infos(rt.request(&rt.gcs, ListActors).unwrap_or_default())
}

/// Every actor the cluster knows, live or dead, without blocking a thread: the async twin of
/// [`list_actors`]. Works on any executor.
///
/// # Examples
/// ```no_run
/// pub struct A;
/// #[lumen::remote]
/// impl A { pub fn new() -> Self { A } }
///
/// # async fn run() {
/// let _a = A::options().name("a").remote_async().await;
/// assert!(lumen::list_actors_async().await.iter().any(|x| x.name.as_deref() == Some("a")));
/// # }
/// lumen::init()?;
/// futures::executor::block_on(run());
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_actors_async() -> impl Future<Output = Vec<ActorInfo>> + Send + 'static {
    let ask = runtime::current().map(|rt| rt.ask(&rt.gcs, ListActors));
    async move {
        match ask {
            Ok(ask) => to_actor_infos(ask.await.unwrap_or_default()),
            Err(_) => Vec::new(),
        }
    }
}

/// A job, as `lumen::list_jobs()` reports it: a driver's run on the cluster (serializable, for
/// [`filter_rows`](crate::cluster::filter_rows)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct JobInfo {
    /// The job's id (a driver's `runtime_context().job_id()`).
    #[serde(serialize_with = "hex")]
    pub job_id: JobId,
    /// `RUNNING`, or `FINISHED` once its driver has shut down or gone away.
    pub status: String,
    /// The namespace of its named actors.
    pub namespace: String,
    /// The name of the driver's executable (`None` for the embedded cluster's driver, which runs
    /// its own work).
    pub entrypoint: Option<String>,
    /// The driver's process: where it listens.
    pub driver_address: String,
    /// The driver's process id.
    pub driver_pid: u32,
    /// When it started, in milliseconds since the Unix epoch.
    pub start_time_ms: u64,
    /// When it ended, if it has.
    pub end_time_ms: Option<u64>,
}

/// The cluster's jobs: the running ones, then the last 1,000 that ended, oldest first (Ray's
/// `list_jobs`).
///
/// In async code it returns `Error::InvalidArgument` without blocking: use [`list_jobs_async`]
/// there.
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// let me = lumen::runtime_context().job_id();
/// let jobs = lumen::list_jobs()?;
/// assert!(jobs.iter().any(|j| j.job_id == me && j.status == "RUNNING"));
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_jobs() -> Result<Vec<JobInfo>> {
    let rt = runtime::current()?;
    crate::context::refuse_blocking("lumen::list_jobs", "lumen::list_jobs_async().await")?;
    Ok(to_job_infos(rt.request(&rt.gcs, ListJobs)?))
}

/// The cluster's jobs without blocking a thread: the async twin of [`list_jobs`]. Works on any
/// executor.
///
/// # Examples
/// ```no_run
/// # async fn run() -> lumen::Result<()> {
/// assert!(!lumen::list_jobs_async().await?.is_empty());
/// # Ok(()) }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_jobs_async() -> impl Future<Output = Result<Vec<JobInfo>>> + Send + 'static {
    let ask = runtime::current().map(|rt| rt.ask(&rt.gcs, ListJobs));
    async move { Ok(to_job_infos(ask?.await?)) }
}

/// A driver or worker process, as `lumen::list_workers()` reports it (serializable, for
/// [`filter_rows`](crate::cluster::filter_rows)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// `DRIVER` (a job's driver) or `WORKER` (a process a node runs a job's work in).
    pub worker_type: String,
    /// The job it serves.
    #[serde(serialize_with = "hex")]
    pub job_id: JobId,
    /// The node it runs on (`None` for a driver).
    #[serde(serialize_with = "hex_opt")]
    pub node_id: Option<NodeId>,
    /// Where it listens (`None` for a worker process still starting).
    pub address: Option<String>,
    /// Its process id (`None` for a worker process its node did not start).
    pub pid: Option<u32>,
    /// Whether it is up (a worker process still starting is not).
    pub alive: bool,
}

/// The cluster's drivers and worker processes (Ray's `list_workers`): each running job's
/// driver, then each live node's worker process of each job that ran work there. A driver that
/// runs its own work (the embedded cluster's) is listed once, as the driver.
///
/// In async code it returns `Error::InvalidArgument` without blocking: use
/// [`list_workers_async`] there.
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// let workers = lumen::list_workers()?;
/// assert!(workers
///     .iter()
///     .any(|w| w.worker_type == "DRIVER" && w.pid == Some(std::process::id())));
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_workers() -> Result<Vec<WorkerInfo>> {
    runtime::current()?;
    crate::context::refuse_blocking("lumen::list_workers", "lumen::list_workers_async().await")?;
    futures::executor::block_on(list_workers_async())
}

/// The cluster's drivers and worker processes without blocking a thread: the async twin of
/// [`list_workers`]. Works on any executor.
///
/// # Examples
/// ```no_run
/// # async fn run() -> lumen::Result<()> {
/// assert!(!lumen::list_workers_async().await?.is_empty());
/// # Ok(()) }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_workers_async() -> impl Future<Output = Result<Vec<WorkerInfo>>> + Send + 'static {
    let rt = runtime::current();
    async move {
        let rt = rt?;
        let jobs = rt.ask(&rt.gcs, ListJobs).await?;
        let nodes = rt.ask(&rt.gcs, GetNodes).await?;
        let asks = nodes.iter().filter(|n| n.alive).map(|n| {
            let raylet = rt.net.target::<svc::Raylet>(n.address);
            let node = n.node_id;
            async move { (node, raylet.send(GetWorkers).await.unwrap_or_default()) }
        });
        let per_node = futures::future::join_all(asks).await;
        Ok(crate::cluster::status::worker_entries(&jobs, per_node)
            .into_iter()
            .map(|w| WorkerInfo {
                worker_type: w.kind().to_string(),
                job_id: w.job_id,
                node_id: w.node_id,
                address: w.address.map(|a| a.to_string()),
                pid: w.pid,
                alive: w.alive,
            })
            .collect())
    }
}

/// Every task, actor creation and actor call the cluster recorded (Ray's `list_tasks`), one row
/// per attempt, oldest first: its function, state, node, process and error. The GCS keeps the
/// last 300,000 task events (about 100,000 attempts); processes report every second, so what
/// another process ran shows up within about a second (this process's own work at once).
///
/// In async code it returns `Error::InvalidArgument` without blocking: use [`list_tasks_async`]
/// there.
///
/// # Examples
/// ```no_run
/// #[lumen::remote]
/// fn fails() -> Result<u8, String> { Err("no".into()) }
///
/// lumen::init()?;
/// let _ = lumen::get(&fails::remote());
/// let failed = lumen::list_tasks_filtered(&["state=FAILED".parse()?])?;
/// assert!(failed.iter().any(|t| t.error.as_deref().is_some_and(|e| e.contains("no"))));
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_tasks() -> Result<Vec<TaskInfo>> {
    list_tasks_filtered(&[])
}

/// The attempts [`list_tasks`] lists that pass every filter (`state=RUNNING`,
/// `name!=my::f`, … on the fields of [`TaskInfo`]).
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// let running = lumen::list_tasks_filtered(&[lumen::Filter::eq("state", "RUNNING")])?;
/// println!("{} running", running.len());
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_tasks_filtered(filters: &[Filter]) -> Result<Vec<TaskInfo>> {
    runtime::current()?;
    crate::context::refuse_blocking("lumen::list_tasks", "lumen::list_tasks_async().await")?;
    filter_rows(futures::executor::block_on(list_tasks_async())?, filters)
}

/// The attempts the cluster recorded, without blocking a thread: the async twin of
/// [`list_tasks`]. Works on any executor.
///
/// # Examples
/// ```no_run
/// # async fn run() -> lumen::Result<()> {
/// let tasks = lumen::list_tasks_async().await?;
/// println!("{} attempts", tasks.len());
/// # Ok(()) }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_tasks_async() -> impl Future<Output = Result<Vec<TaskInfo>>> + Send + 'static {
    let ask = runtime::current().map(|rt| {
        // This process's own events first: same sender, same path, so the GCS has them before
        // it answers.
        rt.report_events();
        rt.ask(
            &rt.gcs,
            ListTasks {
                job: None,
                newest: None,
            },
        )
    });
    async move { Ok(listing(ask?.await?).tasks) }
}

/// The objects every driver and worker process of the cluster holds references to (Ray's
/// `list_objects`): a row per object and process, with its size, state, owner and where its
/// value is. Each process lists at most 10,000; one that does not answer within 5 s is left out.
///
/// In async code it returns `Error::InvalidArgument` without blocking: use
/// [`list_objects_async`] there.
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// let r = lumen::put(String::from("kept"));
/// let mine = lumen::list_objects_filtered(&[lumen::Filter::eq("object_id", r.id().to_string())])?;
/// assert_eq!(mine[0].reference_type, "LOCAL_REFERENCE");
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_objects() -> Result<Vec<ObjectInfo>> {
    list_objects_filtered(&[])
}

/// The rows [`list_objects`] lists that pass every filter (`reference_type=LOCAL_REFERENCE`,
/// `state!=READY`, … on the fields of [`ObjectInfo`]).
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// let pending = lumen::list_objects_filtered(&["state=PENDING".parse()?])?;
/// println!("{} objects wait for their task", pending.len());
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_objects_filtered(filters: &[Filter]) -> Result<Vec<ObjectInfo>> {
    runtime::current()?;
    crate::context::refuse_blocking("lumen::list_objects", "lumen::list_objects_async().await")?;
    filter_rows(futures::executor::block_on(list_objects_async())?, filters)
}

/// The objects the cluster's processes hold, without blocking a thread: the async twin of
/// [`list_objects`]. Works on any executor.
///
/// # Examples
/// ```no_run
/// # async fn run() -> lumen::Result<()> {
/// let objects = lumen::list_objects_async().await?;
/// println!("{} rows", objects.len());
/// # Ok(()) }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_objects_async() -> impl Future<Output = Result<Vec<ObjectInfo>>> + Send + 'static {
    // On the runtime's event loop (its timers), awaited from any executor.
    let asked = runtime::current().map(|rt| {
        rt.executor
            .spawn(read_objects(rt.net.clone(), rt.gcs.process()))
    });
    async move {
        asked?
            .await
            .map_err(|e| crate::error::Error::shutdown(format!("listing objects: {e}")))?
    }
}

fn to_job_infos(rows: Vec<crate::protocol::gcs::JobSummary>) -> Vec<JobInfo> {
    rows.into_iter()
        .map(|j| JobInfo {
            job_id: j.job_id,
            status: j.status().to_string(),
            namespace: j.namespace,
            entrypoint: j.entrypoint,
            driver_address: j.driver.to_string(),
            driver_pid: j.driver_pid,
            start_time_ms: j.start_ms,
            end_time_ms: j.end_ms,
        })
        .collect()
}

fn to_actor_infos(rows: Vec<crate::protocol::gcs::ActorSummary>) -> Vec<ActorInfo> {
    let mut v: Vec<ActorInfo> = rows
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
