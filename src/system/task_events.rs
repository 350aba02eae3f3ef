//! The GCS's record of task events: the [`TaskPart`]s processes report, kept in arrival order
//! and bounded (the oldest batch dropped first, and its parts counted), merged into one [`TaskRecord`] per
//! attempt only when someone lists or counts them, so that the cost of task events while nobody
//! looks is an append per part. Cumulative counts of attempts that finished and failed, and the
//! histogram of their queue times (for metrics, which must not go down when old parts are
//! dropped), are kept as parts arrive: an attempt's queue time is counted once, when the GCS
//! first knows both its submission and its start.

use crate::ids::{JobId, TaskId};
use crate::protocol::events::{PartInfo, TaskPart, TaskRecord, TaskState};
use std::collections::{HashMap, VecDeque};

/// How many parts the GCS keeps by default: about the last 100,000 attempts (Ray keeps
/// 100,000), at three parts an attempt.
pub(crate) const MAX_PARTS: usize = 300_000;

/// Upper bounds, in seconds, of the buckets of the time from submission to start.
pub(crate) const QUEUE_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
];

/// An attempt: its task and attempt number.
type Attempt = (TaskId, u32);

/// The parts of every job, oldest first, in the batches they came in (kept whole: a batch is
/// not copied part by part, and the oldest batch goes whole when the bound is passed).
#[derive(Debug)]
pub(crate) struct TaskEvents {
    batches: VecDeque<Vec<TaskPart>>,
    /// Parts in `batches`.
    len: usize,
    cap: usize,
    /// Parts dropped here, and parts processes dropped before reporting them.
    dropped: u64,
    /// Attempts that finished and that failed, ever (dropped ones included).
    finished: u64,
    failed: u64,
    /// Queue times of attempts whose submission and start both arrived, ever.
    queue: QueueTimes,
    /// Attempts of which one of submission and start arrived so far: (submitted, started), in
    /// microseconds. Bounded by `cap` (the oldest forgotten first, never counted).
    half_known: HashMap<Attempt, (Option<u64>, Option<u64>), foldhash::fast::RandomState>,
    /// The keys of `half_known` in arrival order (some perhaps already counted and gone).
    half_order: VecDeque<Attempt>,
}

impl TaskEvents {
    /// A record keeping at most `cap` parts.
    pub(crate) fn new(cap: usize) -> Self {
        TaskEvents {
            batches: VecDeque::new(),
            len: 0,
            cap: cap.max(1),
            dropped: 0,
            finished: 0,
            failed: 0,
            queue: QueueTimes::default(),
            half_known: HashMap::default(),
            half_order: VecDeque::new(),
        }
    }

    /// Notes a part's submission or start time; counts the attempt's queue time when both are
    /// known.
    fn note_times(&mut self, p: &TaskPart) {
        let (submitted, started) = match p.what {
            PartInfo::Submitted { .. } => (Some(p.time_us), None),
            PartInfo::Running { .. } => (None, Some(p.time_us)),
            _ => return,
        };
        let key = (p.task_id, p.attempt);
        let entry = match self.half_known.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.half_order.push_back(key);
                e.insert((None, None))
            }
        };
        entry.0 = entry.0.or(submitted);
        entry.1 = entry.1.or(started);
        if let (Some(s), Some(r)) = *entry {
            self.half_known.remove(&key);
            self.queue.observe(r.saturating_sub(s) as f64 / 1e6);
        }
        // Attempts that never start (or whose other half was lost) are forgotten, oldest first.
        while self.half_known.len() > self.cap || self.half_order.len() > 2 * self.cap {
            match self.half_order.pop_front() {
                Some(old) => {
                    self.half_known.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Keeps a process's report; `dropped` counts what it could not report.
    pub(crate) fn add(&mut self, batches: Vec<Vec<TaskPart>>, dropped: u64) {
        self.dropped += dropped;
        for batch in batches {
            for p in &batch {
                // Only the process that ran an attempt says it finished; a failure is said
                // once too (by that process, or by the owner when that process is gone).
                match p.what {
                    PartInfo::Finished => self.finished += 1,
                    PartInfo::Failed { .. } => self.failed += 1,
                    _ => {}
                }
                self.note_times(p);
            }
            self.len += batch.len();
            self.batches.push_back(batch);
            while self.len > self.cap && self.batches.len() > 1 {
                if let Some(old) = self.batches.pop_front() {
                    self.len -= old.len();
                    self.dropped += old.len() as u64;
                }
            }
        }
    }

    /// One record per attempt, in the order of each attempt's first part.
    pub(crate) fn merged(&self) -> Vec<TaskRecord> {
        let mut at: HashMap<(TaskId, u32), usize, foldhash::fast::RandomState> = HashMap::default();
        let mut records: Vec<TaskRecord> = Vec::new();
        for p in self.batches.iter().flatten() {
            let key = (p.task_id, p.attempt);
            let i = *at.entry(key).or_insert_with(|| {
                records.push(TaskRecord::new(key.0, key.1));
                records.len() - 1
            });
            records[i].apply(p.clone());
        }
        records
    }

    /// The records of `job` (or of every job), oldest first; only the `newest` n, if given.
    pub(crate) fn pick(
        records: Vec<TaskRecord>,
        job: Option<JobId>,
        newest: Option<usize>,
    ) -> Vec<TaskRecord> {
        let mut picked: Vec<TaskRecord> = records
            .into_iter()
            .rev()
            .filter(|r| job.is_none() || r.job_id == job)
            .take(newest.unwrap_or(usize::MAX))
            .collect();
        picked.reverse();
        picked
    }

    /// Parts no longer kept.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Attempts ever finished and ever failed.
    pub(crate) fn ended(&self) -> (u64, u64) {
        (self.finished, self.failed)
    }

    /// The queue times of every attempt whose submission and start arrived, dropped ones
    /// included: counts that only grow, as a Prometheus histogram's must.
    pub(crate) fn queue_times(&self) -> &QueueTimes {
        &self.queue
    }
}

impl Default for TaskEvents {
    fn default() -> Self {
        TaskEvents::new(MAX_PARTS)
    }
}

/// How long after its job ended an attempt that never ended is listed as failed: the job's
/// processes report what they saw within about a second.
pub(crate) const JOB_END_GRACE_MS: u64 = 3_000;

/// Marks the attempts of jobs that ended (each with its end time, in Unix milliseconds) more
/// than [`JOB_END_GRACE_MS`] before `now_ms` that never finished or failed as failed: nothing
/// will run them any more (Ray marks them so too).
pub(crate) fn fail_abandoned(records: &mut [TaskRecord], ended: &HashMap<JobId, u64>, now_ms: u64) {
    for r in records.iter_mut() {
        let Some(end_ms) = r.job_id.and_then(|j| ended.get(&j)) else {
            continue;
        };
        if r.state < TaskState::Finished && now_ms.saturating_sub(*end_ms) > JOB_END_GRACE_MS {
            r.error = Some(format!(
                "its job ended before it finished (it was {})",
                r.state.name()
            ));
            r.state = TaskState::Failed;
        }
    }
}

/// How many of `records` are in each state (every state, zero or not).
pub(crate) fn by_state(records: &[TaskRecord]) -> Vec<(TaskState, u64)> {
    let mut counts: Vec<(TaskState, u64)> = TaskState::ALL.iter().map(|s| (*s, 0)).collect();
    for r in records {
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == r.state) {
            slot.1 += 1;
        }
    }
    counts
}

/// A histogram of the time from submission to start of attempts that started.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct QueueTimes {
    /// Per bucket of [`QUEUE_BUCKETS`], then one for longer.
    pub(crate) counts: [u64; QUEUE_BUCKETS.len() + 1],
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

impl QueueTimes {
    fn observe(&mut self, seconds: f64) {
        let i = QUEUE_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(QUEUE_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    /// The buckets as (upper bound, count), the last bound `f64::MAX`.
    pub(crate) fn buckets(&self) -> Vec<(f64, u64)> {
        QUEUE_BUCKETS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(self.counts)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use crate::protocol::events::TaskType;
    use std::borrow::Cow;

    fn part(task: u128, time_us: u64, what: PartInfo) -> TaskPart {
        TaskPart {
            task_id: TaskId(task << 16),
            attempt: 0,
            time_us,
            what,
        }
    }

    fn submitted(task: u128, job: u128, at: u64) -> TaskPart {
        part(
            task,
            at,
            PartInfo::Submitted {
                job: JobId(job << 16),
                name: Cow::Borrowed("m::f"),
                kind: TaskType::Normal,
                actor: 0,
                parent: 0,
            },
        )
    }

    fn running(task: u128, at: u64) -> TaskPart {
        part(
            task,
            at,
            PartInfo::Running {
                node: NodeId(1 << 16),
                pid: 7,
                name: Cow::Borrowed("m::f"),
                kind: TaskType::Normal,
            },
        )
    }

    #[test]
    fn an_attempt_s_parts_merge_and_its_end_counts_once() {
        let mut t = TaskEvents::new(10);
        t.add(vec![vec![running(1, 3_000), submitted(1, 1, 1_000)]], 0);
        t.add(vec![vec![part(1, 4_000, PartInfo::Finished)]], 0);
        let records = t.merged();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].state, TaskState::Finished);
        assert_eq!(t.ended(), (1, 0));
        let q = t.queue_times();
        assert_eq!((q.count, q.sum), (1, 0.002));
        assert_eq!(q.buckets()[3], (0.005, 1));
        assert_eq!(q.buckets().last(), Some(&(f64::MAX, 0)));
    }

    #[test]
    fn attempts_of_an_ended_job_fail_after_the_grace() {
        let mut t = TaskEvents::new(10);
        t.add(
            vec![vec![submitted(1, 1, 1), submitted(2, 2, 2), running(1, 3)]],
            0,
        );
        let ended: HashMap<JobId, u64> = [(JobId(1 << 16), 10_000)].into();
        let mut records = t.merged();
        fail_abandoned(&mut records, &ended, 10_000 + JOB_END_GRACE_MS);
        assert_eq!(records[0].state, TaskState::Running, "within the grace");
        fail_abandoned(&mut records, &ended, 10_001 + JOB_END_GRACE_MS);
        assert_eq!(records[0].state, TaskState::Failed);
        let e = records[0].error.as_deref().unwrap_or_default();
        assert!(e.contains("job ended") && e.contains("RUNNING"), "{e}");
        assert_eq!(
            records[1].state,
            TaskState::PendingNodeAssignment,
            "another job"
        );
    }

    #[test]
    fn the_oldest_batch_goes_first_and_is_counted() {
        let mut t = TaskEvents::new(3);
        t.add(
            vec![
                vec![
                    submitted(1, 1, 1),
                    part(1, 2, PartInfo::Failed { error: "x".into() }),
                ],
                vec![submitted(2, 2, 3)],
                vec![submitted(3, 1, 4), submitted(4, 1, 5)],
            ],
            5,
        );
        let records = t.merged();
        let ids: Vec<TaskId> = records.iter().map(|r| r.task_id).collect();
        assert_eq!(ids, vec![TaskId(2 << 16), TaskId(3 << 16), TaskId(4 << 16)]);
        assert_eq!(t.dropped(), 7);
        // The dropped attempt's end still counts.
        assert_eq!(t.ended(), (0, 1));
        let mine = TaskEvents::pick(records.clone(), Some(JobId(1 << 16)), None);
        assert_eq!(mine.len(), 2);
        let newest = TaskEvents::pick(records.clone(), None, Some(1));
        assert_eq!(newest[0].task_id, TaskId(4 << 16));
        let states = by_state(&records);
        assert!(states.contains(&(TaskState::PendingNodeAssignment, 3)));
        // A batch larger than the bound is kept whole while it is the only one.
        let mut big = TaskEvents::new(1);
        big.add(vec![vec![submitted(5, 1, 1), submitted(6, 1, 2)]], 0);
        assert_eq!(big.merged().len(), 2);
    }

    #[test]
    fn queue_times_only_grow_when_records_are_dropped() {
        let mut t = TaskEvents::new(2);
        // Submission and start in different reports, the start first.
        t.add(vec![vec![running(1, 3_000)]], 0);
        assert_eq!(t.queue_times().count, 0, "half known: not counted yet");
        t.add(vec![vec![submitted(1, 1, 1_000)]], 0);
        assert_eq!(t.queue_times().count, 1);
        let before = t.queue_times().clone();
        // Many more attempts push the first one's parts out of the record.
        for task in 2..20 {
            t.add(
                vec![vec![submitted(task, 1, 10)], vec![running(task, 20)]],
                0,
            );
            let now = t.queue_times();
            assert_eq!(now.count, task as u64, "each attempt counted once");
            for (a, b) in before.counts.iter().zip(now.counts.iter()) {
                assert!(b >= a, "a bucket went down: {:?} -> {:?}", before, now);
            }
        }
        assert!(t.merged().iter().all(|r| r.task_id != TaskId(1 << 16)));
        assert_eq!(
            t.queue_times().buckets()[3],
            (0.005, 1),
            "the dropped one stays"
        );
        // A repeated part does not count the attempt again.
        t.add(vec![vec![running(19, 30)]], 0);
        assert_eq!(t.queue_times().count, 19);
        // Attempts that never start are forgotten, within the bound.
        for task in 100..200 {
            t.add(vec![vec![submitted(task, 1, 10)]], 0);
        }
        assert!(t.half_known.len() <= 2 && t.half_order.len() <= 4);
    }
}
