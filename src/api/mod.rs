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

#[cfg(test)]
mod tests {
    /// An embedded runtime is a whole cluster in one process (GCS, raylet, worker pool, owner):
    /// every message of every service has a handler there. One without would only be refused
    /// when it first arrives, and the sender of a request would see nothing but the refusal.
    #[test]
    fn an_embedded_runtime_serves_every_message() {
        super::init_with(crate::config::Config::default().num_cpus(1.0)).expect("init");
        let rt = crate::worker::runtime::current().expect("running");
        let missing: Vec<_> = crate::protocol::TAGS
            .iter()
            .flat_map(|t| t.iter())
            .filter(|(_, tag)| !rt.net.serves(*tag))
            .collect();
        drop(rt);
        super::shutdown();
        assert!(missing.is_empty(), "no handler here for {missing:?}");
    }
}
