//! The execution context of the current thread: which task or actor method runs here, with
//! which GPUs, whether it may block and lend its CPU, and which placement group it hands to its
//! children.
//!
//! Executors set it around each task or method (and around every poll of an async one), so
//! `runtime_context()` answers correctly on any thread, and `get` knows whether it may block
//! (never inside an async task or method) and whether it should lend its CPU back to the raylet.

use crate::error::{Error, Result};
use crate::ids::{ActorId, TaskId};
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
