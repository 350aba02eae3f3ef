//! The core worker: the part of lumen in every process that runs user code or owns objects (a
//! driver, a worker process, an embedded runtime).
//!
//! - [`runtime`]: this process's runtime: job, switchboard, reference table, actor callers,
//!   tasks in flight; task submission.
//! - [`owner`]: the owner's message handlers: results arriving, reads of owned objects,
//!   borrowers, dead nodes and actors.
//! - [`placement`]: the placement groups this process created, as the GCS last reported them.
//! - [`pool`]: the worker pool: where admitted tasks and actors run in this process.
//! - [`thread`]: the worker-thread actor that runs sync tasks.
//! - [`executor`]: running admitted tasks and handing their outcomes on.
//! - [`leases`]: the owner's leased worker slots and the tasks waiting for them.

pub(crate) mod executor;
pub(crate) mod leases;
pub(crate) mod owner;
pub(crate) mod placement;
pub(crate) mod pool;
pub(crate) mod runtime;
pub(crate) mod thread;
