//! Assembling processes into a cluster: the one builder every process is made with, the modes a
//! process starts in (embedded, local cluster, driver, worker), the `lumen start` node, the
//! session folder of the CLI, and `lumen status`.
//!
//! - `builder`: which components a process runs, started the same way in every mode.
//! - `contact`: finding a cluster (address, token) and joining it.
//! - `modes`: `lumen::init()` in each mode, and worker mode (entered before `main`).
//! - `node`: [`Node`], a cluster node in this process (what `lumen start` runs).
//! - [`session`]: the per-user folder where `lumen start` records its nodes.
//! - `status`: what `lumen status` and `lumen list` read from a cluster.
//! - `state`: task rows, filters, summaries and the timeline of `lumen list/summary/timeline`.
//! - `web`: the head's dashboard and each node's Prometheus endpoint, behind the token.

pub(crate) mod builder;
pub(crate) mod contact;
pub(crate) mod modes;
pub(crate) mod node;
#[doc(hidden)]
pub mod session;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod web;

pub use node::{Node, NodeOptions};
pub use state::{
    chrome_trace, filter_rows, follow_node_log_at, node_log_at, objects_at, stores_at,
    summarize_objects, summarize_tasks, tasks_at, Filter, LogAdded, NodeLog, NodeLogFollower,
    ObjectInfo, ObjectSummaryRow, StoreInfo, TaskInfo, TaskListing, TaskSummaryRow,
};
pub use status::{cluster_status, ActorRow, ClusterStatus, NodeStatus, PlacementGroupRow};
