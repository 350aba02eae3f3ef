//! Running admitted tasks: sync ones on a worker thread (see [`thread`](crate::worker::thread)),
//! async ones on the event loop; each outcome goes to the task's owner and the raylet hears the
//! task is done.

use crate::context::ExecContext;
use crate::ids::NodeId;
use crate::invoke;
use crate::protocol::raylet::TaskDone;
use crate::protocol::svc;
use crate::protocol::task::TaskSpec;
use crate::protocol::worker::Launch;
use crate::registry::Outcome;
use crate::transport::net::{Net, Target};
use std::sync::Arc;

/// Sends a finished task's outcome to its owner.
pub(crate) fn finish(net: &Arc<Net>, spec: &TaskSpec, outcome: Outcome) {
    invoke::send_result(
        net,
        spec.owner.addr,
        spec.task_id,
        spec.return_id,
        None,
        outcome,
    );
}

/// Runs an async task on the event loop; tells the raylet when it is done.
pub(crate) fn spawn_async(
    executor: &tokio::runtime::Handle,
    net: Arc<Net>,
    launch: Launch,
    raylet: Target<svc::Raylet>,
    node: NodeId,
) {
    let Launch {
        spec,
        resolved,
        grant,
        ..
    } = launch;
    let ctx = ExecContext {
        task_id: Some(spec.task_id),
        actor_id: None,
        gpu_ids: grant.gpu_ids(),
        lends_cpu: false,
        in_async: true,
        captured: crate::context::captured_by(&spec.strategy),
    };
    executor.spawn(async move {
        let outcome = invoke::run_async(spec.clone(), resolved, node, ctx).await;
        finish(&net, &spec, outcome);
        raylet.do_send(TaskDone {
            task_id: spec.task_id,
        });
    });
}
