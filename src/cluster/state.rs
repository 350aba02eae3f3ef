//! The state API's task and object rows and what is made of them: [`TaskInfo`] (one attempt of a
//! task or actor call, as `lumen::list_tasks()` and `lumen list tasks` show it), [`ObjectInfo`]
//! (an object a process holds a reference to, asked of each driver and worker process),
//! [`Filter`]s over any listed rows (`--filter state=FAILED`), summaries (`lumen summary
//! tasks|objects`), and the Chrome trace of `lumen timeline`.

use crate::cluster::status::{connect, worker_entries};
use crate::error::{Error, Result};
use crate::ids::{ActorId, JobId, NodeId, ObjectId, TaskId};
use crate::protocol::events::TaskRecord;
use crate::protocol::gcs::{GetNodes, ListJobs, ListTasks, TaskList};
use crate::protocol::owner::{ListObjects, ObjectState, ObjectsHeld};
use crate::protocol::raylet::{GetWorkers, ReadLog};
use crate::protocol::svc;
use crate::transport::net::Net;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One attempt of a task, an actor's creation or an actor call, as `lumen::list_tasks()`
/// reports it (Ray's `TaskState`).
///
/// # Examples
/// ```no_run
/// #[lumen::remote]
/// fn one() -> u8 { 1 }
///
/// lumen::init()?;
/// lumen::get(&one::remote())?;
/// let tasks = lumen::list_tasks()?;
/// assert!(tasks.iter().any(|t| t.name.ends_with("one") && t.state == "FINISHED"));
/// # Ok::<(), lumen::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task's id (an actor call's id; an actor creation's).
    #[serde(serialize_with = "hex")]
    pub task_id: TaskId,
    /// 0 for the first run; each retry is another attempt, listed on its own.
    pub attempt: u32,
    /// The job that submitted it (`None` if its submitter never reported).
    #[serde(serialize_with = "hex_opt")]
    pub job_id: Option<JobId>,
    /// The function's path, or the actor type's (creation) or method's (`Type::method`); empty
    /// while no process that knows it has reported.
    pub name: String,
    /// `NORMAL_TASK`, `ACTOR_CREATION_TASK` or `ACTOR_TASK`.
    pub task_type: String,
    /// `PENDING_NODE_ASSIGNMENT`, `PENDING_ARGS_AVAIL`, `RUNNING`, `FINISHED` or `FAILED`.
    pub state: String,
    /// The actor it creates or calls.
    #[serde(serialize_with = "hex_opt")]
    pub actor_id: Option<ActorId>,
    /// The task that submitted it, if a task did.
    #[serde(serialize_with = "hex_opt")]
    pub parent_task_id: Option<TaskId>,
    /// The node it ran on.
    #[serde(serialize_with = "hex_opt")]
    pub node_id: Option<NodeId>,
    /// The process it ran in.
    pub pid: Option<u32>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was submitted, in microseconds since the Unix epoch.
    pub submitted_time_us: Option<u64>,
    /// When it started running.
    pub start_time_us: Option<u64>,
    /// When it finished or failed.
    pub end_time_us: Option<u64>,
}

/// Ids as JSON shows them: 32 hex digits (as `lumen list` prints them), not 128-bit numbers.
pub(crate) fn hex<S: serde::Serializer, T: std::fmt::Display>(
    id: &T,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(id)
}

pub(crate) fn hex_opt<S: serde::Serializer, T: std::fmt::Display>(
    id: &Option<T>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

impl TaskInfo {
    pub(crate) fn from_record(r: TaskRecord) -> Self {
        TaskInfo {
            task_id: r.task_id,
            attempt: r.attempt,
            job_id: r.job_id,
            name: r.name.map(|n| n.into_owned()).unwrap_or_default(),
            task_type: r
                .kind
                .map(|k| k.name())
                .unwrap_or("NORMAL_TASK")
                .to_string(),
            state: r.state.name().to_string(),
            actor_id: r.actor_id,
            parent_task_id: r.parent,
            node_id: r.node,
            pid: r.pid,
            error: r.error,
            submitted_time_us: r.submitted_us,
            start_time_us: r.start_us,
            end_time_us: r.end_us,
        }
    }
}

/// A condition on listed rows: `key=value` or `key!=value` (Ray's `--filter`), where `key` is a
/// field of the row as `--format json` names it and `value` is compared with its text.
///
/// # Examples
/// ```
/// let f: lumen::Filter = "state=FAILED".parse()?;
/// assert_eq!(f.to_string(), "state=FAILED");
/// assert!("state".parse::<lumen::Filter>().is_err());
/// # Ok::<(), lumen::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    key: String,
    value: String,
    equal: bool,
}

impl Filter {
    /// Rows whose `key` is `value`.
    pub fn eq(key: impl Into<String>, value: impl Into<String>) -> Self {
        Filter {
            key: key.into(),
            value: value.into(),
            equal: true,
        }
    }

    /// Rows whose `key` is not `value`.
    pub fn ne(key: impl Into<String>, value: impl Into<String>) -> Self {
        Filter {
            equal: false,
            ..Filter::eq(key, value)
        }
    }

    /// Whether `row` (a JSON object) passes; an error names the fields when it has no `key`.
    fn accepts(&self, row: &serde_json::Value) -> Result<bool> {
        let Some(field) = row.get(&self.key) else {
            let fields: Vec<&str> = row
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            return Err(Error::invalid(format!(
                "filter {self}: the rows have no field {:?}; their fields: {}",
                self.key,
                fields.join(", ")
            )));
        };
        let text = match field {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            // As Ray's: `alive=1` and `alive=True` mean `alive=true`.
            serde_json::Value::Bool(b) => {
                let wanted = matches!(self.value.to_ascii_lowercase().as_str(), "true" | "1");
                return Ok((*b == wanted) == self.equal);
            }
            other => other.to_string(),
        };
        // Ids are compared case-insensitively, states as Ray writes them (upper case) or not.
        Ok(text.eq_ignore_ascii_case(&self.value) == self.equal)
    }
}

impl std::str::FromStr for Filter {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "filter {s:?}: write it as key=value or key!=value (for example state=FAILED)"
            ))
        };
        let (key, value, equal) = match s.split_once("!=") {
            Some((k, v)) => (k, v, false),
            None => s
                .split_once('=')
                .map(|(k, v)| (k, v, true))
                .ok_or_else(bad)?,
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(bad());
        }
        Ok(Filter {
            key: key.to_string(),
            value: value.trim().to_string(),
            equal,
        })
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = if self.equal { "=" } else { "!=" };
        write!(f, "{}{op}{}", self.key, self.value)
    }
}

/// The rows that pass every filter, in their order; an error names a filter's unknown field.
///
/// # Examples
/// ```
/// #[derive(serde::Serialize)]
/// struct Row { state: &'static str }
/// let rows = vec![Row { state: "RUNNING" }, Row { state: "FAILED" }];
/// let failed = lumen::cluster::filter_rows(rows, &["state=FAILED".parse()?])?;
/// assert_eq!(failed.len(), 1);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn filter_rows<T: Serialize>(rows: Vec<T>, filters: &[Filter]) -> Result<Vec<T>> {
    if filters.is_empty() {
        return Ok(rows);
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let json = serde_json::to_value(&row)
            .map_err(|e| Error::invalid(format!("a row could not be written as JSON: {e}")))?;
        let mut pass = true;
        for f in filters {
            pass &= f.accepts(&json)?;
        }
        if pass {
            out.push(row);
        }
    }
    Ok(out)
}

/// The attempts of one function (or actor method), by state: a line of `lumen summary tasks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskSummaryRow {
    /// The function's or method's path.
    pub name: String,
    /// `NORMAL_TASK`, `ACTOR_CREATION_TASK` or `ACTOR_TASK`.
    pub task_type: String,
    /// How many attempts are in each state.
    pub state_counts: BTreeMap<String, usize>,
}

/// Attempts per function and state, busiest function first (Ray's `summarize_tasks`), as
/// `lumen summary tasks` prints them.
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// for row in lumen::cluster::summarize_tasks(&lumen::list_tasks()?) {
///     println!("{} {:?}", row.name, row.state_counts);
/// }
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn summarize_tasks(tasks: &[TaskInfo]) -> Vec<TaskSummaryRow> {
    let mut by: BTreeMap<(&str, &str), BTreeMap<String, usize>> = BTreeMap::new();
    for t in tasks {
        *by.entry((t.name.as_str(), t.task_type.as_str()))
            .or_default()
            .entry(t.state.clone())
            .or_default() += 1;
    }
    let mut rows: Vec<TaskSummaryRow> = by
        .into_iter()
        .map(|((name, kind), state_counts)| TaskSummaryRow {
            name: name.to_string(),
            task_type: kind.to_string(),
            state_counts,
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.state_counts.values().sum::<usize>()));
    rows
}

/// The attempts that ran as a Chrome trace (the JSON object format `chrome://tracing` and
/// Perfetto read): one complete event (`"ph": "X"`) per attempt that started, on a process row
/// per node and a thread row per worker process; an attempt still running ends at `now_us`
/// (microseconds since the Unix epoch). `lumen timeline` writes it.
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// let trace = lumen::cluster::chrome_trace(&lumen::list_tasks()?, 0);
/// std::fs::write("timeline.json", trace.to_string())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn chrome_trace(tasks: &[TaskInfo], now_us: u64) -> serde_json::Value {
    let mut nodes: BTreeMap<NodeId, usize> = BTreeMap::new();
    for t in tasks {
        if let Some(n) = t.node_id {
            let next = nodes.len() + 1;
            nodes.entry(n).or_insert(next);
        }
    }
    let mut events: Vec<serde_json::Value> = nodes
        .iter()
        .map(|(node, pid)| {
            serde_json::json!({
                "name": "process_name", "ph": "M", "pid": pid,
                "args": { "name": format!("node {node}") },
            })
        })
        .collect();
    for t in tasks {
        let (Some(start), Some(node)) = (t.start_time_us, t.node_id) else {
            continue;
        };
        let end = t.end_time_us.unwrap_or(now_us).max(start);
        events.push(serde_json::json!({
            "name": if t.name.is_empty() { t.task_id.to_string() } else { t.name.clone() },
            "cat": t.task_type,
            "ph": "X",
            "ts": start,
            "dur": end - start,
            "pid": nodes.get(&node).copied().unwrap_or(0),
            "tid": t.pid.unwrap_or(0),
            "args": {
                "task_id": t.task_id.to_string(),
                "attempt": t.attempt,
                "state": t.state,
                "job_id": t.job_id.map(|j| j.to_string()),
                "actor_id": t.actor_id.map(|a| a.to_string()),
                "error": t.error,
            },
        }));
    }
    serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ms" })
}

/// The attempts a cluster keeps, as [`tasks_at`] reads them.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TaskListing {
    /// Every attempt kept, oldest first.
    pub tasks: Vec<TaskInfo>,
    /// Task events no longer kept (the GCS keeps the last 300,000, about 100,000 attempts) or
    /// never reported (a process's buffer was full).
    pub dropped: u64,
    /// Attempts that ever finished, in every job (those no longer kept included).
    pub finished_total: u64,
    /// Attempts that ever failed, in every job.
    pub failed_total: u64,
}

/// Reads the attempts the cluster at `address` keeps, of every job (`None`: `LUMEN_ADDRESS`,
/// else the head on this machine), as `lumen list tasks` does.
///
/// # Examples
/// ```no_run
/// let listing = lumen::cluster::tasks_at(Some("127.0.0.1:6379"), None)?;
/// println!("{} attempts, {} dropped", listing.tasks.len(), listing.dropped);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn tasks_at(address: Option<&str>, token: Option<&str>) -> Result<TaskListing> {
    let (client, gcs_addr) = connect(address, token)?;
    let gcs = client.net.target::<svc::Gcs>(gcs_addr);
    let list = client
        .block_on(async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                gcs.send(ListTasks {
                    job: None,
                    newest: None,
                }),
            )
            .await
        })?
        .map_err(|_| Error::connection(gcs_addr, "no answer within 10 s"))??;
    Ok(listing(list))
}

/// The rows of a GCS's answer.
pub(crate) fn listing(list: TaskList) -> TaskListing {
    TaskListing {
        tasks: list.tasks.into_iter().map(TaskInfo::from_record).collect(),
        dropped: list.dropped,
        finished_total: list.finished,
        failed_total: list.failed,
    }
}

/// One object a process holds a reference to, as `lumen::list_objects()` reports it (Ray's
/// `ObjectState`): a row per object and process, so an object shared by three processes is three
/// rows, one of them its owner's.
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// let r = lumen::put(vec![0u8; 1 << 20]);
/// let objects = lumen::list_objects()?;
/// assert!(objects.iter().any(|o| o.object_id == r.id() && o.size == Some(1 << 20)));
/// # Ok::<(), lumen::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// The object's id.
    #[serde(serialize_with = "hex")]
    pub object_id: ObjectId,
    /// Its value's bytes, once known to this process.
    pub size: Option<u64>,
    /// `PENDING` (its task has not returned), `READY` or `FAILED`.
    pub state: String,
    /// Why this process holds it: `LOCAL_REFERENCE` (its code holds a ref), `USED_BY_PENDING_TASK`
    /// (a task that takes it has not finished), `BORROWED` (other processes hold refs to this
    /// owned object), `ACTOR_HANDLE` (it anchors an actor's handles), or `CAPTURED_IN_OBJECT`.
    pub reference_type: String,
    /// Where its owner listens.
    pub owner_address: String,
    /// Whether this process owns it.
    pub owned: bool,
    /// The nodes its value is on, as far as this process knows (an owner's own objects are on
    /// its node, a large task result on the node of the process that made and keeps it, first,
    /// then the nodes of processes that read it and keep a copy; a borrower asks the owner).
    #[serde(serialize_with = "hex_list")]
    pub locations: Vec<NodeId>,
    /// The node of the process that holds this reference.
    #[serde(serialize_with = "hex")]
    pub node_id: NodeId,
    /// The process that holds this reference.
    pub pid: u32,
    /// Its job.
    #[serde(serialize_with = "hex")]
    pub job_id: JobId,
    /// The task that returns it (`None` for a `put`).
    #[serde(serialize_with = "hex_opt")]
    pub task_id: Option<TaskId>,
}

fn hex_list<S: serde::Serializer>(ids: &[NodeId], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(|id| id.to_string()))
}

/// The objects a listing asks each process for, at most.
const OBJECTS_PER_PROCESS: u32 = 10_000;

/// The rows of one process's answer.
fn object_rows(held: ObjectsHeld, here: SocketAddr) -> Vec<ObjectInfo> {
    held.objects
        .into_iter()
        .map(|o| {
            let reference_type = if o.actor_handle {
                "ACTOR_HANDLE"
            } else if o.local > 0 {
                "LOCAL_REFERENCE"
            } else if o.pinned > 0 {
                "USED_BY_PENDING_TASK"
            } else if o.borrowers > 0 {
                "BORROWED"
            } else {
                "CAPTURED_IN_OBJECT"
            };
            let owned = o.owner.is_none();
            ObjectInfo {
                object_id: o.id,
                size: o.size,
                state: o.state.name().to_string(),
                reference_type: reference_type.to_string(),
                owner_address: o.owner.unwrap_or(here).to_string(),
                owned,
                locations: {
                    let mut at = match o.kept_on {
                        Some(node) => vec![node],
                        None if owned && o.state != ObjectState::Pending => vec![held.node],
                        None => Vec::new(),
                    };
                    for node in &o.copies_on {
                        if !at.contains(node) {
                            at.push(*node);
                        }
                    }
                    at
                },
                node_id: held.node,
                pid: held.pid,
                job_id: held.job,
                task_id: o.id.task(),
            }
        })
        .collect()
}

/// Asks every driver and worker process of the cluster whose GCS is at `gcs_addr` which objects
/// it holds references to (each at most [`OBJECTS_PER_PROCESS`]); a process that does not
/// answer within 5 s is left out.
pub(crate) async fn read_objects(net: Arc<Net>, gcs_addr: SocketAddr) -> Result<Vec<ObjectInfo>> {
    Ok(read_held(net, gcs_addr, OBJECTS_PER_PROCESS)
        .await?
        .into_iter()
        .flat_map(|(addr, held)| object_rows(held, addr))
        .collect())
}

/// One process's object store, as `lumen memory` shows it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct StoreInfo {
    /// The node the process is on.
    #[serde(serialize_with = "hex")]
    pub node_id: NodeId,
    /// The process (a driver, a job's worker process, an embedded runtime).
    pub pid: u32,
    /// Its job.
    #[serde(serialize_with = "hex")]
    pub job_id: JobId,
    /// Its cap on bytes in memory (`object_store_memory`).
    pub capacity: u64,
    /// Objects in its store, in memory or spilled, and their bytes.
    pub objects: usize,
    /// Bytes of those objects.
    pub bytes: u64,
    /// Bytes in memory now.
    pub memory_bytes: u64,
    /// Objects spilled to disk, and their bytes.
    pub spilled_objects: usize,
    /// Bytes spilled to disk.
    pub spilled_bytes: u64,
    /// Task results it made and keeps for their owners (primary copies); the other objects in
    /// its store are its own, or copies it pulled (secondary).
    pub kept_copies: usize,
}

/// Reads the object store of every driver and worker process of the cluster at `address`, as
/// `lumen memory` does (`None`: `LUMEN_ADDRESS`, else the head on this machine).
///
/// # Examples
/// ```no_run
/// for s in lumen::cluster::stores_at(Some("127.0.0.1:6379"), None)? {
///     println!("{} pid {}: {} of {} bytes in memory", s.node_id, s.pid, s.memory_bytes, s.capacity);
/// }
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn stores_at(address: Option<&str>, token: Option<&str>) -> Result<Vec<StoreInfo>> {
    let (client, gcs_addr) = connect(address, token)?;
    let net = client.net.clone();
    let held = client.block_on(read_held(net, gcs_addr, 0))??;
    let mut rows: Vec<StoreInfo> = held
        .into_iter()
        .map(|(_, h)| StoreInfo {
            node_id: h.node,
            pid: h.pid,
            job_id: h.job,
            capacity: h.store.capacity,
            objects: h.store.objects,
            bytes: h.store.bytes,
            memory_bytes: h.store.memory_bytes,
            spilled_objects: h.store.spilled_objects,
            spilled_bytes: h.store.spilled_bytes,
            kept_copies: h.store.kept_copies,
        })
        .collect();
    rows.sort_by_key(|r| (r.node_id, r.pid));
    Ok(rows)
}

/// What every live driver and worker process of the cluster holds (at most `limit` objects
/// listed each), with its address; a process that does not answer within 5 s is left out.
async fn read_held(
    net: Arc<Net>,
    gcs_addr: SocketAddr,
    listed: u32,
) -> Result<Vec<(SocketAddr, ObjectsHeld)>> {
    let gcs = net.target::<svc::Gcs>(gcs_addr);
    let limit = Duration::from_secs(5);
    let jobs = tokio::time::timeout(limit, gcs.send(ListJobs))
        .await
        .map_err(|_| Error::connection(gcs_addr, "no answer within 5 s"))??;
    let nodes = gcs.send(GetNodes).await?;
    let per_node = futures::future::join_all(nodes.iter().filter(|n| n.alive).map(|n| {
        let raylet = net.target::<svc::Raylet>(n.address);
        let node = n.node_id;
        async move {
            let workers = tokio::time::timeout(limit, raylet.send(GetWorkers)).await;
            (node, workers.ok().and_then(|w| w.ok()).unwrap_or_default())
        }
    }))
    .await;
    let processes: Vec<SocketAddr> = worker_entries(&jobs, per_node)
        .into_iter()
        .filter(|w| w.alive)
        .filter_map(|w| w.address)
        .collect();
    let answers = futures::future::join_all(processes.into_iter().map(|addr| {
        let owner = net.target::<svc::Owner>(addr);
        async move {
            let ask = owner.send(ListObjects { limit: listed });
            match tokio::time::timeout(limit, ask).await {
                Ok(Ok(held)) => Some((addr, held)),
                _ => None,
            }
        }
    }))
    .await;
    Ok(answers.into_iter().flatten().collect())
}

/// Reads the objects the processes of the cluster at `address` hold references to, as
/// `lumen list objects` does (`None`: `LUMEN_ADDRESS`, else the head on this machine).
///
/// # Examples
/// ```no_run
/// for o in lumen::cluster::objects_at(Some("127.0.0.1:6379"), None)? {
///     println!("{} {:?} {}", o.object_id, o.size, o.reference_type);
/// }
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn objects_at(address: Option<&str>, token: Option<&str>) -> Result<Vec<ObjectInfo>> {
    let (client, gcs_addr) = connect(address, token)?;
    let net = client.net.clone();
    client.block_on(read_objects(net, gcs_addr))?
}

/// A node's log folder, or the last lines of one of its logs, as [`node_log_at`] reads them.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct NodeLog {
    /// The node read.
    #[serde(serialize_with = "hex")]
    pub node_id: NodeId,
    /// Its logs, by name, with their sizes (when the folder was listed).
    pub files: Vec<(String, u64)>,
    /// The last lines of the log asked for.
    pub text: Option<String>,
}

/// Reads node `node`'s (its id, or a prefix) log `name`, its last `lines` lines, or without a
/// name lists its logs, through the node itself: any node of the cluster at `address`, on any
/// machine, as `lumen logs --node` does.
///
/// # Examples
/// ```no_run
/// let listed = lumen::cluster::node_log_at(Some("127.0.0.1:6379"), None, "3f2a", None, 0)?;
/// for (name, bytes) in listed.files {
///     println!("{name} {bytes}");
/// }
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn node_log_at(
    address: Option<&str>,
    token: Option<&str>,
    node: &str,
    name: Option<&str>,
    lines: u32,
) -> Result<NodeLog> {
    let (client, gcs_addr) = connect(address, token)?;
    let net = client.net.clone();
    let prefix = node.to_ascii_lowercase();
    let name = name.map(str::to_string);
    client.block_on(async move {
        let (node_id, raylet) = find_raylet(&net, gcs_addr, &prefix).await?;
        let read = read_log(
            &net,
            raylet,
            ReadLog {
                name,
                lines,
                from: None,
            },
        )
        .await?;
        Ok(NodeLog {
            node_id,
            files: read.files.into_iter().map(|f| (f.name, f.bytes)).collect(),
            text: read.text,
        })
    })?
}

/// How long a node may take to answer a log read.
const LOG_READ_LIMIT: Duration = Duration::from_secs(10);

/// The live node whose id starts with `prefix`, and its raylet's address.
async fn find_raylet(
    net: &Arc<Net>,
    gcs_addr: SocketAddr,
    prefix: &str,
) -> Result<(NodeId, SocketAddr)> {
    let nodes = tokio::time::timeout(
        LOG_READ_LIMIT,
        net.target::<svc::Gcs>(gcs_addr).send(GetNodes),
    )
    .await
    .map_err(|_| Error::connection(gcs_addr, "no answer within 10 s"))??;
    let found: Vec<_> = nodes
        .iter()
        .filter(|n| n.node_id.to_string().starts_with(prefix))
        .collect();
    let [n] = found[..] else {
        return Err(Error::invalid(format!(
            "{} node of the cluster has an id starting with {prefix}",
            if found.is_empty() {
                "no"
            } else {
                "more than one"
            }
        )));
    };
    if !n.alive {
        return Err(Error::invalid(format!("node {} is dead", n.node_id)));
    }
    Ok((n.node_id, n.address))
}

async fn read_log(
    net: &Arc<Net>,
    raylet: SocketAddr,
    msg: ReadLog,
) -> Result<crate::protocol::raylet::LogRead> {
    tokio::time::timeout(LOG_READ_LIMIT, net.target::<svc::Raylet>(raylet).send(msg))
        .await
        .map_err(|_| Error::connection(raylet, "no answer within 10 s"))??
}

/// A log of a node, followed through the node itself (on any machine): what
/// [`follow_node_log_at`] returns, and `lumen logs --node ID NAME --follow` polls. It holds one
/// connection to the cluster for as long as it lives.
///
/// # Examples
/// ```no_run
/// let (last, mut log) =
///     lumen::cluster::follow_node_log_at(None, None, "3f2a", "worker-4123.out", 10)?;
/// print!("{last}");
/// loop {
///     let added = log.poll()?;
///     if added.text.is_empty() {
///         std::thread::sleep(std::time::Duration::from_millis(500));
///     }
///     print!("{}", added.text);
/// }
/// # Ok::<(), lumen::Error>(())
/// ```
#[must_use = "a follower reads nothing until polled"]
pub struct NodeLogFollower {
    client: crate::cluster::builder::Assembly,
    raylet: SocketAddr,
    node_id: NodeId,
    name: String,
    /// The position read up to.
    offset: u64,
}

impl std::fmt::Debug for NodeLogFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLogFollower")
            .field("node_id", &self.node_id)
            .field("name", &self.name)
            .field("offset", &self.offset)
            .finish()
    }
}

/// What [`NodeLogFollower::poll`] read.
///
/// # Examples
/// ```no_run
/// # let (_, mut log) = lumen::cluster::follow_node_log_at(None, None, "3f2a", "node.log", 0)?;
/// let added = log.poll()?;
/// if added.restarted {
///     eprintln!("(the log was truncated: from its start)");
/// }
/// print!("{}", added.text);
/// # Ok::<(), lumen::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogAdded {
    /// What was added since the last read (empty: nothing; at most 1 MiB at a time).
    pub text: String,
    /// The log had become shorter than what was read of it (truncated, or replaced by a new
    /// file of that name): `text` is from its start.
    pub restarted: bool,
}

impl NodeLogFollower {
    /// The node read.
    ///
    /// # Examples
    /// ```no_run
    /// let (_, log) = lumen::cluster::follow_node_log_at(None, None, "3f2a", "node.log", 0)?;
    /// println!("following a log of node {}", log.node_id());
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Reads what was added to the log since the last read (nothing waits: an empty text says
    /// nothing was added; poll again later).
    ///
    /// # Examples
    /// ```no_run
    /// let (_, mut log) = lumen::cluster::follow_node_log_at(None, None, "3f2a", "node.log", 0)?;
    /// print!("{}", log.poll()?.text);
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn poll(&mut self) -> Result<LogAdded> {
        let net = self.client.net.clone();
        let (raylet, name, from) = (self.raylet, self.name.clone(), self.offset);
        let read = self.client.block_on(async move {
            read_log(
                &net,
                raylet,
                ReadLog {
                    name: Some(name),
                    lines: 0,
                    from: Some(from),
                },
            )
            .await
        })??;
        let end = read.end.ok_or_else(|| {
            Error::invalid(format!(
                "node {} runs a lumen too old to follow a log from another machine",
                self.node_id
            ))
        })?;
        self.offset = end;
        Ok(LogAdded {
            text: read.text.unwrap_or_default(),
            restarted: read.restarted,
        })
    }
}

/// Reads the last `lines` lines of node `node`'s (its id, or a prefix) log `name` through the
/// node itself, on any machine, and returns them with a [`NodeLogFollower`] that reads what is
/// added after them.
///
/// # Examples
/// ```no_run
/// let (last, mut log) =
///     lumen::cluster::follow_node_log_at(Some("127.0.0.1:6379"), None, "3f2a", "node.log", 5)?;
/// print!("{last}{}", log.poll()?.text);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn follow_node_log_at(
    address: Option<&str>,
    token: Option<&str>,
    node: &str,
    name: &str,
    lines: u32,
) -> Result<(String, NodeLogFollower)> {
    let (client, gcs_addr) = connect(address, token)?;
    let net = client.net.clone();
    let prefix = node.to_ascii_lowercase();
    let msg_name = name.to_string();
    let (node_id, raylet, read) = client.block_on(async move {
        let (node_id, raylet) = find_raylet(&net, gcs_addr, &prefix).await?;
        let read = read_log(
            &net,
            raylet,
            ReadLog {
                name: Some(msg_name),
                lines,
                from: None,
            },
        )
        .await?;
        Ok::<_, Error>((node_id, raylet, read))
    })??;
    let offset = read.end.ok_or_else(|| {
        Error::invalid(format!(
            "node {node_id} runs a lumen too old to follow a log from another machine"
        ))
    })?;
    let follower = NodeLogFollower {
        client,
        raylet,
        node_id,
        name: name.to_string(),
        offset,
    };
    Ok((read.text.unwrap_or_default(), follower))
}

/// Objects per reference type and state, with their bytes: a line of `lumen summary objects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectSummaryRow {
    /// Why they are held (see [`ObjectInfo::reference_type`]).
    pub reference_type: String,
    /// `PENDING`, `READY` or `FAILED`.
    pub state: String,
    /// How many rows.
    pub count: usize,
    /// Their known bytes.
    pub bytes: u64,
}

/// Object rows per reference type and state, largest first (Ray's `summarize_objects`).
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// for row in lumen::cluster::summarize_objects(&lumen::list_objects()?) {
///     println!("{} {} {} {}", row.reference_type, row.state, row.count, row.bytes);
/// }
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn summarize_objects(objects: &[ObjectInfo]) -> Vec<ObjectSummaryRow> {
    let mut by: BTreeMap<(&str, &str), (usize, u64)> = BTreeMap::new();
    for o in objects {
        let slot = by
            .entry((o.reference_type.as_str(), o.state.as_str()))
            .or_default();
        slot.0 += 1;
        slot.1 += o.size.unwrap_or(0);
    }
    let mut rows: Vec<ObjectSummaryRow> = by
        .into_iter()
        .map(|((kind, state), (count, bytes))| ObjectSummaryRow {
            reference_type: kind.to_string(),
            state: state.to_string(),
            count,
            bytes,
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.bytes));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::events::{TaskState, TaskType};
    use std::borrow::Cow;

    fn task(n: u128, name: &'static str, state: TaskState, times: Option<(u64, u64)>) -> TaskInfo {
        TaskInfo::from_record(TaskRecord {
            name: Some(Cow::Borrowed(name)),
            kind: Some(TaskType::Normal),
            state,
            node: times.map(|_| NodeId(1 << 16)),
            pid: times.map(|_| 7),
            start_us: times.map(|t| t.0),
            end_us: times.and_then(|t| (t.1 > 0).then_some(t.1)),
            ..TaskRecord::new(TaskId(n << 16), 0)
        })
    }

    #[test]
    fn filters_parse_match_and_name_unknown_fields() {
        let rows = vec![
            task(1, "m::a", TaskState::Finished, None),
            task(2, "m::b", TaskState::Failed, None),
        ];
        let failed = filter_rows(rows.clone(), &["state=failed".parse().unwrap()]).unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].name, "m::b");
        let others = filter_rows(rows.clone(), &["name!=m::b".parse().unwrap()]).unwrap();
        #[derive(Serialize)]
        struct Flag {
            alive: bool,
        }
        let flags = [Flag { alive: true }, Flag { alive: false }];
        for yes in ["alive=true", "alive=1", "alive=True", "alive!=false"] {
            let kept = filter_rows(flags.iter().collect(), &[yes.parse().unwrap()]).unwrap();
            assert!(kept.len() == 1 && kept[0].alive, "{yes}");
        }
        assert_eq!(others[0].name, "m::a");
        let err = filter_rows(rows, &[Filter::eq("colour", "red")]).unwrap_err();
        assert!(err.to_string().contains("task_id"), "{err}");
        assert!("=x".parse::<Filter>().is_err());
    }

    #[test]
    fn a_summary_counts_states_per_function() {
        let rows = vec![
            task(1, "m::a", TaskState::Finished, None),
            task(2, "m::a", TaskState::Failed, None),
            task(3, "m::a", TaskState::Finished, None),
            task(4, "m::b", TaskState::Running, None),
        ];
        let s = summarize_tasks(&rows);
        assert_eq!(s[0].name, "m::a");
        assert_eq!(s[0].state_counts.get("FINISHED"), Some(&2));
        assert_eq!(s[0].state_counts.get("FAILED"), Some(&1));
        assert_eq!(s[1].state_counts.get("RUNNING"), Some(&1));
    }

    #[test]
    fn the_trace_has_one_complete_event_per_started_attempt() {
        let rows = vec![
            task(1, "m::a", TaskState::Finished, Some((10, 30))),
            task(2, "m::a", TaskState::Running, Some((20, 0))),
            task(3, "m::b", TaskState::PendingNodeAssignment, None),
        ];
        let trace = chrome_trace(&rows, 100);
        let events = trace["traceEvents"].as_array().unwrap();
        let spans: Vec<(u64, u64)> = events
            .iter()
            .filter(|e| e["ph"] == "X")
            .map(|e| (e["ts"].as_u64().unwrap(), e["dur"].as_u64().unwrap()))
            .collect();
        assert_eq!(spans, vec![(10, 20), (20, 80)]);
    }
}
