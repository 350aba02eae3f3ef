//! The public [`RuntimeContext`]: where the calling code runs.

use crate::context::{exec, ExecContext};
use crate::error::Result;
use crate::ids::{ActorId, JobId, NodeId, TaskId};
use crate::worker::runtime;

/// Where the calling code runs: node, job, and (inside a task or actor) task, actor and GPUs.
///
/// # Examples
/// ```no_run
/// #[lumen::remote]
/// fn which() -> (String, bool) {
///     let ctx = lumen::runtime_context();
///     (ctx.node_id().to_string(), ctx.task_id().is_some())
/// }
///
/// lumen::init()?;
/// let (node, in_task) = lumen::get(&which::remote())?;
/// assert!(in_task);
/// assert_eq!(node, lumen::runtime_context().node_id().to_string());
/// assert!(lumen::runtime_context().task_id().is_none()); // the driver runs no task
/// # Ok::<(), lumen::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RuntimeContext {
    node_id: NodeId,
    job_id: JobId,
    namespace: String,
    exec: ExecContext,
}

impl RuntimeContext {
    /// The node this code runs on.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The job (driver program) this code belongs to.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// The namespace named actors are looked up in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The running task or actor call; `None` in the driver.
    pub fn task_id(&self) -> Option<TaskId> {
        self.exec.task_id
    }

    /// The actor whose method or constructor is running; `None` outside actors.
    pub fn actor_id(&self) -> Option<ActorId> {
        self.exec.actor_id
    }

    /// The GPUs assigned to the running task or actor (indices on this node).
    pub fn gpu_ids(&self) -> Vec<u32> {
        self.exec.gpu_ids.clone()
    }
}

/// The context of the calling code, or `Error::NotInitialized`.
///
/// # Examples
/// ```
/// assert!(lumen::try_runtime_context().is_err()); // before lumen::init()
/// ```
pub fn try_runtime_context() -> Result<RuntimeContext> {
    let rt = runtime::current()?;
    Ok(RuntimeContext {
        node_id: rt.node_id,
        job_id: rt.job_id,
        namespace: rt.namespace.clone(),
        exec: exec(Clone::clone),
    })
}

/// The context of the calling code.
///
/// # Panics
/// If lumen is not initialized (use [`try_runtime_context`] to get an error instead).
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// println!("driver on node {}", lumen::runtime_context().node_id());
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn runtime_context() -> RuntimeContext {
    match try_runtime_context() {
        Ok(c) => c,
        Err(e) => panic!("lumen::runtime_context(): {e}"),
    }
}
