//! The head's dashboard: one HTML page (`page.html`, in the binary) and the JSON it polls.
//!
//! | path | answer |
//! |---|---|
//! | `/` | the page: cluster overview, nodes, actors, placement groups, jobs, workers, logs |
//! | `/api/status` | everything below at once (what `lumen status --format json` prints) |
//! | `/api/nodes` | each node: address, head, alive, resources total and available, demands |
//! | `/api/actors` | each actor: id, class, name, state, node |
//! | `/api/placement_groups` | each placement group: state, strategy, bundles and their nodes |
//! | `/api/jobs` | the running jobs, then the last ones that ended |
//! | `/api/workers` | each running job's driver and each node's job worker processes |
//! | `/api/tasks` | task attempts: counts by state, and the newest 200 (function, state, node, pid, error) |
//! | `/api/logs?node=ID` | a node's log files (default: the head's): name, bytes, modified |
//! | `/api/logs/{name}?node=ID&lines=N` | the last N lines (default 200) of one of them, as text |
//!
//! The page renders each table from one endpoint, so a new table (tasks, objects) is a new
//! endpoint here and one render function there. Cluster state is read over the head's own
//! switchboard with the code of `lumen status` ([`read_cluster`]); one read serves every
//! endpoint asked within [`FRESH`] of it, so a page polling six endpoints costs one read.

use crate::cluster::state::{listing, TaskInfo};
use crate::cluster::status::{read_cluster, ClusterStatus};
use crate::error::{Error, Result};
use crate::node::logs::{list_logs, log_path, tail, LogFile};
use crate::protocol::gcs::{CountTasks, ListTasks};
use crate::protocol::raylet::{LogRead, ReadLog};
use crate::protocol::svc;
use crate::transport::net::Net;
use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The page, in the binary.
const PAGE: &str = include_str!("page.html");

/// How long one read of the cluster serves the endpoints.
const FRESH: Duration = Duration::from_millis(500);

/// How long one read of the cluster may take.
const READ_LIMIT: Duration = Duration::from_secs(10);

/// Lines of a log shown when the request does not say, and at most.
const DEFAULT_LINES: usize = 200;
const MAX_LINES: usize = 5000;

/// What the dashboard's handlers share.
pub(crate) struct Dashboard {
    net: Arc<Net>,
    gcs: SocketAddr,
    /// The session folder's logs on this machine, if the node keeps them.
    log_dir: Option<PathBuf>,
    /// The last read of the cluster, and when it was made.
    last: tokio::sync::Mutex<Option<(Instant, Arc<ClusterStatus>)>>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dashboard(GCS {})", self.gcs)
    }
}

impl Dashboard {
    /// The dashboard of the cluster whose GCS is at `gcs`, read over `net`, showing the logs in
    /// `log_dir`.
    pub(crate) fn new(net: Arc<Net>, gcs: SocketAddr, log_dir: Option<PathBuf>) -> Dashboard {
        Dashboard {
            net,
            gcs,
            log_dir,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The cluster's state, read at most [`FRESH`] ago.
    async fn status(&self) -> Result<Arc<ClusterStatus>> {
        // Held across the read: requests arriving meanwhile wait for it instead of reading too.
        let mut last = self.last.lock().await;
        if let Some((at, s)) = last.as_ref() {
            if at.elapsed() < FRESH {
                return Ok(s.clone());
            }
        }
        let read = tokio::time::timeout(READ_LIMIT, read_cluster(self.net.clone(), self.gcs))
            .await
            .map_err(|_| Error::connection(self.gcs, "the cluster did not answer within 10 s"))??;
        let read = Arc::new(read);
        *last = Some((Instant::now(), read.clone()));
        Ok(read)
    }
}

/// An error as the API answers it: a status and `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(StatusCode::BAD_GATEWAY, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

/// The dashboard's routes (the token guard is added by the server).
pub(crate) fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(all))
        .route("/api/nodes", get(nodes))
        .route("/api/actors", get(actors))
        .route("/api/placement_groups", get(placement_groups))
        .route("/api/jobs", get(jobs))
        .route("/api/workers", get(workers))
        .route("/api/tasks", get(tasks))
        .route("/api/logs", get(logs))
        .route("/api/logs/{name}", get(log_tail))
        .with_state(dashboard)
}

async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

type Shared = State<Arc<Dashboard>>;

async fn all(State(d): Shared) -> Result<Json<ClusterStatus>, ApiError> {
    Ok(Json(d.status().await?.as_ref().clone()))
}

/// One field of the cluster's state, as JSON.
async fn part<T: Serialize>(
    d: &Dashboard,
    pick: impl FnOnce(&ClusterStatus) -> &T,
) -> Result<Response, ApiError> {
    let s = d.status().await?;
    Ok(Json(pick(&s)).into_response())
}

async fn nodes(State(d): Shared) -> Result<Response, ApiError> {
    part(&d, |s| &s.nodes).await
}

async fn actors(State(d): Shared) -> Result<Response, ApiError> {
    part(&d, |s| &s.actors).await
}

async fn placement_groups(State(d): Shared) -> Result<Response, ApiError> {
    part(&d, |s| &s.placement_groups).await
}

async fn jobs(State(d): Shared) -> Result<Response, ApiError> {
    part(&d, |s| &s.jobs).await
}

async fn workers(State(d): Shared) -> Result<Response, ApiError> {
    part(&d, |s| &s.workers).await
}

/// How many attempts `/api/tasks` shows.
const RECENT_TASKS: u32 = 200;

/// The cluster's task attempts, as `/api/tasks` answers: counts by state of those the GCS keeps,
/// and the newest ones, newest first.
#[derive(Serialize)]
struct Tasks {
    states: Vec<(String, u64)>,
    finished_total: u64,
    failed_total: u64,
    recent: Vec<TaskInfo>,
}

async fn tasks(State(d): Shared) -> Result<Response, ApiError> {
    let gcs = d.net.target::<svc::Gcs>(d.gcs);
    let ask = async {
        let counts = gcs.send(CountTasks).await?;
        let list = gcs
            .send(ListTasks {
                job: None,
                newest: Some(RECENT_TASKS),
            })
            .await?;
        Ok::<_, Error>((counts, list))
    };
    let (counts, list) = tokio::time::timeout(READ_LIMIT, ask)
        .await
        .map_err(|_| Error::connection(d.gcs, "the cluster did not answer within 10 s"))??;
    let mut recent = listing(list).tasks;
    recent.reverse();
    Ok(Json(Tasks {
        states: counts.by_state,
        finished_total: counts.finished,
        failed_total: counts.failed,
        recent,
    })
    .into_response())
}

/// `?node=ID&lines=N` of a log request: the node (its id or a prefix; none: the head) and how
/// many last lines.
#[derive(Debug, Deserialize)]
struct LogQuery {
    node: Option<String>,
    lines: Option<usize>,
}

/// Where node `prefix`'s raylet listens, unless it is the head (whose logs are read here).
async fn other_node(d: &Dashboard, prefix: Option<&str>) -> Result<Option<SocketAddr>, ApiError> {
    let Some(prefix) = prefix.map(str::to_ascii_lowercase) else {
        return Ok(None);
    };
    let s = d.status().await?;
    let found: Vec<_> = s
        .nodes
        .iter()
        .filter(|n| n.node_id.starts_with(&prefix))
        .collect();
    match found[..] {
        [n] if n.head => Ok(None),
        [n] => n.address.parse().map(Some).map_err(|_| {
            ApiError(
                StatusCode::BAD_GATEWAY,
                format!(
                    "node {} has an address that is not one: {}",
                    n.node_id, n.address
                ),
            )
        }),
        [] => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no node of the cluster has an id starting with {prefix}"),
        )),
        _ => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("more than one node has an id starting with {prefix}"),
        )),
    }
}

/// Asks another node's raylet for its log folder or one of its logs.
async fn read_remote(d: &Dashboard, at: SocketAddr, msg: ReadLog) -> Result<LogRead, ApiError> {
    let raylet = d.net.target::<svc::Raylet>(at);
    tokio::time::timeout(READ_LIMIT, raylet.send(msg))
        .await
        .map_err(|_| Error::connection(at, "the node did not answer within 10 s"))?
        .map_err(ApiError::from)?
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))
}

async fn logs(State(d): Shared, Query(q): Query<LogQuery>) -> Result<Json<Vec<LogFile>>, ApiError> {
    if let Some(at) = other_node(&d, q.node.as_deref()).await? {
        let read = read_remote(
            &d,
            at,
            ReadLog {
                name: None,
                lines: 0,
                from: None,
            },
        )
        .await?;
        return Ok(Json(read.files));
    }
    let Some(dir) = d.log_dir.clone() else {
        return Ok(Json(Vec::new()));
    };
    let files = tokio::task::spawn_blocking(move || list_logs(&dir))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(files))
}

async fn log_tail(
    State(d): Shared,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let lines = q.lines.unwrap_or(DEFAULT_LINES).min(MAX_LINES);
    let text = match other_node(&d, q.node.as_deref()).await? {
        Some(at) => {
            let msg = ReadLog {
                name: Some(name),
                lines: lines as u32,
                from: None,
            };
            read_remote(&d, at, msg).await?.text.unwrap_or_default()
        }
        None => {
            let not_found = || {
                ApiError(
                    StatusCode::NOT_FOUND,
                    format!("no log named {name:?}: /api/logs lists them"),
                )
            };
            let dir = d.log_dir.clone().ok_or_else(not_found)?;
            let path = log_path(&dir, &name).ok_or_else(not_found)?;
            tokio::task::spawn_blocking(move || tail(&path, lines))
                .await
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .map_err(|e| {
                    ApiError(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot read {name}: {}", crate::error::describe_io(&e)),
                    )
                })?
        }
    };
    let mut response = text.into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}
