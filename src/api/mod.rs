//! The user-facing API: starting and stopping, tasks, objects, the cluster's state and the
//! runtime context, actor handles and placement groups.

pub(crate) mod actor;
pub(crate) mod args;
pub(crate) mod cluster;
pub(crate) mod context;
pub(crate) mod objects;
pub(crate) mod placement_group;
pub(crate) mod task;

use crate::error::Result;

/// Starts lumen: an embedded one-node cluster in this process, with the machine's CPUs and GPUs.
///
/// Returns `Error::AlreadyInitialized` if lumen is running already, and `Error::Connection` if
/// `LUMEN_ADDRESS` names a cluster this build cannot join.
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// // ... submit tasks, create actors ...
/// lumen::shutdown();
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn init() -> Result<()> {
    init_with(crate::config::Config::default())
}

/// Starts lumen with `config`.
///
/// # Examples
/// ```no_run
/// lumen::init_with(lumen::Config::default().num_cpus(2.0).resource("node0", 2.0))?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn init_with(config: crate::config::Config) -> Result<()> {
    crate::cluster::modes::start(config)
}

/// Stops lumen: the embedded cluster's actors, tasks and objects are gone. Blocking calls in
/// progress return `Error::Shutdown`. Calling it when lumen is not running does nothing.
///
/// # Examples
/// ```
/// lumen::shutdown(); // harmless when not initialized
/// assert!(!lumen::is_initialized());
/// ```
pub fn shutdown() {
    crate::worker::runtime::stop()
}

/// Whether lumen is running in this process.
///
/// # Examples
/// ```
/// assert!(!lumen::is_initialized());
/// ```
pub fn is_initialized() -> bool {
    crate::worker::runtime::is_initialized()
}
