//! The task events this process records: what it saw of each task and actor call it submitted
//! or ran, as [`TaskPart`]s appended to a process-wide buffer until they are reported to the GCS
//! (every second from each node and core worker, when asked to list tasks, and when a runtime
//! stops).
//!
//! Recording is an uncontended lock (each thread has its shard of the buffer), a clock read and a
//! push of a small part, with no allocation (names are the static paths the registry and the
//! macros give), on the task's path; merging parts into records waits until someone lists them.
//! Each shard is bounded: past [`MAX_PENDING`] parts, new ones are counted as dropped instead,
//! and the count reaches the GCS with the next report, as Ray's task event buffer does.

use crate::error::Error;
use crate::ids::{ActorId, JobId, NodeId, TaskId};
use crate::protocol::events::{PartInfo, TaskPart, TaskType};
use crate::protocol::gcs::AddTaskEvents;
use crate::protocol::svc;
use crate::transport::net::Target;
use parking_lot::Mutex;
use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most parts held between two reports, per shard (see [`SHARDS`]).
pub(crate) const MAX_PENDING: usize = 100_000;

/// How often a process reports (Ray's default too).
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Buffer {
    parts: Vec<TaskPart>,
    dropped: u64,
}

/// Buffers, one per group of threads: a thread pushes to its own, so the threads that submit
/// and run tasks never write to one cache line in turn (a shared buffer cost a cross-core
/// transfer per part).
const SHARDS: usize = 16;

/// One shard, on cache lines of its own.
#[repr(align(128))]
struct Shard(Mutex<Buffer>);

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Shard = Shard(parking_lot::const_mutex(Buffer {
    parts: Vec::new(),
    dropped: 0,
}));

static BUFFERS: [Shard; SHARDS] = [EMPTY; SHARDS];

/// This thread's shard.
fn shard() -> &'static Mutex<Buffer> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    &BUFFERS[MINE.with(|m| *m)].0
}

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
    /// Keeps a part, unless the buffer is full (then counts it).
    fn push(&mut self, task_id: TaskId, attempt: u32, what: PartInfo) {
        if self.parts.len() >= MAX_PENDING {
            self.dropped += 1;
            return;
        }
        self.parts.push(TaskPart {
            task_id,
            attempt,
            time_us: now_us(),
            what,
        });
    }

    fn drain(&mut self) -> (Vec<TaskPart>, u64) {
        // Room for as many as last time: the next second's parts are not copied as it grows.
        let room = Vec::with_capacity(self.parts.len());
        (
            std::mem::replace(&mut self.parts, room),
            std::mem::take(&mut self.dropped),
        )
    }
}

fn push(task_id: TaskId, attempt: u32, what: PartInfo) {
    shard().lock().push(task_id, attempt, what);
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
    push(
        task,
        attempt,
        PartInfo::Submitted {
            job,
            name,
            kind,
            actor: actor.map_or(0, |a| a.0),
            parent: parent.map_or(0, |p| p.0),
        },
    );
}

/// A caller submitted a call of `actor`'s `method` (its path).
pub(crate) fn call_submitted(
    task: TaskId,
    job: JobId,
    actor: ActorId,
    method: &'static str,
    parent: Option<TaskId>,
) {
    submitted(
        task,
        0,
        job,
        Cow::Borrowed(method),
        TaskType::ActorTask,
        Some(actor),
        parent,
    );
}

/// A raylet of `node` fetches the attempt's arguments before it runs.
pub(crate) fn waiting_for_args(task: TaskId, attempt: u32, node: NodeId) {
    push(task, attempt, PartInfo::WaitingForArgs { node });
}

/// An attempt starts running in this process, on `node`.
pub(crate) fn running(
    task: TaskId,
    attempt: u32,
    node: NodeId,
    name: Cow<'static, str>,
    kind: TaskType,
) {
    push(
        task,
        attempt,
        PartInfo::Running {
            node,
            pid: pid(),
            name,
            kind,
        },
    );
}

/// An actor call reached its actor's process and waits in its queue.
pub(crate) fn queued(task: TaskId) {
    push(task, 0, PartInfo::Queued);
}

/// An attempt ended: with its value, or with `error`.
pub(crate) fn ended(task: TaskId, attempt: u32, error: Option<&Error>) {
    let what = match error {
        None => PartInfo::Finished,
        Some(e) => PartInfo::Failed {
            error: e.to_string(),
        },
    };
    push(task, attempt, what);
}

/// Takes what was recorded since the last call: each shard's parts, and how many were dropped.
fn drain() -> (Vec<Vec<TaskPart>>, u64) {
    let mut batches = Vec::new();
    let mut dropped = 0;
    for shard in &BUFFERS {
        let (parts, d) = shard.0.lock().drain();
        if !parts.is_empty() {
            batches.push(parts);
        }
        dropped += d;
    }
    (batches, dropped)
}

/// Sends `gcs` what this process recorded since it last reported.
pub(crate) fn report(gcs: &Target<svc::Gcs>) {
    let (batches, dropped) = drain();
    if !batches.is_empty() || dropped > 0 {
        gcs.do_send(AddTaskEvents { batches, dropped });
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
    use crate::protocol::events::{TaskRecord, TaskState};

    #[test]
    fn an_attempt_s_parts_merge_into_its_record() {
        let mut b = Buffer::default();
        let task = TaskId::fresh();
        let (job, node) = (JobId(77 << 16), NodeId(1 << 16));
        let what = |name: &'static str| Cow::Borrowed(name);
        b.push(
            task,
            0,
            PartInfo::Submitted {
                job,
                name: what("m::f"),
                kind: TaskType::Normal,
                actor: 0,
                parent: 0,
            },
        );
        b.push(task, 0, PartInfo::WaitingForArgs { node });
        b.push(
            task,
            0,
            PartInfo::Running {
                node,
                pid: pid(),
                name: what("m::f"),
                kind: TaskType::Normal,
            },
        );
        b.push(
            task,
            0,
            PartInfo::Failed {
                error: "bad".into(),
            },
        );
        let (parts, dropped) = b.drain();
        assert_eq!((parts.len(), dropped), (4, 0));
        let mut r = TaskRecord::new(task, 0);
        for p in parts {
            r.apply(p);
        }
        assert_eq!(r.state, TaskState::Failed);
        assert_eq!((r.job_id, r.pid), (Some(job), Some(std::process::id())));
        assert_eq!(r.error.as_deref(), Some("bad"));
        assert!(r.submitted_us <= r.start_us && r.start_us <= r.end_us);
        assert_eq!(b.drain(), (Vec::new(), 0));
    }

    #[test]
    fn a_full_buffer_counts_what_it_drops() {
        let mut b = Buffer::default();
        for _ in 0..MAX_PENDING + 3 {
            b.push(TaskId::fresh(), 0, PartInfo::Finished);
        }
        let (parts, dropped) = b.drain();
        assert_eq!((parts.len(), dropped), (MAX_PENDING, 3));
    }
}
