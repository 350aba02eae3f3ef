//! The GCS's record of task events: one [`TaskRecord`] per attempt, merged from what each
//! process reports, bounded (the oldest attempt is dropped first and counted), and cumulative
//! counts of attempts by the state they ended in (for metrics, which must not go down when old
//! records are dropped).

use crate::ids::{JobId, TaskId};
use crate::protocol::events::{TaskRecord, TaskState};
use std::collections::{HashMap, VecDeque};

/// How many attempts the GCS keeps by default (Ray keeps 100,000).
pub(crate) const MAX_TASKS: usize = 100_000;

/// The attempts of every job, oldest first.
#[derive(Debug)]
pub(crate) struct TaskEvents {
    records: HashMap<(TaskId, u32), TaskRecord>,
    /// Arrival order, for dropping the oldest.
    order: VecDeque<(TaskId, u32)>,
    cap: usize,
    /// Attempts dropped here, and records processes dropped before reporting them.
    dropped: u64,
    /// Attempts that finished and that failed, ever (dropped ones included).
    finished: u64,
    failed: u64,
}

impl TaskEvents {
    /// A record keeping at most `cap` attempts.
    pub(crate) fn new(cap: usize) -> Self {
        TaskEvents {
            records: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
            dropped: 0,
            finished: 0,
            failed: 0,
        }
    }

    /// Merges a process's report in; `dropped` counts what it could not report.
    pub(crate) fn add(&mut self, records: Vec<TaskRecord>, dropped: u64) {
        self.dropped += dropped;
        for r in records {
            let key = (r.task_id, r.attempt);
            match self.records.get_mut(&key) {
                Some(old) => {
                    let was_done = old.state.is_done();
                    old.absorb(r);
                    if !was_done {
                        Self::count_end(&mut self.finished, &mut self.failed, old.state);
                    }
                }
                None => {
                    if self.records.len() >= self.cap {
                        self.drop_oldest();
                    }
                    Self::count_end(&mut self.finished, &mut self.failed, r.state);
                    self.order.push_back(key);
                    self.records.insert(key, r);
                }
            }
        }
    }

    fn count_end(finished: &mut u64, failed: &mut u64, state: TaskState) {
        match state {
            TaskState::Finished => *finished += 1,
            TaskState::Failed => *failed += 1,
            _ => {}
        }
    }

    fn drop_oldest(&mut self) {
        while let Some(key) = self.order.pop_front() {
            if self.records.remove(&key).is_some() {
                self.dropped += 1;
                return;
            }
        }
    }

    /// The attempts of `job` (or of every job), oldest first (only the `newest` n, if given),
    /// with how many were dropped.
    pub(crate) fn list(&self, job: Option<JobId>, newest: Option<usize>) -> (Vec<TaskRecord>, u64) {
        let mut tasks: Vec<TaskRecord> = self
            .order
            .iter()
            .rev()
            .filter_map(|k| self.records.get(k))
            .filter(|r| job.is_none() || r.job_id == job)
            .take(newest.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        tasks.reverse();
        (tasks, self.dropped)
    }

    /// The attempts kept, by state (every state, zero or not).
    pub(crate) fn by_state(&self) -> Vec<(TaskState, u64)> {
        let mut counts: Vec<(TaskState, u64)> = TaskState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in self.records.values() {
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == r.state) {
                slot.1 += 1;
            }
        }
        counts
    }

    /// Attempts ever finished and ever failed.
    pub(crate) fn ended(&self) -> (u64, u64) {
        (self.finished, self.failed)
    }
}

impl Default for TaskEvents {
    fn default() -> Self {
        TaskEvents::new(MAX_TASKS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(task: u128, state: TaskState, job: u128) -> TaskRecord {
        TaskRecord {
            state,
            job_id: Some(JobId(job << 16)),
            ..TaskRecord::new(TaskId(task << 16), 0)
        }
    }

    #[test]
    fn reports_of_one_attempt_merge_and_end_counts_once() {
        let mut t = TaskEvents::new(10);
        t.add(vec![rec(1, TaskState::PendingNodeAssignment, 1)], 0);
        t.add(vec![rec(1, TaskState::Running, 1)], 0);
        t.add(vec![rec(1, TaskState::Finished, 1)], 0);
        // The owner's own report of the end arrives too: counted once.
        t.add(vec![rec(1, TaskState::Finished, 1)], 0);
        let (tasks, dropped) = t.list(None, None);
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].state, TaskState::Finished);
        assert_eq!((t.ended(), dropped), ((1, 0), 0));
    }

    #[test]
    fn the_oldest_attempt_goes_first_and_is_counted() {
        let mut t = TaskEvents::new(2);
        t.add(
            vec![
                rec(1, TaskState::Failed, 1),
                rec(2, TaskState::Running, 2),
                rec(3, TaskState::Running, 1),
            ],
            5,
        );
        let (tasks, dropped) = t.list(None, None);
        let ids: Vec<TaskId> = tasks.iter().map(|r| r.task_id).collect();
        assert_eq!(ids, vec![TaskId(2 << 16), TaskId(3 << 16)]);
        assert_eq!(dropped, 6);
        // The dropped attempt's end still counts.
        assert_eq!(t.ended(), (0, 1));
        let (mine, _) = t.list(Some(JobId(1 << 16)), None);
        let (newest, _) = t.list(None, Some(1));
        assert_eq!(newest[0].task_id, TaskId(3 << 16));
        assert_eq!(mine.len(), 1);
        let running = t
            .by_state()
            .into_iter()
            .find(|(s, _)| *s == TaskState::Running);
        assert_eq!(running, Some((TaskState::Running, 2)));
    }
}
