//! Task events: what each task and actor call went through (submitted by its owner, waiting for
//! its arguments on a node, running in a process, finished or failed), as processes report it to
//! the GCS and the GCS lists it.
//!
//! A [`TaskRecord`] is both what one process saw of an attempt (its owner saw the submission and,
//! for failures it found itself, the end; the process that ran it saw the rest) and what the GCS
//! keeps once every part arrived: [`TaskRecord::absorb`] merges parts in any order to the same
//! record, since each process reports on its own schedule.

use crate::ids::{ActorId, JobId, NodeId, TaskId};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Where an attempt is in its life, in the order it goes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum TaskState {
    /// Submitted by its owner; no node runs it yet.
    PendingNodeAssignment,
    /// An actor call in its actor's queue.
    SubmittedToWorker,
    /// On a worker of a node, waiting for its arguments.
    PendingArgsAvail,
    /// Running in a process.
    Running,
    /// Returned a value.
    Finished,
    /// Failed: an error, a panic, or its worker, node or actor died.
    Failed,
}

impl TaskState {
    /// Every state, in order.
    pub(crate) const ALL: [TaskState; 6] = [
        TaskState::PendingNodeAssignment,
        TaskState::SubmittedToWorker,
        TaskState::PendingArgsAvail,
        TaskState::Running,
        TaskState::Finished,
        TaskState::Failed,
    ];

    /// The state's name, as Ray's state API writes it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TaskState::PendingNodeAssignment => "PENDING_NODE_ASSIGNMENT",
            TaskState::SubmittedToWorker => "SUBMITTED_TO_WORKER",
            TaskState::PendingArgsAvail => "PENDING_ARGS_AVAIL",
            TaskState::Running => "RUNNING",
            TaskState::Finished => "FINISHED",
            TaskState::Failed => "FAILED",
        }
    }
}

/// What kind of work an attempt is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum TaskType {
    /// A remote function.
    Normal,
    /// The construction of an actor.
    ActorCreation,
    /// A call of an actor's method.
    ActorTask,
}

impl TaskType {
    /// The kind's name, as Ray's state API writes it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TaskType::Normal => "NORMAL_TASK",
            TaskType::ActorCreation => "ACTOR_CREATION_TASK",
            TaskType::ActorTask => "ACTOR_TASK",
        }
    }
}

/// One attempt of a task or actor call: what a process saw of it, or, at the GCS, everything
/// every process reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    pub(crate) task_id: TaskId,
    /// 0 for the first run; a retry is a new attempt.
    pub(crate) attempt: u32,
    /// The job of the process that submitted it.
    pub(crate) job_id: Option<JobId>,
    /// The function's path, or the actor type's and method's (`Type::method`).
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) kind: Option<TaskType>,
    /// The actor it creates or calls.
    pub(crate) actor_id: Option<ActorId>,
    /// The task that submitted it, if a task did.
    pub(crate) parent: Option<TaskId>,
    /// The furthest state anyone reported.
    pub(crate) state: TaskState,
    /// The node that ran it.
    pub(crate) node: Option<NodeId>,
    /// The process that ran it.
    pub(crate) pid: Option<u32>,
    /// Why it failed.
    pub(crate) error: Option<String>,
    /// When its owner submitted it, in microseconds since the Unix epoch.
    pub(crate) submitted_us: Option<u64>,
    /// When it started running (its arguments in hand).
    pub(crate) start_us: Option<u64>,
    /// When it finished or failed.
    pub(crate) end_us: Option<u64>,
}

impl TaskRecord {
    /// An empty record of an attempt, in its first state.
    pub(crate) fn new(task_id: TaskId, attempt: u32) -> Self {
        TaskRecord {
            task_id,
            attempt,
            job_id: None,
            name: None,
            kind: None,
            actor_id: None,
            parent: None,
            state: TaskState::PendingNodeAssignment,
            node: None,
            pid: None,
            error: None,
            submitted_us: None,
            start_us: None,
            end_us: None,
        }
    }

    /// Moves the record to `state` unless it is further already (reports of one attempt arrive
    /// out of order).
    pub(crate) fn advance(&mut self, state: TaskState) {
        self.state = self.state.max(state);
    }

    /// Merges another report of the same attempt in: the furthest state, the earliest times,
    /// and whatever this record lacks. Reports that agree merge to the same record in any order;
    /// where they disagree on the job (an actor of one job called by another), the submitter's
    /// report (the one with the submission time) names it.
    pub(crate) fn absorb(&mut self, other: TaskRecord) {
        debug_assert_eq!((self.task_id, self.attempt), (other.task_id, other.attempt));
        self.job_id = match (other.submitted_us.is_some(), self.submitted_us.is_some()) {
            (true, false) => other.job_id.or(self.job_id),
            _ => self.job_id.or(other.job_id),
        };
        self.advance(other.state);
        fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        self.submitted_us = earliest(self.submitted_us, other.submitted_us);
        self.start_us = earliest(self.start_us, other.start_us);
        self.end_us = earliest(self.end_us, other.end_us);
        if self.name.is_none() {
            self.name = other.name;
        }
        self.kind = self.kind.or(other.kind);
        self.actor_id = self.actor_id.or(other.actor_id);
        self.parent = self.parent.or(other.parent);
        self.node = self.node.or(other.node);
        self.pid = self.pid.or(other.pid);
        if self.error.is_none() {
            self.error = other.error;
        }
    }
}

/// One thing one process saw of an attempt, at `time_us` (microseconds since the Unix epoch):
/// the unit processes record and the GCS keeps, merged into [`TaskRecord`]s only when someone
/// asks (recording must cost the task almost nothing). Small on purpose: ids that may be absent
/// are raw numbers, 0 for none (no id is 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskPart {
    pub(crate) task_id: TaskId,
    pub(crate) attempt: u32,
    pub(crate) time_us: u64,
    pub(crate) what: PartInfo,
}

/// What a [`TaskPart`] says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum PartInfo {
    /// The owner submitted it (`actor`: the actor it creates or calls; `parent`: the task
    /// that submitted it; 0 for none).
    Submitted {
        job: JobId,
        name: Cow<'static, str>,
        kind: TaskType,
        actor: u128,
        parent: u128,
    },
    /// A raylet of `node` fetches its arguments before it runs.
    WaitingForArgs { node: NodeId },
    /// It waits in its actor's queue.
    Queued,
    /// It runs in process `pid` of `node`.
    Running {
        node: NodeId,
        pid: u32,
        name: Cow<'static, str>,
        kind: TaskType,
    },
    /// It returned a value.
    Finished,
    /// It failed, with this error.
    Failed { error: String },
}

impl TaskPart {
    /// The state this part puts its attempt in.
    pub(crate) fn state(&self) -> TaskState {
        match self.what {
            PartInfo::Submitted { .. } => TaskState::PendingNodeAssignment,
            PartInfo::WaitingForArgs { .. } => TaskState::PendingArgsAvail,
            PartInfo::Queued => TaskState::SubmittedToWorker,
            PartInfo::Running { .. } => TaskState::Running,
            PartInfo::Finished => TaskState::Finished,
            PartInfo::Failed { .. } => TaskState::Failed,
        }
    }
}

fn id_or_none(raw: u128) -> Option<u128> {
    (raw != 0).then_some(raw)
}

impl TaskRecord {
    /// Merges one part in (see [`absorb`](Self::absorb)).
    pub(crate) fn apply(&mut self, part: TaskPart) {
        let t = Some(part.time_us);
        let state = part.state();
        let mut r = TaskRecord::new(part.task_id, part.attempt);
        r.state = state;
        match part.what {
            PartInfo::Submitted {
                job,
                name,
                kind,
                actor,
                parent,
            } => {
                r.job_id = Some(job);
                r.name = Some(name);
                r.kind = Some(kind);
                r.actor_id = id_or_none(actor).map(ActorId);
                r.parent = id_or_none(parent).map(TaskId);
                r.submitted_us = t;
            }
            PartInfo::WaitingForArgs { node } => r.node = Some(node),
            PartInfo::Queued => {}
            PartInfo::Running {
                node,
                pid,
                name,
                kind,
            } => {
                r.node = Some(node);
                r.pid = Some(pid);
                r.name = Some(name);
                r.kind = Some(kind);
                r.start_us = t;
            }
            PartInfo::Finished => r.end_us = t,
            PartInfo::Failed { error } => {
                r.error = Some(error);
                r.end_us = t;
            }
        }
        self.absorb(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The whole story of one attempt, and the parts of it three processes might report.
    fn parts(truth: &TaskRecord, mask: [u16; 3]) -> Vec<TaskRecord> {
        mask.iter()
            .map(|m| {
                let bit = |i: u32| m & (1 << i) != 0;
                let mut r = TaskRecord::new(truth.task_id, truth.attempt);
                macro_rules! take {
                    ($($i:literal => $f:ident),*) => { $(if bit($i) { r.$f = truth.$f.clone(); })* };
                }
                take!(0 => job_id, 1 => name, 2 => kind, 3 => actor_id, 4 => parent, 5 => node,
                    6 => pid, 7 => error, 8 => submitted_us, 9 => start_us, 10 => end_us);
                if bit(11) {
                    r.state = truth.state;
                }
                r
            })
            .collect()
    }

    fn truth(state: usize, times: (u64, u64, u64)) -> TaskRecord {
        TaskRecord {
            job_id: Some(JobId(7 << 16)),
            name: Some(Cow::Borrowed("m::f")),
            kind: Some(TaskType::Normal),
            actor_id: None,
            parent: Some(TaskId(9 << 16)),
            state: TaskState::ALL[state % TaskState::ALL.len()],
            node: Some(NodeId(3 << 16)),
            pid: Some(42),
            error: Some("boom".into()),
            submitted_us: Some(times.0),
            start_us: Some(times.1),
            end_us: Some(times.2),
            ..TaskRecord::new(TaskId(5 << 16), 1)
        }
    }

    proptest! {
        /// However the parts arrive, the merged record is the same.
        #[test]
        fn parts_merge_in_any_order(
            state in 0usize..6,
            times in (0u64..1000, 0u64..1000, 0u64..1000),
            mask in proptest::array::uniform3(0u16..4096),
            order in Just([0usize, 1, 2]).prop_shuffle(),
        ) {
            let truth = truth(state, times);
            let parts = parts(&truth, mask);
            let merge = |order: &[usize]| {
                let mut r = TaskRecord::new(truth.task_id, truth.attempt);
                for &i in order {
                    r.absorb(parts[i].clone());
                }
                r
            };
            prop_assert_eq!(merge(&order), merge(&[0, 1, 2]));
        }
    }

    fn story(task: TaskId) -> Vec<TaskPart> {
        let part = |time_us, what| TaskPart {
            task_id: task,
            attempt: 0,
            time_us,
            what,
        };
        let node = NodeId(3 << 16);
        vec![
            part(
                1,
                PartInfo::Submitted {
                    job: JobId(7 << 16),
                    name: Cow::Borrowed("m::f"),
                    kind: TaskType::Normal,
                    actor: 0,
                    parent: 9 << 16,
                },
            ),
            part(2, PartInfo::WaitingForArgs { node }),
            part(
                3,
                PartInfo::Running {
                    node,
                    pid: 42,
                    name: Cow::Borrowed("m::f"),
                    kind: TaskType::Normal,
                },
            ),
            part(
                4,
                PartInfo::Failed {
                    error: "boom".into(),
                },
            ),
        ]
    }

    proptest! {
        /// However a story's parts arrive, they merge to the same record.
        #[test]
        fn parts_apply_in_any_order(order in Just([0usize, 1, 2, 3]).prop_shuffle()) {
            let task = TaskId(5 << 16);
            let parts = story(task);
            let merge = |order: &[usize]| {
                let mut r = TaskRecord::new(task, 0);
                for &i in order {
                    r.apply(parts[i].clone());
                }
                r
            };
            let r = merge(&order);
            prop_assert_eq!(&r, &merge(&[0, 1, 2, 3]));
            prop_assert_eq!(r.state, TaskState::Failed);
            prop_assert_eq!((r.submitted_us, r.start_us, r.end_us), (Some(1), Some(3), Some(4)));
            prop_assert_eq!(r.parent, Some(TaskId(9 << 16)));
            prop_assert_eq!(r.actor_id, None);
        }
    }

    #[test]
    fn a_part_is_small() {
        // The GCS keeps up to 300,000 of them.
        assert!(
            std::mem::size_of::<TaskPart>() <= 128,
            "{}",
            std::mem::size_of::<TaskPart>()
        );
    }

    #[test]
    fn the_furthest_state_and_the_earliest_times_win() {
        let mut done = TaskRecord::new(TaskId(1 << 16), 0);
        done.state = TaskState::Finished;
        done.end_us = Some(50);
        let mut running = TaskRecord::new(TaskId(1 << 16), 0);
        running.state = TaskState::Running;
        running.start_us = Some(10);
        running.end_us = Some(60);
        running.node = Some(NodeId(2 << 16));
        done.absorb(running);
        assert_eq!(done.state, TaskState::Finished);
        assert_eq!((done.start_us, done.end_us), (Some(10), Some(50)));
        assert_eq!(done.node, Some(NodeId(2 << 16)));
    }

    #[test]
    fn the_submitter_names_the_job() {
        let mut ran = TaskRecord::new(TaskId(1 << 16), 0);
        ran.job_id = Some(JobId(1 << 16));
        let mut submitted = TaskRecord::new(TaskId(1 << 16), 0);
        submitted.job_id = Some(JobId(2 << 16));
        submitted.submitted_us = Some(1);
        ran.absorb(submitted);
        assert_eq!(ran.job_id, Some(JobId(2 << 16)));
    }
}
