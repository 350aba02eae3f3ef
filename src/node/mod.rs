//! The raylet: one per node. It owns the node's resources, queues tasks until their arguments
//! are ready and their resources free, and runs them on its worker pool (one actix actor per
//! worker thread), on the node's event loop (async tasks), or in a new actor host.
//!
//! - [`Node`]: a cluster node in this process (what `lumen start` runs).
//! - [`dispatch`]: the pure queue: FIFO per scheduling class, admission never over-commits.
//! - [`executor`]: running a task body and handing its outcome to the owner (retry or store).
//! - [`pool`]: the worker pool actor: where admitted tasks and actors run.
//! - [`processes`]: a cluster node's worker processes, one per job.
//! - [`worker`]: the worker actor that runs sync tasks.
//! - [`raylet`]: the raylet actor.
//! - [`session`]: the per-user session folder of `lumen start` (tokens, node records).

mod daemon;
pub(crate) mod dispatch;
pub(crate) mod executor;
pub(crate) mod pool;
pub(crate) mod processes;
pub(crate) mod raylet;
#[doc(hidden)]
pub mod session;
mod status;
pub(crate) mod worker;

pub use daemon::{Node, NodeOptions};
pub use status::{cluster_status, ActorRow, ClusterStatus, NodeStatus, PlacementGroupRow};
