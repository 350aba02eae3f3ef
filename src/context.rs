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
    /// The task its raylet counts the CPU under, when not the running task itself: the lease
    /// a pushed task runs under.
    pub(crate) holder: Option<TaskId>,
    /// Inside an async task or method: blocking calls are refused.
    pub(crate) in_async: bool,
    /// The placement group that tasks and actors submitted from here go into by default (the
    /// running task's or actor's group, when it asked to capture its children).
    pub(crate) captured: Option<crate::placement::SchedulingStrategy>,
}

/// The group the task or actor `spec` hands to its children, if it captures them; the bundles it
/// carries are remembered here, so that those children are checked against them.
pub(crate) fn captured_by(
    spec: &crate::protocol::task::TaskSpec,
) -> Option<crate::placement::SchedulingStrategy> {
    match &spec.strategy {
        crate::placement::SchedulingStrategy::PlacementGroup {
            group,
            capture_child_tasks: true,
            ..
        } => {
            crate::placement::group::learn(&spec.strategy, spec.group_bundles.as_ref());
            Some(crate::placement::SchedulingStrategy::PlacementGroup {
                group: *group,
                bundle_index: None,
                capture_child_tasks: true,
            })
        }
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

/// The async code a thread runs, where blocking calls are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AsyncContext {
    /// A lumen async task or async actor method.
    LumenAsync,
    /// A tokio runtime's code (on one of its workers, inside its `block_on`, or with its context
    /// entered), outside any lumen sync task or sync actor method.
    Tokio,
}

/// Whether this thread runs async code, where a blocking call could stall an executor: inside a
/// lumen async task or async actor method, or on a thread of any tokio runtime unless a lumen
/// sync task or sync actor method runs here (those may block: sync tasks run on threads that
/// have a tokio context of their own, and lend their CPU while blocked).
pub(crate) fn async_context() -> Option<AsyncContext> {
    let (in_async, in_sync_task) = exec(|e| (e.in_async, e.task_id.is_some() && !e.in_async));
    if in_async {
        Some(AsyncContext::LumenAsync)
    } else if !in_sync_task && tokio::runtime::Handle::try_current().is_ok() {
        Some(AsyncContext::Tokio)
    } else {
        None
    }
}

/// The refusal of a blocking call `what` in `context`, naming the async twin `instead`.
fn refusal(what: &str, instead: &str, context: AsyncContext) -> Error {
    let here = match context {
        AsyncContext::LumenAsync => "inside a lumen async task or async actor method",
        AsyncContext::Tokio => "on a thread of a tokio runtime (async code)",
    };
    Error::invalid(format!(
        "{what} blocks the calling thread, and it was called {here}, where blocking could stall \
         the executor and every task on it; use the async twin instead: `{instead}`"
    ))
}

/// Refuses the blocking call `what` in async code (see [`async_context`]) with an error that
/// names its async twin `instead`; `Ok` where blocking is allowed.
pub(crate) fn refuse_blocking(what: &str, instead: &str) -> Result<()> {
    match async_context() {
        Some(context) => Err(refusal(what, instead, context)),
        None => Ok(()),
    }
}

/// For blocking calls that cannot return an error: whether `what` must not block here. The
/// first refusal of each `what` in this process is logged with `tracing::error!`, naming the
/// twin `instead`; the caller then answers without blocking.
pub(crate) fn refuse_blocking_logged(what: &'static str, instead: &str) -> bool {
    let Some(context) = async_context() else {
        return false;
    };
    static LOGGED: parking_lot::Mutex<Vec<&'static str>> = parking_lot::Mutex::new(Vec::new());
    let first = {
        let mut logged = LOGGED.lock();
        let first = !logged.contains(&what);
        if first {
            logged.push(what);
        }
        first
    };
    if first {
        tracing::error!(
            "{} (it answered at once, without waiting; later refusals of {what} are not logged)",
            refusal(what, instead, context)
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_threads_may_block_and_tokio_threads_may_not() {
        assert_eq!(async_context(), None);
        assert!(refuse_blocking("lumen::x", "lumen::x_async").is_ok());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            assert_eq!(async_context(), Some(AsyncContext::Tokio));
            let e = refuse_blocking("lumen::x", "lumen::x_async(..).await").unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
            assert!(text.contains("lumen::x_async(..).await"), "{text}");
            assert!(text.contains("tokio runtime"), "{text}");
        });
        // Entering a runtime's context counts too: tokio code may run here.
        let _guard = rt.enter();
        assert_eq!(async_context(), Some(AsyncContext::Tokio));
    }

    #[test]
    fn sync_tasks_may_block_even_with_a_tokio_context_and_async_ones_never() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let guard = rt.enter();
        let sync_task = ExecContext {
            task_id: Some(TaskId::fresh()),
            ..ExecContext::default()
        };
        with_exec(sync_task.clone(), || assert_eq!(async_context(), None));
        let async_task = ExecContext {
            in_async: true,
            ..sync_task
        };
        drop(guard);
        with_exec(async_task, || {
            assert_eq!(async_context(), Some(AsyncContext::LumenAsync));
            let e = refuse_blocking("lumen::get", "lumen::get_async(&r).await").unwrap_err();
            assert!(e.to_string().contains("async task"), "{e}");
        });
    }

    #[test]
    fn a_refusal_without_an_error_is_logged_once_per_kind() {
        assert!(!refuse_blocking_logged("lumen::y", "lumen::y_async"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            assert!(refuse_blocking_logged("lumen::y", "lumen::y_async"));
            assert!(refuse_blocking_logged("lumen::y", "lumen::y_async"));
        });
    }
}
