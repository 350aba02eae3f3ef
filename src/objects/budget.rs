//! The object store's memory budget: which objects are resident, how many bytes they take of the
//! store's capacity, and which of them were used least recently (the first to spill or evict).
//!
//! A pure core: it holds no bytes, touches no files and reads no clock (recency is a counter
//! bumped by each use). The store ([`spill`](crate::objects::spill)) asks it what is free and
//! in which order to make room, carries the spills out, and tells it what became of each object.

use crate::ids::{IdMap, ObjectId};
use std::collections::BTreeMap;

/// Resident objects and their bytes, against a capacity.
#[derive(Debug)]
pub(crate) struct Budget {
    capacity: u64,
    used: u64,
    /// Bumped by every insert and use: the recency of each resident object.
    clock: u64,
    /// Resident objects by last use, least recent first.
    order: BTreeMap<u64, ObjectId>,
    /// Each resident object's last use and size.
    resident: IdMap<ObjectId, (u64, u64)>,
}

impl Budget {
    pub(crate) fn new(capacity: u64) -> Self {
        Budget {
            capacity,
            used: 0,
            clock: 0,
            order: BTreeMap::new(),
            resident: IdMap::default(),
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes of resident objects.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Bytes not taken by resident objects.
    pub(crate) fn free(&self) -> u64 {
        self.capacity.saturating_sub(self.used)
    }

    /// How many resident objects there are.
    pub(crate) fn resident(&self) -> usize {
        self.resident.len()
    }

    /// Whether `size` more bytes fit without making room.
    pub(crate) fn fits(&self, size: u64) -> bool {
        size <= self.free()
    }

    /// `id` is resident now with `size` bytes, the most recently used. An object already
    /// resident is only marked used.
    pub(crate) fn insert(&mut self, id: ObjectId, size: u64) {
        if self.resident.contains_key(&id) {
            self.touch(id);
            return;
        }
        self.clock += 1;
        self.order.insert(self.clock, id);
        self.resident.insert(id, (self.clock, size));
        self.used += size;
    }

    /// `id` was used: it becomes the last to spill.
    pub(crate) fn touch(&mut self, id: ObjectId) {
        if let Some((at, _)) = self.resident.get_mut(&id) {
            self.order.remove(at);
            self.clock += 1;
            *at = self.clock;
            self.order.insert(self.clock, id);
        }
    }

    /// `id` is no longer resident (spilled, evicted or freed); returns its bytes if it was.
    pub(crate) fn release(&mut self, id: ObjectId) -> Option<u64> {
        let (at, size) = self.resident.remove(&id)?;
        self.order.remove(&at);
        self.used -= size;
        Some(size)
    }

    /// Resident objects, least recently used first: the order to spill or evict them in.
    pub(crate) fn coldest(&self) -> impl Iterator<Item = (ObjectId, u64)> + '_ {
        self.order.values().map(|id| (*id, self.resident[id].1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u64) -> ObjectId {
        static IDS: std::sync::OnceLock<Vec<ObjectId>> = std::sync::OnceLock::new();
        IDS.get_or_init(|| (0..8).map(|_| ObjectId::for_put()).collect())[n as usize]
    }

    #[test]
    fn least_recently_used_spills_first_and_release_frees() {
        let mut b = Budget::new(300);
        b.insert(id(1), 100);
        b.insert(id(2), 100);
        b.insert(id(3), 100);
        assert_eq!((b.used(), b.free()), (300, 0));
        assert!(!b.fits(1));
        b.touch(id(1));
        let order: Vec<_> = b.coldest().map(|(o, _)| o).collect();
        assert_eq!(order, [id(2), id(3), id(1)]);
        assert_eq!(b.release(id(2)), Some(100));
        assert_eq!(b.release(id(2)), None, "released once");
        assert!(b.fits(100) && b.resident() == 2);
        // A second insert of a resident object is a use, not more bytes.
        b.insert(id(3), 100);
        assert_eq!(b.used(), 200);
        assert_eq!(b.coldest().next(), Some((id(1), 100)));
    }

    proptest! {
        /// Whatever the sequence, `used` is the sum of the resident sizes and `coldest` lists
        /// each resident object once, in the order of last use.
        #[test]
        fn accounting_matches_a_model(ops in prop::collection::vec((0u8..3, 0u64..8, 1u64..50), 0..200)) {
            let mut b = Budget::new(1000);
            let mut model: Vec<(ObjectId, u64)> = Vec::new(); // least recent first
            for (op, n, size) in ops {
                let o = id(n);
                match op {
                    0 => {
                        b.insert(o, size);
                        match model.iter().position(|(m, _)| *m == o) {
                            Some(i) => { let e = model.remove(i); model.push(e); }
                            None => model.push((o, size)),
                        }
                    }
                    1 => {
                        b.touch(o);
                        if let Some(i) = model.iter().position(|(m, _)| *m == o) {
                            let e = model.remove(i);
                            model.push(e);
                        }
                    }
                    _ => {
                        let got = b.release(o);
                        let want = model.iter().position(|(m, _)| *m == o).map(|i| model.remove(i).1);
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(b.used(), model.iter().map(|(_, s)| s).sum::<u64>());
                prop_assert_eq!(b.coldest().collect::<Vec<_>>(), model.clone());
                prop_assert_eq!(b.resident(), model.len());
            }
        }
    }
}
