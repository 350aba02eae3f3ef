//! The task events this process records: what it saw of each task and actor call it submitted
//! or ran, merged per attempt in a process-wide buffer until the runtime reports them to the
//! GCS (every second from each node and core worker, when asked to list tasks, and when a
//! runtime stops).
//!
//! Recording is a lock and a hash-map update (no allocation for names: they are the static
//! paths the registry and the macros give). The buffer is bounded: past [`MAX_PENDING`]
//! attempts, new ones are counted as dropped instead, and the count reaches the GCS with the
//! next report, as Ray's task event buffer does.

use crate::error::Error;
use crate::ids::{ActorId, JobId, NodeId, TaskId};
use crate::protocol::events::{TaskRecord, TaskState, TaskType};
use crate::protocol::gcs::AddTaskEvents;
use crate::protocol::svc;
use crate::transport::net::Target;
use parking_lot::Mutex;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most attempts held between two reports.
pub(crate) const MAX_PENDING: usize = 100_000;

/// How often a process reports (Ray's default too).
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

type Key = (TaskId, u32);

#[derive(Default)]
struct Buffer {
    pending: HashMap<Key, TaskRecord, foldhash::fast::RandomState>,
    dropped: u64,
}

static BUFFER: LazyLock<Mutex<Buffer>> = LazyLock::new(Mutex::default);

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn pid() -> u32 {
    static PID: LazyLock<u32> = LazyLock::new(std::process::id);
    *PID
}

impl Buffer {
    /// Updates this process's record of an attempt.
    fn record(&mut self, task: TaskId, attempt: u32, f: impl FnOnce(&mut TaskRecord)) {
        let len = self.pending.len();
        match self.pending.entry((task, attempt)) {
            std::collections::hash_map::Entry::Occupied(mut e) => f(e.get_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                if len >= MAX_PENDING {
                    self.dropped += 1;
                    return;
                }
                f(e.insert(TaskRecord::new(task, attempt)));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn submitted(
        &mut self,
        task: TaskId,
        attempt: u32,
        job: JobId,
        name: Cow<'static, str>,
        kind: TaskType,
        actor: Option<ActorId>,
        parent: Option<TaskId>,
    ) {
        let now = now_us();
        self.record(task, attempt, |r| {
            r.job_id = Some(job);
            if r.name.is_none() {
                r.name = Some(name);
            }
            r.kind = Some(kind);
            r.actor_id = actor.or(r.actor_id);
            r.parent = parent.or(r.parent);
            r.submitted_us.get_or_insert(now);
        });
    }

    fn call_submitted(
        &mut self,
        task: TaskId,
        job: JobId,
        actor: ActorId,
        method: &'static str,
        parent: Option<TaskId>,
    ) {
        let now = now_us();
        self.record(task, 0, |r| {
            r.job_id = Some(job);
            r.name = Some(Cow::Borrowed(method));
            r.kind = Some(TaskType::ActorTask);
            r.actor_id = Some(actor);
            r.parent = parent.or(r.parent);
            r.submitted_us.get_or_insert(now);
        });
    }

    fn started(
        &mut self,
        task: TaskId,
        attempt: u32,
        node: NodeId,
        name: Cow<'static, str>,
        kind: TaskType,
        state: TaskState,
    ) {
        let now = now_us();
        self.record(task, attempt, |r| {
            if r.name.is_none() {
                r.name = Some(name);
            }
            r.kind.get_or_insert(kind);
            r.node = Some(node);
            r.advance(state);
            if state == TaskState::Running {
                r.pid = Some(pid());
                r.start_us.get_or_insert(now);
            }
        });
    }

    fn queued(&mut self, task: TaskId) {
        self.record(task, 0, |r| r.advance(TaskState::SubmittedToWorker));
    }

    fn ended(&mut self, task: TaskId, attempt: u32, error: Option<&Error>) {
        let now = now_us();
        self.record(task, attempt, |r| {
            r.end_us.get_or_insert(now);
            match error {
                None => r.advance(TaskState::Finished),
                Some(e) => {
                    r.advance(TaskState::Failed);
                    if r.error.is_none() {
                        r.error = Some(e.to_string());
                    }
                }
            }
        });
    }

    fn drain(&mut self) -> (Vec<TaskRecord>, u64) {
        if self.pending.is_empty() && self.dropped == 0 {
            return (Vec::new(), 0);
        }
        let pending = std::mem::take(&mut self.pending);
        (
            pending.into_values().collect(),
            std::mem::take(&mut self.dropped),
        )
    }
}

/// The owner submitted an attempt of a task, or an actor's creation.
pub(crate) fn submitted(
    task: TaskId,
    attempt: u32,
    job: JobId,
    name: Cow<'static, str>,
    kind: TaskType,
    actor: Option<ActorId>,
    parent: Option<TaskId>,
) {
    BUFFER
        .lock()
        .submitted(task, attempt, job, name, kind, actor, parent);
}

/// A caller submitted a call of `actor`'s `method` (its path).
pub(crate) fn call_submitted(
    task: TaskId,
    job: JobId,
    actor: ActorId,
    method: &'static str,
    parent: Option<TaskId>,
) {
    BUFFER
        .lock()
        .call_submitted(task, job, actor, method, parent);
}

/// An attempt reached `node` and is now in `state`: waiting for its arguments (at the raylet or
/// the worker), or running in this process.
pub(crate) fn started(
    task: TaskId,
    attempt: u32,
    node: NodeId,
    name: Cow<'static, str>,
    kind: TaskType,
    state: TaskState,
) {
    BUFFER
        .lock()
        .started(task, attempt, node, name, kind, state);
}

/// An actor call reached its actor's process and waits in its queue.
pub(crate) fn queued(task: TaskId) {
    BUFFER.lock().queued(task);
}

/// An attempt ended: with its value, or with `error`.
pub(crate) fn ended(task: TaskId, attempt: u32, error: Option<&Error>) {
    BUFFER.lock().ended(task, attempt, error);
}

/// Takes what was recorded since the last call: the records, and how many were dropped.
fn drain() -> (Vec<TaskRecord>, u64) {
    BUFFER.lock().drain()
}

/// Sends `gcs` what this process recorded since it last reported.
pub(crate) fn report(gcs: &Target<svc::Gcs>) {
    let (records, dropped) = drain();
    if !records.is_empty() || dropped > 0 {
        gcs.do_send(AddTaskEvents { records, dropped });
    }
}

/// Reports to `gcs` every [`REPORT_EVERY`] on `runtime`, until that runtime stops.
pub(crate) fn spawn_reporter(runtime: &tokio::runtime::Handle, gcs: Target<svc::Gcs>) {
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            report(&gcs);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_is_one_record_however_many_events() {
        let mut b = Buffer::default();
        let task = TaskId::fresh();
        let job = JobId(77 << 16);
        let name: Cow<'static, str> = Cow::Borrowed("m::f");
        b.submitted(task, 0, job, name.clone(), TaskType::Normal, None, None);
        let node = NodeId(1 << 16);
        b.started(
            task,
            0,
            node,
            name.clone(),
            TaskType::Normal,
            TaskState::PendingArgsAvail,
        );
        b.started(task, 0, node, name, TaskType::Normal, TaskState::Running);
        b.ended(task, 0, Some(&Error::invalid("bad")));
        let (records, dropped) = b.drain();
        assert_eq!((records.len(), dropped), (1, 0));
        let r = &records[0];
        assert_eq!(r.state, TaskState::Failed);
        assert_eq!((r.job_id, r.pid), (Some(job), Some(std::process::id())));
        assert!(r.error.as_deref().is_some_and(|e| e.contains("bad")));
        assert!(r.submitted_us <= r.start_us && r.start_us <= r.end_us);
        assert_eq!(b.drain(), (Vec::new(), 0));
    }

    #[test]
    fn a_full_buffer_counts_what_it_drops() {
        let mut b = Buffer::default();
        for _ in 0..MAX_PENDING + 3 {
            b.ended(TaskId::fresh(), 0, None);
        }
        let (records, dropped) = b.drain();
        assert_eq!((records.len(), dropped), (MAX_PENDING, 3));
    }
}
