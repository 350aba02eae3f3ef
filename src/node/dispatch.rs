//! The raylet's ready queue: tasks whose arguments are ready, waiting for resources.
//!
//! Tasks are grouped by scheduling class (their resource request) and served FIFO within a
//! class. Dispatch walks the classes in the order they first appeared and launches every task
//! that fits, so a large request at the head of one class never blocks small requests of another,
//! and finding work costs O(classes), not O(queued tasks). Admission goes through
//! [`NodeResources::try_acquire`], which never over-commits.

use crate::resources::{Grant, NodeResources, ResourceSet};
use std::collections::VecDeque;

/// Ready tasks by scheduling class.
#[derive(Debug)]
pub(crate) struct DispatchQueue<T> {
    classes: Vec<(ResourceSet, VecDeque<T>)>,
    len: usize,
}

impl<T> Default for DispatchQueue<T> {
    fn default() -> Self {
        DispatchQueue {
            classes: Vec::new(),
            len: 0,
        }
    }
}

impl<T> DispatchQueue<T> {
    pub(crate) fn push(&mut self, class: &ResourceSet, item: T) {
        self.len += 1;
        if let Some((_, q)) = self.classes.iter_mut().find(|(c, _)| c == class) {
            q.push_back(item);
        } else {
            self.classes.push((class.clone(), VecDeque::from([item])));
        }
    }

    /// How many tasks are queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Removes and returns every task that fits now, with its grant.
    pub(crate) fn take_dispatchable(&mut self, node: &mut NodeResources) -> Vec<(T, Grant)> {
        let mut out = Vec::new();
        for (class, q) in &mut self.classes {
            while !q.is_empty() {
                let Some(grant) = node.try_acquire(class) else {
                    break;
                };
                if let Some(item) = q.pop_front() {
                    out.push((item, grant));
                }
            }
        }
        self.len -= out.len();
        self.classes.retain(|(_, q)| !q.is_empty());
        out
    }

    /// Removes the queued items matching `pred`.
    pub(crate) fn remove_where(&mut self, mut pred: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        for (_, q) in &mut self.classes {
            let mut keep = VecDeque::with_capacity(q.len());
            for item in q.drain(..) {
                if pred(&item) {
                    out.push(item);
                } else {
                    keep.push_back(item);
                }
            }
            *q = keep;
        }
        self.len -= out.len();
        self.classes.retain(|(_, q)| !q.is_empty());
        out
    }

    /// The sum of every queued request (each class's request times its queued tasks).
    pub(crate) fn backlog(&self) -> ResourceSet {
        let mut sum = ResourceSet::new();
        for (class, q) in &self.classes {
            sum.add_times(class, q.len());
        }
        sum
    }

    /// What waits, per class: the demands reported by `status`.
    pub(crate) fn demands(&self) -> Vec<(ResourceSet, usize)> {
        self.classes
            .iter()
            .map(|(c, q)| (c.clone(), q.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Amount, Resource};
    use proptest::prelude::*;

    fn cpus(tenths: i64) -> ResourceSet {
        let mut s = ResourceSet::new();
        s.set(
            Resource::Cpu,
            Amount::parse("x", tenths as f64 / 10.0).unwrap(),
        );
        s
    }

    #[test]
    fn big_requests_do_not_block_small_ones() {
        let mut node = NodeResources::new(cpus(20));
        let mut q = DispatchQueue::default();
        q.push(&cpus(30), "huge");
        q.push(&cpus(10), "a");
        q.push(&cpus(10), "b");
        q.push(&cpus(10), "c");
        let got: Vec<_> = q
            .take_dispatchable(&mut node)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(got, vec!["a", "b"]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.demands().len(), 2);
        // What still waits: 3 CPUs and 1 CPU.
        assert_eq!(q.backlog(), cpus(40));
    }

    proptest! {
        /// Whatever is queued and finished in whatever order, dispatch never hands out more than
        /// the node has, keeps FIFO order within a class, and loses no task.
        #[test]
        fn never_overcommits_and_keeps_class_order(reqs in proptest::collection::vec(1i64..25, 1..60)) {
            let total = cpus(40);
            let mut node = NodeResources::new(total.clone());
            let mut q = DispatchQueue::default();
            for (i, r) in reqs.iter().enumerate() {
                q.push(&cpus(*r), (i, *r));
            }
            let mut running: Vec<((usize, i64), Grant)> = Vec::new();
            let mut started: Vec<(usize, i64)> = Vec::new();
            loop {
                let batch = q.take_dispatchable(&mut node);
                for (item, g) in batch {
                    started.push(item);
                    running.push((item, g));
                }
                let mut used = ResourceSet::new();
                for (_, g) in &running { used.add(&g.resources); }
                prop_assert!(used.is_subset_of(&total));
                if running.is_empty() { break; }
                let (_, g) = running.remove(0);
                node.release(&g);
            }
            prop_assert_eq!(q.len(), 0);
            prop_assert_eq!(started.len(), reqs.len());
            // FIFO within each class.
            for r in 1..25 {
                let order: Vec<usize> = started.iter().filter(|(_, x)| *x == r).map(|(i, _)| *i).collect();
                let mut sorted = order.clone();
                sorted.sort();
                prop_assert_eq!(order, sorted);
            }
        }
    }
}
