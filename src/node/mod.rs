//! The raylet: one per node. It owns the node's resources, queues tasks until their arguments
//! are ready and their resources free, sends them to the job's worker on the node (or to a
//! node that should run them instead), and starts the jobs' worker processes.
//!
//! - [`scheduler`]: the pure core: admission, dispatch, CPU lending, spillback, hosted actors
//!   and placement-group bundles, as events in and actions out.
//! - [`dispatch`]: the ready queue: FIFO per scheduling class, admission never over-commits.
//! - [`processes`]: the node's workers by job, and starting worker processes.
//! - [`output`]: reading a worker process's stdout and stderr and sending it to the driver.
//! - [`logs`]: the node's log folder, listed and read for `lumen logs` and the dashboard.
//! - [`raylet`]: the `Raylet` actix actor around the scheduler.

pub(crate) mod dispatch;
pub(crate) mod logs;
pub(crate) mod output;
pub(crate) mod processes;
pub(crate) mod raylet;
pub(crate) mod scheduler;
