//! A worker thread: an actix actor on its own thread that runs sync tasks, one at a time.
//!
//! The [`Executors`](crate::worker::pool::Executors) keep idle workers and start more when every
//! one is busy (including when a task blocks in `get` and lends its CPU to another task), as
//! Ray's worker pool does.

use crate::context::{with_exec, ExecContext};
use crate::ids::NodeId;
use crate::invoke;
use crate::protocol::worker::Launch;
use crate::transport::net::Net;
use crate::worker::executor;
use crate::worker::pool::Finished;
use actix::prelude::*;
use std::sync::Arc;

/// Runs one task.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Execute(pub(crate) Launch);

/// Stops the worker and its thread.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Retire;

/// A worker thread.
pub(crate) struct Worker {
    pub(crate) node: NodeId,
    pub(crate) net: Arc<Net>,
    /// Told when a task is done (and this worker free).
    pub(crate) home: Recipient<Finished>,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Execute> for Worker {
    type Result = ();
    fn handle(&mut self, msg: Execute, ctx: &mut Context<Self>) {
        let Launch {
            spec,
            resolved,
            grant,
        } = msg.0;
        let span =
            tracing::debug_span!("task", task = %spec.task_id, function = %spec.function.path);
        let _enter = span.enter();
        let exec = ExecContext {
            task_id: Some(spec.task_id),
            actor_id: None,
            gpu_ids: grant.gpu_ids(),
            lends_cpu: !grant.cpu_part().is_empty(),
            in_async: false,
            captured: crate::context::captured_by(&spec.strategy),
        };
        let node = self.node;
        let outcome = with_exec(exec, || invoke::run_sync(&spec, resolved, node));
        executor::finish(&self.net, &spec, outcome);
        self.home.do_send(Finished {
            task_id: spec.task_id,
            worker: ctx.address(),
        });
    }
}

impl Handler<Retire> for Worker {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        ctx.stop();
        Arbiter::current().stop();
    }
}
