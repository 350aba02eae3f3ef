//! Identifiers of jobs, nodes, workers, tasks, actors and objects.
//!
//! Ids are 128-bit values: 64 bits chosen at random once per process, then a per-process
//! counter, so minting an id is one atomic add and ids from different processes never collide.
//! Task ids leave their low 16 bits zero; the objects a task returns are its id plus the return
//! index (from 1), and `put` objects use index 0 of a fresh id, so an object id names the task
//! that makes it (its lineage) without a lookup.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn process_prefix() -> u64 {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    *PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        h.finish()
    })
}

/// A fresh 128-bit value with its low 16 bits zero.
pub(crate) fn fresh_u128() -> u128 {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    ((process_prefix() as u128) << 64) | ((n as u128) << 16)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $short:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub(crate) u128);

        impl $name {
            /// A new, unique id.
            #[allow(dead_code)]
            pub(crate) fn fresh() -> Self {
                $name(fresh_u128())
            }

            /// The id as a 32-digit hex string.
            #[allow(dead_code)]
            pub fn hex(&self) -> String {
                format!("{:032x}", self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($short, "({:032x})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = crate::error::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                u128::from_str_radix(s, 16).map($name).map_err(|e| {
                    crate::error::Error::invalid(format!(
                        concat!("{:?} is not a ", stringify!($name), " (32 hex digits): {}"),
                        s, e
                    ))
                })
            }
        }
    };
}

id_type!(
    /// Identifies a node (one raylet and its object store shards).
    ///
    /// # Examples
    /// ```no_run
    /// lumen::init()?;
    /// let here: lumen::NodeId = lumen::runtime_context().node_id();
    /// let parsed: lumen::NodeId = here.to_string().parse()?;
    /// assert_eq!(here, parsed);
    /// # Ok::<(), lumen::Error>(())
    /// ```
    NodeId, "NodeId"
);
id_type!(
    /// Identifies a task (one invocation of a remote function or actor method).
    TaskId, "TaskId"
);
id_type!(
    /// Identifies an actor.
    ActorId, "ActorId"
);
id_type!(
    /// Identifies an object in the object store.
    ObjectId, "ObjectId"
);
id_type!(
    /// Identifies a worker: the driver, a task executor or an actor host.
    WorkerId, "WorkerId"
);
id_type!(
    /// Identifies a job (one driver program connected to the cluster).
    JobId, "JobId"
);
id_type!(
    /// Identifies a placement group.
    PlacementGroupId, "PlacementGroupId"
);

/// The hasher of tables keyed by ids: fast (ids are hashed on every task, call and read) and
/// seeded per process, so ids chosen by a peer cannot be made to collide on purpose.
pub(crate) type IdHasher = foldhash::fast::RandomState;

/// A map keyed by ids, with [`IdHasher`].
pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, IdHasher>;

/// A concurrent map keyed by ids, with [`IdHasher`].
pub(crate) type IdDashMap<K, V> = dashmap::DashMap<K, V, IdHasher>;

impl ObjectId {
    /// The object returned at `index` (0-based) by `task`.
    pub(crate) fn for_return(task: TaskId, index: u16) -> Self {
        ObjectId(task.0 | (index as u128 + 1))
    }

    /// The task that returns this object (`None` for an object made by `put`).
    pub(crate) fn task(&self) -> Option<TaskId> {
        (self.0 & 0xFFFF != 0).then_some(TaskId(self.0 & !0xFFFF))
    }

    /// A fresh id for an object made by `put`.
    pub(crate) fn for_put() -> Self {
        ObjectId(fresh_u128())
    }

    /// Which of `n` shards holds this object.
    pub(crate) fn shard(&self, n: usize) -> usize {
        // The counter bits vary fastest; mix them so consecutive ids spread over shards.
        let x = (self.0 >> 16) as u64;
        (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_round_trip_through_text() {
        let ids: HashSet<TaskId> = (0..10_000).map(|_| TaskId::fresh()).collect();
        assert_eq!(ids.len(), 10_000);
        let t = TaskId::fresh();
        assert_eq!(t.to_string().parse::<TaskId>().unwrap(), t);
        assert!("not-hex".parse::<TaskId>().is_err());
    }

    #[test]
    fn return_ids_differ_from_put_ids_and_from_each_other() {
        let t = TaskId::fresh();
        let a = ObjectId::for_return(t, 0);
        let b = ObjectId::for_return(t, 1);
        assert_ne!(a, b);
        assert_ne!(a, ObjectId::for_put());
        assert_eq!(a.0 & !0xffff, t.0);
    }

    #[test]
    fn shards_spread_consecutive_ids() {
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            seen[ObjectId::for_put().shard(4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 40), "{seen:?}");
    }
}
