//! The raylet: one per node. It owns the node's resources, queues tasks until their arguments
//! are ready and their resources free, and runs them on its worker pool (one actix actor per
//! worker thread), on the node's event loop (async tasks), or in a new actor host.
//!
//! - [`dispatch`]: the pure queue: FIFO per scheduling class, admission never over-commits.
//! - [`executor`]: running a task body and handing its outcome to the owner (retry or store).
//! - [`worker`]: the worker actor that runs sync tasks.
//! - [`raylet`]: the raylet actor.

pub(crate) mod dispatch;
pub(crate) mod executor;
pub(crate) mod raylet;
pub(crate) mod worker;
