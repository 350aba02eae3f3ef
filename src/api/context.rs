//! What code is running where: the per-thread execution context of tasks and actor methods, and
//! the public [`RuntimeContext`].
//!
//! Executors set the context around each task or method (and around every poll of an async one),
//! so `runtime_context()` answers correctly on any thread, and `get` knows whether it may block
//! (never inside an async task or method) and whether it should lend its CPU back to the raylet.

use crate::error::{Error, Result};
use crate::ids::{ActorId, JobId, NodeId, TaskId};
use crate::runtime;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The execution context of the current thread.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExecContext {
    pub(crate) task_id: Option<TaskId>,
    pub(crate) actor_id: Option<ActorId>,
    pub(crate) gpu_ids: Vec<u32>,
    /// A normal task holding CPU: a blocking `get` lends it back to the raylet.
    pub(crate) lends_cpu: bool,
    /// Inside an async task or method: blocking calls are refused.
    pub(crate) in_async: bool,
    /// The placement group that tasks and actors submitted from here go into by default (the
    /// running task's or actor's group, when it asked to capture its children).
    pub(crate) captured: Option<crate::placement::SchedulingStrategy>,
}

/// The group a task or actor created with `strategy` hands to its children, if it captures them.
pub(crate) fn captured_by(
    strategy: &crate::placement::SchedulingStrategy,
) -> Option<crate::placement::SchedulingStrategy> {
    match strategy {
        crate::placement::SchedulingStrategy::PlacementGroup {
            group,
            capture_child_tasks: true,
            ..
        } => Some(crate::placement::SchedulingStrategy::PlacementGroup {
            group: *group,
            bundle_index: None,
            capture_child_tasks: true,
        }),
        _ => None,
    }
}

thread_local! {
    static EXEC: RefCell<ExecContext> = RefCell::new(ExecContext::default());
}

/// Runs `f` with `ctx` as this thread's context.
pub(crate) fn with_exec<R>(ctx: ExecContext, f: impl FnOnce() -> R) -> R {
    let prev = EXEC.with(|e| std::mem::replace(&mut *e.borrow_mut(), ctx));
    struct Restore(Option<ExecContext>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(prev) = self.0.take() {
                EXEC.with(|e| *e.borrow_mut() = prev);
            }
        }
    }
    let _restore = Restore(Some(prev));
    f()
}

/// Reads the current thread's context.
pub(crate) fn exec<R>(f: impl FnOnce(&ExecContext) -> R) -> R {
    EXEC.with(|e| f(&e.borrow()))
}

/// A future that runs every poll of `inner` inside `ctx`.
pub(crate) struct WithExec<F> {
    ctx: ExecContext,
    inner: Pin<Box<F>>,
}

impl<F> WithExec<F> {
    pub(crate) fn new(ctx: ExecContext, inner: F) -> Self {
        WithExec {
            ctx,
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for WithExec<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let ctx = this.ctx.clone();
        let inner = this.inner.as_mut();
        with_exec(ctx, move || inner.poll(cx))
    }
}

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

/// Refuses blocking calls inside async tasks and methods.
pub(crate) fn refuse_blocking_in_async(what: &str) -> Result<()> {
    if exec(|e| e.in_async) {
        return Err(Error::invalid(format!(
            "{what} blocks the thread and is not allowed inside an async task or actor method: \
             `.await` the ObjectRef instead"
        )));
    }
    Ok(())
}
